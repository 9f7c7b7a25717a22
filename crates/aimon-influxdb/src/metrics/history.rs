//! `metric_history`: aggregated in InfluxQL where the server's answer is exact, else from the
//! samples in aimon.

use std::collections::{BTreeMap, BTreeSet};

use aimon_core::downsample::{CompensatedSum, Downsampler, SampleRef, bucket_start};
use aimon_core::model::tags_json;
use aimon_core::query::{Aggregation, HistoryBucket, HistoryQuery, HistorySeries, MicrosRange};
use aimon_core::{Result, time};

use super::tag_key;
use crate::backend::{InfluxBackend, SAMPLES, any_of, time_range};
use crate::client::{Series, cell_f64, cell_i64};
use crate::line;

/// (count, sum, min, max) of one bucket, by group and bucket start.
/// (group, bucket start) → (count, sum, min, max).
type Buckets = BTreeMap<Option<String>, BTreeMap<i64, (u64, CompensatedSum, f64, f64)>>;

impl InfluxBackend {
    pub(crate) async fn history(&self, query: &HistoryQuery) -> Result<Vec<HistorySeries>> {
        let docs = self.series_docs(Some(&query.name), None).await?;
        let sids: Vec<&str> = docs
            .iter()
            .filter(|m| m.name == query.name)
            .map(|m| m.id.as_str())
            .collect();
        let range = self.live_range(query.range_micros());
        if sids.is_empty() || range.start >= range.end {
            return Ok(Vec::new());
        }
        match query.aggregation {
            Aggregation::First | Aggregation::Last => {
                self.history_from_samples(query, &sids, range).await
            }
            _ => self.history_in_influxql(query, &sids, range).await,
        }
    }

    /// `first` and `last`: InfluxQL's selectors report the bucket's start rather than the
    /// chosen sample's time under `GROUP BY time()` and break timestamp ties by value, so the
    /// rule "ties go to the smallest (series id, tags)" cannot be computed in the server. The
    /// matching samples stream through the core [`Downsampler`] instead.
    async fn history_from_samples(
        &self,
        query: &HistoryQuery,
        sids: &[&str],
        range: MicrosRange,
    ) -> Result<Vec<HistorySeries>> {
        let samples = self.samples_of(sids, range, &query.tags).await?;
        let mut downsampler = Downsampler::new(query);
        for (sid, samples) in &samples {
            for (ts, tags, value) in samples {
                let tags_key = tags_json(tags);
                downsampler.push(SampleRef {
                    series_id: sid,
                    tags_json: &tags_key,
                    group: query
                        .group_by
                        .as_ref()
                        .and_then(|g| tags.get(g))
                        .map(String::as_str),
                    timestamp_micros: *ts,
                    value: *value,
                });
            }
        }
        Ok(downsampler.finish())
    }

    /// `avg`, `sum`, `min`, `max`, `count` with `GROUP BY time(step)` in InfluxQL. InfluxDB adds
    /// floats naively; where the error bound of that sum could exceed 1e-10 of it (mixed signs
    /// that cancel, or very many samples), that bucket is summed again in aimon with the
    /// compensated sum the semantics want. Only sums and averages ask for the float sum: one
    /// that overflows makes InfluxDB fail its whole answer (its JSON cannot carry ±Inf), and
    /// the query then takes [`InfluxBackend::history_past_an_overflow`].
    async fn history_in_influxql(
        &self,
        query: &HistoryQuery,
        sids: &[&str],
        range: MicrosRange,
    ) -> Result<Vec<HistorySeries>> {
        let step = query.step_micros();
        let group_key = query
            .group_by
            .as_ref()
            .map(|g| line::encode_tag_text(&tag_key(g)).into_owned());
        let group_clause = group_key
            .as_ref()
            .map(|g| format!(", {}", line::ident(g)))
            .unwrap_or_default();
        let from = self.from(SAMPLES);
        let where_sids = any_of("sid", sids);
        let tags = Self::tag_conditions(&query.tags);
        let statement = |columns: &str, start: i64, end: i64| {
            format!(
                "SELECT {columns} FROM {from} WHERE {where_sids} AND {}{tags} \
                 GROUP BY time({step}u){group_clause} fill(none)",
                time_range(start, end),
            )
        };
        let bounds = "count(\"v\") AS c, min(\"v\") AS lo, max(\"v\") AS hi";
        let sums = matches!(query.aggregation, Aggregation::Sum | Aggregation::Avg);
        let mut buckets: Buckets = BTreeMap::new();
        let mut inexact: Vec<(Option<String>, i64)> = Vec::new();
        let with_sums = if sums {
            let columns = format!("{bounds}, sum(\"v\") AS s");
            self.client
                .query_finite(&statement(&columns, range.start, range.end))
                .await?
                .map(|answers| answers.into_iter().next().unwrap_or_default())
        } else {
            None
        };
        match with_sums {
            Some(answer) => {
                read_buckets(&answer, group_key.as_deref(), &mut buckets);
                for (group, rows) in &buckets {
                    for (&start, &(count, sum, min, max)) in rows {
                        if needs_resum(count, sum.value(), min, max) {
                            inexact.push((group.clone(), start));
                        }
                    }
                }
            }
            None => {
                let answer = self
                    .client
                    .query_one(&statement(bounds, range.start, range.end))
                    .await?;
                read_buckets(&answer, group_key.as_deref(), &mut buckets);
                if sums {
                    let statement = |start, end| statement("sum(\"v\") AS s", start, end);
                    self.history_past_an_overflow(
                        &mut buckets,
                        range,
                        step,
                        statement,
                        group_key.as_deref(),
                        &mut inexact,
                    )
                    .await?;
                }
            }
        }
        if !inexact.is_empty() && sums {
            self.resum_exactly(query, sids, range, step, &mut buckets, &inexact)
                .await?;
        }
        Ok(buckets
            .into_iter()
            .map(|(group, buckets)| HistorySeries {
                group,
                buckets: buckets
                    .into_iter()
                    .map(|(start, (count, sum, min, max))| HistoryBucket {
                        start: time::from_micros(start),
                        value: match query.aggregation {
                            Aggregation::Avg => sum.mean(count),
                            Aggregation::Sum => sum.value(),
                            Aggregation::Min => min,
                            Aggregation::Max => max,
                            _ => count as f64,
                        },
                        count,
                    })
                    .collect(),
            })
            .collect())
    }

    /// Sums and averages where InfluxDB's sum of a bucket overflowed (`buckets` holds the
    /// count, min and max of every bucket). Only a bucket with `count · max|v|` past
    /// f64::MAX / 2 can overflow: those buckets (every group at their start) are summed in
    /// aimon from their samples, with the compensated sum that scales past an overflow. The
    /// others keep InfluxDB's sum, asked again over the runs of time between them.
    async fn history_past_an_overflow(
        &self,
        buckets: &mut Buckets,
        range: MicrosRange,
        step: i64,
        sum_statement: impl Fn(i64, i64) -> String,
        group_key: Option<&str>,
        inexact: &mut Vec<(Option<String>, i64)>,
    ) -> Result<()> {
        let overflowing: BTreeSet<i64> = buckets
            .values()
            .flat_map(|rows| rows.iter())
            .filter(|(_, (count, _, min, max))| {
                *count as f64 * min.abs().max(max.abs()) > f64::MAX / 2.0
            })
            .map(|(start, _)| *start)
            .collect();
        let mut statements = Vec::new();
        let mut low = range.start;
        for &start in &overflowing {
            if low < start {
                statements.push(sum_statement(low, start));
            }
            low = low.max(start.saturating_add(step));
        }
        if low < range.end {
            statements.push(sum_statement(low, range.end));
        }
        if !statements.is_empty() {
            for answer in self.client.query(&statements.join("; ")).await? {
                for s in &answer {
                    let group = group_key.and_then(|g| s.tag(g));
                    let (Some(t), Some(su)) = (s.column("time"), s.column("s")) else {
                        continue;
                    };
                    for row in &s.values {
                        let (Some(start), Some(sum)) = (
                            row.get(t).and_then(cell_i64),
                            row.get(su).and_then(cell_f64),
                        ) else {
                            continue;
                        };
                        if let Some(entry) = buckets.get_mut(&group).and_then(|b| b.get_mut(&start))
                        {
                            entry.1 = CompensatedSum::from_parts(sum, 0.0, false);
                            if needs_resum(entry.0, sum, entry.2, entry.3) {
                                inexact.push((group.clone(), start));
                            }
                        }
                    }
                }
            }
        }
        for (group, rows) in buckets.iter() {
            for start in rows.keys().filter(|s| overflowing.contains(s)) {
                inexact.push((group.clone(), *start));
            }
        }
        Ok(())
    }

    /// Sums the samples of the `inexact` buckets again with a compensated sum.
    async fn resum_exactly(
        &self,
        query: &HistoryQuery,
        sids: &[&str],
        range: MicrosRange,
        step: i64,
        buckets: &mut Buckets,
        inexact: &[(Option<String>, i64)],
    ) -> Result<()> {
        let starts: BTreeSet<i64> = inexact.iter().map(|(_, s)| *s).collect();
        let wanted: BTreeSet<&(Option<String>, i64)> = inexact.iter().collect();
        let mut sums: BTreeMap<(Option<String>, i64), CompensatedSum> = BTreeMap::new();
        for start in starts {
            let bucket = MicrosRange {
                start: start.max(range.start),
                end: start.saturating_add(step).min(range.end),
            };
            let samples = self.samples_of(sids, bucket, &query.tags).await?;
            for (_, tags, value) in samples.into_values().flatten() {
                let group = query.group_by.as_ref().and_then(|g| tags.get(g)).cloned();
                let key = (group, bucket_start(bucket.start, step));
                if wanted.contains(&key) {
                    sums.entry(key).or_default().add(value);
                }
            }
        }
        for ((group, start), sum) in sums {
            if let Some(entry) = buckets.get_mut(&group).and_then(|b| b.get_mut(&start)) {
                entry.1 = sum;
            }
        }
        Ok(())
    }
}

/// Reads `count`, `min`, `max` and, where asked, `sum` per (group, bucket start) from a
/// `GROUP BY time()` answer; a bucket without a sum gets 0 until one is known.
fn read_buckets(answer: &[Series], group_key: Option<&str>, buckets: &mut Buckets) {
    for s in answer {
        let group = group_key.and_then(|g| s.tag(g));
        let cols = ["time", "c", "lo", "hi"].map(|c| s.column(c));
        let [Some(t), Some(c), Some(lo), Some(hi)] = cols else {
            continue;
        };
        let su = s.column("s");
        for row in &s.values {
            let count = row.get(c).and_then(cell_i64).unwrap_or(0);
            if count <= 0 {
                continue;
            }
            let (Some(start), Some(min), Some(max)) = (
                row.get(t).and_then(cell_i64),
                row.get(lo).and_then(cell_f64),
                row.get(hi).and_then(cell_f64),
            ) else {
                continue;
            };
            let sum = match su {
                Some(su) => match row.get(su).and_then(cell_f64) {
                    Some(sum) => sum,
                    None => continue,
                },
                None => 0.0,
            };
            buckets.entry(group.clone()).or_default().insert(
                start,
                (
                    count as u64,
                    CompensatedSum::from_parts(sum, 0.0, false),
                    min,
                    max,
                ),
            );
        }
    }
}

/// Whether InfluxDB's naive sum of a bucket could be off by more than 1e-10 of it: its error
/// bound is `(n-1)·2⁻⁵³·Σ|v|`, with Σ|v| being |sum| when all values share a sign, else at
/// most n·max|v|.
fn needs_resum(count: u64, sum: f64, min: f64, max: f64) -> bool {
    let abs_sum = if min >= 0.0 || max <= 0.0 {
        sum.abs()
    } else {
        count as f64 * min.abs().max(max.abs())
    };
    let bound = count.saturating_sub(1) as f64 * f64::EPSILON / 2.0 * abs_sum;
    bound > 1e-10 * sum.abs() || (sum == 0.0 && bound > 0.0)
}
