//! The conformance suite against a Qdrant server (`qdrant://`), only where
//! `AIMON_TEST_QDRANT_URL` names one; skipped otherwise (fails under `AIMON_REQUIRE=qdrant`).
#![cfg(feature = "qdrant-edge")]

aimon_integration_tests::conformance_suite!(aimon_integration_tests::fixtures::qdrant());
