//! The fault suite on embedded Qdrant (`qdrant-edge://`): the writing process killed
//! mid-batch, then the store directory reopened.
#![cfg(feature = "qdrant-edge")]
aimon_integration_tests::fault_suite!(
    qdrant_edge,
    aimon_integration_tests::fixtures::qdrant_edge()
);
