//! The fault suite on PostgreSQL: the client killed mid-batch (the fixture's server); a
//! private cluster killed with `SIGKILL` mid-batch and restarted; connections cut by
//! `pg_terminate_backend` mid-batch on a private cluster.
#![cfg(feature = "postgres")]
use aimon_integration_tests::{faults, fixtures};

aimon_integration_tests::fault_suite!(
    postgres,
    fixtures::postgres(),
    server_killed_mid_batch_and_restarted = (faults::postgres_server_killed(), 2),
    connection_cut_mid_batch = (faults::postgres_connection_cut(), 3),
);
