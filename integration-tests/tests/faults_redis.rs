//! The fault suite on Redis: the client killed mid-batch on every topology (the shared
//! fixture servers); a private durable server (`appendonly yes`, `appendfsync always`) killed
//! with `SIGKILL` mid-batch and restarted; connections cut by `CLIENT KILL` mid-batch on a
//! private standalone server, Cluster and Sentinel set.
#![cfg(feature = "redis")]
use aimon_integration_tests::{faults, fixtures};

aimon_integration_tests::fault_suite!(
    redis,
    fixtures::redis(),
    server_killed_mid_batch_and_restarted = (faults::redis_server_killed(), 3),
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
