//! The client-side `metric_history` fallback (DESIGN.md rule 3), for backends that cannot
//! aggregate in the store. It streams: memory holds one accumulator per (group, bucket).

use std::collections::BTreeMap;

use crate::query::{Aggregation, HistoryBucket, HistoryQuery, HistorySeries};
use crate::time;

/// The start of the bucket holding `micros`: buckets are aligned to multiples of `step` since
/// the Unix epoch.
pub fn bucket_start(micros: i64, step_micros: i64) -> i64 {
    micros - micros.rem_euclid(step_micros)
}

/// One sample fed to a [`Downsampler`].
#[derive(Debug, Clone, Copy)]
pub struct SampleRef<'a> {
    /// The sample's series; breaks ties of `first` and `last` after the timestamp.
    pub series_id: &'a str,
    /// The sample's tags as canonical JSON ([`crate::model::tags_json`]), which breaks ties of
    /// `first` and `last`.
    pub tags_json: &'a str,
    /// The value of the query's `group_by` tag, if the sample has it.
    pub group: Option<&'a str>,
    /// When the sample was taken, in microseconds since the Unix epoch.
    pub timestamp_micros: i64,
    /// The sample's value.
    pub value: f64,
}

/// 2⁻⁶⁴: values are scaled by it (exactly: a power of two) once a running sum overflows.
pub const SUM_SCALE_DOWN: f64 = 1.0 / 18_446_744_073_709_551_616.0;
/// 2⁶⁴: scales a sum of values scaled by [`SUM_SCALE_DOWN`] back.
pub const SUM_SCALE_UP: f64 = 18_446_744_073_709_551_616.0;

/// A sum with Neumaier's compensation, as SQLite (3.43+) computes `SUM` and `AVG`: cancelling
/// values (`1e16 + 1 - 1e16`) keep their small terms, and the result hardly depends on order.
///
/// An intermediate overflow does not matter: the first addition that would overflow switches
/// the sum to values scaled by 2⁻⁶⁴ (exact for all but subnormal results), where no sum of
/// fewer than 2⁶⁴ finite values can overflow. [`CompensatedSum::value`] is then infinite only
/// where the exact sum is beyond ±f64::MAX, and [`CompensatedSum::mean`] is always finite.
/// Ordinary sums never take that path and cost one comparison more per value.
#[derive(Debug, Clone, Copy, Default)]
pub struct CompensatedSum {
    sum: f64,
    compensation: f64,
    /// Whether `sum` and `compensation` are in units of 2⁶⁴.
    scaled: bool,
}

impl CompensatedSum {
    /// A sum from its parts as another accumulator reports them (a Lua script, say): `sum`
    /// and `compensation` in units of 2⁶⁴ where `scaled`.
    pub fn from_parts(sum: f64, compensation: f64, scaled: bool) -> Self {
        CompensatedSum {
            sum,
            compensation,
            scaled,
        }
    }

    /// Adds one value, switching to scaled units first if the running sum would overflow.
    pub fn add(&mut self, value: f64) {
        if self.scaled {
            self.add_raw(value * SUM_SCALE_DOWN);
            return;
        }
        let t = self.sum + value;
        if t.is_finite() || !value.is_finite() || !self.sum.is_finite() {
            self.add_raw(value);
        } else {
            self.rescale();
            self.add_raw(value * SUM_SCALE_DOWN);
        }
    }

    /// Adds another sum's parts (its values then count as added here).
    pub fn merge(&mut self, other: &CompensatedSum) {
        if other.scaled {
            if !self.scaled {
                self.rescale();
            }
            self.add_raw(other.sum);
            self.add_raw(other.compensation);
        } else {
            // `add` scales them if this sum is (or becomes) scaled.
            self.add(other.sum);
            self.add(other.compensation);
        }
    }

    /// The sum: ±infinity only where the exact sum is beyond ±f64::MAX.
    pub fn value(&self) -> f64 {
        let value = if self.sum.is_finite() {
            self.sum + self.compensation
        } else {
            self.sum
        };
        if self.scaled {
            value * SUM_SCALE_UP
        } else {
            value
        }
    }

    /// The sum divided by `count`, never overflowing: finite for finite values.
    pub fn mean(&self, count: u64) -> f64 {
        if !self.scaled {
            return self.value() / count as f64;
        }
        let scaled = if self.sum.is_finite() {
            self.sum + self.compensation
        } else {
            self.sum
        };
        // The rounded quotient can pass f64::MAX by an ulp; the mean itself never does.
        (scaled / count as f64 * SUM_SCALE_UP).clamp(-f64::MAX, f64::MAX)
    }

    /// Whether the parts are in units of 2⁶⁴ (an intermediate sum overflowed).
    pub fn is_scaled(&self) -> bool {
        self.scaled
    }

    /// The parts: (sum, compensation, scaled), for [`CompensatedSum::from_parts`].
    pub fn parts(&self) -> (f64, f64, bool) {
        (self.sum, self.compensation, self.scaled)
    }

    fn rescale(&mut self) {
        self.sum *= SUM_SCALE_DOWN;
        self.compensation *= SUM_SCALE_DOWN;
        self.scaled = true;
    }

    fn add_raw(&mut self, value: f64) {
        let t = self.sum + value;
        // Past an infinite value the compensation is meaningless (inf - inf); the sum stays
        // infinite.
        if t.is_finite() {
            if self.sum.abs() >= value.abs() {
                self.compensation += (self.sum - t) + value;
            } else {
                self.compensation += (value - t) + self.sum;
            }
        }
        self.sum = t;
    }
}

/// Orders samples for `first` and `last`: (timestamp µs, series id, canonical tags JSON).
pub type OrderKey = (i64, String, String);

/// The aggregates of some samples of one bucket. Stores that aggregate next to the data (a Lua
/// script per series, say) hand these to [`Downsampler::merge`]; merging them gives exactly what
/// pushing every sample would.
#[derive(Debug, Clone)]
pub struct BucketAggregate {
    /// Samples aggregated.
    pub count: u64,
    /// Their compensated sum.
    pub sum: CompensatedSum,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// The earliest sample by [`OrderKey`], and its value.
    pub first: (OrderKey, f64),
    /// The latest sample by [`OrderKey`], and its value.
    pub last: (OrderKey, f64),
}

impl BucketAggregate {
    fn absorb(&mut self, other: BucketAggregate) {
        self.count += other.count;
        self.sum.merge(&other.sum);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if other.first.0 < self.first.0 {
            self.first = other.first;
        }
        if other.last.0 > self.last.0 {
            self.last = other.last;
        }
    }
}

/// Folds samples into buckets. Feed it every matching sample in any order, then call
/// [`Downsampler::finish`].
#[derive(Debug)]
pub struct Downsampler {
    step_micros: i64,
    aggregation: Aggregation,
    groups: BTreeMap<Option<String>, BTreeMap<i64, BucketAggregate>>,
}

impl Downsampler {
    /// An empty downsampler for the query's step and aggregation (the query is not validated here).
    pub fn new(query: &HistoryQuery) -> Self {
        Downsampler {
            step_micros: query.step_micros(),
            aggregation: query.aggregation,
            groups: BTreeMap::new(),
        }
    }

    /// Adds one sample to its group's bucket; the caller has already applied the query's time range
    /// and tag filter.
    pub fn push(&mut self, sample: SampleRef<'_>) {
        let bucket = bucket_start(sample.timestamp_micros, self.step_micros);
        let key = || {
            (
                sample.timestamp_micros,
                sample.series_id.to_owned(),
                sample.tags_json.to_owned(),
            )
        };
        let buckets = self
            .groups
            .entry(sample.group.map(str::to_owned))
            .or_default();
        match buckets.get_mut(&bucket) {
            None => {
                let mut sum = CompensatedSum::default();
                sum.add(sample.value);
                buckets.insert(
                    bucket,
                    BucketAggregate {
                        count: 1,
                        sum,
                        min: sample.value,
                        max: sample.value,
                        first: (key(), sample.value),
                        last: (key(), sample.value),
                    },
                );
            }
            Some(acc) => {
                acc.count += 1;
                acc.sum.add(sample.value);
                acc.min = acc.min.min(sample.value);
                acc.max = acc.max.max(sample.value);
                // Only build order keys when the aggregation needs them.
                match self.aggregation {
                    Aggregation::First if key() < acc.first.0 => acc.first = (key(), sample.value),
                    Aggregation::Last if key() > acc.last.0 => acc.last = (key(), sample.value),
                    _ => {}
                }
            }
        }
    }

    /// Merges aggregates computed elsewhere for the bucket starting at `bucket_start_micros`.
    pub fn merge(
        &mut self,
        group: Option<String>,
        bucket_start_micros: i64,
        part: BucketAggregate,
    ) {
        let buckets = self.groups.entry(group).or_default();
        match buckets.get_mut(&bucket_start_micros) {
            None => {
                buckets.insert(bucket_start_micros, part);
            }
            Some(acc) => acc.absorb(part),
        }
    }

    /// The series, ordered by group (`None` first), each with buckets in time order.
    pub fn finish(self) -> Vec<HistorySeries> {
        let aggregation = self.aggregation;
        self.groups
            .into_iter()
            .map(|(group, buckets)| HistorySeries {
                group,
                buckets: buckets
                    .into_iter()
                    .map(|(start, acc)| HistoryBucket {
                        start: time::from_micros(start),
                        value: match aggregation {
                            Aggregation::Avg => acc.sum.mean(acc.count),
                            Aggregation::Sum => acc.sum.value(),
                            Aggregation::Min => acc.min,
                            Aggregation::Max => acc.max,
                            Aggregation::Count => acc.count as f64,
                            Aggregation::First => acc.first.1,
                            Aggregation::Last => acc.last.1,
                        },
                        count: acc.count,
                    })
                    .collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn sample(ts: i64, value: f64) -> SampleRef<'static> {
        SampleRef {
            series_id: "s",
            tags_json: "{}",
            group: None,
            timestamp_micros: ts,
            value,
        }
    }

    #[test]
    fn sums_keep_small_terms_between_cancelling_ones() {
        for order in [[1e16, 1.0, -1e16], [1.0, 1e16, -1e16], [-1e16, 1e16, 1.0]] {
            let mut sum = CompensatedSum::default();
            order.into_iter().for_each(|v| sum.add(v));
            assert_eq!(sum.value(), 1.0, "{order:?}");
        }
    }

    #[test]
    fn merging_partials_equals_pushing_every_sample() {
        for aggregation in Aggregation::ALL {
            let q = HistoryQuery::new("m", TimeDelta::minutes(1), aggregation);
            let samples = [
                (10, 3.0, "a"),
                (20, 1.0, "b"),
                (10, 5.0, "b"),
                (30, 2.0, "a"),
            ];
            let mut all = Downsampler::new(&q);
            let mut merged = Downsampler::new(&q);
            for series in ["a", "b"] {
                let mut part = Downsampler::new(&q);
                for &(ts, value, s) in samples.iter().filter(|x| x.2 == series) {
                    let sample = SampleRef {
                        series_id: s,
                        tags_json: "{}",
                        group: None,
                        timestamp_micros: ts,
                        value,
                    };
                    all.push(sample);
                    part.push(sample);
                }
                for (group, buckets) in part.groups {
                    for (start, agg) in buckets {
                        merged.merge(group.clone(), start, agg);
                    }
                }
            }
            assert_eq!(merged.finish(), all.finish(), "{aggregation}");
        }
    }

    #[test]
    fn an_overflowing_sum_is_infinite_not_nan() {
        let mut sum = CompensatedSum::default();
        (0..50).for_each(|_| sum.add(f64::MAX));
        assert_eq!(sum.value(), f64::INFINITY);
        assert_eq!(sum.mean(50), f64::MAX);
        let mut sum = CompensatedSum::default();
        (0..3).for_each(|_| sum.add(-f64::MAX));
        assert_eq!(sum.value(), f64::NEG_INFINITY);
        assert_eq!(sum.mean(3), -f64::MAX);
    }

    fn sum_of(values: &[f64]) -> CompensatedSum {
        let mut sum = CompensatedSum::default();
        values.iter().for_each(|&v| sum.add(v));
        sum
    }

    #[test]
    fn an_intermediate_overflow_does_not_matter() {
        for (values, want) in [
            (&[1e308, 1e308, -1e308][..], 1e308),
            (&[1e308, -1e308, 1.0], 1.0),
            (&[1e308, 1e308, -1e308, -1e308, 1.0], 1.0),
            (&[1e308, 1e308, 1.0, -1e308, 0.5, -1e308], 1.5),
            (&[f64::MAX, f64::MAX, -f64::MAX], f64::MAX),
        ] {
            assert_eq!(sum_of(values).value(), want, "{values:?}");
        }
        assert_eq!(sum_of(&[1e308, 1e308]).mean(2), 1e308);
        assert_eq!(sum_of(&[1e308, 1e308, -1e308]).mean(3), 1e308 / 3.0);
        assert!(
            !sum_of(&[1e300, 1.0, -1e300]).is_scaled(),
            "ordinary sums stay unscaled"
        );
    }

    #[test]
    fn merging_sums_equals_adding_every_value() {
        let values = [1e308, 2.0, 1e308, -1e308, 0.25, -1e308, 3.0];
        assert_eq!(sum_of(&values).value(), 5.25);
        for split in 0..=values.len() {
            let (left, right) = values.split_at(split);
            let mut merged = sum_of(left);
            merged.merge(&sum_of(right));
            assert_eq!(merged.value(), 5.25, "split at {split}");
            let (s, c, scaled) = sum_of(right).parts();
            let mut from_parts = sum_of(left);
            from_parts.merge(&CompensatedSum::from_parts(s, c, scaled));
            assert_eq!(from_parts.value(), 5.25, "split at {split}");
        }
    }

    #[test]
    fn buckets_align_to_the_epoch() {
        assert_eq!(bucket_start(125_000_000, 60_000_000), 120_000_000);
        assert_eq!(bucket_start(120_000_000, 60_000_000), 120_000_000);
    }

    #[test]
    fn every_aggregation_over_one_bucket() {
        let expect = [
            (Aggregation::Avg, 2.0),
            (Aggregation::Sum, 6.0),
            (Aggregation::Min, 1.0),
            (Aggregation::Max, 3.0),
            (Aggregation::Count, 3.0),
            (Aggregation::First, 3.0),
            (Aggregation::Last, 2.0),
        ];
        for (aggregation, want) in expect {
            let q = HistoryQuery::new("m", TimeDelta::minutes(1), aggregation);
            let mut d = Downsampler::new(&q);
            d.push(sample(10, 3.0));
            d.push(sample(30, 2.0));
            d.push(sample(20, 1.0));
            let out = d.finish();
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].buckets[0].value, want, "{aggregation}");
            assert_eq!(out[0].buckets[0].count, 3);
        }
    }
}
