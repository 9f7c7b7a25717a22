//! The fault suite on Redis: the client killed mid-batch on every topology (the shared
//! fixture servers); a private durable server (`appendonly yes`, `appendfsync always`) killed
//! with `SIGKILL` mid-batch and restarted, and stopped by `SHUTDOWN NOSAVE` while every batch
//! seals a chunk window; connections cut by `CLIENT KILL` mid-batch on a
//! private standalone server, Cluster and Sentinel set.
#![cfg(feature = "redis")]
use aimon_integration_tests::{faults, fixtures};

aimon_integration_tests::fault_suite!(
    redis,
    fixtures::redis(),
    server_killed_mid_batch_and_restarted = (faults::redis_server_killed(), 3),
    server_shut_down_while_windows_seal = (faults::redis_shut_down_while_sealing(), 6),
    connection_cut_mid_batch = (faults::redis_connection_cut(), 3),
);
aimon_integration_tests::fault_suite!(
    redis_cluster,
    fixtures::redis_cluster(),
    connection_cut_mid_batch = (faults::redis_cluster_connection_cut(), 1),
);
aimon_integration_tests::fault_suite!(
    redis_sentinel,
    fixtures::redis_sentinel(),
    connection_cut_mid_batch = (faults::redis_sentinel_connection_cut(), 3),
);

/// `min_durability` refuses a server whose persistence is weaker than asked, from what the
/// server itself reports, and accepts one that is strong enough.
#[test]
fn min_durability_follows_the_servers_settings() {
    use aimon_core::{ErrorKind, StorageConfig};
    use faults::{PrivateServer, durable_redis_args};
    fixtures::run_check("min_durability", async {
        let Some(binary) = fixtures::find_binary("redis-server") else {
            fixtures::skip(
                "redis",
                "no redis-server binary for the min_durability check",
            );
            return;
        };
        let server = tokio::task::spawn_blocking(move || {
            PrivateServer::start(
                &fixtures::ServerSpec {
                    args: durable_redis_args,
                    ..fixtures::REDIS
                },
                &binary,
            )
        })
        .await
        .unwrap()
        .expect("a private redis-server");
        let port = server.env.port.to_string();
        let connect = |level: &str| {
            let config = StorageConfig::from_url("durable", format!("redis://127.0.0.1:{port}/0"))
                .unwrap()
                .option("namespace", "durable")
                .option("min_durability", level);
            async move {
                aimon_redis::RedisBackend::connect(&config)
                    .await
                    .map(|_| ())
            }
        };
        let set = |key: &str, value: &str| {
            fixtures::redis_cli(&["-p", &port, "config", "set", key, value]).unwrap();
        };
        // appendonly yes, appendfsync always.
        for level in ["none", "aof", "fsync"] {
            connect(level)
                .await
                .unwrap_or_else(|e| panic!("{level}: {e}"));
        }
        set("appendfsync", "everysec");
        connect("aof").await.unwrap();
        let err = connect("fsync").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{err}");
        assert!(err.to_string().contains("appendfsync everysec"), "{err}");
        set("appendonly", "no");
        let err = connect("aof").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{err}");
        assert!(err.to_string().contains("appendonly no"), "{err}");
        connect("none").await.unwrap();
        let err = connect("always").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{err}");
        drop(server);

        // A Cluster: every node is asked; the answer matches what the nodes say themselves.
        let Some(cluster) = fixtures::redis_cluster().await else {
            return;
        };
        let config = cluster.config(&[("min_durability", "aof".into())]);
        let nodes: Vec<String> = config
            .connection_string
            .trim_start_matches("redis+cluster://")
            .split(',')
            .map(str::to_owned)
            .collect();
        let all_aof = nodes.iter().all(|node| {
            let (host, port) = node.split_once(':').unwrap();
            fixtures::redis_cli(&["-h", host, "-p", port, "config", "get", "appendonly"])
                .unwrap()
                .contains("yes")
        });
        match cluster.open_config(config).await {
            Ok(_) => assert!(all_aof, "a node without appendonly was accepted"),
            Err(e) => {
                assert!(!all_aof, "{e}");
                assert_eq!(e.kind(), ErrorKind::ConfigInvalid, "{e}");
                assert!(e.to_string().contains("appendonly no"), "{e}");
            }
        }
    });
}
