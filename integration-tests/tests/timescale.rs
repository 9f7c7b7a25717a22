//! The conformance suite against PostgreSQL with TimescaleDB (`timescale://`, samples in a
//! hypertable). Runs where `AIMON_TEST_TIMESCALE_URL` is set or a server with the extension can
//! be started; this project's CI has none, so it reports a skip there (TimescaleDB mode is not
//! verified in CI; see the aimon-postgres docs).
#![cfg(feature = "timescale")]

aimon_integration_tests::conformance_suite!(aimon_integration_tests::fixtures::timescale());
