//! Redis-specific checks beyond the conformance suite: hostile key text, the namespace's memory
//! in stats, orphan index members after retention, a connection killed mid-batch, events
//! across two separate clients, damaged chunks, summaries and head elements.
#![cfg(feature = "redis")]

use aimon_core::Contract;
use std::time::Duration;

use aimon_core::{
    AlertStatus, ErrorKind, Metric, MetricType, MetricValue, StorageBackend, StorageConfig, time,
};
use aimon_integration_tests::conformance::support::*;
use aimon_integration_tests::fixtures::{self, Fixture, redis_cli, run_check};
use aimon_redis::RedisBackend;
use chrono::TimeDelta;
use futures::StreamExt;

async fn fixture() -> Option<Fixture> {
    fixtures::redis().await
}

async fn open(
    fixture: &Fixture,
    options: &[(&str, serde_json::Value)],
) -> (Contract<RedisBackend>, StorageConfig) {
    let config = fixture.config(options);
    let backend = Contract::new(RedisBackend::connect(&config).await.expect("connects"));
    (backend, config)
}

/// Every key of a namespace, by SCAN (allowed in a test, never in the driver).
fn scan_keys(config: &StorageConfig, namespace: &str) -> Vec<String> {
    let out = redis_cli(&[
        "-u",
        &config.connection_string,
        "--scan",
        "--pattern",
        &format!("{{{namespace}*"),
    ])
    .expect("redis-cli --scan");
    out.lines().map(str::to_owned).collect()
}

#[test]
fn hostile_text_never_changes_which_keys_are_touched() {
    run_check("hostile", async {
        let Some(fixture) = fixture().await else {
            return;
        };
        let (store, config) = open(&fixture, &[]).await;
        let ns = store.namespace().to_owned();
        let hostile = [
            "*", "a?b", "[x]", "{tag}", "}{", "a b", "x:y", "%2A", "\\", "ü🦀",
        ];
        let mut metrics = Vec::new();
        for (i, id) in hostile.iter().enumerate() {
            metrics.push(series(id, id).with_value(sample(i as i64, i as f64).tag(*id, *id)));
        }
        store.save_metrics(&metrics).await.unwrap();
        for id in hostile {
            let mut a = alert(id, aimon_core::AlertSeverity::High, 0);
            a.source = id.to_owned();
            a.labels.insert(id.to_owned(), id.to_owned());
            store.save_alert(&a).await.unwrap();
            store.save_agent_state(&state(id, id, id, 0)).await.unwrap();
        }
        for (i, id) in hostile.iter().enumerate() {
            let back = store.get_metric(id).await.unwrap().expect(id);
            assert_eq!(back.values, metrics[i].values, "{id:?}");
            assert_eq!(store.get_alert(id).await.unwrap().unwrap().source, *id);
            assert_eq!(
                store.get_agent_state(id).await.unwrap().unwrap().status,
                *id
            );
        }
        let keys = scan_keys(&config, &ns);
        assert!(!keys.is_empty());
        for key in &keys {
            // `{ns}:…` or `{ns|escaped-id}:…`, with no other brace, glob character or space.
            let tagged =
                key.starts_with(&format!("{{{ns}}}:")) || key.starts_with(&format!("{{{ns}|"));
            assert!(tagged, "{key:?}");
            let inner = &key[1..];
            assert_eq!(inner.matches(['{', '}']).count(), 1, "{key:?}");
            assert!(!inner.contains(['*', '?', '[', ']', ' ', '\\']), "{key:?}");
        }
        // One series of one sample: its state, head and head windows (chunks and summaries
        // come with the first seal); plus metadata; never more per id.
        let sample_keys = keys
            .iter()
            .filter(|k| k.starts_with(&format!("{{{ns}|")))
            .count();
        assert_eq!(sample_keys, 3 * hostile.len());
    });
}

/// `size_bytes` is the memory of exactly the namespace's keys: the sum of `MEMORY USAGE …
/// SAMPLES 0` over the keys a SCAN of the server finds for the namespace (the driver lists
/// them through its indexes instead), not the server's `used_memory`.
#[test]
fn the_size_is_the_memory_of_every_key_of_the_namespace() {
    run_check("namespace memory", async {
        let Some(fixture) = fixture().await else {
            return;
        };
        let (store, config) = open(&fixture, &[]).await;
        // Another namespace on the same server, which must not count.
        let (other, _) = open(&fixture, &[]).await;
        for backend in [&other, &store] {
            let metrics: Vec<Metric> = (0..3)
                .map(|s| {
                    let mut m = series(&format!("agent-{s}/cpu"), "cpu");
                    for i in 0..50 {
                        m = m.with_value(sample(i, i as f64).tag("host", format!("h{}", i % 4)));
                    }
                    m
                })
                .collect();
            backend.save_metrics(&metrics).await.unwrap();
            let mut a = alert("a-1", aimon_core::AlertSeverity::High, 0);
            a.labels.insert("team".into(), "infra".into());
            backend.save_alert(&a).await.unwrap();
            backend
                .save_agent_state(&state("s-1", "agent-0", "busy", 0))
                .await
                .unwrap();
        }
        let stats = store.stats().await.unwrap();
        let keys = scan_keys(&config, store.namespace());
        assert!(keys.len() > 10, "{keys:?}");
        let mut scanned = 0u64;
        for key in &keys {
            let out = redis_cli(&[
                "-u",
                &config.connection_string,
                "MEMORY",
                "USAGE",
                key,
                "SAMPLES",
                "0",
            ])
            .expect("MEMORY USAGE");
            scanned += out.trim().parse::<u64>().expect(&out);
        }
        assert_eq!(stats.size_bytes, Some(scanned), "{keys:?}");
        let used_memory = stats.extra["used_memory"].as_u64().unwrap();
        assert!(scanned < used_memory, "{scanned} of {used_memory}");
        assert_eq!(
            stats.bytes_per_sample(),
            Some(scanned as f64 / stats.samples as f64)
        );
    });
}

#[test]
fn a_10_kib_tag_value_round_trips() {
    run_check("10kib", async {
        let Some(fixture) = fixture().await else {
            return;
        };
        let (store, _) = open(&fixture, &[]).await;
        let limit = aimon_core::validate::MAX_TAG_VALUE_BYTES;
        let m = series("big", "n").with_value(sample(0, 1.0).tag("k", "x".repeat(limit + 1)));
        let err = store.save_metric(&m).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        let m = series("big", "n").with_value(sample(0, 1.0).tag("k", "x".repeat(10 * 1024)));
        store.save_metric(&m).await.unwrap();
        assert_eq!(
            store.get_metric("big").await.unwrap().unwrap().values,
            m.values
        );
    });
}

#[test]
fn no_orphan_index_members_after_retention() {
    run_check("orphans", async {
        let Some(fixture) = fixture().await else {
            return;
        };
        let (store, _) = open(
            &fixture,
            &[
                ttl("metric_ttl_seconds", 1),
                ttl("alert_ttl_seconds", 1),
                ttl("agent_state_ttl_seconds", 1),
            ],
        )
        .await;
        let now = time::now();
        for i in 0..20 {
            let mut m = series(&format!("s{i}"), &format!("name{}", i % 3));
            m.updated_at = now;
            m.values = vec![MetricValue::new(now, 1.0).tag("k", format!("v{i}"))];
            store.save_metric(&m).await.unwrap();
            let mut a = alert(&format!("a{i}"), aimon_core::AlertSeverity::Low, 0);
            a.updated_at = now;
            a.labels.insert("team".into(), format!("t{}", i % 4));
            store.save_alert(&a).await.unwrap();
            // A status change leaves nothing behind in the old status index.
            a.status = AlertStatus::Resolved;
            store.save_alert(&a).await.unwrap();
            let mut s = state(&format!("st{i}"), &format!("agent{i}"), "busy", 0);
            s.last_heartbeat = now;
            store.save_agent_state(&s).await.unwrap();
            s.status = "idle".into();
            store.save_agent_state(&s).await.unwrap();
        }
        assert_eq!(
            store.orphan_index_members().await.unwrap(),
            0,
            "live data has no orphans"
        );
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        store.apply_retention().await.unwrap();
        assert_eq!(store.orphan_index_members().await.unwrap(), 0);
        let stats = store.stats().await.unwrap();
        assert_eq!((stats.series, stats.alerts, stats.agent_states), (0, 0, 0));
        assert_eq!(stats.extra["namespace_index_keys"], 3, "{:?}", stats.extra);
    });
}

/// RedisTimeSeries is detected, not required: the answer matches what the server itself says
/// of `TS.INFO`, and stats report it.
#[test]
fn the_timeseries_module_is_detected_not_required() {
    run_check("TS.INFO detection", async {
        let Some(fixture) = fixture().await else {
            return;
        };
        let (store, config) = open(&fixture, &[]).await;
        // redis-cli prints the server's error reply (and may exit non-zero on it).
        let answer = match redis_cli(&["-u", &config.connection_string, "TS.INFO", "no-such-key"]) {
            Ok(out) | Err(out) => out,
        };
        let server_has_it = !answer.to_ascii_lowercase().contains("unknown command");
        assert_eq!(
            store.timeseries_module_loaded().await.unwrap(),
            server_has_it
        );
        let stats = store.stats().await.unwrap();
        assert_eq!(
            stats.extra["redistimeseries"], server_has_it,
            "{:?}",
            stats.extra
        );
    });
}

#[test]
fn a_connection_killed_mid_batch_is_retryable_and_the_retry_does_not_duplicate() {
    run_check("client kill", async {
        // A server of its own: CLIENT KILL TYPE normal would cut the other tests' clients.
        let Some(binary) = fixtures::find_binary("redis-server") else {
            fixtures::skip("redis", "no redis-server binary for the CLIENT KILL check");
            return;
        };
        let server = tokio::task::spawn_blocking(move || {
            fixtures::LocalServer::start(&fixtures::REDIS, &binary)
        })
        .await
        .unwrap()
        .expect("a private redis-server");
        let config = StorageConfig::from_url("kill", server.url.clone())
            .unwrap()
            .option("max_connections", 1);
        let store = Contract::new(RedisBackend::connect(&config).await.unwrap());
        let batch: Vec<Metric> = (0..20)
            .map(|s| {
                let mut m = Metric::new(format!("kill-{s}"), "kill", MetricType::Gauge);
                m.values = (0..10_000)
                    .map(|i| MetricValue::new(t0() + TimeDelta::milliseconds(i), i as f64))
                    .collect();
                m
            })
            .collect();
        let mut saw_failure = None;
        for attempt in 0..20 {
            let url = config.connection_string.clone();
            let killer = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(5 + attempt * 3)).await;
                let _ = tokio::task::spawn_blocking(move || {
                    redis_cli(&["-u", &url, "client", "kill", "type", "normal"])
                })
                .await;
            });
            let result = store.save_metrics(&batch).await;
            killer.await.unwrap();
            if let Err(e) = result {
                saw_failure = Some(e);
                break;
            }
        }
        let err = saw_failure.expect("one of the batches was cut by CLIENT KILL");
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(err.is_retryable());
        // The connection manager reconnects; the retry goes through and duplicates nothing.
        let mut retried = None;
        for _ in 0..50 {
            match store.save_metrics(&batch).await {
                Ok(report) => {
                    retried = Some(report);
                    break;
                }
                Err(e) if e.is_retryable() => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(retried.expect("the retry succeeds").written, 200_000);
        for m in &batch {
            assert_eq!(
                store.get_metric(&m.id).await.unwrap().unwrap().values.len(),
                10_000
            );
        }
        assert_eq!(store.stats().await.unwrap().samples, 200_000);
    });
}

#[test]
fn events_reach_a_separate_client() {
    run_check("cross-client events", async {
        let Some(fixture) = fixture().await else {
            return;
        };
        let (reader, config) = open(&fixture, &[]).await;
        assert!(reader.capabilities().cross_process_events);
        // A second, separate client on the same namespace writes.
        let writer = Contract::new(RedisBackend::connect(&config).await.unwrap());
        let mut events = reader.subscribe().await.unwrap();
        writer
            .save_metric(&series("m", "n").with_value(sample(0, 1.0)))
            .await
            .unwrap();
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an event")
            .expect("a live stream");
        assert!(
            matches!(event, aimon_core::StorageEvent::MetricWritten { ref metric_id, samples: 1, .. } if metric_id == "m"),
            "{event:?}"
        );
        // Published by a client that is not aimon at all (another process: redis-cli).
        let payload = serde_json::json!({"event": "alert_written", "backend": "cli", "alert_id": "x", "status": "active"}).to_string();
        let channel = format!("{{{}}}:events", reader.namespace());
        tokio::task::spawn_blocking(move || {
            redis_cli(&[
                "-u",
                &config.connection_string,
                "publish",
                &channel,
                &payload,
            ])
        })
        .await
        .unwrap()
        .unwrap();
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(event, aimon_core::StorageEvent::AlertWritten { ref alert_id, .. } if alert_id == "x")
        );
    });
}

/// Damaged chunk bytes, a damaged summary and a damaged head element are each `Corrupted`,
/// naming the series (and the window for a chunk), never a panic or a wrong answer; the other
/// series read as before.
#[test]
fn damaged_chunks_summaries_and_heads_are_corrupted_errors() {
    run_check("damaged chunks", async {
        let Some(fixture) = fixture().await else {
            return;
        };
        let (store, config) = open(&fixture, &[]).await;
        let ns = store.namespace().to_owned();
        // Two hours of samples, long past: both hours seal into chunks.
        let start = t0();
        let mut metrics = Vec::new();
        for id in ["victim", "bystander"] {
            let mut m = series(id, "damaged");
            m.values = (0..240)
                .map(|i| MetricValue::new(start + TimeDelta::seconds(30 * i), i as f64))
                .collect();
            metrics.push(m);
        }
        store.save_metrics(&metrics).await.unwrap();
        let history = aimon_core::HistoryQuery::new(
            "damaged",
            TimeDelta::hours(2),
            aimon_core::Aggregation::Sum,
        )
        .range(start - TimeDelta::hours(2), start + TimeDelta::hours(4));
        let healthy = store.metric_history(&history).await.unwrap();

        let client = redis::Client::open(config.connection_string.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let key = |suffix: &str| format!("{{{ns}|victim}}:{suffix}");
        let chunks: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(key("c"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(!chunks.is_empty(), "the first hour was sealed into a chunk");
        let expect_corrupted = |err: &aimon_core::Error, what: &str| {
            assert_eq!(err.kind(), ErrorKind::Corrupted, "{what}: {err}");
            assert!(err.to_string().contains("victim"), "{what}: {err}");
        };

        // 1. A flipped byte in the chunk's data.
        let (field, data) = &chunks[0];
        let mut bad = data.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        let _: () = redis::cmd("HSET")
            .arg(key("c"))
            .arg(field)
            .arg(bad)
            .query_async(&mut conn)
            .await
            .unwrap();
        let err = store.get_metric("victim").await.unwrap_err();
        expect_corrupted(&err, "chunk data");
        assert!(err.to_string().contains("window"), "{err}");
        let ok = store.get_metric("bystander").await.unwrap().unwrap();
        assert_eq!(ok.values, metrics[1].values);
        // History over a bucket that splits the window needs the data too.
        let split = aimon_core::HistoryQuery::new(
            "damaged",
            TimeDelta::minutes(7),
            aimon_core::Aggregation::Sum,
        )
        .range(start - TimeDelta::hours(2), start + TimeDelta::hours(4));
        expect_corrupted(
            &store.metric_history(&split).await.unwrap_err(),
            "history data",
        );
        let _: () = redis::cmd("HSET")
            .arg(key("c"))
            .arg(field)
            .arg(data.as_slice())
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(store.metric_history(&history).await.unwrap(), healthy);

        // 2. A flipped byte in its summary: history that would trust it fails instead.
        let summary: Vec<u8> = redis::cmd("HGET")
            .arg(key("s"))
            .arg(field)
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut bad = summary.clone();
        bad[3] ^= 0x01;
        let _: () = redis::cmd("HSET")
            .arg(key("s"))
            .arg(field)
            .arg(bad)
            .query_async(&mut conn)
            .await
            .unwrap();
        expect_corrupted(
            &store.metric_history(&history).await.unwrap_err(),
            "summary",
        );
        let _: () = redis::cmd("HSET")
            .arg(key("s"))
            .arg(field)
            .arg(summary)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(store.metric_history(&history).await.unwrap(), healthy);

        // 3. A head element cut short (a sample of the current hour stays in the head).
        store
            .save_metrics(&[
                series("victim", "damaged").with_value(MetricValue::new(time::now(), 1.0))
            ])
            .await
            .unwrap();
        let head: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(key("h"))
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(!head.is_empty(), "the current hour is in the head");
        let cut = &head[0][..head[0].len() - 5];
        let _: () = redis::cmd("LSET")
            .arg(key("h"))
            .arg(0)
            .arg(cut)
            .query_async(&mut conn)
            .await
            .unwrap();
        expect_corrupted(&store.get_metric("victim").await.unwrap_err(), "head");
        expect_corrupted(
            &store.metric_history(&history).await.unwrap_err(),
            "head history",
        );
        assert_eq!(
            store.get_metric("bystander").await.unwrap().unwrap().values,
            metrics[1].values
        );
    });
}

/// A series this process has written (so its next batches skip the series script) that
/// another process's retention removes meanwhile comes back whole with the next write: the
/// plain metadata write notices the hash was gone and runs the script that restores the
/// indexes.
#[test]
fn a_series_removed_by_another_process_is_restored_whole_by_the_next_write() {
    run_check("removed meanwhile", async {
        let Some(fixture) = fixture().await else {
            return;
        };
        let (store, config) = open(&fixture, &[]).await;
        let ns = store.namespace().to_owned();
        for i in 0..2 {
            store
                .save_metrics(
                    &[series("gone", "comeback").with_value(sample(i, 1.0).tag("k", "v"))],
                )
                .await
                .unwrap();
        }
        // What retention in another process does to an expired series: its keys and index
        // entries go.
        let client = redis::Client::open(config.connection_string.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        for (index, member) in [
            format!("{{{ns}}}:m:idx"),
            format!("{{{ns}}}:m:name:comeback"),
            format!("{{{ns}}}:m:type:gauge"),
            format!("{{{ns}}}:m:tag:k:v"),
        ]
        .into_iter()
        .map(|k| (k, "gone"))
        {
            let _: i64 = redis::cmd("ZREM")
                .arg(index)
                .arg(member)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        let _: i64 = redis::cmd("DEL")
            .arg(format!("{{{ns}}}:m:meta:gone"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(store.get_metric("gone").await.unwrap().is_none());

        store
            .save_metrics(&[series("gone", "comeback").with_value(sample(5, 2.0).tag("k", "v"))])
            .await
            .unwrap();
        let by_name = store
            .query_metrics(&aimon_core::MetricQuery::new().name("comeback"))
            .await
            .unwrap();
        assert_eq!(metric_ids(&by_name), ["gone"]);
        let by_tag = store
            .query_metrics(&aimon_core::MetricQuery::new().tag("k", "v"))
            .await
            .unwrap();
        assert_eq!(metric_ids(&by_tag), ["gone"]);
        assert_eq!(store.stats().await.unwrap().series, 1);
    });
}
