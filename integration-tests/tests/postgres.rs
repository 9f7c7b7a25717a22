//! The conformance suite against PostgreSQL (`postgres://`, one schema per namespace, native
//! partitions).
#![cfg(feature = "postgres")]

aimon_integration_tests::conformance_suite!(aimon_integration_tests::fixtures::postgres());
