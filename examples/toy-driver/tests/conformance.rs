//! The toy driver through the same steps as any driver outside the workspace: a fixture that
//! opens it through the registry's contract layer, and one line for the conformance suite.

use aimon_core::{ErrorKind, Metric, MetricType, MetricValue, StorageBackend, StorageConfig};
use aimon_integration_tests::fixtures::Fixture;

async fn toy() -> Option<Fixture> {
    Some(
        Fixture::new("toy", |namespace| {
            StorageConfig::from_url(namespace, "memory://").unwrap()
        })
        .with_opener(|config| async move {
            aimon_registry::open_with(&toy_driver::DRIVER, &config).await
        }),
    )
}

aimon_integration_tests::conformance_suite!(toy());

/// The contract refuses invalid input and calls after `close` before the driver sees them.
#[tokio::test]
async fn the_contract_stops_what_the_driver_never_sees() {
    let config = StorageConfig::from_url("toy", "memory://").unwrap();
    let store = aimon_core::Contract::new(toy_driver::ToyBackend::connect(&config).unwrap());
    let nan = Metric::new("m", "m", MetricType::Gauge)
        .with_value(MetricValue::new(aimon_core::time::now(), f64::NAN));
    let err = store.save_metric(&nan).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(err.operation(), Some("save_metrics"));
    assert_eq!(err.backend(), Some("toy"));
    assert_eq!(store.calls(), 0, "an invalid batch reached the driver");
    assert!(store.get_metric("m").await.unwrap().is_none());
    assert_eq!(store.calls(), 1);
    store.close().await.unwrap();
    let err = store.get_metric("m").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(store.calls(), 2, "only close reached the driver");
}
