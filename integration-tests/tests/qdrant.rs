//! The conformance suite against a Qdrant server (`qdrant://`): `AIMON_TEST_QDRANT_URL`, a
//! `qdrant` binary on `PATH`, or (feature `containers`) the pinned `qdrant/qdrant` image;
//! skipped when none is there (fails under `AIMON_REQUIRE=qdrant`).
#![cfg(feature = "qdrant-edge")]

aimon_integration_tests::conformance_suite!(aimon_integration_tests::fixtures::qdrant());

/// Removes what killed test runs left on the server `AIMON_TEST_QDRANT_URL` names: every
/// collection of a test namespace (`t_qdrant_…`). By hand, when no test run uses the server:
/// `AIMON_TEST_QDRANT_URL=qdrant://host:6334 cargo test -p aimon-integration-tests --test qdrant
/// -- --ignored drop_leftover_test_collections`.
#[tokio::test]
#[ignore = "drops every test namespace on the server; run by hand when no test run uses it"]
async fn drop_leftover_test_collections() {
    let url = std::env::var("AIMON_TEST_QDRANT_URL")
        .expect("AIMON_TEST_QDRANT_URL names the server to clean");
    let dropped = aimon_integration_tests::fixtures::drop_leftover_qdrant_collections(&url)
        .await
        .unwrap();
    println!("dropped {} collections: {dropped:?}", dropped.len());
}
