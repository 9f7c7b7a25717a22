//! Rule 12: similarity search, and the embeddings items carry.
//!
//! The embedding round trips and their validation apply to every backend. The similarity checks
//! test both sides of [`Capabilities::similarity_search`](aimon_core::Capabilities): `Unsupported`
//! when it is off; when it is on, the answer must equal the core reference ranking
//! ([`aimon_core::similarity::rank_alerts`]) over the items the same filter selects, with the
//! backend's default embedder ([`HashingEmbedder`](aimon_core::similarity::HashingEmbedder)): same items, same order, same scores (to
//! 1e-5, so that a native vector store may compute them in its own arithmetic).

use aimon_core::similarity::{
    self, HashingEmbedder, MAX_SIMILARITY_LIMIT, Scored, SimilarAgentStatesQuery,
    SimilarAlertsQuery, SimilarityTarget,
};
use aimon_core::{
    AgentState, AgentStateQuery, Alert, AlertQuery, AlertSeverity, AlertStatus, ErrorKind,
    FilterOp, QueryOptions,
};
use serde_json::json;

use super::support::*;
use crate::fixtures::Fixture;

const DIM: usize = HashingEmbedder::DEFAULT_DIMENSION;

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// A vector with awkward values: tiny, huge, negative zero, subnormals (the smallest and the
/// largest), many digits, and `0x15ae43fd`, an `f32` that parsing its text as `f64` and
/// rounding would change (serde-rs/json#671).
fn awkward_vector(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| match i % 9 {
            0 => 0.1 + i as f32 * 1e-3,
            1 => -2.5e-30,
            2 => f32::MAX / 3.0,
            3 => -0.0,
            4 => f32::MIN_POSITIVE,
            5 => f32::from_bits(1),
            6 => -f32::from_bits(0x007f_ffff),
            7 => f32::from_bits(0x15ae_43fd),
            _ => std::f32::consts::PI * i as f32,
        })
        .collect()
}

/// An alert's own embedding round-trips bit for bit (every backend, whatever its capabilities).
pub async fn alert_embedding_round_trips_exactly(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let mut a = alert("with-embedding", AlertSeverity::High, 0);
    a.embedding = Some(awkward_vector(DIM));
    let mut wide = alert("wide-embedding", AlertSeverity::Low, 1);
    wide.embedding = Some(awkward_vector(
        aimon_core::validate::MAX_EMBEDDING_DIMENSION,
    ));
    let plain = alert("without-embedding", AlertSeverity::Low, 2);
    store
        .save_alerts(&[a.clone(), wide.clone(), plain.clone()])
        .await
        .unwrap();
    let back = store.get_alert("with-embedding").await.unwrap().unwrap();
    assert_eq!(
        bits(back.embedding.as_deref().unwrap()),
        bits(a.embedding.as_deref().unwrap())
    );
    assert_eq!(back, a);
    assert_eq!(store.get_alert("wide-embedding").await.unwrap(), Some(wide));
    assert_eq!(
        store.get_alert("without-embedding").await.unwrap(),
        Some(plain)
    );
    let queried = store.query_alerts(&AlertQuery::new()).await.unwrap();
    assert_eq!(queried.len(), 3);
    // Rewriting without an embedding removes it.
    let mut cleared = a.clone();
    cleared.embedding = None;
    store.save_alert(&cleared).await.unwrap();
    assert_eq!(
        store.get_alert("with-embedding").await.unwrap(),
        Some(cleared)
    );
}

/// An agent state's own embedding round-trips bit for bit.
pub async fn agent_state_embedding_round_trips_exactly(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let mut s = state("s1", "agent-1", "running", 10);
    s.embedding = Some(awkward_vector(7));
    store.save_agent_state(&s).await.unwrap();
    let back = store.get_agent_state("agent-1").await.unwrap().unwrap();
    assert_eq!(
        bits(back.embedding.as_deref().unwrap()),
        bits(s.embedding.as_deref().unwrap())
    );
    assert_eq!(back, s);
    let all = store
        .get_agent_states(&AgentStateQuery::new())
        .await
        .unwrap();
    assert_eq!(all, vec![s]);
}

/// Embeddings that are empty, too long, all zeros or not finite are `InvalidInput`, and the
/// batch writes nothing.
pub async fn invalid_embeddings_are_rejected(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let bad_vectors = [
        vec![],
        vec![0.5; aimon_core::validate::MAX_EMBEDDING_DIMENSION + 1],
        vec![0.0; 8],
        vec![1.0, f32::NAN],
        vec![f32::INFINITY, 1.0],
        vec![1.0, f32::NEG_INFINITY],
    ];
    for v in bad_vectors {
        let good = alert("good", AlertSeverity::Low, 0);
        let mut bad = alert("bad", AlertSeverity::Low, 0);
        bad.embedding = Some(v.clone());
        expect_err(
            store.save_alerts(&[good, bad]).await,
            ErrorKind::InvalidInput,
            Some("embedding"),
        );
        let mut s = state("s", "agent-x", "running", 0);
        s.embedding = Some(v);
        expect_err(
            store.save_agent_state(&s).await,
            ErrorKind::InvalidInput,
            Some("embedding"),
        );
    }
    assert!(dump(&store).await.is_empty());
}

/// id, name, description, source, status, severity, labels.
type IncidentRow = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    AlertStatus,
    AlertSeverity,
    &'static [(&'static str, &'static str)],
);

/// A small incident history: three root causes, varied wording, labels, sources, statuses.
fn incident_alerts() -> Vec<Alert> {
    let rows: &[IncidentRow] = &[
        (
            "oom-1",
            "GPU out of memory",
            "CUDA out of memory while loading the vision model",
            "vision-agent",
            AlertStatus::Resolved,
            AlertSeverity::Critical,
            &[("gpu", "a100"), ("env", "prod")],
        ),
        (
            "oom-2",
            "CUDA OOM on worker",
            "GPU memory exhausted during batch inference",
            "vision-agent",
            AlertStatus::Resolved,
            AlertSeverity::High,
            &[("gpu", "h100"), ("env", "prod")],
        ),
        (
            "oom-3",
            "out of GPU memory",
            "allocation of 2 GiB failed: GPU memory full",
            "ocr-agent",
            AlertStatus::Active,
            AlertSeverity::High,
            &[("gpu", "a100"), ("env", "staging")],
        ),
        (
            "rate-1",
            "LLM rate limit exceeded",
            "provider returned HTTP 429 too many requests",
            "planner-agent",
            AlertStatus::Resolved,
            AlertSeverity::Medium,
            &[("provider", "openai"), ("env", "prod")],
        ),
        (
            "rate-2",
            "rate limited by LLM provider",
            "429 rate limit: retry after 20 seconds",
            "writer-agent",
            AlertStatus::Acknowledged,
            AlertSeverity::Medium,
            &[("provider", "anthropic"), ("env", "prod")],
        ),
        (
            "rate-3",
            "too many requests to the model API",
            "the LLM provider throttled requests (HTTP 429)",
            "planner-agent",
            AlertStatus::Active,
            AlertSeverity::Low,
            &[("provider", "openai"), ("env", "staging")],
        ),
        (
            "tool-1",
            "tool call timed out",
            "web_search tool call exceeded its 30 s timeout",
            "research-agent",
            AlertStatus::Resolved,
            AlertSeverity::Medium,
            &[("tool", "web_search"), ("env", "prod")],
        ),
        (
            "tool-2",
            "tool timeout",
            "code_exec tool did not answer before the timeout",
            "coder-agent",
            AlertStatus::Suppressed,
            AlertSeverity::Low,
            &[("tool", "code_exec"), ("env", "dev")],
        ),
        (
            "tool-3",
            "timeout calling tool",
            "the browser tool call timed out after 60 seconds",
            "research-agent",
            AlertStatus::Active,
            AlertSeverity::High,
            &[("tool", "browser"), ("env", "prod")],
        ),
    ];
    rows.iter()
        .enumerate()
        .map(
            |(i, (id, name, description, source, status, severity, labels))| {
                let mut a = alert(id, *severity, i as i64 * 600);
                a.name = (*name).into();
                a.description = Some((*description).into());
                a.source = (*source).into();
                a.status = *status;
                a.labels = tags(labels);
                a
            },
        )
        .collect()
}

/// The reference answer: the core ranking over what `query.filter` selects on `store` (read
/// with an ordinary query), with the target item read from the store.
async fn reference_alerts(store: &Backend, query: &SimilarAlertsQuery) -> Vec<Scored<Alert>> {
    let mut all = query.filter.clone();
    all.options.limit = 100_000;
    let candidates = store.query_alerts(&all).await.unwrap();
    let target = match &query.target {
        SimilarityTarget::Item(id) => store.get_alert(id).await.unwrap(),
        _ => None,
    };
    similarity::rank_alerts(
        query,
        target.as_ref(),
        &HashingEmbedder::default(),
        candidates,
    )
    .unwrap()
}

#[track_caller]
fn assert_same_ranking<T: PartialEq + std::fmt::Debug>(
    got: &[Scored<T>],
    expected: &[Scored<T>],
    what: &str,
) {
    assert_eq!(got.len(), expected.len(), "{what}: {got:#?}");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert_eq!(g.item, e.item, "{what}: rank {i}");
        assert!(
            (g.score - e.score).abs() <= 1e-5,
            "{what}: rank {i} scores {} instead of {}",
            g.score,
            e.score
        );
    }
}

/// Without the capability both calls are `Unsupported`; with it, they answer (even on an empty
/// store, with nothing).
pub async fn similarity_follows_the_capability(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let alerts = store
        .find_similar_alerts(&SimilarAlertsQuery::text("disk full"))
        .await;
    let states = store
        .find_similar_agent_states(&SimilarAgentStatesQuery::text("stuck"))
        .await;
    if !store.capabilities().similarity_search {
        expect_err(alerts, ErrorKind::Unsupported, None);
        expect_err(states, ErrorKind::Unsupported, None);
        return;
    }
    assert_eq!(alerts.unwrap(), vec![]);
    assert_eq!(states.unwrap(), vec![]);
}

/// Text, item and vector targets rank exactly as the core reference scorer does, by score
/// descending then id ascending; related incidents come first.
pub async fn similar_alerts_rank_like_the_reference(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    if !store.capabilities().similarity_search {
        return;
    }
    store.save_alerts(&incident_alerts()).await.unwrap();
    let embedder = HashingEmbedder::default();
    let queries = [
        SimilarAlertsQuery::text("the GPU ran out of memory").limit(9),
        SimilarAlertsQuery::text("HTTP 429 from the provider").limit(3),
        SimilarAlertsQuery::item("tool-1").limit(MAX_SIMILARITY_LIMIT),
        SimilarAlertsQuery::vector(aimon_core::Embedder::embed(
            &embedder,
            "timeout of a tool call",
        )),
    ];
    for query in queries {
        let got = store.find_similar_alerts(&query).await.unwrap();
        let expected = reference_alerts(&store, &query).await;
        assert_same_ranking(&got, &expected, &format!("{:?}", query.target));
        for pair in got.windows(2) {
            assert!(
                pair[0].score > pair[1].score
                    || (pair[0].score == pair[1].score && pair[0].item.id < pair[1].item.id),
                "order: {pair:?}"
            );
        }
    }
    let oom = store
        .find_similar_alerts(&SimilarAlertsQuery::text("the GPU ran out of memory").limit(3))
        .await
        .unwrap();
    let mut ids: Vec<&str> = oom.iter().map(|s| s.item.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["oom-1", "oom-2", "oom-3"]);
}

/// Equal scores are ordered by id, on every backend.
pub async fn equal_scores_are_ordered_by_id(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    if !store.capabilities().similarity_search {
        return;
    }
    let mut items = Vec::new();
    for id in ["b", "a", "c/3", "A", "z"] {
        let mut a = alert(id, AlertSeverity::Low, 0);
        a.name = "identical text".into();
        items.push(a);
    }
    store.save_alerts(&items).await.unwrap();
    let got = store
        .find_similar_alerts(&SimilarAlertsQuery::text("identical text"))
        .await
        .unwrap();
    let ids: Vec<&str> = got.iter().map(|s| s.item.id.as_str()).collect();
    assert_eq!(ids, ["A", "a", "b", "c/3", "z"]);
    assert!(got.iter().all(|s| s.score == got[0].score));
}

/// Every filter of `AlertQuery` applies: only selected alerts are candidates.
pub async fn similarity_filters_apply(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    if !store.capabilities().similarity_search {
        return;
    }
    store.save_alerts(&incident_alerts()).await.unwrap();
    let filters = [
        AlertQuery::new().status(AlertStatus::Resolved),
        AlertQuery::new().severity(AlertSeverity::Medium),
        AlertQuery::new().min_severity(AlertSeverity::High),
        AlertQuery::new().source("research-agent"),
        AlertQuery::new().label("env", "prod"),
        AlertQuery::new()
            .label("env", "prod")
            .label("provider", "openai"),
        AlertQuery::new().range(at(600), at(3000)),
        AlertQuery::new().options(QueryOptions::default().filter(
            "labels.gpu",
            FilterOp::In,
            json!(["a100"]),
        )),
        AlertQuery::new().options(QueryOptions::default().filter(
            "description",
            FilterOp::Contains,
            "429",
        )),
        AlertQuery::new()
            .status(AlertStatus::Suppressed)
            .source("nobody"),
    ];
    for filter in filters {
        for target in [
            SimilarityTarget::Text("timeout rate limit memory".into()),
            SimilarityTarget::Item("oom-1".into()),
        ] {
            let query = SimilarAlertsQuery::new(target)
                .limit(20)
                .filter(filter.clone());
            let got = store.find_similar_alerts(&query).await.unwrap();
            let expected = reference_alerts(&store, &query).await;
            assert_same_ranking(&got, &expected, &format!("{filter:?}"));
            let options = filter.resolve().unwrap();
            assert!(got.iter().all(|s| filter.matches(&s.item, &options)));
        }
    }
    // The item target need not pass the filter itself.
    let query = SimilarAlertsQuery::item("oom-1").filter(AlertQuery::new().source("planner-agent"));
    let got = store.find_similar_alerts(&query).await.unwrap();
    let ids: Vec<&str> = got.iter().map(|s| s.item.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["rate-1", "rate-3"]);
}

/// An item target is left out of its own results; a missing one is `NotFound`.
pub async fn item_target_excludes_itself(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    if !store.capabilities().similarity_search {
        return;
    }
    store.save_alerts(&incident_alerts()).await.unwrap();
    let got = store
        .find_similar_alerts(&SimilarAlertsQuery::item("rate-2").limit(100))
        .await
        .unwrap();
    assert_eq!(got.len(), incident_alerts().len() - 1);
    assert!(got.iter().all(|s| s.item.id != "rate-2"));
    assert!(got[0].item.id.starts_with("rate-"), "{:?}", got[0].item.id);
    expect_err(
        store
            .find_similar_alerts(&SimilarAlertsQuery::item("no-such-alert"))
            .await,
        ErrorKind::NotFound,
        None,
    );
    expect_err(
        store
            .find_similar_agent_states(&SimilarAgentStatesQuery::item("no-such-agent"))
            .await,
        ErrorKind::NotFound,
        None,
    );
}

/// Wrong dimensions, NaN, infinities, zero vectors, bad limits, blank texts and paging options
/// are `InvalidInput`; nothing panics.
pub async fn bad_similarity_queries_are_invalid_input(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    if !store.capabilities().similarity_search {
        return;
    }
    store.save_alerts(&incident_alerts()).await.unwrap();
    let mut nan = vec![0.1; DIM];
    nan[7] = f32::NAN;
    let mut inf = vec![0.1; DIM];
    inf[0] = f32::INFINITY;
    let mut paged = SimilarAlertsQuery::text("x");
    paged.filter.options.offset = 3;
    let mut sorted = SimilarAlertsQuery::text("x");
    sorted.filter.options.sort_by = Some("id".into());
    let bad = [
        SimilarAlertsQuery::vector(vec![0.1; DIM - 1]),
        SimilarAlertsQuery::vector(vec![0.1; DIM + 1]),
        SimilarAlertsQuery::vector(vec![]),
        SimilarAlertsQuery::vector(nan.clone()),
        SimilarAlertsQuery::vector(inf),
        SimilarAlertsQuery::vector(vec![0.0; DIM]),
        SimilarAlertsQuery::text("x").limit(0),
        SimilarAlertsQuery::text("x").limit(MAX_SIMILARITY_LIMIT + 1),
        SimilarAlertsQuery::text("x").limit(usize::MAX),
        SimilarAlertsQuery::text(""),
        SimilarAlertsQuery::text("   \n"),
        SimilarAlertsQuery::text("!!! ???"),
        SimilarAlertsQuery::text("nul\0"),
        SimilarAlertsQuery::item(""),
        SimilarAlertsQuery::item("bad\nid"),
        paged,
        sorted,
        SimilarAlertsQuery::text("x").filter(
            AlertQuery::new().options(QueryOptions::default().filter(
                "no_such_field",
                FilterOp::Eq,
                "x",
            )),
        ),
    ];
    for query in bad {
        expect_err(
            store.find_similar_alerts(&query).await,
            ErrorKind::InvalidInput,
            None,
        );
    }
    expect_err(
        store
            .find_similar_agent_states(&SimilarAgentStatesQuery::vector(nan))
            .await,
        ErrorKind::InvalidInput,
        None,
    );
    expect_err(
        store
            .find_similar_agent_states(&SimilarAgentStatesQuery::vector(vec![1.0; 3]))
            .await,
        ErrorKind::InvalidInput,
        None,
    );
}

/// Label keys with dots, brackets and quotes filter exactly: `a.b` is one key, not `a` nested.
pub async fn hostile_label_keys_filter_exactly(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    if !store.capabilities().similarity_search {
        return;
    }
    let keys = [
        "a.b",
        "a",
        "list[0]",
        "say \"hi\"",
        "it's",
        "a.b.c",
        "$.x",
        "*",
    ];
    let mut items = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let mut a = alert(&format!("k{i}"), AlertSeverity::Low, i as i64);
        a.name = "disk full on the node".into();
        a.labels = tags(&[(key, "x")]);
        items.push(a);
    }
    // Would match `a.b` if dots nested: label `a` holding `{"b": "x"}`-like text.
    let mut nested = alert("nested", AlertSeverity::Low, 100);
    nested.name = "disk full on the node".into();
    nested.labels = tags(&[("a", "{\"b\":\"x\"}")]);
    items.push(nested);
    store.save_alerts(&items).await.unwrap();
    for (i, key) in keys.iter().enumerate() {
        let by_labels = SimilarAlertsQuery::text("disk full")
            .limit(50)
            .filter(AlertQuery::new().label(*key, "x"));
        let got = store.find_similar_alerts(&by_labels).await.unwrap();
        let ids: Vec<&str> = got.iter().map(|s| s.item.id.as_str()).collect();
        assert_eq!(ids, [format!("k{i}")], "labels {key:?}");
        let by_filter =
            SimilarAlertsQuery::text("disk full")
                .limit(50)
                .filter(AlertQuery::new().options(QueryOptions::default().filter(
                    format!("labels.{key}"),
                    FilterOp::Eq,
                    "x",
                )));
        let got = store.find_similar_alerts(&by_filter).await.unwrap();
        let ids: Vec<&str> = got.iter().map(|s| s.item.id.as_str()).collect();
        assert_eq!(ids, [format!("k{i}")], "labels.{key}");
    }
}

/// A 1 MiB description and ids that are not UUIDs (slashes, spaces, quotes, emoji) work as
/// candidates and as targets.
pub async fn huge_descriptions_and_free_form_ids_work(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    if !store.capabilities().similarity_search {
        return;
    }
    let mut items = Vec::new();
    let mut huge = alert("huge/1 MiB", AlertSeverity::High, 0);
    huge.name = "GPU out of memory".into();
    let sentence = "the gpu ran out of memory again while loading weights. ";
    let mut text = sentence.repeat(aimon_core::validate::MAX_TEXT_BYTES / sentence.len());
    text.truncate(aimon_core::validate::MAX_TEXT_BYTES);
    huge.description = Some(text);
    items.push(huge);
    for (i, id) in HOSTILE.iter().enumerate() {
        let mut a = alert(id, AlertSeverity::Low, i as i64 + 1);
        a.name = if i % 2 == 0 {
            "GPU out of memory"
        } else {
            "rate limit"
        }
        .into();
        items.push(a);
    }
    store.save_alerts(&items).await.unwrap();
    let query = SimilarAlertsQuery::item("huge/1 MiB").limit(100);
    let got = store.find_similar_alerts(&query).await.unwrap();
    assert_same_ranking(&got, &reference_alerts(&store, &query).await, "huge target");
    assert_eq!(got.len(), HOSTILE.len());
    for id in HOSTILE {
        let query = SimilarAlertsQuery::item(*id).limit(100);
        let got = store.find_similar_alerts(&query).await.unwrap();
        assert_eq!(got.len(), HOSTILE.len(), "{id:?}");
        assert!(got.iter().any(|s| s.item.id == "huge/1 MiB"));
        assert!(got.iter().all(|s| s.item.id != *id));
    }
}

/// Items' own embeddings are what vector targets meet; items of another dimension are left out.
pub async fn own_embeddings_are_scored(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    if !store.capabilities().similarity_search {
        return;
    }
    let axis = |i: usize, w: f32| {
        let mut v = vec![0.0; DIM];
        v[i] = 1.0;
        v[(i + 1) % DIM] = w;
        v
    };
    let mut items = Vec::new();
    for (id, v) in [
        ("e1", axis(0, 0.1)),
        ("e2", axis(0, 0.5)),
        ("e3", axis(5, 0.0)),
        ("short", vec![1.0, 0.0, 0.0]),
    ] {
        let mut a = alert(id, AlertSeverity::Low, 0);
        a.embedding = Some(v);
        items.push(a);
    }
    store.save_alerts(&items).await.unwrap();
    let got = store
        .find_similar_alerts(&SimilarAlertsQuery::vector(axis(0, 0.0)))
        .await
        .unwrap();
    let ids: Vec<&str> = got.iter().map(|s| s.item.id.as_str()).collect();
    assert_eq!(ids, ["e1", "e2", "e3"]);
    assert!((got[0].score - 1.0 / 1.01f32.sqrt()).abs() < 1e-5);
    assert_eq!(got[2].score, 0.0);
    // A target item whose embedding has another dimension cannot be compared.
    expect_err(
        store
            .find_similar_alerts(&SimilarAlertsQuery::item("short"))
            .await,
        ErrorKind::InvalidInput,
        Some("dimension"),
    );
}

/// Agent states: latest state per agent, filters, item target by `agent_id`, same ranking as
/// the reference.
pub async fn similar_agent_states_rank_like_the_reference(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    if !store.capabilities().similarity_search {
        return;
    }
    let rows = [
        ("planner-1", "stuck", "planner", "waiting for tool"),
        ("planner-2", "stuck", "planner", "waiting for tool"),
        ("planner-3", "running", "planner", "idle"),
        ("coder-1", "error", "coder", "compile failed"),
        ("coder-2", "running", "coder", "writing code"),
        ("vision-1", "error", "vision", "gpu out of memory"),
    ];
    let mut states = Vec::new();
    for (i, (agent, status, role, note)) in rows.iter().enumerate() {
        let mut s = state(&format!("s{i}"), agent, status, 100 + i as i64);
        s.metadata.insert("role".into(), json!(role));
        s.metadata.insert("note".into(), json!(note));
        s.metrics.insert("queue_depth".into(), json!(i));
        states.push(s);
    }
    // An older state of planner-3 that said "stuck": superseded, never a candidate.
    let mut old = state("old", "planner-3", "stuck", 1);
    old.metadata
        .insert("note".into(), json!("waiting for tool"));
    states.push(old);
    store.save_agent_states(&states).await.unwrap();
    let embedder = HashingEmbedder::default();
    let queries = [
        SimilarAgentStatesQuery::text("stuck planner waiting for a tool"),
        SimilarAgentStatesQuery::item("planner-1").limit(3),
        SimilarAgentStatesQuery::item("vision-1").filter(AgentStateQuery::new().status("error")),
        SimilarAgentStatesQuery::text("error").filter(
            AgentStateQuery::new().options(QueryOptions::default().filter(
                "agent_id",
                FilterOp::Contains,
                "coder",
            )),
        ),
        SimilarAgentStatesQuery::text("running")
            .filter(AgentStateQuery::new().heartbeat_after(at(103))),
    ];
    for query in queries {
        let got = store.find_similar_agent_states(&query).await.unwrap();
        let mut all = query.filter.clone();
        all.options.limit = 100_000;
        let candidates = store.get_agent_states(&all).await.unwrap();
        let target: Option<AgentState> = match &query.target {
            SimilarityTarget::Item(id) => store.get_agent_state(id).await.unwrap(),
            _ => None,
        };
        let expected =
            similarity::rank_agent_states(&query, target.as_ref(), &embedder, candidates).unwrap();
        assert_same_ranking(&got, &expected, &format!("{query:?}"));
    }
    let got = store
        .find_similar_agent_states(&SimilarAgentStatesQuery::item("planner-1").limit(1))
        .await
        .unwrap();
    assert_eq!(got[0].item.agent_id, "planner-2");
    assert_eq!(got[0].item.id, "s1");
}
