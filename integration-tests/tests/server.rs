//! `aimon serve` (the `aimon-server` crate) over real HTTP, against SQLite, Redis and
//! PostgreSQL: every check starts a server on a free loopback port in front of a fresh
//! namespace and talks to it with an HTTP client.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use aimon_core::{
    Aggregation, DataKind, HistoryQuery, Metric, MetricQuery, StorageBackend, StorageConfig,
};
use aimon_integration_tests::fixtures::{self, Fixture};
use aimon_registry::StorageManager;
use aimon_server::{Limits, Server, ServerConfig, TokenConfig};
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server in front of one fresh namespace.
struct Running {
    base: String,
    http: reqwest::Client,
    manager: Arc<StorageManager>,
    config: StorageConfig,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<aimon_core::Result<()>>>,
}

impl Running {
    /// A server on a free loopback port (whatever `server.listen` says).
    async fn start(fixture: &Fixture, mut server: ServerConfig) -> Running {
        server.listen = "127.0.0.1:0".parse().unwrap();
        let config = fixture.config(&[]);
        let manager = Arc::new(StorageManager::new());
        manager
            .initialize_backend(config.clone())
            .await
            .expect("a fresh namespace");
        let server = Server::bind(Arc::clone(&manager), server).expect("bind");
        let base = format!("http://{}", server.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(10),
        ));
        Running {
            base,
            http: reqwest::Client::new(),
            manager,
            config,
            stop: Some(stop),
            task: Some(task),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("the server answers")
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .send()
            .await
            .expect("the server answers")
    }

    /// Stops the server and waits until everything it accepted is stored.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("the server task").expect("a clean stop");
        }
        let _ = self.manager.close(None).await;
    }
}

/// The JSON of an answer, with its status checked.
async fn body(response: reqwest::Response, status: u16) -> Value {
    let got = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(got, status, "{text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn at(seconds: i64) -> DateTime<Utc> {
    aimon_core::time::now() - TimeDelta::hours(2) + TimeDelta::seconds(seconds)
}

fn time(t: DateTime<Utc>) -> String {
    aimon_core::time::format(t)
}

/// Samples written through the API come back exactly through every read route, and
/// `history` answers what the store itself answers.
async fn metrics_round_trip(fixture: &Fixture) {
    let server = Running::start(fixture, ServerConfig::default()).await;
    let values = |agent: &str| {
        (0..120)
            .map(|i| json!({"timestamp": time(at(i * 10)), "value": i as f64 * 1.5 + 0.25, "tags": {"agent": agent}}))
            .collect::<Vec<_>>()
    };
    let answer = server
        .post(
            "/api/v1/metrics",
            json!({"metrics": [
                {"id": "a1/latency", "name": "llm.latency_ms", "type": "gauge", "unit": "ms", "values": values("a1")},
                {"id": "a2/latency", "name": "llm.latency_ms", "values": values("a2")},
            ]}),
        )
        .await;
    assert_eq!(body(answer, 200).await["accepted"], 240);
    let one = body(server.get("/api/v1/metrics/a1%2Flatency").await, 200).await;
    let stored: Metric = serde_json::from_value(one).unwrap();
    assert_eq!(stored.values.len(), 120);
    assert_eq!(stored.values[7].value, 7.0 * 1.5 + 0.25);
    assert_eq!(stored.unit.as_deref(), Some("ms"));
    let list = body(
        server
            .get("/api/v1/metrics?name=llm.latency_ms&tag=agent%3Da2&sort=id")
            .await,
        200,
    )
    .await;
    let list: Vec<Metric> = serde_json::from_value(list).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, "a2/latency");
    // History through the API is the store's own answer, value for value.
    let (start, end) = (at(0), at(1200));
    let path = format!(
        "/api/v1/history?name=llm.latency_ms&step=5m&aggregation=sum&start={}&end={}&group_by=agent",
        urlencode(&time(start)),
        urlencode(&time(end))
    );
    let through_api: Vec<aimon_core::HistorySeries> =
        serde_json::from_value(body(server.get(&path).await, 200).await).unwrap();
    let direct = server
        .manager
        .get_metric_history(
            &HistoryQuery::new("llm.latency_ms", TimeDelta::minutes(5), Aggregation::Sum)
                .range(start, end)
                .group_by("agent"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(through_api, direct);
    assert_eq!(through_api.len(), 2);
    server.stop().await;
}

fn urlencode(text: &str) -> String {
    text.replace(':', "%3A").replace('+', "%2B")
}

/// Alerts: upsert, query, acknowledge, resolve; unknown ids are 404 with a JSON error.
async fn alert_lifecycle(fixture: &Fixture) {
    let server = Running::start(fixture, ServerConfig::default()).await;
    let answer = server
        .post(
            "/api/v1/alerts",
            json!({"alerts": [
                {"id": "al-1", "name": "high-latency", "severity": "high", "source": "a1", "labels": {"agent": "a1"}},
                {"id": "al-2", "name": "cost", "severity": "low", "source": "a2"},
            ]}),
        )
        .await;
    assert_eq!(body(answer, 200).await["written"], 2);
    let active = body(
        server
            .get("/api/v1/alerts?status=active&min_severity=medium")
            .await,
        200,
    )
    .await;
    assert_eq!(active.as_array().unwrap().len(), 1);
    assert_eq!(active[0]["id"], "al-1");
    let acked = body(
        server
            .post("/api/v1/alerts/al-1/acknowledge", json!({"by": "oncall"}))
            .await,
        200,
    )
    .await;
    assert_eq!(acked["status"], "acknowledged");
    assert_eq!(acked["acknowledged_by"], "oncall");
    let stored = server
        .manager
        .get_alert("al-1", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.acknowledged_by.as_deref(), Some("oncall"));
    // An empty body is allowed: the actor is the token's name, or `api`.
    let resolved = server
        .http
        .post(server.url("/api/v1/alerts/al-1/resolve"))
        .send()
        .await
        .unwrap();
    let resolved = body(resolved, 200).await;
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["resolved_by"], "api");
    let missing = body(
        server
            .post("/api/v1/alerts/nope/acknowledge", json!({}))
            .await,
        404,
    )
    .await;
    assert_eq!(missing["error"]["kind"], "not_found");
    server.stop().await;
}

/// Heartbeats: the latest state per agent.
async fn agent_heartbeats(fixture: &Fixture) {
    let server = Running::start(fixture, ServerConfig::default()).await;
    let answer = server
        .post(
            "/api/v1/agents",
            json!({"states": [
                {"agent_id": "a1", "status": "running", "last_heartbeat": time(at(0)), "metrics": {"tokens": 10}},
                {"agent_id": "a1", "status": "degraded", "last_heartbeat": time(at(60))},
                {"agent_id": "a2", "status": "idle"},
            ]}),
        )
        .await;
    body(answer, 200).await;
    let a1 = body(server.get("/api/v1/agents/a1").await, 200).await;
    assert_eq!(a1["status"], "degraded");
    let all = body(server.get("/api/v1/agents?sort=agent_id").await, 200).await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    let idle = body(server.get("/api/v1/agents?status=idle").await, 200).await;
    assert_eq!(idle[0]["agent_id"], "a2");
    body(server.get("/api/v1/agents/nobody").await, 404).await;
    server.stop().await;
}

/// Hostile requests get a clear JSON error and store nothing.
async fn hostile_requests_are_refused_and_store_nothing(fixture: &Fixture) {
    let limits = Limits {
        max_body_bytes: 256 << 10,
        max_decompressed_bytes: 1 << 20,
        max_samples_per_request: 1_000,
        ..Limits::default()
    };
    let server = Running::start(
        fixture,
        ServerConfig {
            limits,
            ..ServerConfig::default()
        },
    )
    .await;
    let http = &server.http;
    let metrics = server.url("/api/v1/metrics");
    let one = json!({"metrics": [{"id": "s", "name": "n", "values": [{"timestamp": time(at(0)), "value": 1.0}]}]});
    // Wrong content type.
    let r = http
        .post(&metrics)
        .body(one.to_string())
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(
        body(r, 415).await["error"]["kind"],
        "unsupported_media_type"
    );
    // Malformed and truncated JSON, unknown fields, a number out of range (JSON has no NaN).
    for bad in [
        "{".to_owned(),
        one.to_string()[..20].to_owned(),
        r#"{"metrics": [], "extra": 1}"#.to_owned(),
        r#"{"metrics": [{"id": "s", "name": "n", "values": [{"timestamp": "2025-01-01T00:00:00Z", "value": 1e999}]}]}"#.to_owned(),
        r#"{"metrics": [{"id": "s", "name": "n", "values": [{"timestamp": "yesterday", "value": 1}]}]}"#.to_owned(),
    ] {
        let r = http.post(&metrics).body(bad.clone()).header("content-type", "application/json").send().await.unwrap();
        let e = body(r, 400).await;
        assert_eq!(e["error"]["kind"], "invalid_input", "{bad}");
    }
    // A valid document with one invalid sample (a control character in a tag): nothing stored.
    let half_bad = json!({"metrics": [
        {"id": "ok", "name": "n", "values": [{"timestamp": time(at(0)), "value": 1.0}]},
        {"id": "bad", "name": "n", "values": [{"timestamp": time(at(0)), "value": 1.0, "tags": {"k": "a\u{1}b"}}]},
    ]});
    body(server.post("/api/v1/metrics", half_bad).await, 400).await;
    // Too many samples.
    let many: Vec<Value> = (0..1_001)
        .map(|i| json!({"timestamp": time(at(i)), "value": 1.0}))
        .collect();
    let r = server
        .post(
            "/api/v1/metrics",
            json!({"metrics": [{"id": "s", "name": "n", "values": many}]}),
        )
        .await;
    assert_eq!(body(r, 413).await["error"]["kind"], "too_large");
    // A body over the limit as sent, and a gzip bomb under it that inflates past the limit.
    let big = "x".repeat(300 << 10);
    let r = http
        .post(&metrics)
        .body(big)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    body(r, 413).await;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b' '; 32 << 20]).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 256 << 10);
    let r = http
        .post(&metrics)
        .body(bomb)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .send()
        .await
        .unwrap();
    body(r, 413).await;
    // Injection attempts in paths and parameters are data, not code.
    let r = server.get("/api/v1/metrics?name=n'%20OR%20'1'%3D'1").await;
    assert_eq!(body(r, 200).await, json!([]));
    let r = server.get("/api/v1/metrics/..%2F..%2Fetc%2Fpasswd").await;
    body(r, 404).await;
    let r = server
        .get("/api/v1/alerts?status=active;DROP%20TABLE%20alerts")
        .await;
    body(r, 400).await;
    let r = server.get("/api/v1/metrics?nmae=typo").await;
    assert_eq!(body(r, 400).await["error"]["field"], "nmae");
    let r = server.get("/api/v1/history?name=n&step=0s").await;
    body(r, 400).await;
    let r = server
        .http
        .put(server.url("/api/v1/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(body(r, 405).await["error"]["kind"], "method_not_allowed");
    // A misspelt field of a similarity query is an error, not a wider query.
    let r = server
        .post(
            "/api/v1/alerts/similar",
            json!({"target": {"text": "x"}, "limt": 3}),
        )
        .await;
    body(r, 400).await;
    let r = server
        .post(
            "/api/v1/alerts/similar",
            json!({"target": {"text": "x"}, "filter": {"statuss": "active"}}),
        )
        .await;
    body(r, 400).await;
    let r = server.get("/no/such/route").await;
    assert_eq!(body(r, 404).await["error"]["kind"], "not_found");
    // Nothing of any of these was stored.
    let stored = server
        .manager
        .query_metrics(&MetricQuery::new(), None)
        .await
        .unwrap();
    assert!(stored.is_empty(), "{stored:?}");
    server.stop().await;
}

/// Tokens: none is 401, a read token on a write route 403, secrets never echoed.
async fn tokens_and_scopes(fixture: &Fixture) {
    let config = ServerConfig {
        tokens: TokenConfig::parse_list(
            "reader:read:r-s3cret,writer:write:w-s3cret,root:admin:a-s3cret",
        )
        .unwrap(),
        ..ServerConfig::default()
    };
    let server = Running::start(fixture, config).await;
    let write = |token: Option<&str>| {
        let mut request = server
            .http
            .post(server.url("/api/v1/alerts"))
            .json(&json!({"alerts": [{"id": "x", "name": "n", "severity": "low", "source": "s"}]}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let r = write(None).await.unwrap();
    assert_eq!(body(r, 401).await["error"]["kind"], "unauthenticated");
    let r = write(Some("wrong")).await.unwrap();
    let text = body(r, 401).await.to_string();
    assert!(
        !text.contains("wrong") && !text.contains("s3cret"),
        "{text}"
    );
    let r = write(Some("r-s3cret")).await.unwrap();
    let text = body(r, 403).await.to_string();
    assert!(
        text.contains("reader") && !text.contains("s3cret"),
        "{text}"
    );
    body(write(Some("w-s3cret")).await.unwrap(), 200).await;
    // Reads need a token too; a write token reads.
    body(server.get("/api/v1/alerts").await, 401).await;
    let r = server
        .http
        .get(server.url("/api/v1/alerts"))
        .bearer_auth("w-s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(body(r, 200).await.as_array().unwrap().len(), 1);
    // Retention needs admin.
    let r = server
        .http
        .post(server.url("/api/v1/retention"))
        .bearer_auth("w-s3cret")
        .send()
        .await
        .unwrap();
    body(r, 403).await;
    let r = server
        .http
        .post(server.url("/api/v1/retention"))
        .bearer_auth("a-s3cret")
        .send()
        .await
        .unwrap();
    body(r, 200).await;
    // The acknowledging token's name is the default actor.
    let r = server
        .http
        .post(server.url("/api/v1/alerts/x/acknowledge"))
        .bearer_auth("w-s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(body(r, 200).await["acknowledged_by"], "writer");
    server.stop().await;
}

/// Many small concurrent writes become few backend batches, and every acknowledged sample is
/// stored.
async fn concurrent_small_writes_coalesce(fixture: &Fixture) {
    let server = Arc::new(Running::start(fixture, ServerConfig::default()).await);
    let clients = 200;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let server = Arc::clone(&server);
        tasks.push(tokio::spawn(async move {
            let values: Vec<Value> = (0..10)
                .map(|i| json!({"timestamp": time(at(i)), "value": c as f64, "tags": {"client": c.to_string()}}))
                .collect();
            let r = server
                .post("/api/v1/metrics", json!({"metrics": [{"id": format!("c{c}"), "name": "load", "values": values}]}))
                .await;
            r.status().as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let text = server.get("/metrics").await.text().await.unwrap();
    let batches = counter(&text, "aimon_ingest_batches_total");
    let samples = counter(&text, "aimon_samples_ingested_total");
    assert_eq!(samples, 2_000.0, "{text}");
    assert!(
        batches < clients as f64 / 2.0,
        "{batches} batches for {clients} requests"
    );
    let stored = server
        .manager
        .query_metrics(
            &MetricQuery::new()
                .name("load")
                .options(aimon_core::QueryOptions::default().limit(1000)),
            None,
        )
        .await
        .unwrap();
    assert_eq!(stored.iter().map(|m| m.values.len()).sum::<usize>(), 2_000);
    Arc::into_inner(server).expect("one owner").stop().await;
}

fn counter(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("{name} not in {text}"))
}

/// Server-Sent Events carry writes, of this server and (Redis, PostgreSQL) of other processes.
async fn live_events(fixture: &Fixture) {
    let server = Running::start(fixture, ServerConfig::default()).await;
    let response = server.get("/api/v1/events?kind=alerts").await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    // Give the subscription a moment to be in place before writing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    server
        .post(
            "/api/v1/alerts",
            json!({"alerts": [{"id": "live-1", "name": "n", "severity": "low", "source": "s"}]}),
        )
        .await;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !seen.contains("live-1") {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("the event within 5 s")
            .expect("the stream stays open")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: alert"), "{seen}");
    // Another process's write (another connection to the same namespace).
    let other = aimon_registry::open(&server.config).await.unwrap();
    if other.capabilities().cross_process_events {
        let alert = aimon_core::Alert::new("live-2", "n", aimon_core::AlertSeverity::Low, "other");
        other.save_alert(&alert).await.unwrap();
        while !seen.contains("live-2") {
            let chunk = tokio::time::timeout_at(deadline, stream.next())
                .await
                .expect("another process's event within 5 s")
                .expect("the stream stays open")
                .unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    other.close().await.unwrap();
    drop(stream);
    server.stop().await;
}

/// A client that does not read is dropped with a final event, and the server's memory for it
/// stays bounded.
async fn a_slow_event_consumer_is_dropped(fixture: &Fixture) {
    let limits = Limits {
        event_buffer: 8,
        ..Limits::default()
    };
    let server = Running::start(
        fixture,
        ServerConfig {
            limits,
            ..ServerConfig::default()
        },
    )
    .await;
    let response = server.get("/api/v1/events?kind=metrics").await;
    let mut stream = response.bytes_stream();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Without reading, many events: the socket buffers fill, then the event buffer.
    let big_id = "m".repeat(400);
    for batch in 0..40 {
        let metrics: Vec<Value> = (0..200)
            .map(|i| json!({"id": format!("{big_id}{batch}-{i}"), "name": "n", "values": [{"timestamp": time(at(i)), "value": 1.0}]}))
            .collect();
        body(
            server
                .post("/api/v1/metrics", json!({"metrics": metrics}))
                .await,
            200,
        )
        .await;
    }
    let mut seen = String::new();
    while let Ok(Some(Ok(chunk))) =
        tokio::time::timeout(Duration::from_secs(5), stream.next()).await
    {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        seen.contains("event: dropped"),
        "no dropped event in {} bytes",
        seen.len()
    );
    let text = server.get("/metrics").await.text().await.unwrap();
    assert!(counter(&text, "aimon_events_slow_consumers_dropped_total") >= 1.0);
    server.stop().await;
}

/// Shutting down answers every request in flight and stores everything it acknowledged.
async fn shutdown_stores_what_it_acknowledged(fixture: &Fixture) {
    let mut server = Running::start(fixture, ServerConfig::default()).await;
    let url = server.url("/api/v1/metrics");
    let http = server.http.clone();
    let mut stop = server.stop.take();
    let mut tasks = Vec::new();
    for c in 0..50 {
        let (url, http) = (url.clone(), http.clone());
        tasks.push(tokio::spawn(async move {
            let values: Vec<Value> = (0..100).map(|i| json!({"timestamp": time(at(i)), "value": 1.0})).collect();
            let sent = http
                .post(&url)
                .json(&json!({"metrics": [{"id": format!("s{c}"), "name": "shutdown", "values": values}]}))
                .send()
                .await;
            matches!(sent, Ok(r) if r.status() == 200)
        }));
        if c == 25 {
            // Stop half-way through the requests: those in flight are answered, later ones
            // refused.
            tokio::time::sleep(Duration::from_millis(5)).await;
            if let Some(stop) = stop.take() {
                let _ = stop.send(());
            }
        }
    }
    let Running {
        manager,
        task,
        config,
        ..
    } = server;
    let mut acknowledged = 0;
    for t in tasks {
        if t.await.unwrap() {
            acknowledged += 1;
        }
    }
    task.unwrap().await.unwrap().unwrap();
    manager.close(None).await.unwrap();
    // Read back through a fresh connection: every acknowledged series is there, whole.
    let reopened = aimon_registry::open(&config).await.unwrap();
    let stored = reopened
        .query_metrics(
            &MetricQuery::new()
                .name("shutdown")
                .options(aimon_core::QueryOptions::default().limit(1000)),
        )
        .await
        .unwrap();
    assert!(
        stored.len() >= acknowledged,
        "{} stored, {acknowledged} acknowledged",
        stored.len()
    );
    assert!(stored.iter().all(|m| m.values.len() == 100));
    reopened.close().await.unwrap();
}

/// The OpenAPI document lists every route the server answers.
async fn openapi_lists_every_route(fixture: &Fixture) {
    let server = Running::start(fixture, ServerConfig::default()).await;
    let doc = body(server.get("/api/v1/openapi.json").await, 200).await;
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in [
        ("post", "/api/v1/metrics"),
        ("get", "/api/v1/metrics"),
        ("get", "/api/v1/metrics/{id}"),
        ("get", "/api/v1/history"),
        ("get", "/api/v1/series"),
        ("get", "/api/v1/fleet"),
        ("post", "/api/v1/alerts"),
        ("get", "/api/v1/alerts"),
        ("get", "/api/v1/alerts/{id}"),
        ("post", "/api/v1/alerts/{id}/acknowledge"),
        ("post", "/api/v1/alerts/{id}/resolve"),
        ("post", "/api/v1/alerts/similar"),
        ("post", "/api/v1/agents"),
        ("get", "/api/v1/agents"),
        ("get", "/api/v1/agents/{agent_id}"),
        ("post", "/api/v1/agents/similar"),
        ("get", "/api/v1/stats"),
        ("get", "/api/v1/backends"),
        ("post", "/api/v1/retention"),
        ("get", "/api/v1/events"),
        ("get", "/metrics"),
        ("post", "/api/v1/write"),
        ("post", "/v1/metrics"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
        // And the server answers it (not the fallback's "no such route").
        let url = server.url(&path.replace("{id}", "x").replace("{agent_id}", "x"));
        let r = if method == "get" && path != "/api/v1/events" {
            server.http.get(&url).send().await.unwrap()
        } else if method == "post" {
            server.http.post(&url).send().await.unwrap()
        } else {
            continue;
        };
        let text = r.text().await.unwrap();
        assert!(!text.contains("no such route"), "{method} {path}: {text}");
    }
    let backends = body(server.get("/api/v1/backends").await, 200).await;
    assert_eq!(
        backends[0]["routes"],
        json!([DataKind::Metrics, DataKind::Alerts, DataKind::AgentStates])
    );
    server.stop().await;
}

/// Without tokens the server listens only on loopback.
async fn refuses_an_open_non_loopback_address(fixture: &Fixture) {
    let manager = Arc::new(StorageManager::new());
    manager
        .initialize_backend(fixture.config(&[]))
        .await
        .unwrap();
    let config = ServerConfig {
        listen: "0.0.0.0:0".parse().unwrap(),
        ..ServerConfig::default()
    };
    let e = Server::bind(Arc::clone(&manager), config)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("without tokens"), "{e}");
    manager.close(None).await.unwrap();
}

/// A real Prometheus (Debian's `prometheus`, a child process on free loopback ports) scrapes
/// the server's `/metrics` and remote-writes what it scraped to `/api/v1/write`; the samples
/// read back through aimon equal Prometheus's own, and the metadata Prometheus sends apart
/// gives the series their types.
async fn prometheus_scrapes_and_remote_writes(fixture: &Fixture) {
    let Some(binary) = fixtures::find_binary("prometheus") else {
        fixtures::skip(
            "prometheus",
            "no `prometheus` binary on PATH (Debian: apt-get install prometheus)",
        );
        return;
    };
    let server = Running::start(fixture, ServerConfig::default()).await;
    let target = server.base.trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: aimon\n    static_configs:\n      - targets: ['{target}']\n\
         remote_write:\n  - url: {}/api/v1/write\n    queue_config:\n      batch_send_deadline: 500ms\n      min_backoff: 100ms\n      max_backoff: 1s\n    metadata_config:\n      send_interval: 1s\n",
        server.base
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = fixtures::free_port().unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let mut child = std::process::Command::new(binary)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("prometheus starts");
    let outcome = async {
        // `scrape_samples_scraped{job="aimon"}` arrives through remote write, typed once the
        // metadata has come too.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let (series, typed) = loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no remote-written samples within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            let found = server
                .manager
                .get_metric("aimon/scrape_samples_scraped", None)
                .await
                .unwrap();
            let typed = server
                .manager
                .get_metric("aimon/aimon_http_requests_total", None)
                .await
                .unwrap();
            match (found, typed) {
                (Some(f), Some(t))
                    if f.values.len() >= 3 && t.metric_type == aimon_core::MetricType::Counter =>
                {
                    break (f, t);
                }
                _ => {}
            }
        };
        assert_eq!(
            series.values[0].tags.get("job").map(String::as_str),
            Some("aimon")
        );
        assert_eq!(series.values[0].tags.get("instance"), Some(&target));
        assert!(typed.description.is_some(), "{typed:?}");
        // Each sample equals what Prometheus itself holds at that instant.
        for sample in series.values.iter().take(3) {
            let at = sample.timestamp.timestamp_millis() as f64 / 1e3;
            let url = format!(
                "http://127.0.0.1:{port}/api/v1/query?query=scrape_samples_scraped&time={at}"
            );
            let answer: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
            let value: f64 = answer["data"]["result"][0]["value"][1]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(value, sample.value, "{answer}");
        }
        // `up` is 1, as Prometheus scraped the server.
        let up = server
            .manager
            .get_metric("aimon/up", None)
            .await
            .unwrap()
            .expect("up");
        assert!(up.values.iter().all(|v| v.value == 1.0));
    };
    let result = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(outcome)).await;
    let _ = child.kill();
    let _ = child.wait();
    if let Err(panic) = result {
        let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
        eprintln!("prometheus log:\n{log}");
        std::panic::resume_unwind(panic);
    }
    let text = server.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains("route=\"/api/v1/write\",status=\"204\""),
        "{text}"
    );
    server.stop().await;
}

/// Reads back, through aimon, what [`record_genai`] and `otel/send_metrics.py` record, and
/// compares every value exactly: GenAI histograms as `_sum`, `_count` and `_bucket` series
/// tagged by their attributes, a counter as a counter, all under the agent's id.
async fn assert_genai_metrics(server: &Running, agent: &str) {
    let get = |suffix: &str| {
        let id = format!("{agent}/{suffix}");
        let manager = Arc::clone(&server.manager);
        async move {
            manager
                .get_metric(&id, None)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("no series {id}"))
        }
    };
    let value = |m: &Metric, key: &str, tag: &str| -> f64 {
        let matching: Vec<f64> = m
            .values
            .iter()
            .filter(|v| v.tags.get(key).map(String::as_str) == Some(tag))
            .map(|v| v.value)
            .collect();
        // Cumulative: each export (the flush, then the shutdown) repeats the same totals.
        assert!(!matching.is_empty(), "{key}={tag} in {m:?}");
        assert!(
            matching.iter().all(|v| *v == matching[0]),
            "{key}={tag} in {m:?}"
        );
        matching[0]
    };
    let sum = get("gen_ai.client.token.usage_sum").await;
    assert_eq!(value(&sum, "gen_ai.token.type", "input"), 200.0);
    assert_eq!(value(&sum, "gen_ai.token.type", "output"), 30.0);
    assert_eq!(sum.metric_type, aimon_core::MetricType::Histogram);
    assert!(
        sum.values
            .iter()
            .all(|v| v.tags["agent"] == agent && v.tags["gen_ai.request.model"] == "m1")
    );
    let count = get("gen_ai.client.token.usage_count").await;
    assert_eq!(value(&count, "gen_ai.token.type", "input"), 2.0);
    // Cumulative buckets: 80 and 120 are both at most 250, only 80 at most 100.
    let buckets = get("gen_ai.client.token.usage_bucket").await;
    let bucket = |le: &str| {
        buckets
            .values
            .iter()
            .find(|v| {
                v.tags.get("le").map(String::as_str) == Some(le)
                    && v.tags["gen_ai.token.type"] == "input"
            })
            .map(|v| v.value)
            .unwrap_or_else(|| panic!("no le={le} in {buckets:?}"))
    };
    assert_eq!(
        (bucket("100"), bucket("250"), bucket("+Inf")),
        (1.0, 2.0, 2.0)
    );
    let duration = get("gen_ai.client.operation.duration_sum").await;
    assert_eq!(value(&duration, "gen_ai.operation.name", "chat"), 0.25);
    let calls = get("agent.tool_calls").await;
    assert_eq!(calls.metric_type, aimon_core::MetricType::Counter);
    assert!(!calls.values.is_empty() && calls.values.iter().all(|v| v.value == 3.0));
    // And history answers over them by name, grouped by token type. The values are cumulative
    // totals: the last one is the total (a sum would add up the exports).
    let path = "/api/v1/history?name=gen_ai.client.token.usage_sum&step=1h&aggregation=last&start=1h&group_by=gen_ai.token.type";
    let history = body(
        server.get(&format!("{path}&tag=agent%3D{agent}")).await,
        200,
    )
    .await;
    let total = |group: &str| {
        history
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["group"] == group)
            .map(|s| {
                // The newest bucket: both exports may straddle a bucket boundary.
                s["buckets"].as_array().unwrap().last().unwrap()["value"]
                    .as_f64()
                    .unwrap()
            })
            .unwrap()
    };
    assert_eq!((total("input"), total("output")), (200.0, 30.0));
}

/// The values both OTLP senders record.
fn record_genai(provider: &opentelemetry_sdk::metrics::SdkMeterProvider) {
    use opentelemetry::KeyValue;
    use opentelemetry::metrics::MeterProvider as _;
    let meter = provider.meter("aimon-test-agent");
    let tokens = meter
        .u64_histogram("gen_ai.client.token.usage")
        .with_unit("{token}")
        .build();
    let input = [
        KeyValue::new("gen_ai.token.type", "input"),
        KeyValue::new("gen_ai.request.model", "m1"),
    ];
    let output = [
        KeyValue::new("gen_ai.token.type", "output"),
        KeyValue::new("gen_ai.request.model", "m1"),
    ];
    tokens.record(120, &input);
    tokens.record(80, &input);
    tokens.record(30, &output);
    let duration = meter
        .f64_histogram("gen_ai.client.operation.duration")
        .with_unit("s")
        .build();
    duration.record(0.25, &[KeyValue::new("gen_ai.operation.name", "chat")]);
    meter.u64_counter("agent.tool_calls").build().add(3, &[]);
}

/// OpenTelemetry's Rust SDK and its OTLP/HTTP exporter, in protobuf and in JSON.
async fn otlp_from_the_rust_exporter(fixture: &Fixture) {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let server = Running::start(fixture, ServerConfig::default()).await;
    for (protocol, agent) in [
        (Protocol::HttpBinary, "rust-proto"),
        (Protocol::HttpJson, "rust-json"),
    ] {
        let endpoint = server.url("/v1/metrics");
        let agent_name = agent.to_owned();
        // The exporter's HTTP client blocks: off the runtime's threads.
        tokio::task::spawn_blocking(move || {
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_protocol(protocol)
                .with_endpoint(endpoint)
                .build()
                .expect("an OTLP exporter");
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name("fleet")
                .with_attribute(opentelemetry::KeyValue::new(
                    "gen_ai.agent.name",
                    agent_name,
                ))
                .build();
            let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
                .with_periodic_exporter(exporter)
                .with_resource(resource)
                .build();
            record_genai(&provider);
            provider.force_flush().expect("the exporter delivers");
            provider.shutdown().expect("a clean shutdown");
        })
        .await
        .unwrap();
        assert_genai_metrics(&server, agent).await;
    }
    server.stop().await;
}

/// OpenTelemetry's Python SDK (`pip install opentelemetry-sdk
/// opentelemetry-exporter-otlp-proto-http`): its OTLP/HTTP exporter (protobuf, gzip), and the
/// same request as OTLP/JSON (integration-tests/otel/send_metrics.py says why).
async fn otlp_from_the_python_sdk(fixture: &Fixture) {
    let probe = std::process::Command::new("python3")
        .args([
            "-c",
            "import opentelemetry.sdk.metrics, opentelemetry.exporter.otlp.proto.http",
        ])
        .output();
    if !matches!(&probe, Ok(out) if out.status.success()) {
        fixtures::skip(
            "python-otel",
            "python3 with opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http is not installed",
        );
        return;
    }
    let server = Running::start(fixture, ServerConfig::default()).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/otel/send_metrics.py");
    for (mode, agent) in [("protobuf", "py-proto"), ("json", "py-json")] {
        let endpoint = server.url("/v1/metrics");
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("python3")
                .args([script, &endpoint, mode, agent])
                .output()
                .expect("python3 runs")
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{mode}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_genai_metrics(&server, agent).await;
    }
    server.stop().await;
}

/// OTLP that is not OTLP, or not all valid: clear errors, and a partial success that counts
/// what was refused while the rest is stored.
async fn otlp_hostile_and_partial(fixture: &Fixture) {
    let server = Running::start(fixture, ServerConfig::default()).await;
    let url = server.url("/v1/metrics");
    let send = |content_type: &'static str, body: Vec<u8>| {
        server
            .http
            .post(&url)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    body(
        send("application/x-protobuf", vec![0xff, 0xff, 0xff, 0x01])
            .await
            .unwrap(),
        400,
    )
    .await;
    body(
        send("application/json", b"{\"resourceMetrics\": 7}".to_vec())
            .await
            .unwrap(),
        400,
    )
    .await;
    body(send("text/plain", b"{}".to_vec()).await.unwrap(), 415).await;
    // One good point, one NaN, one at time 0: two rejected, one stored.
    let t = (aimon_core::time::to_micros(at(0)) * 1000).to_string();
    let point = |value: &str, time: &str| {
        format!(
            r#"{{"timeUnixNano": "{time}", "asDouble": {value}, "attributes": [{{"key": "k", "value": {{"stringValue": "v"}}}}]}}"#
        )
    };
    let request = format!(
        r#"{{"resourceMetrics": [{{"resource": {{"attributes": [{{"key": "service.name", "value": {{"stringValue": "svc"}}}}]}},
            "scopeMetrics": [{{"metrics": [{{"name": "partial.gauge", "gauge": {{"dataPoints": [{}, {}, {}]}}}}]}}]}}]}}"#,
        point("1.5", &t),
        point("\"NaN\"", &t),
        point("2.5", "0")
    );
    let answer = body(
        send("application/json", request.into_bytes())
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(
        answer["partialSuccess"]["rejectedDataPoints"], "2",
        "{answer}"
    );
    assert!(
        answer["partialSuccess"]["errorMessage"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    // 10,000 attributes on one point: stored with the first 64, the rest dropped and counted
    // in a partial success that rejects nothing.
    let attributes: Vec<String> = (0..10_000)
        .map(|i| format!(r#"{{"key": "k{i:05}", "value": {{"stringValue": "v"}}}}"#))
        .collect();
    let crowded = format!(
        r#"{{"resourceMetrics": [{{"resource": {{"attributes": [{{"key": "service.name", "value": {{"stringValue": "svc"}}}}]}},
            "scopeMetrics": [{{"metrics": [{{"name": "crowded", "gauge": {{"dataPoints": [{{"timeUnixNano": "{t}", "asDouble": 1, "attributes": [{}]}}]}}}}]}}]}}]}}"#,
        attributes.join(",")
    );
    let answer = body(
        send("application/json", crowded.into_bytes())
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(
        answer["partialSuccess"]["rejectedDataPoints"], "0",
        "{answer}"
    );
    assert!(
        answer["partialSuccess"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("attributes dropped"),
        "{answer}"
    );
    let crowded = server
        .manager
        .get_metric("svc/crowded", None)
        .await
        .unwrap()
        .expect("stored");
    // The limit's 64 attributes, and the `agent` tag the mapping adds.
    assert_eq!(crowded.values[0].tags.len(), 65);
    assert_eq!(crowded.values[0].tags["agent"], "svc");
    let stored = server
        .manager
        .get_metric("svc/partial.gauge", None)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(stored.values.len(), 1);
    assert_eq!(stored.values[0].value, 1.5);
    server.stop().await;
}

/// With a certificate and key, the server speaks HTTPS only (rustls): a client that trusts the
/// certificate writes and reads; plain HTTP to the same port gets no answer.
async fn tls_serves_https(fixture: &Fixture) {
    let dir = tempfile::tempdir().unwrap();
    // A test CA and a server certificate it signs (webpki refuses a self-signed end entity).
    std::fs::write(
        dir.path().join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let steps: [Vec<&str>; 3] = [
        [
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "1",
                "-subj",
                "/CN=aimon-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat(),
        [
            &["req", "-new"][..],
            &ec,
            &[
                "-subj",
                "/CN=localhost",
                "-keyout",
                "key.pem",
                "-out",
                "leaf.csr",
            ],
        ]
        .concat(),
        vec![
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
            "-out",
            "cert.pem",
        ],
    ];
    for step in steps {
        let made = std::process::Command::new("openssl")
            .args(&step)
            .current_dir(dir.path())
            .output();
        if !matches!(&made, Ok(out) if out.status.success()) {
            fixtures::skip("openssl", &format!("openssl {step:?} failed: {made:?}"));
            return;
        }
    }
    let config = ServerConfig {
        tls: Some(aimon_server::TlsConfig {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
        }),
        ..ServerConfig::default()
    };
    let mut server = Running::start(fixture, config).await;
    let pem = std::fs::read(dir.path().join("ca.pem")).unwrap();
    server.http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let plain = server.base.clone();
    server.base = server.base.replace("http://", "https://");
    let answer = server
        .post(
            "/api/v1/alerts",
            json!({"alerts": [{"id": "tls", "name": "n", "severity": "low", "source": "s"}]}),
        )
        .await;
    body(answer, 200).await;
    let got = body(server.get("/api/v1/alerts/tls").await, 200).await;
    assert_eq!(got["id"], "tls");
    let refused = reqwest::Client::new()
        .get(format!("{plain}/api/v1/alerts"))
        .send()
        .await;
    assert!(
        !matches!(&refused, Ok(r) if r.status().is_success()),
        "{refused:?}"
    );
    server.stop().await;
}

/// Remote-write bodies that are not remote write 1.0: each a clear error, nothing stored.
async fn remote_write_hostile(fixture: &Fixture) {
    let server = Running::start(fixture, ServerConfig::default()).await;
    let url = server.url("/api/v1/write");
    let send = |content_type: &'static str, body: Vec<u8>| {
        server
            .http
            .post(&url)
            .header("content-type", content_type)
            .header("content-encoding", "snappy")
            .body(body)
            .send()
    };
    // Not snappy; snappy of garbage; a snappy header claiming 1 GiB; remote write 2.0.
    body(
        send("application/x-protobuf", b"definitely not snappy".to_vec())
            .await
            .unwrap(),
        400,
    )
    .await;
    let garbage = snap::raw::Encoder::new().compress_vec(&[0xff; 64]).unwrap();
    body(send("application/x-protobuf", garbage).await.unwrap(), 400).await;
    let mut claims_a_gib = Vec::new();
    let mut n: u64 = 1 << 30;
    while n >= 0x80 {
        claims_a_gib.push((n as u8) | 0x80);
        n >>= 7;
    }
    claims_a_gib.push(n as u8);
    claims_a_gib.extend_from_slice(&[0; 16]);
    let e = body(
        send("application/x-protobuf", claims_a_gib).await.unwrap(),
        413,
    )
    .await;
    assert_eq!(e["error"]["kind"], "too_large");
    let empty = snap::raw::Encoder::new().compress_vec(&[]).unwrap();
    body(
        send(
            "application/x-protobuf;proto=io.prometheus.write.v2.Request",
            empty,
        )
        .await
        .unwrap(),
        415,
    )
    .await;
    let r = server
        .http
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(vec![1])
        .send()
        .await
        .unwrap();
    body(r, 415).await;
    let stored = server
        .manager
        .query_metrics(&MetricQuery::new(), None)
        .await
        .unwrap();
    assert!(stored.is_empty(), "{stored:?}");
    server.stop().await;
}

/// A full ingest queue answers 503 with Retry-After at once; what it answered 200 is stored.
async fn a_full_queue_answers_503_and_loses_nothing(fixture: &Fixture) {
    let limits = Limits {
        queue_samples: 100,
        batch_samples: 100,
        ..Limits::default()
    };
    let server = Arc::new(
        Running::start(
            fixture,
            ServerConfig {
                limits,
                ..ServerConfig::default()
            },
        )
        .await,
    );
    let mut tasks = Vec::new();
    for c in 0..100 {
        let server = Arc::clone(&server);
        tasks.push(tokio::spawn(async move {
            let values: Vec<Value> = (0..50).map(|i| json!({"timestamp": time(at(i)), "value": 1.0})).collect();
            let r = server.post("/api/v1/metrics", json!({"metrics": [{"id": format!("q{c}"), "name": "queue", "values": values}]})).await;
            let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            (c, r.status().as_u16(), retry)
        }));
    }
    let (mut ok, mut busy) = (Vec::new(), 0);
    for task in tasks {
        match task.await.unwrap() {
            (c, 200, _) => ok.push(format!("q{c}")),
            (_, 503, Some(retry)) => {
                assert_eq!(retry, "1");
                busy += 1;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(
        busy > 0,
        "100 concurrent requests of 50 samples never filled a queue of 100"
    );
    for id in &ok {
        let stored = server
            .manager
            .get_metric(id, None)
            .await
            .unwrap()
            .expect("acknowledged, so stored");
        assert_eq!(stored.values.len(), 50);
    }
    let text = server.get("/metrics").await.text().await.unwrap();
    assert_eq!(
        counter(&text, "aimon_ingest_rejected_busy_total"),
        busy as f64
    );
    Arc::into_inner(server).expect("one owner").stop().await;
}

/// A client that never finishes its headers is cut off after the header timeout; CORS answers
/// only configured origins.
async fn slow_headers_and_cors(fixture: &Fixture) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limits = Limits {
        header_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let config = ServerConfig {
        limits,
        cors_origins: vec!["http://dashboard.test".to_owned()],
        ..ServerConfig::default()
    };
    let server = Running::start(fixture, config).await;
    let mut slow = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .unwrap();
    slow.write_all(b"GET /api/v1/alerts HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection is still open after 5 s");
    let preflight = |origin: &'static str| {
        server
            .http
            .request(reqwest::Method::OPTIONS, server.url("/api/v1/alerts"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
    };
    let allowed = preflight("http://dashboard.test").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://dashboard.test"
    );
    let other = preflight("http://elsewhere.test").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    server.stop().await;
}

/// Stopping the server ends the event streams at once, with a last `shutdown` event, rather
/// than waiting out the grace period for them.
async fn event_streams_end_when_the_server_stops(fixture: &Fixture) {
    let server = Running::start(fixture, ServerConfig::default()).await;
    let response = server.get("/api/v1/events").await;
    let mut stream = response.bytes_stream();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = tokio::time::Instant::now();
    let stopping = tokio::spawn(server.stop());
    let mut seen = String::new();
    while let Ok(Some(Ok(chunk))) =
        tokio::time::timeout(Duration::from_secs(5), stream.next()).await
    {
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    stopping.await.unwrap();
    assert!(seen.contains("event: shutdown"), "{seen}");
    // The grace period is 10 s: the stream did not hold the stop.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// Injection attempts in every parameter of every read route: a JSON answer (200 with data
/// that matches nothing, 400 or 404), never a 500, and the stored data intact. Responses are
/// gzip-compressed for a client that asks.
async fn injection_in_every_parameter(fixture: &Fixture) {
    let server = Running::start(fixture, ServerConfig::default()).await;
    server
        .post("/api/v1/alerts", json!({"alerts": [{"id": "keep", "name": "n", "severity": "high", "source": "s", "labels": {"k": "v"}}]}))
        .await;
    let values: Vec<Value> = (0..5)
        .map(|i| json!({"timestamp": time(at(i)), "value": 1.0}))
        .collect();
    server
        .post(
            "/api/v1/metrics",
            json!({"metrics": [{"id": "keep", "name": "n", "values": values}]}),
        )
        .await;
    let hostile = [
        "' OR '1'='1",
        "'; DROP TABLE alerts; --",
        "../../../../etc/passwd",
        "%00",
        "\u{0}",
        "<script>alert(1)</script>",
        "${jndi:ldap://127.0.0.1/x}",
        "*",
        "{\"$ne\": null}",
        &"x".repeat(10_000),
    ];
    let routes: [(&str, &[&str]); 5] = [
        (
            "/api/v1/metrics",
            &[
                "name", "type", "start", "end", "tag", "limit", "offset", "sort", "filter",
            ],
        ),
        (
            "/api/v1/history",
            &[
                "name",
                "step",
                "aggregation",
                "start",
                "end",
                "tag",
                "group_by",
            ],
        ),
        (
            "/api/v1/alerts",
            &[
                "status",
                "severity",
                "min_severity",
                "source",
                "start",
                "end",
                "label",
                "limit",
                "sort",
                "filter",
            ],
        ),
        (
            "/api/v1/agents",
            &["status", "since", "limit", "offset", "sort", "filter"],
        ),
        ("/api/v1/events", &["kind"]),
    ];
    for (route, params) in routes {
        for param in params {
            for value in hostile {
                let mut url = reqwest::Url::parse(&server.url(route)).unwrap();
                url.query_pairs_mut().append_pair(param, value);
                if route == "/api/v1/history" && *param != "name" {
                    url.query_pairs_mut().append_pair("name", "n");
                }
                let r = server.http.get(url.clone()).send().await.unwrap();
                let status = r.status().as_u16();
                assert!(
                    matches!(status, 200 | 400 | 404 | 414 | 431),
                    "{route}?{param}: {status}"
                );
                if status == 200 && route == "/api/v1/events" {
                    continue;
                }
                if status != 200 || route != "/api/v1/events" {
                    let text = r.text().await.unwrap();
                    if status != 414 && status != 431 {
                        assert!(
                            serde_json::from_str::<Value>(&text).is_ok(),
                            "{route}?{param}: {text}"
                        );
                    }
                }
            }
        }
        for value in hostile {
            let id = reqwest::Url::parse(&server.url(route)).unwrap();
            let mut id = id;
            id.path_segments_mut().unwrap().push(value);
            let r = server.http.get(id).send().await.unwrap();
            assert!(
                matches!(r.status().as_u16(), 200 | 400 | 404 | 405 | 414 | 431),
                "{route}/…: {}",
                r.status()
            );
        }
    }
    let kept = body(server.get("/api/v1/alerts/keep").await, 200).await;
    assert_eq!(kept["severity"], "high");
    let kept: Metric =
        serde_json::from_value(body(server.get("/api/v1/metrics/keep").await, 200).await).unwrap();
    assert_eq!(kept.values.len(), 5);
    // A client that accepts gzip gets it (this client does not inflate it, whatever features
    // another crate of the workspace turns on in reqwest).
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let r = raw
        .get(server.url("/api/v1/openapi.json"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap()),
        Some("gzip")
    );
    server.stop().await;
}

/// `GET /api/v1/fleet` over a fleet whose every figure is known: two agents with samples, a
/// third with only a stale state, alerts open and closed; and its tag filter.
async fn fleet_overview(fixture: &Fixture) {
    let server = Running::start(fixture, ServerConfig::default()).await;
    // a1: 20 samples of each metric, latency 1..=20 ms; a2: 10 samples, latency 100 ms.
    let series = |agent: &str, model: &str, name: &str, n: i64, value: &dyn Fn(i64) -> f64| {
        json!({"id": format!("{agent}/{name}"), "name": name, "values": (0..n).map(|i| json!({
            "timestamp": time(at(i * 10)), "value": value(i), "tags": {"agent": agent, "model": model}
        })).collect::<Vec<_>>()})
    };
    let mut metrics = Vec::new();
    for (agent, model, n) in [("a1", "large", 20), ("a2", "small", 10)] {
        let big = agent == "a1";
        metrics.push(series(agent, model, "llm.prompt_tokens", n, &|_| 100.0));
        metrics.push(series(agent, model, "llm.completion_tokens", n, &|_| 10.0));
        metrics.push(series(agent, model, "llm.cost_usd", n, &|_| 0.25));
        metrics.push(series(agent, model, "llm.latency_ms", n, &move |i| {
            if big { (i + 1) as f64 } else { 100.0 }
        }));
        metrics.push(series(agent, model, "llm.error_rate", n, &move |i| {
            if big && i < 5 { 0.2 } else { 0.0 }
        }));
    }
    body(
        server
            .post("/api/v1/metrics", json!({"metrics": metrics}))
            .await,
        200,
    )
    .await;
    body(
        server
            .post(
                "/api/v1/agents",
                json!({"states": [
                    {"agent_id": "a1", "status": "running", "last_heartbeat": time(aimon_core::time::now()),
                     "metadata": {"model": "large", "replicas": 3}},
                    {"agent_id": "a3", "status": "idle", "last_heartbeat": time(at(0)),
                     "metadata": {"model": "large"}},
                ]}),
            )
            .await,
        200,
    )
    .await;
    body(
        server
            .post(
                "/api/v1/alerts",
                json!({"alerts": [
                    {"id": "x1", "name": "latency", "severity": "high", "source": "a1", "start_time": time(at(30))},
                    {"id": "x2", "name": "latency", "severity": "low", "source": "a1", "start_time": time(at(40)), "status": "acknowledged"},
                    {"id": "x3", "name": "errors", "severity": "low", "source": "a2", "start_time": time(at(50)), "status": "resolved"},
                    {"id": "x4", "name": "down", "severity": "critical", "source": "gateway", "start_time": time(at(-7200))},
                ]}),
            )
            .await,
        200,
    )
    .await;
    let range = format!(
        "start={}&end={}",
        urlencode(&time(at(-60))),
        urlencode(&time(at(600)))
    );
    let fleet = body(server.get(&format!("/api/v1/fleet?{range}")).await, 200).await;
    let agents = fleet["agents"].as_array().unwrap();
    let ids: Vec<&str> = agents
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a1", "a2", "a3"], "{fleet}");
    let (a1, a2, a3) = (&agents[0], &agents[1], &agents[2]);
    assert_eq!(a1["status"], "running");
    assert_eq!(a1["stale"], false);
    assert_eq!(a1["tags"], json!({"model": "large"}));
    assert_eq!(a1["prompt_tokens"], 2000.0);
    assert_eq!(a1["completion_tokens"], 200.0);
    assert_eq!(a1["tokens"], 2200.0);
    assert_eq!(a1["cost_usd"], 5.0);
    assert_eq!(a1["latency_avg_ms"], 10.5);
    assert_eq!(a1["latency_p95_ms"], 19.0);
    assert_eq!(a1["error_rate"], 0.05);
    assert_eq!(a1["samples"], 20);
    assert_eq!(a1["open_alerts"], 2);
    assert_eq!(a1["alerts_in_range"], 2);
    assert_eq!(a2["status"], Value::Null, "a2 has samples but no state");
    assert_eq!(
        a2["stale"],
        Value::Null,
        "no state, so no heartbeat to be late"
    );
    assert_eq!(a2["latency_p95_ms"], 100.0);
    assert_eq!(a2["open_alerts"], 0);
    assert_eq!(a2["alerts_in_range"], 1);
    assert_eq!(a3["stale"], true, "its heartbeat is two hours old");
    assert_eq!(a3["tokens"], Value::Null);
    assert_eq!(a3["samples"], 0);
    let totals = &fleet["totals"];
    assert_eq!(totals["agents"], 3);
    assert_eq!(totals["stale"], 1);
    assert_eq!(totals["tokens"], 3300.0);
    assert_eq!(totals["cost_usd"], 7.5);
    assert_eq!(totals["latency_avg_ms"], (210.0 + 1000.0) / 30.0);
    assert_eq!(totals["latency_p95_ms"], 100.0);
    // The gateway's alert counts in the totals, though the gateway is no agent.
    assert_eq!(totals["open_alerts"], 3);
    assert_eq!(totals["alerts_in_range"], 3);
    assert_eq!(fleet["truncated"], false);

    // The tag filter keeps the samples with the tag and the agents whose state has it.
    let large = body(
        server
            .get(&format!("/api/v1/fleet?{range}&tag=model%3Dlarge"))
            .await,
        200,
    )
    .await;
    let ids: Vec<&str> = large["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agent_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a1", "a3"]);
    assert_eq!(large["totals"]["tokens"], 2200.0);
    assert_eq!(
        large["totals"]["open_alerts"], 2,
        "under a filter, the listed agents' alerts"
    );

    // A range holding only a2's last sample, and hostile parameters.
    let late = format!(
        "start={}&end={}",
        urlencode(&time(at(95))),
        urlencode(&time(at(100)))
    );
    let fleet = body(server.get(&format!("/api/v1/fleet?{late}")).await, 200).await;
    assert_eq!(fleet["totals"]["samples"], 1, "{fleet}");
    for bad in [
        format!("{range}&stale_after=0s"),
        format!(
            "start={}&end={}",
            urlencode(&time(at(10))),
            urlencode(&time(at(0)))
        ),
        "tag=model".to_owned(),
        "tag=model%3Dlarge&tag=model%3Dsmall".to_owned(),
        "nonsense=1".to_owned(),
    ] {
        let error = body(server.get(&format!("/api/v1/fleet?{bad}")).await, 400).await;
        assert_eq!(error["error"]["kind"], "invalid_input", "{bad}: {error}");
    }

    // The series catalog: what a query finds, without samples.
    let catalog = body(
        server
            .get(&format!(
                "/api/v1/series?name=llm.latency_ms&{range}&sort=id"
            ))
            .await,
        200,
    )
    .await;
    let catalog = catalog.as_array().unwrap();
    assert_eq!(catalog.len(), 2);
    assert_eq!(catalog[0]["id"], "a1/llm.latency_ms");
    assert!(catalog.iter().all(|s| s["values"] == json!([])));
    let none = body(
        server
            .get(&format!(
                "/api/v1/series?start={}&end={}",
                urlencode(&time(at(-3600))),
                urlencode(&time(at(-60)))
            ))
            .await,
        200,
    )
    .await;
    assert_eq!(none, json!([]));
    server.stop().await;
}

/// The dashboard's files: public even where the API needs a token, with a content security
/// policy, revalidated by ETag, and nothing outside their folder.
async fn dashboard_files(fixture: &Fixture) {
    let config = ServerConfig {
        tokens: TokenConfig::parse_list("reader:read:r-s3cret").unwrap(),
        ..ServerConfig::default()
    };
    let server = Running::start(fixture, config).await;
    let page = server.get("/").await;
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("/ui/"), "{html}");
    let etag = headers["etag"].clone();
    let again = server
        .http
        .get(server.url("/"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let script = server.get("/ui/app.js").await;
    assert_eq!(script.status(), 200);
    assert!(
        script.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    body(server.get("/api/v1/fleet").await, 401).await;
    for outside in [
        "/ui/../Cargo.toml",
        "/ui/%2e%2e/Cargo.toml",
        "/ui/..%2FCargo.toml",
        "/ui/%2Fetc%2Fpasswd",
        "/ui//etc/passwd",
        "/ui/nothing.js",
        "/index.html/x",
    ] {
        let error = body(server.get(outside).await, 404).await;
        assert_eq!(error["error"]["kind"], "not_found", "{outside}");
    }
    server.stop().await;
}

macro_rules! server_checks {
    ($($backend:ident => $fixture:expr),* $(,)?) => {
        $(
            mod $backend {
                use super::*;
                server_checks!(@checks $fixture;
                    metrics_round_trip, alert_lifecycle, agent_heartbeats,
                    hostile_requests_are_refused_and_store_nothing, tokens_and_scopes,
                    concurrent_small_writes_coalesce, live_events, a_slow_event_consumer_is_dropped,
                    shutdown_stores_what_it_acknowledged, openapi_lists_every_route,
                    refuses_an_open_non_loopback_address, prometheus_scrapes_and_remote_writes,
                    otlp_from_the_rust_exporter, otlp_from_the_python_sdk, otlp_hostile_and_partial,
                    tls_serves_https, remote_write_hostile, a_full_queue_answers_503_and_loses_nothing,
                    slow_headers_and_cors, event_streams_end_when_the_server_stops,
                    injection_in_every_parameter, fleet_overview, dashboard_files);
            }
        )*
    };
    (@checks $fixture:expr; $($check:ident),*) => {
        $(
            #[test]
            fn $check() {
                fixtures::run_check(stringify!($check), async {
                    let Some(fixture) = $fixture.await else { return };
                    super::$check(&fixture).await;
                });
            }
        )*
    };
}

server_checks! {
    sqlite => fixtures::sqlite(),
    redis => fixtures::redis(),
    postgres => fixtures::postgres(),
}
