//! [`Contract`]: the layer that makes a [`Driver`] a [`StorageBackend`], applying the rules
//! every backend shares once, in one place (the model is OpenDAL's `ErrorContextLayer` and
//! `CapabilityCheckLayer`):
//!
//! - **validation**: every input is checked before the driver sees it, and the driver is handed
//!   the checked view ([`Valid`](crate::driver::Valid)): a batch is rejected whole, before
//!   anything is written;
//! - **lifecycle**: after [`StorageBackend::close`] every call fails with
//!   [`ErrorKind::Unavailable`], and the driver's own `close` runs once;
//! - **errors**: every error carries the operation and the backend's name;
//! - **tracing**: each call runs in a `debug` span `aimon` with `backend` and `operation`,
//!   and a failure is logged at `debug` with its kind;
//! - **capabilities**: a `false` capability answers [`ErrorKind::Unsupported`] without calling
//!   the driver (similarity search, native backups, `subscribe`).
//!
//! The registry wraps every driver it opens; code that opens a driver crate directly wraps it
//! with [`Contract::new`]:
//!
//! ```
//! use aimon_core::{Contract, MemoryBackend, RetentionPolicy, StorageBackend, ErrorKind};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = Contract::new(MemoryBackend::new("scratch", RetentionPolicy::default()));
//! let err = store.get_alert("").await.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::InvalidInput);
//! assert_eq!(err.operation(), Some("get_alert"));
//! store.close().await?;
//! assert_eq!(store.get_alert("a1").await.unwrap_err().kind(), ErrorKind::Unavailable);
//! # Ok::<(), aimon_core::Error>(())
//! # }).unwrap();
//! ```

use std::future::Future;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use tracing::Instrument;

use crate::archive;
use crate::backend::{
    BackupFormat, Capabilities, DatabaseStats, EventStream, RetentionReport, StorageBackend,
    TransferReport, WriteReport,
};
use crate::config::StorageBackendType;
use crate::driver::{Check, Driver, ValidId};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{AgentState, Alert, Metric};
use crate::query::{AgentStateQuery, AlertQuery, HistoryQuery, HistorySeries, MetricQuery};
use crate::similarity::{Scored, SimilarAgentStatesQuery, SimilarAlertsQuery};

/// A [`Driver`] behind the shared rules: the only way a driver becomes a [`StorageBackend`].
///
/// It dereferences to the driver, so a driver's own public methods (a pool for inspection, its
/// parsed settings) stay reachable.
pub struct Contract<D: ?Sized> {
    closed: AtomicBool,
    driver: D,
}

impl<D: Driver> Contract<D> {
    /// Wraps `driver`.
    pub fn new(driver: D) -> Self {
        Contract {
            closed: AtomicBool::new(false),
            driver,
        }
    }

    /// Wraps `driver` as a shared trait object, what the registry hands out.
    pub fn shared(driver: D) -> Arc<dyn StorageBackend> {
        Arc::new(Self::new(driver))
    }
}

impl<D: ?Sized> Deref for Contract<D> {
    type Target = D;

    fn deref(&self) -> &D {
        &self.driver
    }
}

/// Names the backend and its type, as `dyn StorageBackend` does; never a connection string.
impl<D: Driver + ?Sized> std::fmt::Debug for Contract<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contract")
            .field("name", &self.driver.name())
            .field("backend_type", &self.driver.backend_type())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<D: Driver> Contract<D> {
    /// Runs one operation: checks the backend is open, then `body` (the checks on the input and
    /// the driver's call) in a span, and labels any error with the operation and the name.
    async fn call<T>(
        &self,
        operation: &'static str,
        body: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let name = self.driver.name();
        let labelled = |e: Error| e.with_operation(operation).with_backend(name);
        if self.closed.load(Ordering::Acquire) {
            return Err(labelled(Error::new(
                ErrorKind::Unavailable,
                "the backend is closed",
            )));
        }
        let span = tracing::debug_span!("aimon", backend = %name, operation);
        body.instrument(span).await.map_err(|e| {
            let e = labelled(e);
            tracing::debug!(backend = %name, operation, kind = %e.kind(), "operation failed");
            e
        })
    }

    /// Fails with `Unsupported` unless the driver has the capability.
    fn require(&self, has: fn(&Capabilities) -> bool, what: &str) -> Result<()> {
        if has(&self.driver.capabilities()) {
            Ok(())
        } else {
            Err(Error::unsupported(what))
        }
    }
}

#[async_trait]
impl<D: Driver> StorageBackend for Contract<D> {
    fn name(&self) -> &str {
        self.driver.name()
    }

    fn backend_type(&self) -> StorageBackendType {
        self.driver.backend_type()
    }

    fn capabilities(&self) -> Capabilities {
        self.driver.capabilities()
    }

    async fn save_metrics(&self, metrics: &[Metric]) -> Result<WriteReport> {
        self.call("save_metrics", async {
            self.driver.save_metrics(Check::check(metrics)?).await
        })
        .await
    }

    async fn get_metric(&self, id: &str) -> Result<Option<Metric>> {
        self.call("get_metric", async {
            self.driver.get_metric(ValidId::named("id", id)?).await
        })
        .await
    }

    async fn query_metrics(&self, query: &MetricQuery) -> Result<Vec<Metric>> {
        self.call("query_metrics", async {
            let mut found = self.driver.query_metrics(Check::check(query)?).await?;
            if query.series_only {
                // A driver may read the samples anyway; the answer never carries them.
                found.iter_mut().for_each(|m| m.values = Vec::new());
            }
            Ok(found)
        })
        .await
    }

    async fn metric_history(&self, query: &HistoryQuery) -> Result<Vec<HistorySeries>> {
        self.call("metric_history", async {
            self.driver.metric_history(Check::check(query)?).await
        })
        .await
    }

    async fn save_alerts(&self, alerts: &[Alert]) -> Result<WriteReport> {
        self.call("save_alerts", async {
            self.driver.save_alerts(Check::check(alerts)?).await
        })
        .await
    }

    async fn get_alert(&self, id: &str) -> Result<Option<Alert>> {
        self.call("get_alert", async {
            self.driver.get_alert(ValidId::named("id", id)?).await
        })
        .await
    }

    async fn query_alerts(&self, query: &AlertQuery) -> Result<Vec<Alert>> {
        self.call("query_alerts", async {
            self.driver.query_alerts(Check::check(query)?).await
        })
        .await
    }

    async fn save_agent_states(&self, states: &[AgentState]) -> Result<WriteReport> {
        self.call("save_agent_states", async {
            self.driver.save_agent_states(Check::check(states)?).await
        })
        .await
    }

    async fn get_agent_state(&self, agent_id: &str) -> Result<Option<AgentState>> {
        self.call("get_agent_state", async {
            let id = ValidId::named("agent_id", agent_id)?;
            self.driver.get_agent_state(id).await
        })
        .await
    }

    async fn get_agent_states(&self, query: &AgentStateQuery) -> Result<Vec<AgentState>> {
        self.call("get_agent_states", async {
            self.driver.get_agent_states(Check::check(query)?).await
        })
        .await
    }

    async fn find_similar_alerts(&self, query: &SimilarAlertsQuery) -> Result<Vec<Scored<Alert>>> {
        self.call("find_similar_alerts", async {
            self.require(|c| c.similarity_search, "similarity search")?;
            self.driver.find_similar_alerts(query).await
        })
        .await
    }

    async fn find_similar_agent_states(
        &self,
        query: &SimilarAgentStatesQuery,
    ) -> Result<Vec<Scored<AgentState>>> {
        self.call("find_similar_agent_states", async {
            self.require(|c| c.similarity_search, "similarity search")?;
            self.driver.find_similar_agent_states(query).await
        })
        .await
    }

    async fn apply_retention(&self) -> Result<RetentionReport> {
        self.call("apply_retention", self.driver.apply_retention())
            .await
    }

    async fn backup(&self, path: &Path, format: BackupFormat) -> Result<TransferReport> {
        self.call("backup", async {
            match format {
                BackupFormat::Portable => match self.driver.exporter() {
                    Some(exporter) => archive::write_with(self, &*exporter, path).await,
                    None => archive::write(self, path).await,
                },
                BackupFormat::Native => {
                    self.require(|c| c.native_backup, "a native backup format")?;
                    self.driver.backup_native(self, path).await
                }
            }
        })
        .await
    }

    async fn restore(&self, path: &Path, format: BackupFormat) -> Result<TransferReport> {
        self.call("restore", async {
            match format {
                BackupFormat::Portable => archive::restore(self, path).await,
                BackupFormat::Native => {
                    self.require(|c| c.native_backup, "a native backup format")?;
                    self.driver.restore_native(self, path).await
                }
            }
        })
        .await
    }

    async fn stats(&self) -> Result<DatabaseStats> {
        self.call("stats", self.driver.stats()).await
    }

    async fn subscribe(&self) -> Result<EventStream> {
        self.call("subscribe", async {
            self.require(|c| c.pub_sub, "live updates (subscribe)")?;
            self.driver.subscribe().await
        })
        .await
    }

    async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let name = self.driver.name();
        tracing::debug!(backend = %name, "closing");
        self.driver
            .close()
            .await
            .map_err(|e| e.with_operation("close").with_backend(name))
    }
}

/// A shared backend is a backend: routers and layers hold `Arc<dyn StorageBackend>`.
#[async_trait]
impl<B: StorageBackend + ?Sized> StorageBackend for Arc<B> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn backend_type(&self) -> StorageBackendType {
        (**self).backend_type()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    async fn save_metrics(&self, metrics: &[Metric]) -> Result<WriteReport> {
        (**self).save_metrics(metrics).await
    }
    async fn get_metric(&self, id: &str) -> Result<Option<Metric>> {
        (**self).get_metric(id).await
    }
    async fn query_metrics(&self, query: &MetricQuery) -> Result<Vec<Metric>> {
        (**self).query_metrics(query).await
    }
    async fn metric_history(&self, query: &HistoryQuery) -> Result<Vec<HistorySeries>> {
        (**self).metric_history(query).await
    }
    async fn save_alerts(&self, alerts: &[Alert]) -> Result<WriteReport> {
        (**self).save_alerts(alerts).await
    }
    async fn get_alert(&self, id: &str) -> Result<Option<Alert>> {
        (**self).get_alert(id).await
    }
    async fn query_alerts(&self, query: &AlertQuery) -> Result<Vec<Alert>> {
        (**self).query_alerts(query).await
    }
    async fn save_agent_states(&self, states: &[AgentState]) -> Result<WriteReport> {
        (**self).save_agent_states(states).await
    }
    async fn get_agent_state(&self, agent_id: &str) -> Result<Option<AgentState>> {
        (**self).get_agent_state(agent_id).await
    }
    async fn get_agent_states(&self, query: &AgentStateQuery) -> Result<Vec<AgentState>> {
        (**self).get_agent_states(query).await
    }
    async fn find_similar_alerts(&self, query: &SimilarAlertsQuery) -> Result<Vec<Scored<Alert>>> {
        (**self).find_similar_alerts(query).await
    }
    async fn find_similar_agent_states(
        &self,
        query: &SimilarAgentStatesQuery,
    ) -> Result<Vec<Scored<AgentState>>> {
        (**self).find_similar_agent_states(query).await
    }
    async fn apply_retention(&self) -> Result<RetentionReport> {
        (**self).apply_retention().await
    }
    async fn backup(&self, path: &Path, format: BackupFormat) -> Result<TransferReport> {
        (**self).backup(path, format).await
    }
    async fn restore(&self, path: &Path, format: BackupFormat) -> Result<TransferReport> {
        (**self).restore(path, format).await
    }
    async fn stats(&self) -> Result<DatabaseStats> {
        (**self).stats().await
    }
    async fn subscribe(&self) -> Result<EventStream> {
        (**self).subscribe().await
    }
    async fn close(&self) -> Result<()> {
        (**self).close().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

    use super::*;
    use crate::memory::MemoryBackend;
    use crate::retention::RetentionPolicy;

    /// Records the `operation` field of every span named `aimon`.
    #[derive(Clone, Default)]
    struct Operations(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> Layer<S> for Operations {
        fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
            struct Find(Option<String>);
            impl Visit for Find {
                fn record_str(&mut self, field: &Field, value: &str) {
                    if field.name() == "operation" {
                        self.0 = Some(value.to_owned());
                    }
                }
                fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                    if field.name() == "operation" {
                        self.0 = Some(format!("{value:?}"));
                    }
                }
            }
            if attrs.metadata().name() == "aimon" {
                let mut find = Find(None);
                attrs.record(&mut find);
                self.0.lock().unwrap().extend(find.0);
            }
        }
    }

    fn store() -> Contract<MemoryBackend> {
        Contract::new(MemoryBackend::new("scratch", RetentionPolicy::default()))
    }

    #[tokio::test]
    async fn every_call_runs_in_a_span_naming_its_operation() {
        let operations = Operations::default();
        let subscriber = tracing_subscriber::registry().with(operations.clone());
        let _guard = tracing::subscriber::set_default(subscriber);
        // Other tests of this binary ran the same call sites with no subscriber, which cached
        // them as disabled.
        tracing::callsite::rebuild_interest_cache();
        let store = store();
        store.get_alert("a1").await.unwrap();
        store.stats().await.unwrap();
        let _ = store.get_metric("").await;
        assert_eq!(
            *operations.0.lock().unwrap(),
            ["get_alert", "stats", "get_metric"]
        );
    }

    #[tokio::test]
    async fn a_false_capability_is_refused_before_the_driver() {
        let store = store();
        let dir = tempfile::tempdir().unwrap();
        let err = store
            .backup(&dir.path().join("b"), BackupFormat::Native)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        assert_eq!(err.operation(), Some("backup"));
        assert_eq!(err.backend(), Some("scratch"));
        // Nothing was written where the backup would have gone.
        assert!(!dir.path().join("b").exists());
    }

    #[tokio::test]
    async fn close_is_idempotent_and_everything_after_it_is_unavailable() {
        let store = store();
        store.close().await.unwrap();
        store.close().await.unwrap();
        for err in [
            store.stats().await.unwrap_err(),
            store.subscribe().await.err().unwrap(),
            store.save_alerts(&[]).await.unwrap_err(),
        ] {
            assert_eq!(err.kind(), ErrorKind::Unavailable);
            assert_eq!(err.backend(), Some("scratch"));
        }
    }
}
