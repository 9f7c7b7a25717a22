//! The conformance suite against SQLite (`sqlite://`, one fresh database file per namespace).
#![cfg(feature = "sqlite")]

aimon_integration_tests::conformance_suite!(aimon_integration_tests::fixtures::sqlite());
