//! OTLP/HTTP metrics: decoding an `ExportMetricsServiceRequest` (protobuf or JSON) and mapping it
//! to aimon [`Metric`]s.
//!
//! Pure functions, no HTTP and no storage: the handler decompresses the body, calls [`decode`],
//! then [`to_metrics`], saves [`Mapped::metrics`] and answers with [`partial_success`]. The
//! mapping is specified for users in `docs/otlp.md`; the tests below are its executable form.
//!
//! ```
//! use aimon_server::otlp::{self, AttributeLimits, Encoding};
//!
//! let body = br#"{"resourceMetrics":[{
//!     "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"support-bot"}}]},
//!     "scopeMetrics":[{"metrics":[{"name":"queue.depth","gauge":{"dataPoints":[
//!         {"timeUnixNano":"1700000000000000000","asInt":"42"}]}}]}]}]}"#;
//! let request = otlp::decode(body, Encoding::Json)?;
//! let mapped = otlp::to_metrics(&request, &AttributeLimits::default());
//! assert_eq!(mapped.metrics[0].id, "support-bot/queue.depth");
//! assert_eq!(mapped.metrics[0].values[0].value, 42.0);
//! assert_eq!(mapped.metrics[0].values[0].tags["agent"], "support-bot");
//! assert!(otlp::partial_success(&mapped).partial_success.is_none());
//! # Ok::<(), aimon::Error>(())
//! ```
//!
//! OTLP/JSON is decoded by hand here rather than through `opentelemetry-proto`'s `with-serde`
//! derives: in 0.31 those lose data without an error (`"asInt": "42"` becomes a point without a
//! value; a numeric `timeUnixNano` or a string histogram `count` turns the whole metric into one
//! without data), which the OTLP/JSON rules (64-bit integers as strings or numbers) make common.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use aimon::validate::{MAX_NAME_BYTES, MAX_TAG_VALUE_BYTES, MAX_TAGS, MAX_TAGS_BYTES};
use aimon::{Error, Metadata, Metric, MetricType, MetricValue, Result, Tags};
use chrono::{DateTime, Utc};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric as OtlpMetric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    Summary, SummaryDataPoint, exemplar, exponential_histogram_data_point::Buckets, metric,
    number_data_point, summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use serde_json::Value as Json;

/// Most buckets of one explicit-bucket histogram point (`bucket_counts`), and most quantiles of
/// one summary point; a point with more is rejected. Generous: OpenTelemetry SDKs default to 16
/// buckets, Prometheus clients to 11.
pub const MAX_EXPLICIT_BUCKETS: usize = 160;
/// Most buckets of one exponential histogram point, positive and negative together; a point
/// with more is rejected. The SDKs' default is at most 160 per sign.
pub const MAX_EXPONENTIAL_BUCKETS: usize = 320;
/// Most distinct messages [`Mapped::messages`] keeps.
pub const MAX_MESSAGES: usize = 5;
/// The agent of data that names none (no `gen_ai.agent.name`, no `service.name`); the
/// OpenTelemetry SDKs' own default `service.name` starts the same way.
pub const UNKNOWN_SERVICE: &str = "unknown_service";
/// Deepest nesting of attribute values (maps in maps, arrays in arrays) that becomes a tag.
pub const MAX_ATTRIBUTE_DEPTH: usize = 8;

/// The tag every sample carries: the agent that sent it.
pub const AGENT_TAG: &str = "agent";
/// The tag naming the instrumentation scope (the library that recorded the metric).
pub const SCOPE_TAG: &str = "otel.scope.name";
/// The tag that marks samples of delta temporality (`otel.temporality=delta`).
pub const TEMPORALITY_TAG: &str = "otel.temporality";
/// The tag of a histogram bucket's upper bound.
pub const BUCKET_TAG: &str = "le";
/// The tag of a summary's quantile.
pub const QUANTILE_TAG: &str = "quantile";

/// The data-point flag `DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK`.
const NO_RECORDED_VALUE: u32 = 1;
/// The exponential histogram scales OTLP defines.
const SCALES: std::ops::RangeInclusive<i32> = -10..=20;
/// Bytes kept free in a sample's tags for the tags the mapping adds besides `agent`:
/// `otel.temporality=delta` (21) and an `le` or `quantile` tag (at most 8 + 24).
const GENERATED_TAG_BYTES: usize = 64;
/// Tags the mapping adds besides `agent`: `otel.temporality` and `le` or `quantile`.
const GENERATED_TAGS: usize = 2;
const GEN_AI_AGENT_NAME: &str = "gen_ai.agent.name";
const SERVICE_NAME: &str = "service.name";

/// How a request body is encoded: the two encodings of OTLP/HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Binary protobuf, `Content-Type: application/x-protobuf`.
    Protobuf,
    /// OTLP/JSON, `Content-Type: application/json`.
    Json,
}

impl Encoding {
    /// The encoding a `Content-Type` header names, ignoring parameters and case
    /// (`application/json; charset=utf-8` is [`Encoding::Json`]); `None` for any other type,
    /// which OTLP/HTTP answers with 415 Unsupported Media Type.
    pub fn from_content_type(content_type: &str) -> Option<Encoding> {
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if media_type.eq_ignore_ascii_case("application/x-protobuf") {
            Some(Encoding::Protobuf)
        } else if media_type.eq_ignore_ascii_case("application/json") {
            Some(Encoding::Json)
        } else {
            None
        }
    }
}

/// Decodes an (already decompressed) OTLP/HTTP metrics request body.
///
/// JSON follows the OTLP/JSON rules: lowerCamelCase field names, unknown fields ignored, 64-bit
/// integers as strings or numbers, enums as integers (their names are accepted too), doubles as
/// numbers or `"NaN"`/`"Infinity"`/`"-Infinity"`, `bytesValue` in base64, trace and span ids in
/// hex (base64 accepted too). A body that is not a valid request is an
/// [`aimon::ErrorKind::InvalidInput`] error saying where it went wrong, never a panic.
pub fn decode(body: &[u8], encoding: Encoding) -> Result<ExportMetricsServiceRequest> {
    match encoding {
        Encoding::Protobuf => ExportMetricsServiceRequest::decode(body).map_err(|e| {
            Error::invalid_input(
                "OTLP protobuf body",
                "is not a valid ExportMetricsServiceRequest",
            )
            .with_source(e)
        }),
        Encoding::Json => {
            let value: Json = serde_json::from_slice(body).map_err(|e| {
                Error::invalid_input("OTLP/JSON body", "is not valid JSON").with_source(e)
            })?;
            json::request(&value)
        }
    }
}

/// Bounds on the attributes that become tags; what exceeds them is dropped and counted in
/// [`Mapped::dropped_attributes`], never a rejection.
///
/// The defaults keep each sample's tags small and within what every backend stores: 64 tags of
/// at most 128-byte keys and 1 KiB values. OpenTelemetry SDKs default to 128 attributes and no
/// value limit, but a metric attribute is a series dimension: past a few dozen, or past a short
/// text, it is usually a mistake (a prompt, a stack trace) that would multiply series. Whatever
/// the limits say, the mapping also keeps every sample within aimon's own tag limits
/// (`aimon::validate`: 256 tags, 20 KiB of keys and values), so mapped metrics always validate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributeLimits {
    /// Most tags from attributes on one sample (point, scope and resource together).
    pub max_attributes: usize,
    /// Longest tag key in bytes (after flattening maps to `key.sub`).
    pub max_key_bytes: usize,
    /// Longest tag value in bytes (after rendering to text).
    pub max_value_bytes: usize,
}

impl Default for AttributeLimits {
    fn default() -> Self {
        AttributeLimits {
            max_attributes: 64,
            max_key_bytes: 128,
            max_value_bytes: 1024,
        }
    }
}

/// What [`to_metrics`] made of a request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapped {
    /// The series, one per `"{agent}/{series name}"`, in the order first seen, each with all
    /// its samples from the request.
    pub metrics: Vec<Metric>,
    /// OTLP data points stored (as one or more samples each).
    pub accepted_points: u64,
    /// OTLP data points refused (bad value, time, name, buckets…): the partial-success count.
    pub rejected_points: u64,
    /// Data points flagged "no recorded value": valid, but with nothing to store.
    pub skipped_points: u64,
    /// Attributes that did not become tags (over a limit, empty, control characters…).
    pub dropped_attributes: u64,
    /// Up to [`MAX_MESSAGES`] distinct reasons for rejections and drops, for people.
    pub messages: Vec<String>,
}

/// Maps a decoded request to aimon metrics, following `docs/otlp.md`. Never fails and never
/// panics: what cannot be stored is counted and explained in the result.
pub fn to_metrics(request: &ExportMetricsServiceRequest, limits: &AttributeLimits) -> Mapped {
    let mut mapper = Mapper {
        limits: Limits::new(limits),
        mapped: Mapped::default(),
        index: HashMap::new(),
    };
    for resource_metrics in &request.resource_metrics {
        mapper.resource_metrics(resource_metrics);
    }
    mapper.mapped
}

/// The OTLP response for a mapped request: `partial_success` with the number of rejected data
/// points and the reasons when some were rejected; with zero rejected points and a warning
/// when only attributes were dropped (the spec's way to report what was accepted with
/// changes); none when everything was stored as sent.
pub fn partial_success(mapped: &Mapped) -> ExportMetricsServiceResponse {
    if mapped.rejected_points == 0 && mapped.dropped_attributes == 0 {
        return ExportMetricsServiceResponse {
            partial_success: None,
        };
    }
    let count = mapped.rejected_points;
    let points = if count == 1 { "point" } else { "points" };
    let mut error_message = format!("{count} data {points} rejected");
    if mapped.dropped_attributes > 0 {
        error_message.push_str(&format!(
            ", {} attributes dropped",
            mapped.dropped_attributes
        ));
    }
    if !mapped.messages.is_empty() {
        error_message.push_str(": ");
        error_message.push_str(&mapped.messages.join("; "));
    }
    ExportMetricsServiceResponse {
        partial_success: Some(ExportMetricsPartialSuccess {
            rejected_data_points: i64::try_from(count).unwrap_or(i64::MAX),
            error_message,
        }),
    }
}

/// Encodes a response in the request's encoding: protobuf, or OTLP/JSON
/// (`{"partialSuccess":{"rejectedDataPoints":"3","errorMessage":"…"}}`, `{}` without one).
pub fn encode_response(response: &ExportMetricsServiceResponse, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => response.encode_to_vec(),
        Encoding::Json => {
            let body = match &response.partial_success {
                Some(p) => serde_json::json!({"partialSuccess": {
                    "rejectedDataPoints": p.rejected_data_points.to_string(),
                    "errorMessage": p.error_message,
                }}),
                None => serde_json::json!({}),
            };
            body.to_string().into_bytes()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Mapping
// ---------------------------------------------------------------------------------------------

/// [`AttributeLimits`] clamped to what aimon stores.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_attributes: usize,
    max_key_bytes: usize,
    max_value_bytes: usize,
}

impl Limits {
    fn new(limits: &AttributeLimits) -> Limits {
        Limits {
            // `agent` and the generated tags come on top.
            max_attributes: limits.max_attributes.min(MAX_TAGS - 1 - GENERATED_TAGS),
            max_key_bytes: limits.max_key_bytes.min(MAX_NAME_BYTES),
            max_value_bytes: limits.max_value_bytes.min(MAX_TAG_VALUE_BYTES),
        }
    }
}

/// Why an attribute did not become a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DropReason {
    EmptyKey,
    EmptyValue,
    KeyTooLong,
    ValueTooLong,
    ControlInKey,
    ControlInValue,
    TooDeep,
    TooMany,
    TooManyBytes,
    Reserved,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DropReason::EmptyKey => "empty key",
            DropReason::EmptyValue => "empty value",
            DropReason::KeyTooLong => "key too long",
            DropReason::ValueTooLong => "value too long",
            DropReason::ControlInKey => "control character in key",
            DropReason::ControlInValue => "control character in value",
            DropReason::TooDeep => "nested too deeply",
            DropReason::TooMany => "too many attributes",
            DropReason::TooManyBytes => "attributes too large together",
            DropReason::Reserved => "key reserved by the mapping",
        })
    }
}

fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// `text` quoted for a message, cut to 80 characters.
fn quoted(text: &str) -> String {
    const MAX_CHARS: usize = 80;
    match text.char_indices().nth(MAX_CHARS) {
        Some((at, _)) => format!("{:?}…", &text[..at]),
        None => format!("{text:?}"),
    }
}

/// Collects one sample's tags from attributes, enforcing the limits and counting drops.
struct TagSet<'a> {
    limits: Limits,
    reserved: &'a [&'a str],
    tags: Tags,
    bytes: usize,
    max_bytes: usize,
    dropped: u64,
    first_drop: Option<(String, DropReason)>,
}

impl<'a> TagSet<'a> {
    fn new(limits: Limits, reserved: &'a [&'a str], max_bytes: usize) -> TagSet<'a> {
        TagSet {
            limits,
            reserved,
            tags: Tags::new(),
            bytes: 0,
            max_bytes,
            dropped: 0,
            first_drop: None,
        }
    }

    fn full(&self) -> bool {
        self.tags.len() >= self.limits.max_attributes
    }

    fn discard(&mut self, key: &str, why: DropReason) {
        self.dropped += 1;
        if self.first_drop.is_none() {
            self.first_drop = Some((key.to_owned(), why));
        }
    }

    fn key_problem(&self, key: &str) -> Option<DropReason> {
        if key.is_empty() {
            Some(DropReason::EmptyKey)
        } else if key.len() > self.limits.max_key_bytes {
            Some(DropReason::KeyTooLong)
        } else if has_control(key) {
            Some(DropReason::ControlInKey)
        } else {
            None
        }
    }

    /// Offers one attribute (a map is flattened into several tags). The first value of a key
    /// wins; later ones are ignored without being counted as dropped.
    fn attribute(&mut self, key: &str, value: Option<&AnyValue>, depth: usize) {
        if self.full() && !self.tags.contains_key(key) {
            return self.discard(key, DropReason::TooMany);
        }
        if let Some(why) = self.key_problem(key) {
            return self.discard(key, why);
        }
        match value.and_then(|v| v.value.as_ref()) {
            Some(any_value::Value::KvlistValue(list)) => {
                if list.values.is_empty() {
                    return self.discard(key, DropReason::EmptyValue);
                }
                if depth >= MAX_ATTRIBUTE_DEPTH {
                    return self.discard(key, DropReason::TooDeep);
                }
                for entry in &list.values {
                    let sub_key = format!("{key}.{}", entry.key);
                    if entry.key.is_empty() {
                        self.discard(&sub_key, DropReason::EmptyKey);
                    } else {
                        self.attribute(&sub_key, entry.value.as_ref(), depth + 1);
                    }
                }
            }
            Some(value) => match render(value, self.limits.max_value_bytes) {
                Ok(text) => self.tag(key, text),
                Err(why) => self.discard(key, why),
            },
            None => self.discard(key, DropReason::EmptyValue),
        }
    }

    /// Offers one tag whose key is known to be valid.
    fn tag(&mut self, key: &str, value: Cow<'_, str>) {
        if self.tags.contains_key(key) {
            return;
        }
        let why = if self.reserved.contains(&key) {
            Some(DropReason::Reserved)
        } else if value.is_empty() {
            Some(DropReason::EmptyValue)
        } else if value.len() > self.limits.max_value_bytes {
            Some(DropReason::ValueTooLong)
        } else if has_control(&value) {
            Some(DropReason::ControlInValue)
        } else if self.full() {
            Some(DropReason::TooMany)
        } else if self.bytes + key.len() + value.len() > self.max_bytes {
            Some(DropReason::TooManyBytes)
        } else {
            None
        };
        match why {
            Some(why) => self.discard(key, why),
            None => {
                self.bytes += key.len() + value.len();
                self.tags.insert(key.to_owned(), value.into_owned());
            }
        }
    }
}

/// An attribute value other than a map as tag text, or why it cannot be one.
fn render(
    value: &any_value::Value,
    max_len: usize,
) -> std::result::Result<Cow<'_, str>, DropReason> {
    use any_value::Value as V;
    Ok(match value {
        V::StringValue(s) => Cow::Borrowed(s.as_str()),
        V::BoolValue(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        V::IntValue(i) => Cow::Owned(i.to_string()),
        V::DoubleValue(d) => Cow::Owned(format_f64(*d)),
        V::BytesValue(bytes) => {
            if bytes.len().div_ceil(3) * 4 > max_len {
                return Err(DropReason::ValueTooLong);
            }
            Cow::Owned(base64_encode(bytes))
        }
        V::ArrayValue(array) => {
            if array.values.is_empty() {
                return Err(DropReason::EmptyValue);
            }
            let mut budget = max_len;
            let json = array_json(array, 1, &mut budget)?;
            Cow::Owned(json.to_string())
        }
        V::KvlistValue(list) => {
            let mut budget = max_len;
            Cow::Owned(kvlist_json(list, 1, &mut budget)?.to_string())
        }
    })
}

/// Takes `bytes` from the budget of a value's text: rendering stops as soon as the text is
/// sure to be too long, so a huge array costs no more than a short one.
fn spend(budget: &mut usize, bytes: usize) -> std::result::Result<(), DropReason> {
    *budget = budget.checked_sub(bytes).ok_or(DropReason::ValueTooLong)?;
    Ok(())
}

fn any_json(
    value: Option<&AnyValue>,
    depth: usize,
    budget: &mut usize,
) -> std::result::Result<Json, DropReason> {
    use any_value::Value as V;
    spend(budget, 1)?;
    Ok(match value.and_then(|v| v.value.as_ref()) {
        None => Json::Null,
        Some(V::StringValue(s)) => {
            spend(budget, s.len())?;
            Json::from(s.as_str())
        }
        Some(V::BoolValue(b)) => Json::from(*b),
        Some(V::IntValue(i)) => Json::from(*i),
        Some(V::DoubleValue(d)) if d.is_finite() => Json::from(*d),
        Some(V::DoubleValue(d)) => Json::from(format_f64(*d)),
        Some(V::BytesValue(bytes)) => {
            spend(budget, bytes.len())?;
            Json::from(base64_encode(bytes))
        }
        Some(V::ArrayValue(array)) => array_json(array, depth + 1, budget)?,
        Some(V::KvlistValue(list)) => kvlist_json(list, depth + 1, budget)?,
    })
}

fn array_json(
    array: &ArrayValue,
    depth: usize,
    budget: &mut usize,
) -> std::result::Result<Json, DropReason> {
    if depth > MAX_ATTRIBUTE_DEPTH {
        return Err(DropReason::TooDeep);
    }
    array
        .values
        .iter()
        .map(|v| any_json(Some(v), depth, budget))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(Json::Array)
}

fn kvlist_json(
    list: &KeyValueList,
    depth: usize,
    budget: &mut usize,
) -> std::result::Result<Json, DropReason> {
    if depth > MAX_ATTRIBUTE_DEPTH {
        return Err(DropReason::TooDeep);
    }
    let mut object = serde_json::Map::new();
    for entry in &list.values {
        spend(budget, entry.key.len())?;
        let value = any_json(entry.value.as_ref(), depth, budget)?;
        object.entry(entry.key.clone()).or_insert(value);
    }
    Ok(Json::Object(object))
}

/// A double as tag text: the shortest text that reads back as the same number, in plain
/// notation for magnitudes in [1e-5, 1e16) (`0.25`, `1`, `1024`) and exponent notation
/// otherwise (`1e-7`, `1.5e300`); `NaN`, `+Inf`, `-Inf` as Prometheus writes them.
pub fn format_f64(x: f64) -> String {
    if x.is_nan() {
        "NaN".to_owned()
    } else if x == f64::INFINITY {
        "+Inf".to_owned()
    } else if x == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else if x == 0.0 {
        // Also -0.0, which would otherwise print as "-0".
        "0".to_owned()
    } else if (1e-5..1e16).contains(&x.abs()) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 §4), as OTLP/JSON writes `bytesValue`.
fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        let digit = |shift: u32| char::from(BASE64[((n >> shift) & 63) as usize]);
        out.push(digit(18));
        out.push(digit(12));
        out.push(if chunk.len() > 1 { digit(6) } else { '=' });
        out.push(if chunk.len() > 2 { digit(0) } else { '=' });
    }
    out
}

/// Base64 in the standard or URL-safe alphabet, padded or not.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let digits = text.trim_end_matches('=');
    let padding = text.len() - digits.len();
    if padding > 2 || (padding > 0 && !text.len().is_multiple_of(4)) {
        return None;
    }
    if digits.len() % 4 == 1 {
        return None;
    }
    let value = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        }))
    };
    let mut out = Vec::with_capacity(digits.len() / 4 * 3 + 2);
    for chunk in digits.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    Some(out)
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| char::from(c).to_digit(16);
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(((nibble(pair[0])? << 4) | nibble(pair[1])?) as u8))
        .collect()
}

/// A scalar attribute value as text (for the agent's name); `None` for maps, arrays, bytes
/// and missing values.
fn scalar_text(value: Option<&AnyValue>) -> Option<Cow<'_, str>> {
    use any_value::Value as V;
    let text = match value?.value.as_ref()? {
        V::StringValue(s) => Cow::Borrowed(s.as_str()),
        V::BoolValue(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        V::IntValue(i) => Cow::Owned(i.to_string()),
        V::DoubleValue(d) => Cow::Owned(format_f64(*d)),
        V::BytesValue(_) | V::ArrayValue(_) | V::KvlistValue(_) => return None,
    };
    (!text.is_empty()).then_some(text)
}

/// The first non-empty scalar value of `key` among `attributes`.
fn find_text<'a>(attributes: &'a [KeyValue], key: &str) -> Option<Cow<'a, str>> {
    attributes
        .iter()
        .filter(|kv| kv.key == key)
        .find_map(|kv| scalar_text(kv.value.as_ref()))
}

/// A data point's time, or `None` when unset (0) or outside aimon's range.
fn timestamp(time_unix_nano: u64) -> Option<DateTime<Utc>> {
    if time_unix_nano == 0 {
        return None;
    }
    let ts = DateTime::from_timestamp_nanos(i64::try_from(time_unix_nano).ok()?);
    aimon::time::in_range(ts).then_some(ts)
}

/// What one resource contributes to every point under it.
struct ResourceContext<'r> {
    /// Valid tags from its attributes, at most `max_attributes`, sorted by key.
    tags: Vec<(String, String)>,
    agent: Option<Cow<'r, str>>,
    service: Option<Cow<'r, str>>,
}

/// What one OTLP metric shares among its points.
struct Family<'m> {
    name: &'m str,
    metric_type: MetricType,
    unit: Option<String>,
    description: Option<String>,
    metadata: Metadata,
    delta: bool,
    /// The tag keys the mapping sets for this kind; attributes of these names are dropped.
    reserved: &'static [&'static str],
    /// The longest series name of the family, in bytes.
    longest_series: usize,
}

/// One sample of a point, before tags: which series, the value, and an `le` or `quantile` tag.
struct Sample {
    suffix: &'static str,
    value: f64,
    label: Option<(&'static str, String)>,
}

impl Sample {
    fn new(suffix: &'static str, value: f64) -> Sample {
        Sample {
            suffix,
            value,
            label: None,
        }
    }

    fn labelled(suffix: &'static str, value: f64, key: &'static str, text: String) -> Sample {
        Sample {
            suffix,
            value,
            label: Some((key, text)),
        }
    }
}

const HISTOGRAM_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count", "_min", "_max"];
const SUMMARY_SUFFIXES: &[&str] = &["", "_sum", "_count"];
const PLAIN_SUFFIXES: &[&str] = &[""];

struct Mapper {
    limits: Limits,
    mapped: Mapped,
    /// Position in `mapped.metrics` of each series id.
    index: HashMap<String, usize>,
}

impl Mapper {
    fn note(&mut self, message: impl FnOnce() -> String) {
        if self.mapped.messages.len() < MAX_MESSAGES {
            let message = message();
            if !self.mapped.messages.contains(&message) {
                self.mapped.messages.push(message);
            }
        }
    }

    fn reject(&mut self, points: u64, message: impl FnOnce() -> String) {
        self.mapped.rejected_points += points;
        self.note(message);
    }

    fn count_drops(&mut self, set: &mut TagSet<'_>, whose: &str) {
        self.mapped.dropped_attributes += set.dropped;
        if let Some((key, why)) = set.first_drop.take() {
            self.note(|| format!("{whose} attribute {} dropped: {why}", quoted(&key)));
        }
    }

    fn resource_metrics(&mut self, resource_metrics: &ResourceMetrics) {
        let no_attributes: &[KeyValue] = &[];
        let attributes = resource_metrics
            .resource
            .as_ref()
            .map_or(no_attributes, |r| &r.attributes[..]);
        // Once per resource: its own invalid attributes are counted once, not once per point.
        let mut set = TagSet::new(self.limits, &[], MAX_TAGS_BYTES);
        for kv in attributes {
            set.attribute(&kv.key, kv.value.as_ref(), 0);
        }
        self.count_drops(&mut set, "resource");
        let context = ResourceContext {
            tags: set.tags.into_iter().collect(),
            agent: find_text(attributes, GEN_AI_AGENT_NAME),
            service: find_text(attributes, SERVICE_NAME),
        };
        for scope_metrics in &resource_metrics.scope_metrics {
            self.scope_metrics(scope_metrics, &context);
        }
    }

    fn scope_metrics(&mut self, scope_metrics: &ScopeMetrics, resource: &ResourceContext<'_>) {
        let name = scope_metrics.scope.as_ref().map_or("", |s| s.name.as_str());
        let scope_name = if name.is_empty() {
            None
        } else if name.len() > self.limits.max_value_bytes {
            self.mapped.dropped_attributes += 1;
            self.note(|| format!("scope name {} dropped: value too long", quoted(name)));
            None
        } else if has_control(name) {
            self.mapped.dropped_attributes += 1;
            self.note(|| {
                format!(
                    "scope name {} dropped: control character in value",
                    quoted(name)
                )
            });
            None
        } else {
            Some(name)
        };
        for metric in &scope_metrics.metrics {
            self.metric(metric, scope_name, resource);
        }
    }

    fn metric(
        &mut self,
        metric: &OtlpMetric,
        scope_name: Option<&str>,
        resource: &ResourceContext<'_>,
    ) {
        use metric::Data;
        let Some(data) = &metric.data else {
            return;
        };
        let points = match data {
            Data::Gauge(g) => g.data_points.len(),
            Data::Sum(s) => s.data_points.len(),
            Data::Histogram(h) => h.data_points.len(),
            Data::ExponentialHistogram(h) => h.data_points.len(),
            Data::Summary(s) => s.data_points.len(),
        } as u64;
        let (otlp_type, metric_type, temporality, suffixes, reserved): (
            _,
            _,
            _,
            _,
            &'static [&'static str],
        ) = match data {
            Data::Gauge(_) => (
                "gauge",
                MetricType::Gauge,
                None,
                PLAIN_SUFFIXES,
                &[AGENT_TAG, TEMPORALITY_TAG],
            ),
            Data::Sum(s) => (
                "sum",
                if s.is_monotonic {
                    MetricType::Counter
                } else {
                    MetricType::Gauge
                },
                Some(s.aggregation_temporality),
                PLAIN_SUFFIXES,
                &[AGENT_TAG, TEMPORALITY_TAG],
            ),
            Data::Histogram(h) => (
                "histogram",
                MetricType::Histogram,
                Some(h.aggregation_temporality),
                HISTOGRAM_SUFFIXES,
                &[AGENT_TAG, TEMPORALITY_TAG, BUCKET_TAG],
            ),
            Data::ExponentialHistogram(h) => (
                "exponential_histogram",
                MetricType::Histogram,
                Some(h.aggregation_temporality),
                HISTOGRAM_SUFFIXES,
                &[AGENT_TAG, TEMPORALITY_TAG, BUCKET_TAG],
            ),
            Data::Summary(_) => (
                "summary",
                MetricType::Summary,
                None,
                SUMMARY_SUFFIXES,
                &[AGENT_TAG, TEMPORALITY_TAG, QUANTILE_TAG],
            ),
        };
        let name = metric.name.as_str();
        for suffix in suffixes {
            let series = format!("{name}{suffix}");
            if let Err(e) = aimon::validate::name("metric name", &series) {
                return self.reject(points, || format!("metric {}: {e}", quoted(name)));
            }
        }
        let mut metadata = Metadata::new();
        metadata.insert("otlp_type".into(), otlp_type.into());
        let mut delta = false;
        if let Some(temporality) = temporality {
            let text = match temporality {
                1 => "delta",
                2 => "cumulative",
                other => {
                    return self.reject(points, || {
                        format!(
                            "metric {}: aggregation temporality {other} is neither delta (1) nor cumulative (2)",
                            quoted(name)
                        )
                    });
                }
            };
            delta = temporality == 1;
            metadata.insert("temporality".into(), text.into());
        }
        let unit = match metric.unit.as_str() {
            "" => None,
            unit => match aimon::validate::name("unit", unit) {
                Ok(()) => Some(unit.to_owned()),
                Err(e) => {
                    self.note(|| format!("metric {}: {e}; unit ignored", quoted(name)));
                    None
                }
            },
        };
        let description = match metric.description.as_str() {
            "" => None,
            text => match aimon::validate::text("description", text) {
                Ok(()) => Some(text.to_owned()),
                Err(e) => {
                    self.note(|| format!("metric {}: {e}; description ignored", quoted(name)));
                    None
                }
            },
        };
        let family = Family {
            name,
            metric_type,
            unit,
            description,
            metadata,
            delta,
            reserved,
            longest_series: name.len() + suffixes.iter().map(|s| s.len()).max().unwrap_or(0),
        };
        let context = PointContext {
            family: &family,
            scope_name,
            resource,
        };
        match data {
            Data::Gauge(Gauge { data_points }) | Data::Sum(Sum { data_points, .. }) => {
                for p in data_points {
                    self.point(&context, &p.attributes, p.flags, p.time_unix_nano, || {
                        number_samples(p)
                    });
                }
            }
            Data::Histogram(Histogram { data_points, .. }) => {
                for p in data_points {
                    self.point(&context, &p.attributes, p.flags, p.time_unix_nano, || {
                        histogram_samples(p)
                    });
                }
            }
            Data::ExponentialHistogram(ExponentialHistogram { data_points, .. }) => {
                for p in data_points {
                    self.point(&context, &p.attributes, p.flags, p.time_unix_nano, || {
                        exponential_samples(p)
                    });
                }
            }
            Data::Summary(Summary { data_points }) => {
                for p in data_points {
                    self.point(&context, &p.attributes, p.flags, p.time_unix_nano, || {
                        summary_samples(p)
                    });
                }
            }
        }
    }

    /// Maps one data point: checks it whole, then stores all its samples or none.
    fn point(
        &mut self,
        context: &PointContext<'_, '_>,
        attributes: &[KeyValue],
        flags: u32,
        time_unix_nano: u64,
        samples: impl FnOnce() -> std::result::Result<Vec<Sample>, String>,
    ) {
        let family = context.family;
        let name = family.name;
        if flags & NO_RECORDED_VALUE != 0 {
            self.mapped.skipped_points += 1;
            return;
        }
        let Some(ts) = timestamp(time_unix_nano) else {
            return self.reject(1, || {
                if time_unix_nano == 0 {
                    format!("metric {}: a data point has no timeUnixNano", quoted(name))
                } else {
                    format!(
                        "metric {}: timeUnixNano {time_unix_nano} is outside 1970-01-01..2262-01-01",
                        quoted(name)
                    )
                }
            });
        };
        let samples = match samples() {
            Ok(samples) => samples,
            Err(problem) => {
                return self.reject(1, || format!("metric {}: {problem}", quoted(name)));
            }
        };
        let agent = find_text(attributes, GEN_AI_AGENT_NAME)
            .or_else(|| context.resource.agent.clone())
            .or_else(|| context.resource.service.clone())
            .unwrap_or(Cow::Borrowed(UNKNOWN_SERVICE));
        let max_value_bytes = self.limits.max_value_bytes;
        if agent.len() > max_value_bytes || has_control(&agent) {
            return self.reject(1, || {
                format!(
                    "agent name {} is not a valid tag value (at most {max_value_bytes} bytes, no control characters)",
                    quoted(&agent),
                )
            });
        }
        if agent.len() + 1 + family.longest_series > MAX_NAME_BYTES {
            return self.reject(1, || {
                format!(
                    "series id {} is longer than {MAX_NAME_BYTES} bytes",
                    quoted(&format!("{agent}/{name}"))
                )
            });
        }
        let tags = self.tags(context, attributes, &agent);
        for sample in samples {
            let series = format!("{name}{}", sample.suffix);
            let mut sample_tags = tags.clone();
            if let Some((key, text)) = sample.label {
                sample_tags.insert(key.to_owned(), text);
            }
            let value = MetricValue {
                timestamp: ts,
                value: sample.value,
                tags: sample_tags,
            };
            let id = format!("{agent}/{series}");
            let at = match self.index.get(&id) {
                Some(&at) => at,
                None => {
                    let mut metric = Metric::new(id.clone(), series, family.metric_type);
                    metric.unit.clone_from(&family.unit);
                    metric.description.clone_from(&family.description);
                    metric.metadata = family.metadata.clone();
                    self.mapped.metrics.push(metric);
                    self.index.insert(id, self.mapped.metrics.len() - 1);
                    self.mapped.metrics.len() - 1
                }
            };
            self.mapped.metrics[at].values.push(value);
        }
        self.mapped.accepted_points += 1;
    }

    /// A point's tags: its attributes, then the scope name, then the resource's attributes
    /// (the first of a key wins), then `agent` and `otel.temporality`.
    fn tags(
        &mut self,
        context: &PointContext<'_, '_>,
        attributes: &[KeyValue],
        agent: &str,
    ) -> Tags {
        let max_bytes = MAX_TAGS_BYTES - (AGENT_TAG.len() + agent.len()) - GENERATED_TAG_BYTES;
        let mut set = TagSet::new(self.limits, context.family.reserved, max_bytes);
        for kv in attributes {
            set.attribute(&kv.key, kv.value.as_ref(), 0);
        }
        if let Some(scope_name) = context.scope_name {
            set.tag(SCOPE_TAG, Cow::Borrowed(scope_name));
        }
        for (key, value) in &context.resource.tags {
            set.tag(key, Cow::Borrowed(value));
        }
        self.count_drops(&mut set, "data point");
        let mut tags = set.tags;
        tags.insert(AGENT_TAG.to_owned(), agent.to_owned());
        if context.family.delta {
            tags.insert(TEMPORALITY_TAG.to_owned(), "delta".to_owned());
        }
        tags
    }
}

struct PointContext<'f, 'r> {
    family: &'f Family<'f>,
    scope_name: Option<&'f str>,
    resource: &'f ResourceContext<'r>,
}

fn finite(what: &str, value: f64) -> std::result::Result<f64, String> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("{what} {} is not finite", format_f64(value)))
    }
}

/// Ints become doubles: exact up to 2^53 in magnitude, rounded beyond.
fn number_samples(point: &NumberDataPoint) -> std::result::Result<Vec<Sample>, String> {
    let value = match point.value {
        Some(number_data_point::Value::AsDouble(d)) => finite("value", d)?,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => return Err("a data point has no value".to_owned()),
    };
    Ok(vec![Sample::new("", value)])
}

/// `_sum`, `_min` and `_max` when present, and `_count`.
fn stat_samples(
    samples: &mut Vec<Sample>,
    count: u64,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
) -> std::result::Result<(), String> {
    if let Some(sum) = sum {
        samples.push(Sample::new("_sum", finite("sum", sum)?));
    }
    samples.push(Sample::new("_count", count as f64));
    if let Some(min) = min {
        samples.push(Sample::new("_min", finite("min", min)?));
    }
    if let Some(max) = max {
        samples.push(Sample::new("_max", finite("max", max)?));
    }
    Ok(())
}

/// Appends cumulative `_bucket` samples, checking that the bounds strictly increase.
struct BucketSeries {
    samples: Vec<Sample>,
    cumulative: u64,
    last_bound: f64,
}

impl BucketSeries {
    fn new(capacity: usize) -> BucketSeries {
        BucketSeries {
            samples: Vec::with_capacity(capacity),
            cumulative: 0,
            last_bound: f64::NEG_INFINITY,
        }
    }

    fn push(&mut self, bound: f64, count: u64) -> std::result::Result<(), String> {
        if !bound.is_finite() {
            return Err(format!("bucket bound {} is not finite", format_f64(bound)));
        }
        if bound <= self.last_bound {
            return Err(format!(
                "bucket bounds must increase strictly, got {} after {}",
                format_f64(bound),
                format_f64(self.last_bound)
            ));
        }
        self.last_bound = bound;
        self.cumulative = self.cumulative.saturating_add(count);
        self.samples.push(Sample::labelled(
            "_bucket",
            self.cumulative as f64,
            BUCKET_TAG,
            format_f64(bound),
        ));
        Ok(())
    }

    fn finish(mut self, overflow: u64) -> Vec<Sample> {
        self.cumulative = self.cumulative.saturating_add(overflow);
        self.samples.push(Sample::labelled(
            "_bucket",
            self.cumulative as f64,
            BUCKET_TAG,
            "+Inf".to_owned(),
        ));
        self.samples
    }
}

fn histogram_samples(point: &HistogramDataPoint) -> std::result::Result<Vec<Sample>, String> {
    let counts = &point.bucket_counts;
    let bounds = &point.explicit_bounds;
    if counts.len() > MAX_EXPLICIT_BUCKETS || bounds.len() >= MAX_EXPLICIT_BUCKETS {
        return Err(format!(
            "a histogram point has {} buckets; the limit is {MAX_EXPLICIT_BUCKETS}",
            counts.len().max(bounds.len() + 1)
        ));
    }
    let mut samples = if counts.is_empty() {
        if !bounds.is_empty() {
            return Err(format!(
                "a histogram point has {} explicit bounds but no bucket counts",
                bounds.len()
            ));
        }
        // No buckets: the one Prometheus-style bucket that always exists.
        BucketSeries::new(1).finish(point.count)
    } else {
        if counts.len() != bounds.len() + 1 {
            return Err(format!(
                "a histogram point has {} bucket counts for {} explicit bounds; expected {}",
                counts.len(),
                bounds.len(),
                bounds.len() + 1
            ));
        }
        let mut buckets = BucketSeries::new(counts.len() + 4);
        for (bound, count) in bounds.iter().zip(counts) {
            buckets.push(*bound, *count)?;
        }
        buckets.finish(counts[bounds.len()])
    };
    stat_samples(&mut samples, point.count, point.sum, point.min, point.max)?;
    Ok(samples)
}

/// The lower bound of exponential bucket `index` at `scale`: base^index with
/// base = 2^(2^-scale), computed as 2^(index · 2^-scale) (exact for scale ≤ 0).
fn exponential_bound(index: i64, scale: i32) -> f64 {
    (index as f64 * (-f64::from(scale)).exp2()).exp2()
}

fn exponential_samples(
    point: &ExponentialHistogramDataPoint,
) -> std::result::Result<Vec<Sample>, String> {
    let scale = point.scale;
    if !SCALES.contains(&scale) {
        return Err(format!(
            "exponential histogram scale {scale} is outside {}..={}",
            SCALES.start(),
            SCALES.end()
        ));
    }
    let empty = Buckets::default();
    let positive = point.positive.as_ref().unwrap_or(&empty);
    let negative = point.negative.as_ref().unwrap_or(&empty);
    let total = positive.bucket_counts.len() + negative.bucket_counts.len();
    if total > MAX_EXPONENTIAL_BUCKETS {
        return Err(format!(
            "an exponential histogram point has {total} buckets; the limit is {MAX_EXPONENTIAL_BUCKETS}"
        ));
    }
    let zero_threshold = finite("zero threshold", point.zero_threshold)?;
    if zero_threshold < 0.0 {
        return Err(format!(
            "zero threshold {} is negative",
            format_f64(zero_threshold)
        ));
    }
    let mut buckets = BucketSeries::new(total + 6);
    // Negative buckets, most negative first: bucket j holds values in [-base^(j+1), -base^j),
    // so at le = -base^j the cumulative count is that of buckets j and above.
    for (k, count) in negative.bucket_counts.iter().enumerate().rev() {
        let index = i64::from(negative.offset) + k as i64;
        buckets.push(-exponential_bound(index, scale), *count)?;
    }
    buckets.push(zero_threshold, point.zero_count)?;
    // Positive bucket i holds values in (base^i, base^(i+1)].
    for (k, count) in positive.bucket_counts.iter().enumerate() {
        let index = i64::from(positive.offset) + k as i64;
        buckets.push(exponential_bound(index + 1, scale), *count)?;
    }
    let mut samples = buckets.finish(0);
    stat_samples(&mut samples, point.count, point.sum, point.min, point.max)?;
    Ok(samples)
}

fn summary_samples(point: &SummaryDataPoint) -> std::result::Result<Vec<Sample>, String> {
    let quantiles = &point.quantile_values;
    if quantiles.len() > MAX_EXPLICIT_BUCKETS {
        return Err(format!(
            "a summary point has {} quantiles; the limit is {MAX_EXPLICIT_BUCKETS}",
            quantiles.len()
        ));
    }
    let mut samples = Vec::with_capacity(quantiles.len() + 2);
    let mut last = f64::NEG_INFINITY;
    for q in quantiles {
        if !(0.0..=1.0).contains(&q.quantile) || q.quantile <= last {
            return Err(format!(
                "quantiles must increase strictly within 0..=1, got {}",
                format_f64(q.quantile)
            ));
        }
        last = q.quantile;
        samples.push(Sample::labelled(
            "",
            finite("quantile value", q.value)?,
            QUANTILE_TAG,
            format_f64(q.quantile),
        ));
    }
    samples.push(Sample::new("_sum", finite("sum", point.sum)?));
    samples.push(Sample::new("_count", point.count as f64));
    Ok(samples)
}

// ---------------------------------------------------------------------------------------------
// OTLP/JSON
// ---------------------------------------------------------------------------------------------

/// OTLP/JSON decoding into the prost types, by the OTLP/JSON rules and proto3's JSON mapping.
mod json {
    use super::*;

    type Object = serde_json::Map<String, Json>;
    type Decoded<T> = Result<T>;

    /// Where in the document a value is, for errors (`resourceMetrics[0].scopeMetrics[1]…`);
    /// built on the stack, formatted only when something is wrong.
    #[derive(Clone, Copy)]
    pub(super) enum Path<'a> {
        Root,
        Field(&'a Path<'a>, &'a str),
        Index(&'a Path<'a>, usize),
    }

    impl fmt::Display for Path<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Path::Root => f.write_str("the document"),
                Path::Field(Path::Root, key) => f.write_str(key),
                Path::Field(parent, key) => write!(f, "{parent}.{key}"),
                Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
            }
        }
    }

    fn invalid(path: Path<'_>, problem: impl fmt::Display) -> Error {
        Error::invalid_input("OTLP/JSON body", format_args!("{path}: {problem}"))
    }

    fn kind(value: &Json) -> &'static str {
        match value {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }

    fn object<'v>(value: &'v Json, path: Path<'_>) -> Decoded<&'v Object> {
        value.as_object().ok_or_else(|| {
            invalid(
                path,
                format_args!("expected an object, got {}", kind(value)),
            )
        })
    }

    /// A field's value; `null` counts as absent, as in proto3's JSON mapping.
    fn get<'v>(obj: &'v Object, key: &str) -> Option<&'v Json> {
        obj.get(key).filter(|v| !v.is_null())
    }

    fn message<T>(
        obj: &Object,
        key: &str,
        path: Path<'_>,
        decode: impl FnOnce(&Json, Path<'_>) -> Decoded<T>,
    ) -> Decoded<Option<T>> {
        get(obj, key)
            .map(|v| decode(v, Path::Field(&path, key)))
            .transpose()
    }

    fn repeated<T>(
        obj: &Object,
        key: &str,
        path: Path<'_>,
        mut decode: impl FnMut(&Json, Path<'_>) -> Decoded<T>,
    ) -> Decoded<Vec<T>> {
        let Some(value) = get(obj, key) else {
            return Ok(Vec::new());
        };
        let field = Path::Field(&path, key);
        let items = value.as_array().ok_or_else(|| {
            invalid(
                field,
                format_args!("expected an array, got {}", kind(value)),
            )
        })?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| decode(item, Path::Index(&field, i)))
            .collect()
    }

    fn scalar<T: Default>(
        obj: &Object,
        key: &str,
        path: Path<'_>,
        decode: impl FnOnce(&Json, Path<'_>) -> Decoded<T>,
    ) -> Decoded<T> {
        Ok(message(obj, key, path, decode)?.unwrap_or_default())
    }

    fn string_value(value: &Json, path: Path<'_>) -> Decoded<String> {
        match value {
            Json::String(s) => Ok(s.clone()),
            other => Err(invalid(
                path,
                format_args!("expected a string, got {}", kind(other)),
            )),
        }
    }

    fn bool_value(value: &Json, path: Path<'_>) -> Decoded<bool> {
        match value {
            Json::Bool(b) => Ok(*b),
            other => Err(invalid(
                path,
                format_args!("expected true or false, got {}", kind(other)),
            )),
        }
    }

    /// An integer given as a JSON number or as decimal text, as proto3's JSON mapping allows
    /// (and requires for 64-bit integers).
    fn integer<T>(value: &Json, path: Path<'_>, what: &str) -> Decoded<T>
    where
        T: TryFrom<i128> + std::str::FromStr,
    {
        let out_of_range = || invalid(path, format_args!("{value} is not a valid {what}"));
        match value {
            Json::Number(n) => {
                let wide = if let Some(i) = n.as_i64() {
                    i128::from(i)
                } else if let Some(u) = n.as_u64() {
                    i128::from(u)
                } else {
                    // 1e3 or 5.0: accepted when integral and in range.
                    let f = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 2e38);
                    f.ok_or_else(out_of_range)? as i128
                };
                T::try_from(wide).map_err(|_| out_of_range())
            }
            Json::String(s) => s.trim().parse::<T>().map_err(|_| out_of_range()),
            other => Err(invalid(
                path,
                format_args!("expected {what} as a number or string, got {}", kind(other)),
            )),
        }
    }

    fn u64_value(value: &Json, path: Path<'_>) -> Decoded<u64> {
        integer(value, path, "unsigned 64-bit integer")
    }

    fn i64_value(value: &Json, path: Path<'_>) -> Decoded<i64> {
        integer(value, path, "64-bit integer")
    }

    fn u32_value(value: &Json, path: Path<'_>) -> Decoded<u32> {
        integer(value, path, "unsigned 32-bit integer")
    }

    fn i32_value(value: &Json, path: Path<'_>) -> Decoded<i32> {
        integer(value, path, "32-bit integer")
    }

    /// A double as a number, or as text: a decimal number, `NaN`, `Infinity`, `-Infinity`.
    fn f64_value(value: &Json, path: Path<'_>) -> Decoded<f64> {
        match value {
            Json::Number(n) => n
                .as_f64()
                .ok_or_else(|| invalid(path, format_args!("{n} is not a double"))),
            Json::String(s) => match s.as_str() {
                "NaN" => Ok(f64::NAN),
                "Infinity" => Ok(f64::INFINITY),
                "-Infinity" => Ok(f64::NEG_INFINITY),
                text => text
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| invalid(path, format_args!("{text:?} is not a double"))),
            },
            other => Err(invalid(
                path,
                format_args!("expected a double, got {}", kind(other)),
            )),
        }
    }

    /// An enum as its number (what OTLP/JSON requires) or its name (what proto3 allows).
    fn enum_value(value: &Json, path: Path<'_>, names: &[&str]) -> Decoded<i32> {
        if let Json::String(s) = value
            && let Some(at) = names.iter().position(|n| n == s)
        {
            return Ok(at as i32);
        }
        i32_value(value, path)
    }

    fn temporality(value: &Json, path: Path<'_>) -> Decoded<i32> {
        enum_value(
            value,
            path,
            &[
                "AGGREGATION_TEMPORALITY_UNSPECIFIED",
                "AGGREGATION_TEMPORALITY_DELTA",
                "AGGREGATION_TEMPORALITY_CUMULATIVE",
            ],
        )
    }

    /// Bytes of a trace or span id: hex as OTLP/JSON requires, or base64 as some exporters
    /// send (proto3's default for bytes).
    fn id_value(value: &Json, path: Path<'_>) -> Decoded<Vec<u8>> {
        let text = string_value(value, path)?;
        hex_decode(&text)
            .or_else(|| base64_decode(&text))
            .ok_or_else(|| invalid(path, format_args!("{text:?} is neither hex nor base64")))
    }

    /// The one field of a oneof that is set, if any; two set is an error.
    fn one_of<'v>(
        obj: &'v Object,
        keys: &[&'static str],
        path: Path<'_>,
    ) -> Decoded<Option<(&'static str, &'v Json)>> {
        let mut found: Option<(&'static str, &'v Json)> = None;
        for key in keys {
            if let Some(value) = get(obj, key) {
                if let Some((first, _)) = found {
                    return Err(invalid(
                        path,
                        format_args!("sets both {first} and {key}, which exclude each other"),
                    ));
                }
                found = Some((key, value));
            }
        }
        Ok(found)
    }

    pub(super) fn request(value: &Json) -> Decoded<ExportMetricsServiceRequest> {
        let path = Path::Root;
        let obj = object(value, path)?;
        Ok(ExportMetricsServiceRequest {
            resource_metrics: repeated(obj, "resourceMetrics", path, resource_metrics)?,
        })
    }

    fn resource_metrics(value: &Json, path: Path<'_>) -> Decoded<ResourceMetrics> {
        let obj = object(value, path)?;
        Ok(ResourceMetrics {
            resource: message(obj, "resource", path, resource)?,
            scope_metrics: repeated(obj, "scopeMetrics", path, scope_metrics)?,
            schema_url: scalar(obj, "schemaUrl", path, string_value)?,
        })
    }

    fn resource(value: &Json, path: Path<'_>) -> Decoded<Resource> {
        let obj = object(value, path)?;
        Ok(Resource {
            attributes: repeated(obj, "attributes", path, key_value)?,
            dropped_attributes_count: scalar(obj, "droppedAttributesCount", path, u32_value)?,
            entity_refs: repeated(obj, "entityRefs", path, entity_ref)?,
        })
    }

    fn entity_ref(value: &Json, path: Path<'_>) -> Decoded<EntityRef> {
        let obj = object(value, path)?;
        Ok(EntityRef {
            schema_url: scalar(obj, "schemaUrl", path, string_value)?,
            r#type: scalar(obj, "type", path, string_value)?,
            id_keys: repeated(obj, "idKeys", path, string_value)?,
            description_keys: repeated(obj, "descriptionKeys", path, string_value)?,
        })
    }

    fn scope_metrics(value: &Json, path: Path<'_>) -> Decoded<ScopeMetrics> {
        let obj = object(value, path)?;
        Ok(ScopeMetrics {
            scope: message(obj, "scope", path, scope)?,
            metrics: repeated(obj, "metrics", path, metric)?,
            schema_url: scalar(obj, "schemaUrl", path, string_value)?,
        })
    }

    fn scope(value: &Json, path: Path<'_>) -> Decoded<InstrumentationScope> {
        let obj = object(value, path)?;
        Ok(InstrumentationScope {
            name: scalar(obj, "name", path, string_value)?,
            version: scalar(obj, "version", path, string_value)?,
            attributes: repeated(obj, "attributes", path, key_value)?,
            dropped_attributes_count: scalar(obj, "droppedAttributesCount", path, u32_value)?,
        })
    }

    fn metric(value: &Json, path: Path<'_>) -> Decoded<OtlpMetric> {
        use metric::Data;
        let obj = object(value, path)?;
        let kinds = [
            "gauge",
            "sum",
            "histogram",
            "exponentialHistogram",
            "summary",
        ];
        let data = match one_of(obj, &kinds, path)? {
            None => None,
            Some((key, value)) => {
                let path = Path::Field(&path, key);
                let obj = object(value, path)?;
                let temporality = || scalar(obj, "aggregationTemporality", path, temporality);
                Some(match key {
                    "gauge" => Data::Gauge(Gauge {
                        data_points: repeated(obj, "dataPoints", path, number_point)?,
                    }),
                    "sum" => Data::Sum(Sum {
                        data_points: repeated(obj, "dataPoints", path, number_point)?,
                        aggregation_temporality: temporality()?,
                        is_monotonic: scalar(obj, "isMonotonic", path, bool_value)?,
                    }),
                    "histogram" => Data::Histogram(Histogram {
                        data_points: repeated(obj, "dataPoints", path, histogram_point)?,
                        aggregation_temporality: temporality()?,
                    }),
                    "exponentialHistogram" => Data::ExponentialHistogram(ExponentialHistogram {
                        data_points: repeated(obj, "dataPoints", path, exponential_point)?,
                        aggregation_temporality: temporality()?,
                    }),
                    _ => Data::Summary(Summary {
                        data_points: repeated(obj, "dataPoints", path, summary_point)?,
                    }),
                })
            }
        };
        Ok(OtlpMetric {
            name: scalar(obj, "name", path, string_value)?,
            description: scalar(obj, "description", path, string_value)?,
            unit: scalar(obj, "unit", path, string_value)?,
            metadata: repeated(obj, "metadata", path, key_value)?,
            data,
        })
    }

    fn number_point(value: &Json, path: Path<'_>) -> Decoded<NumberDataPoint> {
        let obj = object(value, path)?;
        let value = match one_of(obj, &["asDouble", "asInt"], path)? {
            None => None,
            Some(("asDouble", v)) => Some(number_data_point::Value::AsDouble(f64_value(
                v,
                Path::Field(&path, "asDouble"),
            )?)),
            Some((_, v)) => Some(number_data_point::Value::AsInt(i64_value(
                v,
                Path::Field(&path, "asInt"),
            )?)),
        };
        Ok(NumberDataPoint {
            attributes: repeated(obj, "attributes", path, key_value)?,
            start_time_unix_nano: scalar(obj, "startTimeUnixNano", path, u64_value)?,
            time_unix_nano: scalar(obj, "timeUnixNano", path, u64_value)?,
            exemplars: repeated(obj, "exemplars", path, exemplar)?,
            flags: scalar(obj, "flags", path, u32_value)?,
            value,
        })
    }

    fn histogram_point(value: &Json, path: Path<'_>) -> Decoded<HistogramDataPoint> {
        let obj = object(value, path)?;
        Ok(HistogramDataPoint {
            attributes: repeated(obj, "attributes", path, key_value)?,
            start_time_unix_nano: scalar(obj, "startTimeUnixNano", path, u64_value)?,
            time_unix_nano: scalar(obj, "timeUnixNano", path, u64_value)?,
            count: scalar(obj, "count", path, u64_value)?,
            sum: message(obj, "sum", path, f64_value)?,
            bucket_counts: repeated(obj, "bucketCounts", path, u64_value)?,
            explicit_bounds: repeated(obj, "explicitBounds", path, f64_value)?,
            exemplars: repeated(obj, "exemplars", path, exemplar)?,
            flags: scalar(obj, "flags", path, u32_value)?,
            min: message(obj, "min", path, f64_value)?,
            max: message(obj, "max", path, f64_value)?,
        })
    }

    fn exponential_point(value: &Json, path: Path<'_>) -> Decoded<ExponentialHistogramDataPoint> {
        let obj = object(value, path)?;
        Ok(ExponentialHistogramDataPoint {
            attributes: repeated(obj, "attributes", path, key_value)?,
            start_time_unix_nano: scalar(obj, "startTimeUnixNano", path, u64_value)?,
            time_unix_nano: scalar(obj, "timeUnixNano", path, u64_value)?,
            count: scalar(obj, "count", path, u64_value)?,
            sum: message(obj, "sum", path, f64_value)?,
            scale: scalar(obj, "scale", path, i32_value)?,
            zero_count: scalar(obj, "zeroCount", path, u64_value)?,
            positive: message(obj, "positive", path, buckets)?,
            negative: message(obj, "negative", path, buckets)?,
            flags: scalar(obj, "flags", path, u32_value)?,
            exemplars: repeated(obj, "exemplars", path, exemplar)?,
            min: message(obj, "min", path, f64_value)?,
            max: message(obj, "max", path, f64_value)?,
            zero_threshold: scalar(obj, "zeroThreshold", path, f64_value)?,
        })
    }

    fn buckets(value: &Json, path: Path<'_>) -> Decoded<Buckets> {
        let obj = object(value, path)?;
        Ok(Buckets {
            offset: scalar(obj, "offset", path, i32_value)?,
            bucket_counts: repeated(obj, "bucketCounts", path, u64_value)?,
        })
    }

    fn summary_point(value: &Json, path: Path<'_>) -> Decoded<SummaryDataPoint> {
        let obj = object(value, path)?;
        Ok(SummaryDataPoint {
            attributes: repeated(obj, "attributes", path, key_value)?,
            start_time_unix_nano: scalar(obj, "startTimeUnixNano", path, u64_value)?,
            time_unix_nano: scalar(obj, "timeUnixNano", path, u64_value)?,
            count: scalar(obj, "count", path, u64_value)?,
            sum: scalar(obj, "sum", path, f64_value)?,
            quantile_values: repeated(obj, "quantileValues", path, quantile)?,
            flags: scalar(obj, "flags", path, u32_value)?,
        })
    }

    fn quantile(value: &Json, path: Path<'_>) -> Decoded<ValueAtQuantile> {
        let obj = object(value, path)?;
        Ok(ValueAtQuantile {
            quantile: scalar(obj, "quantile", path, f64_value)?,
            value: scalar(obj, "value", path, f64_value)?,
        })
    }

    fn exemplar(value: &Json, path: Path<'_>) -> Decoded<Exemplar> {
        let obj = object(value, path)?;
        let value = match one_of(obj, &["asDouble", "asInt"], path)? {
            None => None,
            Some(("asDouble", v)) => Some(exemplar::Value::AsDouble(f64_value(
                v,
                Path::Field(&path, "asDouble"),
            )?)),
            Some((_, v)) => Some(exemplar::Value::AsInt(i64_value(
                v,
                Path::Field(&path, "asInt"),
            )?)),
        };
        Ok(Exemplar {
            filtered_attributes: repeated(obj, "filteredAttributes", path, key_value)?,
            time_unix_nano: scalar(obj, "timeUnixNano", path, u64_value)?,
            span_id: scalar(obj, "spanId", path, id_value)?,
            trace_id: scalar(obj, "traceId", path, id_value)?,
            value,
        })
    }

    fn key_value(value: &Json, path: Path<'_>) -> Decoded<KeyValue> {
        let obj = object(value, path)?;
        Ok(KeyValue {
            key: scalar(obj, "key", path, string_value)?,
            value: message(obj, "value", path, any_value)?,
        })
    }

    fn any_value(value: &Json, path: Path<'_>) -> Decoded<AnyValue> {
        use any_value::Value as V;
        let obj = object(value, path)?;
        let keys = [
            "stringValue",
            "boolValue",
            "intValue",
            "doubleValue",
            "arrayValue",
            "kvlistValue",
            "bytesValue",
        ];
        let Some((key, v)) = one_of(obj, &keys, path)? else {
            return Ok(AnyValue { value: None });
        };
        let path = Path::Field(&path, key);
        let value = match key {
            "stringValue" => V::StringValue(string_value(v, path)?),
            "boolValue" => V::BoolValue(bool_value(v, path)?),
            "intValue" => V::IntValue(i64_value(v, path)?),
            "doubleValue" => V::DoubleValue(f64_value(v, path)?),
            "arrayValue" => V::ArrayValue(ArrayValue {
                values: repeated(object(v, path)?, "values", path, any_value)?,
            }),
            "kvlistValue" => V::KvlistValue(KeyValueList {
                values: repeated(object(v, path)?, "values", path, key_value)?,
            }),
            _ => {
                let text = string_value(v, path)?;
                V::BytesValue(
                    base64_decode(&text)
                        .ok_or_else(|| invalid(path, format_args!("{text:?} is not base64")))?,
                )
            }
        };
        Ok(AnyValue { value: Some(value) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aimon::ErrorKind;
    use any_value::Value as V;
    use opentelemetry_proto::tonic::metrics::v1::AggregationTemporality;

    /// 2023-11-14T22:13:20Z.
    const T0: u64 = 1_700_000_000_000_000_000;
    const CUMULATIVE: AggregationTemporality = AggregationTemporality::Cumulative;
    const DELTA: AggregationTemporality = AggregationTemporality::Delta;

    fn kv(key: &str, value: V) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
        }
    }

    fn text(key: &str, value: &str) -> KeyValue {
        kv(key, V::StringValue(value.into()))
    }

    fn resource_metrics(
        resource: Option<Vec<KeyValue>>,
        scope: &str,
        metrics: Vec<OtlpMetric>,
    ) -> ResourceMetrics {
        ResourceMetrics {
            resource: resource.map(|attributes| Resource {
                attributes,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: scope.into(),
                    ..Default::default()
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }
    }

    /// One resource with `service.name = support-bot` and no scope name.
    fn request(metrics: Vec<OtlpMetric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![resource_metrics(
                Some(vec![text("service.name", "support-bot")]),
                "",
                metrics,
            )],
        }
    }

    fn gauge(name: &str, points: Vec<NumberDataPoint>) -> OtlpMetric {
        OtlpMetric {
            name: name.into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: points,
            })),
            ..Default::default()
        }
    }

    fn sum(
        name: &str,
        monotonic: bool,
        temporality: AggregationTemporality,
        points: Vec<NumberDataPoint>,
    ) -> OtlpMetric {
        OtlpMetric {
            name: name.into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: points,
                aggregation_temporality: temporality as i32,
                is_monotonic: monotonic,
            })),
            ..Default::default()
        }
    }

    fn histogram(
        name: &str,
        temporality: AggregationTemporality,
        points: Vec<HistogramDataPoint>,
    ) -> OtlpMetric {
        OtlpMetric {
            name: name.into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: points,
                aggregation_temporality: temporality as i32,
            })),
            ..Default::default()
        }
    }

    fn exponential(name: &str, points: Vec<ExponentialHistogramDataPoint>) -> OtlpMetric {
        OtlpMetric {
            name: name.into(),
            data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: points,
                aggregation_temporality: CUMULATIVE as i32,
            })),
            ..Default::default()
        }
    }

    fn summary(name: &str, points: Vec<SummaryDataPoint>) -> OtlpMetric {
        OtlpMetric {
            name: name.into(),
            data: Some(metric::Data::Summary(Summary {
                data_points: points,
            })),
            ..Default::default()
        }
    }

    fn number(value: f64, attributes: Vec<KeyValue>) -> NumberDataPoint {
        NumberDataPoint {
            attributes,
            time_unix_nano: T0,
            value: Some(number_data_point::Value::AsDouble(value)),
            ..Default::default()
        }
    }

    fn int(value: i64) -> NumberDataPoint {
        NumberDataPoint {
            time_unix_nano: T0,
            value: Some(number_data_point::Value::AsInt(value)),
            ..Default::default()
        }
    }

    fn histogram_point(
        bounds: &[f64],
        counts: &[u64],
        sum: Option<f64>,
        attributes: Vec<KeyValue>,
    ) -> HistogramDataPoint {
        HistogramDataPoint {
            attributes,
            time_unix_nano: T0,
            count: counts.iter().sum(),
            sum,
            bucket_counts: counts.to_vec(),
            explicit_bounds: bounds.to_vec(),
            ..Default::default()
        }
    }

    fn exponential_point(
        scale: i32,
        zero_count: u64,
        positive: (i32, &[u64]),
        negative: (i32, &[u64]),
    ) -> ExponentialHistogramDataPoint {
        let buckets = |(offset, counts): (i32, &[u64])| Buckets {
            offset,
            bucket_counts: counts.to_vec(),
        };
        ExponentialHistogramDataPoint {
            time_unix_nano: T0,
            scale,
            zero_count,
            count: zero_count + positive.1.iter().sum::<u64>() + negative.1.iter().sum::<u64>(),
            positive: Some(buckets(positive)),
            negative: Some(buckets(negative)),
            ..Default::default()
        }
    }

    /// Maps with the default limits and checks that aimon accepts everything mapped.
    fn map(request: &ExportMetricsServiceRequest) -> Mapped {
        map_with(request, &AttributeLimits::default())
    }

    fn map_with(request: &ExportMetricsServiceRequest, limits: &AttributeLimits) -> Mapped {
        let mapped = to_metrics(request, limits);
        if let Err(e) = aimon::validate::metrics(&mapped.metrics) {
            panic!("mapped metrics must validate: {e}");
        }
        mapped
    }

    fn ids(mapped: &Mapped) -> Vec<&str> {
        mapped.metrics.iter().map(|m| m.id.as_str()).collect()
    }

    fn series<'a>(mapped: &'a Mapped, id: &str) -> &'a Metric {
        mapped
            .metrics
            .iter()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no series {id:?} among {:?}", ids(mapped)))
    }

    /// `(le, cumulative count)` of each bucket sample, in order.
    fn buckets_of(metric: &Metric) -> Vec<(String, f64)> {
        metric
            .values
            .iter()
            .map(|v| (v.tags[BUCKET_TAG].clone(), v.value))
            .collect()
    }

    fn pairs(expected: &[(&str, f64)]) -> Vec<(String, f64)> {
        expected
            .iter()
            .map(|(le, n)| (le.to_string(), *n))
            .collect()
    }

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    // --- decoding ---------------------------------------------------------------------------

    #[test]
    fn protobuf_bodies_decode_to_the_request() {
        let original = request(vec![gauge("queue.depth", vec![int(42)])]);
        let decoded = decode(&original.encode_to_vec(), Encoding::Protobuf).unwrap();
        assert_eq!(decoded, original);
    }

    #[test]
    fn malformed_protobuf_is_invalid_input() {
        let valid = request(vec![gauge("queue.depth", vec![int(42)])]).encode_to_vec();
        for body in [
            &b"\xff\xff\xff\xff"[..],
            &valid[..valid.len() - 3],
            b"not protobuf at all",
        ] {
            let err = decode(body, Encoding::Protobuf).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains("OTLP protobuf body"), "{err}");
        }
        // Arbitrary bytes never panic, whatever they decode to.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for len in 0..400 {
            let body: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            if let Ok(request) = decode(&body, Encoding::Protobuf) {
                let _ = map(&request);
            }
        }
    }

    /// A body written the way the OTLP/JSON specification shows it: lowerCamelCase names,
    /// 64-bit integers as strings, enums as integers, ids in hex, bytes in base64, and a field
    /// this version does not know.
    #[test]
    fn json_as_the_specification_writes_it_decodes() {
        let body = r#"{
          "resourceMetrics": [{
            "resource": {
              "attributes": [
                {"key": "service.name", "value": {"stringValue": "support-bot"}},
                {"key": "host.cores", "value": {"intValue": "8"}},
                {"key": "debug", "value": {"boolValue": false}},
                {"key": "load", "value": {"doubleValue": 0.75}},
                {"key": "blob", "value": {"bytesValue": "AAEC/w=="}},
                {"key": "tags", "value": {"arrayValue": {"values": [{"stringValue": "a"}, {"intValue": 2}]}}},
                {"key": "cloud", "value": {"kvlistValue": {"values": [{"key": "region", "value": {"stringValue": "eu"}}]}}}
              ],
              "droppedAttributesCount": 0
            },
            "scopeMetrics": [{
              "scope": {"name": "opentelemetry.instrumentation.openai_v2", "version": "2.1b0"},
              "metrics": [
                {
                  "name": "gen_ai.client.token.usage",
                  "unit": "{token}",
                  "description": "Measures number of input and output tokens used",
                  "histogram": {
                    "aggregationTemporality": 2,
                    "dataPoints": [{
                      "attributes": [{"key": "gen_ai.token.type", "value": {"stringValue": "input"}}],
                      "startTimeUnixNano": "1699999940000000000",
                      "timeUnixNano": "1700000000000000000",
                      "count": "3",
                      "sum": 96,
                      "bucketCounts": ["0", "1", "2", "0"],
                      "explicitBounds": [1, 16, 64],
                      "min": 8,
                      "max": 50,
                      "exemplars": [{
                        "timeUnixNano": "1699999990000000000",
                        "asInt": "16",
                        "traceId": "5b8efff798038103d269b633813fc60c",
                        "spanId": "eee19b7ec3c1b174"
                      }]
                    }]
                  }
                },
                {
                  "name": "requests",
                  "sum": {
                    "aggregationTemporality": 1,
                    "isMonotonic": true,
                    "dataPoints": [{"timeUnixNano": "1700000000000000000", "asInt": "42", "flags": 0}]
                  },
                  "someFutureField": {"ignored": true}
                },
                {
                  "name": "queue.depth",
                  "gauge": {"dataPoints": [{"timeUnixNano": 1700000000000000000, "asDouble": "NaN"}]}
                },
                {
                  "name": "latency",
                  "exponentialHistogram": {
                    "aggregationTemporality": "AGGREGATION_TEMPORALITY_CUMULATIVE",
                    "dataPoints": [{
                      "timeUnixNano": "1700000000000000000",
                      "count": "3", "sum": 7.5, "scale": -1, "zeroCount": "1", "zeroThreshold": 0,
                      "positive": {"offset": 0, "bucketCounts": ["1", "1"]},
                      "negative": {}
                    }]
                  }
                },
                {
                  "name": "rpc.duration",
                  "summary": {"dataPoints": [{
                    "timeUnixNano": "1700000000000000000", "count": "7", "sum": 100,
                    "quantileValues": [{"quantile": 0.5, "value": 10}, {"quantile": 0.99, "value": 42}]
                  }]}
                }
              ]
            }]
          }]
        }"#;
        let decoded = decode(body.as_bytes(), Encoding::Json).unwrap();

        let mut token_point = histogram_point(
            &[1.0, 16.0, 64.0],
            &[0, 1, 2, 0],
            Some(96.0),
            vec![text("gen_ai.token.type", "input")],
        );
        token_point.start_time_unix_nano = 1_699_999_940_000_000_000;
        token_point.min = Some(8.0);
        token_point.max = Some(50.0);
        token_point.exemplars = vec![Exemplar {
            time_unix_nano: 1_699_999_990_000_000_000,
            value: Some(exemplar::Value::AsInt(16)),
            trace_id: hex_decode("5b8efff798038103d269b633813fc60c").unwrap(),
            span_id: hex_decode("eee19b7ec3c1b174").unwrap(),
            filtered_attributes: vec![],
        }];
        let mut tokens = histogram("gen_ai.client.token.usage", CUMULATIVE, vec![token_point]);
        tokens.unit = "{token}".into();
        tokens.description = "Measures number of input and output tokens used".into();
        let mut latency = exponential_point(-1, 1, (0, &[1, 1]), (0, &[]));
        latency.sum = Some(7.5);
        let mut rpc = SummaryDataPoint {
            time_unix_nano: T0,
            count: 7,
            sum: 100.0,
            ..Default::default()
        };
        for (quantile, value) in [(0.5, 10.0), (0.99, 42.0)] {
            rpc.quantile_values
                .push(ValueAtQuantile { quantile, value });
        }
        let expected = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![
                        text("service.name", "support-bot"),
                        kv("host.cores", V::IntValue(8)),
                        kv("debug", V::BoolValue(false)),
                        kv("load", V::DoubleValue(0.75)),
                        kv("blob", V::BytesValue(vec![0, 1, 2, 255])),
                        kv(
                            "tags",
                            V::ArrayValue(ArrayValue {
                                values: vec![
                                    AnyValue {
                                        value: Some(V::StringValue("a".into())),
                                    },
                                    AnyValue {
                                        value: Some(V::IntValue(2)),
                                    },
                                ],
                            }),
                        ),
                        kv(
                            "cloud",
                            V::KvlistValue(KeyValueList {
                                values: vec![text("region", "eu")],
                            }),
                        ),
                    ],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "opentelemetry.instrumentation.openai_v2".into(),
                        version: "2.1b0".into(),
                        ..Default::default()
                    }),
                    metrics: vec![
                        tokens,
                        sum("requests", true, DELTA, vec![int(42)]),
                        gauge("queue.depth", vec![number(f64::NAN, vec![])]),
                        exponential("latency", vec![latency]),
                        summary("rpc.duration", vec![rpc]),
                    ],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        // NaN != NaN: compare the gauge's value apart.
        let nan_value = |r: &ExportMetricsServiceRequest| match &r.resource_metrics[0].scope_metrics
            [0]
        .metrics[2]
            .data
        {
            Some(metric::Data::Gauge(g)) => g.data_points[0].value,
            other => panic!("not a gauge: {other:?}"),
        };
        assert!(
            matches!(nan_value(&decoded), Some(number_data_point::Value::AsDouble(d)) if d.is_nan())
        );
        let without_nan = |mut r: ExportMetricsServiceRequest| {
            if let Some(metric::Data::Gauge(g)) =
                &mut r.resource_metrics[0].scope_metrics[0].metrics[2].data
            {
                g.data_points[0].value = None;
            }
            r
        };
        assert_eq!(without_nan(decoded.clone()), without_nan(expected));

        // And it maps: the NaN gauge point is the one rejected.
        let mapped = map(&decoded);
        assert_eq!(mapped.accepted_points, 4);
        assert_eq!(mapped.rejected_points, 1);
        let requests = series(&mapped, "support-bot/requests");
        assert_eq!(requests.values[0].value, 42.0);
        assert_eq!(requests.metric_type, MetricType::Counter);
        let count = series(&mapped, "support-bot/gen_ai.client.token.usage_count");
        assert_eq!(count.values[0].value, 3.0);
        let tags = &count.values[0].tags;
        assert_eq!(tags["gen_ai.token.type"], "input");
        assert_eq!(tags["host.cores"], "8");
        assert_eq!(tags["debug"], "false");
        assert_eq!(tags["load"], "0.75");
        assert_eq!(tags["blob"], "AAEC/w==");
        assert_eq!(tags["tags"], r#"["a",2]"#);
        assert_eq!(tags["cloud.region"], "eu");
        assert_eq!(tags[SCOPE_TAG], "opentelemetry.instrumentation.openai_v2");
    }

    #[test]
    fn json_accepts_numbers_for_64_bit_integers_and_names_for_enums() {
        let body = r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"m",
            "sum":{"aggregationTemporality":"AGGREGATION_TEMPORALITY_DELTA","isMonotonic":true,
            "dataPoints":[{"timeUnixNano":1700000000000000000,"asInt":42,
            "attributes":[{"key":"n","value":{"intValue":7}},{"key":"e","value":{}}],
            "exemplars":[{"spanId":"7u4bfsPBsXQ=","traceId":""}]}]}}]}]}]}"#;
        let decoded = decode(body.as_bytes(), Encoding::Json).unwrap();
        let Some(metric::Data::Sum(s)) =
            &decoded.resource_metrics[0].scope_metrics[0].metrics[0].data
        else {
            panic!("not a sum");
        };
        assert_eq!(s.aggregation_temporality, DELTA as i32);
        let p = &s.data_points[0];
        assert_eq!(p.time_unix_nano, T0);
        assert_eq!(p.value, Some(number_data_point::Value::AsInt(42)));
        assert_eq!(p.attributes[0], kv("n", V::IntValue(7)));
        assert_eq!(p.attributes[1].value, Some(AnyValue { value: None }));
        // A base64 span id (proto3's default for bytes), as some exporters send.
        assert_eq!(
            p.exemplars[0].span_id,
            hex_decode("eeee1b7ec3c1b174").unwrap()
        );
    }

    #[test]
    fn malformed_json_is_invalid_input_naming_the_place() {
        let point = |p: &str| {
            format!(
                r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"m","gauge":{{"dataPoints":[{p}]}}}}]}}]}}]}}"#
            )
        };
        let cases = [
            ("{".to_owned(), "is not valid JSON"),
            ("[]".to_owned(), "expected an object, got an array"),
            (
                r#"{"resourceMetrics":{}}"#.to_owned(),
                "resourceMetrics: expected an array",
            ),
            (
                point(r#"{"timeUnixNano":"1700000000000000000","asInt":"forty-two"}"#),
                "resourceMetrics[0].scopeMetrics[0].metrics[0].gauge.dataPoints[0].asInt",
            ),
            (
                point(r#"{"asInt":"1","asDouble":1}"#),
                "sets both asDouble and asInt",
            ),
            (point(r#"{"timeUnixNano":"-1"}"#), "timeUnixNano"),
            (point(r#"{"timeUnixNano":1.5}"#), "timeUnixNano"),
            (point(r#"{"flags":4294967296}"#), "flags"),
            (point(r#"{"asDouble":true}"#), "expected a double"),
            (
                point(r#"{"attributes":[{"key":"b","value":{"bytesValue":"!!"}}]}"#),
                "is not base64",
            ),
            (
                point(r#"{"attributes":[{"key":1}]}"#),
                "attributes[0].key: expected a string",
            ),
            (
                point(r#"{"exemplars":[{"traceId":"xyz!"}]}"#),
                "neither hex nor base64",
            ),
            (
                r#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"gauge":{},"sum":{}}]}]}]}"#
                    .to_owned(),
                "sets both gauge and sum",
            ),
        ];
        for (body, expected) in cases {
            let err = decode(body.as_bytes(), Encoding::Json).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
            assert!(err.to_string().contains(expected), "{body}\n{err}");
        }
    }

    #[test]
    fn deep_nesting_is_invalid_input_not_a_stack_overflow() {
        let mut value = AnyValue {
            value: Some(V::StringValue("leaf".into())),
        };
        for _ in 0..200 {
            value = AnyValue {
                value: Some(V::KvlistValue(KeyValueList {
                    values: vec![KeyValue {
                        key: "a".into(),
                        value: Some(value),
                    }],
                })),
            };
        }
        let mut point = int(1);
        point.attributes = vec![KeyValue {
            key: "deep".into(),
            value: Some(value),
        }];
        let deep = request(vec![gauge("m", vec![point])]);
        let err = decode(&deep.encode_to_vec(), Encoding::Protobuf).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        // Mapped directly (built in code), the attribute is dropped, not followed down.
        let mapped = map(&deep);
        assert_eq!(mapped.accepted_points, 1);
        assert_eq!(mapped.dropped_attributes, 1);

        let mut json = String::new();
        for _ in 0..200 {
            json.push_str(r#"{"kvlistValue":{"values":[{"key":"a","value":"#);
        }
        json.push_str(r#"{"stringValue":"leaf"}"#);
        json.push_str(&"}]}}".repeat(200));
        let body = format!(
            r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"m","gauge":{{"dataPoints":[{{"attributes":[{{"key":"deep","value":{json}}}]}}]}}}}]}}]}}]}}"#
        );
        let err = decode(body.as_bytes(), Encoding::Json).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn content_types_name_the_encoding() {
        assert_eq!(
            Encoding::from_content_type("application/x-protobuf"),
            Some(Encoding::Protobuf)
        );
        assert_eq!(
            Encoding::from_content_type("Application/JSON; charset=utf-8"),
            Some(Encoding::Json)
        );
        assert_eq!(Encoding::from_content_type("text/plain"), None);
    }

    // --- identity and grouping ----------------------------------------------------------------

    #[test]
    fn an_empty_request_maps_to_nothing() {
        let mapped = map(&ExportMetricsServiceRequest::default());
        assert_eq!(mapped, Mapped::default());
        assert!(partial_success(&mapped).partial_success.is_none());
        let empty = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics::default()],
        };
        assert_eq!(map(&empty), Mapped::default());
    }

    #[test]
    fn the_agent_is_the_point_then_resource_agent_name_then_the_service_name() {
        let with_agent = vec![
            text("service.name", "svc"),
            text("gen_ai.agent.name", "resource-agent"),
        ];
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![
                resource_metrics(
                    Some(with_agent),
                    "",
                    vec![gauge(
                        "m",
                        vec![
                            number(1.0, vec![text("gen_ai.agent.name", "point-agent")]),
                            number(2.0, vec![]),
                        ],
                    )],
                ),
                resource_metrics(
                    Some(vec![text("service.name", "svc")]),
                    "",
                    vec![gauge("m", vec![number(3.0, vec![])])],
                ),
                resource_metrics(None, "", vec![gauge("m", vec![number(4.0, vec![])])]),
                resource_metrics(
                    Some(vec![text("service.name", "")]),
                    "",
                    vec![gauge("m", vec![number(5.0, vec![])])],
                ),
            ],
        };
        let mapped = map(&request);
        assert_eq!(
            ids(&mapped),
            [
                "point-agent/m",
                "resource-agent/m",
                "svc/m",
                "unknown_service/m"
            ]
        );
        let agent_of = |id: &str| {
            series(&mapped, id)
                .values
                .iter()
                .map(|v| (v.tags[AGENT_TAG].clone(), v.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(agent_of("point-agent/m"), [("point-agent".into(), 1.0)]);
        assert_eq!(
            agent_of("resource-agent/m"),
            [("resource-agent".into(), 2.0)]
        );
        assert_eq!(agent_of("svc/m"), [("svc".into(), 3.0)]);
        assert_eq!(
            agent_of("unknown_service/m"),
            [
                ("unknown_service".into(), 4.0),
                ("unknown_service".into(), 5.0)
            ]
        );
        // The agent attribute is a tag like any other, besides `agent`.
        let sample = &series(&mapped, "point-agent/m").values[0];
        assert_eq!(sample.tags["gen_ai.agent.name"], "point-agent");
    }

    #[test]
    fn samples_of_one_series_are_grouped_into_one_metric() {
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![
                resource_metrics(
                    Some(vec![text("service.name", "bot"), text("pod", "a")]),
                    "",
                    vec![gauge(
                        "latency",
                        vec![
                            number(1.0, vec![text("model", "small")]),
                            number(2.0, vec![text("model", "large")]),
                        ],
                    )],
                ),
                resource_metrics(
                    Some(vec![text("service.name", "bot"), text("pod", "b")]),
                    "",
                    vec![gauge("latency", vec![number(3.0, vec![])])],
                ),
            ],
        };
        let mapped = map(&request);
        assert_eq!(ids(&mapped), ["bot/latency"]);
        let metric = &mapped.metrics[0];
        assert_eq!(metric.name, "latency");
        assert_eq!(metric.metric_type, MetricType::Gauge);
        let values: Vec<f64> = metric.values.iter().map(|v| v.value).collect();
        assert_eq!(values, [1.0, 2.0, 3.0]);
        assert_eq!(
            metric.values[0].tags,
            tags(&[
                ("agent", "bot"),
                ("model", "small"),
                ("pod", "a"),
                ("service.name", "bot")
            ])
        );
        assert_eq!(mapped.accepted_points, 3);
    }

    #[test]
    fn an_agent_name_that_is_not_a_valid_tag_value_rejects_the_point() {
        let long = "a".repeat(2000);
        let request = request(vec![gauge(
            "m",
            vec![
                number(1.0, vec![text("gen_ai.agent.name", "bad\nname")]),
                number(2.0, vec![text("gen_ai.agent.name", &long)]),
                number(3.0, vec![]),
            ],
        )]);
        let mapped = map(&request);
        assert_eq!((mapped.accepted_points, mapped.rejected_points), (1, 2));
        assert_eq!(ids(&mapped), ["support-bot/m"]);
        assert!(
            mapped.messages[0].contains("agent name"),
            "{:?}",
            mapped.messages
        );
    }

    #[test]
    fn a_series_id_longer_than_a_name_rejects_the_point() {
        let agent = "a".repeat(500);
        let attributes = vec![text("gen_ai.agent.name", &agent)];
        // 500 + "/" + "tokens" fits in 512 bytes; 500 + "/" + "tokens_bucket" does not.
        let request = request(vec![
            gauge("tokens", vec![number(1.0, attributes.clone())]),
            histogram(
                "tokens",
                CUMULATIVE,
                vec![histogram_point(&[], &[], None, attributes)],
            ),
        ]);
        let mapped = map(&request);
        assert_eq!((mapped.accepted_points, mapped.rejected_points), (1, 1));
        assert!(
            mapped.messages[0].contains("longer than 512 bytes"),
            "{:?}",
            mapped.messages
        );
    }

    // --- tags ---------------------------------------------------------------------------------

    #[test]
    fn tags_merge_resource_scope_and_point_with_the_point_winning() {
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![resource_metrics(
                Some(vec![
                    text("service.name", "bot"),
                    text("host", "h1"),
                    text("shared", "resource"),
                    text(SCOPE_TAG, "from-resource"),
                ]),
                "my.library",
                vec![gauge(
                    "m",
                    vec![
                        number(1.0, vec![text("shared", "point"), text("model", "m1")]),
                        number(2.0, vec![text(SCOPE_TAG, "from-point")]),
                    ],
                )],
            )],
        };
        let mapped = map(&request);
        let values = &mapped.metrics[0].values;
        assert_eq!(
            values[0].tags,
            tags(&[
                ("agent", "bot"),
                ("host", "h1"),
                ("model", "m1"),
                (SCOPE_TAG, "my.library"),
                ("service.name", "bot"),
                ("shared", "point"),
            ])
        );
        assert_eq!(values[1].tags[SCOPE_TAG], "from-point");
        assert_eq!(values[1].tags["shared"], "resource");
        assert_eq!(mapped.dropped_attributes, 0);
    }

    #[test]
    fn attribute_values_become_text() {
        let array = |values: Vec<V>| {
            V::ArrayValue(ArrayValue {
                values: values
                    .into_iter()
                    .map(|v| AnyValue { value: Some(v) })
                    .collect(),
            })
        };
        let kvlist = |values: Vec<KeyValue>| V::KvlistValue(KeyValueList { values });
        let attributes = vec![
            kv("string", V::StringValue("héllo wörld".into())),
            kv("bool", V::BoolValue(true)),
            kv("int", V::IntValue(-3)),
            kv("double", V::DoubleValue(0.1)),
            kv("whole", V::DoubleValue(2.0)),
            kv("huge", V::DoubleValue(1e300)),
            kv("bytes", V::BytesValue(vec![0, 1, 2, 255])),
            kv(
                "strings",
                array(vec![V::StringValue("a".into()), V::StringValue("b".into())]),
            ),
            kv(
                "mixed",
                array(vec![
                    V::IntValue(1),
                    V::DoubleValue(2.5),
                    V::BoolValue(true),
                    V::DoubleValue(f64::INFINITY),
                ]),
            ),
            kv(
                "map",
                kvlist(vec![
                    text("a", "x"),
                    kv("b", kvlist(vec![kv("c", V::IntValue(1))])),
                ]),
            ),
            kv("empty_string", V::StringValue(String::new())),
            kv("empty_array", array(vec![])),
            kv("empty_map", kvlist(vec![])),
            KeyValue {
                key: "no_value".into(),
                value: None,
            },
            KeyValue {
                key: "empty_any".into(),
                value: Some(AnyValue { value: None }),
            },
        ];
        let mapped = map(&request(vec![gauge("m", vec![number(1.0, attributes)])]));
        assert_eq!(
            mapped.metrics[0].values[0].tags,
            tags(&[
                ("agent", "support-bot"),
                ("bool", "true"),
                ("bytes", "AAEC/w=="),
                ("double", "0.1"),
                ("huge", "1e300"),
                ("int", "-3"),
                ("map.a", "x"),
                ("map.b.c", "1"),
                ("mixed", r#"[1,2.5,true,"+Inf"]"#),
                ("service.name", "support-bot"),
                ("string", "héllo wörld"),
                ("strings", r#"["a","b"]"#),
                ("whole", "2"),
            ])
        );
        assert_eq!(mapped.dropped_attributes, 5);
        // Drops are not rejections.
        assert_eq!((mapped.accepted_points, mapped.rejected_points), (1, 0));
    }

    #[test]
    fn arrays_too_long_or_too_deep_are_dropped() {
        let array = |values: Vec<V>| {
            V::ArrayValue(ArrayValue {
                values: values
                    .into_iter()
                    .map(|v| AnyValue { value: Some(v) })
                    .collect(),
            })
        };
        let nested = |depth: usize| {
            let mut value = V::IntValue(1);
            for _ in 0..depth {
                value = array(vec![value]);
            }
            value
        };
        let attributes = vec![
            kv("long", array((0..2000).map(V::IntValue).collect())),
            kv("long_string", array(vec![V::StringValue("x".repeat(2000))])),
            kv("deep", nested(MAX_ATTRIBUTE_DEPTH + 1)),
            kv("ok", nested(MAX_ATTRIBUTE_DEPTH)),
        ];
        let mapped = map(&request(vec![gauge("m", vec![number(1.0, attributes)])]));
        let tags = &mapped.metrics[0].values[0].tags;
        assert_eq!(tags["ok"], "[[[[[[[[1]]]]]]]]");
        assert!(!tags.contains_key("long") && !tags.contains_key("deep"));
        assert_eq!(mapped.dropped_attributes, 3);
    }

    #[test]
    fn attributes_beyond_the_limits_are_dropped_and_counted() {
        let limits = AttributeLimits {
            max_attributes: 3,
            max_key_bytes: 8,
            // The agent's name, `support-bot`, must fit too.
            max_value_bytes: 12,
        };
        let attributes = vec![
            text("long_key_1", "v"),
            text("k", "a value longer than 12 bytes"),
            text("c", "a\nb"),
            text("n", "nel\u{85}"),
            text("b\tc", "v"),
            text("a", "1"),
            text("b", "2"),
            text("c", "3"),
            text("d", "4"),
        ];
        let mapped = map_with(
            &request(vec![gauge("m", vec![number(1.0, attributes)])]),
            &limits,
        );
        assert_eq!(
            mapped.metrics[0].values[0].tags,
            tags(&[("a", "1"), ("agent", "support-bot"), ("b", "2"), ("c", "3")])
        );
        // Five invalid and `d` beyond the count on the point; the resource's `service.name`,
        // a key longer than 8 bytes (it still names the agent).
        assert_eq!(mapped.dropped_attributes, 7);
        assert_eq!(
            mapped.messages,
            [
                r#"resource attribute "service.name" dropped: key too long"#,
                r#"data point attribute "long_key_1" dropped: key too long"#
            ]
        );
    }

    #[test]
    fn ten_thousand_attributes_are_dropped_quickly() {
        let many: Vec<KeyValue> = (0..10_000)
            .map(|i| text(&format!("k{i:05}"), "v"))
            .collect();
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![
                // On a point…
                resource_metrics(None, "", vec![gauge("m", vec![number(1.0, many.clone())])]),
                // …and on a resource with two points: counted once for the resource.
                resource_metrics(
                    Some(many),
                    "",
                    vec![gauge("r", vec![number(1.0, vec![]), number(2.0, vec![])])],
                ),
            ],
        };
        let started = std::time::Instant::now();
        let mapped = map(&request);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(mapped.accepted_points, 3);
        assert_eq!(mapped.dropped_attributes, 2 * (10_000 - 64));
        for metric in &mapped.metrics {
            for value in &metric.values {
                assert_eq!(value.tags.len(), 64 + 1, "{}", metric.id);
            }
        }
        assert!(
            mapped.messages[0].contains("too many attributes"),
            "{:?}",
            mapped.messages
        );
    }

    /// Whatever arrives, the tags of a mapped sample pass `aimon::validate::tags`: with the
    /// default limits, and with limits that exceed aimon's own.
    #[test]
    fn mapped_tags_always_validate() {
        let attributes = |prefix: &str| -> Vec<KeyValue> {
            (0..300)
                .map(|i| {
                    let key = format!("{prefix}{i:03}{}", "k".repeat(600));
                    text(&key[..128], &"v".repeat(1024))
                })
                .chain((0..300).map(|i| {
                    let key = format!("{prefix}{i:03}{}", "x".repeat(1000));
                    text(&key, &"w".repeat(20_000))
                }))
                .collect()
        };
        let mut point_attributes = attributes("p");
        point_attributes.push(text("gen_ai.agent.name", &"g".repeat(400)));
        let mut point = histogram_point(&[1.0], &[1, 1], Some(3.0), point_attributes);
        point.min = Some(1.0);
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![resource_metrics(
                Some(attributes("r")),
                &"s".repeat(1024),
                vec![histogram("h", DELTA, vec![point])],
            )],
        };
        for limits in [
            AttributeLimits::default(),
            AttributeLimits {
                max_attributes: usize::MAX,
                max_key_bytes: usize::MAX,
                max_value_bytes: usize::MAX,
            },
        ] {
            let mapped = map_with(&request, &limits);
            assert_eq!(mapped.accepted_points, 1, "{limits:?}");
            for metric in &mapped.metrics {
                for value in &metric.values {
                    aimon::validate::tags("tags", &value.tags).unwrap();
                    assert_eq!(value.tags[TEMPORALITY_TAG], "delta");
                }
            }
        }
    }

    #[test]
    fn attributes_named_like_the_mapping_tags_are_dropped() {
        let attributes = vec![
            text(AGENT_TAG, "impostor"),
            text(TEMPORALITY_TAG, "cumulative"),
            text(BUCKET_TAG, "5"),
        ];
        let request = request(vec![
            histogram(
                "h",
                DELTA,
                vec![histogram_point(&[], &[], None, attributes.clone())],
            ),
            gauge("g", vec![number(1.0, attributes)]),
        ]);
        let mapped = map(&request);
        let bucket = &series(&mapped, "support-bot/h_bucket").values[0].tags;
        assert_eq!(bucket[AGENT_TAG], "support-bot");
        assert_eq!(bucket[TEMPORALITY_TAG], "delta");
        assert_eq!(bucket[BUCKET_TAG], "+Inf");
        // On a gauge, `le` is just an attribute.
        let gauge_tags = &series(&mapped, "support-bot/g").values[0].tags;
        assert_eq!(gauge_tags[BUCKET_TAG], "5");
        assert_eq!(gauge_tags[AGENT_TAG], "support-bot");
        assert!(!gauge_tags.contains_key(TEMPORALITY_TAG));
        assert_eq!(mapped.dropped_attributes, 3 + 2);
    }

    #[test]
    fn an_invalid_scope_name_is_dropped_once() {
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![resource_metrics(
                Some(vec![text("service.name", "bot")]),
                "bad\u{0}scope",
                vec![gauge("m", vec![number(1.0, vec![]), number(2.0, vec![])])],
            )],
        };
        let mapped = map(&request);
        assert_eq!(mapped.dropped_attributes, 1);
        assert!(!mapped.metrics[0].values[0].tags.contains_key(SCOPE_TAG));
    }

    // --- types and values ---------------------------------------------------------------------

    #[test]
    fn gauges_and_sums_map_to_gauges_and_counters_with_their_temporality() {
        let request = request(vec![
            gauge("g", vec![number(1.5, vec![])]),
            sum("total", true, CUMULATIVE, vec![int(10)]),
            sum("per_interval", true, DELTA, vec![int(3)]),
            sum("in_flight", false, CUMULATIVE, vec![int(-2)]),
            sum(
                "unspecified",
                true,
                AggregationTemporality::Unspecified,
                vec![int(1)],
            ),
        ]);
        let mapped = map(&request);
        let g = series(&mapped, "support-bot/g");
        assert_eq!(g.metric_type, MetricType::Gauge);
        assert_eq!(g.metadata.get("temporality"), None);
        assert_eq!(g.metadata["otlp_type"], "gauge");

        let total = series(&mapped, "support-bot/total");
        assert_eq!(total.metric_type, MetricType::Counter);
        assert_eq!(total.metadata["temporality"], "cumulative");
        assert_eq!(total.metadata["otlp_type"], "sum");
        assert!(!total.values[0].tags.contains_key(TEMPORALITY_TAG));

        let delta = series(&mapped, "support-bot/per_interval");
        assert_eq!(delta.metric_type, MetricType::Counter);
        assert_eq!(delta.metadata["temporality"], "delta");
        assert_eq!(delta.values[0].tags[TEMPORALITY_TAG], "delta");
        assert_eq!(delta.values[0].value, 3.0);

        let in_flight = series(&mapped, "support-bot/in_flight");
        assert_eq!(in_flight.metric_type, MetricType::Gauge);
        assert_eq!(in_flight.values[0].value, -2.0);

        assert_eq!((mapped.accepted_points, mapped.rejected_points), (4, 1));
        assert!(
            mapped.messages[0].contains("aggregation temporality 0"),
            "{:?}",
            mapped.messages
        );
    }

    #[test]
    fn int_values_become_doubles() {
        let mapped = map(&request(vec![gauge(
            "m",
            vec![int(42), int(i64::MAX), int((1 << 53) + 1), int(i64::MIN)],
        )]));
        let values: Vec<f64> = mapped.metrics[0].values.iter().map(|v| v.value).collect();
        // Beyond 2^53 the nearest double is kept.
        assert_eq!(
            values,
            [
                42.0,
                9.223372036854776e18,
                9007199254740992.0,
                -9.223372036854776e18
            ]
        );
    }

    #[test]
    fn unit_and_description_are_carried_when_valid() {
        let mut with = gauge("with", vec![int(1)]);
        with.unit = "{token}".into();
        with.description = "Tokens used\nper request".into();
        let mut bad_unit = gauge("bad_unit", vec![int(1)]);
        bad_unit.unit = "m\u{7}s".into();
        let mapped = map(&request(vec![
            with,
            bad_unit,
            gauge("without", vec![int(1)]),
        ]));
        let with = series(&mapped, "support-bot/with");
        assert_eq!(with.unit.as_deref(), Some("{token}"));
        assert_eq!(
            with.description.as_deref(),
            Some("Tokens used\nper request")
        );
        let bad = series(&mapped, "support-bot/bad_unit");
        assert_eq!(bad.unit, None);
        assert_eq!(mapped.accepted_points, 3);
        assert!(
            mapped.messages[0].contains("unit ignored"),
            "{:?}",
            mapped.messages
        );
        let without = series(&mapped, "support-bot/without");
        assert_eq!(
            (without.unit.as_deref(), without.description.as_deref()),
            (None, None)
        );
    }

    #[test]
    fn nan_and_infinities_reject_the_point() {
        let mut nan_sum = histogram_point(&[1.0], &[1, 1], Some(f64::NAN), vec![]);
        nan_sum.max = Some(2.0);
        let mut inf_max = histogram_point(&[1.0], &[1, 1], Some(3.0), vec![]);
        inf_max.max = Some(f64::INFINITY);
        let nan_quantile = SummaryDataPoint {
            time_unix_nano: T0,
            quantile_values: vec![ValueAtQuantile {
                quantile: 0.5,
                value: f64::NAN,
            }],
            ..Default::default()
        };
        let mapped = map(&request(vec![
            gauge(
                "g",
                vec![
                    number(f64::NAN, vec![]),
                    number(f64::INFINITY, vec![]),
                    number(f64::NEG_INFINITY, vec![]),
                    number(1.0, vec![]),
                ],
            ),
            histogram("h", CUMULATIVE, vec![nan_sum, inf_max]),
            summary("s", vec![nan_quantile]),
        ]));
        assert_eq!((mapped.accepted_points, mapped.rejected_points), (1, 6));
        assert_eq!(ids(&mapped), ["support-bot/g"]);
        assert_eq!(mapped.metrics[0].values.len(), 1);
        assert!(
            mapped
                .messages
                .iter()
                .any(|m| m.contains("value NaN is not finite"))
        );
        assert!(
            mapped
                .messages
                .iter()
                .any(|m| m.contains("value +Inf is not finite"))
        );
        assert!(
            mapped
                .messages
                .iter()
                .any(|m| m.contains("sum NaN is not finite"))
        );
    }

    #[test]
    fn points_without_a_valid_time_are_rejected() {
        let at = |nanos: u64| NumberDataPoint {
            time_unix_nano: nanos,
            ..int(1)
        };
        // 2261-12-31T00:00:00Z and 2262-02-01T00:00:00Z.
        let late_ok = 9_214_560_000_000_000_000;
        let too_late = 9_217_324_800_000_000_000;
        let mapped = map(&request(vec![gauge(
            "m",
            vec![at(0), at(u64::MAX), at(too_late), at(late_ok), at(T0 + 123)],
        )]));
        assert_eq!((mapped.accepted_points, mapped.rejected_points), (2, 3));
        let times: Vec<i64> = mapped.metrics[0]
            .values
            .iter()
            .map(|v| v.timestamp.timestamp_nanos_opt().unwrap())
            .collect();
        assert_eq!(times, [late_ok as i64, (T0 + 123) as i64]);
        assert!(
            mapped
                .messages
                .iter()
                .any(|m| m.contains("no timeUnixNano"))
        );
        assert!(
            mapped
                .messages
                .iter()
                .any(|m| m.contains("outside 1970-01-01..2262-01-01"))
        );
    }

    #[test]
    fn points_without_a_recorded_value_are_skipped_not_rejected() {
        let no_value = NumberDataPoint {
            flags: 1,
            value: None,
            ..int(0)
        };
        let mut hist = histogram_point(&[1.0], &[0, 0], None, vec![]);
        hist.flags = 1;
        let mapped = map(&request(vec![
            gauge("m", vec![no_value, int(5)]),
            histogram("h", CUMULATIVE, vec![hist]),
        ]));
        assert_eq!(
            (
                mapped.accepted_points,
                mapped.rejected_points,
                mapped.skipped_points
            ),
            (1, 0, 2)
        );
        assert_eq!(ids(&mapped), ["support-bot/m"]);
        // A point without a value and without the flag is malformed.
        let unflagged = NumberDataPoint {
            value: None,
            ..int(0)
        };
        let mapped = map(&request(vec![gauge("m", vec![unflagged])]));
        assert_eq!(mapped.rejected_points, 1);
    }

    #[test]
    fn invalid_metric_names_reject_all_their_points() {
        let two = || vec![int(1), int(2)];
        let mapped = map(&request(vec![
            gauge("", two()),
            gauge("line\nbreak", two()),
            gauge(&"x".repeat(600), two()),
            // 510 bytes is a valid name, but `_bucket` takes it past 512.
            histogram(
                &"h".repeat(510),
                CUMULATIVE,
                vec![histogram_point(&[], &[], None, vec![])],
            ),
            gauge("ok", two()),
        ]));
        assert_eq!((mapped.accepted_points, mapped.rejected_points), (2, 7));
        assert_eq!(ids(&mapped), ["support-bot/ok"]);
        assert!(
            mapped.messages[0].contains("must not be empty"),
            "{:?}",
            mapped.messages
        );
        assert!(
            mapped.messages[1].contains("control character"),
            "{:?}",
            mapped.messages
        );
    }

    // --- histograms and summaries -------------------------------------------------------------

    #[test]
    fn histograms_become_cumulative_buckets_sum_count_min_and_max() {
        let mut point = histogram_point(&[1.0, 4.0, 16.0], &[1, 2, 3, 4], Some(55.0), vec![]);
        point.min = Some(0.5);
        point.max = Some(100.0);
        let mut h = histogram("latency", CUMULATIVE, vec![point]);
        h.unit = "ms".into();
        let mapped = map(&request(vec![h]));
        assert_eq!(
            ids(&mapped),
            [
                "support-bot/latency_bucket",
                "support-bot/latency_sum",
                "support-bot/latency_count",
                "support-bot/latency_min",
                "support-bot/latency_max",
            ]
        );
        let bucket = series(&mapped, "support-bot/latency_bucket");
        assert_eq!(
            buckets_of(bucket),
            pairs(&[("1", 1.0), ("4", 3.0), ("16", 6.0), ("+Inf", 10.0)])
        );
        for metric in &mapped.metrics {
            assert_eq!(metric.metric_type, MetricType::Histogram);
            assert_eq!(metric.unit.as_deref(), Some("ms"));
            assert_eq!(metric.metadata["temporality"], "cumulative");
            assert_eq!(metric.metadata["otlp_type"], "histogram");
        }
        let value = |id: &str| series(&mapped, id).values[0].value;
        assert_eq!(value("support-bot/latency_sum"), 55.0);
        assert_eq!(value("support-bot/latency_count"), 10.0);
        assert_eq!(value("support-bot/latency_min"), 0.5);
        assert_eq!(value("support-bot/latency_max"), 100.0);
        assert_eq!(mapped.accepted_points, 1);
    }

    #[test]
    fn a_histogram_without_buckets_has_only_the_inf_bucket() {
        let mut point = histogram_point(&[], &[], None, vec![]);
        point.count = 7;
        let mapped = map(&request(vec![histogram("h", DELTA, vec![point])]));
        assert_eq!(
            ids(&mapped),
            ["support-bot/h_bucket", "support-bot/h_count"]
        );
        assert_eq!(buckets_of(&mapped.metrics[0]), pairs(&[("+Inf", 7.0)]));
        for metric in &mapped.metrics {
            assert_eq!(metric.values[0].tags[TEMPORALITY_TAG], "delta");
            assert_eq!(metric.metadata["temporality"], "delta");
        }
    }

    #[test]
    fn malformed_histogram_buckets_reject_the_point() {
        let many_bounds: Vec<f64> = (0..MAX_EXPLICIT_BUCKETS).map(|i| i as f64).collect();
        let many_counts = vec![1; MAX_EXPLICIT_BUCKETS + 1];
        let at_limit_bounds: Vec<f64> = (0..MAX_EXPLICIT_BUCKETS - 1).map(|i| i as f64).collect();
        let at_limit_counts = vec![1; MAX_EXPLICIT_BUCKETS];
        let mapped = map(&request(vec![histogram(
            "h",
            CUMULATIVE,
            vec![
                histogram_point(&[1.0, 2.0], &[1, 2], None, vec![]),
                histogram_point(&[1.0], &[1, 2, 3], None, vec![]),
                histogram_point(&[1.0], &[], None, vec![]),
                histogram_point(&[2.0, 1.0], &[1, 1, 1], None, vec![]),
                histogram_point(&[1.0, 1.0], &[1, 1, 1], None, vec![]),
                histogram_point(&[f64::NAN], &[1, 1], None, vec![]),
                histogram_point(&[f64::INFINITY], &[1, 1], None, vec![]),
                histogram_point(&many_bounds, &many_counts, None, vec![]),
                histogram_point(&at_limit_bounds, &at_limit_counts, None, vec![]),
            ],
        )]));
        assert_eq!((mapped.accepted_points, mapped.rejected_points), (1, 8));
        let bucket = series(&mapped, "support-bot/h_bucket");
        assert_eq!(bucket.values.len(), MAX_EXPLICIT_BUCKETS);
        assert!(
            mapped
                .messages
                .iter()
                .any(|m| m.contains("2 bucket counts for 2 explicit bounds"))
        );
        assert!(
            mapped
                .messages
                .iter()
                .any(|m| m.contains("must increase strictly"))
        );
    }

    /// Bounds computed by hand: base = 2^(2^-scale); positive bucket i ends at base^(i+1),
    /// negative bucket j (magnitudes in (base^j, base^(j+1)]) is counted at le = -base^j.
    #[test]
    fn exponential_histograms_map_to_cumulative_buckets_at_hand_computed_bounds() {
        // Scale 0, base 2: negatives in (2,4] and (4,8], one zero, positives in (1,2], (2,4],
        // (4,8].
        let mut point = exponential_point(0, 1, (0, &[1, 2, 3]), (1, &[4, 5]));
        point.sum = Some(10.0);
        point.min = Some(-7.0);
        point.max = Some(7.5);
        let mapped = map(&request(vec![exponential("x", vec![point])]));
        assert_eq!(
            ids(&mapped),
            [
                "support-bot/x_bucket",
                "support-bot/x_sum",
                "support-bot/x_count",
                "support-bot/x_min",
                "support-bot/x_max"
            ]
        );
        assert_eq!(
            buckets_of(&mapped.metrics[0]),
            pairs(&[
                ("-4", 5.0),
                ("-2", 9.0),
                ("0", 10.0),
                ("2", 11.0),
                ("4", 13.0),
                ("8", 16.0),
                ("+Inf", 16.0),
            ])
        );
        assert_eq!(series(&mapped, "support-bot/x_count").values[0].value, 16.0);
        assert_eq!(mapped.metrics[0].metric_type, MetricType::Histogram);
        assert_eq!(
            mapped.metrics[0].metadata["otlp_type"],
            "exponential_histogram"
        );

        // Scale 1, base √2, positive offset -1: ends at 1, √2, 2, 2√2.
        let mapped = map(&request(vec![exponential(
            "x",
            vec![exponential_point(1, 0, (-1, &[1, 1, 1, 1]), (0, &[]))],
        )]));
        let got: Vec<f64> = buckets_of(&mapped.metrics[0])
            .iter()
            .map(|(le, _)| le.parse::<f64>().unwrap())
            .collect();
        let sqrt2 = std::f64::consts::SQRT_2;
        let want = [0.0, 1.0, sqrt2, 2.0, 2.0 * sqrt2, f64::INFINITY];
        assert_eq!(got.len(), want.len());
        for (got, want) in got.iter().zip(want) {
            assert!(
                got == &want || ((got - want) / want).abs() < 1e-15,
                "{got} vs {want}"
            );
        }

        // Scale -1, base 4, offset -2: ends at 4^-1, 4^0, 4^1.
        let mapped = map(&request(vec![exponential(
            "x",
            vec![exponential_point(-1, 2, (-2, &[1, 1, 1]), (0, &[]))],
        )]));
        assert_eq!(
            buckets_of(&mapped.metrics[0]),
            pairs(&[
                ("0", 2.0),
                ("0.25", 3.0),
                ("1", 4.0),
                ("4", 5.0),
                ("+Inf", 5.0)
            ])
        );

        // A zero threshold is the zero bucket's bound.
        let mut point = exponential_point(0, 3, (0, &[1]), (0, &[]));
        point.zero_threshold = 0.5;
        let mapped = map(&request(vec![exponential("x", vec![point])]));
        assert_eq!(
            buckets_of(&mapped.metrics[0]),
            pairs(&[("0.5", 3.0), ("2", 4.0), ("+Inf", 4.0)])
        );

        // The largest finite bound: 2^1023.
        let mapped = map(&request(vec![exponential(
            "x",
            vec![exponential_point(0, 0, (1022, &[1]), (0, &[]))],
        )]));
        assert_eq!(buckets_of(&mapped.metrics[0])[1].0, "8.98846567431158e307");
    }

    #[test]
    fn exponential_histograms_out_of_range_reject_the_point() {
        let too_many = vec![1; MAX_EXPONENTIAL_BUCKETS / 2 + 1];
        let mut below_threshold = exponential_point(0, 1, (0, &[1]), (0, &[]));
        below_threshold.zero_threshold = 3.0;
        let mut negative_threshold = exponential_point(0, 1, (0, &[1]), (0, &[]));
        negative_threshold.zero_threshold = -1.0;
        let mut nan_threshold = exponential_point(0, 1, (0, &[1]), (0, &[]));
        nan_threshold.zero_threshold = f64::NAN;
        let mapped = map(&request(vec![exponential(
            "x",
            vec![
                exponential_point(21, 0, (0, &[1]), (0, &[])),
                exponential_point(-11, 0, (0, &[1]), (0, &[])),
                // 2^1024 overflows.
                exponential_point(0, 0, (1023, &[1]), (0, &[])),
                exponential_point(-10, 0, (0, &[1]), (0, &[])),
                // 2^-1100 underflows to 0, the zero bucket's bound.
                exponential_point(0, 0, (0, &[]), (-1100, &[1])),
                exponential_point(0, 0, (i32::MAX, &[1]), (i32::MIN, &[1])),
                exponential_point(0, 0, (0, &too_many), (0, &too_many)),
                below_threshold,
                negative_threshold,
                nan_threshold,
                exponential_point(20, 0, (0, &[1; 160]), (0, &[1; 160])),
            ],
        )]));
        assert_eq!((mapped.accepted_points, mapped.rejected_points), (1, 10));
        assert_eq!(mapped.metrics[0].values.len(), 320 + 2);
    }

    #[test]
    fn summaries_map_quantiles_sum_and_count() {
        let point = SummaryDataPoint {
            time_unix_nano: T0,
            count: 7,
            sum: 100.0,
            quantile_values: vec![
                ValueAtQuantile {
                    quantile: 0.0,
                    value: 1.0,
                },
                ValueAtQuantile {
                    quantile: 0.5,
                    value: 10.0,
                },
                ValueAtQuantile {
                    quantile: 0.99,
                    value: 42.0,
                },
                ValueAtQuantile {
                    quantile: 1.0,
                    value: 50.0,
                },
            ],
            attributes: vec![text("route", "/chat")],
            ..Default::default()
        };
        let bad = SummaryDataPoint {
            time_unix_nano: T0,
            quantile_values: vec![
                ValueAtQuantile {
                    quantile: 0.9,
                    value: 1.0,
                },
                ValueAtQuantile {
                    quantile: 0.5,
                    value: 1.0,
                },
            ],
            ..Default::default()
        };
        let out_of_range = SummaryDataPoint {
            time_unix_nano: T0,
            quantile_values: vec![ValueAtQuantile {
                quantile: 1.5,
                value: 1.0,
            }],
            ..Default::default()
        };
        let mapped = map(&request(vec![summary(
            "rpc",
            vec![point, bad, out_of_range],
        )]));
        assert_eq!((mapped.accepted_points, mapped.rejected_points), (1, 2));
        assert_eq!(
            ids(&mapped),
            [
                "support-bot/rpc",
                "support-bot/rpc_sum",
                "support-bot/rpc_count"
            ]
        );
        let quantiles: Vec<(String, f64)> = mapped.metrics[0]
            .values
            .iter()
            .map(|v| (v.tags[QUANTILE_TAG].clone(), v.value))
            .collect();
        assert_eq!(
            quantiles,
            pairs(&[("0", 1.0), ("0.5", 10.0), ("0.99", 42.0), ("1", 50.0)])
        );
        for metric in &mapped.metrics {
            assert_eq!(metric.metric_type, MetricType::Summary);
            assert_eq!(metric.values[0].tags["route"], "/chat");
            assert_eq!(metric.metadata.get("temporality"), None);
        }
        assert_eq!(
            series(&mapped, "support-bot/rpc_sum").values[0].value,
            100.0
        );
        assert_eq!(
            series(&mapped, "support-bot/rpc_count").values[0].value,
            7.0
        );
    }

    // --- GenAI semantic conventions ---------------------------------------------------------

    fn genai_attributes(token_type: Option<&str>) -> Vec<KeyValue> {
        let mut attributes = vec![
            text("gen_ai.operation.name", "chat"),
            text("gen_ai.provider.name", "openai"),
            text("gen_ai.request.model", "gpt-4o"),
            text("gen_ai.response.model", "gpt-4o-2024-08-06"),
            text("server.address", "api.openai.com"),
            kv("server.port", V::IntValue(443)),
        ];
        if let Some(token_type) = token_type {
            attributes.push(text("gen_ai.token.type", token_type));
        }
        attributes
    }

    fn genai_request(metrics: Vec<OtlpMetric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![resource_metrics(
                Some(vec![
                    text("service.name", "support-bot"),
                    text("gen_ai.agent.name", "triage"),
                ]),
                "opentelemetry.instrumentation.openai_v2",
                metrics,
            )],
        }
    }

    #[test]
    fn genai_token_usage_lands_by_name_with_the_token_type_as_a_tag() {
        // The boundaries the semantic conventions recommend.
        let bounds: Vec<f64> = (0..14).map(|i| 4f64.powi(i)).collect();
        let mut input = vec![0; 15];
        input[4] = 2; // two requests of 65..=256 input tokens
        let mut output = vec![0; 15];
        output[2] = 1; // one of 5..=16 output tokens
        let mut usage = histogram(
            "gen_ai.client.token.usage",
            CUMULATIVE,
            vec![
                histogram_point(
                    &bounds,
                    &input,
                    Some(300.0),
                    genai_attributes(Some("input")),
                ),
                histogram_point(
                    &bounds,
                    &output,
                    Some(12.0),
                    genai_attributes(Some("output")),
                ),
            ],
        );
        usage.unit = "{token}".into();
        usage.description = "Measures number of input and output tokens used".into();
        let mapped = map(&genai_request(vec![usage]));
        assert_eq!(mapped.accepted_points, 2);
        assert_eq!(
            ids(&mapped),
            [
                "triage/gen_ai.client.token.usage_bucket",
                "triage/gen_ai.client.token.usage_sum",
                "triage/gen_ai.client.token.usage_count",
            ]
        );
        let sums = series(&mapped, "triage/gen_ai.client.token.usage_sum");
        assert_eq!(sums.name, "gen_ai.client.token.usage_sum");
        assert_eq!(sums.unit.as_deref(), Some("{token}"));
        let by_type: Vec<(&str, f64)> = sums
            .values
            .iter()
            .map(|v| (v.tags["gen_ai.token.type"].as_str(), v.value))
            .collect();
        assert_eq!(by_type, [("input", 300.0), ("output", 12.0)]);
        let sample = &sums.values[0].tags;
        assert_eq!(sample[AGENT_TAG], "triage");
        assert_eq!(sample["gen_ai.request.model"], "gpt-4o");
        assert_eq!(sample["gen_ai.provider.name"], "openai");
        assert_eq!(sample["server.port"], "443");
        assert_eq!(sample["service.name"], "support-bot");
        assert_eq!(sample[SCOPE_TAG], "opentelemetry.instrumentation.openai_v2");
        let buckets = series(&mapped, "triage/gen_ai.client.token.usage_bucket");
        let input_buckets: Vec<(String, f64)> = buckets
            .values
            .iter()
            .filter(|v| v.tags["gen_ai.token.type"] == "input")
            .map(|v| (v.tags[BUCKET_TAG].clone(), v.value))
            .collect();
        assert_eq!(input_buckets.len(), 15);
        assert_eq!(input_buckets[3], ("64".to_owned(), 0.0));
        assert_eq!(input_buckets[4], ("256".to_owned(), 2.0));
        assert_eq!(input_buckets[13], ("67108864".to_owned(), 2.0));
        assert_eq!(input_buckets[14], ("+Inf".to_owned(), 2.0));
    }

    #[test]
    fn genai_operation_duration_lands_with_its_buckets_in_seconds() {
        let bounds = [
            0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
        ];
        let mut counts = vec![0; 15];
        counts[7] = 1;
        let mut failed = genai_attributes(None);
        failed.push(text("error.type", "timeout"));
        let mut duration = histogram(
            "gen_ai.client.operation.duration",
            DELTA,
            vec![
                histogram_point(&bounds, &counts, Some(0.9), genai_attributes(None)),
                histogram_point(&bounds, &[0; 15], Some(0.0), failed),
            ],
        );
        duration.unit = "s".into();
        let mapped = map(&genai_request(vec![duration]));
        let buckets = series(&mapped, "triage/gen_ai.client.operation.duration_bucket");
        assert_eq!(buckets.unit.as_deref(), Some("s"));
        let les: Vec<&str> = buckets.values[..15]
            .iter()
            .map(|v| v.tags[BUCKET_TAG].as_str())
            .collect();
        assert_eq!(
            les,
            [
                "0.01", "0.02", "0.04", "0.08", "0.16", "0.32", "0.64", "1.28", "2.56", "5.12",
                "10.24", "20.48", "40.96", "81.92", "+Inf"
            ]
        );
        assert_eq!(buckets.values[7].value, 1.0);
        assert!(
            buckets
                .values
                .iter()
                .all(|v| v.tags[TEMPORALITY_TAG] == "delta")
        );
        let failed = buckets
            .values
            .iter()
            .filter(|v| v.tags.get("error.type").map(String::as_str) == Some("timeout"))
            .count();
        assert_eq!(failed, 15);
    }

    #[test]
    fn genai_inference_usage_counters_land_per_agent() {
        let point = |agent: &str, tokens: i64| {
            let mut attributes = genai_attributes(None);
            attributes.push(text("gen_ai.agent.name", agent));
            NumberDataPoint {
                attributes,
                ..int(tokens)
            }
        };
        let mut input = sum(
            "gen_ai.client.inference.usage.input_tokens",
            true,
            CUMULATIVE,
            vec![point("planner", 1200), point("coder", 5400)],
        );
        input.unit = "{token}".into();
        let output = sum(
            "gen_ai.client.inference.usage.output_tokens",
            true,
            CUMULATIVE,
            vec![point("planner", 300)],
        );
        let mapped = map(&genai_request(vec![input, output]));
        assert_eq!(
            ids(&mapped),
            [
                "planner/gen_ai.client.inference.usage.input_tokens",
                "coder/gen_ai.client.inference.usage.input_tokens",
                "planner/gen_ai.client.inference.usage.output_tokens",
            ]
        );
        let coder = series(&mapped, "coder/gen_ai.client.inference.usage.input_tokens");
        assert_eq!(coder.metric_type, MetricType::Counter);
        assert_eq!(coder.name, "gen_ai.client.inference.usage.input_tokens");
        assert_eq!(coder.values[0].value, 5400.0);
        assert_eq!(coder.values[0].tags[AGENT_TAG], "coder");
        assert_eq!(coder.values[0].tags["gen_ai.operation.name"], "chat");
    }

    // --- responses and messages ---------------------------------------------------------------

    #[test]
    fn partial_success_reports_rejected_points_and_reasons() {
        let mapped = map(&request(vec![gauge("ok", vec![int(1)])]));
        let response = partial_success(&mapped);
        assert_eq!(response.partial_success, None);
        assert_eq!(encode_response(&response, Encoding::Json), b"{}");
        assert!(encode_response(&response, Encoding::Protobuf).is_empty());

        let mapped = map(&request(vec![gauge(
            "m",
            vec![
                int(1),
                number(f64::NAN, vec![]),
                NumberDataPoint {
                    time_unix_nano: 0,
                    ..int(1)
                },
            ],
        )]));
        let response = partial_success(&mapped);
        let partial = response.partial_success.clone().unwrap();
        assert_eq!(partial.rejected_data_points, 2);
        assert_eq!(
            partial.error_message,
            r#"2 data points rejected: metric "m": value NaN is not finite; metric "m": a data point has no timeUnixNano"#
        );
        let json: Json =
            serde_json::from_slice(&encode_response(&response, Encoding::Json)).unwrap();
        assert_eq!(json["partialSuccess"]["rejectedDataPoints"], "2");
        assert_eq!(
            json["partialSuccess"]["errorMessage"],
            partial.error_message
        );
        let decoded = ExportMetricsServiceResponse::decode(
            &encode_response(&response, Encoding::Protobuf)[..],
        )
        .unwrap();
        assert_eq!(decoded, response);
    }

    #[test]
    fn messages_are_distinct_and_at_most_five() {
        let metrics: Vec<OtlpMetric> = (0..10)
            .map(|i| gauge(&format!("bad\n{i}"), vec![int(1), int(2)]))
            .collect();
        let mapped = map(&request(metrics));
        assert_eq!(mapped.rejected_points, 20);
        assert_eq!(mapped.messages.len(), MAX_MESSAGES);
        let mut distinct = mapped.messages.clone();
        distinct.dedup();
        assert_eq!(distinct.len(), MAX_MESSAGES);
        // Long names are cut in messages.
        let mapped = map(&request(vec![gauge(&"y".repeat(600), vec![int(1)])]));
        assert!(mapped.messages[0].len() < 300, "{}", mapped.messages[0]);
    }

    // --- helpers ------------------------------------------------------------------------------

    #[test]
    fn doubles_are_formatted_short_and_round_trip() {
        for (value, text) in [
            (1.0, "1"),
            (0.1, "0.1"),
            (0.005, "0.005"),
            (-2.5, "-2.5"),
            (1e-5, "0.00001"),
            (1e-6, "1e-6"),
            (1.5e-7, "1.5e-7"),
            (9_999_999_999_999_998.0, "9999999999999998"),
            (1e16, "1e16"),
            (1e300, "1e300"),
            (1.0 / 3.0, "0.3333333333333333"),
            (0.0, "0"),
            (-0.0, "0"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(format_f64(value), text);
        }
        for value in [
            0.1 + 0.2,
            123.456,
            1e-300,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            -7e22,
        ] {
            assert_eq!(format_f64(value).parse::<f64>().unwrap(), value);
        }
    }

    #[test]
    fn base64_and_hex_follow_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
            assert_eq!(base64_decode(encoded).unwrap(), plain.as_bytes());
            assert_eq!(
                base64_decode(encoded.trim_end_matches('=')).unwrap(),
                plain.as_bytes()
            );
        }
        assert_eq!(base64_decode("-_8").unwrap(), [0xfb, 0xff]);
        for bad in ["Z", "Zg=", "Zg===", "@@@@", "Zm9v\n"] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
        assert_eq!(hex_decode("0aFf").unwrap(), [0x0a, 0xff]);
        assert_eq!(hex_decode("abc"), None);
        assert_eq!(hex_decode("zz"), None);
    }
}
