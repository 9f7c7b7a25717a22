//! Rule 4: alerts.

use aimon_core::{
    AlertQuery, AlertSeverity, AlertStatus, ErrorKind, FilterOp, QueryOptions, SortOrder,
};
use serde_json::json;

use super::support::*;
use crate::fixtures::Fixture;

/// Every field of an alert round-trips exactly.
pub async fn alert_round_trips_exactly(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let mut a = alert("a1", AlertSeverity::High, 0);
    a.description = Some("line one\nline two\ttabbed".into());
    a.status = AlertStatus::Resolved;
    a.end_time = Some(at(100));
    a.acknowledged_by = Some("ops@example.invalid".into());
    a.acknowledged_at = Some(at_micros(50_000_001));
    a.resolved_by = Some("oncall".into());
    a.resolved_at = Some(at(100));
    a.labels = tags(&[("env", "prod"), ("team", "infra")]);
    a.annotations = tags(&[
        ("runbook", "https://example.invalid/rb?x=1&y=2"),
        ("summary", "multi\nline"),
    ]);
    a.metadata.insert("score".into(), json!(0.75));
    a.metadata
        .insert("list".into(), json!([1, "two", {"three": null}]));
    a.updated_at = at(101);
    let report = store.save_alert(&a).await.unwrap();
    assert_eq!(report.written, 1);
    assert_eq!(store.get_alert("a1").await.unwrap(), Some(a.clone()));
    let queried = store.query_alerts(&AlertQuery::new()).await.unwrap();
    assert_eq!(queried, vec![a]);
}

/// Saving an alert with a known id replaces it whole.
pub async fn alerts_upsert_by_id(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let mut a = alert("a1", AlertSeverity::Low, 0);
    a.labels = tags(&[("old", "label")]);
    a.description = Some("old".into());
    store.save_alert(&a).await.unwrap();
    let mut b = alert("a1", AlertSeverity::Critical, 30);
    b.name = "renamed".into();
    b.labels = tags(&[("new", "label")]);
    store.save_alert(&b).await.unwrap();
    store.save_alert(&b).await.unwrap();
    assert_eq!(store.get_alert("a1").await.unwrap(), Some(b.clone()));
    assert_eq!(
        store.query_alerts(&AlertQuery::new()).await.unwrap(),
        vec![b]
    );
    assert_eq!(store.stats().await.unwrap().alerts, 1);
}

async fn alert_set(fixture: &Fixture) -> Backend {
    let store = fixture.open(&[]).await;
    let mut items = Vec::new();
    for (i, severity) in AlertSeverity::ALL.into_iter().enumerate() {
        let mut a = alert(&format!("a{i}"), severity, i as i64 * 10);
        a.status = AlertStatus::ALL[i % AlertStatus::ALL.len()];
        a.source = if i % 2 == 0 { "agent-1" } else { "agent-2" }.into();
        a.labels = tags(&[("env", if i < 3 { "prod" } else { "dev" })]);
        if i == 1 {
            a.labels.insert("team".into(), "infra".into());
        }
        if i == 4 {
            a.labels.clear();
        }
        items.push(a);
    }
    store.save_alerts(&items).await.unwrap();
    store
}

async fn ids(store: &Backend, q: AlertQuery) -> Vec<String> {
    store
        .query_alerts(&q)
        .await
        .unwrap_or_else(|e| panic!("{q:?}: {e}"))
        .into_iter()
        .map(|a| a.id)
        .collect()
}

/// The `status` and `source` parameters select exactly.
pub async fn alerts_filter_by_status_and_source(fixture: &Fixture) {
    let store = alert_set(fixture).await;
    // a0 active, a1 acknowledged, a2 resolved, a3 suppressed, a4 active.
    assert_eq!(
        ids(&store, AlertQuery::new().status(AlertStatus::Active)).await,
        ["a0", "a4"]
    );
    assert_eq!(
        ids(&store, AlertQuery::new().status(AlertStatus::Suppressed)).await,
        ["a3"]
    );
    assert_eq!(
        ids(&store, AlertQuery::new().source("agent-2")).await,
        ["a1", "a3"]
    );
    assert_eq!(
        ids(
            &store,
            AlertQuery::new()
                .source("agent-1")
                .status(AlertStatus::Active)
        )
        .await,
        ["a0", "a4"]
    );
    assert!(
        ids(&store, AlertQuery::new().source("agent"))
            .await
            .is_empty()
    );
}

/// `severity` selects one severity, `min_severity` that severity and above (info < low <
/// medium < high < critical).
pub async fn alerts_filter_by_severity_and_min_severity(fixture: &Fixture) {
    let store = alert_set(fixture).await;
    assert_eq!(
        ids(&store, AlertQuery::new().severity(AlertSeverity::Medium)).await,
        ["a2"]
    );
    assert_eq!(
        ids(
            &store,
            AlertQuery::new().min_severity(AlertSeverity::Medium)
        )
        .await,
        ["a2", "a3", "a4"]
    );
    assert_eq!(
        ids(&store, AlertQuery::new().min_severity(AlertSeverity::Info)).await,
        ["a0", "a1", "a2", "a3", "a4"]
    );
    assert_eq!(
        ids(
            &store,
            AlertQuery::new().min_severity(AlertSeverity::Critical)
        )
        .await,
        ["a4"]
    );
    assert!(
        ids(
            &store,
            AlertQuery::new()
                .severity(AlertSeverity::Low)
                .min_severity(AlertSeverity::High)
        )
        .await
        .is_empty()
    );
}

/// The time range applies to `start_time`, half-open.
pub async fn alerts_time_range_applies_to_start_time(fixture: &Fixture) {
    let store = alert_set(fixture).await;
    // start times: a0 @0, a1 @10, a2 @20, a3 @30, a4 @40.
    assert_eq!(
        ids(&store, AlertQuery::new().range(at(10), at(30))).await,
        ["a1", "a2"]
    );
    assert_eq!(
        ids(&store, AlertQuery::new().range(at(11), at(41))).await,
        ["a2", "a3", "a4"]
    );
    assert!(
        ids(&store, AlertQuery::new().range(at(40), at(40)))
            .await
            .is_empty()
    );
    // created_at/updated_at do not take part: move a0's updated_at far away.
    let mut a0 = store.get_alert("a0").await.unwrap().unwrap();
    a0.updated_at = at(10_000);
    store.save_alert(&a0).await.unwrap();
    assert_eq!(
        ids(&store, AlertQuery::new().range(at(0), at(5))).await,
        ["a0"]
    );
}

/// Label parameters match alerts whose labels include every pair.
pub async fn alerts_filter_by_labels(fixture: &Fixture) {
    let store = alert_set(fixture).await;
    let q = |pairs: &[(&str, &str)]| AlertQuery {
        labels: tags(pairs),
        ..AlertQuery::new()
    };
    assert_eq!(ids(&store, q(&[("env", "prod")])).await, ["a0", "a1", "a2"]);
    assert_eq!(
        ids(&store, q(&[("env", "prod"), ("team", "infra")])).await,
        ["a1"]
    );
    assert_eq!(ids(&store, q(&[("env", "dev")])).await, ["a3"]);
    assert!(ids(&store, q(&[("team", "ops")])).await.is_empty());
}

/// Every operator on `severity` compares by rank.
pub async fn every_operator_on_severity(fixture: &Fixture) {
    let store = alert_set(fixture).await;
    use FilterOp::*;
    let cases: &[(FilterOp, serde_json::Value, &[&str])] = &[
        (Eq, json!("medium"), &["a2"]),
        (Ne, json!("medium"), &["a0", "a1", "a3", "a4"]),
        (Gt, json!("medium"), &["a3", "a4"]),
        (Gte, json!("MEDIUM"), &["a2", "a3", "a4"]),
        (Lt, json!("medium"), &["a0", "a1"]),
        (Lte, json!("low"), &["a0", "a1"]),
        (In, json!(["info", "critical"]), &["a0", "a4"]),
        (NotIn, json!(["info", "critical"]), &["a1", "a2", "a3"]),
    ];
    for (op, value, expected) in cases {
        let q = AlertQuery::new().options(QueryOptions::default().filter(
            "severity",
            *op,
            value.clone(),
        ));
        assert_eq!(ids(&store, q).await, *expected, "severity {op:?} {value}");
    }
}

/// `labels.<key>` filters with every operator; a missing label matches only `ne` / `not_in`.
pub async fn every_operator_on_labels(fixture: &Fixture) {
    let store = alert_set(fixture).await;
    // env: a0 prod, a1 prod (+team infra), a2 prod, a3 dev, a4 none.
    use FilterOp::*;
    let cases: &[(&str, FilterOp, serde_json::Value, &[&str])] = &[
        ("labels.env", Eq, json!("prod"), &["a0", "a1", "a2"]),
        ("labels.env", Ne, json!("prod"), &["a3", "a4"]),
        ("labels.env", Gt, json!("dev"), &["a0", "a1", "a2"]),
        ("labels.env", Gte, json!("dev"), &["a0", "a1", "a2", "a3"]),
        ("labels.env", Lt, json!("prod"), &["a3"]),
        ("labels.env", Lte, json!("prod"), &["a0", "a1", "a2", "a3"]),
        ("labels.env", In, json!(["dev"]), &["a3"]),
        (
            "labels.env",
            NotIn,
            json!(["dev"]),
            &["a0", "a1", "a2", "a4"],
        ),
        ("labels.env", Contains, json!("ro"), &["a0", "a1", "a2"]),
        ("labels.team", Eq, json!("infra"), &["a1"]),
        ("labels.team", Ne, json!("infra"), &["a0", "a2", "a3", "a4"]),
        (
            "labels.team",
            NotIn,
            json!(["x"]),
            &["a0", "a1", "a2", "a3", "a4"],
        ),
        ("labels.missing", Eq, json!("x"), &[]),
    ];
    for (field, op, value, expected) in cases {
        let q =
            AlertQuery::new().options(QueryOptions::default().filter(*field, *op, value.clone()));
        assert_eq!(ids(&store, q).await, *expected, "{field} {op:?} {value}");
    }
    let q = AlertQuery::new().options(QueryOptions::default().sort("labels.env", SortOrder::Asc));
    expect_err(
        store.query_alerts(&q).await,
        ErrorKind::InvalidInput,
        Some("label"),
    );
}

/// Nullable time fields (`end_time`, `acknowledged_at`…): absent matches only `ne`/`not_in`;
/// sorting puts absent first ascending, last descending.
pub async fn absent_times_filter_and_sort(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let mut items = Vec::new();
    for (i, end) in [Some(30), None, Some(10), None].into_iter().enumerate() {
        let mut a = alert(&format!("a{i}"), AlertSeverity::Info, 0);
        a.end_time = end.map(at);
        items.push(a);
    }
    store.save_alerts(&items).await.unwrap();
    use FilterOp::*;
    let cases: &[(FilterOp, serde_json::Value, &[&str])] = &[
        (Eq, json!(rfc(at(10))), &["a2"]),
        (Ne, json!(rfc(at(10))), &["a0", "a1", "a3"]),
        (Gt, json!(rfc(at(0))), &["a0", "a2"]),
        (Lte, json!(rfc(at(30))), &["a0", "a2"]),
        (In, json!([rfc(at(30))]), &["a0"]),
        (NotIn, json!([rfc(at(30))]), &["a1", "a2", "a3"]),
    ];
    for (op, value, expected) in cases {
        let q = AlertQuery::new().options(QueryOptions::default().filter(
            "end_time",
            *op,
            value.clone(),
        ));
        assert_eq!(ids(&store, q).await, *expected, "end_time {op:?} {value}");
    }
    let sorted = |order| AlertQuery::new().options(QueryOptions::default().sort("end_time", order));
    assert_eq!(
        ids(&store, sorted(SortOrder::Asc)).await,
        ["a1", "a3", "a2", "a0"]
    );
    assert_eq!(
        ids(&store, sorted(SortOrder::Desc)).await,
        ["a0", "a2", "a1", "a3"]
    );
}

/// Sorting by severity (by rank, not by name) with ties broken by id, and paging over it.
pub async fn alerts_sort_by_severity_rank(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let severities = [
        AlertSeverity::Low,
        AlertSeverity::Critical,
        AlertSeverity::Info,
        AlertSeverity::Critical,
        AlertSeverity::Medium,
        AlertSeverity::High,
    ];
    let items: Vec<_> = severities
        .iter()
        .enumerate()
        .map(|(i, s)| alert(&format!("a{i}"), *s, 0))
        .collect();
    store.save_alerts(&items).await.unwrap();
    let sorted = |order, offset| {
        AlertQuery::new().options(
            QueryOptions::default()
                .sort("severity", order)
                .limit(4)
                .offset(offset),
        )
    };
    let mut desc = ids(&store, sorted(SortOrder::Desc, 0)).await;
    desc.extend(ids(&store, sorted(SortOrder::Desc, 4)).await);
    assert_eq!(desc, ["a1", "a3", "a5", "a4", "a0", "a2"]);
    let mut asc = ids(&store, sorted(SortOrder::Asc, 0)).await;
    asc.extend(ids(&store, sorted(SortOrder::Asc, 4)).await);
    assert_eq!(asc, ["a2", "a0", "a4", "a5", "a1", "a3"]);
}

/// acknowledge → resolve, each saved and read back exactly, findable by its new status.
pub async fn alert_lifecycle_round_trips(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let mut a = aimon_core::Alert::new("life", "latency high", AlertSeverity::High, "agent-7");
    a.labels = tags(&[("env", "prod")]);
    store.save_alert(&a).await.unwrap();
    assert_eq!(store.get_alert("life").await.unwrap(), Some(a.clone()));

    a.acknowledge("alice");
    store.save_alert(&a).await.unwrap();
    let back = store.get_alert("life").await.unwrap().unwrap();
    assert_eq!(back, a);
    assert_eq!(back.status, AlertStatus::Acknowledged);
    assert_eq!(back.acknowledged_by.as_deref(), Some("alice"));
    assert_eq!(
        ids(&store, AlertQuery::new().status(AlertStatus::Acknowledged)).await,
        ["life"]
    );
    assert!(
        ids(&store, AlertQuery::new().status(AlertStatus::Active))
            .await
            .is_empty()
    );

    a.resolve("bob");
    store.save_alert(&a).await.unwrap();
    let back = store.get_alert("life").await.unwrap().unwrap();
    assert_eq!(back, a);
    assert_eq!(back.status, AlertStatus::Resolved);
    assert_eq!(back.end_time, back.resolved_at);
    assert!(back.end_time.is_some());
    assert_eq!(
        ids(&store, AlertQuery::new().status(AlertStatus::Resolved)).await,
        ["life"]
    );
    let q = AlertQuery::new().options(QueryOptions::default().filter(
        "resolved_by",
        FilterOp::Eq,
        "bob",
    ));
    assert_eq!(ids(&store, q).await, ["life"]);
    assert_eq!(store.stats().await.unwrap().alerts, 1);
}
