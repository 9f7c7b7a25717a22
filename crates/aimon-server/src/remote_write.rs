//! Prometheus remote write 1.0: decoding a request body and mapping it to aimon metrics.
//!
//! Pure functions, no HTTP and no storage: the `POST /api/v1/write` handler checks the headers
//! ([`content_type_is_supported`]), calls [`decode`] and [`to_metrics`], stores
//! [`Mapped::metrics`] and answers [`Mapped::status`]. The mapping, the limits and the answers
//! are described in `docs/prometheus.md`.
//!
//! ```
//! use aimon_server::remote_write::{self, proto};
//! # let request = proto::WriteRequest::default();
//! # let body = snap::raw::Encoder::new().compress_vec(&prost::Message::encode_to_vec(&request)).unwrap();
//! let request = remote_write::decode(&body, remote_write::DEFAULT_MAX_DECOMPRESSED_BYTES)?;
//! let mapped = remote_write::to_metrics(&request);
//! // …store mapped.metrics, then answer:
//! assert_eq!(mapped.status(), axum::http::StatusCode::NO_CONTENT);
//! # Ok::<(), remote_write::DecodeError>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::mem::size_of;

use aimon::{Metric, MetricType, MetricValue, Tags, time, validate};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use prost::Message as _;

/// The protobuf messages of remote write 1.0 (`prometheus.WriteRequest`, from Prometheus'
/// `prompb/remote.proto` and `prompb/types.proto`), with only the fields aimon reads.
///
/// Fields left out (exemplars, the fields of native histograms but their timestamp) are skipped
/// by the decoder without being kept.
pub mod proto {
    /// The body of a remote-write request, once decompressed.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        /// The series and their samples.
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
        // Field 2 is reserved (Cortex used it).
        /// Types, help texts and units of metric families. Prometheus 2.x sends them in
        /// requests of their own, without series, once a minute by default.
        #[prost(message, repeated, tag = "3")]
        pub metadata: Vec<MetricMetadata>,
    }

    /// One series: its labels and samples.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        /// The labels, `__name__` among them; Prometheus sends them sorted by name.
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        /// Float samples.
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
        // Field 3, exemplars, is skipped.
        /// Native histogram samples: only counted (and rejected), never stored.
        #[prost(message, repeated, tag = "4")]
        pub histograms: Vec<Histogram>,
    }

    /// A label: a name and a value.
    #[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
    pub struct Label {
        /// The label's name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Its value; an empty value is the label's absence.
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// A float sample.
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Sample {
        /// The value; a staleness marker is a NaN with the bits [`super::STALE_NAN_BITS`].
        #[prost(double, tag = "1")]
        pub value: f64,
        /// Milliseconds since the Unix epoch.
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }

    /// A native histogram sample, reduced to its timestamp: aimon does not store native
    /// histograms, it only counts them.
    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Histogram {
        /// Milliseconds since the Unix epoch.
        #[prost(int64, tag = "15")]
        pub timestamp: i64,
    }

    /// What Prometheus knows of a metric family from the `# TYPE`, `# HELP` and `# UNIT`
    /// lines it scraped.
    #[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
    pub struct MetricMetadata {
        /// A [`MetricType`]; values this build does not know read as [`MetricType::Unknown`].
        #[prost(enumeration = "MetricType", tag = "1")]
        pub r#type: i32,
        /// The family's name: a histogram `foo` has the series `foo_bucket`, `foo_sum` and
        /// `foo_count`.
        #[prost(string, tag = "2")]
        pub metric_family_name: String,
        /// The `# HELP` text.
        #[prost(string, tag = "4")]
        pub help: String,
        /// The `# UNIT` text (OpenMetrics only).
        #[prost(string, tag = "5")]
        pub unit: String,
    }

    /// The type of a metric family (`prometheus.MetricMetadata.MetricType`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum MetricType {
        /// `untyped`, or a type the exposition did not say.
        Unknown = 0,
        /// A monotonic counter.
        Counter = 1,
        /// A gauge.
        Gauge = 2,
        /// A classic histogram: `_bucket`, `_sum` and `_count` series.
        Histogram = 3,
        /// An OpenMetrics gauge histogram: `_bucket`, `_gsum` and `_gcount` series.
        GaugeHistogram = 4,
        /// A summary: quantile series under the family's name, `_sum` and `_count`.
        Summary = 5,
        /// An OpenMetrics info metric (`_info`).
        Info = 6,
        /// An OpenMetrics state set.
        StateSet = 7,
    }
}

pub use proto::WriteRequest;

/// The bits of the NaN that Prometheus writes as a staleness marker (`value.StaleNaN`): the
/// series ended. Such samples are skipped, neither stored nor rejected.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// A sensible `max_decompressed` for [`decode`]: 16 MiB. Prometheus sends at most
/// `queue_config.max_samples_per_send` samples a request (2,000 by default), a few hundred
/// kilobytes decompressed.
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: usize = 16 << 20;

/// How much memory, per byte of `max_decompressed`, a decoded and mapped request may take:
/// [`decode`] refuses a request whose estimate (see [`DecodeError::TooLargeDecoded`]) is above
/// `MEMORY_PER_DECOMPRESSED_BYTE × max_decompressed`, or [`MIN_MEMORY_LIMIT_BYTES`] if that is
/// more.
pub const MEMORY_PER_DECOMPRESSED_BYTE: usize = 8;

/// The memory limit of [`decode`] under small `max_decompressed` values: the estimate counts
/// about 2 KiB for each series (its metric, description and unit included), so a small request
/// of many series would otherwise be refused.
pub const MIN_MEMORY_LIMIT_BYTES: usize = 8 << 20;

/// Longest help text kept as a metric's description, in bytes; a longer one is cut at a
/// character boundary. Every series of a request may carry its family's help text, so its
/// length multiplies.
pub const MAX_DESCRIPTION_BYTES: usize = 1024;

/// Longest text [`Mapped::response_text`] returns: Prometheus reads the first line of an error
/// response, up to 1,024 bytes, into its log.
pub const MAX_RESPONSE_TEXT_BYTES: usize = 1024;

/// The job of a series without a `job` label, in its metric id.
pub const DEFAULT_JOB: &str = "prometheus";

/// Why a body could not be decoded. Nothing of the request is usable; the sender should not
/// retry it (both kinds are 4xx, see [`DecodeError::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The snappy header announces `bytes` of decompressed data, more than `limit` (the
    /// `max_decompressed` given to [`decode`]). Checked before anything is allocated.
    TooLarge {
        /// What the header announces.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// Decompressed, the body fits, but decoding and mapping it would take about `bytes` of
    /// memory, more than `limit` ([`MEMORY_PER_DECOMPRESSED_BYTE`] × `max_decompressed`, at
    /// least [`MIN_MEMORY_LIMIT_BYTES`]): many tiny messages, or many samples of series with
    /// many labels (every sample gets its own copy of its series' tags). Estimated from the
    /// wire format before decoding.
    TooLargeDecoded {
        /// The estimate.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// Not a snappy block, or not a `prometheus.WriteRequest` once decompressed.
    Malformed(String),
}

impl DecodeError {
    /// The HTTP answer: `413 Payload Too Large` for [`TooLarge`](Self::TooLarge) and
    /// [`TooLargeDecoded`](Self::TooLargeDecoded), `400 Bad Request` for
    /// [`Malformed`](Self::Malformed). Prometheus retries neither: it drops the batch and logs
    /// the first line of the response body.
    pub fn status(&self) -> StatusCode {
        match self {
            DecodeError::TooLarge { .. } | DecodeError::TooLargeDecoded { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            DecodeError::Malformed(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// Whether this is one of the two "too large" kinds.
    pub fn is_too_large(&self) -> bool {
        !matches!(self, DecodeError::Malformed(_))
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge { bytes, limit } => write!(
                f,
                "remote-write request too large: it decompresses to {bytes} bytes; the limit is {limit}"
            ),
            DecodeError::TooLargeDecoded { bytes, limit } => write!(
                f,
                "remote-write request too large: decoded it would take about {bytes} bytes of memory; \
                 the limit is {limit} (send smaller batches: queue_config.max_samples_per_send)"
            ),
            DecodeError::Malformed(problem) => {
                write!(f, "malformed remote-write request: {problem}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

impl From<DecodeError> for aimon::Error {
    /// An [`aimon::ErrorKind::InvalidInput`] error with the same text (the size variants say
    /// "too large").
    fn from(error: DecodeError) -> Self {
        aimon::Error::new(aimon::ErrorKind::InvalidInput, error.to_string())
    }
}

fn malformed(problem: impl Into<String>) -> DecodeError {
    DecodeError::Malformed(problem.into())
}

/// Decodes a remote-write 1.0 body: a snappy **block** (not the framed format) holding a
/// `prometheus.WriteRequest`, as Prometheus sends it with `Content-Encoding: snappy`.
///
/// Memory stays bounded, whatever the body: the size the snappy header announces is checked
/// against `max_decompressed` before the buffer is allocated (and against what a snappy block
/// of this length can expand to at most), and the memory that decoding and mapping the
/// decompressed bytes would take is estimated from the wire format, without allocating,
/// before decoding. Never panics on any input.
pub fn decode(body: &[u8], max_decompressed: usize) -> Result<WriteRequest, DecodeError> {
    let limit = max_decompressed as u64;
    let len = match snap::raw::decompress_len(body) {
        Ok(len) => len,
        // The header announces more than snappy's own limit of 4 GiB.
        Err(snap::Error::TooBig { given, .. }) => {
            return Err(DecodeError::TooLarge {
                bytes: given,
                limit,
            });
        }
        Err(e) => return Err(malformed(format!("not a snappy block: {e}"))),
    };
    if len > max_decompressed {
        return Err(DecodeError::TooLarge {
            bytes: len as u64,
            limit,
        });
    }
    // Each snappy element expands at most 64/3 times (a 3-byte copy of 64 bytes): a body
    // whose header announces more is corrupt, and is refused before its buffer is allocated.
    if len > body.len().saturating_mul(22) {
        return Err(malformed(format!(
            "not a snappy block: its header announces {len} bytes, more than {} bytes of \
             snappy can hold",
            body.len()
        )));
    }
    let mut buffer = vec![0u8; len];
    let written = snap::raw::Decoder::new()
        .decompress(body, &mut buffer)
        .map_err(|e| malformed(format!("not a snappy block: {e}")))?;
    let decompressed = &buffer[..written];

    let memory_limit = max_decompressed
        .saturating_mul(MEMORY_PER_DECOMPRESSED_BYTE)
        .max(MIN_MEMORY_LIMIT_BYTES);
    let estimate = estimate_memory(decompressed)?;
    if estimate > memory_limit {
        return Err(DecodeError::TooLargeDecoded {
            bytes: estimate as u64,
            limit: memory_limit as u64,
        });
    }
    WriteRequest::decode(decompressed)
        .map_err(|e| malformed(format!("not a prometheus.WriteRequest: {e}")))
}

/// Whether a `Content-Type` is remote write 1.0: `application/x-protobuf`, without a `proto`
/// parameter or with `proto=prometheus.WriteRequest`. A missing header is accepted (Prometheus
/// always sends one; other clients may not). Remote write 2.0 sends
/// `application/x-protobuf;proto=io.prometheus.write.v2.Request`, whose fields mean other
/// things: decoded as 1.0 it would yield an empty request and be answered 204 while its data
/// is lost, so the handler must answer `415 Unsupported Media Type` where this is `false`.
pub fn content_type_is_supported(content_type: Option<&str>) -> bool {
    let Some(value) = content_type else {
        return true;
    };
    let mut parts = value.split(';');
    let media_type = parts.next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case("application/x-protobuf") {
        return false;
    }
    parts.all(|parameter| match parameter.split_once('=') {
        Some((key, proto)) if key.trim().eq_ignore_ascii_case("proto") => {
            proto.trim().trim_matches('"') == "prometheus.WriteRequest"
        }
        _ => true,
    })
}

// --- Memory estimate -------------------------------------------------------------------------

/// Heap bytes of one tag beyond its text: two `String` allocations' overhead.
const TAG_OVERHEAD_BYTES: usize = 32;
/// Tags per `BTreeMap` node in the estimate (a node holds up to 11, split nodes about 6).
const TAGS_PER_NODE: usize = 6;
/// Bytes of one `BTreeMap<String, String>` node (eleven keys and values, links, counts).
const TAG_NODE_BYTES: usize = 640;

/// About how much memory decoding `bytes` (a decompressed `WriteRequest`) and mapping it with
/// [`to_metrics`] take, from one pass over the wire format that allocates nothing. An upper
/// estimate: every label counts as a tag of every sample of its series, and every series as a
/// metric of its own, with the longest description and unit.
fn estimate_memory(bytes: &[u8]) -> Result<usize, DecodeError> {
    let mut total = 0usize;
    for_each_message(bytes, |field, message| {
        match field {
            1 => total = total.saturating_add(estimate_series(message)?),
            3 => {
                total = total.saturating_add(size_of::<proto::MetricMetadata>() + message.len());
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(total)
}

fn estimate_series(message: &[u8]) -> Result<usize, DecodeError> {
    let (mut labels, mut label_bytes, mut samples, mut histograms) = (0usize, 0usize, 0usize, 0);
    for_each_message(message, |field, inner| {
        match field {
            1 => {
                labels += 1;
                label_bytes += inner.len();
            }
            2 => samples += 1,
            4 => histograms += 1,
            _ => {}
        }
        Ok(())
    })?;
    let tags =
        label_bytes + labels * TAG_OVERHEAD_BYTES + labels.div_ceil(TAGS_PER_NODE) * TAG_NODE_BYTES;
    let decoded = size_of::<proto::TimeSeries>()
        + labels * size_of::<proto::Label>()
        + label_bytes
        + samples * size_of::<proto::Sample>()
        + histograms * size_of::<proto::Histogram>();
    // The series' metric: id, name and the group's key (each at most the labels' bytes),
    // description, unit, and the tags built once before they are copied into each sample.
    let metric = size_of::<Metric>()
        + 3 * label_bytes
        + MAX_DESCRIPTION_BYTES
        + validate::MAX_NAME_BYTES
        + tags;
    let per_sample = size_of::<MetricValue>() + tags;
    Ok(samples
        .saturating_mul(per_sample)
        .saturating_add(decoded)
        .saturating_add(metric))
}

/// Calls `on_message` with the number and payload of every length-delimited field of a
/// protobuf message (the fields that hold messages and strings), skipping the others; fails on
/// bytes that are not protobuf.
fn for_each_message<'a>(
    mut bytes: &'a [u8],
    mut on_message: impl FnMut(u64, &'a [u8]) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    while !bytes.is_empty() {
        let key = read_varint(&mut bytes)?;
        let field = key >> 3;
        if field == 0 {
            return Err(malformed("not a prometheus.WriteRequest: field number 0"));
        }
        match key & 0b111 {
            0 => {
                read_varint(&mut bytes)?;
            }
            1 => bytes = skip(bytes, 8)?,
            2 => {
                let len = read_varint(&mut bytes)?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|&len| len <= bytes.len())
                    .ok_or_else(|| malformed("not a prometheus.WriteRequest: truncated field"))?;
                let (payload, rest) = bytes.split_at(len);
                bytes = rest;
                on_message(field, payload)?;
            }
            5 => bytes = skip(bytes, 4)?,
            wire_type => {
                return Err(malformed(format!(
                    "not a prometheus.WriteRequest: unsupported wire type {wire_type}"
                )));
            }
        }
    }
    Ok(())
}

fn read_varint(bytes: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let Some((&byte, rest)) = bytes.split_first() else {
            return Err(malformed("not a prometheus.WriteRequest: truncated varint"));
        };
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(value);
        }
    }
    Err(malformed(
        "not a prometheus.WriteRequest: varint longer than 10 bytes",
    ))
}

fn skip(bytes: &[u8], n: usize) -> Result<&[u8], DecodeError> {
    bytes
        .get(n..)
        .ok_or_else(|| malformed("not a prometheus.WriteRequest: truncated field"))
}

// --- Mapping ---------------------------------------------------------------------------------

/// A request mapped to aimon metrics, with what was accepted and rejected.
///
/// # What to answer
///
/// Store [`metrics`](Self::metrics) first, or hand them to the ingest queue (a request with
/// rejected samples still stores its valid ones), then:
///
/// - storing (or queueing) failed: `503` if the error [`is_retryable`](aimon::Error::is_retryable), else
///   `500`. Prometheus retries every 5xx with backoff, keeping the data in its WAL until the
///   store is back, which is right for a fault of the server; and resending a batch is
///   harmless (a sample is keyed by series, timestamp and tags, so it is written again, not
///   twice). An `InvalidInput` from the store cannot happen (every metric here is valid) and
///   would be a bug;
/// - otherwise [`status`](Self::status): `204 No Content` when nothing was rejected,
///   `400 Bad Request` with [`response_text`](Self::response_text) as the body when some
///   samples were. Prometheus does not retry a 4xx: it drops the batch, counts all of it in
///   `prometheus_remote_storage_samples_failed_total` and logs the body's first line. Since
///   the valid samples are already stored and the rejected ones would be rejected again, that
///   loses nothing, and the log line is where the Prometheus operator sees why (its failed
///   count overstates: it includes the stored samples). Answering 2xx instead would hide the
///   rejections from the sender entirely.
///
/// Staleness markers are neither accepted nor rejected; [`messages`](Self::messages) may also
/// hold notes that reject nothing (metadata that could not be used), which leave the status at
/// 204.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapped {
    /// One metric per metric id (`{job}/{__name__}`) and type, each valid for
    /// [`aimon::validate::metric`].
    pub metrics: Vec<Metric>,
    /// Samples in [`metrics`](Self::metrics).
    pub accepted_samples: u64,
    /// Float and native histogram samples rejected, each counted once.
    pub rejected_samples: u64,
    /// Staleness markers skipped.
    pub stale_markers: u64,
    /// One line per reason (at most seven reasons), with the number of samples and the first
    /// example, in the order first met. Safe to log: control characters are escaped.
    pub messages: Vec<String>,
}

impl Mapped {
    /// `204 No Content` if no sample was rejected, else `400 Bad Request` (see [`Mapped`]);
    /// meant for after the metrics were stored.
    pub fn status(&self) -> StatusCode {
        if self.rejected_samples == 0 {
            StatusCode::NO_CONTENT
        } else {
            StatusCode::BAD_REQUEST
        }
    }

    /// One line of at most [`MAX_RESPONSE_TEXT_BYTES`] for a 400 body: the counts and the
    /// messages, e.g. `accepted 10 samples, rejected 2: 2 NaN or infinite values (…), first: …`.
    pub fn response_text(&self) -> String {
        let mut text = format!(
            "accepted {} samples, rejected {}",
            self.accepted_samples, self.rejected_samples
        );
        if !self.messages.is_empty() {
            text.push_str(": ");
            text.push_str(&self.messages.join("; "));
        }
        one_line(&text, MAX_RESPONSE_TEXT_BYTES)
    }
}

/// Maps a decoded request to aimon metrics (the mapping is tabled in `docs/prometheus.md`).
/// Types, descriptions and units come from the request's own metadata; a series whose family
/// has none there is a [`MetricType::Gauge`]. Bad series and samples are counted and
/// described in the result, never an error.
pub fn to_metrics(request: &WriteRequest) -> Mapped {
    map(request, |_| None)
}

/// [`to_metrics`], falling back on `known` (metadata by family name) for families the
/// request's own metadata does not describe. Prometheus 2.x sends metadata in requests of
/// their own, without series, so a server that wants types keeps the metadata of those
/// requests (bounded) and passes it here.
pub fn to_metrics_with(
    request: &WriteRequest,
    known: &HashMap<String, proto::MetricMetadata>,
) -> Mapped {
    map(request, |family| known.get(family))
}

/// Why samples were rejected (or, for [`Reason::Metadata`], metadata ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    NoName,
    DuplicateLabel,
    Invalid,
    NativeHistogram,
    NotFinite,
    OutOfRange,
    Metadata,
}

impl Reason {
    fn describe(self) -> &'static str {
        match self {
            Reason::NoName => "samples of series without a __name__ label",
            Reason::DuplicateLabel => "samples of series with a repeated label name",
            Reason::Invalid => "samples of series aimon cannot store",
            Reason::NativeHistogram => {
                "native histogram samples (not supported: only float samples are stored)"
            }
            Reason::NotFinite => "NaN or infinite values (staleness markers are skipped)",
            Reason::OutOfRange => "samples with timestamps outside 1970-01-01..2262-01-01",
            Reason::Metadata => "metric descriptions or units ignored (invalid)",
        }
    }
}

/// Longest example in a message, in bytes.
const MAX_EXAMPLE_BYTES: usize = 240;
/// Labels shown in an example.
const MAX_EXAMPLE_LABELS: usize = 8;

struct Rejection {
    reason: Reason,
    count: u64,
    first: String,
}

#[derive(Default)]
struct Mapper {
    mapped: Mapped,
    groups: HashMap<(String, MetricType), usize>,
    rejections: Vec<Rejection>,
}

impl Mapper {
    /// Counts `count` under `reason`; the example is built for the first only.
    fn note(&mut self, reason: Reason, count: u64, first: impl FnOnce() -> String) {
        if count == 0 {
            return;
        }
        if reason != Reason::Metadata {
            self.mapped.rejected_samples += count;
        }
        match self.rejections.iter_mut().find(|r| r.reason == reason) {
            Some(rejection) => rejection.count += count,
            None => self.rejections.push(Rejection {
                reason,
                count,
                first: one_line(&first(), MAX_EXAMPLE_BYTES),
            }),
        }
    }

    /// The metric of `id` and `metric_type`, created on first use with its family's
    /// description and unit.
    fn metric(
        &mut self,
        id: &str,
        name: &str,
        metric_type: MetricType,
        family: Option<&proto::MetricMetadata>,
    ) -> usize {
        if let Some(&index) = self.groups.get(&(id.to_owned(), metric_type)) {
            return index;
        }
        let mut metric = Metric::new(id, name, metric_type);
        if let Some(family) = family {
            metric.description = self.family_text(&family.help, name, |help| {
                validate::text("help", help)?;
                Ok(cut(help, MAX_DESCRIPTION_BYTES))
            });
            metric.unit = self.family_text(&family.unit, name, |unit| {
                validate::name("unit", unit)?;
                Ok(unit.to_owned())
            });
        }
        let index = self.mapped.metrics.len();
        self.mapped.metrics.push(metric);
        self.groups.insert((id.to_owned(), metric_type), index);
        index
    }

    /// A help text or unit, if not empty and valid; an invalid one is noted and left out.
    fn family_text(
        &mut self,
        text: &str,
        name: &str,
        check: impl FnOnce(&str) -> aimon::Result<String>,
    ) -> Option<String> {
        if text.is_empty() {
            return None;
        }
        match check(text) {
            Ok(text) => Some(text),
            Err(e) => {
                self.note(Reason::Metadata, 1, || format!("{name:?}: {e}"));
                None
            }
        }
    }

    fn series<'m>(
        &mut self,
        series: &proto::TimeSeries,
        lookup: impl Fn(&str) -> Option<&'m proto::MetricMetadata>,
    ) {
        let points = (series.samples.len() + series.histograms.len()) as u64;
        let (name, id, tags) = match series_key(&series.labels) {
            Ok(key) => key,
            Err((reason, example)) => {
                self.note(reason, points, || example);
                return;
            }
        };
        let checked = validate::name("metric id", &id)
            .and_then(|()| validate::name("metric name", name))
            .and_then(|()| validate::tags("labels", &tags));
        if let Err(e) = checked {
            self.note(Reason::Invalid, points, || format!("{id:?}: {e}"));
            return;
        }
        self.note(
            Reason::NativeHistogram,
            series.histograms.len() as u64,
            || format!("{id:?}"),
        );

        let (metric_type, family) = family_of(name, lookup);
        let mut group = None;
        for sample in &series.samples {
            if sample.value.to_bits() == STALE_NAN_BITS {
                self.mapped.stale_markers += 1;
                continue;
            }
            if !sample.value.is_finite() {
                self.note(Reason::NotFinite, 1, || {
                    format!("{} at {} ms in {id:?}", sample.value, sample.timestamp)
                });
                continue;
            }
            let Some(timestamp) = DateTime::<Utc>::from_timestamp_millis(sample.timestamp)
                .filter(|&t| time::in_range(t))
            else {
                self.note(Reason::OutOfRange, 1, || {
                    format!("{} ms in {id:?}", sample.timestamp)
                });
                continue;
            };
            let index = *group.get_or_insert_with(|| self.metric(&id, name, metric_type, family));
            self.mapped.metrics[index].values.push(MetricValue {
                timestamp,
                value: sample.value,
                tags: tags.clone(),
            });
            self.mapped.accepted_samples += 1;
        }
    }

    fn finish(mut self) -> Mapped {
        self.mapped.messages = self
            .rejections
            .iter()
            .map(|r| format!("{} {}, first: {}", r.count, r.reason.describe(), r.first))
            .collect();
        self.mapped
    }
}

fn map<'m>(
    request: &'m WriteRequest,
    known: impl Fn(&str) -> Option<&'m proto::MetricMetadata>,
) -> Mapped {
    // The first entry of a family wins (Prometheus may send one per target).
    let mut in_request: HashMap<&str, &proto::MetricMetadata> = HashMap::new();
    for metadata in &request.metadata {
        in_request
            .entry(metadata.metric_family_name.as_str())
            .or_insert(metadata);
    }
    let lookup = |family: &str| in_request.get(family).copied().or_else(|| known(family));
    let mut mapper = Mapper::default();
    for series in &request.timeseries {
        mapper.series(series, lookup);
    }
    mapper.finish()
}

/// A series' name, metric id and tags, or why it has none.
fn series_key(labels: &[proto::Label]) -> Result<(&str, String, Tags), (Reason, String)> {
    let mut name = None;
    let mut tags = Tags::new();
    for label in labels {
        // Prometheus treats an empty label value as the label's absence.
        if label.value.is_empty() {
            continue;
        }
        let repeated = if label.name == "__name__" {
            name.replace(label.value.as_str()).is_some()
        } else {
            tags.insert(label.name.clone(), label.value.clone())
                .is_some()
        };
        if repeated {
            return Err((
                Reason::DuplicateLabel,
                format!("{:?} in {}", label.name, render_labels(labels)),
            ));
        }
    }
    let Some(name) = name else {
        return Err((Reason::NoName, render_labels(labels)));
    };
    let job = tags.get("job").map_or(DEFAULT_JOB, String::as_str);
    let id = format!("{job}/{name}");
    Ok((name, id, tags))
}

/// The family a series belongs to, and the aimon type that follows: the family of the series'
/// own name first, else that of its name without a suffix the family's type gives its series
/// (`_bucket` of a histogram…); [`MetricType::Gauge`] without one.
fn family_of<'m>(
    name: &str,
    lookup: impl Fn(&str) -> Option<&'m proto::MetricMetadata>,
) -> (MetricType, Option<&'m proto::MetricMetadata>) {
    use proto::MetricType as P;
    const SUFFIXES: &[(&str, &[P])] = &[
        ("_bucket", &[P::Histogram, P::GaugeHistogram]),
        ("_sum", &[P::Histogram, P::Summary]),
        ("_count", &[P::Histogram, P::Summary]),
        ("_gsum", &[P::GaugeHistogram]),
        ("_gcount", &[P::GaugeHistogram]),
        ("_total", &[P::Counter]),
        ("_info", &[P::Info]),
    ];
    let family_type =
        |metadata: &proto::MetricMetadata| P::try_from(metadata.r#type).unwrap_or(P::Unknown);
    let found = lookup(name).or_else(|| {
        SUFFIXES.iter().find_map(|(suffix, types)| {
            let metadata = lookup(name.strip_suffix(suffix)?)?;
            types.contains(&family_type(metadata)).then_some(metadata)
        })
    });
    let metric_type = match found.map(family_type) {
        Some(P::Counter) => MetricType::Counter,
        Some(P::Histogram | P::GaugeHistogram) => MetricType::Histogram,
        Some(P::Summary) => MetricType::Summary,
        Some(P::Gauge | P::Unknown | P::Info | P::StateSet) | None => MetricType::Gauge,
    };
    (metric_type, found)
}

/// `{a="x", b="y", …}`, with at most [`MAX_EXAMPLE_LABELS`] labels.
fn render_labels(labels: &[proto::Label]) -> String {
    let mut text = String::from("{");
    for (i, label) in labels.iter().take(MAX_EXAMPLE_LABELS).enumerate() {
        if i > 0 {
            text.push_str(", ");
        }
        text.push_str(&format!("{}={:?}", label.name, label.value));
    }
    if labels.len() > MAX_EXAMPLE_LABELS {
        text.push_str(&format!(", … {} labels in all", labels.len()));
    }
    text.push('}');
    text
}

/// `text` cut to at most `max` bytes at a character boundary, with `…` where it was cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// `text` on one line of at most `max` bytes: control characters escaped (`\n`, `\u{85}`),
/// then cut.
fn one_line(text: &str, max: usize) -> String {
    let escaped: String = if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    } else {
        text.to_owned()
    };
    cut(&escaped, max)
}

#[cfg(test)]
mod tests {
    use super::proto::{Histogram, Label, MetricMetadata, Sample, TimeSeries};
    use super::*;
    use std::time::Instant;

    const T0: i64 = 1_700_000_000_000;

    fn label(name: &str, value: &str) -> Label {
        Label {
            name: name.to_owned(),
            value: value.to_owned(),
        }
    }

    fn series(labels: &[(&str, &str)], samples: &[(f64, i64)]) -> TimeSeries {
        TimeSeries {
            labels: labels.iter().map(|(n, v)| label(n, v)).collect(),
            samples: samples
                .iter()
                .map(|&(value, timestamp)| Sample { value, timestamp })
                .collect(),
            histograms: Vec::new(),
        }
    }

    fn metadata(family: &str, t: proto::MetricType, help: &str, unit: &str) -> MetricMetadata {
        MetricMetadata {
            r#type: t as i32,
            metric_family_name: family.to_owned(),
            help: help.to_owned(),
            unit: unit.to_owned(),
        }
    }

    fn body(request: &WriteRequest) -> Vec<u8> {
        snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .unwrap()
    }

    /// Encodes, compresses, decodes and maps, checking every metric as the store would.
    fn round_trip(request: &WriteRequest) -> Mapped {
        let decoded = decode(&body(request), DEFAULT_MAX_DECOMPRESSED_BYTES).unwrap();
        // Bytes, not values: NaNs (staleness markers among them) are unequal to themselves.
        assert!(decoded.encode_to_vec() == request.encode_to_vec());
        let mapped = to_metrics(&decoded);
        for metric in &mapped.metrics {
            validate::metric(metric).unwrap();
        }
        mapped
    }

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    fn by_id<'a>(mapped: &'a Mapped, id: &str) -> &'a Metric {
        mapped
            .metrics
            .iter()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no metric {id} in {:?}", mapped.metrics))
    }

    #[test]
    fn samples_round_trip_with_their_labels_as_tags() {
        let request = WriteRequest {
            timeseries: vec![series(
                &[
                    ("__name__", "llm_tokens"),
                    ("instance", "agent-7:9100"),
                    ("job", "agents"),
                    ("model", "large"),
                ],
                &[(512.0, T0), (-0.25, T0 + 15_000)],
            )],
            metadata: Vec::new(),
        };
        let mapped = round_trip(&request);
        assert_eq!(mapped.accepted_samples, 2);
        assert_eq!(mapped.rejected_samples, 0);
        assert_eq!(mapped.status(), StatusCode::NO_CONTENT);
        assert!(mapped.messages.is_empty());
        let [metric] = mapped.metrics.as_slice() else {
            panic!("{:?}", mapped.metrics)
        };
        assert_eq!(metric.id, "agents/llm_tokens");
        assert_eq!(metric.name, "llm_tokens");
        assert_eq!(metric.metric_type, MetricType::Gauge);
        assert_eq!((&metric.description, &metric.unit), (&None, &None));
        let tags = Tags::from([
            ("instance".to_owned(), "agent-7:9100".to_owned()),
            ("job".to_owned(), "agents".to_owned()),
            ("model".to_owned(), "large".to_owned()),
        ]);
        assert_eq!(
            metric.values,
            vec![
                MetricValue {
                    timestamp: at(T0),
                    value: 512.0,
                    tags: tags.clone()
                },
                MetricValue {
                    timestamp: at(T0 + 15_000),
                    value: -0.25,
                    tags
                },
            ]
        );
        assert_eq!(time::to_micros(metric.values[0].timestamp), T0 * 1000);
    }

    /// Field numbers written by hand from the spec, independent of the prost types above, as
    /// Prometheus (gogo-protobuf) puts them on the wire.
    #[test]
    fn the_wire_format_of_the_spec_decodes() {
        fn field(number: u64, wire_type: u64, payload: &[u8]) -> Vec<u8> {
            let mut out = varint((number << 3) | wire_type);
            if wire_type == 2 {
                out.extend(varint(payload.len() as u64));
            }
            out.extend_from_slice(payload);
            out
        }
        fn varint(mut v: u64) -> Vec<u8> {
            let mut out = Vec::new();
            while v >= 0x80 {
                out.push((v as u8) | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
            out
        }
        let label = |name: &str, value: &str| {
            [field(1, 2, name.as_bytes()), field(2, 2, value.as_bytes())].concat()
        };
        let sample = [
            field(1, 1, &2.5f64.to_le_bytes()),
            field(2, 0, &varint(T0 as u64)),
        ]
        .concat();
        let exemplar = [
            field(1, 2, &label("trace_id", "abc")),
            field(2, 1, &1f64.to_le_bytes()),
        ]
        .concat();
        let native = [
            field(3, 1, &1f64.to_le_bytes()),
            field(15, 0, &varint(T0 as u64)),
        ]
        .concat();
        let series = [
            field(1, 2, &label("__name__", "requests_total")),
            field(1, 2, &label("job", "api")),
            field(2, 2, &sample),
            field(3, 2, &exemplar),
            field(4, 2, &native),
        ]
        .concat();
        let metadata = [
            field(1, 0, &varint(1)),
            field(2, 2, b"requests_total"),
            field(4, 2, b"Requests served."),
            field(5, 2, b"requests"),
        ]
        .concat();
        let request = [field(1, 2, &series), field(3, 2, &metadata)].concat();
        let body = snap::raw::Encoder::new().compress_vec(&request).unwrap();

        let decoded = decode(&body, 1 << 20).unwrap();
        let mapped = to_metrics(&decoded);
        let metric = by_id(&mapped, "api/requests_total");
        assert_eq!(metric.metric_type, MetricType::Counter);
        assert_eq!(metric.description.as_deref(), Some("Requests served."));
        assert_eq!(metric.unit.as_deref(), Some("requests"));
        assert_eq!(metric.values.len(), 1);
        assert_eq!(metric.values[0].value, 2.5);
        assert_eq!(metric.values[0].timestamp, at(T0));
        assert_eq!(decoded.timeseries[0].histograms[0].timestamp, T0);
        assert_eq!((mapped.accepted_samples, mapped.rejected_samples), (1, 1));
    }

    #[test]
    fn samples_of_one_job_and_name_share_a_metric() {
        let request = WriteRequest {
            timeseries: vec![
                series(
                    &[("__name__", "up"), ("instance", "a"), ("job", "node")],
                    &[(1.0, T0)],
                ),
                series(
                    &[("__name__", "up"), ("instance", "b"), ("job", "node")],
                    &[(0.0, T0)],
                ),
                series(&[("__name__", "up"), ("job", "api")], &[(1.0, T0)]),
                series(&[("__name__", "up"), ("instance", "c")], &[(1.0, T0)]),
            ],
            metadata: Vec::new(),
        };
        let mapped = round_trip(&request);
        let ids: Vec<&str> = mapped.metrics.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["node/up", "api/up", "prometheus/up"]);
        let node = by_id(&mapped, "node/up");
        assert_eq!(node.values.len(), 2);
        assert_eq!(node.values[1].tags["instance"], "b");
        assert_eq!(node.values[1].value, 0.0);
        assert!(
            !by_id(&mapped, "prometheus/up").values[0]
                .tags
                .contains_key("job")
        );
    }

    #[test]
    fn empty_label_values_are_dropped() {
        let request = WriteRequest {
            timeseries: vec![series(
                &[("__name__", "up"), ("env", ""), ("job", ""), ("zone", "eu")],
                &[(1.0, T0)],
            )],
            metadata: Vec::new(),
        };
        let mapped = round_trip(&request);
        let metric = by_id(&mapped, "prometheus/up");
        assert_eq!(
            metric.values[0].tags,
            Tags::from([("zone".to_owned(), "eu".to_owned())])
        );
    }

    #[test]
    fn staleness_markers_are_skipped_silently() {
        let stale = f64::from_bits(STALE_NAN_BITS);
        let request = WriteRequest {
            timeseries: vec![series(
                &[("__name__", "up"), ("job", "node")],
                &[(1.0, T0), (stale, T0 + 1), (stale, T0 + 2)],
            )],
            metadata: Vec::new(),
        };
        let mapped = round_trip(&request);
        assert_eq!(mapped.accepted_samples, 1);
        assert_eq!(mapped.rejected_samples, 0);
        assert_eq!(mapped.stale_markers, 2);
        assert!(mapped.messages.is_empty());
        assert_eq!(mapped.status(), StatusCode::NO_CONTENT);

        // Only markers: nothing to store, nothing wrong, no empty metric.
        let request = WriteRequest {
            timeseries: vec![series(&[("__name__", "up")], &[(stale, T0)])],
            metadata: Vec::new(),
        };
        let mapped = round_trip(&request);
        assert!(mapped.metrics.is_empty());
        assert_eq!(mapped.status(), StatusCode::NO_CONTENT);
    }

    #[test]
    fn other_nans_and_infinities_are_rejected_and_counted() {
        // Prometheus' ordinary NaN (`value.NormalNaN`) is not a staleness marker.
        let normal_nan = f64::from_bits(0x7ff8_0000_0000_0001);
        let request = WriteRequest {
            timeseries: vec![series(
                &[("__name__", "ratio"), ("job", "j")],
                &[
                    (normal_nan, T0),
                    (f64::NAN, T0 + 1),
                    (f64::INFINITY, T0 + 2),
                    (f64::NEG_INFINITY, T0 + 3),
                    (0.5, T0 + 4),
                ],
            )],
            metadata: Vec::new(),
        };
        let mapped = round_trip(&request);
        assert_eq!((mapped.accepted_samples, mapped.rejected_samples), (1, 4));
        assert_eq!(mapped.stale_markers, 0);
        assert_eq!(by_id(&mapped, "j/ratio").values[0].value, 0.5);
        assert_eq!(mapped.status(), StatusCode::BAD_REQUEST);
        assert_eq!(mapped.messages.len(), 1);
        assert!(
            mapped.messages[0].starts_with("4 NaN or infinite values"),
            "{:?}",
            mapped.messages
        );
        assert!(
            mapped.messages[0].contains("\"j/ratio\""),
            "{:?}",
            mapped.messages
        );
    }

    #[test]
    fn a_series_without_a_name_is_rejected_whole() {
        let request = WriteRequest {
            timeseries: vec![
                series(
                    &[("job", "node"), ("instance", "a")],
                    &[(1.0, T0), (2.0, T0 + 1)],
                ),
                series(&[("__name__", ""), ("job", "node")], &[(1.0, T0)]),
                series(&[("__name__", "up")], &[(1.0, T0)]),
            ],
            metadata: Vec::new(),
        };
        let mapped = round_trip(&request);
        assert_eq!((mapped.accepted_samples, mapped.rejected_samples), (1, 3));
        assert_eq!(mapped.metrics.len(), 1);
        assert_eq!(
            mapped.messages,
            ["3 samples of series without a __name__ label, first: {job=\"node\", instance=\"a\"}"]
        );
        assert_eq!(mapped.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_repeated_label_name_rejects_the_series() {
        let request = WriteRequest {
            timeseries: vec![
                series(&[("__name__", "up"), ("a", "1"), ("a", "2")], &[(1.0, T0)]),
                series(&[("__name__", "up"), ("__name__", "down")], &[(1.0, T0)]),
            ],
            metadata: Vec::new(),
        };
        let mapped = round_trip(&request);
        assert_eq!((mapped.accepted_samples, mapped.rejected_samples), (0, 2));
        assert!(
            mapped.messages[0]
                .starts_with("2 samples of series with a repeated label name, first: \"a\""),
            "{:?}",
            mapped.messages
        );
    }

    #[test]
    fn timestamps_outside_the_accepted_range_are_rejected() {
        let request = WriteRequest {
            timeseries: vec![series(
                &[("__name__", "up")],
                &[
                    (1.0, -1),
                    (1.0, 0),
                    (1.0, 9_214_646_400_000),
                    (1.0, i64::MAX),
                    (1.0, i64::MIN),
                ],
            )],
            metadata: Vec::new(),
        };
        let mapped = round_trip(&request);
        assert_eq!((mapped.accepted_samples, mapped.rejected_samples), (1, 4));
        assert_eq!(by_id(&mapped, "prometheus/up").values[0].timestamp, at(0));
        assert!(
            mapped.messages[0].starts_with("4 samples with timestamps outside"),
            "{:?}",
            mapped.messages
        );
    }

    #[test]
    fn ten_thousand_labels_reject_the_series_quickly() {
        let mut huge = series(
            &[("__name__", "wide"), ("job", "j")],
            &[(1.0, T0), (2.0, T0 + 1)],
        );
        huge.labels
            .extend((0..10_000).map(|i| label(&format!("l{i:05}"), "v")));
        let request = WriteRequest {
            timeseries: vec![huge, series(&[("__name__", "narrow")], &[(1.0, T0)])],
            metadata: Vec::new(),
        };
        let started = Instant::now();
        let mapped = round_trip(&request);
        assert!(
            started.elapsed().as_secs_f64() < 2.0,
            "{:?}",
            started.elapsed()
        );
        assert_eq!((mapped.accepted_samples, mapped.rejected_samples), (1, 2));
        assert_eq!(mapped.metrics.len(), 1);
        assert!(
            mapped.messages[0]
                .starts_with("2 samples of series aimon cannot store, first: \"j/wide\""),
            "{:?}",
            mapped.messages
        );
        assert!(
            mapped.messages[0].contains("has 10001 tags; the limit is 256"),
            "{:?}",
            mapped.messages
        );
    }

    #[test]
    fn names_and_ids_aimon_cannot_store_reject_the_series() {
        let long = "x".repeat(600);
        let request = WriteRequest {
            timeseries: vec![
                series(&[("__name__", "up"), ("job", &long)], &[(1.0, T0)]),
                series(&[("__name__", "bad\nname")], &[(1.0, T0)]),
                series(&[("__name__", "up"), ("bad\u{85}key", "v")], &[(1.0, T0)]),
            ],
            metadata: Vec::new(),
        };
        let mapped = round_trip(&request);
        assert_eq!((mapped.accepted_samples, mapped.rejected_samples), (0, 3));
        assert_eq!(mapped.messages.len(), 1);
        assert!(!mapped.messages[0].contains('\n'));
        assert!(mapped.messages[0].len() < 400, "{}", mapped.messages[0]);
    }

    #[test]
    fn native_histograms_are_counted_as_rejected() {
        let mut with_histograms = series(&[("__name__", "latency"), ("job", "j")], &[(1.0, T0)]);
        with_histograms.histograms =
            vec![Histogram { timestamp: T0 }, Histogram { timestamp: T0 + 1 }];
        let request = WriteRequest {
            timeseries: vec![with_histograms],
            metadata: Vec::new(),
        };
        let mapped = round_trip(&request);
        assert_eq!((mapped.accepted_samples, mapped.rejected_samples), (1, 2));
        assert!(
            mapped.messages[0].starts_with("2 native histogram samples"),
            "{:?}",
            mapped.messages
        );
    }

    #[test]
    fn types_descriptions_and_units_come_from_the_metadata() {
        use proto::MetricType as P;
        let s = |name: &str| series(&[("__name__", name), ("job", "j")], &[(1.0, T0)]);
        let request = WriteRequest {
            timeseries: vec![
                s("http_requests_total"),
                s("temperature"),
                s("latency_seconds_bucket"),
                s("latency_seconds_sum"),
                s("latency_seconds_count"),
                s("rpc_seconds"),
                s("rpc_seconds_sum"),
                s("rpc_seconds_count"),
                s("queue_bucket"),
                s("queue_gsum"),
                s("om_requests_total"),
                s("build_info"),
                s("mystery"),
                s("unlisted"),
                s("temperature_sum"),
            ],
            metadata: vec![
                metadata("http_requests_total", P::Counter, "Requests served.", ""),
                metadata("temperature", P::Gauge, "Degrees.", "celsius"),
                metadata("latency_seconds", P::Histogram, "Latency.", "seconds"),
                metadata("rpc_seconds", P::Summary, "", ""),
                metadata("queue", P::GaugeHistogram, "", ""),
                metadata("om_requests", P::Counter, "", ""),
                metadata("build", P::Info, "", ""),
                MetricMetadata {
                    r#type: 42,
                    ..metadata("mystery", P::Unknown, "", "")
                },
            ],
        };
        let mapped = round_trip(&request);
        let type_of = |name: &str| by_id(&mapped, &format!("j/{name}")).metric_type;
        for (name, want) in [
            ("http_requests_total", MetricType::Counter),
            ("temperature", MetricType::Gauge),
            ("latency_seconds_bucket", MetricType::Histogram),
            ("latency_seconds_sum", MetricType::Histogram),
            ("latency_seconds_count", MetricType::Histogram),
            ("rpc_seconds", MetricType::Summary),
            ("rpc_seconds_sum", MetricType::Summary),
            ("rpc_seconds_count", MetricType::Summary),
            ("queue_bucket", MetricType::Histogram),
            ("queue_gsum", MetricType::Histogram),
            ("om_requests_total", MetricType::Counter),
            ("build_info", MetricType::Gauge),
            ("mystery", MetricType::Gauge),
            ("unlisted", MetricType::Gauge),
            // A gauge family has no `_sum` series: this one is a family of its own.
            ("temperature_sum", MetricType::Gauge),
        ] {
            assert_eq!(type_of(name), want, "{name}");
        }
        let temperature = by_id(&mapped, "j/temperature");
        assert_eq!(temperature.description.as_deref(), Some("Degrees."));
        assert_eq!(temperature.unit.as_deref(), Some("celsius"));
        let bucket = by_id(&mapped, "j/latency_seconds_bucket");
        assert_eq!(bucket.description.as_deref(), Some("Latency."));
        assert_eq!(bucket.unit.as_deref(), Some("seconds"));
        assert_eq!(by_id(&mapped, "j/rpc_seconds").description, None);
        assert_eq!(by_id(&mapped, "j/temperature_sum").description, None);
    }

    #[test]
    fn known_metadata_fills_in_for_metadata_sent_separately() {
        let known = HashMap::from([(
            "jobs_total".to_owned(),
            metadata("jobs_total", proto::MetricType::Counter, "Jobs.", ""),
        )]);
        let request = WriteRequest {
            timeseries: vec![
                series(&[("__name__", "jobs_total")], &[(3.0, T0)]),
                series(&[("__name__", "depth")], &[(3.0, T0)]),
            ],
            metadata: vec![metadata("depth", proto::MetricType::Gauge, "Depth.", "")],
        };
        let mapped = to_metrics_with(&request, &known);
        let jobs = by_id(&mapped, "prometheus/jobs_total");
        assert_eq!(jobs.metric_type, MetricType::Counter);
        assert_eq!(jobs.description.as_deref(), Some("Jobs."));
        assert_eq!(
            by_id(&mapped, "prometheus/depth").description.as_deref(),
            Some("Depth.")
        );

        // The request's own metadata wins over what is known.
        let known = HashMap::from([(
            "depth".to_owned(),
            metadata("depth", proto::MetricType::Counter, "Old.", ""),
        )]);
        let mapped = to_metrics_with(&request, &known);
        let depth = by_id(&mapped, "prometheus/depth");
        assert_eq!(depth.metric_type, MetricType::Gauge);
        assert_eq!(depth.description.as_deref(), Some("Depth."));
    }

    #[test]
    fn invalid_help_and_units_are_left_out_without_rejecting_samples() {
        let long_help = "é".repeat(MAX_DESCRIPTION_BYTES);
        let request = WriteRequest {
            timeseries: vec![
                series(&[("__name__", "a")], &[(1.0, T0)]),
                series(&[("__name__", "b")], &[(1.0, T0)]),
            ],
            metadata: vec![
                metadata("a", proto::MetricType::Gauge, "nul\0inside", "bad\nunit"),
                metadata("b", proto::MetricType::Gauge, &long_help, "bytes"),
            ],
        };
        let mapped = round_trip(&request);
        assert_eq!((mapped.accepted_samples, mapped.rejected_samples), (2, 0));
        assert_eq!(mapped.status(), StatusCode::NO_CONTENT);
        let a = by_id(&mapped, "prometheus/a");
        assert_eq!((&a.description, &a.unit), (&None, &None));
        assert!(mapped.messages[0].starts_with("2 metric descriptions or units ignored"));
        let b = by_id(&mapped, "prometheus/b").description.clone().unwrap();
        assert!(
            b.len() <= MAX_DESCRIPTION_BYTES && b.ends_with('…'),
            "{}",
            b.len()
        );
    }

    #[test]
    fn the_response_text_is_one_bounded_line() {
        let request = WriteRequest {
            timeseries: vec![
                series(
                    &[("job", "line\nbreak"), ("x", &"y".repeat(5000))],
                    &[(1.0, T0)],
                ),
                series(&[("__name__", "a\nb")], &[(1.0, T0)]),
                series(&[("__name__", "n")], &[(f64::NAN, T0), (1.0, -5)]),
            ],
            metadata: Vec::new(),
        };
        let mapped = round_trip(&request);
        assert_eq!(mapped.messages.len(), 4);
        let text = mapped.response_text();
        assert!(
            text.starts_with("accepted 0 samples, rejected 4: 1 samples of series without"),
            "{text}"
        );
        assert!(!text.chars().any(char::is_control), "{text}");
        assert!(text.len() <= MAX_RESPONSE_TEXT_BYTES, "{}", text.len());
        assert!(text.contains("line\\nbreak"), "{text}");
    }

    #[test]
    fn an_empty_request_is_a_success() {
        let mapped = round_trip(&WriteRequest::default());
        assert_eq!(mapped, Mapped::default());
        assert_eq!(mapped.status(), StatusCode::NO_CONTENT);
        assert_eq!(mapped.response_text(), "accepted 0 samples, rejected 0");
    }

    #[test]
    fn a_header_announcing_too_much_is_refused_before_allocating() {
        // The header of a snappy block is the decompressed length as a varint: 1 GiB here,
        // followed by nothing.
        let mut body = Vec::new();
        let mut len = 1u64 << 30;
        while len >= 0x80 {
            body.push((len as u8) | 0x80);
            len >>= 7;
        }
        body.push(len as u8);
        let err = decode(&body, DEFAULT_MAX_DECOMPRESSED_BYTES).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TooLarge {
                bytes: 1 << 30,
                limit: DEFAULT_MAX_DECOMPRESSED_BYTES as u64
            }
        );
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(err.to_string().contains("too large"), "{err}");
        let as_aimon = aimon::Error::from(err);
        assert_eq!(as_aimon.kind(), aimon::ErrorKind::InvalidInput);
        assert!(as_aimon.to_string().contains("too large"));

        // Within a generous limit, 1 GiB is still more than four bytes of snappy can hold.
        let err = decode(&body, 2 << 30).unwrap_err();
        assert!(matches!(err, DecodeError::Malformed(_)), "{err}");

        // Beyond snappy's own 4 GiB limit.
        let err = decode(&[0xff, 0xff, 0xff, 0xff, 0x7f], usize::MAX).unwrap_err();
        assert!(err.is_too_large(), "{err}");
    }

    #[test]
    fn a_request_just_within_the_limit_decodes() {
        let request = WriteRequest {
            timeseries: vec![series(&[("__name__", "up")], &[(1.0, T0)])],
            metadata: Vec::new(),
        };
        let len = request.encoded_len();
        assert!(decode(&body(&request), len).is_ok());
        assert!(matches!(
            decode(&body(&request), len - 1),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn corrupt_bodies_are_malformed() {
        let good = body(&WriteRequest {
            timeseries: vec![series(&[("__name__", "up"), ("job", "j")], &[(1.0, T0)])],
            metadata: vec![metadata("up", proto::MetricType::Gauge, "Up.", "")],
        });
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("truncated snappy", good[..good.len() - 3].to_vec()),
            ("bad varint header", vec![0xff; 11]),
            (
                "uncompressed protobuf",
                WriteRequest::default()
                    .encode_to_vec()
                    .into_iter()
                    .chain([0x0a, 0x05])
                    .collect(),
            ),
            (
                "garbage protobuf",
                snap::raw::Encoder::new()
                    .compress_vec(b"\xff\xff\xff garbage")
                    .unwrap(),
            ),
            (
                "truncated protobuf",
                snap::raw::Encoder::new()
                    .compress_vec(&[0x0a, 0x10, 0x0a])
                    .unwrap(),
            ),
            (
                "wrong wire type",
                snap::raw::Encoder::new()
                    .compress_vec(&[0x08, 0x01])
                    .unwrap(),
            ),
            (
                "invalid UTF-8 label",
                snap::raw::Encoder::new()
                    .compress_vec(&[0x0a, 0x06, 0x0a, 0x04, 0x0a, 0x02, 0xc3, 0x28])
                    .unwrap(),
            ),
        ];
        for (what, body) in cases {
            let err = decode(&body, 1 << 20).unwrap_err();
            assert!(matches!(err, DecodeError::Malformed(_)), "{what}: {err}");
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{what}");
        }
    }

    /// Every prefix and every single-bit flip of a valid body: an error or a request, never a
    /// panic.
    #[test]
    fn no_corruption_panics() {
        let request = WriteRequest {
            timeseries: vec![
                series(
                    &[("__name__", "up"), ("job", "j")],
                    &[(1.0, T0), (2.0, T0 + 1)],
                ),
                TimeSeries {
                    histograms: vec![Histogram { timestamp: T0 }],
                    ..series(&[("__name__", "h")], &[])
                },
            ],
            metadata: vec![metadata("up", proto::MetricType::Gauge, "Up.", "u")],
        };
        let good = body(&request);
        for end in 0..good.len() {
            let _ = decode(&good[..end], 1 << 20).map(|r| to_metrics(&r));
        }
        for byte in 0..good.len() {
            for bit in 0..8 {
                let mut flipped = good.clone();
                flipped[byte] ^= 1 << bit;
                let _ = decode(&flipped, 1 << 20).map(|r| to_metrics(&r));
            }
        }
        // The same over the protobuf itself, snappy being sound.
        let raw = request.encode_to_vec();
        for byte in 0..raw.len() {
            for bit in 0..8 {
                let mut flipped = raw.clone();
                flipped[byte] ^= 1 << bit;
                let body = snap::raw::Encoder::new().compress_vec(&flipped).unwrap();
                let _ = decode(&body, 1 << 20).map(|r| to_metrics(&r));
            }
        }
    }

    /// Two bytes of protobuf make an empty series, which takes 72 bytes decoded (and is
    /// estimated as a metric too): a body of nothing else is refused, not decoded.
    #[test]
    fn a_bomb_of_empty_series_is_refused_before_decoding() {
        let raw: Vec<u8> = [0x0a, 0x00].repeat(500_000);
        let body = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        assert!(body.len() < raw.len() / 10);
        let err = decode(&body, 1 << 20).unwrap_err();
        let DecodeError::TooLargeDecoded { bytes, limit } = err else {
            panic!("{err}")
        };
        assert!(bytes > limit, "{bytes} {limit}");
        assert_eq!(limit, (8 << 20) as u64);
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    /// A sample takes four bytes on the wire, yet gets its own copy of its series' tags (up to
    /// 20 KiB): such a body is refused before decoding.
    #[test]
    fn a_bomb_of_samples_with_wide_tags_is_refused_before_decoding() {
        let mut wide = series(&[("__name__", "wide")], &[]);
        wide.labels
            .extend((0..200).map(|i| label(&format!("l{i:03}"), &"v".repeat(90))));
        wide.samples = vec![
            Sample {
                value: 0.0,
                timestamp: 1
            };
            100_000
        ];
        let request = WriteRequest {
            timeseries: vec![wide],
            metadata: Vec::new(),
        };
        let raw = request.encode_to_vec();
        assert!(raw.len() < 1 << 20, "{}", raw.len());
        let err = decode(&body(&request), 1 << 20).unwrap_err();
        assert!(matches!(err, DecodeError::TooLargeDecoded { .. }), "{err}");
        assert!(err.to_string().contains("max_samples_per_send"), "{err}");
    }

    /// What Prometheus sends by default, 2,000 samples of series with a dozen labels, is far
    /// below the default limits, also when one series is catching up.
    #[test]
    fn default_prometheus_batches_fit_the_default_limits() {
        let labels = |i: usize| -> Vec<(String, String)> {
            let mut labels: Vec<(String, String)> = vec![
                ("__name__".into(), "node_network_receive_bytes_total".into()),
                ("instance".into(), format!("host-{i}.example.internal:9100")),
                ("job".into(), "node".into()),
            ];
            labels.extend((0..9).map(|k| (format!("label_{k}"), format!("value-{i}-{k}"))));
            labels
        };
        let to_series = |labels: Vec<(String, String)>, samples: usize| TimeSeries {
            labels: labels.iter().map(|(n, v)| label(n, v)).collect(),
            samples: (0..samples)
                .map(|k| Sample {
                    value: k as f64,
                    timestamp: T0 + k as i64 * 15_000,
                })
                .collect(),
            histograms: Vec::new(),
        };
        let many = WriteRequest {
            timeseries: (0..2000).map(|i| to_series(labels(i), 1)).collect(),
            metadata: Vec::new(),
        };
        let one = WriteRequest {
            timeseries: vec![to_series(labels(0), 2000)],
            metadata: Vec::new(),
        };
        for request in [many, one] {
            let raw = request.encode_to_vec();
            let estimate = estimate_memory(&raw).unwrap();
            let limit = DEFAULT_MAX_DECOMPRESSED_BYTES * MEMORY_PER_DECOMPRESSED_BYTE;
            assert!(
                estimate < limit / 4,
                "{estimate} of {limit} for {} bytes",
                raw.len()
            );
            let mapped = round_trip(&request);
            assert_eq!(mapped.accepted_samples, 2000);
        }
    }

    #[test]
    fn content_types() {
        for ok in [
            None,
            Some("application/x-protobuf"),
            Some("Application/X-Protobuf ; charset=binary"),
            Some("application/x-protobuf;proto=prometheus.WriteRequest"),
            Some("application/x-protobuf; proto=\"prometheus.WriteRequest\""),
        ] {
            assert!(content_type_is_supported(ok), "{ok:?}");
        }
        for refused in [
            Some("application/x-protobuf;proto=io.prometheus.write.v2.Request"),
            Some("application/json"),
            Some(""),
            Some("text/plain; proto=prometheus.WriteRequest"),
        ] {
            assert!(!content_type_is_supported(refused), "{refused:?}");
        }
    }

    #[test]
    fn cut_and_one_line_keep_to_their_bounds() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcdef", 5), "ab…");
        assert_eq!(cut("ééé", 5), "é…");
        assert_eq!(one_line("a\nb\u{85}c", 100), "a\\nb\\u{85}c");
        for max in 3..20 {
            assert!(cut(&"é".repeat(10), max).len() <= max);
        }
    }
}
