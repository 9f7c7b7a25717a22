//! Rules 8, 9, 10 and 13: errors, capabilities, live events, stats; namespaces and `close`.

use std::time::Duration;

use aimon_core::{
    AgentStateQuery, Aggregation, AlertQuery, BackupFormat, ErrorKind, HistoryQuery, MetricQuery,
    StorageEvent,
};
use chrono::TimeDelta;
use futures::StreamExt;

use super::support::*;
use crate::fixtures::Fixture;

/// `get_*` of an id that was never written is `Ok(None)`, not an error.
pub async fn missing_items_are_none(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    populate(&store).await;
    for id in [
        "nope",
        "agent-1/cpu ",
        "AGENT-1/CPU",
        "'; DROP TABLE x; --",
        "*",
    ] {
        assert_eq!(store.get_metric(id).await.unwrap(), None, "{id:?}");
        assert_eq!(store.get_alert(id).await.unwrap(), None, "{id:?}");
        assert_eq!(store.get_agent_state(id).await.unwrap(), None, "{id:?}");
    }
    // An agent state is found by agent_id, not by its own id.
    assert_eq!(store.get_agent_state("state-0").await.unwrap(), None);
}

/// Two namespaces of one fixture never see each other's data.
pub async fn namespaces_are_isolated(fixture: &Fixture) {
    let one = fixture.open(&[]).await;
    let two = fixture.open(&[]).await;
    populate(&one).await;
    assert!(dump(&two).await.is_empty());
    let stats = two.stats().await.unwrap();
    assert_eq!(
        (
            stats.series,
            stats.samples,
            stats.alerts,
            stats.agent_states
        ),
        (0, 0, 0, 0)
    );
    two.save_metric(&series("agent-1/cpu", "other").with_value(sample(0, -1.0)))
        .await
        .unwrap();
    let in_one = one.get_metric("agent-1/cpu").await.unwrap().unwrap();
    assert_eq!(in_one.name, "cpu.usage");
    assert_eq!(in_one.values.len(), 40);
}

/// After `close()` every call fails with `Unavailable`, which is retryable; nothing panics.
pub async fn calls_after_close_are_unavailable(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    populate(&store).await;
    store.close().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let check = |what: &str, kind: Option<ErrorKind>| {
        assert_eq!(kind, Some(ErrorKind::Unavailable), "{what} after close");
    };
    check(
        "save_metrics",
        store
            .save_metric(&series("m", "n"))
            .await
            .err()
            .map(|e| e.kind()),
    );
    check(
        "get_metric",
        store
            .get_metric("agent-1/cpu")
            .await
            .err()
            .map(|e| e.kind()),
    );
    check(
        "query_metrics",
        store
            .query_metrics(&MetricQuery::new())
            .await
            .err()
            .map(|e| e.kind()),
    );
    check(
        "metric_history",
        store
            .metric_history(&HistoryQuery::new(
                "cpu.usage",
                TimeDelta::seconds(60),
                Aggregation::Avg,
            ))
            .await
            .err()
            .map(|e| e.kind()),
    );
    check(
        "save_alerts",
        store
            .save_alert(&alert("a", aimon_core::AlertSeverity::Info, 0))
            .await
            .err()
            .map(|e| e.kind()),
    );
    check(
        "get_alert",
        store.get_alert("alert-0").await.err().map(|e| e.kind()),
    );
    check(
        "query_alerts",
        store
            .query_alerts(&AlertQuery::new())
            .await
            .err()
            .map(|e| e.kind()),
    );
    check(
        "save_agent_states",
        store
            .save_agent_state(&state("s", "a", "x", 0))
            .await
            .err()
            .map(|e| e.kind()),
    );
    check(
        "get_agent_state",
        store
            .get_agent_state("agent-0")
            .await
            .err()
            .map(|e| e.kind()),
    );
    check(
        "get_agent_states",
        store
            .get_agent_states(&AgentStateQuery::new())
            .await
            .err()
            .map(|e| e.kind()),
    );
    check(
        "apply_retention",
        store.apply_retention().await.err().map(|e| e.kind()),
    );
    check(
        "backup",
        store
            .backup(&dir.path().join("b"), BackupFormat::Portable)
            .await
            .err()
            .map(|e| e.kind()),
    );
    check(
        "restore",
        store
            .restore(&dir.path().join("b"), BackupFormat::Portable)
            .await
            .err()
            .map(|e| e.kind()),
    );
    check("stats", store.stats().await.err().map(|e| e.kind()));
    check("subscribe", store.subscribe().await.err().map(|e| e.kind()));
    let err = store.get_metric("x").await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
}

/// Errors carry the operation and the backend's name (rule 8).
pub async fn errors_name_the_operation_and_backend(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let err = store.save_metric(&series("", "n")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(err.backend(), Some(store.name()), "{err:?}");
    assert!(err.operation().is_some(), "{err:?}");
    assert!(!err.is_retryable());
    let err = store
        .query_alerts(&AlertQuery::new().options(aimon_core::QueryOptions::default().limit(0)))
        .await
        .unwrap_err();
    assert_eq!(err.backend(), Some(store.name()), "{err:?}");
    assert!(err.operation().is_some(), "{err:?}");
}

/// Stats count exactly the live series, samples, alerts and agent states; overwrites and
/// superseded states do not count twice.
pub async fn stats_counts_are_exact(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let empty = store.stats().await.unwrap();
    assert_eq!(
        (
            empty.series,
            empty.samples,
            empty.alerts,
            empty.agent_states
        ),
        (0, 0, 0, 0)
    );
    populate(&store).await;
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.backend, store.name());
    assert_eq!(stats.backend_type, store.backend_type());
    assert!(!stats.version.is_empty());
    assert_eq!(
        (
            stats.series,
            stats.samples,
            stats.alerts,
            stats.agent_states
        ),
        (3, 42, 4, 3)
    );
    // Overwrites, a superseded state, a replaced alert: counts do not move.
    populate(&store).await;
    store
        .save_agent_state(&state("older", "agent-0", "x", 0))
        .await
        .unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (
            stats.series,
            stats.samples,
            stats.alerts,
            stats.agent_states
        ),
        (3, 42, 4, 3)
    );
    // New items do.
    store
        .save_metric(&series("agent-2/tokens", "llm.tokens").with_value(sample(9_999, 1.0)))
        .await
        .unwrap();
    store
        .save_alert(&alert("another", aimon_core::AlertSeverity::Low, 0))
        .await
        .unwrap();
    store
        .save_agent_state(&state("s", "agent-new", "x", 0))
        .await
        .unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (
            stats.series,
            stats.samples,
            stats.alerts,
            stats.agent_states
        ),
        (3, 43, 5, 4)
    );
    let again = store.stats().await.unwrap();
    assert!(again.uptime_seconds >= stats.uptime_seconds);
}

/// A backend that reports the store's size (`size_bytes`) reports one that grows when samples
/// are written, and `bytes_per_sample` is that size over the live samples (`None` while there
/// is none); a backend that cannot tell says `None` before and after, never a size only
/// sometimes. The values are pseudo-random (53 random bits each) and the timestamps jittered,
/// so no codec can squeeze 5,000 samples into the pages or blocks an empty store already has.
pub async fn stats_size_grows_with_the_samples(fixture: &Fixture) {
    const SERIES: usize = 10;
    const PER_SERIES: i64 = 500;
    let store = fixture.open(&[]).await;
    let empty = store.stats().await.unwrap();
    assert_eq!(empty.samples, 0);
    assert_eq!(empty.bytes_per_sample(), None, "no sample to divide by");

    // splitmix64: a fixed, well-mixed sequence without a dependency.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let metrics: Vec<_> = (0..SERIES)
        .map(|s| {
            let mut m = series(&format!("agent-{s}/entropy"), "test.entropy");
            for i in 0..PER_SERIES {
                let jitter = (next() % 1_000_000) as i64;
                let value = (next() >> 11) as f64 / (1u64 << 53) as f64 * 1e6;
                m = m.with_value(aimon_core::MetricValue::new(
                    at_micros(i * 10_000_000 + jitter),
                    value,
                ));
            }
            m
        })
        .collect();
    store.save_metrics(&metrics).await.unwrap();
    let written = store.stats().await.unwrap();
    let samples = SERIES as u64 * PER_SERIES as u64;
    assert_eq!(written.samples, samples);
    // Seen with `--nocapture`: which backends measure, and what a sample costs there.
    eprintln!(
        "{} size: {:?} -> {:?} bytes, {:?} bytes/sample",
        written.backend_type,
        empty.size_bytes,
        written.size_bytes,
        written.bytes_per_sample()
    );
    match (empty.size_bytes, written.size_bytes) {
        (Some(before), Some(after)) => {
            assert!(
                after > before,
                "{samples} samples written, size {before} -> {after} bytes"
            );
            assert_eq!(
                written.bytes_per_sample(),
                Some(after as f64 / samples as f64)
            );
        }
        (None, None) => assert_eq!(written.bytes_per_sample(), None),
        (before, after) => {
            panic!("a size reported only sometimes: {before:?} before, {after:?} after")
        }
    }
}

async fn next_event(stream: &mut aimon_core::EventStream) -> StorageEvent {
    tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("an event within 30 s")
        .expect("the event stream ended")
}

/// With `pub_sub`, `subscribe` yields one event per successful write carrying ids and counts;
/// without it, `subscribe` is `Unsupported` (never a silent empty stream).
pub async fn subscribe_follows_the_pub_sub_capability(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    if !store.capabilities().pub_sub {
        expect_err(
            store.subscribe().await.map(|_| ()),
            ErrorKind::Unsupported,
            None,
        );
        return;
    }
    let mut events = store.subscribe().await.unwrap();
    // A rejected write publishes nothing.
    assert!(store.save_metric(&series("", "n")).await.is_err());
    store
        .save_metric(
            &series("m1", "n")
                .with_value(sample(0, 1.0))
                .with_value(sample(1, 2.0)),
        )
        .await
        .unwrap();
    store
        .save_alert(&alert("a1", aimon_core::AlertSeverity::High, 0))
        .await
        .unwrap();
    store
        .save_agent_state(&state("s1", "agent-1", "running", 0))
        .await
        .unwrap();
    let backend = store.name().to_owned();
    assert_eq!(
        next_event(&mut events).await,
        StorageEvent::MetricWritten {
            backend: backend.clone(),
            metric_id: "m1".into(),
            samples: 2
        }
    );
    assert_eq!(
        next_event(&mut events).await,
        StorageEvent::AlertWritten {
            backend: backend.clone(),
            alert_id: "a1".into(),
            status: "active".into()
        }
    );
    assert_eq!(
        next_event(&mut events).await,
        StorageEvent::AgentStateWritten {
            backend,
            agent_id: "agent-1".into(),
            status: "running".into()
        }
    );
}

/// Two subscribers each receive every event.
pub async fn every_subscriber_receives_every_event(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    if !store.capabilities().pub_sub {
        expect_err(
            store.subscribe().await.map(|_| ()),
            ErrorKind::Unsupported,
            None,
        );
        return;
    }
    let mut one = store.subscribe().await.unwrap();
    let mut two = store.subscribe().await.unwrap();
    for i in 0..5 {
        store
            .save_alert(&alert(&format!("a{i}"), aimon_core::AlertSeverity::Low, 0))
            .await
            .unwrap();
    }
    for stream in [&mut one, &mut two] {
        for i in 0..5 {
            match next_event(stream).await {
                StorageEvent::AlertWritten { alert_id, .. } => {
                    assert_eq!(alert_id, format!("a{i}"))
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

/// Capabilities describe the backend, not the namespace: the same answer every time and for
/// every namespace, and cross-process events imply `pub_sub`. (Each flag's behaviour is checked
/// where it matters, e.g. `backup::native_backup_follows_the_capability`.)
pub async fn capabilities_are_stable(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let caps = store.capabilities();
    assert_eq!(store.capabilities(), caps);
    let other = fixture.open(&[]).await;
    assert_eq!(
        other.capabilities(),
        caps,
        "capabilities do not depend on the namespace"
    );
    if caps.cross_process_events {
        assert!(caps.pub_sub, "cross-process events imply pub_sub");
    }
    assert_eq!(store.backend_type(), other.backend_type());
}
