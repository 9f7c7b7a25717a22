//! A namespace written by the release before chunks (main at 4f3d01b: one sorted set of
//! members and one hash of values per series) migrates in place when the new driver connects,
//! with nothing lost or changed. The fixture is that release's own native backup of a demo
//! fleet, restored key by key as it was, and its portable backup as the expected answer; see
//! `fixtures/redis-v4/README.md` for how both were made.
#![cfg(feature = "redis")]

use std::path::PathBuf;

use aimon_core::query::{Aggregation, HistoryQuery};
use aimon_core::{MemoryBackend, StorageBackend};
use aimon_integration_tests::conformance::support::dump;
use aimon_integration_tests::fixtures::{self, run_check};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/redis-v4")
}

/// The entries of a native backup's `namespace.dump`: (key relative to the namespace, `DUMP`
/// payload, TTL in ms or -1). The format is aimon-redis's (`backup.rs`): a magic line, then
/// per key its length-prefixed name and payload and the TTL.
fn dump_entries(data: &[u8]) -> Vec<(String, Vec<u8>, i64)> {
    let magic = b"aimon-redis-dump 1\n";
    assert!(data.starts_with(magic), "not a native Redis backup");
    let magic_end = magic.len();
    let mut rest = &data[magic_end..];
    fn take(rest: &mut &[u8], n: usize) -> Vec<u8> {
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        head.to_vec()
    }
    let word = |b: Vec<u8>| u64::from_le_bytes(b.try_into().unwrap());
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let n = word(take(&mut rest, 8)) as usize;
        let key = String::from_utf8(take(&mut rest, n)).unwrap();
        let n = word(take(&mut rest, 8)) as usize;
        let payload = take(&mut rest, n);
        let ttl = word(take(&mut rest, 8)) as i64;
        entries.push((key, payload, ttl));
    }
    entries
}

#[test]
fn a_namespace_of_the_release_before_chunks_migrates_in_place() {
    run_check("redis migration", async {
        let Some(fixture) = fixtures::redis().await else {
            return;
        };
        let config = fixture.config(&[]);
        let namespace = config.options["namespace"].as_str().unwrap().to_owned();
        let data = std::fs::read(fixture_dir().join("namespace.dump")).unwrap();
        let entries = dump_entries(&data);
        let client = redis::Client::open(config.connection_string.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let mut old_sample_keys = Vec::new();
        for (rel, payload, ttl) in &entries {
            let key = format!("{{{namespace}{rel}");
            if key.ends_with(":z") {
                old_sample_keys.push(key.clone());
            }
            let _: () = redis::cmd("RESTORE")
                .arg(&key)
                .arg(ttl.max(&0))
                .arg(payload.as_slice())
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        assert!(
            old_sample_keys.len() >= 10,
            "the fixture holds the old layout"
        );

        // What the old release itself exported, read back through the reference backend.
        let expected = aimon_core::Contract::new(MemoryBackend::new(
            "expected",
            aimon_core::RetentionPolicy::default(),
        ));
        aimon_core::archive::restore(&expected, &fixture_dir().join("portable"))
            .await
            .unwrap();
        let expected: std::sync::Arc<dyn StorageBackend> = std::sync::Arc::new(expected);
        let want = dump(&expected).await;
        let samples: usize = want.metrics.iter().map(|m| m.values.len()).sum();
        assert!(samples > 500, "{samples} samples in the fixture");

        // Connecting migrates.
        let store = fixture.open_config(config.clone()).await.unwrap();
        let got = dump(&store).await;
        assert_eq!(got.metrics, want.metrics);
        assert_eq!(got.alerts, want.alerts);
        assert_eq!(got.agent_states, want.agent_states);
        for key in &old_sample_keys {
            let exists: i64 = redis::cmd("EXISTS")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap();
            assert_eq!(exists, 0, "{key} is left after the migration");
        }
        let stats = store.stats().await.unwrap();
        assert_eq!(stats.samples, samples as u64);

        // History over the migrated chunks equals the reference's, bucket for bucket.
        let first = want
            .metrics
            .iter()
            .flat_map(|m| &m.values)
            .map(|v| v.timestamp)
            .min()
            .unwrap();
        for aggregation in [Aggregation::Avg, Aggregation::Sum, Aggregation::Last] {
            let query = HistoryQuery::new(
                &want.metrics[0].name,
                chrono::TimeDelta::minutes(7),
                aggregation,
            )
            .range(first, first + chrono::TimeDelta::hours(3));
            assert_eq!(
                store.metric_history(&query).await.unwrap(),
                expected.metric_history(&query).await.unwrap(),
                "{aggregation:?}"
            );
        }

        // A second connect finds nothing to do and changes nothing.
        let again = fixture.open_config(config).await.unwrap();
        assert_eq!(dump(&again).await.metrics, want.metrics);
    });
}
