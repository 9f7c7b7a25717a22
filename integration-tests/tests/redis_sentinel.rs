//! The conformance suite against a master + replica + Sentinel set (`redis+sentinel://`).
#![cfg(feature = "redis")]

aimon_integration_tests::conformance_suite!(aimon_integration_tests::fixtures::redis_sentinel());
