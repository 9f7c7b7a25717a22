//! Parallel writers (tokio tasks on one backend handle): nothing lost, nothing duplicated.

use aimon_core::{AgentStateQuery, AlertQuery, QueryOptions};

use super::support::*;
use crate::fixtures::Fixture;

const WRITERS: usize = 8;
const BATCHES: usize = 10;

async fn join_all(handles: Vec<tokio::task::JoinHandle<()>>) {
    for handle in handles {
        handle.await.expect("a writer task panicked");
    }
}

/// 8 writers in parallel, each with its own series and a shared one: the sample count is exact.
pub async fn parallel_writers_lose_nothing(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let handles = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for b in 0..BATCHES {
                    let mut own = series(&format!("writer-{w}"), "parallel");
                    let mut shared = series("shared", "parallel");
                    for i in 0..5 {
                        let secs = (b * 5 + i) as i64;
                        own.values.push(sample(secs, secs as f64));
                        shared
                            .values
                            .push(sample(secs, w as f64).tag("writer", w.to_string()));
                    }
                    store
                        .save_metrics(&[own, shared])
                        .await
                        .expect("parallel write");
                }
            })
        })
        .collect();
    join_all(handles).await;
    let per_writer = (BATCHES * 5) as u64;
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.series, WRITERS as u64 + 1);
    assert_eq!(stats.samples, per_writer * WRITERS as u64 * 2);
    let shared = store.get_metric("shared").await.unwrap().unwrap();
    assert_eq!(shared.values.len() as u64, per_writer * WRITERS as u64);
    for w in 0..WRITERS {
        let own = store
            .get_metric(&format!("writer-{w}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(own.values.len() as u64, per_writer, "writer-{w}");
    }
}

/// The same batch written by 8 tasks at once (a retry storm) stores it exactly once.
pub async fn parallel_retries_do_not_duplicate(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let batch: Vec<_> = (0..3)
        .map(|s| {
            let mut m = series(&format!("s{s}"), "retry");
            for i in 0..20 {
                m.values
                    .push(sample(i, (s * 100 + i) as f64).tag("k", (i % 2).to_string()));
            }
            m
        })
        .collect();
    let alerts: Vec<_> = (0..5)
        .map(|i| alert(&format!("a{i}"), aimon_core::AlertSeverity::High, i))
        .collect();
    let handles = (0..WRITERS)
        .map(|_| {
            let store = store.clone();
            let batch = batch.clone();
            let alerts = alerts.clone();
            tokio::spawn(async move {
                for _ in 0..3 {
                    store.save_metrics(&batch).await.expect("retry");
                    store.save_alerts(&alerts).await.expect("retry");
                }
            })
        })
        .collect();
    join_all(handles).await;
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.series, stats.samples, stats.alerts), (3, 60, 5));
    let reference = crate::fixtures::open_memory(&[]).await;
    reference.save_metrics(&batch).await.unwrap();
    reference.save_alerts(&alerts).await.unwrap();
    assert_eq!(dump(&store).await, dump(&reference).await);
}

/// Parallel writers of one agent's states leave the state with the greatest heartbeat.
pub async fn parallel_agent_state_writers_keep_the_latest(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let handles = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for k in 0..BATCHES {
                    // Heartbeats interleave between writers: writer w owns k * 8 + w.
                    let hb = (k * WRITERS + w) as i64;
                    store
                        .save_agent_state(&state(&format!("s{hb}"), "agent", "running", hb))
                        .await
                        .expect("parallel state write");
                    store
                        .save_agent_state(&state(
                            &format!("own{w}-{k}"),
                            &format!("agent-{w}"),
                            "running",
                            k as i64,
                        ))
                        .await
                        .expect("parallel state write");
                }
            })
        })
        .collect();
    join_all(handles).await;
    let latest = (BATCHES * WRITERS - 1) as i64;
    let got = store.get_agent_state("agent").await.unwrap().unwrap();
    assert_eq!(
        got,
        state(&format!("s{latest}"), "agent", "running", latest)
    );
    let all = store
        .get_agent_states(&AgentStateQuery::new())
        .await
        .unwrap();
    assert_eq!(all.len(), WRITERS + 1, "one latest state per agent");
    for w in 0..WRITERS {
        let own = store
            .get_agent_state(&format!("agent-{w}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(own.id, format!("own{w}-{}", BATCHES - 1));
    }
}

/// Parallel alert writers with distinct ids: every alert is stored.
pub async fn parallel_alert_writers_lose_nothing(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let handles = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for k in 0..BATCHES {
                    let batch: Vec<_> = (0..2)
                        .map(|i| {
                            alert(
                                &format!("w{w}-{k}-{i}"),
                                aimon_core::AlertSeverity::Medium,
                                k as i64,
                            )
                        })
                        .collect();
                    store
                        .save_alerts(&batch)
                        .await
                        .expect("parallel alert write");
                }
            })
        })
        .collect();
    join_all(handles).await;
    let expected = WRITERS * BATCHES * 2;
    assert_eq!(store.stats().await.unwrap().alerts, expected as u64);
    let all = store
        .query_alerts(&AlertQuery::new().options(QueryOptions::default().limit(1000)))
        .await
        .unwrap();
    assert_eq!(all.len(), expected);
}
