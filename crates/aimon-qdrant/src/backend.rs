//! [`QdrantBackend`]: the [`StorageBackend`] implementation over an [`Engine`].

use aimon_core::archive::Exporter;
use aimon_core::driver::Driver;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use aimon_core::backend::{
    Capabilities, DatabaseStats, EventStream, LocalEvents, RetentionMechanism, RetentionReport,
    StorageBackend, StorageEvent, TransferReport,
};
use aimon_core::similarity::{Embedder, HashingEmbedder};
use aimon_core::{Error, Result, RetentionPolicy, StorageBackendType, StorageConfig};
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
}

impl fmt::Debug for QdrantBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QdrantBackend")
            .field("config", &self.config)
            .field("embedder", &self.embedder.name())
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
        })
    }

    /// Sends an event of a write that succeeded to this process's subscribers.
    pub(crate) fn publish(&self, event: StorageEvent) {
        self.events.publish(event);
    }

    pub(crate) fn retention(&self) -> &RetentionPolicy {
        &self.config.retention
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
impl Driver for QdrantBackend {
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

    async fn apply_retention(&self) -> Result<RetentionReport> {
        crate::retention::apply(self).await
    }

    fn exporter(&self) -> Option<Box<dyn Exporter + '_>> {
        Some(Box::new(crate::export::QdrantExporter(self)))
    }

    async fn backup_native(&self, _: &dyn StorageBackend, path: &Path) -> Result<TransferReport> {
        crate::backup::native_backup(self, path).await
    }

    async fn restore_native(&self, _: &dyn StorageBackend, path: &Path) -> Result<TransferReport> {
        crate::backup::native_restore(self, path).await
    }

    async fn stats(&self) -> Result<DatabaseStats> {
        self.database_stats().await
    }

    async fn subscribe(&self) -> Result<EventStream> {
        Ok(self.events.subscribe())
    }

    async fn close(&self) -> Result<()> {
        // Waits for a write in progress, so it is flushed before the shards are released.
        let _writer = self.writer.lock().await;
        self.engine.close().await
    }
}
