//! The fault suite on InfluxDB 1.x: the client killed mid-batch (the fixture's server); a
//! private `influxd` killed with `SIGKILL` mid-batch and restarted on its WAL; a private
//! `influxd` stopped with `SIGSTOP` mid-batch (the store times out) and resumed.
#![cfg(feature = "influxdb")]
use aimon_integration_tests::{faults, fixtures};

aimon_integration_tests::fault_suite!(
    influxdb,
    fixtures::influxdb(),
    server_killed_mid_batch_and_restarted = (faults::influxdb_server_killed(), 2),
    connection_cut_mid_batch = (faults::influxdb_server_stopped(), 2),
);
