//! The conformance suite against InfluxDB 1.x (`influxdb://`, one database per namespace),
//! started by the fixture from Debian's `influxd` (or `AIMON_TEST_INFLUXDB_URL`).
#![cfg(feature = "influxdb")]

aimon_integration_tests::conformance_suite!(aimon_integration_tests::fixtures::influxdb());
