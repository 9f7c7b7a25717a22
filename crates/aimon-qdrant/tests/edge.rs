//! The embedded mode's own behaviours, beyond the shared conformance suite: durability across
//! reopen, one owner per directory, hostile label keys through the engine's filter.
#![cfg(feature = "qdrant-edge")]

use aimon_core::Contract;
use aimon_core::{
    Alert, AlertQuery, AlertSeverity, ErrorKind, SimilarAlertsQuery, StorageBackend, StorageConfig,
};
use aimon_qdrant::QdrantBackend;

fn config(dir: &std::path::Path) -> StorageConfig {
    StorageConfig::from_url("edge", format!("qdrant-edge://{}", dir.display())).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_survive_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Contract::new(QdrantBackend::connect(&config(&path)).await.unwrap());
    let alert = Alert::new("a/1 not-a-uuid", "disk full", AlertSeverity::High, "node-1");
    store.save_alert(&alert).await.unwrap();
    store.close().await.unwrap();
    drop(store);
    let reopened = Contract::new(QdrantBackend::connect(&config(&path)).await.unwrap());
    let back = reopened.get_alert("a/1 not-a-uuid").await.unwrap();
    assert_eq!(back.map(|a| a.name), Some("disk full".to_owned()));
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_survive_a_drop_without_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let store = Contract::new(QdrantBackend::connect(&config(&path)).await.unwrap());
        let alert = Alert::new("a-2", "gpu hot", AlertSeverity::Low, "node-2");
        store.save_alert(&alert).await.unwrap();
    }
    let reopened = Contract::new(QdrantBackend::connect(&config(&path)).await.unwrap());
    assert!(reopened.get_alert("a-2").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_in_use_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let _first = Contract::new(QdrantBackend::connect(&config(&path)).await.unwrap());
    let err = QdrantBackend::connect(&config(&path)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn label_keys_with_dots_brackets_and_quotes_filter_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let store = Contract::new(
        QdrantBackend::connect(&config(&dir.path().join("s")))
            .await
            .unwrap(),
    );
    let key = "a.b[0]\"c\"";
    let mut alerts = Vec::new();
    for i in 0..6 {
        let mut a = Alert::new(format!("x{i}"), "queue stalled", AlertSeverity::Medium, "n");
        a.labels.insert(key.to_owned(), format!("v{}", i % 2));
        // A nested reading of the key would find these instead.
        a.labels.insert("a".to_owned(), "b".to_owned());
        alerts.push(a);
    }
    store.save_alerts(&alerts).await.unwrap();
    let found = store
        .query_alerts(&AlertQuery::new().label(key, "v1"))
        .await
        .unwrap();
    let ids: Vec<_> = found.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["x1", "x3", "x5"]);
    let similar = store
        .find_similar_alerts(
            &SimilarAlertsQuery::text("queue stalled").filter(AlertQuery::new().label(key, "v0")),
        )
        .await
        .unwrap();
    let ids: Vec<_> = similar.iter().map(|s| s.item.id.as_str()).collect();
    assert_eq!(ids, ["x0", "x2", "x4"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_dimension_and_nan_vectors_are_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let store = Contract::new(
        QdrantBackend::connect(&config(&dir.path().join("s")))
            .await
            .unwrap(),
    );
    for v in [vec![1.0; 3], {
        let mut v = vec![0.1; 384];
        v[7] = f32::NAN;
        v
    }] {
        let err = store
            .find_similar_alerts(&SimilarAlertsQuery::vector(v))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    }
    let mut a = Alert::new("e", "x", AlertSeverity::Low, "n");
    a.embedding = Some(vec![f32::NAN, 1.0]);
    let err = store.save_alert(&a).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
}

const CRASH_DIR_ENV: &str = "AIMON_QDRANT_CRASH_CHILD_DIR";

/// The child of [`a_write_that_returned_survives_a_crash`]: saves one alert, then aborts the
/// process without closing or dropping anything. Ignored in normal runs.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "run as a child process by a_write_that_returned_survives_a_crash"]
async fn crash_child_writes_then_aborts() {
    let dir = std::env::var(CRASH_DIR_ENV).expect("run by the parent test");
    let store = Contract::new(
        QdrantBackend::connect(&config(std::path::Path::new(&dir)))
            .await
            .unwrap(),
    );
    let alert = Alert::new("crash-1", "oom killer", AlertSeverity::Critical, "node-9");
    store.save_alert(&alert).await.unwrap();
    std::process::abort();
}

/// The engine does not replay its WAL on load, so only flushed writes survive a crash: every
/// write batch is flushed before it returns.
#[test]
fn a_write_that_returned_survives_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "crash_child_writes_then_aborts"])
        .env(CRASH_DIR_ENV, &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child must abort: {status}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Contract::new(QdrantBackend::connect(&config(&path)).await.unwrap());
        let back = store.get_alert("crash-1").await.unwrap();
        assert_eq!(back.map(|a| a.name), Some("oom killer".to_owned()));
    });
}

/// A portable backup pages in Qdrant's own point order: more series, alerts and agent states
/// than one archive page holds (16 series, 1,000 items) all arrive, once each, and restore
/// into another store exactly.
#[tokio::test(flavor = "multi_thread")]
async fn portable_backups_page_through_every_item_once() {
    use aimon_core::{
        AgentState, AgentStateQuery, BackupFormat, Metric, MetricQuery, MetricType, MetricValue,
        QueryOptions,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Contract::new(
        QdrantBackend::connect(&config(&dir.path().join("a")).option("alert_ttl_seconds", 86_400))
            .await
            .unwrap(),
    );
    let now = aimon_core::time::now();
    let metrics: Vec<Metric> = (0..40)
        .map(|s| {
            let mut m = Metric::new(format!("s/{s:02}"), "latency", MetricType::Gauge);
            m.values = (0..3)
                .map(|i| MetricValue::new(now - chrono::TimeDelta::seconds(i), f64::from(s)))
                .collect();
            m
        })
        .collect();
    store.save_metrics(&metrics).await.unwrap();
    let alerts: Vec<Alert> = (0..2_100)
        .map(|i| {
            Alert::new(
                format!("alert {i}"),
                "disk full",
                AlertSeverity::Low,
                "node",
            )
        })
        .collect();
    store.save_alerts(&alerts).await.unwrap();
    let states: Vec<AgentState> = (0..1_050)
        .map(|i| AgentState::new(format!("state {i}"), format!("agent {i}"), "running"))
        .collect();
    store.save_agent_states(&states).await.unwrap();

    let archive = dir.path().join("archive");
    let report = store
        .backup(&archive, BackupFormat::Portable)
        .await
        .unwrap();
    assert_eq!(
        (
            report.series,
            report.samples,
            report.alerts,
            report.agent_states
        ),
        (40, 120, 2_100, 1_050)
    );
    let copy = Contract::new(
        QdrantBackend::connect(&config(&dir.path().join("b")))
            .await
            .unwrap(),
    );
    copy.restore(&archive, BackupFormat::Portable)
        .await
        .unwrap();
    let mut back = copy
        .query_metrics(&MetricQuery::new().options(QueryOptions::default().limit(1_000)))
        .await
        .unwrap();
    back.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(back.len(), 40);
    assert!(back.iter().all(|m| m.values.len() == 3));
    let alerts_back = copy
        .query_alerts(&AlertQuery::new().options(QueryOptions::default().limit(10_000)))
        .await
        .unwrap();
    assert_eq!(alerts_back.len(), 2_100);
    let states_back = copy
        .get_agent_states(&AgentStateQuery::new().options(QueryOptions::default().limit(10_000)))
        .await
        .unwrap();
    assert_eq!(states_back.len(), 1_050);
}

/// `stats` with TTLs counts through the engine's filtered counts: expired items still stored
/// (no sweep yet) are left out, and a series whose metadata expired is counted only while it
/// holds a live sample.
#[tokio::test(flavor = "multi_thread")]
async fn stats_with_ttls_count_only_live_items() {
    use aimon_core::{AgentState, Metric, MetricType, MetricValue};
    use chrono::TimeDelta;
    let dir = tempfile::tempdir().unwrap();
    let store = Contract::new(
        QdrantBackend::connect(
            &config(&dir.path().join("store"))
                .option("metric_ttl_seconds", 2)
                .option("alert_ttl_seconds", 2)
                .option("agent_state_ttl_seconds", 2),
        )
        .await
        .unwrap(),
    );
    let started = std::time::Instant::now();
    let now = aimon_core::time::now();
    let later = now + TimeDelta::hours(1);
    let metrics: Vec<Metric> = (0..60)
        .map(|s| {
            let mut m = Metric::new(format!("s/{s:02}"), "latency", MetricType::Gauge);
            // Every sixth series is also updated an hour ahead: live by its metadata and by
            // its samples, it must count once.
            m.updated_at = if s % 6 == 0 { later } else { now };
            m.values = (0..20)
                .map(|i| MetricValue::new(now - TimeDelta::milliseconds(i), 1.0))
                .collect();
            // Every third series also holds samples an hour ahead: it outlives its metadata.
            if s % 3 == 0 {
                m.values
                    .extend((0..5).map(|i| MetricValue::new(later + TimeDelta::seconds(i), 2.0)));
            }
            m
        })
        .collect();
    store.save_metrics(&metrics).await.unwrap();
    let alerts: Vec<Alert> = (0..30)
        .map(|i| {
            let mut a = Alert::new(format!("a{i}"), "disk full", AlertSeverity::Low, "node");
            a.updated_at = if i % 5 == 0 { later } else { now };
            a
        })
        .collect();
    store.save_alerts(&alerts).await.unwrap();
    let states: Vec<AgentState> = (0..20)
        .map(|i| {
            let mut s = AgentState::new(format!("st{i}"), format!("agent {i}"), "running");
            s.last_heartbeat = if i % 4 == 0 { later } else { now };
            s
        })
        .collect();
    store.save_agent_states(&states).await.unwrap();
    let fresh = store.stats().await.unwrap();
    // On a machine loaded enough to take over a second and a half, the first half may
    // already have expired: that check is skipped then, never the second.
    if started.elapsed() < std::time::Duration::from_millis(1_500) {
        assert_eq!(
            (
                fresh.series,
                fresh.samples,
                fresh.alerts,
                fresh.agent_states
            ),
            (60, 60 * 20 + 20 * 5, 30, 20),
            "everything is live right after the write"
        );
    }
    let past_ttl = std::time::Duration::from_millis(2_200);
    tokio::time::sleep(past_ttl.saturating_sub(started.elapsed())).await;
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (
            stats.series,
            stats.samples,
            stats.alerts,
            stats.agent_states
        ),
        (20, 20 * 5, 6, 5),
        "only the items an hour ahead are live"
    );
}
