//! The line-protocol encoding of a batch (series keys, sample lines, series documents) and
//! `save_metrics`.

use aimon_core::driver::{Check, MetricBatch};
use std::collections::{BTreeMap, BTreeSet, HashMap};

use aimon_core::backend::{StorageEvent, WriteReport};
use aimon_core::{Metric, MetricValue, Result, RetentionPolicy, Tags, time};

use crate::backend::{InfluxBackend, SAMPLES, SERIES, TAG_PREFIX};
use crate::client::{LineBuffer, Target};
use crate::line;

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

/// A validated batch with the runs of equal tags of every metric, found by the contract layer
/// while it validated the batch ([`aimon_core::validate::metric_runs`]).
type Runs<'a> = MetricBatch<'a>;

/// The samples of a validated batch, ready to encode: their runs of equal tags and each run's
/// series key, checked.
struct SampleLines<'a> {
    metrics: &'a [Metric],
    runs: &'a Runs<'a>,
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
    fn new(metrics: &'a [Metric], runs: &'a Runs<'a>, cutoff: Option<i64>) -> Result<Self> {
        let mut keys = String::new();
        let mut key_ends = Vec::with_capacity(runs.run_count());
        for (m, metric) in metrics.iter().enumerate() {
            for run in runs.runs(m) {
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
                .runs(m)
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
    let runs = Runs::check(metrics)?;
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
    runs: &'a Runs<'a>,
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

impl InfluxBackend {
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

    pub(crate) async fn write_metrics(&self, runs: &MetricBatch<'_>) -> Result<WriteReport> {
        let metrics = runs.get();
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
        } = encode_write(metrics, runs, cutoff, &mut created, &self.config.name)?;
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

    /// The batches of `aimon bench` (crates/aimon-cli/src/bench/workload.rs,
    /// `Workload::batch`) at its defaults: 200,000 samples round-robin over 100 series, 5,000
    /// per `save_metrics` call,
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
        let runs = Runs::check(batch).expect("valid");
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
    ///     target/release/deps/aimon_influxdb-<hash> metrics::write::tests::bench_workload_client_cpu --ignored --exact \
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
        let err = Runs::check(&batch).expect_err("the tags are over core's limit");
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
