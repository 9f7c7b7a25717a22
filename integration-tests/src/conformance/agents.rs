//! Rule 5: agent states; semantics.md "Agent states".

use aimon_core::{AgentStateQuery, FilterOp, QueryOptions, SortOrder};
use serde_json::json;

use super::support::*;
use crate::fixtures::Fixture;

/// Every field of an agent state round-trips exactly.
pub async fn agent_state_round_trips_exactly(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let mut s = state("s1", "agent-1", "running", 5);
    s.metrics.insert("tokens".into(), json!(12345));
    s.metrics.insert("ratio".into(), json!(0.125));
    s.metrics
        .insert("models".into(), json!(["a", "b", {"c": [true, null]}]));
    s.metadata.insert("host".into(), json!("node-1"));
    s.metadata.insert(
        "nested".into(),
        json!({"deep": {"deeper": {"deepest": -1.5e-8}}}),
    );
    s.created_at = at(1);
    s.updated_at = at_micros(5_000_007);
    let report = store.save_agent_state(&s).await.unwrap();
    assert_eq!(report.written, 1);
    assert_eq!(
        store.get_agent_state("agent-1").await.unwrap(),
        Some(s.clone())
    );
    assert_eq!(
        store
            .get_agent_states(&AgentStateQuery::new())
            .await
            .unwrap(),
        vec![s]
    );
}

/// Only the latest state per agent is kept: the one with the greatest `last_heartbeat`.
pub async fn latest_state_per_agent_is_kept(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    store
        .save_agent_states(&[
            state("1", "agent-a", "starting", 0),
            state("2", "agent-b", "running", 5),
            state("3", "agent-a", "running", 10),
        ])
        .await
        .unwrap();
    store
        .save_agent_state(&state("4", "agent-a", "busy", 20))
        .await
        .unwrap();
    let a = store.get_agent_state("agent-a").await.unwrap().unwrap();
    assert_eq!(a, state("4", "agent-a", "busy", 20));
    let all = store
        .get_agent_states(&AgentStateQuery::new())
        .await
        .unwrap();
    assert_eq!(
        agent_ids(&all),
        ["agent-a", "agent-b"],
        "one latest state per agent"
    );
    assert_eq!(all[0].id, "4");
    assert_eq!(store.stats().await.unwrap().agent_states, 2);
}

/// A write older than the stored state does not replace it and is counted as superseded, also
/// within one batch.
pub async fn stale_agent_state_is_superseded(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    store
        .save_agent_state(&state("new", "agent-a", "running", 100))
        .await
        .unwrap();
    let report = store
        .save_agent_state(&state("old", "agent-a", "stopped", 50))
        .await
        .unwrap();
    assert_eq!((report.written, report.superseded), (0, 1));
    assert_eq!(
        store.get_agent_state("agent-a").await.unwrap(),
        Some(state("new", "agent-a", "running", 100))
    );
    // In one batch: newer first, then older.
    let report = store
        .save_agent_states(&[
            state("b2", "agent-b", "running", 200),
            state("b1", "agent-b", "starting", 150),
        ])
        .await
        .unwrap();
    assert_eq!((report.written, report.superseded), (1, 1));
    assert_eq!(
        store.get_agent_state("agent-b").await.unwrap().unwrap().id,
        "b2"
    );
}

/// A state with an equal `last_heartbeat` replaces the stored one (a retry is idempotent, a
/// correction at the same instant wins).
pub async fn equal_heartbeat_replaces(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    store
        .save_agent_state(&state("x", "agent-a", "running", 100))
        .await
        .unwrap();
    let mut fix = state("y", "agent-a", "degraded", 100);
    fix.metrics.insert("errors".into(), json!(3));
    let report = store.save_agent_state(&fix).await.unwrap();
    assert_eq!((report.written, report.superseded), (1, 0));
    assert_eq!(
        store.get_agent_state("agent-a").await.unwrap(),
        Some(fix.clone())
    );
    let report = store.save_agent_state(&fix).await.unwrap();
    assert_eq!((report.written, report.superseded), (1, 0));
    assert_eq!(
        store
            .get_agent_states(&AgentStateQuery::new())
            .await
            .unwrap(),
        vec![fix]
    );
}

async fn agents_set(fixture: &Fixture) -> Backend {
    let store = fixture.open(&[]).await;
    store
        .save_agent_states(&[
            state("1", "a", "running", 10),
            state("2", "b", "idle", 20),
            state("3", "c", "running", 30),
            state("4", "d", "failed", 40),
            // Superseded history of "a" must not show through any filter.
            state("0", "a", "failed", 5),
        ])
        .await
        .unwrap();
    store
}

async fn ids(store: &Backend, q: AgentStateQuery) -> Vec<String> {
    store
        .get_agent_states(&q)
        .await
        .unwrap_or_else(|e| panic!("{q:?}: {e}"))
        .into_iter()
        .map(|s| s.agent_id)
        .collect()
}

/// `status` selects exactly on the latest state; an older state's status never matches.
pub async fn agent_states_filter_by_status(fixture: &Fixture) {
    let store = agents_set(fixture).await;
    assert_eq!(
        ids(&store, AgentStateQuery::new().status("running")).await,
        ["a", "c"]
    );
    assert_eq!(
        ids(&store, AgentStateQuery::new().status("failed")).await,
        ["d"]
    );
    assert!(
        ids(&store, AgentStateQuery::new().status("Running"))
            .await
            .is_empty()
    );
}

/// `last_heartbeat_after` is inclusive and applies to the latest state.
pub async fn agent_states_filter_by_heartbeat_after(fixture: &Fixture) {
    let store = agents_set(fixture).await;
    assert_eq!(
        ids(&store, AgentStateQuery::new().heartbeat_after(at(20))).await,
        ["b", "c", "d"]
    );
    assert_eq!(
        ids(&store, AgentStateQuery::new().heartbeat_after(at(21))).await,
        ["c", "d"]
    );
    assert_eq!(
        ids(
            &store,
            AgentStateQuery::new()
                .heartbeat_after(at(5))
                .status("running")
        )
        .await,
        ["a", "c"]
    );
    assert!(
        ids(&store, AgentStateQuery::new().heartbeat_after(at(41)))
            .await
            .is_empty()
    );
}

/// Filters on agent-state fields, order by `agent_id` by default and by any field on request.
pub async fn agent_states_filters_and_order(fixture: &Fixture) {
    let store = agents_set(fixture).await;
    use FilterOp::*;
    let cases: &[(&str, FilterOp, serde_json::Value, &[&str])] = &[
        ("agent_id", Gt, json!("b"), &["c", "d"]),
        ("agent_id", In, json!(["a", "d", "z"]), &["a", "d"]),
        ("status", Ne, json!("running"), &["b", "d"]),
        ("status", Contains, json!("unn"), &["a", "c"]),
        ("status", NotIn, json!(["running", "idle"]), &["d"]),
        ("id", Eq, json!("1"), &["a"]),
        ("id", Eq, json!("0"), &[]),
        ("last_heartbeat", Lt, json!(rfc(at(30))), &["a", "b"]),
        ("last_heartbeat", Gte, json!(rfc(at(30))), &["c", "d"]),
        ("created_at", Eq, json!(rfc(at(20))), &["b"]),
    ];
    for (field, op, value, expected) in cases {
        let q = AgentStateQuery::new().options(QueryOptions::default().filter(
            *field,
            *op,
            value.clone(),
        ));
        assert_eq!(ids(&store, q).await, *expected, "{field} {op:?} {value}");
    }
    let q = AgentStateQuery::new()
        .options(QueryOptions::default().sort("last_heartbeat", SortOrder::Desc));
    assert_eq!(ids(&store, q).await, ["d", "c", "b", "a"]);
    let q = AgentStateQuery::new().options(QueryOptions::default().sort("status", SortOrder::Asc));
    assert_eq!(
        ids(&store, q).await,
        ["d", "b", "a", "c"],
        "ties broken by agent_id"
    );
    let q = AgentStateQuery::new().options(QueryOptions::default().limit(2).offset(1));
    assert_eq!(ids(&store, q).await, ["b", "c"]);
}
