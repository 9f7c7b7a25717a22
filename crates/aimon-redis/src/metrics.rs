//! Series and samples: writes, reads, queries and the server-side history.

use aimon_core::driver::MetricBatch;
use aimon_core::driver::MetricDriver;
use aimon_core::driver::Selection;
use aimon_core::driver::Valid;
use aimon_core::driver::ValidId;
use std::collections::{BTreeMap, HashMap, HashSet};

use aimon_core::downsample::{
    BucketAggregate, CompensatedSum, Downsampler, OrderKey, bucket_start,
};
use aimon_core::filter::{self, Record};
use aimon_core::model::tags_json;
use aimon_core::query::{Field, HistoryQuery, HistorySeries, MetricQuery, Scalar};
use aimon_core::{
    DataKind, Error, Metric, MetricValue, Result, RetentionPolicy, StorageEvent, Tags, WriteReport,
    time,
};
use chrono::{DateTime, Utc};
use redis::Value;

use crate::backend::{RedisBackend, bytes, items, live_until_arg, pad, text, ttl_arg};
use crate::scripts::SCRIPTS;

/// Series fetched per pipeline while looking for series with matching samples.
const SAMPLE_CHUNK: usize = 32;

/// A sample member: padded timestamp plus canonical tags JSON (unique per sample key, and
/// ordered by timestamp then tags), from the tags JSON already serialized.
fn member_with(micros: i64, tags_json: &str) -> String {
    use std::fmt::Write;
    let mut m = String::with_capacity(16 + tags_json.len());
    let _ = write!(m, "{:016}", micros.max(0));
    m.push_str(tags_json);
    m
}

/// The distinct tag sets of one series' batch: each serialized once (samples of a series
/// mostly repeat their tags), with the latest timestamp it carries.
#[derive(Default)]
struct TagSets<'a> {
    sets: Vec<(&'a Tags, String, i64)>,
    index: HashMap<&'a Tags, usize>,
}

impl<'a> TagSets<'a> {
    /// The JSON of `tags`, noting a sample with them at `ts`.
    fn json(&mut self, tags: &'a Tags, ts: i64) -> &str {
        let at = match self.sets.last() {
            Some((last, _, _)) if *last == tags => self.sets.len() - 1,
            _ => *self.index.entry(tags).or_insert_with(|| {
                self.sets.push((tags, tags_json(tags), ts));
                self.sets.len() - 1
            }),
        };
        let set = &mut self.sets[at];
        set.2 = set.2.max(ts);
        &set.1
    }

    /// Each tag pair with the latest timestamp of a sample carrying it.
    fn pairs(&self) -> BTreeMap<(&'a str, &'a str), i64> {
        let mut pairs = BTreeMap::new();
        for (tags, _, ts) in &self.sets {
            for (k, v) in tags.iter() {
                let last = pairs.entry((k.as_str(), v.as_str())).or_insert(*ts);
                *last = (*last).max(*ts);
            }
        }
        pairs
    }
}

/// A value as text that parses back to the same `f64`, bit for bit (Lua reads it too).
pub(crate) fn value_text(v: f64) -> String {
    format!("{v:?}")
}

/// A decoded sample: timestamp µs, tags, value.
struct Sample {
    ts: i64,
    tags: Tags,
    value: f64,
}

fn parse_member(m: &[u8]) -> Result<(i64, String)> {
    let m = std::str::from_utf8(m).map_err(|_| Error::malformed("sample key"))?;
    if m.len() < 16 || !m.is_char_boundary(16) {
        return Err(Error::malformed("sample key"));
    }
    let ts = m[..16]
        .parse()
        .map_err(|_| Error::malformed("sample timestamp"))?;
    Ok((ts, m[16..].to_owned()))
}

/// Member, value, member, value… from the `range` script.
fn parse_samples(reply: &Value) -> Result<Vec<Sample>> {
    let flat = items(reply);
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut tag_cache: BTreeMap<String, Tags> = BTreeMap::new();
    for pair in flat.chunks(2) {
        let [m, v] = pair else { continue };
        let value = match text(v) {
            Some("") | None => continue,
            Some(s) => s
                .parse::<f64>()
                .map_err(|_| Error::malformed("sample value"))?,
        };
        let (ts, tags_json) = parse_member(bytes(m).unwrap_or_default())?;
        let tags = match tag_cache.get(&tags_json) {
            Some(t) => t.clone(),
            None => {
                let t: Tags = serde_json::from_str(&tags_json)
                    .map_err(|_| Error::malformed("sample tags"))?;
                tag_cache.insert(tags_json.clone(), t.clone());
                t
            }
        };
        out.push(Sample { ts, tags, value });
    }
    Ok(out)
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
    /// The range script for one series over scores `[min, max]`.
    fn range_cmd(&self, id: &str, min: i64, max: i64, tags: &Tags) -> redis::Cmd {
        let (z, v) = (self.keys.samples(id), self.keys.values(id));
        let mut cmd = SCRIPTS.range.cmd(&[&z, &v]);
        cmd.arg(min.max(0)).arg(max);
        for (k, v) in tags {
            cmd.arg(k).arg(v);
        }
        cmd
    }

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
        let mut pipe = redis::pipe();
        for m in metrics.iter() {
            pipe.add_command(self.range_cmd(&m.id, lower, end, tags));
        }
        let replies = self.pool.pipeline(&pipe).await?;
        for (metric, reply) in metrics.iter_mut().zip(&replies) {
            metric.values = parse_samples(reply)?
                .into_iter()
                .filter(|s| s.ts >= lower && s.ts < end)
                .map(|s| MetricValue {
                    timestamp: time::from_micros(s.ts),
                    value: s.value,
                    tags: s.tags,
                })
                .filter(|v| tags.iter().all(|(k, want)| v.tags.get(k) == Some(want)))
                .collect();
        }
        Ok(())
    }
}

/// Parses one reply of the history script (records of 13 fields: group flag, group, bucket,
/// count, sum, compensation, min, max, first member, first value, last member, last value,
/// whether the sum is scaled by 2⁻⁶⁴)
/// into `downsampler`.
fn merge_history_reply(
    downsampler: &mut Downsampler,
    series_id: &str,
    reply: &Value,
    step: i64,
) -> Result<()> {
    let bad = || Error::malformed("history reply");
    for rec in items(reply).chunks(13) {
        let t = |i: usize| rec.get(i).and_then(text).ok_or_else(bad);
        let num = |i: usize| -> Result<f64> { t(i)?.parse::<f64>().map_err(|_| bad()) };
        let group = (t(0)? == "1")
            .then(|| t(1).map(str::to_owned))
            .transpose()?;
        let bucket: i64 = match t(2)? {
            // A sample past 2^53 µs: the script left its bucket to us.
            "" => parse_member(rec.get(8).and_then(bytes).ok_or_else(bad)?)?.0,
            b => b.parse().map_err(|_| bad())?,
        };
        let member = |i: usize| -> Result<OrderKey> {
            let (ts, tags) = parse_member(rec.get(i).and_then(bytes).ok_or_else(bad)?)?;
            Ok((ts, series_id.to_owned(), tags))
        };
        let sum = CompensatedSum::from_parts(num(4)?, num(5)?, t(12)? == "1");
        let part = BucketAggregate {
            count: t(3)?.parse().map_err(|_| bad())?,
            sum,
            min: num(6)?,
            max: num(7)?,
            first: (member(8)?, num(9)?),
            last: (member(10)?, num(11)?),
        };
        downsampler.merge(group, bucket_start(bucket, step), part);
    }
    Ok(())
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
        for metric in metrics {
            let mut latest: Option<i64> = None;
            let (z, v) = (self.keys.samples(&metric.id), self.keys.values(&metric.id));
            // The values first, then the index of members: a reader that sees a member always
            // finds its value, and a batch cut in between is completed by its retry.
            let mut values = redis::cmd("HSET");
            values.arg(&v);
            let mut scores = redis::cmd("ZADD");
            scores.arg(&z);
            let mut live = 0u64;
            let mut tag_sets = TagSets::default();
            for sample in &metric.values {
                if !RetentionPolicy::is_live(cutoff, sample.timestamp) {
                    report.expired += 1;
                    continue;
                }
                let ts = time::to_micros(sample.timestamp);
                latest = Some(latest.map_or(ts, |l| l.max(ts)));
                let m = member_with(ts, tag_sets.json(&sample.tags, ts));
                values.arg(&m).arg(value_text(sample.value));
                scores.arg(ts).arg(m);
                live += 1;
            }
            let tag_pairs = tag_sets.pairs();
            if live > 0 {
                pipe.add_command(values).add_command(scores);
                match &cutoff {
                    Some(c) => {
                        let mut retain = SCRIPTS.retain.cmd(&[&z, &v]);
                        retain.arg(&ttl).arg(c);
                        pipe.add_command(retain);
                    }
                    None => {
                        // A TTL configured earlier may have left an expiry on the keys.
                        pipe.cmd("PERSIST").arg(&z).cmd("PERSIST").arg(&v);
                    }
                }
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
            let mut keys = vec![meta_key, master.clone(), registry.clone(), by_name, by_type];
            keys.extend(tag_pairs.keys().map(|(k, v)| self.keys.series_by_tag(k, v)));
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let mut cmd = SCRIPTS.series.cmd(&keys);
            cmd.arg(&metric.id)
                .arg(serde_json::to_string(&meta)?)
                .arg(time::format(meta.created_at))
                .arg(pad(time::to_micros(meta.updated_at)))
                .arg(latest.map(pad).unwrap_or_default())
                .arg(&ttl)
                .arg(if RetentionPolicy::is_live(cutoff, meta.updated_at) {
                    "1"
                } else {
                    "0"
                })
                .arg(&channel)
                .arg(event);
            for last in tag_pairs.values() {
                match retention.metric_ttl {
                    Some(_) => cmd.arg(live_until_arg(*last, retention.metric_ttl)),
                    None => cmd.arg("+inf"),
                };
            }
            pipe.add_command(cmd);
        }
        self.pool.write(&pipe).await?;
        Ok(report)
    }

    async fn get_metric(&self, id: ValidId<'_>) -> Result<Option<Metric>> {
        let id = id.get();
        let cutoff = self.config.retention.metric_cutoff(time::now());
        let mut pipe = redis::pipe();
        pipe.add_command(self.meta_cmd(id));
        pipe.add_command(self.range_cmd(
            id,
            cutoff.unwrap_or(0),
            time::MAX_TIMESTAMP_MICROS,
            &Tags::new(),
        ));
        let replies = self.pool.pipeline(&pipe).await?;
        let (Some(meta), Some(samples)) = (replies.first(), replies.get(1)) else {
            return Ok(None);
        };
        let Some(meta) = parse_meta(meta)? else {
            return Ok(None);
        };
        if !meta.is_live(cutoff) {
            return Ok(None);
        }
        let mut metric = meta.metric;
        metric.values = parse_samples(samples)?
            .into_iter()
            .filter(|s| cutoff.is_none_or(|c| s.ts >= c))
            .map(|s| MetricValue {
                timestamp: time::from_micros(s.ts),
                value: s.value,
                tags: s.tags,
            })
            .collect();
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
            self.fill_samples(&mut found, lower, range.end, &Tags::new())
                .await?;
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
        let query = query.get();
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
        for chunk in ids.chunks(SAMPLE_CHUNK) {
            let mut pipe = redis::pipe();
            for id in chunk {
                let (z, v) = (self.keys.samples(id), self.keys.values(id));
                let mut cmd = SCRIPTS.history.cmd(&[&z, &v]);
                cmd.arg(lower)
                    .arg(range.end)
                    .arg(pad(lower))
                    .arg(pad(range.end))
                    .arg(step)
                    .arg(query.group_by.as_deref().unwrap_or(""));
                for (k, v) in &query.tags {
                    cmd.arg(k).arg(v);
                }
                pipe.add_command(cmd);
            }
            let replies = self.pool.pipeline(&pipe).await?;
            for (id, reply) in chunk.iter().zip(&replies) {
                merge_history_reply(&mut merged, id, reply, step)?;
            }
        }
        Ok(merged.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_as_text() {
        for v in [
            0.0,
            -0.0,
            1.5,
            1e-7,
            1.4000000000000001,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
        ] {
            let back: f64 = value_text(v).parse().unwrap();
            assert_eq!(back.to_bits(), v.to_bits(), "{v}");
        }
    }

    fn member(micros: i64, tags: &Tags) -> String {
        member_with(micros, &tags_json(tags))
    }

    #[test]
    fn members_order_by_time_then_tags() {
        let a = member(5, &Tags::new());
        let b = member(5, &Tags::from([("k".to_owned(), "v".to_owned())]));
        let c = member(40, &Tags::new());
        // Same order as the tags JSON strings, as every backend sorts them.
        assert_eq!(
            a < b,
            "{}" < tags_json(&Tags::from([("k".to_owned(), "v".to_owned())])).as_str()
        );
        assert!(a < c && b < c);
        assert_eq!(parse_member(b.as_bytes()).unwrap().0, 5);
    }
}
