//! [`PostgresBackend`]: the [`StorageBackend`] implementation.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use aimon_core::backend::{
    BackupFormat, Capabilities, DatabaseStats, EventStream, RetentionMechanism, RetentionReport,
    StorageBackend, TransferReport, WriteReport,
};
use aimon_core::query::{AgentStateQuery, AlertQuery, HistoryQuery, HistorySeries, MetricQuery};
use aimon_core::{
    AgentState, Alert, Error, ErrorKind, Metric, Result, StorageBackendType, StorageConfig,
};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};

use crate::config::PostgresConfig;
use crate::error::from_sqlx;
use crate::schema;

/// A PostgreSQL schema behind the [`StorageBackend`] trait.
///
/// Open it with [`PostgresBackend::connect`] (from a [`StorageConfig`]) or
/// [`PostgresBackend::open`] (from a [`PostgresConfig`]). The schema, its tables and the
/// current partitions are created on first use.
pub struct PostgresBackend {
    pub(crate) config: PostgresConfig,
    pub(crate) pool: PgPool,
    /// Whether samples live in a TimescaleDB hypertable (else native partitions).
    pub(crate) timescale: bool,
    /// `[start, end)` in microseconds of the known sample partitions, sorted.
    pub(crate) partitions: Mutex<Vec<(i64, i64)>>,
    /// How many partitions one transaction may lock (from `max_locks_per_transaction`).
    pub(crate) lock_budget: schema::LockBudget,
    /// The channel `NOTIFY` carries this store's events on.
    pub(crate) channel: String,
    closed: AtomicBool,
}

impl fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("config", &self.config)
            .field("timescale", &self.timescale)
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

impl PostgresBackend {
    /// Opens the store a `postgres` or `timescale` [`StorageConfig`] describes (see
    /// [`crate::config`] for the URL forms and options), creating its schema if needed.
    pub async fn connect(config: &StorageConfig) -> Result<PostgresBackend> {
        let parsed = PostgresConfig::from_storage_config(config)
            .map_err(|e| e.with_operation("connect").with_backend(&config.name))?;
        Self::open(parsed).await
    }

    /// Opens the store `config` describes, creating its schema if needed.
    pub async fn open(config: PostgresConfig) -> Result<PostgresBackend> {
        let name = config.name.clone();
        let display = config.display_url.clone();
        let fail = move |e: Error| {
            e.with_operation("connect")
                .with_backend(&name)
                .with_context("url", &display)
        };
        let options = connect_options(&config).map_err(&fail)?;
        // TimescaleDB's functions (create_hypertable, time_bucket, the policies) live where the
        // extension was created: `public`, as the driver creates it (see schema::migrate).
        let search_path = if config.timescale() {
            format!("SET search_path TO {}, public", config.quoted_schema())
        } else {
            format!("SET search_path TO {}", config.quoted_schema())
        };
        tracing::debug!(backend = %config.name, url = %config.display_url, schema = %config.schema, "opening the postgres pool");
        // One direct connection first: an unreachable server fails at once (`Unavailable`)
        // rather than after the pool's acquire timeout, and the schema is migrated on it.
        let (timescale, lock_budget) = {
            let mut conn = PgConnection::connect_with(&options)
                .await
                .map_err(|e| fail(from_sqlx(e)))?;
            // Audited: a checked identifier, quoted.
            sqlx::raw_sql(sqlx::AssertSqlSafe(search_path.clone()))
                .execute(&mut conn)
                .await
                .map_err(|e| fail(from_sqlx(e)))?;
            let migrated = schema::migrate(&mut conn, &config).await.map_err(&fail)?;
            let budget = schema::LockBudget::of_server(&mut conn)
                .await
                .map_err(&fail)?;
            let _ = conn.close().await;
            (migrated, budget)
        };
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .after_connect(move |conn, _meta| {
                let statement = search_path.clone();
                Box::pin(async move {
                    // Audited: a checked identifier, quoted.
                    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| fail(from_sqlx(e)))?;
        let channel = events_channel(&config.schema);
        let backend = PostgresBackend {
            config,
            pool,
            timescale,
            partitions: Mutex::new(Vec::new()),
            lock_budget,
            channel,
            closed: AtomicBool::new(false),
        };
        backend.reload_partitions().await.map_err(&fail)?;
        backend.create_partitions_ahead().await.map_err(&fail)?;
        Ok(backend)
    }

    /// The settings this backend was opened with.
    pub fn config(&self) -> &PostgresConfig {
        &self.config
    }

    /// The connection pool (its connections' search path is the store's schema), for tools
    /// that need SQL access: benchmarks, inspection, tests.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether samples live in a TimescaleDB hypertable rather than native partitions.
    pub fn is_timescale(&self) -> bool {
        self.timescale
    }

    /// Creates the sample partitions that `[start, end]` needs (native mode; a no-op on
    /// TimescaleDB), so that a bulk load from outside aimon (`psql \copy`) finds them. Public
    /// API for such loaders, as the `aimon bench --compare-psql` baseline.
    pub async fn prepare_partitions(
        &self,
        start: chrono::DateTime<chrono::Utc>,
        end: chrono::DateTime<chrono::Utc>,
    ) -> Result<()> {
        let interval = self.config.partition_micros();
        let (start, end) = (
            aimon_core::time::to_micros(start),
            aimon_core::time::to_micros(end),
        );
        let mut times = std::collections::BTreeSet::new();
        let mut t = start;
        while t <= end {
            times.insert(t);
            t = t.saturating_add(interval);
        }
        times.insert(end);
        self.run("prepare_partitions", self.ensure_partitions(&times))
            .await
    }

    /// Every series id with the internal key (`series.sid`) its samples carry, for bulk loaders
    /// outside aimon (the `aimon bench --compare-psql` baseline). Such a loader must also add
    /// a `series_tagsets` row per (series, tag set) it writes: tag filters and `group_by` find
    /// samples through those rows, so samples without one are invisible to them.
    pub async fn series_keys(&self) -> Result<Vec<(String, i64)>> {
        self.run("series_keys", async {
            sqlx::query_as("SELECT id, sid FROM series ORDER BY id")
                .fetch_all(&self.pool)
                .await
                .db()
        })
        .await
    }

    /// The target of a bulk load of samples from outside aimon, for `COPY … FROM` or
    /// `psql \copy`: `"<schema>".samples (sid, time, tags, value)`, the schema quoted, the
    /// columns those of the driver's own `COPY`. A row is a series key of
    /// [`PostgresBackend::series_keys`] (whose docs say which other rows tag filters need),
    /// the time (`timestamptz`), the tags' canonical JSON ([`aimon_core::model::tags_json`])
    /// and the value; the partitions must exist first
    /// ([`PostgresBackend::prepare_partitions`]). Public API for such loaders, as the
    /// `aimon bench --compare-psql` baseline.
    pub fn samples_copy_target(&self) -> String {
        format!(
            "{}.samples (sid, time, tags, value)",
            self.config.quoted_schema()
        )
    }

    /// Drops this store's schema and everything in it. Public API for tests and tools that
    /// create throw-away stores (the `aimon bench --compare-psql` baseline); the backend is
    /// closed afterwards.
    pub async fn drop_schema(&self) -> Result<()> {
        // Audited: a checked identifier, quoted.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            self.config.quoted_schema()
        )))
        .execute(&self.pool)
        .await
        .db()
        .map_err(|e| self.fail("drop_schema", e))?;
        self.close().await
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
        tracing::debug!(backend = %self.config.name, operation, "postgres operation");
        body.await.map_err(|e| {
            let e = self.fail(operation, e);
            tracing::debug!(backend = %self.config.name, operation, kind = %e.kind(), "postgres operation failed");
            e
        })
    }
}

/// The driver's connection options: the URL (credentials, `sslmode`…) plus quiet statement
/// logging (sqlx would print every slow statement's SQL at `warn`).
fn connect_options(config: &PostgresConfig) -> Result<PgConnectOptions> {
    let options = PgConnectOptions::from_str(config.connect_url())
        .map_err(|e| Error::config("the PostgreSQL URL is not usable").with_source(e))?;
    // `aimon` names the sessions unless the URL's `application_name` already does.
    let options = match options.get_application_name() {
        Some(_) => options,
        None => options.application_name("aimon"),
    };
    Ok(options
        .log_statements(log::LevelFilter::Trace)
        .log_slow_statements(log::LevelFilter::Debug, std::time::Duration::from_secs(5)))
}

/// The `LISTEN`/`NOTIFY` channel of a schema: the schema name itself, unique in the database
/// and within PostgreSQL's 63-byte limit.
pub(crate) fn events_channel(schema: &str) -> String {
    schema.to_owned()
}

#[async_trait]
impl StorageBackend for PostgresBackend {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn backend_type(&self) -> StorageBackendType {
        self.config.backend_type
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            server_side_downsampling: true,
            pub_sub: true,
            cross_process_events: true,
            native_backup: crate::backup::native_available(),
            similarity_search: false,
            agent_state_history: false,
            retention: RetentionMechanism::PartitionDrop,
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
        self.run("subscribe", self.open_subscription()).await
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        tracing::debug!(backend = %self.config.name, "closing the postgres pool");
        self.pool.close().await;
        Ok(())
    }
}
