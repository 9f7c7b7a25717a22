//! [`PostgresBackend`]: the [`StorageBackend`] implementation.

use aimon_core::driver::Driver;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Mutex;

use aimon_core::backend::{
    Capabilities, DatabaseStats, EventStream, RetentionMechanism, RetentionReport, StorageBackend,
    TransferReport,
};
use aimon_core::{Error, ErrorKind, Result, StorageBackendType, StorageConfig};
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
    /// Row versions this process's writes left dead since its last vacuum (native mode).
    pub(crate) rewritten: std::sync::atomic::AtomicU64,
    /// `metric_history` calls answered by the one-statement path (native mode).
    pub(crate) one_statement_histories: std::sync::atomic::AtomicU64,
    /// One-statement histories of sums that ran again with `sum(abs(…))` (`metrics::summed`).
    pub(crate) absolute_sum_reruns: std::sync::atomic::AtomicU64,
    /// Connections for the one-statement history, whose planner hashes rather than sorts
    /// (`enable_sort = off`; see `metrics::summed`). Opened on first use.
    pub(crate) hashing_pool: PgPool,
}

impl fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("config", &self.config)
            .field("timescale", &self.timescale)
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
        let hashing_path = search_path.clone();
        let hashing_pool = PgPoolOptions::new()
            .max_connections(config.max_connections.min(2))
            .after_connect(move |conn, _meta| {
                let statement = format!("{hashing_path}; SET enable_sort = off");
                Box::pin(async move {
                    // Audited: a checked identifier, quoted, and a constant.
                    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            })
            .connect_lazy_with(options.clone());
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
            rewritten: std::sync::atomic::AtomicU64::new(0),
            one_statement_histories: std::sync::atomic::AtomicU64::new(0),
            absolute_sum_reruns: std::sync::atomic::AtomicU64::new(0),
            hashing_pool,
        };
        backend.reload_partitions().await.map_err(&fail)?;
        backend.create_partitions_ahead().await.map_err(&fail)?;
        backend.migrate_legacy_samples().await.map_err(&fail)?;
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

    /// How many `metric_history` calls of this backend the one-statement path answered (the
    /// crate docs, "History"), for tests and benchmarks that must know which path ran.
    pub fn one_statement_histories(&self) -> u64 {
        self.one_statement_histories
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many one-statement histories of sums or averages ran their statement again with
    /// the error bounds' `sum(abs(…))`, because a window in range has a negative value
    /// (`metrics/summed.rs`), for tests that must know which pass answered.
    pub fn absolute_sum_reruns(&self) -> u64 {
        self.absolute_sum_reruns
            .load(std::sync::atomic::Ordering::Relaxed)
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
        self.ensure_partitions(&times)
            .await
            .map_err(|e| self.labelled("prepare_partitions", e))
    }

    /// Every series id with the internal key (`series.sid`) its samples carry, for bulk loaders
    /// outside aimon (the `aimon bench --compare-psql` baseline). Such a loader must also add
    /// a `series_tagsets` row per (series, tag set) it writes: tag filters and `group_by` find
    /// samples through those rows, so samples without one are invisible to them.
    pub async fn series_keys(&self) -> Result<Vec<(String, i64)>> {
        sqlx::query_as("SELECT id, sid FROM series ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .db()
            .map_err(|e| self.labelled("series_keys", e))
    }

    /// Registers tag sets, each a series id and its tags' canonical JSON
    /// ([`aimon_core::model::tags_json`]), and returns their numbers (`series_tagsets.tsid`),
    /// the key head rows carry in the native mode: for bulk loaders outside aimon, which then
    /// `COPY` rows of the open window into [`PostgresBackend::samples_copy_target`] (the `aimon
    /// bench --compare-psql` baseline). The series must exist. Public API for such loaders.
    pub async fn register_tagsets(&self, tagsets: &[(String, String)]) -> Result<Vec<i64>> {
        let ids: Vec<&str> = tagsets.iter().map(|t| t.0.as_str()).collect();
        let tags: Vec<&str> = tagsets.iter().map(|t| t.1.as_str()).collect();
        let rows: Vec<(i32, i64)> = sqlx::query_as(
            "WITH u AS (SELECT u.n::int AS n, s.sid, u.tags FROM UNNEST($1::text[], $2::text[]) \
             WITH ORDINALITY AS u(id, tags, n) JOIN series s ON s.id = u.id), \
             ins AS (INSERT INTO series_tagsets (sid, tags, tags_jsonb, last_bound) \
             SELECT u.sid, u.tags, u.tags::jsonb, 'infinity' FROM u ORDER BY 1, 2 \
             ON CONFLICT (sid, tags_key) DO UPDATE SET last_bound = 'infinity' \
             RETURNING sid, tags, tsid) \
             SELECT u.n, ins.tsid FROM u JOIN ins ON ins.sid = u.sid AND ins.tags = u.tags \
             ORDER BY u.n",
        )
        .bind(&ids)
        .bind(&tags)
        .fetch_all(&self.pool)
        .await
        .db()
        .map_err(|e| self.labelled("register_tagsets", e))?;
        if rows.len() != tagsets.len() {
            return Err(self.labelled(
                "register_tagsets",
                Error::new(ErrorKind::NotFound, "a tag set's series does not exist"),
            ));
        }
        Ok(rows.into_iter().map(|r| r.1).collect())
    }

    /// Labels an error of one of this driver's own tool methods (calls through the contract
    /// are labelled by it).
    fn labelled(&self, operation: &'static str, err: Error) -> Error {
        err.with_operation(operation)
            .with_backend(&self.config.name)
    }

    /// The target of a bulk load of samples from outside aimon, for `COPY … FROM` or
    /// `psql \copy`: `"<schema>".samples (sid, time, tags, value)`, the schema quoted, the
    /// columns those of the driver's own `COPY`. A row is a series key of
    /// [`PostgresBackend::series_keys`] (whose docs say which other rows tag filters need),
    /// the time (`timestamptz`), the tags' canonical JSON ([`aimon_core::model::tags_json`])
    /// and the value; the partitions must exist first
    /// ([`PostgresBackend::prepare_partitions`]). Public API for such loaders, as the
    /// `aimon bench --compare-psql` baseline.
    ///
    /// In the native mode the target is the head of the open window, `"<schema>".samples
    /// (tsid, time, value)`: a row is a tag set's number of
    /// [`PostgresBackend::register_tagsets`], the time (in the open window: older windows are
    /// chunks, which only aimon writes) and the value.
    pub fn samples_copy_target(&self) -> String {
        if self.timescale {
            format!(
                "{}.samples (sid, time, tags, value)",
                self.config.quoted_schema()
            )
        } else {
            format!(
                "{}.samples (tsid, time, value)",
                self.config.quoted_schema()
            )
        }
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
        .map_err(|e| self.labelled("drop_schema", e))?;
        self.close().await
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
impl Driver for PostgresBackend {
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

    async fn subscribe(&self) -> Result<EventStream> {
        self.open_subscription().await
    }

    async fn close(&self) -> Result<()> {
        tracing::debug!(backend = %self.config.name, "closing the postgres pool");
        self.pool.close().await;
        Ok(())
    }
}
