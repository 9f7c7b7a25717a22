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
    pub series_id: &'a str,
    /// The sample's tags as canonical JSON ([`crate::model::tags_json`]), which breaks ties of
    /// `first` and `last`.
    pub tags_json: &'a str,
    /// The value of the query's `group_by` tag, if the sample has it.
    pub group: Option<&'a str>,
    pub timestamp_micros: i64,
    pub value: f64,
}

/// A sum with Neumaier's compensation, as SQLite (3.43+) computes `SUM` and `AVG`: cancelling
/// values (`1e16 + 1 - 1e16`) keep their small terms, and the result hardly depends on order.
#[derive(Debug, Clone, Copy, Default)]
pub struct CompensatedSum {
    sum: f64,
    compensation: f64,
}

impl CompensatedSum {
    pub fn add(&mut self, value: f64) {
        let t = self.sum + value;
        // Past overflow the compensation is meaningless (inf - inf); the sum stays infinite.
        if t.is_finite() {
            if self.sum.abs() >= value.abs() {
                self.compensation += (self.sum - t) + value;
            } else {
                self.compensation += (value - t) + self.sum;
            }
        }
        self.sum = t;
    }

    pub fn value(&self) -> f64 {
        if self.sum.is_finite() {
            self.sum + self.compensation
        } else {
            self.sum
        }
    }
}

/// Orders samples for `first` and `last`: (timestamp µs, series id, canonical tags JSON).
pub type OrderKey = (i64, String, String);

/// The aggregates of some samples of one bucket. Stores that aggregate next to the data (a Lua
/// script per series, say) hand these to [`Downsampler::merge`]; merging them gives exactly what
/// pushing every sample would.
#[derive(Debug, Clone)]
pub struct BucketAggregate {
    pub count: u64,
    pub sum: CompensatedSum,
    pub min: f64,
    pub max: f64,
    /// The earliest sample by [`OrderKey`], and its value.
    pub first: (OrderKey, f64),
    /// The latest sample by [`OrderKey`], and its value.
    pub last: (OrderKey, f64),
}

impl BucketAggregate {
    fn absorb(&mut self, other: BucketAggregate) {
        self.count += other.count;
        self.sum.add(other.sum.sum);
        self.sum.add(other.sum.compensation);
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
    pub fn new(query: &HistoryQuery) -> Self {
        Downsampler {
            step_micros: query.step_micros(),
            aggregation: query.aggregation,
            groups: BTreeMap::new(),
        }
    }

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
                            Aggregation::Avg => acc.sum.value() / acc.count as f64,
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
