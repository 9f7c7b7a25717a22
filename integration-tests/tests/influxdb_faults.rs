//! InfluxDB beyond the conformance suite: hostile names, InfluxQL injection attempts, answers
//! the server refuses (field type conflict, points beyond the retention policy), the retention
//! policy aimon manages, a server killed mid-batch, and secrets kept out of logs and errors.
#![cfg(feature = "influxdb")]

use aimon_core::Contract;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aimon_core::{
    AgentState, AgentStateQuery, Aggregation, Alert, AlertQuery, AlertSeverity, ErrorKind,
    HistoryQuery, Metric, MetricQuery, MetricType, MetricValue, StorageBackend, StorageConfig,
    time,
};
use aimon_influxdb::InfluxBackend;
use aimon_integration_tests::fixtures::{self, Fixture, INFLUXDB, LocalServer, find_binary};
use chrono::{TimeDelta, TimeZone, Utc};

async fn fixture() -> Option<Fixture> {
    fixtures::influxdb().await
}

async fn open(fixture: &Fixture, options: &[(&str, serde_json::Value)]) -> Contract<InfluxBackend> {
    Contract::new(
        InfluxBackend::connect(&fixture.config(options))
            .await
            .expect("opens"),
    )
}

fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
}

const HOSTILE_NAMES: &[&str] = &[
    "comma,name",
    "space name",
    "eq=name",
    "quote\"name",
    "single'quote",
    "back\\slash",
    "trailing\\",
    "\\",
    "emoji 🚀",
    "%5C literally",
    "100%",
    "%25",
    "a\\,b\\ c\\=d",
    "t.nested",
    "sid",
    "time",
    "v",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tag_keys_and_values_round_trip_and_filter() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let store = open(&fixture, &[]).await;
    let mut metric = Metric::new(
        "hostile/ids,= \"'\\🚀",
        "hostile, \"name\"",
        MetricType::Gauge,
    );
    for (i, name) in HOSTILE_NAMES.iter().enumerate() {
        metric.values.push(
            MetricValue::new(t0() + TimeDelta::seconds(i as i64), i as f64)
                .tag(*name, *name)
                .tag("k", *name),
        );
    }
    store.save_metric(&metric).await.unwrap();
    let back = store.get_metric(&metric.id).await.unwrap().unwrap();
    assert_eq!(back.values, metric.values);
    for (i, name) in HOSTILE_NAMES.iter().enumerate() {
        let found = store
            .query_metrics(&MetricQuery::new().name(&metric.name).tag(*name, *name))
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "{name:?}");
        assert_eq!(found[0].values.len(), 1, "{name:?}");
        assert_eq!(found[0].values[0].value, i as f64, "{name:?}");
        let history = store
            .metric_history(
                &HistoryQuery::new(&metric.name, TimeDelta::hours(1), Aggregation::Count)
                    .tag("k", *name)
                    .group_by(*name),
            )
            .await
            .unwrap();
        assert_eq!(history.len(), 1, "{name:?}: {history:?}");
        assert_eq!(history[0].group.as_deref(), Some(*name));
        assert_eq!(history[0].buckets[0].count, 1, "{name:?}");
    }
}

/// Every string the caller controls goes into InfluxQL quoted: injection attempts match
/// nothing (or exactly themselves) and never fail or leak other data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxql_injection_attempts_match_only_themselves() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let store = open(&fixture, &[]).await;
    let secret = Metric::new("secret", "secret.metric", MetricType::Gauge)
        .with_value(MetricValue::new(t0(), 42.0).tag("host", "a"));
    store.save_metric(&secret).await.unwrap();
    let mut alert = Alert::new("secret-alert", "a", AlertSeverity::High, "src");
    alert.labels.insert("team".into(), "ops".into());
    store.save_alert(&alert).await.unwrap();
    store
        .save_agent_state(&AgentState::new("s", "agent-1", "running"))
        .await
        .unwrap();
    let attacks = [
        "' OR '1'='1",
        "x' OR \"sid\" =~ /.*/ OR 'a'='a",
        "\\' OR 1=1 --",
        "'; DROP DATABASE \"x\"; SELECT '",
        "\"; DROP MEASUREMENT samples; \"",
        "a\\",
        "/.*/",
        "secret' OR 'x'='x",
    ];
    for attack in attacks {
        assert_eq!(store.get_metric(attack).await.unwrap(), None, "{attack}");
        assert!(
            store
                .query_metrics(&MetricQuery::new().name(attack))
                .await
                .unwrap()
                .is_empty(),
            "{attack}"
        );
        assert!(
            store
                .query_metrics(&MetricQuery::new().tag("host", attack))
                .await
                .unwrap()
                .is_empty(),
            "{attack}"
        );
        assert!(
            store
                .query_metrics(&MetricQuery::new().tag(attack, "a"))
                .await
                .unwrap()
                .is_empty(),
            "{attack}"
        );
        let history = store
            .metric_history(
                &HistoryQuery::new("secret.metric", TimeDelta::hours(1), Aggregation::Sum)
                    .tag("host", attack),
            )
            .await
            .unwrap();
        assert!(history.iter().all(|s| s.buckets.is_empty()), "{attack}");
        let grouped = store
            .metric_history(
                &HistoryQuery::new("secret.metric", TimeDelta::hours(1), Aggregation::Sum)
                    .group_by(attack),
            )
            .await
            .unwrap();
        assert_eq!(grouped.len(), 1, "{attack}");
        assert_eq!(grouped[0].group, None, "{attack}");
        assert_eq!(store.get_alert(attack).await.unwrap(), None, "{attack}");
        assert!(
            store
                .query_alerts(&AlertQuery::new().label("team", attack))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.get_agent_state(attack).await.unwrap(), None);
        assert!(
            store
                .get_agent_states(&AgentStateQuery::new().status(attack))
                .await
                .unwrap()
                .is_empty()
        );
    }
    // Everything is still there.
    assert_eq!(
        store.get_metric("secret").await.unwrap().unwrap().values,
        secret.values
    );
    assert_eq!(store.stats().await.unwrap().alerts, 1);
}

/// A field type conflict is a typed `Conflict`, not a panic or a silent drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_type_conflict_is_a_conflict_error() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let store = open(&fixture, &[]).await;
    // Someone else wrote `v` as a string into the samples measurement first.
    store
        .write_line_protocol("samples,sid=x v=\"text\" 1704067200000000", false)
        .await
        .unwrap();
    let err = store
        .save_metric(
            &Metric::new("m", "n", MetricType::Gauge).with_value(MetricValue::new(t0(), 1.0)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("field type conflict"), "{err}");
}

/// aimon never sends expired samples, but a retention policy shortened behind its back makes
/// the server drop points: that answer is a typed `Conflict`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_beyond_the_retention_policy_are_a_conflict_error() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let store = open(
        &fixture,
        &[("metric_ttl_seconds", serde_json::json!(2 * 86_400))],
    )
    .await;
    let db = store.config().api.database().to_owned();
    store
        .influxql(&format!(
            "ALTER RETENTION POLICY \"aimon\" ON {} DURATION 1h SHARD DURATION 1h DEFAULT",
            aimon_influxdb::line::ident(&db)
        ))
        .await
        .unwrap();
    let old = time::now() - TimeDelta::hours(5);
    let err = store
        .save_metric(
            &Metric::new("m", "n", MetricType::Gauge).with_value(MetricValue::new(old, 1.0)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(
        err.to_string().contains("points beyond retention policy"),
        "{err}"
    );
}

/// (name, duration, default) of every retention policy of the store's database.
async fn policies(store: &InfluxBackend, db: &str) -> Vec<(String, String, bool)> {
    let out = store
        .influxql(&format!("SHOW RETENTION POLICIES ON {db}"))
        .await
        .unwrap();
    let series = &out[0][0];
    let columns: Vec<&str> = series["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let col = |name| columns.iter().position(|c| *c == name).unwrap();
    series["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row[col("name")].as_str().unwrap().to_owned(),
                row[col("duration")].as_str().unwrap().to_owned(),
                row[col("default")].as_bool().unwrap(),
            )
        })
        .collect()
}

/// `metric_ttl` (at least InfluxDB's minimum of an hour) plus a shard duration of margin becomes
/// the duration of the samples' retention policy, the database's `DEFAULT`; reopening with another TTL alters it, and
/// without a TTL it is infinite. Metadata lives in an infinite policy of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_ttl_is_the_retention_policy_duration() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let config = fixture.config(&[("metric_ttl_seconds", serde_json::json!(2 * 86_400))]);
    let store = Contract::new(InfluxBackend::connect(&config).await.unwrap());
    let db = aimon_influxdb::line::ident(store.config().api.database());
    let got = policies(&store, &db).await;
    assert!(
        // Two days, plus one shard duration (a day) of margin for the server's clock.
        got.contains(&("aimon".into(), "72h0m0s".into(), true)),
        "{got:?}"
    );
    assert!(
        got.contains(&("aimon_meta".into(), "0s".into(), false)),
        "{got:?}"
    );

    let mut shorter = config.clone();
    shorter
        .options
        .insert("metric_ttl_seconds".into(), serde_json::json!(2));
    let store = Contract::new(InfluxBackend::connect(&shorter).await.unwrap());
    let got = policies(&store, &db).await;
    assert!(
        got.contains(&("aimon".into(), "2h0m0s".into(), true)),
        "{got:?}"
    );

    let mut forever = config.clone();
    forever.options.remove("metric_ttl_seconds");
    let store = Contract::new(InfluxBackend::connect(&forever).await.unwrap());
    let got = policies(&store, &db).await;
    assert!(
        got.contains(&("aimon".into(), "0s".into(), true)),
        "{got:?}"
    );
}

/// The server killed in the middle of a long batch: the write fails with a retryable
/// `Unavailable`; once the server is back, retrying the same batch stores every sample exactly
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_batch_is_unavailable_and_the_retry_does_not_duplicate() {
    let Some(binary) = find_binary("influxd") else {
        fixtures::skip("influxdb", "no `influxd` binary on PATH");
        return;
    };
    let server = tokio::task::spawn_blocking(move || LocalServer::start(&INFLUXDB, &binary))
        .await
        .unwrap()
        .expect("influxd starts");
    let pid = server.pid().expect("a pid");
    let config_path = server.env.dir.join("influxd.conf");
    let url = server.url.replace("/aimon?", "/faults?");
    let config = StorageConfig::from_url("faults", url.as_str())
        .unwrap()
        .option("batch_lines", 2_000);
    let store = Arc::new(Contract::new(
        InfluxBackend::connect(&config).await.unwrap(),
    ));
    let mut metrics = Vec::new();
    for s in 0..20 {
        let mut m = Metric::new(format!("series-{s}"), "faults", MetricType::Gauge);
        for i in 0..20_000i64 {
            m.values.push(
                MetricValue::new(t0() + TimeDelta::milliseconds(i * 10), i as f64)
                    .tag("host", format!("h{}", i % 4)),
            );
        }
        metrics.push(m);
    }
    let total: u64 = metrics.iter().map(|m| m.values.len() as u64).sum();
    let writer = {
        let store = store.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move { store.save_metrics(&metrics).await })
    };
    // Kill once part of the batch is stored, so it is mid-batch whatever the machine's speed.
    let mut stored = 0;
    for _ in 0..1_000 {
        stored = store.stats().await.map(|s| s.samples).unwrap_or(0);
        if stored > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        stored > 0 && stored < total && !writer.is_finished(),
        "mid-batch: {stored} of {total} stored"
    );
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let err = writer
        .await
        .unwrap()
        .expect_err("the write cannot finish once the server is gone");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());

    // The same server, same data and ports, back again.
    let mut restarted = Command::new("influxd")
        .args(["run", "-config"])
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let port = server.env.port;
    let mut ready = false;
    for _ in 0..300 {
        if fixtures::port_accepts(port) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "influxd restarted");
    let retry = {
        let mut last = None;
        for _ in 0..50 {
            match store.save_metrics(&metrics).await {
                Ok(report) => {
                    last = Some(Ok(report));
                    break;
                }
                Err(e) if e.is_retryable() => {
                    last = Some(Err(e));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("not retryable: {e}"),
            }
        }
        last.unwrap().unwrap()
    };
    assert_eq!(retry.written, total);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.series, stats.samples), (20, total), "no duplicates");
    let _ = restarted.kill();
    let _ = restarted.wait();
    drop(server);
}

/// A `tracing` writer that keeps everything written to it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The password and the token never reach logs (every level), errors or `Debug` output.
#[test]
fn secrets_stay_out_of_logs_errors_and_debug() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ran = tracing::subscriber::with_default(subscriber, || {
        capture_everything();
        runtime.block_on(async {
            let Some(fixture) = fixture().await else {
                return false;
            };
            let base = fixture.config(&[]);
            // influxd without auth accepts any credentials: the password travels, and must
            // show nowhere.
            let url =
                base.connection_string
                    .replacen("influxdb://", "influxdb://alice:pw-s3cr3t-1@", 1);
            let config = StorageConfig::from_url(base.name.clone(), url).unwrap();
            let store = Contract::new(InfluxBackend::connect(&config).await.unwrap());
            store
                .save_metric(
                    &Metric::new("m", "n", MetricType::Gauge)
                        .with_value(MetricValue::new(t0(), 1.0)),
                )
                .await
                .unwrap();
            store.stats().await.unwrap();
            let shown = format!("{store:?} {config:?}");
            assert!(!shown.contains("pw-s3cr3t-1"), "{shown}");
            // A v2 store on a closed port: the error names the URL, never the token.
            let closed = fixtures::free_port().unwrap();
            let v2 = StorageConfig::from_url(
                "v2",
                format!("influxdb2://127.0.0.1:{closed}?org=o&bucket=b"),
            )
            .unwrap()
            .option("token", "tok-s3cr3t-2");
            let err = InfluxBackend::connect(&v2).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
            let shown = format!("{err} {err:?} {v2:?}");
            assert!(!shown.contains("tok-s3cr3t-2"), "{shown}");
            // A bad password URL that does not parse as a store.
            let bad = StorageConfig::from_url("b", "influxdb://alice:pw-s3cr3t-3@h").unwrap();
            let err = InfluxBackend::connect(&bad).await.unwrap_err();
            assert!(!format!("{err} {err:?}").contains("pw-s3cr3t-3"), "{err:?}");
            true
        })
    });
    if !ran {
        return; // the fixture reported its skip
    }
    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(!logs.is_empty(), "trace logging captured something");
    for secret in ["pw-s3cr3t-1", "tok-s3cr3t-2", "pw-s3cr3t-3"] {
        assert!(!logs.contains(secret), "{secret} in logs");
    }
}

/// Recomputes every callsite's interest with this thread's subscriber installed. tracing caches
/// whether a callsite is enabled, computed from the subscribers that exist when the callsite is
/// first hit; a test thread that hits the driver's `influxql` trace while another test's
/// scoped subscriber is being set up can leave it cached as disabled, and the capture misses
/// statements (seen once in CI: no `CREATE RETENTION POLICY` captured).
fn capture_everything() {
    tracing::callsite::rebuild_interest_cache();
}

/// Reconnecting with the retention the policy already has sends no `ALTER` (which needs admin
/// rights and would rewrite the server's metadata on every connect); another TTL does.
#[test]
fn an_unchanged_retention_policy_is_not_altered_on_connect() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    tracing::subscriber::with_default(subscriber, || {
        capture_everything();
        runtime.block_on(async {
            let Some(fixture) = fixture().await else {
                return;
            };
            let config = fixture.config(&[("metric_ttl_seconds", serde_json::json!(3 * 3_600))]);
            Contract::new(InfluxBackend::connect(&config).await.unwrap());
            let statements =
                |c: &Captured| String::from_utf8_lossy(&c.0.lock().unwrap()).into_owned();
            assert!(statements(&captured).contains("CREATE RETENTION POLICY"));
            captured.0.lock().unwrap().clear();
            Contract::new(InfluxBackend::connect(&config).await.unwrap());
            let again = statements(&captured);
            assert!(again.contains("SHOW RETENTION POLICIES"), "{again}");
            assert!(!again.contains("ALTER RETENTION POLICY"), "{again}");
            captured.0.lock().unwrap().clear();
            let mut longer = config.clone();
            longer
                .options
                .insert("metric_ttl_seconds".into(), serde_json::json!(5 * 3_600));
            Contract::new(InfluxBackend::connect(&longer).await.unwrap());
            assert!(statements(&captured).contains("ALTER RETENTION POLICY"));
        })
    });
}

/// The longest valid description and annotation (1 MiB) round-trip: InfluxDB string fields are
/// not cut at 64 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megabyte_documents_round_trip() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let store = open(&fixture, &[]).await;
    let text: String = "\"quoted\" \\ 🚀 line\nbreak\t"
        .chars()
        .cycle()
        .take(200_000)
        .collect();
    let text = &text[..text
        .char_indices()
        .map(|(i, _)| i)
        .take_while(|i| *i <= aimon_core::validate::MAX_TEXT_BYTES)
        .last()
        .unwrap()];
    let mut metric = Metric::new("big", "big", MetricType::Gauge);
    metric.description = Some(text.to_owned());
    store.save_metric(&metric).await.unwrap();
    let back = store.get_metric("big").await.unwrap().unwrap();
    assert_eq!(back.description.as_deref(), Some(text));
    let mut alert = Alert::new("big", "a", AlertSeverity::Low, "src");
    alert.annotations.insert("k".into(), text.to_owned());
    store.save_alert(&alert).await.unwrap();
    assert_eq!(
        store.get_alert("big").await.unwrap().unwrap().annotations["k"],
        text
    );
}

/// Tags each within the per-tag limits whose series key (escaped, `%` and `\` grown to three
/// bytes) would pass InfluxDB's 65,535-byte limit: core's limit on a sample's tags in all
/// refuses them as `InvalidInput` before anything is written (every backend alike), never the
/// server's "max key length exceeded" after the batch's other points were stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_key_over_influxdbs_limit_is_invalid_input_and_nothing_is_written() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let store = open(&fixture, &[]).await;
    let fine = Metric::new("ok", "n", MetricType::Gauge)
        .with_value(MetricValue::new(time::now(), 1.0).tag("k", "v"));
    let huge = "\\%".repeat(6_000);
    let over = Metric::new("over", "n", MetricType::Gauge).with_value(
        MetricValue::new(time::now(), 2.0)
            .tag("a", huge.as_str())
            .tag("b", huge.as_str()),
    );
    let err = store.save_metrics(&[fine, over]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(
        err.to_string()
            .contains("values[0].tags: hold 24002 bytes of keys and values; the limit is 20480"),
        "{err}"
    );
    assert!(store.get_metric("ok").await.unwrap().is_none());
    assert!(store.get_metric("over").await.unwrap().is_none());
}

/// Points of `measurement` in the metadata retention policy.
async fn meta_points(store: &InfluxBackend, measurement: &str) -> i64 {
    let out = store
        .influxql(&format!(
            "SELECT count(\"doc\") FROM \"aimon_meta\".{}",
            aimon_influxdb::line::ident(measurement)
        ))
        .await
        .unwrap();
    out[0]
        .as_array()
        .and_then(|series| series.first())
        .map_or(0, |s| s["values"][0][1].as_i64().unwrap())
}

/// Every heartbeat is a point (the latest per agent wins on read), so `apply_retention` deletes
/// the superseded ones even without an `agent_state_ttl`: the measurement stays one point per
/// agent however often agents report. Hostile agent ids are pruned exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_retention_prunes_superseded_agent_states() {
    let Some(fixture) = fixture().await else {
        return;
    };
    let store = open(&fixture, &[]).await;
    let agents = [
        "plain",
        "quote'd \"agent\"",
        "back\\slash, comma",
        "semi;colon %25 100%",
        "émoji 🚀",
    ];
    for (i, agent) in agents.iter().enumerate() {
        for beat in 0..5 {
            let mut state = AgentState::new(format!("{agent}-{beat}"), *agent, "running");
            state.last_heartbeat = t0() + TimeDelta::seconds(10 * beat + i as i64);
            store.save_agent_states(&[state]).await.unwrap();
        }
    }
    assert_eq!(meta_points(&store, "agent_states").await, 25);

    let report = store.apply_retention().await.unwrap();
    assert_eq!(report.agent_states_removed, 0, "nothing expired");
    assert_eq!(meta_points(&store, "agent_states").await, 5);
    for (i, agent) in agents.iter().enumerate() {
        let latest = store.get_agent_state(agent).await.unwrap().expect(agent);
        assert_eq!(
            latest.last_heartbeat,
            t0() + TimeDelta::seconds(40 + i as i64),
            "{agent}"
        );
    }
    // A stale write is not stored (rule 5), and a second sweep finds nothing to prune.
    let mut stale = AgentState::new("stale", "plain", "stale");
    stale.last_heartbeat = t0();
    store.save_agent_states(&[stale]).await.unwrap();
    store.apply_retention().await.unwrap();
    assert_eq!(meta_points(&store, "agent_states").await, 5);
    assert_eq!(
        store
            .get_agent_state("plain")
            .await
            .unwrap()
            .unwrap()
            .status,
        "running"
    );
}
