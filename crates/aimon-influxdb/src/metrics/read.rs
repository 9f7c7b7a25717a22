//! The series documents and samples as stored, `get_metric` and `query_metrics`.

use aimon_core::driver::Selection;
use std::collections::{BTreeMap, BTreeSet};

use aimon_core::model::tags_json;
use aimon_core::query::{self, MetricQuery, MicrosRange};
use aimon_core::{DataKind, Metric, MetricValue, Result, RetentionPolicy, Tags, filter, time};

use super::{IDS_PER_STATEMENT, Sample};
use crate::backend::{InfluxBackend, SAMPLES, SERIES, TAG_PREFIX, any_of, docs, time_range};
use crate::client::{Series, cell_f64, cell_i64};
use crate::line;

/// The samples of every row of `series` (a `SELECT "v" … GROUP BY *` answer), by series id.
fn decode_samples(series: Vec<Series>) -> BTreeMap<String, Vec<Sample>> {
    let mut out: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    for s in series {
        let Some(sid) = s.tag("sid") else { continue };
        let tags: Tags = s
            .tags
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .filter_map(|(k, v)| {
                let key = line::decode_tag_text(k);
                key.strip_prefix(TAG_PREFIX)
                    .map(|k| (k.to_owned(), line::decode_tag_text(v).into_owned()))
            })
            .collect();
        let (Some(t), Some(v)) = (s.column("time"), s.column("v")) else {
            continue;
        };
        let samples = out.entry(sid).or_default();
        for row in &s.values {
            let (Some(ts), Some(value)) =
                (row.get(t).and_then(cell_i64), row.get(v).and_then(cell_f64))
            else {
                continue;
            };
            samples.push((ts, tags.clone(), value));
        }
    }
    for samples in out.values_mut() {
        samples.sort_by_cached_key(|(ts, tags, _)| (*ts, tags_json(tags)));
    }
    out
}

fn to_values(samples: Vec<Sample>) -> Vec<MetricValue> {
    samples
        .into_iter()
        .map(|(ts, tags, value)| MetricValue {
            timestamp: time::from_micros(ts),
            value,
            tags,
        })
        .collect()
}

impl InfluxBackend {
    /// Series documents, optionally only those named `name` or with these ids.
    pub(crate) async fn series_docs(
        &self,
        name: Option<&str>,
        ids: Option<&[&str]>,
    ) -> Result<Vec<Metric>> {
        let from = self.from(SERIES);
        let mut statements = Vec::new();
        match (name, ids) {
            (_, Some(ids)) => {
                for chunk in ids.chunks(IDS_PER_STATEMENT) {
                    statements.push(format!(
                        "SELECT \"doc\" FROM {from} WHERE {}",
                        any_of("id", chunk)
                    ));
                }
            }
            (Some(name), None) => statements.push(format!(
                "SELECT \"doc\" FROM {from} WHERE \"name\" = {}",
                line::string(name)
            )),
            (None, None) => statements.push(format!("SELECT \"doc\" FROM {from}")),
        }
        if statements.is_empty() {
            return Ok(Vec::new());
        }
        let answers = self.client.query(&statements.join("; ")).await?;
        let mut out = Vec::new();
        for series in answers {
            out.extend(
                docs::<Metric>(&series, "series metadata")?
                    .into_iter()
                    .map(|(_, m)| m),
            );
        }
        Ok(out)
    }

    /// Samples of `sids` in `range` matching `tags`, by series id, each sorted by (time, tags).
    pub(super) async fn samples_of(
        &self,
        sids: &[&str],
        range: MicrosRange,
        tags: &Tags,
    ) -> Result<BTreeMap<String, Vec<Sample>>> {
        if sids.is_empty() || range.start >= range.end {
            return Ok(BTreeMap::new());
        }
        let from = self.from(SAMPLES);
        let statements: Vec<String> = sids
            .chunks(IDS_PER_STATEMENT)
            .map(|chunk| {
                format!(
                    "SELECT \"v\" FROM {from} WHERE {} AND {}{} GROUP BY *",
                    any_of("sid", chunk),
                    time_range(range.start, range.end),
                    Self::tag_conditions(tags)
                )
            })
            .collect();
        let answers = self.client.query(&statements.join("; ")).await?;
        Ok(decode_samples(answers.into_iter().flatten().collect()))
    }

    /// The series ids among `sids` (all when `None`) with at least one sample in `range`
    /// matching `tags`.
    pub(crate) async fn sids_with_samples(
        &self,
        sids: Option<&[&str]>,
        range: MicrosRange,
        tags: &Tags,
    ) -> Result<BTreeSet<String>> {
        if range.start >= range.end {
            return Ok(BTreeSet::new());
        }
        let from = self.from(SAMPLES);
        let base = format!(
            "{}{}",
            time_range(range.start, range.end),
            Self::tag_conditions(tags)
        );
        let statements: Vec<String> = match sids {
            None => vec![format!(
                "SELECT count(\"v\") FROM {from} WHERE {base} GROUP BY \"sid\""
            )],
            Some([]) => return Ok(BTreeSet::new()),
            Some(sids) => sids
                .chunks(IDS_PER_STATEMENT)
                .map(|chunk| {
                    format!(
                        "SELECT count(\"v\") FROM {from} WHERE {} AND {base} GROUP BY \"sid\"",
                        any_of("sid", chunk)
                    )
                })
                .collect(),
        };
        let answers = self.client.query(&statements.join("; ")).await?;
        Ok(answers
            .into_iter()
            .flatten()
            .filter_map(|s| s.tag("sid"))
            .collect())
    }

    /// Whether a series is live: updated within the TTL, or holding a live sample.
    fn meta_live(&self, metric: &Metric) -> bool {
        let cutoff = self.config.retention.metric_cutoff(time::now());
        RetentionPolicy::is_live(cutoff, metric.updated_at)
    }

    pub(crate) async fn read_metric(&self, id: &str) -> Result<Option<Metric>> {
        let Some(mut metric) = self.series_docs(None, Some(&[id])).await?.pop() else {
            return Ok(None);
        };
        let range = self.live_range(MicrosRange::new(None, None));
        let mut samples = self.samples_of(&[id], range, &Tags::new()).await?;
        let samples = samples.remove(id).unwrap_or_default();
        if samples.is_empty() && !self.meta_live(&metric) {
            return Ok(None);
        }
        metric.values = to_values(samples);
        Ok(Some(metric))
    }

    pub(crate) async fn select_metrics(
        &self,
        query: Selection<'_, MetricQuery>,
    ) -> Result<Vec<Metric>> {
        let (query, options) = (query.get(), query.options());
        let sample_filter = query.start.is_some() || query.end.is_some() || !query.tags.is_empty();
        let range = self.live_range(query.range_micros());
        let mut candidates: Vec<Metric> = self
            .series_docs(query.name.as_deref(), None)
            .await?
            .into_iter()
            .filter(|m| {
                query.name.as_ref().is_none_or(|n| *n == m.name)
                    && query.metric_type.is_none_or(|t| t == m.metric_type)
                    && filter::matches_all(m, options)
            })
            .collect();
        // Liveness, and the sample filter: series left without a matching sample go.
        let needs_samples: Vec<&str> = candidates
            .iter()
            .filter(|m| sample_filter || !self.meta_live(m))
            .map(|m| m.id.as_str())
            .collect();
        if !needs_samples.is_empty() {
            let ids = if needs_samples.len() > 2 * IDS_PER_STATEMENT {
                None
            } else {
                Some(needs_samples.as_slice())
            };
            let (check_range, tags) = if sample_filter {
                (range, &query.tags)
            } else {
                (self.live_range(MicrosRange::new(None, None)), &Tags::new())
            };
            let with_samples = self.sids_with_samples(ids, check_range, tags).await?;
            let without: BTreeSet<String> = needs_samples
                .iter()
                .filter(|id| !with_samples.contains(**id))
                .map(|id| (*id).to_owned())
                .collect();
            candidates.retain(|m| !without.contains(&m.id));
        }
        filter::sort_and_page(
            &mut candidates,
            options,
            query::tie_breaker(DataKind::Metrics).name,
        );
        let ids: Vec<&str> = candidates.iter().map(|m| m.id.as_str()).collect();
        let mut samples = self.samples_of(&ids, range, &query.tags).await?;
        for metric in &mut candidates {
            metric.values = to_values(samples.remove(&metric.id).unwrap_or_default());
        }
        Ok(candidates)
    }
}
