//! Series and samples: writes, reads, queries and `metric_history`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;

use aimon_core::backend::{StorageEvent, WriteReport};
use aimon_core::downsample::{CompensatedSum, Downsampler, SampleRef, bucket_start};
use aimon_core::model::tags_json;
use aimon_core::query::{
    self, Aggregation, HistoryBucket, HistoryQuery, HistorySeries, MetricQuery, MicrosRange,
};
use aimon_core::{
    DataKind, Metric, MetricValue, Result, RetentionPolicy, Tags, filter, time, validate,
};

use crate::backend::{InfluxBackend, SAMPLES, SERIES, TAG_PREFIX, any_of, docs, time_range};
use crate::client::{LineBuffer, Series, Target, cell_f64, cell_i64};
use crate::line;

/// Series ids per `OR` list in one statement.
const IDS_PER_STATEMENT: usize = 200;

/// (count, sum, min, max) of one bucket, by group and bucket start.
/// (group, bucket start) → (count, sum, min, max).
type Buckets = BTreeMap<Option<String>, BTreeMap<i64, (u64, CompensatedSum, f64, f64)>>;

/// A decoded sample: (timestamp µs, tags, value).
type Sample = (i64, Tags, f64);

/// The stored tag key of a sample tag.
pub(crate) fn tag_key(key: &str) -> String {
    format!("{TAG_PREFIX}{key}")
}

/// Appends the series key of a sample: measurement `samples`, tags `sid` and `t.<key>`
/// (percent-encoded and escaped, see [`crate::line`]).
fn push_series_key(s: &mut String, series_id: &str, tags: &Tags) {
    s.push_str(SAMPLES);
    s.push_str(",sid=");
    line::push_tag(s, series_id);
    for (key, value) in tags {
        s.push(',');
        s.push_str(TAG_PREFIX);
        line::push_tag(s, key);
        s.push('=');
        line::push_tag(s, value);
    }
}

/// The most bytes of a sample's line after its series key: " v=" (3), a float (at most 24),
/// " " (1), microseconds (at most 20) and "\n" (1).
const LINE_TAIL_BYTES: usize = 49;

/// The most the samples buffer reserves up front; a larger batch grows it as it goes.
const MAX_UPFRONT_RESERVE: usize = 64 << 20;

/// InfluxDB's limit on a series key (measurement and tags, escaped): `models.MaxKeyLength`.
pub(crate) const MAX_SERIES_KEY_BYTES: usize = 65_535;

/// The runs of equal tags of every metric of a batch (see [`validate::metric_runs`]), found
/// while validating the whole batch.
struct Runs {
    ranges: Vec<Range<usize>>,
    /// Where each metric's runs end in `ranges`.
    ends: Vec<usize>,
}

impl Runs {
    /// Validates `metrics` as [`validate::metrics`] does, keeping their runs.
    fn validate(metrics: &[Metric]) -> Result<Self> {
        let mut ranges = Vec::with_capacity(metrics.len());
        let mut ends = Vec::with_capacity(metrics.len());
        for metric in metrics {
            validate::metric_runs(metric, |run| ranges.push(run))?;
            ends.push(ranges.len());
        }
        Ok(Runs { ranges, ends })
    }

    /// The runs of the `m`th metric.
    fn of(&self, m: usize) -> &[Range<usize>] {
        let start = if m == 0 { 0 } else { self.ends[m - 1] };
        &self.ranges[start..self.ends[m]]
    }
}

/// The samples of a validated batch, ready to encode: their runs of equal tags and each run's
/// series key, checked.
struct SampleLines<'a> {
    metrics: &'a [Metric],
    runs: &'a Runs,
    /// The series keys of every run, one after the other, in the order of `runs.ranges`.
    keys: String,
    /// Where each run's key ends in `keys`.
    key_ends: Vec<usize>,
    /// Samples before it (µs) are left out.
    cutoff: Option<i64>,
}

impl<'a> SampleLines<'a> {
    /// Encodes each run's series key once, and checks every one, live samples or not, against
    /// the limit InfluxDB would refuse ("max key length exceeded"). Core's validation bounds a
    /// sample's tags so that no valid key reaches it (`validate::MAX_TAGS_BYTES`, with `%` and
    /// `\` grown to three bytes here): this last check of a batch only guards that bound, so a
    /// key over it fails the call with nothing written.
    fn new(metrics: &'a [Metric], runs: &'a Runs, cutoff: Option<i64>) -> Result<Self> {
        let mut keys = String::new();
        let mut key_ends = Vec::with_capacity(runs.ranges.len());
        for (m, metric) in metrics.iter().enumerate() {
            for run in runs.of(m) {
                let start = keys.len();
                push_series_key(&mut keys, &metric.id, &metric.values[run.start].tags);
                let len = keys.len() - start;
                if len > MAX_SERIES_KEY_BYTES {
                    return Err(aimon_core::Error::invalid_input(
                        format_args!("metrics[{m}].values[{}].tags", run.start),
                        format_args!(
                            "the series id and tags make an InfluxDB series key of {len} \
                             bytes, over its limit of {MAX_SERIES_KEY_BYTES}"
                        ),
                    ));
                }
                key_ends.push(keys.len());
            }
        }
        Ok(SampleLines {
            metrics,
            runs,
            keys,
            key_ends,
            cutoff,
        })
    }

    /// The series key of the `r`th run of the batch.
    fn key(&self, r: usize) -> &str {
        let start = if r == 0 { 0 } else { self.key_ends[r - 1] };
        &self.keys[start..self.key_ends[r]]
    }

    /// Whether a sample is within the TTL.
    fn is_live(&self, sample: &MetricValue) -> bool {
        RetentionPolicy::is_live(self.cutoff, sample.timestamp)
    }

    /// How many of the `m`th metric's samples are live.
    fn live(&self, m: usize) -> u64 {
        let values = &self.metrics[m].values;
        match self.cutoff {
            None => values.len() as u64,
            Some(_) => values.iter().filter(|v| self.is_live(v)).count() as u64,
        }
    }

    /// One `\n`-terminated line per live sample, in the batch's order.
    fn encode(&self) -> LineBuffer {
        let mut out = LineBuffer::default();
        // Each run's samples, in the order of `runs.ranges` (and of the keys).
        let runs = self.metrics.iter().enumerate().flat_map(|(m, metric)| {
            self.runs
                .of(m)
                .iter()
                .map(move |run| &metric.values[run.clone()])
        });
        // Sized once for the whole batch rather than grown (and copied) run after run.
        let (mut bytes, mut lines) = (0usize, 0usize);
        for (r, run) in runs.clone().enumerate() {
            let line = self.key(r).len() + LINE_TAIL_BYTES;
            bytes = bytes.saturating_add(run.len().saturating_mul(line));
            lines += run.len();
        }
        out.text.reserve(bytes.min(MAX_UPFRONT_RESERVE));
        out.ends.reserve(lines);
        let mut ints = itoa::Buffer::new();
        for (r, run) in runs.enumerate() {
            let key = self.key(r);
            for sample in run.iter().filter(|v| self.is_live(v)) {
                let s = &mut out.text;
                s.push_str(key);
                s.push_str(" v=");
                line::push_float(s, sample.value);
                s.push(' ');
                s.push_str(ints.format(time::to_micros(sample.timestamp)));
                out.end_line();
            }
        }
        out
    }
}

/// The line protocol `save_metrics` writes for the samples of `metrics` (microsecond
/// precision, one line each, `\n`-terminated), without retention: for outside loaders and the
/// `aimon bench --compare-curl` baseline, which post exactly these lines. Fails, as
/// `save_metrics` would, on input that core validation refuses or on a series key over
/// InfluxDB's limit.
pub fn sample_lines(metrics: &[Metric]) -> Result<String> {
    let runs = Runs::validate(metrics)?;
    Ok(SampleLines::new(metrics, &runs, None)?.encode().text)
}

/// The requests of one `save_metrics` call: the series documents encoded, the samples checked
/// and ready to encode (nothing can fail after this).
struct EncodedWrite<'a> {
    /// One metadata line per written series.
    meta: LineBuffer,
    /// The live samples, encoded while the metadata request is on its way.
    samples: SampleLines<'a>,
    report: WriteReport,
    events: Vec<StorageEvent>,
    /// `created_at` (µs) of every written series, for the process's cache.
    created_at: Vec<(&'a str, i64)>,
}

/// Prepares a validated batch (cut into `runs`): the lines of its series documents, and its
/// samples checked for encoding. `created` holds the stored `created_at` of known series, and
/// gains the new ones'. Fails only on a series key over InfluxDB's limit (nothing is sent then).
fn encode_write<'a>(
    metrics: &'a [Metric],
    runs: &'a Runs,
    cutoff: Option<i64>,
    created: &mut HashMap<String, i64>,
    backend: &str,
) -> Result<EncodedWrite<'a>> {
    let mut report = WriteReport::default();
    let mut meta = LineBuffer::default();
    let mut events = Vec::new();
    let mut docs: BTreeMap<&str, Metric> = BTreeMap::new();
    let samples = SampleLines::new(metrics, runs, cutoff)?;
    for (m, metric) in metrics.iter().enumerate() {
        let live = samples.live(m);
        report.expired += metric.values.len() as u64 - live;
        let meta_live = RetentionPolicy::is_live(cutoff, metric.updated_at);
        if live == 0 && !meta_live && !created.contains_key(&metric.id) {
            continue;
        }
        // Looked up before inserting: a known id (the usual case) is not copied.
        let created_at = match created.get(&metric.id) {
            Some(created_at) => *created_at,
            None => {
                let created_at = time::to_micros(time::truncate(metric.created_at));
                created.insert(metric.id.clone(), created_at);
                created_at
            }
        };
        // One metadata line per series: the last write of the batch wins.
        docs.insert(&metric.id, series_doc(metric, created_at));
        report.written += live;
        events.push(StorageEvent::MetricWritten {
            backend: backend.to_owned(),
            metric_id: metric.id.clone(),
            samples: live,
        });
    }
    for (id, doc) in &docs {
        let s = &mut meta.text;
        s.push_str(SERIES);
        s.push_str(",id=");
        line::push_tag(s, id);
        s.push_str(" name=");
        line::push_string_field(s, &doc.name);
        s.push_str(",doc=");
        line::push_string_field(
            s,
            &serde_json::to_string(doc).map_err(aimon_core::Error::from)?,
        );
        s.push_str(" 0");
        meta.end_line();
    }
    let created_at = docs
        .into_iter()
        .map(|(id, doc)| (id, time::to_micros(doc.created_at)))
        .collect();
    Ok(EncodedWrite {
        meta,
        samples,
        report,
        events,
        created_at,
    })
}

/// The metadata of a series as stored in its `doc` field: the metric without samples.
fn series_doc(metric: &Metric, created_at_micros: i64) -> Metric {
    // Field by field: `..metric.clone()` would copy every sample (and its tags) only to drop
    // them, which once cost more than encoding the batch.
    Metric {
        id: metric.id.clone(),
        name: metric.name.clone(),
        metric_type: metric.metric_type,
        description: metric.description.clone(),
        unit: metric.unit.clone(),
        values: Vec::new(),
        metadata: metric.metadata.clone(),
        created_at: time::from_micros(created_at_micros),
        updated_at: time::truncate(metric.updated_at),
    }
}

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
    /// `WHERE` conditions on the stored tags for a tag filter.
    fn tag_conditions(tags: &Tags) -> String {
        tags.iter()
            .map(|(k, v)| {
                format!(
                    " AND {} = {}",
                    line::ident(&line::encode_tag_text(&tag_key(k))),
                    line::tag_literal(v)
                )
            })
            .collect()
    }

    /// The live lower bound of sample times: the query's start, raised to the TTL cutoff.
    fn live_range(&self, range: MicrosRange) -> MicrosRange {
        let cutoff = self.config.retention.metric_cutoff(time::now());
        MicrosRange {
            start: range.start.max(cutoff.unwrap_or(i64::MIN)),
            end: range.end,
        }
    }

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
    async fn samples_of(
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

    /// `created_at` (µs) of the stored series among `ids`.
    async fn stored_created_at(&self, ids: &[&str]) -> Result<HashMap<String, i64>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        Ok(self
            .series_docs(None, Some(ids))
            .await?
            .into_iter()
            .map(|m| (m.id, time::to_micros(m.created_at)))
            .collect())
    }

    pub(crate) async fn write_metrics(&self, metrics: &[Metric]) -> Result<WriteReport> {
        let runs = Runs::validate(metrics)?;
        let cutoff = self.config.retention.metric_cutoff(time::now());
        let unknown: Vec<&str> = {
            let known = self.created.lock().unwrap_or_else(|e| e.into_inner());
            let mut seen = BTreeSet::new();
            metrics
                .iter()
                .map(|m| m.id.as_str())
                .filter(|id| !known.contains_key(*id) && seen.insert(*id))
                .collect()
        };
        let stored = self.stored_created_at(&unknown).await?;
        let mut created: HashMap<String, i64> = {
            let known = self.created.lock().unwrap_or_else(|e| e.into_inner());
            metrics
                .iter()
                .filter_map(|m| known.get(&m.id).map(|c| (m.id.clone(), *c)))
                .collect()
        };
        created.extend(stored);

        let EncodedWrite {
            meta,
            samples,
            report,
            events,
            created_at,
        } = encode_write(metrics, &runs, cutoff, &mut created, &self.config.name)?;
        if unknown.is_empty() {
            // Every series is stored already: its metadata update and the samples go out at
            // once (a failure of either fails the call, and the retry rewrites both). The
            // metadata first: `join!` polls in order, so its small request is on its way, and
            // the server busy with it on its other core, while the samples are encoded here.
            // The yield lets the connection's task send it before the encoding holds this
            // thread.
            let (meta_written, samples_written) =
                futures::join!(self.client.write_lines(Target::Meta, &meta), async {
                    tokio::task::yield_now().await;
                    let lines = samples.encode();
                    self.client.write_lines(Target::Samples, &lines).await
                });
            meta_written?;
            samples_written?;
        } else {
            // New series: metadata first. A series without samples is valid; samples whose
            // series document is missing would be invisible.
            self.client.write_lines(Target::Meta, &meta).await?;
            let lines = samples.encode();
            self.client.write_lines(Target::Samples, &lines).await?;
        }
        {
            let mut known = self.created.lock().unwrap_or_else(|e| e.into_inner());
            for (id, created_at) in created_at {
                known.insert(id.to_owned(), created_at);
            }
        }
        events.into_iter().for_each(|e| self.publish(e));
        Ok(report)
    }

    /// Whether a series is live: updated within the TTL, or holding a live sample.
    fn meta_live(&self, metric: &Metric) -> bool {
        let cutoff = self.config.retention.metric_cutoff(time::now());
        RetentionPolicy::is_live(cutoff, metric.updated_at)
    }

    pub(crate) async fn read_metric(&self, id: &str) -> Result<Option<Metric>> {
        validate::name("id", id)?;
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

    pub(crate) async fn select_metrics(&self, query: &MetricQuery) -> Result<Vec<Metric>> {
        let options = query.resolve()?;
        let sample_filter = query.start.is_some() || query.end.is_some() || !query.tags.is_empty();
        let range = self.live_range(query.range_micros());
        let mut candidates: Vec<Metric> = self
            .series_docs(query.name.as_deref(), None)
            .await?
            .into_iter()
            .filter(|m| {
                query.name.as_ref().is_none_or(|n| *n == m.name)
                    && query.metric_type.is_none_or(|t| t == m.metric_type)
                    && filter::matches_all(m, &options)
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
            &options,
            query::tie_breaker(DataKind::Metrics).name,
        );
        let ids: Vec<&str> = candidates.iter().map(|m| m.id.as_str()).collect();
        let mut samples = self.samples_of(&ids, range, &query.tags).await?;
        for metric in &mut candidates {
            metric.values = to_values(samples.remove(&metric.id).unwrap_or_default());
        }
        Ok(candidates)
    }

    pub(crate) async fn history(&self, query: &HistoryQuery) -> Result<Vec<HistorySeries>> {
        query.validate()?;
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

#[cfg(test)]
mod tests {
    use aimon_core::{ErrorKind, MetricType};
    use influxdb_line_protocol::{FieldValue, parse_lines};
    use proptest::prelude::*;

    use super::*;

    /// Tag maps drawn from a small pool, so that runs of equal tags (and returns to earlier
    /// ones) are common.
    fn tag_pool() -> Vec<Tags> {
        vec![
            Tags::new(),
            Tags::from([("host".to_owned(), "a".to_owned())]),
            Tags::from([("host".to_owned(), "b, c=d\\".to_owned())]),
            Tags::from([
                ("host".to_owned(), "a".to_owned()),
                ("zone 🚀".to_owned(), "50%".to_owned()),
            ]),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Every sample becomes one line, in order, that an independent parser reads back as
        /// its series id, tags, value (bit for bit) and microsecond timestamp, however runs of
        /// equal tags come and go.
        #[test]
        fn sample_lines_round_trip_through_a_parser(
            samples in proptest::collection::vec(
                (
                    0..4usize,
                    proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO,
                    0..4_102_444_800_000_000i64,
                ),
                1..40,
            ),
        ) {
            let pool = tag_pool();
            let mut metric = Metric::new("series ,=\"\\ id", "m", MetricType::Gauge);
            for (t, value, micros) in &samples {
                metric.values.push(MetricValue {
                    timestamp: time::from_micros(*micros),
                    value: *value,
                    tags: pool[*t].clone(),
                });
            }
            let text = sample_lines(std::slice::from_ref(&metric)).expect("short keys");
            let parsed: Vec<_> = parse_lines(&text).collect::<std::result::Result<_, _>>()
                .map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
            prop_assert_eq!(parsed.len(), samples.len());
            for (p, (t, value, micros)) in parsed.iter().zip(&samples) {
                let mut sid = None;
                let mut tags = Tags::new();
                for (k, v) in p.series.tag_set.iter().flatten() {
                    let (k, v) = (line::decode_tag_text(k).into_owned(), line::decode_tag_text(v).into_owned());
                    match k.strip_prefix(TAG_PREFIX) {
                        Some(k) => { tags.insert(k.to_owned(), v); }
                        None => { prop_assert_eq!(k, "sid"); sid = Some(v); }
                    }
                }
                prop_assert_eq!(sid.as_deref(), Some(metric.id.as_str()));
                prop_assert_eq!(&tags, &pool[*t]);
                match &p.field_set[0].1 {
                    FieldValue::F64(got) => prop_assert_eq!(got.to_bits(), value.to_bits()),
                    other => prop_assert!(false, "not a float: {other:?}"),
                }
                prop_assert_eq!(p.timestamp, Some(*micros));
            }
        }
    }

    /// The batches of `aimon bench` (crates/aimon-cli/src/bench/workload.rs, `Workload::batch`)
    /// at its defaults: 200,000 samples round-robin over 100 series, 5,000 per `save_metrics` call,
    /// each batch one metric per series; fixed times so that every run encodes the same bytes.
    fn bench_batches() -> Vec<Vec<Metric>> {
        let (samples, series, batch) = (200_000u64, 100u64, 5_000u64);
        let run = "1764266400000";
        let now = time::from_micros(1_764_266_400_000_000);
        let per_series = samples.div_ceil(series);
        let spacing_us = (3_600_000_000 / per_series as i64).clamp(1, 1_000_000);
        let start = time::to_micros(now) - spacing_us * per_series as i64;
        let ids: Vec<String> = (0..series)
            .map(|s| format!("bench-{run}/s{s:04}"))
            .collect();
        let tags: Vec<Tags> = (0..series)
            .map(|s| {
                Tags::from([
                    ("run".to_owned(), run.to_owned()),
                    ("series".to_owned(), format!("s{s:04}")),
                    ("host".to_owned(), format!("host-{}", s % 10)),
                ])
            })
            .collect();
        (0..samples)
            .step_by(batch as usize)
            .map(|first| {
                let mut metrics: Vec<Metric> = Vec::new();
                let mut index = vec![usize::MAX; series as usize];
                for i in first..(first + batch).min(samples) {
                    let s = (i % series) as usize;
                    let seq = (i / series) as i64;
                    if index[s] == usize::MAX {
                        index[s] = metrics.len();
                        let mut m =
                            Metric::new(ids[s].clone(), "aimon.bench.value", MetricType::Gauge);
                        m.unit = Some("ms".to_owned());
                        m.created_at = now;
                        m.updated_at = now;
                        metrics.push(m);
                    }
                    metrics[index[s]].values.push(MetricValue {
                        timestamp: time::from_micros(start + seq * spacing_us),
                        value: 100.0 + (i % 97) as f64 * 1.5,
                        tags: tags[s].clone(),
                    });
                }
                metrics
            })
            .collect()
    }

    /// The client CPU of one `save_metrics` call without the HTTP: validation, encoding and
    /// the gzip of every request body. Returns the compressed bytes.
    #[inline(never)]
    fn client_cpu(batch: &[Metric], created: &mut HashMap<String, i64>) -> usize {
        let runs = Runs::validate(batch).expect("valid");
        let encoded = encode_write(batch, &runs, None, created, "bench").expect("short keys");
        let samples = encoded.samples.encode();
        let mut bytes = 0;
        for lines in [&encoded.meta, &samples] {
            for body in lines.batches(
                crate::config::DEFAULT_BATCH_LINES,
                crate::config::DEFAULT_BATCH_BYTES,
            ) {
                bytes += crate::client::gzip(body).expect("gzip").len();
            }
        }
        bytes
    }

    /// Not a check but a measurement, so ignored by default: the client CPU of `aimon bench`'s
    /// InfluxDB ingest, deterministic under callgrind (instructions of `client_cpu` only):
    ///
    /// ```text
    /// cargo test --release -p aimon-influxdb --lib --no-run
    /// valgrind --tool=callgrind --toggle-collect='*::tests::client_cpu' \
    ///     target/release/deps/aimon_influxdb-<hash> metrics::tests::bench_workload_client_cpu --ignored --exact \
    ///     --test-threads=1
    /// ```
    #[test]
    #[ignore = "a measurement: run under callgrind or with --nocapture for wall time"]
    fn bench_workload_client_cpu() {
        let batches = bench_batches();
        let mut created = HashMap::new();
        let started = std::time::Instant::now();
        let bytes: usize = batches.iter().map(|b| client_cpu(b, &mut created)).sum();
        let elapsed = started.elapsed();
        println!(
            "{} batches: {bytes} gzip bytes, {:.3} ms per batch",
            batches.len(),
            elapsed.as_secs_f64() * 1e3 / batches.len() as f64
        );
        assert_eq!(created.len(), 100);
    }

    /// Tags that would make a key over InfluxDB's limit fail the batch in core's validation
    /// (at most 20 KiB of tags per sample), before any key or sample line is encoded.
    #[test]
    fn an_over_long_key_fails_before_encoding() {
        let mut m = Metric::new("m", "m", MetricType::Gauge);
        let mut first = MetricValue::new(time::now(), 1.0);
        for k in 0..70 {
            first = first.tag(format!("k{k}"), "x".repeat(16 * 1024));
        }
        m.values.push(first);
        m.values
            .extend((1..100_000).map(|_| MetricValue::new(time::now(), 1.0)));
        let batch = [m];
        let err = Runs::validate(&batch)
            .err()
            .expect("the tags are over core's limit");
        assert_eq!(err.kind(), aimon_core::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("values[0].tags"), "{err}");
    }

    #[test]
    fn an_over_long_series_key_names_the_first_sample_of_its_run() {
        let long = "x".repeat(16 * 1024);
        let big: Tags = (0..5).map(|i| (format!("k{i}"), long.clone())).collect();
        let mut metric = Metric::new("m1", "m", MetricType::Gauge);
        for tags in [Tags::new(), Tags::new(), big.clone(), big] {
            metric.values.push(MetricValue {
                timestamp: time::now(),
                value: 1.0,
                tags,
            });
        }
        let err = sample_lines(&[metric]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("values[2].tags"), "{err}");
    }
}
