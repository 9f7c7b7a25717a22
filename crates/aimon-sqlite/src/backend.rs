//! [`SqliteBackend`]: the [`StorageBackend`] implementation.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use aimon_core::backend::{
    Capabilities, DatabaseStats, RetentionMechanism, RetentionReport, StorageBackend,
    TransferReport,
};
use aimon_core::driver::Driver;
use aimon_core::similarity::{Embedder, HashingEmbedder};
use aimon_core::{Error, ErrorKind, Result, StorageBackendType, StorageConfig};
use async_trait::async_trait;
use sqlx::ConnectOptions;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::config::{SqliteConfig, SqliteLocation, Synchronous};
use crate::error::from_sqlx;

/// The page size of a new database file, in bytes.
pub(crate) const PAGE_SIZE: u32 = 8192;

/// The embedded migrations in `migrations/`.
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// A SQLite database behind the [`StorageBackend`] trait.
///
/// Open it with [`SqliteBackend::connect`] (from a [`StorageConfig`]) or
/// [`SqliteBackend::open`] (from a [`SqliteConfig`]). The database file and its schema are
/// created on first use.
pub struct SqliteBackend {
    pub(crate) config: SqliteConfig,
    pub(crate) pool: SqlitePool,
    started: Instant,
    /// Embeds items without their own embedding, and text targets, for similarity search.
    pub(crate) embedder: Arc<dyn Embedder>,
}

impl fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Extension for sqlx results: wraps the error as an aimon error.
pub(crate) trait DbResult<T> {
    fn db(self) -> Result<T>;
}

impl<T> DbResult<T> for std::result::Result<T, sqlx::Error> {
    fn db(self) -> Result<T> {
        self.map_err(from_sqlx)
    }
}

impl SqliteBackend {
    /// Opens the database a `sqlite` [`StorageConfig`] describes (see [`crate::config`] for
    /// the URL forms and options), creating it and its schema if needed.
    pub async fn connect(config: &StorageConfig) -> Result<SqliteBackend> {
        let parsed = SqliteConfig::from_storage_config(config)
            .map_err(|e| e.with_operation("connect").with_backend(&config.name))?;
        Self::open(parsed).await
    }

    /// Opens the database `config` describes, creating it and its schema if needed.
    pub async fn open(config: SqliteConfig) -> Result<SqliteBackend> {
        let name = config.name.clone();
        let fail = |e: Error| e.with_operation("connect").with_backend(&name);
        let base = match &config.location {
            // A uniquely named shared-cache memory database, kept alive by the pool's one
            // connection, which never idles out.
            SqliteLocation::Memory => SqliteConnectOptions::from_str("sqlite::memory:")
                .db()
                .map_err(fail)?,
            SqliteLocation::File(path) => SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // For a new file only (the page size of an existing WAL database is fixed):
                // chunk rows of a few KB pack with less waste in 8 KB pages (crate docs).
                .page_size(PAGE_SIZE),
        };
        let options = base
            .busy_timeout(config.busy_timeout)
            .synchronous(match config.synchronous {
                Synchronous::Off => SqliteSynchronous::Off,
                Synchronous::Normal => SqliteSynchronous::Normal,
                Synchronous::Full => SqliteSynchronous::Full,
                Synchronous::Extra => SqliteSynchronous::Extra,
            })
            .foreign_keys(false)
            // Long scans are expected (history over millions of samples); sqlx's warning would
            // print whole SQL statements on a CLI's stderr.
            .log_slow_statements(log::LevelFilter::Debug, std::time::Duration::from_secs(1));
        let mut pool_options = SqlitePoolOptions::new().max_connections(config.max_connections);
        if config.location == SqliteLocation::Memory {
            pool_options = pool_options
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        tracing::debug!(backend = %name, "opening the sqlite database");
        let pool = pool_options.connect_with(options).await.map_err(|e| {
            let location = config.location.to_string();
            fail(from_sqlx(e)).with_context("database", location)
        })?;
        MIGRATOR.run(&pool).await.map_err(|e| {
            fail(
                Error::new(ErrorKind::Backend, "cannot migrate the database schema").with_source(e),
            )
        })?;
        crate::chunks::migrate_legacy_samples(&pool)
            .await
            .map_err(fail)?;
        Ok(SqliteBackend {
            config,
            pool,
            started: Instant::now(),
            embedder: Arc::new(HashingEmbedder::default()),
        })
    }

    /// Uses `embedder` for similarity search instead of the default [`HashingEmbedder`].
    pub fn with_embedder(mut self, embedder: Arc<dyn Embedder>) -> Self {
        self.embedder = embedder;
        self
    }

    /// The settings this backend was opened with.
    pub fn config(&self) -> &SqliteConfig {
        &self.config
    }

    /// The connection pool, for tools that need SQL access (benchmarks, inspection).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(crate) fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

#[async_trait]
impl Driver for SqliteBackend {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn backend_type(&self) -> StorageBackendType {
        StorageBackendType::Sqlite
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            server_side_downsampling: true,
            pub_sub: false,
            cross_process_events: false,
            native_backup: true,
            similarity_search: true,
            agent_state_history: false,
            // Samples go by whole chunks (`chunks::drop_expired`).
            retention: RetentionMechanism::PartitionDrop,
        }
    }

    async fn apply_retention(&self) -> Result<RetentionReport> {
        self.sweep().await
    }

    async fn backup_native(&self, _: &dyn StorageBackend, path: &Path) -> Result<TransferReport> {
        self.native_backup(path).await
    }

    async fn restore_native(&self, _: &dyn StorageBackend, path: &Path) -> Result<TransferReport> {
        self.native_restore(path).await
    }

    async fn stats(&self) -> Result<DatabaseStats> {
        self.database_stats().await
    }

    async fn close(&self) -> Result<()> {
        tracing::debug!(backend = %self.config.name, "closing the sqlite pool");
        self.pool.close().await;
        Ok(())
    }
}
