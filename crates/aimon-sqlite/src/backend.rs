//! [`SqliteBackend`]: the [`StorageBackend`] implementation.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use aimon_core::backend::{
    BackupFormat, Capabilities, DatabaseStats, EventStream, RetentionMechanism, RetentionReport,
    StorageBackend, TransferReport, WriteReport,
};
use aimon_core::query::{AgentStateQuery, AlertQuery, HistoryQuery, HistorySeries, MetricQuery};
use aimon_core::similarity::{
    Embedder, HashingEmbedder, Scored, SimilarAgentStatesQuery, SimilarAlertsQuery,
};
use aimon_core::{
    AgentState, Alert, Error, ErrorKind, Metric, Result, StorageBackendType, StorageConfig,
};
use async_trait::async_trait;
use sqlx::ConnectOptions;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::config::{SqliteConfig, SqliteLocation, Synchronous};
use crate::error::from_sqlx;

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
    closed: AtomicBool,
    /// Embeds items without their own embedding, and text targets, for similarity search.
    pub(crate) embedder: Arc<dyn Embedder>,
}

impl fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("config", &self.config)
            .field("closed", &self.closed.load(Ordering::Relaxed))
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
                .journal_mode(SqliteJournalMode::Wal),
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
        Ok(SqliteBackend {
            config,
            pool,
            started: Instant::now(),
            closed: AtomicBool::new(false),
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

    fn check_open(&self, operation: &'static str) -> Result<()> {
        if self.closed.load(Ordering::Acquire) || self.pool.is_closed() {
            Err(self.fail(
                operation,
                Error::new(ErrorKind::Unavailable, "the backend is closed"),
            ))
        } else {
            Ok(())
        }
    }

    pub(crate) fn fail(&self, operation: &'static str, err: Error) -> Error {
        err.with_operation(operation)
            .with_backend(&self.config.name)
    }

    /// Runs one operation: checks the backend is open, traces it, and labels any error.
    async fn run<T>(
        &self,
        operation: &'static str,
        body: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.check_open(operation)?;
        tracing::debug!(backend = %self.config.name, operation, "sqlite operation");
        body.await.map_err(|e| {
            let e = self.fail(operation, e);
            tracing::debug!(backend = %self.config.name, operation, kind = %e.kind(), "sqlite operation failed");
            e
        })
    }

    pub(crate) fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

#[async_trait]
impl StorageBackend for SqliteBackend {
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
            retention: RetentionMechanism::Sweep,
        }
    }

    async fn save_metrics(&self, metrics: &[Metric]) -> Result<WriteReport> {
        self.run("save_metrics", self.write_metrics(metrics)).await
    }

    async fn get_metric(&self, id: &str) -> Result<Option<Metric>> {
        self.run("get_metric", self.read_metric(id)).await
    }

    async fn query_metrics(&self, query: &MetricQuery) -> Result<Vec<Metric>> {
        self.run("query_metrics", self.select_metrics(query)).await
    }

    async fn metric_history(&self, query: &HistoryQuery) -> Result<Vec<HistorySeries>> {
        self.run("metric_history", self.history(query)).await
    }

    async fn save_alerts(&self, alerts: &[Alert]) -> Result<WriteReport> {
        self.run("save_alerts", self.write_alerts(alerts)).await
    }

    async fn get_alert(&self, id: &str) -> Result<Option<Alert>> {
        self.run("get_alert", self.read_alert(id)).await
    }

    async fn query_alerts(&self, query: &AlertQuery) -> Result<Vec<Alert>> {
        self.run("query_alerts", self.select_alerts(query)).await
    }

    async fn save_agent_states(&self, states: &[AgentState]) -> Result<WriteReport> {
        self.run("save_agent_states", self.write_agent_states(states))
            .await
    }

    async fn get_agent_state(&self, agent_id: &str) -> Result<Option<AgentState>> {
        self.run("get_agent_state", self.read_agent_state(agent_id))
            .await
    }

    async fn get_agent_states(&self, query: &AgentStateQuery) -> Result<Vec<AgentState>> {
        self.run("get_agent_states", self.select_agent_states(query))
            .await
    }

    async fn find_similar_alerts(&self, query: &SimilarAlertsQuery) -> Result<Vec<Scored<Alert>>> {
        self.run("find_similar_alerts", self.similar_alerts(query))
            .await
    }

    async fn find_similar_agent_states(
        &self,
        query: &SimilarAgentStatesQuery,
    ) -> Result<Vec<Scored<AgentState>>> {
        self.run(
            "find_similar_agent_states",
            self.similar_agent_states(query),
        )
        .await
    }

    async fn apply_retention(&self) -> Result<RetentionReport> {
        self.run("apply_retention", self.sweep()).await
    }

    async fn backup(&self, path: &Path, format: BackupFormat) -> Result<TransferReport> {
        self.run("backup", async {
            match format {
                BackupFormat::Portable => aimon_core::archive::write(self, path).await,
                BackupFormat::Native => self.native_backup(path).await,
            }
        })
        .await
    }

    async fn restore(&self, path: &Path, format: BackupFormat) -> Result<TransferReport> {
        self.run("restore", async {
            match format {
                BackupFormat::Portable => aimon_core::archive::restore(self, path).await,
                BackupFormat::Native => self.native_restore(path).await,
            }
        })
        .await
    }

    async fn stats(&self) -> Result<DatabaseStats> {
        self.run("stats", self.database_stats()).await
    }

    async fn subscribe(&self) -> Result<EventStream> {
        self.check_open("subscribe")?;
        Err(self.fail("subscribe", Error::unsupported("live updates (subscribe)")))
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        tracing::debug!(backend = %self.config.name, "closing the sqlite pool");
        self.pool.close().await;
        Ok(())
    }
}
