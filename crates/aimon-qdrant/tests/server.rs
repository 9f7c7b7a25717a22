//! The server mode's cluster options and `stats`, against the Qdrant server (or cluster)
//! `AIMON_TEST_QDRANT_URL` names (`qdrant://host:6334[?api_key=…&rest_port=…]`). Skipped when
//! it is not set (fails instead under `AIMON_REQUIRE=qdrant`); every test works under its own
//! `collection_prefix` and drops its collections.
#![cfg(feature = "qdrant")]

use aimon_core::Contract;
use aimon_core::{Alert, AlertSeverity, StorageBackend, StorageConfig};
use aimon_qdrant::{QdrantBackend, QdrantConfig};

const KINDS: [&str; 4] = ["series", "samples", "alerts", "agent_states"];

/// The server's URL, or `None` after printing why the test does not run.
fn server_url() -> Option<String> {
    match std::env::var("AIMON_TEST_QDRANT_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let required = std::env::var("AIMON_REQUIRE").unwrap_or_default();
            let required = required
                .split(',')
                .map(str::trim)
                .any(|n| n.eq_ignore_ascii_case("qdrant") || n.eq_ignore_ascii_case("all"));
            assert!(
                !required,
                "qdrant is required (AIMON_REQUIRE) but AIMON_TEST_QDRANT_URL is not set"
            );
            eprintln!("SKIPPED qdrant server: AIMON_TEST_QDRANT_URL is not set");
            None
        }
    }
}

/// A prefix no other run uses, under the test namespaces' `t_qdrant_` (which
/// `drop_leftover_test_collections` in the integration tests cleans).
fn prefix(test: &str) -> String {
    format!(
        "t_qdrant_{test}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Drops the prefix's collections when the test ends, passed or not.
struct DropCollections(StorageConfig, String);

impl Drop for DropCollections {
    fn drop(&mut self) {
        let (config, prefix) = (self.0.clone(), format!("{}_", self.1));
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let mode = QdrantConfig::from_storage_config(&config).unwrap().mode;
                let _ = aimon_qdrant::server::drop_collections_with_prefix(&mode, &prefix).await;
            });
        })
        .join()
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn collections_are_created_with_the_options_and_stats_report_them() {
    let Some(url) = server_url() else { return };
    let prefix = prefix("layout");
    let config = StorageConfig::from_url("layout", url.as_str())
        .unwrap()
        .option("collection_prefix", prefix.as_str())
        // Both possible on a single node too: two shards on one peer, one replica each.
        .option("shard_number", 2)
        .option("replication_factor", 1)
        .option("write_consistency_factor", 1)
        .option("on_disk_payload", false);
    let _drop = DropCollections(config.clone(), prefix.clone());
    let store = Contract::new(QdrantBackend::connect(&config).await.unwrap());
    store
        .save_alert(&Alert::new(
            "a1",
            "disk full",
            AlertSeverity::High,
            "node-1",
        ))
        .await
        .unwrap();
    let stats = store.stats().await.unwrap();
    for kind in KINDS {
        let collection = &stats.extra[&format!("{kind}_collection")];
        assert_eq!(
            collection["name"],
            format!("{prefix}_{kind}"),
            "{collection}"
        );
        assert_eq!(collection["shard_number"], 2, "{collection}");
        assert_eq!(collection["replication_factor"], 1, "{collection}");
        assert_eq!(collection["write_consistency_factor"], 1, "{collection}");
        assert_eq!(collection["on_disk_payload"], false, "{collection}");
    }
    assert_eq!(stats.alerts, 1);

    // Reopened with other options, the collections keep the layout they were made with.
    let other = config.clone().option("shard_number", 3);
    let reopened = Contract::new(QdrantBackend::connect(&other).await.unwrap());
    let stats = reopened.stats().await.unwrap();
    assert_eq!(stats.extra["alerts_collection"]["shard_number"], 2);
    assert_eq!(stats.alerts, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_report_the_servers_version_and_uptime() {
    let Some(url) = server_url() else { return };
    let prefix = prefix("stats");
    let config = StorageConfig::from_url("stats", url.as_str())
        .unwrap()
        .option("collection_prefix", prefix.as_str());
    let _drop = DropCollections(config.clone(), prefix.clone());
    let store = Contract::new(QdrantBackend::connect(&config).await.unwrap());
    let stats = store.stats().await.unwrap();
    // The health check answers whenever the store works at all.
    assert_ne!(stats.version, "unknown", "{:?}", stats.extra);
    assert_ne!(
        stats.version,
        env!("CARGO_PKG_VERSION"),
        "aimon's own version"
    );
    assert!(
        stats.version.split('.').count() >= 2,
        "a version: {}",
        stats.version
    );
    // The uptime comes from the REST port's telemetry; where that cannot answer (another
    // rest_port, a read-only key), `stats` still answers and says why.
    match stats.extra.get("server_started") {
        Some(started) => {
            let started = chrono::DateTime::parse_from_rfc3339(started.as_str().unwrap()).unwrap();
            let expected = (chrono::Utc::now() - started.with_timezone(&chrono::Utc))
                .num_seconds()
                .max(0) as u64;
            assert!(stats.uptime_seconds.abs_diff(expected) <= 5, "{stats:?}");
        }
        None => {
            assert_eq!(stats.uptime_seconds, 0);
            assert!(
                stats.extra.contains_key("server_uptime_unknown"),
                "{:?}",
                stats.extra
            );
        }
    }
}
