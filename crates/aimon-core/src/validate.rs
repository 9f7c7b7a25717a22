//! Validation, the same for every backend (DESIGN.md rule 7).
//!
//! Every write and every query goes through here before a backend touches its store, so a value
//! that one backend rejects is rejected by all, with an [`ErrorKind::InvalidInput`] error naming
//! the field. The limits:
//!
//! | what | rule |
//! |---|---|
//! | ids, names, metric/agent status, alert source, tag and label keys | 1..=[`MAX_NAME_BYTES`] bytes, no control characters |
//! | tag and label values | 1..=[`MAX_TAG_VALUE_BYTES`] bytes, no control characters |
//! | a sample's tags, an alert's labels | at most [`MAX_TAGS`] pairs and [`MAX_TAGS_BYTES`] bytes of keys and values together |
//! | unit, `acknowledged_by`, `resolved_by` | like names |
//! | description, annotation values | up to [`MAX_TEXT_BYTES`]; newlines and tabs allowed, no NUL |
//! | an alert's annotations | up to [`MAX_TEXT_BYTES`] of keys and values together |
//! | metadata and agent `metrics` (JSON) | no NUL in any key or string; nesting up to [`MAX_JSON_DEPTH`]; up to [`MAX_METADATA_BYTES`] as compact JSON |
//! | an alert, an agent state | up to [`MAX_DOCUMENT_BYTES`] as compact JSON |
//! | sample values | finite (no NaN, no ±Inf) |
//! | embeddings (alerts, agent states) | 1..=[`MAX_EMBEDDING_DIMENSION`] finite values, not all zeros |
//! | timestamps | from 1970-01-01 to before 2262-01-01 UTC; stored to the microsecond |
//!
//! The limits on sums (tags, annotations, metadata, documents) are what every backend can
//! honour, so a valid item is stored everywhere or rejected everywhere, before any write: an
//! InfluxDB series key (measurement, series id and tags, escaped) must stay under 64 KiB, and a
//! write request under its server's body limit (25 MB by default).
//!
//! [`ErrorKind::InvalidInput`]: crate::ErrorKind::InvalidInput

use std::fmt;
use std::ops::Range;

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::model::{AgentState, Alert, Metadata, Metric, Tags};
use crate::time;

/// Longest id, name, tag key or label key, in bytes.
pub const MAX_NAME_BYTES: usize = 512;
/// Longest tag or label value, in bytes.
pub const MAX_TAG_VALUE_BYTES: usize = 16 * 1024;
/// Longest description or annotation value, in bytes.
pub const MAX_TEXT_BYTES: usize = 1 << 20;
/// Deepest nesting of metadata JSON.
pub const MAX_JSON_DEPTH: usize = 32;
/// Longest embedding an item may carry or a query may supply.
pub const MAX_EMBEDDING_DIMENSION: usize = 4096;
/// Most tags of one sample, or labels of one alert.
pub const MAX_TAGS: usize = 256;
/// Most bytes of one sample's tags (or one alert's labels), keys and values together. With the
/// longest series id, [`MAX_TAGS`] tags and InfluxDB's worst-case escaping (three bytes per
/// byte), a series key stays under InfluxDB's 65,535-byte limit.
pub const MAX_TAGS_BYTES: usize = 20 * 1024;
/// Most bytes of one metadata map (or agent `metrics`) as compact JSON.
pub const MAX_METADATA_BYTES: usize = 1 << 20;
/// Most bytes of one alert or agent state as compact JSON (as the portable archive stores it).
pub const MAX_DOCUMENT_BYTES: usize = 4 << 20;

/// Checks a vector: 1..=[`MAX_EMBEDDING_DIMENSION`] finite values, not all zeros (a zero vector
/// has no direction, so no cosine similarity).
pub fn embedding(field: impl fmt::Display, vector: &[f32]) -> Result<()> {
    if vector.is_empty() || vector.len() > MAX_EMBEDDING_DIMENSION {
        return Err(Error::invalid_input(
            field,
            format!(
                "has {} values; an embedding has 1..={MAX_EMBEDDING_DIMENSION}",
                vector.len()
            ),
        ));
    }
    if let Some((i, x)) = vector.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(Error::invalid_input(
            field,
            format!("value [{i}] must be finite, got {x}"),
        ));
    }
    if vector.iter().all(|x| *x == 0.0) {
        return Err(Error::invalid_input(field, "is all zeros"));
    }
    Ok(())
}

fn optional_embedding(field: impl fmt::Display, vector: Option<&[f32]>) -> Result<()> {
    vector.map_or(Ok(()), |v| embedding(field, v))
}

/// Checks an identifier-like string: ids, names, tag keys.
pub fn name(field: impl fmt::Display, value: &str) -> Result<()> {
    bounded_plain(field, value, MAX_NAME_BYTES)
}

fn bounded_plain(field: impl fmt::Display, value: &str, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid_input(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(Error::invalid_input(
            field,
            format!("is {} bytes long; the limit is {max}", value.len()),
        ));
    }
    // Most names are ASCII without control bytes: one pass over the bytes settles them, and
    // only the rest are decoded (Unicode's C1 controls U+0080..=U+009F are not single bytes).
    if printable_ascii(value.as_bytes()) {
        return Ok(());
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(Error::invalid_input(
            field,
            format!("contains the control character {:?}", c),
        ));
    }
    Ok(())
}

/// Whether every byte is printable ASCII, `0x20..=0x7e`, a word at a time: eight bytes per
/// step and an overlapping last word (two overlapping four-byte words below eight bytes). A
/// byte outside the range sets the high bit of its lane in `w` (≥ 0x80), `w - 0x20…` (< 0x20)
/// or `w + 0x01…` (0x7f); a borrow or carry between lanes starts only at such a byte, so it
/// can flag another lane only of a word that is rejected anyway.
#[inline]
fn printable_ascii(bytes: &[u8]) -> bool {
    const L8: u64 = u64::from_ne_bytes([0x01; 8]);
    const L4: u32 = u32::from_ne_bytes([0x01; 4]);
    let bad8 = |chunk: &[u8]| {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        (w | w.wrapping_sub(0x20 * L8) | w.wrapping_add(L8)) & (0x80 * L8)
    };
    let bad4 = |chunk: &[u8]| {
        let mut word = [0u8; 4];
        word.copy_from_slice(chunk);
        let w = u32::from_le_bytes(word);
        (w | w.wrapping_sub(0x20 * L4) | w.wrapping_add(L4)) & (0x80 * L4)
    };
    let n = bytes.len();
    if n >= 8 {
        let mut flags = bad8(&bytes[n - 8..]);
        for chunk in bytes.chunks_exact(8) {
            flags |= bad8(chunk);
        }
        flags == 0
    } else if n >= 4 {
        bad4(&bytes[..4]) | bad4(&bytes[n - 4..]) == 0
    } else {
        bytes.iter().all(|b| (0x20..0x7f).contains(b))
    }
}

/// Whether a tag key and value are short printable ASCII, which [`tags`] accepts without a
/// closer look (and without building the field names its errors would carry).
#[inline]
fn plain_tag(key: &str, value: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_NAME_BYTES
        && !value.is_empty()
        && value.len() <= MAX_TAG_VALUE_BYTES
        && printable_ascii(key.as_bytes())
        && printable_ascii(value.as_bytes())
}

/// Checks free text (descriptions, annotation values): anything but NUL, bounded.
pub fn text(field: impl fmt::Display, value: &str) -> Result<()> {
    if value.len() > MAX_TEXT_BYTES {
        return Err(Error::invalid_input(
            field,
            format!(
                "is {} bytes long; the limit is {MAX_TEXT_BYTES}",
                value.len()
            ),
        ));
    }
    if value.contains('\0') {
        return Err(Error::invalid_input(field, "contains a NUL character"));
    }
    Ok(())
}

/// Checks a timestamp against the accepted range.
pub fn timestamp(field: impl fmt::Display, ts: DateTime<Utc>) -> Result<()> {
    if time::in_range(ts) {
        Ok(())
    } else {
        Err(Error::invalid_input(
            field,
            format!(
                "{} is outside the accepted range 1970-01-01T00:00:00Z..2262-01-01T00:00:00Z",
                time::format(ts)
            ),
        ))
    }
}

/// Whether a tag map is within [`MAX_TAGS`] and [`MAX_TAGS_BYTES`].
#[inline]
fn tags_fit(tags: &Tags) -> bool {
    tags.len() <= MAX_TAGS
        && tags.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>() <= MAX_TAGS_BYTES
}

/// Checks a tag map (sample tags, alert labels).
pub fn tags(field: impl fmt::Display, tags: &Tags) -> Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(Error::invalid_input(
            field,
            format!("has {} tags; the limit is {MAX_TAGS}", tags.len()),
        ));
    }
    let bytes: usize = tags.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_TAGS_BYTES {
        return Err(Error::invalid_input(
            field,
            format!("hold {bytes} bytes of keys and values; the limit is {MAX_TAGS_BYTES} in all"),
        ));
    }
    for (key, value) in tags {
        // Runs for every tag of every sample: the usual tag is settled here.
        if plain_tag(key, value) {
            continue;
        }
        name(format_args!("{field} key {key:?}"), key)?;
        bounded_plain(format_args!("{field}[{key:?}]"), value, MAX_TAG_VALUE_BYTES)?;
    }
    Ok(())
}

/// The length of `value` as compact JSON, without building the text.
pub fn json_len(value: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serializing our own models cannot fail (string keys, finite or null numbers).
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// Checks that `value`, as compact JSON, is at most `max` bytes.
fn json_bounded(field: impl fmt::Display, value: &impl serde::Serialize, max: usize) -> Result<()> {
    let len = json_len(value);
    if len > max {
        return Err(Error::invalid_input(
            field,
            format!("is {len} bytes as JSON; the limit is {max}"),
        ));
    }
    Ok(())
}

/// Checks metadata JSON: no NUL anywhere (PostgreSQL cannot store it), bounded depth, at most
/// [`MAX_METADATA_BYTES`] as compact JSON.
pub fn metadata(field: &str, map: &Metadata) -> Result<()> {
    if !map.is_empty() {
        json_bounded(field, map, MAX_METADATA_BYTES)?;
    }
    fn walk(field: &str, value: &serde_json::Value, depth: usize) -> Result<()> {
        if depth > MAX_JSON_DEPTH {
            return Err(Error::invalid_input(
                field,
                format!("nests deeper than {MAX_JSON_DEPTH} levels"),
            ));
        }
        match value {
            serde_json::Value::String(s) if s.contains('\0') => {
                Err(Error::invalid_input(field, "contains a NUL character"))
            }
            serde_json::Value::Array(items) => {
                items.iter().try_for_each(|v| walk(field, v, depth + 1))
            }
            serde_json::Value::Object(map) => map.iter().try_for_each(|(k, v)| {
                if k.contains('\0') {
                    return Err(Error::invalid_input(
                        field,
                        "has a key with a NUL character",
                    ));
                }
                walk(field, v, depth + 1)
            }),
            _ => Ok(()),
        }
    }
    map.iter().try_for_each(|(k, v)| {
        if k.contains('\0') {
            return Err(Error::invalid_input(
                field,
                "has a key with a NUL character",
            ));
        }
        walk(field, v, 1)
    })
}

fn optional_name(field: impl fmt::Display, value: Option<&str>) -> Result<()> {
    value.map_or(Ok(()), |v| name(field, v))
}

fn optional_text(field: impl fmt::Display, value: Option<&str>) -> Result<()> {
    value.map_or(Ok(()), |v| text(field, v))
}

fn optional_timestamp(field: impl fmt::Display, value: Option<DateTime<Utc>>) -> Result<()> {
    value.map_or(Ok(()), |v| timestamp(field, v))
}

/// Checks one metric and all its samples.
pub fn metric(metric: &Metric) -> Result<()> {
    metric_runs(metric, |_| ())
}

/// Checks one metric exactly as [`metric`] does, and hands `on_run` its samples in runs: each
/// maximal range of consecutive samples with equal tags, in order, covering every sample (none
/// for a metric without samples). Runs are reported as they end, so a caller must not act on
/// them before the whole batch has passed.
///
/// A sample whose tags equal its run's first is not checked again: comparing costs what
/// checking does, so the runs come for free (where tags change from sample to sample, the
/// comparison usually stops at the first pair). Drivers that encode a series key per run (the
/// InfluxDB line protocol) use them instead of a second walk over every sample's tags.
pub fn metric_runs(metric: &Metric, mut on_run: impl FnMut(Range<usize>)) -> Result<()> {
    name("metric id", &metric.id)?;
    let ctx = |e: Error| e.with_context("metric_id", &metric.id);
    name("metric name", &metric.name).map_err(ctx)?;
    optional_text("metric description", metric.description.as_deref()).map_err(ctx)?;
    optional_name("metric unit", metric.unit.as_deref()).map_err(ctx)?;
    metadata("metric metadata", &metric.metadata).map_err(ctx)?;
    timestamp("metric created_at", metric.created_at).map_err(ctx)?;
    timestamp("metric updated_at", metric.updated_at).map_err(ctx)?;
    let mut run_start = 0;
    for (i, sample) in metric.values.iter().enumerate() {
        // The run's first sample passed, so equal tags are valid tags.
        let in_run = i > run_start && sample.tags == metric.values[run_start].tags;
        // Runs for every sample: the usual one is settled without building field names.
        let settled = sample.value.is_finite()
            && time::in_range(sample.timestamp)
            && (in_run
                || (sample.tags.iter().all(|(k, v)| plain_tag(k, v)) && tags_fit(&sample.tags)));
        if !settled {
            if !sample.value.is_finite() {
                return Err(Error::invalid_input(
                    format_args!("values[{i}].value"),
                    format!("must be finite, got {}", sample.value),
                )
                .with_context("metric_id", &metric.id));
            }
            timestamp(format_args!("values[{i}].timestamp"), sample.timestamp).map_err(ctx)?;
            if !in_run {
                // The field name is formatted only if a tag fails: this runs for every sample.
                tags(format_args!("values[{i}].tags"), &sample.tags).map_err(ctx)?;
            }
        }
        if !in_run && i > 0 {
            on_run(run_start..i);
            run_start = i;
        }
    }
    if !metric.values.is_empty() {
        on_run(run_start..metric.values.len());
    }
    Ok(())
}

/// Checks one alert.
pub fn alert(alert: &Alert) -> Result<()> {
    name("alert id", &alert.id)?;
    let ctx = |e: Error| e.with_context("alert_id", &alert.id);
    name("alert name", &alert.name).map_err(ctx)?;
    name("alert source", &alert.source).map_err(ctx)?;
    optional_text("alert description", alert.description.as_deref()).map_err(ctx)?;
    timestamp("alert start_time", alert.start_time).map_err(ctx)?;
    optional_timestamp("alert end_time", alert.end_time).map_err(ctx)?;
    optional_name("alert acknowledged_by", alert.acknowledged_by.as_deref()).map_err(ctx)?;
    optional_timestamp("alert acknowledged_at", alert.acknowledged_at).map_err(ctx)?;
    optional_name("alert resolved_by", alert.resolved_by.as_deref()).map_err(ctx)?;
    optional_timestamp("alert resolved_at", alert.resolved_at).map_err(ctx)?;
    tags("alert labels", &alert.labels).map_err(ctx)?;
    let mut annotation_bytes = 0;
    for (key, value) in &alert.annotations {
        name(format_args!("alert annotations key {key:?}"), key).map_err(ctx)?;
        text(format_args!("alert annotations[{key:?}]"), value).map_err(ctx)?;
        annotation_bytes += key.len() + value.len();
    }
    if annotation_bytes > MAX_TEXT_BYTES {
        return Err(Error::invalid_input(
            "alert annotations",
            format!(
                "hold {annotation_bytes} bytes of keys and values; the limit is \
                 {MAX_TEXT_BYTES} in all"
            ),
        )
        .with_context("alert_id", &alert.id));
    }
    metadata("alert metadata", &alert.metadata).map_err(ctx)?;
    optional_embedding("alert embedding", alert.embedding.as_deref()).map_err(ctx)?;
    timestamp("alert created_at", alert.created_at).map_err(ctx)?;
    timestamp("alert updated_at", alert.updated_at).map_err(ctx)?;
    json_bounded("alert", alert, MAX_DOCUMENT_BYTES).map_err(ctx)
}

/// Checks one agent state.
pub fn agent_state(state: &AgentState) -> Result<()> {
    name("agent state id", &state.id)?;
    let ctx = |e: Error| e.with_context("agent_state_id", &state.id);
    name("agent_id", &state.agent_id).map_err(ctx)?;
    name("agent status", &state.status).map_err(ctx)?;
    metadata("agent metrics", &state.metrics).map_err(ctx)?;
    metadata("agent metadata", &state.metadata).map_err(ctx)?;
    optional_embedding("agent embedding", state.embedding.as_deref()).map_err(ctx)?;
    timestamp("agent last_heartbeat", state.last_heartbeat).map_err(ctx)?;
    timestamp("agent created_at", state.created_at).map_err(ctx)?;
    timestamp("agent updated_at", state.updated_at).map_err(ctx)?;
    json_bounded("agent state", state, MAX_DOCUMENT_BYTES).map_err(ctx)
}

/// Checks a whole batch before any of it is written: one bad item rejects the batch.
pub fn metrics(batch: &[Metric]) -> Result<()> {
    batch.iter().try_for_each(metric)
}

/// Checks a batch of alerts.
pub fn alerts(batch: &[Alert]) -> Result<()> {
    batch.iter().try_for_each(alert)
}

/// Checks a batch of agent states.
pub fn agent_states(batch: &[AgentState]) -> Result<()> {
    batch.iter().try_for_each(agent_state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MetricType, MetricValue};
    use crate::{ErrorKind, time};

    fn cpu() -> Metric {
        Metric::new("m1", "cpu", MetricType::Gauge)
    }

    /// What [`metric_runs`] must agree with: every sample checked on its own, and runs found
    /// by comparing each sample with its run's first.
    fn reference_runs(m: &Metric) -> Result<Vec<Range<usize>>> {
        for (i, sample) in m.values.iter().enumerate() {
            if !sample.value.is_finite() {
                return Err(Error::invalid_input(
                    format!("values[{i}].value"),
                    "not finite",
                ));
            }
            timestamp(format_args!("values[{i}].timestamp"), sample.timestamp)?;
            tags(format_args!("values[{i}].tags"), &sample.tags)?;
        }
        let mut runs: Vec<Range<usize>> = Vec::new();
        for (i, sample) in m.values.iter().enumerate() {
            match runs.last_mut() {
                Some(run) if m.values[run.start].tags == sample.tags => run.end = i + 1,
                _ => runs.push(i..i + 1),
            }
        }
        Ok(runs)
    }

    fn runs_of(m: &Metric) -> Result<Vec<Range<usize>>> {
        let mut runs = Vec::new();
        metric_runs(m, |r| runs.push(r))?;
        Ok(runs)
    }

    #[test]
    fn runs_group_consecutive_equal_tags() {
        let t = |v: &str| Tags::from([("k".to_owned(), v.to_owned())]);
        let mut m = cpu();
        for tags in [t("a"), t("a"), t("b"), Tags::new(), Tags::new(), t("a")] {
            m.values.push(MetricValue {
                timestamp: time::now(),
                value: 1.0,
                tags,
            });
        }
        assert_eq!(runs_of(&m).unwrap(), vec![0..2, 2..3, 3..5, 5..6]);
        assert_eq!(runs_of(&cpu()).unwrap(), Vec::<Range<usize>>::new());
    }

    /// A sample inside a run is still checked for its value and time, and reported by index.
    #[test]
    fn a_bad_sample_inside_a_run_is_reported() {
        let t = Tags::from([("host".to_owned(), "h1".to_owned())]);
        for (bad_value, bad_time, field) in [
            (f64::NAN, time::now(), "values[2].value"),
            (1.0, time::from_micros(-1), "values[2].timestamp"),
        ] {
            let mut m = cpu();
            for i in 0..4 {
                let (value, timestamp) = if i == 2 {
                    (bad_value, bad_time)
                } else {
                    (1.0, time::now())
                };
                m.values.push(MetricValue {
                    timestamp,
                    value,
                    tags: t.clone(),
                });
            }
            let err = metric_runs(&m, |_| ()).unwrap_err();
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1_000))]

        /// `metric_runs` accepts exactly the metrics that checking every sample on its own
        /// accepts, reports the same sample when it refuses, and its runs are the maximal runs
        /// of equal tags.
        #[test]
        fn runs_agree_with_checking_every_sample(
            samples in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["", "a", "b", "x\ny", "é", "t\u{85}"]),
                    proptest::sample::select(vec!["v", "w", "", "line\nbreak", "🚀"]),
                    proptest::bool::weighted(0.95),
                    proptest::bool::weighted(0.95),
                ),
                0..12,
            )
        ) {
            let mut m = cpu();
            for (key, value, finite, in_range) in samples {
                let tags = if key.is_empty() && value == "v" {
                    Tags::new()
                } else {
                    Tags::from([(key.to_owned(), value.to_owned())])
                };
                m.values.push(MetricValue {
                    timestamp: if in_range { time::now() } else { time::from_micros(-5) },
                    value: if finite { 1.5 } else { f64::INFINITY },
                    tags,
                });
            }
            match (runs_of(&m), reference_runs(&m)) {
                (Ok(got), Ok(want)) => proptest::prop_assert_eq!(got, want),
                (Err(got), Err(want)) => {
                    // The failing field, e.g. `values[3].tags key "a"`.
                    let field = |e: &Error| {
                        let text = e.to_string();
                        text.find("values[").map(|at| text[at..].split(':').next().map(str::to_owned))
                    };
                    proptest::prop_assert_eq!(field(&got), field(&want), "{} / {}", got, want);
                }
                (got, want) => proptest::prop_assert!(false, "{got:?} / {want:?}"),
            }
        }
    }

    #[test]
    fn nan_and_infinities_are_rejected_naming_the_sample() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let m = cpu().with_value(MetricValue::new(time::now(), bad));
            let err = metric(&m).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
            assert!(err.to_string().contains("values[0].value"), "{err}");
        }
    }

    #[test]
    fn control_characters_and_empty_names_are_rejected() {
        // U+0085 and U+009F are controls that are not single bytes.
        for bad in [
            "",
            "a\nb",
            "tab\there",
            "nul\0",
            "del\u{7f}",
            "nel\u{85}",
            "apc\u{9f}é",
        ] {
            assert!(name("name", bad).is_err(), "{bad:?}");
        }
        assert!(name("name", "quotes ' \" , = * \\ 🚀").is_ok());
        assert!(name("name", "é\u{a0}ü").is_ok());
    }

    #[test]
    fn printable_ascii_matches_the_bytewise_rule() {
        let naive = |b: &[u8]| b.iter().all(|c| (0x20..0x7f).contains(c));
        for len in 0..=20 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    for fill in [b'a', b' ', b'~'] {
                        let mut bytes = vec![fill; len];
                        bytes[at] = byte;
                        assert_eq!(printable_ascii(&bytes), naive(&bytes), "{bytes:?}");
                        // A second odd byte next to it, for borrows and carries between lanes.
                        if at + 1 < len {
                            for other in [0x00, 0x1f, 0x20, 0x7e, 0x7f, 0x80, 0xff] {
                                bytes[at + 1] = other;
                                assert_eq!(printable_ascii(&bytes), naive(&bytes), "{bytes:?}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn tag_errors_name_the_key() {
        let m = cpu().with_value(MetricValue::new(time::now(), 1.0).tag("bad\u{85}", "v"));
        let err = metric(&m).unwrap_err();
        assert!(err.to_string().contains("values[0].tags key"), "{err}");
        let m = cpu().with_value(MetricValue::new(time::now(), 1.0).tag("k", ""));
        let err = metric(&m).unwrap_err();
        assert!(err.to_string().contains("values[0].tags[\"k\"]"), "{err}");
        let ok = cpu().with_value(MetricValue::new(time::now(), 1.0).tag("zone 🚀", "é"));
        assert!(metric(&ok).is_ok());
    }

    #[test]
    fn long_tag_values_are_rejected() {
        let m = cpu()
            .with_value(MetricValue::new(time::now(), 1.0).tag("k", "x".repeat(16 * 1024 + 1)));
        let err = metric(&m).unwrap_err();
        assert!(err.to_string().contains("limit is 16384"), "{err}");
    }

    #[test]
    fn tag_sets_are_bounded_in_count_and_bytes() {
        let at = |tags: Tags| {
            cpu().with_value(MetricValue {
                timestamp: time::now(),
                value: 1.0,
                tags,
            })
        };
        let many = |n: usize, value: &str| {
            (0..n)
                .map(|i| (format!("k{i:04}"), value.to_owned()))
                .collect::<Tags>()
        };
        assert!(metric(&at(many(MAX_TAGS, "v"))).is_ok());
        let err = metric(&at(many(MAX_TAGS + 1, "v"))).unwrap_err();
        assert!(
            err.to_string().contains("values[0].tags: has 257 tags"),
            "{err}"
        );
        // 10 tags of 10 KiB: each is valid, together too large.
        let err = metric(&at(many(10, &"x".repeat(10 * 1024)))).unwrap_err();
        assert!(
            err.to_string().contains("the limit is 20480 in all"),
            "{err}"
        );
        // Exactly at the limit: one key of 5 bytes and a value of the rest.
        let exact = Tags::from([("k0000".to_owned(), "x".repeat(MAX_TAGS_BYTES - 5))]);
        let err = metric(&at(exact.clone())).unwrap_err();
        assert!(err.to_string().contains("limit is 16384"), "{err}");
        let mut exact = Tags::new();
        exact.insert("a".to_owned(), "x".repeat(MAX_TAG_VALUE_BYTES));
        exact.insert(
            "b".to_owned(),
            "y".repeat(MAX_TAGS_BYTES - MAX_TAG_VALUE_BYTES - 2),
        );
        assert!(metric(&at(exact.clone())).is_ok());
        exact.insert("c".to_owned(), "z".to_owned());
        assert!(metric(&at(exact)).is_err());
    }

    #[test]
    fn documents_and_metadata_are_bounded() {
        let mut m = cpu();
        m.metadata.insert(
            "k".into(),
            serde_json::json!("x".repeat(MAX_METADATA_BYTES)),
        );
        let err = metric(&m).unwrap_err();
        assert!(
            err.to_string()
                .contains("metric metadata: is 1048584 bytes as JSON"),
            "{err}"
        );
        let mut a = Alert::new("a", "n", crate::model::AlertSeverity::Info, "s");
        for i in 0..5 {
            a.annotations
                .insert(format!("k{i}"), "x".repeat(MAX_TEXT_BYTES / 4));
        }
        let err = alert(&a).unwrap_err();
        assert!(err.to_string().contains("alert annotations: hold"), "{err}");
        a.annotations.clear();
        // Each part within its limit, the whole over the document limit.
        a.description = Some("\u{1}".repeat(MAX_TEXT_BYTES));
        let err = alert(&a).unwrap_err();
        assert!(err.to_string().contains("alert: is"), "{err}");
        a.description = Some("d".repeat(MAX_TEXT_BYTES));
        assert!(alert(&a).is_ok());
        assert_eq!(json_len(&a), serde_json::to_vec(&a).unwrap().len());
    }

    #[test]
    fn nul_in_metadata_is_rejected() {
        let mut m = cpu();
        m.metadata
            .insert("k".into(), serde_json::json!(["ok", "bad\u{0}"]));
        assert!(metric(&m).is_err());
    }
}
