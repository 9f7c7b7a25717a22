//! The conformance suite against a standalone Redis (`redis://`, one key prefix per namespace).
#![cfg(feature = "redis")]

aimon_integration_tests::conformance_suite!(aimon_integration_tests::fixtures::redis());
