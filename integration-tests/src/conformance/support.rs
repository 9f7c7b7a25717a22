//! Helpers shared by the checks: fixed timestamps, builders, exact dumps and error assertions.

use std::fmt::Debug;
use std::sync::Arc;

use aimon_core::{
    AgentState, AgentStateQuery, Alert, AlertQuery, AlertSeverity, AlertStatus, ErrorKind, Metric,
    MetricQuery, MetricType, MetricValue, QueryOptions, StorageBackend, Tags,
};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::json;

/// A shared backend handle.
pub type Backend = Arc<dyn StorageBackend>;

/// 2024-01-01T00:00:00Z: the origin of fixed test data (never expires: checks that use it open
/// namespaces without TTLs).
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
}

/// `t0 + secs` seconds.
pub fn at(secs: i64) -> DateTime<Utc> {
    t0() + TimeDelta::seconds(secs)
}

/// `t0 + micros` microseconds.
pub fn at_micros(micros: i64) -> DateTime<Utc> {
    t0() + TimeDelta::microseconds(micros)
}

/// An RFC 3339 text of `ts` with nanoseconds, as filter values take it.
pub fn rfc(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// A series with fixed `created_at`/`updated_at` (t0) and no samples.
pub fn series(id: &str, name: &str) -> Metric {
    let mut m = Metric::new(id, name, MetricType::Gauge);
    m.created_at = t0();
    m.updated_at = t0();
    m
}

/// A sample at `t0 + secs` with `value`.
pub fn sample(secs: i64, value: f64) -> MetricValue {
    MetricValue::new(at(secs), value)
}

/// An active alert with fixed times (start at `t0 + start_secs`).
pub fn alert(id: &str, severity: AlertSeverity, start_secs: i64) -> Alert {
    let mut a = Alert::new(id, format!("alert {id}"), severity, "agent-1");
    a.start_time = at(start_secs);
    a.created_at = at(start_secs);
    a.updated_at = at(start_secs);
    a
}

/// An agent state with a fixed heartbeat `t0 + secs`.
pub fn state(id: &str, agent: &str, status: &str, heartbeat_secs: i64) -> AgentState {
    let mut s = AgentState::new(id, agent, status);
    s.last_heartbeat = at(heartbeat_secs);
    s.created_at = at(heartbeat_secs);
    s.updated_at = at(heartbeat_secs);
    s
}

/// Strings that break naive escaping; every one is valid input and must round-trip exactly.
pub const HOSTILE: &[&str] = &[
    "double\"quote",
    "it's",
    "comma,separated",
    "with space",
    "a=b",
    "star*",
    "back\\slash",
    "emoji 🚀🔥",
    "'; DROP TABLE metrics; --",
    "percent%_under",
    "{\"json\":[1,2]}",
    "../../etc/passwd",
    "$dollar #hash :colon |pipe",
    "ñandú 中文 Ελληνικά",
    "trailing space ",
    " leading space",
    "*",
    "\\",
];

/// Every series (with samples), alert and agent state of a backend, in id order.
#[derive(Debug, Clone, PartialEq)]
pub struct Dump {
    pub metrics: Vec<Metric>,
    pub alerts: Vec<Alert>,
    pub agent_states: Vec<AgentState>,
}

impl Dump {
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty() && self.alerts.is_empty() && self.agent_states.is_empty()
    }
}

/// Reads everything through the public query API, page by page.
pub async fn dump(backend: &Backend) -> Dump {
    const PAGE: usize = 50;
    let mut metrics = Vec::new();
    loop {
        let page = backend
            .query_metrics(
                &MetricQuery::new()
                    .options(QueryOptions::default().limit(PAGE).offset(metrics.len())),
            )
            .await
            .expect("query_metrics");
        let done = page.len() < PAGE;
        metrics.extend(page);
        if done {
            break;
        }
    }
    let mut alerts = Vec::new();
    loop {
        let page = backend
            .query_alerts(
                &AlertQuery::new()
                    .options(QueryOptions::default().limit(PAGE).offset(alerts.len())),
            )
            .await
            .expect("query_alerts");
        let done = page.len() < PAGE;
        alerts.extend(page);
        if done {
            break;
        }
    }
    let mut agent_states = Vec::new();
    loop {
        let page = backend
            .get_agent_states(
                &AgentStateQuery::new().options(
                    QueryOptions::default()
                        .limit(PAGE)
                        .offset(agent_states.len()),
                ),
            )
            .await
            .expect("get_agent_states");
        let done = page.len() < PAGE;
        agent_states.extend(page);
        if done {
            break;
        }
    }
    Dump {
        metrics,
        alerts,
        agent_states,
    }
}

/// A varied data set of every kind: several series (one without samples, one with tags and
/// metadata), alerts in every status with labels and annotations, states of three agents.
pub async fn populate(backend: &Backend) {
    let mut cpu = series("agent-1/cpu", "cpu.usage");
    cpu.description = Some("CPU usage".into());
    cpu.unit = Some("percent".into());
    cpu.metadata.insert(
        "team".into(),
        json!({"name": "infra", "ids": [1, 2.5, null, true]}),
    );
    for i in 0..20 {
        cpu.values
            .push(sample(i * 15, i as f64 * 0.1).tag("host", "h1"));
        cpu.values
            .push(sample(i * 15, -((i + 1) as f64) * 1.5e-7).tag("host", "h2"));
    }
    let mut tokens = series("agent-2/tokens", "llm.tokens");
    tokens.metric_type = MetricType::Counter;
    tokens.values.push(sample(5, 512.0).tag("model", "small"));
    tokens.values.push(sample(65, 1e300));
    let empty = series("empty-series", "nothing.yet");
    backend
        .save_metrics(&[cpu, tokens, empty])
        .await
        .expect("populate metrics");

    let mut alerts = Vec::new();
    for (i, status) in AlertStatus::ALL.into_iter().enumerate() {
        let mut a = alert(
            &format!("alert-{i}"),
            AlertSeverity::ALL[i % AlertSeverity::ALL.len()],
            i as i64 * 60,
        );
        a.status = status;
        a.description = (i % 2 == 0).then(|| format!("description {i}"));
        a.labels
            .insert("env".into(), if i % 2 == 0 { "prod" } else { "dev" }.into());
        a.annotations.insert(
            "runbook".into(),
            "https://example.invalid/rb\nline 2".into(),
        );
        a.metadata.insert("n".into(), json!(i));
        if i == 0 {
            a.embedding = Some(vec![0.25, -1.5e-7, 3.0e30, -0.0]);
        }
        if status == AlertStatus::Acknowledged {
            a.acknowledged_by = Some("ops".into());
            a.acknowledged_at = Some(at(i as i64 * 60 + 5));
        }
        if status == AlertStatus::Resolved {
            a.resolved_by = Some("ops".into());
            a.resolved_at = Some(at(i as i64 * 60 + 9));
            a.end_time = a.resolved_at;
        }
        alerts.push(a);
    }
    backend.save_alerts(&alerts).await.expect("populate alerts");

    let mut states = Vec::new();
    for i in 0..3 {
        let mut s = state(
            &format!("state-{i}"),
            &format!("agent-{i}"),
            "running",
            100 + i,
        );
        s.metrics.insert("tasks".into(), json!(i * 10));
        s.metrics.insert("latency_ms".into(), json!(12.75));
        s.metadata.insert("version".into(), json!("1.2.3"));
        if i == 1 {
            s.embedding = Some(vec![1.0, 0.1, -0.01]);
        }
        states.push(s);
    }
    backend
        .save_agent_states(&states)
        .await
        .expect("populate agent states");
}

/// Asserts `result` failed with `kind` and, if given, that the error text names `field`.
#[track_caller]
pub fn expect_err<T: Debug>(result: aimon_core::Result<T>, kind: ErrorKind, field: Option<&str>) {
    match result {
        Ok(v) => panic!("expected a {kind:?} error, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "wrong error kind: {e}");
            if let Some(field) = field {
                assert!(
                    e.to_string().contains(field),
                    "the error should name {field:?}: {e}"
                );
            }
        }
    }
}

/// Asserts two aggregates agree within 1e-9 relative (or 1e-12 absolute near zero).
#[track_caller]
pub fn assert_close(actual: f64, expected: f64, what: &str) {
    let tolerance = (expected.abs() * 1e-9).max(1e-12);
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: got {actual}, expected {expected}"
    );
}

/// The ids of a list of metrics.
pub fn metric_ids(metrics: &[Metric]) -> Vec<&str> {
    metrics.iter().map(|m| m.id.as_str()).collect()
}

/// The ids of a list of alerts.
pub fn alert_ids(alerts: &[Alert]) -> Vec<&str> {
    alerts.iter().map(|a| a.id.as_str()).collect()
}

/// The agent ids of a list of states.
pub fn agent_ids(states: &[AgentState]) -> Vec<&str> {
    states.iter().map(|s| s.agent_id.as_str()).collect()
}

/// One tag pair.
pub fn tags(pairs: &[(&str, &str)]) -> Tags {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// TTL options, in seconds.
pub fn ttl(kind: &'static str, seconds: u64) -> (&'static str, serde_json::Value) {
    (kind, json!(seconds))
}
