//! Similarity quality (issue 6, item 5): on the generated labelled set, precision@5 within the
//! family with the built-in embedder is at least 0.8 on memory, on SQLite and on embedded Qdrant
//! (native vector search), and all of them rank every query identically.

#![cfg(feature = "sqlite")]

use aimon_core::StorageBackend;
use aimon_integration_tests::fixtures;
use aimon_integration_tests::similarity_quality::{
    PrecisionReport, labelled_alerts, precision_at_k,
};

const SEED: u64 = 20_240_601;
const PER_FAMILY: usize = 20;
const K: usize = 5;
const REQUIRED: f64 = 0.8;

async fn measure(store: &dyn StorageBackend) -> PrecisionReport {
    let set = labelled_alerts(SEED, PER_FAMILY);
    let alerts: Vec<_> = set.iter().map(|l| l.alert.clone()).collect();
    store.save_alerts(&alerts).await.unwrap();
    let report = precision_at_k(store, &set, K).await.unwrap();
    println!(
        "{}: precision@{K} within the family over {} alerts = {:.3}",
        store.name(),
        set.len(),
        report.precision
    );
    for (family, p) in &report.by_family {
        println!("  {family:<24} {p:.3}");
    }
    report
}

#[tokio::test(flavor = "multi_thread")]
async fn precision_at_5_is_at_least_0_8_and_memory_and_sqlite_rank_alike() {
    let memory = fixtures::memory().await.unwrap().open(&[]).await;
    let memory_report = measure(&*memory).await;
    assert!(
        memory_report.precision >= REQUIRED,
        "memory precision@{K} = {:.3}",
        memory_report.precision
    );
    let Some(sqlite) = fixtures::sqlite().await else {
        return;
    };
    let sqlite = sqlite.open(&[]).await;
    let sqlite_report = measure(&*sqlite).await;
    assert!(
        sqlite_report.precision >= REQUIRED,
        "sqlite precision@{K} = {:.3}",
        sqlite_report.precision
    );
    assert_eq!(sqlite_report.rankings, memory_report.rankings);
    assert_eq!(sqlite_report.precision, memory_report.precision);
}

#[cfg(feature = "qdrant-edge")]
#[tokio::test(flavor = "multi_thread")]
async fn embedded_qdrant_ranks_like_memory_with_precision_at_5_of_0_8() {
    let memory = fixtures::memory().await.unwrap().open(&[]).await;
    let memory_report = measure(&*memory).await;
    let Some(qdrant) = fixtures::qdrant_edge().await else {
        return;
    };
    let qdrant = qdrant.open(&[]).await;
    let qdrant_report = measure(&*qdrant).await;
    assert!(
        qdrant_report.precision >= REQUIRED,
        "qdrant-edge precision@{K} = {:.3}",
        qdrant_report.precision
    );
    assert_eq!(qdrant_report.rankings, memory_report.rankings);
    assert_eq!(qdrant_report.precision, memory_report.precision);
}

/// The same set with every label removed: family-specific label keys (`gpu=…`, `budget=…`) must
/// not be what carries the figure. Names, descriptions and sources alone still reach 0.8.
#[tokio::test(flavor = "multi_thread")]
async fn precision_at_5_holds_without_labels() {
    let memory = fixtures::memory().await.unwrap().open(&[]).await;
    let mut set = labelled_alerts(SEED, PER_FAMILY);
    for l in &mut set {
        l.alert.labels.clear();
    }
    let alerts: Vec<_> = set.iter().map(|l| l.alert.clone()).collect();
    memory.save_alerts(&alerts).await.unwrap();
    let report = precision_at_k(&*memory, &set, K).await.unwrap();
    println!(
        "without labels: precision@{K} within the family over {} alerts = {:.3}",
        set.len(),
        report.precision
    );
    for (family, p) in &report.by_family {
        println!("  {family:<24} {p:.3}");
    }
    assert!(
        report.precision >= REQUIRED,
        "precision@{K} without labels = {:.3}",
        report.precision
    );
}
