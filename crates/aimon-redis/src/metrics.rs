//! Series and samples: writes, reads, queries and the server-side history.

use aimon_core::driver::MetricBatch;
use aimon_core::driver::MetricDriver;
use aimon_core::driver::Selection;
use aimon_core::driver::Valid;
use aimon_core::driver::ValidId;
use std::collections::{BTreeMap, HashMap, HashSet};

use aimon_core::chunk;
use aimon_core::downsample::{Downsampler, bucket_start};
use aimon_core::filter::{self, Record};
use aimon_core::model::tags_json;
use aimon_core::query::{Field, HistoryQuery, HistorySeries, MetricQuery, Scalar};
use aimon_core::{
    DataKind, Error, Metric, MetricValue, Result, RetentionPolicy, StorageEvent, Tags, WriteReport,
    time,
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use redis::Value;

use crate::backend::{RedisBackend, bytes, items, live_until_arg, pad, text, ttl_arg};
use crate::chunks::{Append, HeadBatch, Loaded};
use crate::scripts::SCRIPTS;

/// Series fetched per pipeline while looking for series with matching samples.
const SAMPLE_CHUNK: usize = 32;

/// The distinct tag sets of one series' batch: each serialized once (samples of a series
/// mostly repeat their tags), with its samples in the order written and the latest timestamp.
#[derive(Default)]
struct TagSets<'a> {
    sets: Vec<TagSet<'a>>,
    index: HashMap<&'a Tags, usize>,
}

struct TagSet<'a> {
    tags: &'a Tags,
    json: String,
    latest: i64,
    samples: Vec<(i64, f64)>,
}

impl<'a> TagSets<'a> {
    /// Notes a sample with `tags` at `ts`.
    fn push(&mut self, tags: &'a Tags, ts: i64, value: f64) {
        let at = match self.sets.last() {
            Some(last) if last.tags == tags => self.sets.len() - 1,
            _ => *self.index.entry(tags).or_insert_with(|| {
                self.sets.push(TagSet {
                    tags,
                    json: tags_json(tags),
                    latest: ts,
                    samples: Vec::new(),
                });
                self.sets.len() - 1
            }),
        };
        let set = &mut self.sets[at];
        set.latest = set.latest.max(ts);
        set.samples.push((ts, value));
    }

    /// Each tag pair with the latest timestamp of a sample carrying it.
    fn pairs(&self) -> BTreeMap<(&'a str, &'a str), i64> {
        let mut pairs = BTreeMap::new();
        for set in &self.sets {
            for (k, v) in set.tags.iter() {
                let last = pairs.entry((k.as_str(), v.as_str())).or_insert(set.latest);
                *last = (*last).max(set.latest);
            }
        }
        pairs
    }
}

/// Parses a tag set's JSON once per tag set.
fn parse_tags(json: &str) -> Result<Tags> {
    serde_json::from_str(json).map_err(|_| Error::malformed("sample tags"))
}

/// The samples of one loaded series as values, ordered by timestamp, then tags JSON (the
/// order every backend returns), keeping those whose tags hold every pair of `filter`.
fn values_of(loaded: Loaded, filter: &Tags) -> Result<Vec<MetricValue>> {
    let mut rows: Vec<(i64, usize, f64)> = Vec::new();
    let mut tag_sets: Vec<Tags> = Vec::new();
    // BTreeMap order is the tags JSON order, so the index orders ties like the JSON.
    for (json, samples) in loaded.samples {
        let tags = parse_tags(&json)?;
        if !filter.iter().all(|(k, want)| tags.get(k) == Some(want)) {
            continue;
        }
        let at = tag_sets.len();
        tag_sets.push(tags);
        rows.extend(
            samples
                .timestamps
                .iter()
                .zip(&samples.values)
                .map(|(t, v)| (*t, at, *v)),
        );
    }
    rows.sort_by_key(|&(t, at, _)| (t, at));
    Ok(rows
        .into_iter()
        .map(|(t, at, value)| MetricValue {
            timestamp: time::from_micros(t),
            value,
            tags: tag_sets[at].clone(),
        })
        .collect())
}

/// Accepts the tag sets (by JSON) holding every pair of `filter`.
fn tags_filter(filter: &Tags) -> impl Fn(&str) -> bool + '_ {
    move |json: &str| {
        filter.is_empty()
            || parse_tags(json)
                .map(|tags| filter.iter().all(|(k, want)| tags.get(k) == Some(want)))
                .unwrap_or(true)
    }
}

/// How a batch wrote a series' metadata (see `save_metrics`).
enum MetaWrite {
    /// The series script; its markers are remembered once the write succeeded.
    Script(Vec<u64>),
    /// Plain `HSET` + `PUBLISH`, at `at` in the pipeline; `repair` is the script to run if
    /// the `HSET` found the series gone.
    Plain {
        at: usize,
        repair: redis::Cmd,
        markers: Vec<u64>,
    },
}

/// How `metric_history` reads chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryPlan {
    /// Decide next to the data: the load script leaves out the data of chunks whose summary
    /// answers alone (the default).
    Summaries,
    /// Ship every chunk in the range to the client and decode it there.
    DecodeAll,
}

/// The metadata stored for a series (no samples; `created_at` is the separate `c` field).
fn metadata_of(metric: &Metric) -> Metric {
    Metric {
        values: Vec::new(),
        created_at: time::truncate(metric.created_at),
        updated_at: time::truncate(metric.updated_at),
        ..metric.clone()
    }
}

/// A series' metadata as read: the metric without samples and its latest sample's time.
struct Meta {
    metric: Metric,
    last_sample: Option<i64>,
}

impl Meta {
    fn is_live(&self, cutoff: Option<i64>) -> bool {
        RetentionPolicy::is_live(cutoff, self.metric.updated_at)
            || cutoff.is_none_or(|c| self.last_sample.is_some_and(|l| l >= c))
    }
}

/// `HMGET meta j c l` → the series metadata.
fn parse_meta(reply: &Value) -> Result<Option<Meta>> {
    let fields = items(reply);
    let Some(json) = fields.first().and_then(bytes) else {
        return Ok(None);
    };
    let mut metric: Metric =
        serde_json::from_slice(json).map_err(|_| Error::malformed("series"))?;
    if let Some(created) = fields.get(1).and_then(text) {
        metric.created_at = DateTime::parse_from_rfc3339(created)
            .map_err(|_| Error::malformed("series created_at"))?
            .to_utc();
    }
    let last_sample = fields
        .get(2)
        .and_then(text)
        .and_then(|s| s.parse::<i64>().ok());
    Ok(Some(Meta {
        metric,
        last_sample,
    }))
}

/// Only the id of a series, for filtering candidate ids before fetching anything.
struct IdOnly<'a>(&'a str);

impl Record for IdOnly<'_> {
    fn field(&self, name: &str) -> Option<Scalar> {
        (name == "id").then(|| Scalar::Text(self.0.to_owned()))
    }
}

impl RedisBackend {
    fn meta_cmd(&self, id: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.keys.series_meta(id))
            .arg("j")
            .arg("c")
            .arg("l");
        cmd
    }

    /// Ids of an index whose entries are live at `now` (µs), with lazy removal of the rest.
    pub(crate) async fn live_ids(&self, index: &str, now: i64) -> Result<Vec<String>> {
        let mut pipe = redis::pipe();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(index)
            .arg("-inf")
            .arg(format!("({now}"));
        pipe.cmd("ZRANGEBYSCORE").arg(index).arg(now).arg("+inf");
        let replies = self.pool.pipeline(&pipe).await?;
        Ok(replies
            .last()
            .map(items)
            .unwrap_or_default()
            .iter()
            .filter_map(|v| text(v).map(str::to_owned))
            .collect())
    }

    /// Keeps the ids of series with a live sample carrying every pair of `tags` (by the
    /// sample-tag indexes; the samples themselves are still filtered exactly).
    async fn with_sample_tags(
        &self,
        mut ids: Vec<String>,
        tags: &Tags,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        for (k, v) in tags {
            if ids.is_empty() {
                break;
            }
            let tagged: HashSet<String> = self
                .live_ids(&self.keys.series_by_tag(k, v), time::to_micros(now))
                .await?
                .into_iter()
                .collect();
            ids.retain(|id| tagged.contains(id));
        }
        Ok(ids)
    }

    async fn fetch_metas(&self, ids: &[String]) -> Result<Vec<Option<Meta>>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1000) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.add_command(self.meta_cmd(id));
            }
            for reply in self.pool.pipeline(&pipe).await? {
                out.push(parse_meta(&reply)?);
            }
        }
        Ok(out)
    }

    /// Sets the samples of each series: those in `[lower, end)` whose tags include `tags`
    /// (filtered in the server, checked again here).
    async fn fill_samples(
        &self,
        metrics: &mut [Metric],
        lower: i64,
        end: i64,
        tags: &Tags,
    ) -> Result<()> {
        if metrics.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = metrics.iter().map(|m| m.id.as_str()).collect();
        let loaded = self
            .load(&ids, lower, end, None, &tags_filter(tags))
            .await?;
        for (metric, loaded) in metrics.iter_mut().zip(loaded) {
            metric.values = values_of(loaded, tags)?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl MetricDriver for RedisBackend {
    async fn save_metrics(&self, batch: MetricBatch<'_>) -> Result<WriteReport> {
        let metrics = batch.get();
        let retention = self.config.retention;
        let now = time::now();
        let cutoff = retention.metric_cutoff(now);
        let ttl = ttl_arg(retention.metric_ttl);
        let channel = self.keys.channel();
        let (master, registry) = (self.keys.series_index(), self.keys.registry());
        let mut pipe = redis::pipe();
        if self.atomic_batches() {
            pipe.atomic();
        }
        let mut report = WriteReport::default();
        // Where each series' append reply is: 1 there means its head should be sealed.
        let mut appends: Vec<(Append, &str, HeadBatch)> = Vec::new();
        let mut metas: Vec<MetaWrite> = Vec::new();
        for metric in metrics {
            let mut latest: Option<i64> = None;
            let mut live = 0u64;
            let mut tag_sets = TagSets::default();
            for sample in &metric.values {
                if !RetentionPolicy::is_live(cutoff, sample.timestamp) {
                    report.expired += 1;
                    continue;
                }
                let ts = time::to_micros(sample.timestamp);
                latest = Some(latest.map_or(ts, |l| l.max(ts)));
                tag_sets.push(&sample.tags, ts, sample.value);
                live += 1;
            }
            let tag_pairs = tag_sets.pairs();
            if live > 0 {
                let mut head = HeadBatch::default();
                for set in &tag_sets.sets {
                    head.add(&set.json, &set.samples);
                }
                let append = self.push_append(&mut pipe, &metric.id, &head);
                appends.push((append, metric.id.as_str(), head));
            }
            report.written += live;
            let meta = metadata_of(metric);
            let event = serde_json::to_string(&StorageEvent::MetricWritten {
                backend: self.config.name.clone(),
                metric_id: metric.id.clone(),
                samples: live,
            })?;
            let meta_key = self.keys.series_meta(&metric.id);
            let by_name = self.keys.series_by_name(&metric.name);
            let by_type = self.keys.series_by_type(metric.metric_type.as_str());
            let mut keys = vec![
                meta_key.clone(),
                master.clone(),
                registry.clone(),
                by_name,
                by_type,
            ];
            keys.extend(tag_pairs.keys().map(|(k, v)| self.keys.series_by_tag(k, v)));
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let meta_json = serde_json::to_string(&meta)?;
            let updated = pad(time::to_micros(meta.updated_at));
            let script = |channel: &str, event: &str| {
                let mut cmd = SCRIPTS.series.cmd(&keys);
                cmd.arg(&metric.id)
                    .arg(&meta_json)
                    .arg(time::format(meta.created_at))
                    .arg(&updated)
                    .arg(latest.map(pad).unwrap_or_default())
                    .arg(&ttl)
                    .arg(if RetentionPolicy::is_live(cutoff, meta.updated_at) {
                        "1"
                    } else {
                        "0"
                    })
                    .arg(channel)
                    .arg(event);
                for last in tag_pairs.values() {
                    match retention.metric_ttl {
                        Some(_) => cmd.arg(live_until_arg(*last, retention.metric_ttl)),
                        None => cmd.arg("+inf"),
                    };
                }
                cmd
            };
            let markers = self.series_markers(metric, tag_pairs.keys());
            if retention.metric_ttl.is_none() && self.all_known(&markers) {
                // Name, type and tag pairs as this process last wrote them, no TTL: the
                // indexes already hold everything the script would add, so only the metadata
                // and the event are written. A reply of 2 new fields means the series was
                // removed meanwhile (by another process's retention): the script then runs
                // after all (without a second event) and puts its indexes back.
                metas.push(MetaWrite::Plain {
                    at: pipe.len(),
                    repair: script("", ""),
                    markers,
                });
                pipe.cmd("HSET")
                    .arg(&meta_key)
                    .arg("j")
                    .arg(&meta_json)
                    .arg("u")
                    .arg(&updated);
                pipe.cmd("PUBLISH").arg(&channel).arg(&event);
            } else {
                metas.push(MetaWrite::Script(markers));
                pipe.add_command(script(&channel, &event));
            }
        }
        let replies = self.pool.write(&pipe).await?;
        let mut repairs = redis::pipe();
        for meta in metas {
            match meta {
                MetaWrite::Script(markers) => self.remember(&markers),
                MetaWrite::Plain {
                    at,
                    repair,
                    markers,
                } => {
                    if replies.get(at).map(crate::backend::int) != Some(0) {
                        self.forget(&markers);
                        repairs.add_command(repair);
                    }
                }
            }
        }
        if !repairs.is_empty() {
            self.pool.write(&repairs).await?;
        }
        // The samples are stored once the pipeline succeeded; sealing only compacts them. A
        // seal cut by a fault leaves the head as it was, and the next write seals it.
        // Seals of different series are independent: a few at a time overlap their round
        // trips and their encoding.
        let mut seals = futures::stream::FuturesUnordered::new();
        for (append, id, head) in appends {
            if !self.appended(id, &head, append, &replies) {
                continue;
            }
            if seals.len() >= 8
                && let Some(sealed) = seals.next().await
            {
                sealed?;
            }
            seals.push(self.seal(id, false));
        }
        while let Some(sealed) = seals.next().await {
            sealed?;
        }
        Ok(report)
    }

    async fn get_metric(&self, id: ValidId<'_>) -> Result<Option<Metric>> {
        let id = id.get();
        let cutoff = self.config.retention.metric_cutoff(time::now());
        let Some(meta) = self.fetch_metas(&[id.to_owned()]).await?.pop().flatten() else {
            return Ok(None);
        };
        if !meta.is_live(cutoff) {
            return Ok(None);
        }
        let mut metric = meta.metric;
        let none = Tags::new();
        let lower = cutoff.unwrap_or(i64::MIN);
        let loaded = self
            .load(&[id], lower, i64::MAX, None, &tags_filter(&none))
            .await?;
        metric.values = match loaded.into_iter().next() {
            Some(loaded) => values_of(loaded, &none)?,
            None => Vec::new(),
        };
        Ok(Some(metric))
    }

    async fn query_metrics(&self, query: Selection<'_, MetricQuery>) -> Result<Vec<Metric>> {
        let (query, options) = (query.get(), query.options());
        let range = query.range_micros();
        let sample_filter = query.start.is_some() || query.end.is_some() || !query.tags.is_empty();
        let now = time::now();
        let cutoff = self.config.retention.metric_cutoff(now);
        let index = match (&query.name, query.metric_type) {
            (Some(name), _) => self.keys.series_by_name(name),
            (None, Some(ty)) => self.keys.series_by_type(ty.as_str()),
            (None, None) => self.keys.series_index(),
        };
        let id_filters: Vec<_> = options
            .filters
            .iter()
            .filter(|f| matches!(&f.field, Field::Column(c) if c.name == "id"))
            .collect();
        let ids: Vec<String> = self
            .live_ids(&index, time::to_micros(now))
            .await?
            .into_iter()
            .filter(|id| id_filters.iter().all(|f| filter::matches(&IdOnly(id), f)))
            .collect();
        let ids = self.with_sample_tags(ids, &query.tags, now).await?;
        let mut found: Vec<Metric> = self
            .fetch_metas(&ids)
            .await?
            .into_iter()
            .flatten()
            .filter(|meta| {
                let m = &meta.metric;
                query.name.as_ref().is_none_or(|n| *n == m.name)
                    && query.metric_type.is_none_or(|t| t == m.metric_type)
                    && meta.is_live(cutoff)
                    && filter::matches_all(m, options)
            })
            .map(|meta| meta.metric)
            .collect();
        let tie = aimon_core::query::tie_breaker(DataKind::Metrics).name;
        let lower = range.start.max(cutoff.unwrap_or(0));
        if !sample_filter {
            filter::sort_and_page(&mut found, options, tie);
            if !query.series_only {
                self.fill_samples(&mut found, lower, range.end, &Tags::new())
                    .await?;
            }
            return Ok(found);
        }
        found.sort_by(|a, b| filter::compare(a, b, options, tie));
        let mut out = Vec::new();
        let mut skipped = 0;
        for chunk in found.chunks_mut(SAMPLE_CHUNK) {
            self.fill_samples(chunk, lower, range.end, &query.tags)
                .await?;
            for metric in chunk.iter_mut() {
                if metric.values.is_empty() {
                    continue;
                }
                if skipped < options.offset {
                    skipped += 1;
                    continue;
                }
                out.push(metric.clone());
                if out.len() >= options.limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    async fn metric_history(&self, query: Valid<'_, HistoryQuery>) -> Result<Vec<HistorySeries>> {
        self.history_with(query.get(), HistoryPlan::Summaries).await
    }
}

impl RedisBackend {
    /// `metric_history` with a chosen plan: what [`MetricDriver::metric_history`] does with
    /// [`HistoryPlan::Summaries`]; [`HistoryPlan::DecodeAll`] is the alternative it was measured
    /// against (`examples/history_plans.rs`). `query` must be valid ([`HistoryQuery::validate`]).
    pub async fn history_with(
        &self,
        query: &HistoryQuery,
        plan: HistoryPlan,
    ) -> Result<Vec<HistorySeries>> {
        let range = query.range_micros();
        let now = time::now();
        let cutoff = self.config.retention.metric_cutoff(now);
        let lower = range.start.max(cutoff.unwrap_or(0));
        let step = query.step_micros();
        let ids = self
            .live_ids(&self.keys.series_by_name(&query.name), time::to_micros(now))
            .await?;
        let ids = self.with_sample_tags(ids, &query.tags, now).await?;
        // Only series that really carry this name (the index may lag a rename).
        let metas = self.fetch_metas(&ids).await?;
        let ids: Vec<&String> = ids
            .iter()
            .zip(&metas)
            .filter(|(_, m)| m.as_ref().is_some_and(|m| m.metric.name == query.name))
            .map(|(id, _)| id)
            .collect();
        let mut merged = Downsampler::new(query);
        let ids: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
        let loaded = self
            .load(
                &ids,
                lower,
                range.end,
                (plan == HistoryPlan::Summaries).then_some(step),
                &tags_filter(&query.tags),
            )
            .await?;
        for (id, loaded) in ids.iter().zip(loaded) {
            let group_of = |json: &str| -> Result<Option<String>> {
                Ok(match &query.group_by {
                    Some(key) => parse_tags(json)?.get(key).cloned(),
                    None => None,
                })
            };
            for (json, summary) in &loaded.summaries {
                merged.merge(
                    group_of(json)?,
                    bucket_start(summary.first.0, step),
                    summary.aggregate(id, json),
                );
            }
            for (json, samples) in &loaded.samples {
                let group = group_of(json)?;
                chunk::fold_buckets(
                    samples,
                    lower,
                    range.end,
                    step,
                    group.as_deref(),
                    id,
                    json,
                    &mut merged,
                );
            }
        }
        Ok(merged.finish())
    }
}
