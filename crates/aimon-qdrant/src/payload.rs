//! The payload of each point: indexed fields for filters and the item itself as a JSON string.
//!
//! | collection | point id | indexed payload | also |
//! |---|---|---|---|
//! | `series` | `point_id("series", id)` | `id`, `name`, `metric_type` (keyword), `updated_us` (integer) | `doc`: the series metadata |
//! | `samples` | `sample_point_id(series, ts, tags)` | `series_id`, `name`, `tag_kv` (keyword), `ts_us` (integer) | `tags` (canonical JSON), `value_bits` |
//! | `alerts` | `point_id("alert", id)` | `id`, `status`, `severity`, `source`, `label_kv` (keyword), `severity_rank`, `start_us`, `updated_us` (integer) | `doc` |
//! | `agent_states` | `point_id("agent_state", agent_id)` | `agent_id`, `status` (keyword), `heartbeat_us` (integer) | `doc` |
//!
//! `doc` is the item serialized by serde_json (float round-trip), so every item reads back bit
//! for bit whatever the engine does with JSON numbers; a sample's value is kept as the `i64`
//! of its IEEE bits for the same reason (`-0.0`, subnormals).

use aimon_core::model::tags_json;
use aimon_core::similarity::{self, Embedder};
use aimon_core::{AgentState, Alert, Error, ErrorKind, Metric, MetricValue, Result, Tags, time};
use serde_json::{Map, Value, json};

use crate::engine::{Collection, Point};
use crate::ids::{label_kv, point_id, sample_point_id};

/// Payload field names.
pub mod field {
    /// `id` (keyword): the series or alert id, and the id of an agent state.
    pub const ID: &str = "id";
    /// `doc`: the whole item as serde_json text; what reads decode.
    pub const DOC: &str = "doc";
    /// `name` (keyword): the series name, on series and samples.
    pub const NAME: &str = "name";
    /// `metric_type` (keyword), on series.
    pub const METRIC_TYPE: &str = "metric_type";
    /// `updated_us` (integer): `updated_at` in µs, on series and alerts (retention).
    pub const UPDATED_US: &str = "updated_us";
    /// `series_id` (keyword): a sample's series.
    pub const SERIES_ID: &str = "series_id";
    /// `ts_us` (integer): a sample's timestamp in µs.
    pub const TS_US: &str = "ts_us";
    /// `tags`: a sample's tags as canonical JSON.
    pub const TAGS: &str = "tags";
    /// `tag_kv` (keyword array): a sample's tags as `key=value` entries, for tag filters.
    pub const TAG_KV: &str = "tag_kv";
    /// `value_bits`: a sample's value as the `i64` of its IEEE bits, so it reads back bit for bit.
    pub const VALUE_BITS: &str = "value_bits";
    /// `status` (keyword), on alerts and agent states.
    pub const STATUS: &str = "status";
    /// `severity` (keyword): the severity's name, on alerts.
    pub const SEVERITY: &str = "severity";
    /// `severity_rank` (integer): [`aimon_core::AlertSeverity::rank`], for `min_severity`.
    pub const SEVERITY_RANK: &str = "severity_rank";
    /// `source` (keyword), on alerts.
    pub const SOURCE: &str = "source";
    /// `start_us` (integer): an alert's `start_time` in µs.
    pub const START_US: &str = "start_us";
    /// `label_kv` (keyword array): an alert's labels as `key=value` entries.
    pub const LABEL_KV: &str = "label_kv";
    /// `agent_id` (keyword), on agent states.
    pub const AGENT_ID: &str = "agent_id";
    /// `heartbeat_us` (integer): an agent state's `last_heartbeat` in µs.
    pub const HEARTBEAT_US: &str = "heartbeat_us";
}

/// How a payload field is indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    /// Exact matches on strings (and elements of string arrays).
    Keyword,
    /// Ranges over integers.
    Integer,
}

/// The payload indexes of a collection: every field a filter uses.
pub fn indexes(collection: Collection) -> &'static [(&'static str, IndexKind)] {
    use IndexKind::{Integer, Keyword};
    match collection {
        Collection::Series => &[
            (field::ID, Keyword),
            (field::NAME, Keyword),
            (field::METRIC_TYPE, Keyword),
            (field::UPDATED_US, Integer),
        ],
        Collection::Samples => &[
            (field::SERIES_ID, Keyword),
            (field::NAME, Keyword),
            (field::TAG_KV, Keyword),
            (field::TS_US, Integer),
        ],
        Collection::Alerts => &[
            (field::ID, Keyword),
            (field::STATUS, Keyword),
            (field::SEVERITY, Keyword),
            (field::SOURCE, Keyword),
            (field::LABEL_KV, Keyword),
            (field::SEVERITY_RANK, Integer),
            (field::START_US, Integer),
            (field::UPDATED_US, Integer),
        ],
        Collection::AgentStates => &[
            (field::AGENT_ID, Keyword),
            (field::STATUS, Keyword),
            (field::HEARTBEAT_US, Integer),
        ],
    }
}

fn to_doc<T: serde::Serialize>(item: &T) -> Result<String> {
    serde_json::to_string(item).map_err(|e| {
        Error::new(ErrorKind::InvalidInput, "cannot serialize the item").with_source(e)
    })
}

fn corrupted(what: &str) -> Error {
    Error::corrupted(format!("a stored point has no valid {what}"))
}

fn doc<T: serde::de::DeserializeOwned>(payload: &Map<String, Value>) -> Result<T> {
    let text = payload
        .get(field::DOC)
        .and_then(Value::as_str)
        .ok_or_else(|| corrupted("doc"))?;
    serde_json::from_str(text).map_err(|e| corrupted("doc").with_source(e))
}

fn int(payload: &Map<String, Value>, key: &str) -> Result<i64> {
    payload
        .get(key)
        .and_then(Value::as_i64)
        .ok_or_else(|| corrupted(key))
}

fn string<'a>(payload: &'a Map<String, Value>, key: &str) -> Result<&'a str> {
    payload
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| corrupted(key))
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn kv_array(tags: &Tags) -> Value {
    Value::Array(
        tags.iter()
            .map(|(k, v)| Value::String(label_kv(k, v)))
            .collect(),
    )
}

/// The vector of collections without vectors of their own (series, samples).
pub const UNIT_VECTOR: [f32; 1] = [1.0];

/// The stored vector of an item: its vector scaled to unit length (so Qdrant's dot product is
/// the cosine), or zeros when it cannot be compared (another dimension than the collection's).
pub fn stored_vector(mut v: Vec<f32>, dimension: usize) -> Vec<f32> {
    if v.len() != dimension || v.iter().any(|x| !x.is_finite()) {
        return vec![0.0; dimension];
    }
    similarity::normalize(&mut v);
    v
}

/// A series document (metadata, no samples).
pub fn series_point(meta: &Metric) -> Result<Point> {
    let payload = json!({
        field::ID: meta.id,
        field::NAME: meta.name,
        field::METRIC_TYPE: meta.metric_type.as_str(),
        field::UPDATED_US: time::to_micros(meta.updated_at),
        field::DOC: to_doc(meta)?,
    });
    Ok(Point {
        id: point_id("series", &meta.id),
        vector: UNIT_VECTOR.to_vec(),
        payload: object(payload),
    })
}

/// The series (metadata, no samples) stored in a point's `doc`; `Corrupted` if it is missing or
/// unreadable.
pub fn decode_series(payload: &Map<String, Value>) -> Result<Metric> {
    doc(payload)
}

/// One sample of series `meta`.
pub fn sample_point(meta: &Metric, sample: &MetricValue) -> Point {
    let ts = time::to_micros(sample.timestamp);
    let tags = tags_json(&sample.tags);
    let payload = json!({
        field::SERIES_ID: meta.id,
        field::NAME: meta.name,
        field::TS_US: ts,
        field::TAG_KV: kv_array(&sample.tags),
        field::TAGS: tags,
        field::VALUE_BITS: sample.value.to_bits() as i64,
    });
    Point {
        id: sample_point_id(&meta.id, ts, &tags),
        vector: UNIT_VECTOR.to_vec(),
        payload: object(payload),
    }
}

/// A stored sample: series id, timestamp (µs), canonical tags JSON, tags and value.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSample {
    /// The sample's series.
    pub series_id: String,
    /// Timestamp, µs since the Unix epoch.
    pub ts: i64,
    /// The tags as canonical JSON; orders samples that share a timestamp.
    pub tags_json: String,
    /// The tags.
    pub tags: Tags,
    /// The value, bit for bit as written.
    pub value: f64,
}

impl StoredSample {
    /// The sample as the model's [`MetricValue`].
    pub fn to_value(&self) -> MetricValue {
        MetricValue {
            timestamp: time::from_micros(self.ts),
            value: self.value,
            tags: self.tags.clone(),
        }
    }
}

/// The sample a point of the `samples` collection holds; `Corrupted` if a field is missing or
/// malformed.
pub fn decode_sample(payload: &Map<String, Value>) -> Result<StoredSample> {
    let tags_json = string(payload, field::TAGS)?.to_owned();
    let tags: Tags =
        serde_json::from_str(&tags_json).map_err(|e| corrupted(field::TAGS).with_source(e))?;
    Ok(StoredSample {
        series_id: string(payload, field::SERIES_ID)?.to_owned(),
        ts: int(payload, field::TS_US)?,
        tags_json,
        tags,
        value: f64::from_bits(int(payload, field::VALUE_BITS)? as u64),
    })
}

/// An alert (timestamps already truncated to the microsecond) and its vector.
pub fn alert_point(alert: &Alert, embedder: &dyn Embedder) -> Result<Point> {
    let payload = json!({
        field::ID: alert.id,
        field::STATUS: alert.status.as_str(),
        field::SEVERITY: alert.severity.as_str(),
        field::SEVERITY_RANK: alert.severity.rank(),
        field::SOURCE: alert.source,
        field::START_US: time::to_micros(alert.start_time),
        field::UPDATED_US: time::to_micros(alert.updated_at),
        field::LABEL_KV: kv_array(&alert.labels),
        field::DOC: to_doc(alert)?,
    });
    let vector = stored_vector(
        similarity::alert_vector(alert, embedder),
        embedder.dimension(),
    );
    Ok(Point {
        id: point_id("alert", &alert.id),
        vector,
        payload: object(payload),
    })
}

/// The alert stored in a point's `doc`; `Corrupted` if it is missing or unreadable.
pub fn decode_alert(payload: &Map<String, Value>) -> Result<Alert> {
    doc(payload)
}

/// The latest state of an agent and its vector.
pub fn agent_state_point(state: &AgentState, embedder: &dyn Embedder) -> Result<Point> {
    let payload = json!({
        field::AGENT_ID: state.agent_id,
        field::ID: state.id,
        field::STATUS: state.status,
        field::HEARTBEAT_US: time::to_micros(state.last_heartbeat),
        field::DOC: to_doc(state)?,
    });
    let vector = stored_vector(
        similarity::agent_state_vector(state, embedder),
        embedder.dimension(),
    );
    Ok(Point {
        id: point_id("agent_state", &state.agent_id),
        vector,
        payload: object(payload),
    })
}

/// The agent state stored in a point's `doc`; `Corrupted` if it is missing or unreadable.
pub fn decode_agent_state(payload: &Map<String, Value>) -> Result<AgentState> {
    doc(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aimon_core::{AlertSeverity, HashingEmbedder, MetricType};

    #[test]
    fn samples_round_trip_bits_and_tags() {
        let meta = Metric::new("s-1", "cpu", MetricType::Gauge);
        for value in [-0.0, f64::MIN_POSITIVE / 2.0, 1e308, 0.1] {
            let sample = MetricValue::new(time::now(), value).tag("a.b[\"c\"]", "x=y");
            let p = sample_point(&meta, &sample);
            let back = decode_sample(&p.payload).unwrap();
            assert_eq!(back.value.to_bits(), value.to_bits());
            assert_eq!(back.tags, sample.tags);
            assert_eq!(back.series_id, "s-1");
        }
    }

    #[test]
    fn alerts_round_trip_and_carry_unit_vectors() {
        let e = HashingEmbedder::default();
        let alert = Alert::new("a-1", "GPU out of memory", AlertSeverity::High, "worker-1");
        let p = alert_point(&alert, &e).unwrap();
        assert_eq!(decode_alert(&p.payload).unwrap(), alert);
        let norm: f64 = p.vector.iter().map(|x| f64::from(*x) * f64::from(*x)).sum();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        assert_eq!(p.payload[field::SEVERITY_RANK], json!(3));
    }

    #[test]
    fn wrong_dimension_vectors_are_stored_as_zeros() {
        assert_eq!(stored_vector(vec![1.0, 2.0], 3), vec![0.0; 3]);
        assert_eq!(stored_vector(vec![3.0, 4.0], 2), vec![0.6, 0.8]);
    }

    #[test]
    fn a_payload_without_doc_is_corrupted() {
        let err = decode_alert(&Map::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted);
    }
}
