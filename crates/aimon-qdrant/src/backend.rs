//! [`QdrantBackend`]: the [`StorageBackend`] implementation over an [`Engine`].

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use aimon_core::backend::{
    BackupFormat, Capabilities, DatabaseStats, EventStream, LocalEvents, RetentionMechanism,
    RetentionReport, StorageBackend, StorageEvent, TransferReport, WriteReport,
};
use aimon_core::query::{AgentStateQuery, AlertQuery, HistoryQuery, HistorySeries, MetricQuery};
use aimon_core::similarity::{
    Embedder, HashingEmbedder, Scored, SimilarAgentStatesQuery, SimilarAlertsQuery,
};
use aimon_core::{
    AgentState, Alert, Error, ErrorKind, Metric, Result, RetentionPolicy, StorageBackendType,
    StorageConfig,
};
use async_trait::async_trait;

use crate::config::{QdrantConfig, QdrantMode};
use crate::engine::Engine;

/// A Qdrant store (embedded or server) behind the [`StorageBackend`] trait.
pub struct QdrantBackend {
    pub(crate) config: QdrantConfig,
    pub(crate) engine: Arc<dyn Engine>,
    pub(crate) embedder: Arc<dyn Embedder>,
    /// Serializes writes that read before they write (series `created_at`, latest agent
    /// state) and retention sweeps.
    pub(crate) writer: tokio::sync::Mutex<()>,
    /// Events of this process's writes (Qdrant has no change feed).
    events: LocalEvents,
    pub(crate) started: Instant,
    closed: AtomicBool,
}

impl fmt::Debug for QdrantBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QdrantBackend")
            .field("config", &self.config)
            .field("embedder", &self.embedder.name())
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl QdrantBackend {
    /// Opens the store a `qdrant` [`StorageConfig`] describes (see [`crate::config`]), with
    /// the built-in [`HashingEmbedder`].
    pub async fn connect(config: &StorageConfig) -> Result<QdrantBackend> {
        Self::connect_with_embedder(config, Arc::new(HashingEmbedder::default())).await
    }

    /// As [`QdrantBackend::connect`] with another embedder. The vectors of a store have the
    /// dimension of the embedder that created it; opening it with another dimension is
    /// `ConfigInvalid`.
    pub async fn connect_with_embedder(
        config: &StorageConfig,
        embedder: Arc<dyn Embedder>,
    ) -> Result<QdrantBackend> {
        let parsed = QdrantConfig::from_storage_config(config)
            .map_err(|e| e.with_operation("connect").with_backend(&config.name))?;
        Self::open(parsed, embedder).await
    }

    /// Opens the store `config` describes.
    pub async fn open(config: QdrantConfig, embedder: Arc<dyn Embedder>) -> Result<QdrantBackend> {
        let name = config.name.clone();
        let fail = |e: Error| e.with_operation("connect").with_backend(&name);
        tracing::debug!(backend = %name, mode = ?config.mode, "opening the qdrant store");
        let engine = open_engine(&config.mode, embedder.dimension())
            .await
            .map_err(fail)?;
        Ok(QdrantBackend {
            config,
            engine,
            embedder,
            writer: tokio::sync::Mutex::new(()),
            events: LocalEvents::new(),
            started: Instant::now(),
            closed: AtomicBool::new(false),
        })
    }

    /// Sends an event of a write that succeeded to this process's subscribers.
    pub(crate) fn publish(&self, event: StorageEvent) {
        self.events.publish(event);
    }

    pub(crate) fn retention(&self) -> &RetentionPolicy {
        &self.config.retention
    }

    pub(crate) fn check_open(&self, operation: &'static str) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(self.fail(
                operation,
                Error::new(ErrorKind::Unavailable, "the backend is closed"),
            ))
        } else {
            Ok(())
        }
    }

    pub(crate) fn fail(&self, operation: &'static str, err: Error) -> Error {
        let err = if err.operation().is_none() {
            err.with_operation(operation)
        } else {
            err
        };
        if err.backend().is_none() {
            err.with_backend(&self.config.name)
        } else {
            err
        }
    }
}

#[allow(unused_variables)]
async fn open_engine(mode: &QdrantMode, dimension: usize) -> Result<Arc<dyn Engine>> {
    match mode {
        QdrantMode::Embedded { path } => {
            #[cfg(feature = "qdrant-edge")]
            {
                Ok(Arc::new(
                    crate::edge::EdgeEngine::open(path.clone(), dimension).await?,
                ))
            }
            #[cfg(not(feature = "qdrant-edge"))]
            {
                Err(Error::config(
                    "the embedded Qdrant engine (qdrant-edge://) is not compiled into this \
                     build; enable the cargo feature `qdrant-edge` of the `aimon` crate",
                ))
            }
        }
        QdrantMode::Server { .. } => {
            #[cfg(feature = "qdrant")]
            {
                Ok(Arc::new(
                    crate::server::ServerEngine::connect(mode, dimension).await?,
                ))
            }
            #[cfg(not(feature = "qdrant"))]
            {
                Err(Error::config(
                    "the Qdrant server mode (qdrant://) is not compiled into this build; enable \
                     the cargo feature `qdrant` of the `aimon` crate",
                ))
            }
        }
    }
}

#[async_trait]
impl StorageBackend for QdrantBackend {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn backend_type(&self) -> StorageBackendType {
        StorageBackendType::Qdrant
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            server_side_downsampling: false,
            // Events of this process's writes; Qdrant itself has no change notifications.
            pub_sub: true,
            cross_process_events: false,
            // Embedded: a flushed copy of the shard directories; server: collection snapshots
            // downloaded over the REST port.
            native_backup: true,
            similarity_search: true,
            agent_state_history: false,
            retention: RetentionMechanism::Sweep,
        }
    }

    async fn save_metrics(&self, metrics: &[Metric]) -> Result<WriteReport> {
        const OP: &str = "save_metrics";
        self.check_open(OP)?;
        self.write_metrics(metrics)
            .await
            .map_err(|e| self.fail(OP, e))
    }

    async fn get_metric(&self, id: &str) -> Result<Option<Metric>> {
        const OP: &str = "get_metric";
        self.check_open(OP)?;
        self.read_metric(id).await.map_err(|e| self.fail(OP, e))
    }

    async fn query_metrics(&self, query: &MetricQuery) -> Result<Vec<Metric>> {
        const OP: &str = "query_metrics";
        self.check_open(OP)?;
        self.select_metrics(query)
            .await
            .map_err(|e| self.fail(OP, e))
    }

    async fn metric_history(&self, query: &HistoryQuery) -> Result<Vec<HistorySeries>> {
        const OP: &str = "metric_history";
        self.check_open(OP)?;
        self.history(query).await.map_err(|e| self.fail(OP, e))
    }

    async fn save_alerts(&self, alerts: &[Alert]) -> Result<WriteReport> {
        const OP: &str = "save_alerts";
        self.check_open(OP)?;
        self.write_alerts(alerts)
            .await
            .map_err(|e| self.fail(OP, e))
    }

    async fn get_alert(&self, id: &str) -> Result<Option<Alert>> {
        const OP: &str = "get_alert";
        self.check_open(OP)?;
        self.read_alert(id).await.map_err(|e| self.fail(OP, e))
    }

    async fn query_alerts(&self, query: &AlertQuery) -> Result<Vec<Alert>> {
        const OP: &str = "query_alerts";
        self.check_open(OP)?;
        self.select_alerts(query)
            .await
            .map_err(|e| self.fail(OP, e))
    }

    async fn save_agent_states(&self, states: &[AgentState]) -> Result<WriteReport> {
        const OP: &str = "save_agent_states";
        self.check_open(OP)?;
        self.write_agent_states(states)
            .await
            .map_err(|e| self.fail(OP, e))
    }

    async fn get_agent_state(&self, agent_id: &str) -> Result<Option<AgentState>> {
        const OP: &str = "get_agent_state";
        self.check_open(OP)?;
        self.read_agent_state(agent_id)
            .await
            .map_err(|e| self.fail(OP, e))
    }

    async fn get_agent_states(&self, query: &AgentStateQuery) -> Result<Vec<AgentState>> {
        const OP: &str = "get_agent_states";
        self.check_open(OP)?;
        self.select_agent_states(query)
            .await
            .map_err(|e| self.fail(OP, e))
    }

    async fn find_similar_alerts(&self, query: &SimilarAlertsQuery) -> Result<Vec<Scored<Alert>>> {
        const OP: &str = "find_similar_alerts";
        self.check_open(OP)?;
        self.similar_alerts(query)
            .await
            .map_err(|e| self.fail(OP, e))
    }

    async fn find_similar_agent_states(
        &self,
        query: &SimilarAgentStatesQuery,
    ) -> Result<Vec<Scored<AgentState>>> {
        const OP: &str = "find_similar_agent_states";
        self.check_open(OP)?;
        self.similar_agent_states(query)
            .await
            .map_err(|e| self.fail(OP, e))
    }

    async fn apply_retention(&self) -> Result<RetentionReport> {
        const OP: &str = "apply_retention";
        self.check_open(OP)?;
        crate::retention::apply(self)
            .await
            .map_err(|e| self.fail(OP, e))
    }

    async fn backup(&self, path: &Path, format: BackupFormat) -> Result<TransferReport> {
        const OP: &str = "backup";
        self.check_open(OP)?;
        match format {
            BackupFormat::Portable => {
                let exporter = crate::export::QdrantExporter(self);
                aimon_core::archive::write_with(self, &exporter, path).await
            }
            BackupFormat::Native => crate::backup::native_backup(self, path).await,
        }
        .map_err(|e| self.fail(OP, e))
    }

    async fn restore(&self, path: &Path, format: BackupFormat) -> Result<TransferReport> {
        const OP: &str = "restore";
        self.check_open(OP)?;
        match format {
            BackupFormat::Portable => aimon_core::archive::restore(self, path).await,
            BackupFormat::Native => crate::backup::native_restore(self, path).await,
        }
        .map_err(|e| self.fail(OP, e))
    }

    async fn stats(&self) -> Result<DatabaseStats> {
        const OP: &str = "stats";
        self.check_open(OP)?;
        self.database_stats().await.map_err(|e| self.fail(OP, e))
    }

    async fn subscribe(&self) -> Result<EventStream> {
        const OP: &str = "subscribe";
        self.check_open(OP)?;
        Ok(self.events.subscribe())
    }

    async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Waits for a write in progress, so it is flushed before the shards are released.
        let _writer = self.writer.lock().await;
        self.engine.close().await.map_err(|e| self.fail("close", e))
    }
}
