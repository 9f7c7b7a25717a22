//! The conformance suite against a 3-master Redis Cluster (`redis+cluster://`).
#![cfg(feature = "redis")]

aimon_integration_tests::conformance_suite!(aimon_integration_tests::fixtures::redis_cluster());
