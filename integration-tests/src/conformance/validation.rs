//! Rule 7: validation and exact round trips of hostile input; semantics.md "Time" and
//! "Validation limits".

use aimon_core::{
    AgentStateQuery, Aggregation, AlertQuery, AlertSeverity, ErrorKind, FilterOp, HistoryQuery,
    MetricQuery, MetricValue, QueryOptions,
};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::json;

use super::support::*;
use crate::fixtures::Fixture;

fn year(y: i32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, 1, 1, 0, 0, 0).unwrap()
}

/// Quotes, commas, spaces, `=`, `*`, `'`, `\`, emoji… in ids, names, tag keys and values
/// round-trip exactly and work as query and history keys.
pub async fn hostile_strings_round_trip_in_metrics(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let mut batch = Vec::new();
    for (i, h) in HOSTILE.iter().enumerate() {
        let mut m = series(h, h);
        m.description = Some(format!("{h}\n{h}"));
        m.unit = Some((*h).to_owned());
        m.metadata.insert((*h).to_owned(), json!(h));
        m.values
            .push(sample(i as i64, i as f64).tag(*h, *h).tag("plain", *h));
        batch.push(m);
    }
    store.save_metrics(&batch).await.unwrap();
    for m in &batch {
        let h = m.id.as_str();
        assert_eq!(
            store.get_metric(h).await.unwrap().as_ref(),
            Some(m),
            "{h:?}"
        );
        let by_name = store
            .query_metrics(&MetricQuery::new().name(h))
            .await
            .unwrap();
        assert_eq!(by_name, vec![m.clone()], "name {h:?}");
        let by_tag = store
            .query_metrics(&MetricQuery::new().tag(h, h))
            .await
            .unwrap();
        assert_eq!(metric_ids(&by_tag), [h], "tag {h:?}");
        let by_filter = store
            .query_metrics(&MetricQuery::new().options(QueryOptions::default().filter(
                "id",
                FilterOp::Eq,
                h,
            )))
            .await
            .unwrap();
        assert_eq!(metric_ids(&by_filter), [h], "id filter {h:?}");
        let history = store
            .metric_history(
                &HistoryQuery::new(h, TimeDelta::hours(1), Aggregation::Count)
                    .tag("plain", h)
                    .group_by(h),
            )
            .await
            .unwrap();
        assert_eq!(history.len(), 1, "history {h:?}");
        assert_eq!(history[0].group.as_deref(), Some(h), "group {h:?}");
        assert_eq!(history[0].buckets[0].count, 1);
    }
    let all = store.query_metrics(&MetricQuery::new()).await.unwrap();
    assert_eq!(all.len(), HOSTILE.len());
}

/// Hostile strings in alert ids, names, sources, labels, annotations and users round-trip and
/// work as query keys.
pub async fn hostile_strings_round_trip_in_alerts(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let mut batch = Vec::new();
    for h in HOSTILE {
        let mut a = alert(h, AlertSeverity::Medium, 0);
        a.name = (*h).to_owned();
        a.source = (*h).to_owned();
        a.description = Some((*h).to_owned());
        a.labels = tags(&[(h, h)]);
        a.annotations = tags(&[(h, h)]);
        a.acknowledged_by = Some((*h).to_owned());
        a.metadata.insert((*h).to_owned(), json!([h]));
        batch.push(a);
    }
    store.save_alerts(&batch).await.unwrap();
    for a in &batch {
        let h = a.id.as_str();
        assert_eq!(store.get_alert(h).await.unwrap().as_ref(), Some(a), "{h:?}");
        let by_source = store
            .query_alerts(&AlertQuery::new().source(h))
            .await
            .unwrap();
        assert_eq!(by_source, vec![a.clone()], "source {h:?}");
        let by_label = store
            .query_alerts(&AlertQuery::new().label(h, h))
            .await
            .unwrap();
        assert_eq!(alert_ids(&by_label), [h], "label {h:?}");
        let by_filter = store
            .query_alerts(&AlertQuery::new().options(QueryOptions::default().filter(
                format!("labels.{h}"),
                FilterOp::Eq,
                h,
            )))
            .await
            .unwrap();
        assert_eq!(alert_ids(&by_filter), [h], "labels.<key> filter {h:?}");
        let by_contains = store
            .query_alerts(&AlertQuery::new().options(QueryOptions::default().filter(
                "name",
                FilterOp::Contains,
                h,
            )))
            .await
            .unwrap();
        assert!(alert_ids(&by_contains).contains(&h), "contains {h:?}");
    }
}

/// Hostile strings in agent-state ids, agent ids, statuses and JSON round-trip.
pub async fn hostile_strings_round_trip_in_agent_states(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let mut batch = Vec::new();
    for h in HOSTILE {
        let mut s = state(h, h, h, 0);
        s.metrics.insert((*h).to_owned(), json!(h));
        s.metadata.insert("k".into(), json!({ *h: [h, 1] }));
        batch.push(s);
    }
    store.save_agent_states(&batch).await.unwrap();
    for s in &batch {
        let h = s.agent_id.as_str();
        assert_eq!(
            store.get_agent_state(h).await.unwrap().as_ref(),
            Some(s),
            "{h:?}"
        );
        let by_status = store
            .get_agent_states(&AgentStateQuery::new().status(h))
            .await
            .unwrap();
        assert_eq!(by_status, vec![s.clone()], "status {h:?}");
    }
    let all = store
        .get_agent_states(&AgentStateQuery::new())
        .await
        .unwrap();
    assert_eq!(all.len(), HOSTILE.len());
}

/// Values and names at the limits are accepted — a 10 KiB tag value round-trips, and so does one
/// of exactly 16 KiB; one byte more (a 16 KiB + 1 tag value, a 513-byte name) is
/// `InvalidInput` naming the field.
pub async fn length_limits_are_enforced(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let long_id = "i".repeat(512);
    let max_value = "v".repeat(aimon_core::validate::MAX_TAG_VALUE_BYTES);
    let ok = series(&long_id, &"n".repeat(512))
        .with_value(sample(0, 1.0).tag("k".repeat(512), max_value.clone()))
        .with_value(sample(1, 2.0).tag("k", "t".repeat(10 * 1024)));
    store.save_metric(&ok).await.unwrap();
    assert_eq!(store.get_metric(&long_id).await.unwrap(), Some(ok));

    let big = "x".repeat(aimon_core::validate::MAX_TAG_VALUE_BYTES + 1);
    expect_err(
        store
            .save_metric(&series("m", "n").with_value(sample(0, 1.0).tag("k", big.as_str())))
            .await,
        ErrorKind::InvalidInput,
        Some("values[0].tags"),
    );
    expect_err(
        store.save_metric(&series("m", &"n".repeat(513))).await,
        ErrorKind::InvalidInput,
        Some("metric name"),
    );
    expect_err(
        store.save_metric(&series(&"i".repeat(513), "n")).await,
        ErrorKind::InvalidInput,
        Some("metric id"),
    );
    let mut a = alert("a", AlertSeverity::Info, 0);
    a.labels = tags(&[("k", big.as_str())]);
    expect_err(
        store.save_alert(&a).await,
        ErrorKind::InvalidInput,
        Some("alert labels"),
    );
    assert_eq!(store.stats().await.unwrap().alerts, 0);
    assert_eq!(store.stats().await.unwrap().series, 1);
}

/// The limits on sums, the same on every backend: a sample's tags at [`MAX_TAGS`] pairs and at
/// [`MAX_TAGS_BYTES`] (with a longest series id, every byte of them one that InfluxDB's
/// encoding grows to three) round-trip; one tag or byte more, 10 tags of 10 KiB or 1,000 tags of
/// 100 bytes are `InvalidInput` before anything is written.
///
/// [`MAX_TAGS`]: aimon_core::validate::MAX_TAGS
/// [`MAX_TAGS_BYTES`]: aimon_core::validate::MAX_TAGS_BYTES
pub async fn tag_sets_are_bounded_in_count_and_bytes(fixture: &Fixture) {
    use aimon_core::validate::{MAX_TAG_VALUE_BYTES, MAX_TAGS, MAX_TAGS_BYTES};
    let store = fixture.open(&[]).await;
    let many: aimon_core::Tags = (0..MAX_TAGS)
        .map(|i| (format!("k{i:03}"), format!("v{i}")))
        .collect();
    // Percent signs and backslashes: the bytes InfluxDB's tag encoding grows the most.
    let key_b = "\\".repeat(512);
    let mut widest = tags(&[]);
    widest.insert("%".repeat(512), "%".repeat(MAX_TAG_VALUE_BYTES));
    widest.insert(
        key_b.clone(),
        "\\".repeat(MAX_TAGS_BYTES - MAX_TAG_VALUE_BYTES - 1024),
    );
    let id = "%".repeat(512);
    let ok = series(&id, "wide")
        .with_value(MetricValue {
            tags: many.clone(),
            ..sample(0, 1.0)
        })
        .with_value(MetricValue {
            tags: widest.clone(),
            ..sample(1, 2.0)
        });
    store.save_metric(&ok).await.unwrap();
    assert_eq!(store.get_metric(&id).await.unwrap(), Some(ok));

    let mut one_more = many.clone();
    one_more.insert("zzz".to_owned(), "v".to_owned());
    let mut byte_more = widest.clone();
    byte_more.insert(
        key_b,
        "\\".repeat(MAX_TAGS_BYTES - MAX_TAG_VALUE_BYTES - 1023),
    );
    let ten_by_10k: aimon_core::Tags = (0..10)
        .map(|i| (format!("k{i}"), "x".repeat(10 * 1024)))
        .collect();
    let thousand_by_100: aimon_core::Tags = (0..1000)
        .map(|i| (format!("k{i:04}"), "y".repeat(100)))
        .collect();
    for bad in [one_more, byte_more, ten_by_10k, thousand_by_100] {
        let batch = [
            series("fine", "fine").with_value(sample(0, 1.0)),
            series("bad", "bad").with_value(MetricValue {
                tags: bad.clone(),
                ..sample(0, 1.0)
            }),
        ];
        expect_err(
            store.save_metrics(&batch).await,
            ErrorKind::InvalidInput,
            Some("metric_id=bad"),
        );
        let mut a = alert("a", AlertSeverity::Info, 0);
        a.labels = bad;
        expect_err(
            store.save_alert(&a).await,
            ErrorKind::InvalidInput,
            Some("alert labels"),
        );
    }
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.series, stats.alerts), (1, 0));
}

/// An alert or agent state up to [`MAX_DOCUMENT_BYTES`] as JSON round-trips on every backend;
/// metadata over [`MAX_METADATA_BYTES`], annotations over [`MAX_TEXT_BYTES`] in all, or a
/// document over its limit (a 30 MiB metadata string) are `InvalidInput` before any write.
///
/// [`MAX_DOCUMENT_BYTES`]: aimon_core::validate::MAX_DOCUMENT_BYTES
/// [`MAX_METADATA_BYTES`]: aimon_core::validate::MAX_METADATA_BYTES
/// [`MAX_TEXT_BYTES`]: aimon_core::validate::MAX_TEXT_BYTES
pub async fn documents_are_bounded(fixture: &Fixture) {
    use aimon_core::validate::{MAX_METADATA_BYTES, MAX_TEXT_BYTES, json_len};
    let store = fixture.open(&[]).await;
    // About 3 MiB: a description, annotations and metadata each near their own limit.
    let mut big = alert("big", AlertSeverity::High, 0);
    big.description = Some("d\"\\ ".repeat(MAX_TEXT_BYTES / 4));
    big.annotations
        .insert("runbook".to_owned(), "r".repeat(MAX_TEXT_BYTES - 16));
    big.metadata.insert(
        "trace".to_owned(),
        json!("m".repeat(MAX_METADATA_BYTES - 64)),
    );
    assert!(json_len(&big) > 3 << 20);
    let mut state_big = state("s-big", "agent-big", "running", 0);
    state_big
        .metrics
        .insert("log".to_owned(), json!("l".repeat(MAX_METADATA_BYTES - 64)));
    state_big
        .metadata
        .insert("env".to_owned(), json!("e".repeat(MAX_METADATA_BYTES - 64)));
    store.save_alert(&big).await.unwrap();
    store.save_agent_state(&state_big).await.unwrap();
    assert_eq!(store.get_alert("big").await.unwrap(), Some(big));
    let states = store
        .get_agent_states(&AgentStateQuery::new())
        .await
        .unwrap();
    assert_eq!(states, vec![state_big]);

    let mut huge = alert("huge", AlertSeverity::Info, 0);
    huge.metadata
        .insert("blob".to_owned(), json!("x".repeat(30 << 20)));
    expect_err(
        store.save_alert(&huge).await,
        ErrorKind::InvalidInput,
        Some("alert metadata"),
    );
    let mut annotated = alert("annotated", AlertSeverity::Info, 0);
    for i in 0..3 {
        annotated
            .annotations
            .insert(format!("a{i}"), "x".repeat(MAX_TEXT_BYTES / 2));
    }
    expect_err(
        store.save_alert(&annotated).await,
        ErrorKind::InvalidInput,
        Some("alert annotations"),
    );
    let mut escaped = alert("escaped", AlertSeverity::Info, 0);
    escaped.description = Some("\u{1}".repeat(MAX_TEXT_BYTES));
    expect_err(
        store.save_alert(&escaped).await,
        ErrorKind::InvalidInput,
        Some("alert: is"),
    );
    let mut heavy = state("s-heavy", "agent-heavy", "running", 0);
    heavy
        .metadata
        .insert("blob".to_owned(), json!("x".repeat(MAX_METADATA_BYTES)));
    expect_err(
        store.save_agent_state(&heavy).await,
        ErrorKind::InvalidInput,
        Some("agent metadata"),
    );
    let mut m = series("m-meta", "m");
    m.metadata
        .insert("blob".to_owned(), json!("x".repeat(MAX_METADATA_BYTES)));
    expect_err(
        store.save_metric(&m).await,
        ErrorKind::InvalidInput,
        Some("metric metadata"),
    );
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.series, stats.alerts, stats.agent_states), (0, 1, 1));
}

/// A history step is at most [`MAX_STEP`] (36,500 days) on every backend: the longest step
/// answers, a longer one (15,600 weeks, the CLI's old upper end) is `InvalidInput`.
///
/// [`MAX_STEP`]: aimon_core::query::MAX_STEP
pub async fn history_steps_are_bounded(fixture: &Fixture) {
    use aimon_core::query::MAX_STEP;
    let store = fixture.open(&[]).await;
    store
        .save_metric(
            &series("s", "steps")
                .with_value(sample(0, 2.0))
                .with_value(sample(60, 4.0)),
        )
        .await
        .unwrap();
    for aggregation in [Aggregation::Avg, Aggregation::Count, Aggregation::Max] {
        let answer = store
            .metric_history(&HistoryQuery::new("steps", MAX_STEP, aggregation))
            .await
            .unwrap();
        assert_eq!(answer.len(), 1, "{aggregation:?}");
        assert_eq!(answer[0].buckets.len(), 1, "{aggregation:?}");
        assert_eq!(answer[0].buckets[0].count, 2, "{aggregation:?}");
    }
    for step in [
        MAX_STEP + TimeDelta::milliseconds(1),
        TimeDelta::weeks(15_600),
    ] {
        expect_err(
            store
                .metric_history(&HistoryQuery::new("steps", step, Aggregation::Avg))
                .await,
            ErrorKind::InvalidInput,
            Some("step"),
        );
    }
}

/// NaN, +Inf and -Inf are `InvalidInput` naming the sample, and nothing of the batch is written.
pub async fn non_finite_values_are_rejected(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let m = series("m", "n")
            .with_value(sample(0, 1.0))
            .with_value(sample(1, bad));
        expect_err(
            store.save_metric(&m).await,
            ErrorKind::InvalidInput,
            Some("values[1].value"),
        );
    }
    assert_eq!(store.get_metric("m").await.unwrap(), None);
    let extremes = series("m", "n")
        .with_value(sample(0, f64::MAX))
        .with_value(sample(1, -f64::MAX))
        .with_value(sample(2, f64::EPSILON));
    store.save_metric(&extremes).await.unwrap();
    assert_eq!(store.get_metric("m").await.unwrap(), Some(extremes));
}

/// Empty ids, names, sources, statuses, tag keys and values are `InvalidInput` naming the field.
pub async fn empty_names_are_rejected(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    expect_err(
        store.save_metric(&series("", "n")).await,
        ErrorKind::InvalidInput,
        Some("metric id"),
    );
    expect_err(
        store.save_metric(&series("m", "")).await,
        ErrorKind::InvalidInput,
        Some("metric name"),
    );
    expect_err(
        store
            .save_metric(&series("m", "n").with_value(sample(0, 1.0).tag("", "v")))
            .await,
        ErrorKind::InvalidInput,
        Some("values[0].tags"),
    );
    expect_err(
        store
            .save_metric(&series("m", "n").with_value(sample(0, 1.0).tag("k", "")))
            .await,
        ErrorKind::InvalidInput,
        Some("values[0].tags"),
    );
    let mut a = alert("", AlertSeverity::Info, 0);
    expect_err(
        store.save_alert(&a).await,
        ErrorKind::InvalidInput,
        Some("alert id"),
    );
    a.id = "a".into();
    a.source = String::new();
    expect_err(
        store.save_alert(&a).await,
        ErrorKind::InvalidInput,
        Some("alert source"),
    );
    expect_err(
        store.save_agent_state(&state("s", "", "running", 0)).await,
        ErrorKind::InvalidInput,
        Some("agent_id"),
    );
    expect_err(
        store.save_agent_state(&state("s", "a", "", 0)).await,
        ErrorKind::InvalidInput,
        Some("agent status"),
    );
    assert!(dump(&store).await.is_empty());
}

/// Control characters (newline, tab, NUL, ESC, DEL) in names, tags and labels are `InvalidInput`.
pub async fn control_characters_are_rejected(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    for c in ["\n", "\t", "\0", "\u{1b}", "\u{7f}", "\r"] {
        let bad = format!("a{c}b");
        expect_err(
            store.save_metric(&series(&bad, "n")).await,
            ErrorKind::InvalidInput,
            Some("metric id"),
        );
        expect_err(
            store.save_metric(&series("m", &bad)).await,
            ErrorKind::InvalidInput,
            Some("metric name"),
        );
        expect_err(
            store
                .save_metric(&series("m", "n").with_value(sample(0, 1.0).tag(bad.as_str(), "v")))
                .await,
            ErrorKind::InvalidInput,
            Some("values[0].tags"),
        );
        expect_err(
            store
                .save_metric(&series("m", "n").with_value(sample(0, 1.0).tag("k", bad.as_str())))
                .await,
            ErrorKind::InvalidInput,
            Some("values[0].tags"),
        );
        let mut a = alert("a", AlertSeverity::Info, 0);
        a.labels = tags(&[("k", bad.as_str())]);
        expect_err(
            store.save_alert(&a).await,
            ErrorKind::InvalidInput,
            Some("alert labels"),
        );
        expect_err(
            store
                .save_agent_state(&state("s", &bad, "running", 0))
                .await,
            ErrorKind::InvalidInput,
            Some("agent_id"),
        );
    }
    // NUL is refused even where newlines are fine (descriptions, metadata).
    let mut m = series("m", "n");
    m.description = Some("nul\0here".into());
    expect_err(
        store.save_metric(&m).await,
        ErrorKind::InvalidInput,
        Some("metric description"),
    );
    let mut m = series("m", "n");
    m.metadata.insert("k".into(), json!({"deep": ["nul\u{0}"]}));
    expect_err(
        store.save_metric(&m).await,
        ErrorKind::InvalidInput,
        Some("metric metadata"),
    );
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!([deep]);
    }
    let mut s = state("s", "a", "running", 0);
    s.metrics.insert("deep".into(), deep);
    expect_err(
        store.save_agent_state(&s).await,
        ErrorKind::InvalidInput,
        Some("agent metrics"),
    );
    assert!(dump(&store).await.is_empty());
}

/// A timestamp in 1600 (or a microsecond before the epoch) is `InvalidInput` naming the field.
pub async fn timestamps_before_1970_are_rejected(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    for ts in [
        year(1600),
        DateTime::<Utc>::UNIX_EPOCH - TimeDelta::microseconds(1),
    ] {
        expect_err(
            store
                .save_metric(&series("m", "n").with_value(MetricValue::new(ts, 1.0)))
                .await,
            ErrorKind::InvalidInput,
            Some("values[0].timestamp"),
        );
        let mut m = series("m", "n");
        m.created_at = ts;
        expect_err(
            store.save_metric(&m).await,
            ErrorKind::InvalidInput,
            Some("metric created_at"),
        );
        let mut a = alert("a", AlertSeverity::Info, 0);
        a.start_time = ts;
        expect_err(
            store.save_alert(&a).await,
            ErrorKind::InvalidInput,
            Some("alert start_time"),
        );
        let mut s = state("s", "a", "running", 0);
        s.last_heartbeat = ts;
        expect_err(
            store.save_agent_state(&s).await,
            ErrorKind::InvalidInput,
            Some("agent last_heartbeat"),
        );
    }
    assert!(dump(&store).await.is_empty());
}

/// A timestamp in 2300 (or at 2262-01-01T00:00:00Z exactly) is `InvalidInput` naming the field.
pub async fn timestamps_after_2262_are_rejected(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    for ts in [year(2300), year(2262)] {
        expect_err(
            store
                .save_metric(&series("m", "n").with_value(MetricValue::new(ts, 1.0)))
                .await,
            ErrorKind::InvalidInput,
            Some("values[0].timestamp"),
        );
        let mut m = series("m", "n");
        m.updated_at = ts;
        expect_err(
            store.save_metric(&m).await,
            ErrorKind::InvalidInput,
            Some("metric updated_at"),
        );
        let mut a = alert("a", AlertSeverity::Info, 0);
        a.end_time = Some(ts);
        expect_err(
            store.save_alert(&a).await,
            ErrorKind::InvalidInput,
            Some("alert end_time"),
        );
        let mut s = state("s", "a", "running", 0);
        s.created_at = ts;
        expect_err(
            store.save_agent_state(&s).await,
            ErrorKind::InvalidInput,
            Some("agent created_at"),
        );
    }
    assert!(dump(&store).await.is_empty());
}

/// 1970-01-01T00:00:00Z and 2261-12-31T23:59:59.999999Z are accepted, stored and queried.
pub async fn boundary_timestamps_are_accepted(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let first = DateTime::<Utc>::UNIX_EPOCH;
    let last = year(2262) - TimeDelta::microseconds(1);
    let m = series("m", "n")
        .with_value(MetricValue::new(last, 2.0))
        .with_value(MetricValue::new(first, 1.0));
    store.save_metric(&m).await.unwrap();
    let back = store.get_metric("m").await.unwrap().unwrap();
    assert_eq!(
        back.values,
        vec![MetricValue::new(first, 1.0), MetricValue::new(last, 2.0)]
    );
    let ranged = store
        .query_metrics(&MetricQuery::new().range(first, last))
        .await
        .unwrap();
    assert_eq!(
        ranged[0].values,
        vec![MetricValue::new(first, 1.0)],
        "end is exclusive"
    );
    let history = store
        .metric_history(&HistoryQuery::new(
            "n",
            TimeDelta::days(365),
            Aggregation::Count,
        ))
        .await
        .unwrap();
    assert_eq!(history[0].buckets.len(), 2);
    assert_eq!(history[0].buckets[0].start, first);
    let mut a = alert("a", AlertSeverity::Info, 0);
    a.start_time = first;
    a.end_time = Some(last);
    store.save_alert(&a).await.unwrap();
    assert_eq!(store.get_alert("a").await.unwrap(), Some(a));
    let mut s = state("s", "agent", "running", 0);
    s.last_heartbeat = last;
    s.created_at = first;
    store.save_agent_state(&s).await.unwrap();
    assert_eq!(store.get_agent_state("agent").await.unwrap(), Some(s));
}

/// Sub-microsecond parts are truncated on write: reads return the truncated value and two
/// samples differing only below the microsecond are the same sample.
pub async fn timestamps_are_truncated_to_microseconds(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let ns = |n: i64| t0() + TimeDelta::nanoseconds(n);
    let mut m = series("m", "n")
        .with_value(MetricValue::new(ns(1_234_567_891), 1.0))
        .with_value(MetricValue::new(ns(1_234_567_999), 2.0));
    m.created_at = ns(999);
    m.updated_at = ns(1_999);
    store.save_metric(&m).await.unwrap();
    let back = store.get_metric("m").await.unwrap().unwrap();
    assert_eq!(
        back.values,
        vec![MetricValue::new(at_micros(1_234_567), 2.0)]
    );
    assert_eq!((back.created_at, back.updated_at), (t0(), at_micros(1)));

    let mut a = alert("a", AlertSeverity::Info, 0);
    a.start_time = ns(5_500);
    a.acknowledged_at = Some(ns(6_999));
    store.save_alert(&a).await.unwrap();
    let back = store.get_alert("a").await.unwrap().unwrap();
    assert_eq!(back.start_time, at_micros(5));
    assert_eq!(back.acknowledged_at, Some(at_micros(6)));
    // Filters compare against the stored, truncated value.
    let q = AlertQuery::new().options(QueryOptions::default().filter(
        "start_time",
        FilterOp::Eq,
        rfc(at_micros(5)),
    ));
    assert_eq!(alert_ids(&store.query_alerts(&q).await.unwrap()), ["a"]);

    let mut s = state("s", "agent", "running", 0);
    s.last_heartbeat = ns(7_777);
    store.save_agent_state(&s).await.unwrap();
    let back = store.get_agent_state("agent").await.unwrap().unwrap();
    assert_eq!(back.last_heartbeat, at_micros(7));
    // Same microsecond: equal heartbeat, so it replaces.
    let mut s2 = state("s2", "agent", "running", 0);
    s2.last_heartbeat = ns(7_001);
    let report = store.save_agent_state(&s2).await.unwrap();
    assert_eq!((report.written, report.superseded), (1, 0));
}

/// A metric batch with one invalid item is rejected whole: the store is unchanged.
pub async fn invalid_metric_batch_writes_nothing(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    populate(&store).await;
    let before = dump(&store).await;
    let stats_before = store.stats().await.unwrap();
    let batch = vec![
        series("new-series", "n").with_value(sample(0, 1.0)),
        series("agent-1/cpu", "cpu.usage").with_value(sample(0, 999.0).tag("host", "h1")),
        series("bad", "n")
            .with_value(sample(1, 1.0))
            .with_value(sample(2, f64::NAN)),
        series("after", "n").with_value(sample(0, 1.0)),
    ];
    expect_err(
        store.save_metrics(&batch).await,
        ErrorKind::InvalidInput,
        Some("values[1].value"),
    );
    assert_eq!(dump(&store).await, before);
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (
            stats.series,
            stats.samples,
            stats.alerts,
            stats.agent_states
        ),
        (
            stats_before.series,
            stats_before.samples,
            stats_before.alerts,
            stats_before.agent_states
        )
    );
}

/// An alert batch with one invalid item is rejected whole.
pub async fn invalid_alert_batch_writes_nothing(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    populate(&store).await;
    let before = dump(&store).await;
    let mut changed = before.alerts[0].clone();
    changed.status = aimon_core::AlertStatus::Suppressed;
    let mut bad = alert("bad", AlertSeverity::Info, 0);
    bad.start_time = year(1600);
    let batch = vec![alert("new", AlertSeverity::High, 0), changed, bad];
    expect_err(
        store.save_alerts(&batch).await,
        ErrorKind::InvalidInput,
        Some("alert start_time"),
    );
    assert_eq!(dump(&store).await, before);
}

/// An agent-state batch with one invalid item is rejected whole.
pub async fn invalid_agent_state_batch_writes_nothing(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    populate(&store).await;
    let before = dump(&store).await;
    let batch = vec![
        state("new", "agent-new", "running", 500),
        state("newer", "agent-0", "stopped", 9_999),
        state("bad", "agent\u{7}bell", "running", 0),
    ];
    expect_err(
        store.save_agent_states(&batch).await,
        ErrorKind::InvalidInput,
        Some("agent_id"),
    );
    assert_eq!(dump(&store).await, before);
}

/// Reads validate their input too: an empty or control-character id is `InvalidInput`, not a
/// silent miss.
pub async fn reads_with_invalid_ids_are_invalid_input(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    for bad in ["", "a\nb", "nul\0"] {
        expect_err(store.get_metric(bad).await, ErrorKind::InvalidInput, None);
        expect_err(store.get_alert(bad).await, ErrorKind::InvalidInput, None);
        expect_err(
            store.get_agent_state(bad).await,
            ErrorKind::InvalidInput,
            None,
        );
        expect_err(
            store.query_metrics(&MetricQuery::new().tag("k", bad)).await,
            ErrorKind::InvalidInput,
            None,
        );
        expect_err(
            store
                .get_agent_states(&AgentStateQuery::new().status(bad))
                .await,
            ErrorKind::InvalidInput,
            Some("status"),
        );
    }
}
