//! A toy aimon driver, written as a crate outside the aimon workspace would write one.
//!
//! It keeps its data in aimon's reference memory driver and counts the calls that reach it, so
//! its tests can show what the contract layer does before a driver is called. A real driver
//! talks to its store instead; everything else (the trait, the descriptor, the fixture, the
//! conformance suite) is the same.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use aimon_core::driver::{
    AgentStateDriver, AlertDriver, Driver, MetricBatch, MetricDriver, Selection, Valid, ValidId,
};
use aimon_core::query::{AgentStateQuery, AlertQuery, HistoryQuery, HistorySeries, MetricQuery};
use aimon_core::{
    AgentState, Alert, Capabilities, DatabaseStats, Descriptor, EventStream, MemoryBackend, Metric,
    Result, RetentionReport, Scored, SimilarAgentStatesQuery, SimilarAlertsQuery, StorageBackend,
    StorageBackendType, StorageConfig, TransferReport, WriteReport,
};
use async_trait::async_trait;

/// What the registry needs to know of this driver. It claims `memory://` URLs: the set of
/// backend types is aimon's own.
pub const DRIVER: Descriptor = Descriptor {
    types: &[StorageBackendType::Memory],
    schemes: &["memory"],
    feature: "toy",
    open: |config| aimon_core::driver::boxed(async move { ToyBackend::connect(config) }),
};

/// The toy driver.
pub struct ToyBackend {
    store: MemoryBackend,
    calls: AtomicU64,
}

impl ToyBackend {
    /// Opens a toy store from a `memory://` configuration.
    pub fn connect(config: &StorageConfig) -> Result<Self> {
        Ok(ToyBackend {
            store: MemoryBackend::from_config(config)?,
            calls: AtomicU64::new(0),
        })
    }

    /// How many calls reached the driver (the contract's refusals never do).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn count(&self) -> &MemoryBackend {
        self.calls.fetch_add(1, Ordering::Relaxed);
        &self.store
    }
}

#[async_trait]
impl Driver for ToyBackend {
    fn name(&self) -> &str {
        self.store.name()
    }

    fn backend_type(&self) -> StorageBackendType {
        StorageBackendType::Memory
    }

    fn capabilities(&self) -> Capabilities {
        self.store.capabilities()
    }

    async fn apply_retention(&self) -> Result<RetentionReport> {
        self.count().apply_retention().await
    }

    async fn backup_native(
        &self,
        store: &dyn StorageBackend,
        path: &Path,
    ) -> Result<TransferReport> {
        self.count().backup_native(store, path).await
    }

    async fn stats(&self) -> Result<DatabaseStats> {
        self.count().stats().await
    }

    async fn subscribe(&self) -> Result<EventStream> {
        self.count().subscribe().await
    }

    async fn close(&self) -> Result<()> {
        self.count().close().await
    }
}

#[async_trait]
impl MetricDriver for ToyBackend {
    async fn save_metrics(&self, batch: MetricBatch<'_>) -> Result<WriteReport> {
        self.count().save_metrics(batch).await
    }

    async fn get_metric(&self, id: ValidId<'_>) -> Result<Option<Metric>> {
        self.count().get_metric(id).await
    }

    async fn query_metrics(&self, query: Selection<'_, MetricQuery>) -> Result<Vec<Metric>> {
        self.count().query_metrics(query).await
    }

    async fn metric_history(&self, query: Valid<'_, HistoryQuery>) -> Result<Vec<HistorySeries>> {
        self.count().metric_history(query).await
    }
}

#[async_trait]
impl AlertDriver for ToyBackend {
    async fn save_alerts(&self, batch: Valid<'_, [Alert]>) -> Result<WriteReport> {
        self.count().save_alerts(batch).await
    }

    async fn get_alert(&self, id: ValidId<'_>) -> Result<Option<Alert>> {
        self.count().get_alert(id).await
    }

    async fn query_alerts(&self, query: Selection<'_, AlertQuery>) -> Result<Vec<Alert>> {
        self.count().query_alerts(query).await
    }

    async fn find_similar_alerts(&self, query: &SimilarAlertsQuery) -> Result<Vec<Scored<Alert>>> {
        self.count().find_similar_alerts(query).await
    }
}

#[async_trait]
impl AgentStateDriver for ToyBackend {
    async fn save_agent_states(&self, batch: Valid<'_, [AgentState]>) -> Result<WriteReport> {
        self.count().save_agent_states(batch).await
    }

    async fn get_agent_state(&self, agent_id: ValidId<'_>) -> Result<Option<AgentState>> {
        self.count().get_agent_state(agent_id).await
    }

    async fn get_agent_states(
        &self,
        query: Selection<'_, AgentStateQuery>,
    ) -> Result<Vec<AgentState>> {
        self.count().get_agent_states(query).await
    }

    async fn find_similar_agent_states(
        &self,
        query: &SimilarAgentStatesQuery,
    ) -> Result<Vec<Scored<AgentState>>> {
        self.count().find_similar_agent_states(query).await
    }
}
