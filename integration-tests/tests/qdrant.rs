//! The conformance suite against a Qdrant server (`qdrant://`): `AIMON_TEST_QDRANT_URL`, a
//! `qdrant` binary on `PATH`, or (feature `containers`) the pinned `qdrant/qdrant` image;
//! skipped when none is there (fails under `AIMON_REQUIRE=qdrant`).
#![cfg(feature = "qdrant-edge")]

aimon_integration_tests::conformance_suite!(aimon_integration_tests::fixtures::qdrant());
