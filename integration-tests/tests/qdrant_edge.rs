//! The conformance suite against embedded Qdrant (`qdrant-edge://`, the real engine in-process,
//! one fresh directory per namespace). No server needed: it runs wherever the feature is on.
#![cfg(feature = "qdrant-edge")]

aimon_integration_tests::conformance_suite!(aimon_integration_tests::fixtures::qdrant_edge());
