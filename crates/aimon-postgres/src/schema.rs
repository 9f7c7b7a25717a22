//! The schema: embedded, versioned migrations run inside the configured schema, the samples
//! table in the mode of the store (native range partitions or a TimescaleDB hypertable), and
//! the partitions themselves.
//!
//! Migrations are aimon's own rather than sqlx's migrator: sqlx keeps its `_sqlx_migrations`
//! table wherever the search path points and cannot be told a schema, so two aimon schemas in
//! one database would share (and fight over) one history. Here each schema has its own
//! `schema_migrations` table, and an advisory lock keyed by the schema serializes processes
//! that open the same schema at once.

use std::collections::BTreeSet;

use aimon_core::{Error, ErrorKind, Result, time};
use chrono::SecondsFormat;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Row};

use crate::backend::{DbResult, PostgresBackend};
use crate::config::PostgresConfig;
use crate::timescale;

/// One embedded migration: version, description, SQL.
pub(crate) struct Migration {
    pub version: i64,
    pub description: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order. The SQL runs with the search path set to the store's schema.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "series, sample partitions, alerts, agent states",
        sql: include_str!("../migrations/0001_schema.sql"),
    },
    Migration {
        version: 2,
        description: "an inlinable tags_key",
        sql: include_str!("../migrations/0002_inline_tags_key.sql"),
    },
    Migration {
        version: 3,
        description: "embeddings of alerts and agent states",
        sql: include_str!("../migrations/0003_embeddings.sql"),
    },
    Migration {
        version: 4,
        description: "samples as chunks, tag sets numbered",
        sql: include_str!("../migrations/0004_chunks.sql"),
    },
    Migration {
        version: 5,
        description: "an index of the chunks history cannot aggregate as they stand",
        sql: include_str!("../migrations/0005_chunks_irregular.sql"),
    },
];

/// The head of the native mode: the samples of open windows, one slim row each (the tag set's
/// number, not its text), declaratively partitioned by range on `time`. The primary key is the
/// sample key of DESIGN.md rule 1 (a tag set belongs to one series) and serves reads by tag
/// set and time range.
pub(crate) const NATIVE_SAMPLES: &str = "CREATE TABLE samples (\
     tsid bigint NOT NULL, \
     time timestamptz NOT NULL, \
     value float8 NOT NULL, \
     CONSTRAINT samples_head_pkey PRIMARY KEY (tsid, time)) PARTITION BY RANGE (time)";

/// The chunks of the native mode: one row per closed window of a tag set (or a few fragments,
/// `seq` 1, 2, … overwriting `seq` 0), partitioned by range on the window's start like the
/// head. The summary columns (`aimon_core::chunk::Summary`; `check` is its CRC-32) answer
/// history over whole windows; `data` is `aimon_core::chunk::encode`'s bytes. Eight-byte
/// columns first: no alignment padding.
pub(crate) const NATIVE_CHUNKS: &str = "CREATE TABLE chunks (\
     tsid bigint NOT NULL, \
     window_start timestamptz NOT NULL, \
     first_time timestamptz NOT NULL, \
     last_time timestamptz NOT NULL, \
     sum float8 NOT NULL, \
     sum_comp float8 NOT NULL, \
     min float8 NOT NULL, \
     max float8 NOT NULL, \
     first float8 NOT NULL, \
     last float8 NOT NULL, \
     count integer NOT NULL, \
     \"check\" integer NOT NULL, \
     seq smallint NOT NULL, \
     sum_scaled boolean NOT NULL, \
     data bytea NOT NULL, \
     CONSTRAINT chunks_pkey PRIMARY KEY (tsid, window_start, seq)) \
     PARTITION BY RANGE (window_start)";

/// The chunks whose summary the server may not aggregate as it stands: fragments (`seq` above
/// 0), sums scaled against overflow, and windows with a negative value, whose float sums may
/// cancel (their error bound needs `sum(abs(sum))`). They are rare, so the index is small,
/// and the one-statement history (`metrics::summed`) asks it whether its range has any rather
/// than aggregating a flag over every chunk. Also created by migration 5 on older stores.
pub(crate) const CHUNKS_IRREGULAR_INDEX: &str = "CREATE INDEX IF NOT EXISTS chunks_irregular \
     ON chunks (tsid, window_start) WHERE seq > 0 OR sum_scaled OR min < 0";

/// The samples table of the TimescaleDB mode, before `create_hypertable`.
pub(crate) const PLAIN_SAMPLES: &str = "CREATE TABLE samples (\
     sid bigint NOT NULL, \
     time timestamptz NOT NULL, \
     tags text COLLATE \"C\" NOT NULL, \
     value float8 NOT NULL, \
     tags_key bytea NOT NULL GENERATED ALWAYS AS (tags_key(tags)) STORED, \
     PRIMARY KEY (sid, time, tags_key))";

/// The advisory-lock key of a schema's DDL (migrations, partitions): one key per schema.
pub(crate) fn lock_key(schema: &str) -> String {
    format!("aimon.ddl.{schema}")
}

/// Takes the transaction-scoped advisory lock named `key` (hashed): the DDL of one schema
/// ([`lock_key`]), or the extension's creation, one session at a time until the commit.
pub(crate) async fn advisory_xact_lock(tx: &mut PgConnection, key: &str) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(key)
        .execute(tx)
        .await
        .map(drop)
}

/// A partition's name: `samples_p` and its start, `YYYYMMDD_HHMMSS` in UTC.
pub(crate) fn partition_name(start_micros: i64) -> String {
    format!(
        "samples_p{}",
        time::from_micros(start_micros).format("%Y%m%d_%H%M%S")
    )
}

/// A timestamp as a SQL literal, for partition bounds (DDL takes no parameters). Built from an
/// integer, never from user text.
pub(crate) fn time_literal(micros: i64) -> String {
    format!(
        "'{}'",
        time::from_micros(micros).to_rfc3339_opts(SecondsFormat::Micros, true)
    )
}

/// The `CREATE TABLE … PARTITION OF` statements of one partition: `name` (`samples_p…`) of
/// the head, and the chunks' partition of the same range ([`chunks_partition_name`]).
pub(crate) fn create_partition_sql(name: &str, start: i64, end: i64) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS \"{name}\" PARTITION OF samples FOR VALUES FROM ({from}) TO ({to}); \
         CREATE TABLE IF NOT EXISTS \"{chunks}\" PARTITION OF chunks FOR VALUES FROM ({from}) TO ({to})",
        chunks = chunks_partition_name(name),
        from = time_literal(start),
        to = time_literal(end)
    )
}

/// The chunks' partition paired with the head's partition `name`: `chunks_p…`.
pub(crate) fn chunks_partition_name(name: &str) -> String {
    format!("chunks_{}", name.strip_prefix("samples_").unwrap_or(name))
}

/// The range `[start, end)` of a new partition holding `ts`: the interval-aligned slot, clipped
/// so it never overlaps `existing` partitions (which may come from another interval setting).
pub(crate) fn new_partition_range(ts: i64, interval: i64, existing: &[(i64, i64)]) -> (i64, i64) {
    let mut start = ts - ts.rem_euclid(interval);
    let mut end = start.saturating_add(interval);
    for &(s, e) in existing {
        if e <= ts && e > start {
            start = e;
        }
        if s > ts && s < end {
            end = s;
        }
    }
    (start, end)
}

/// Whether `ts` lies in one of `ranges` (sorted by start).
pub(crate) fn covered(ranges: &[(i64, i64)], ts: i64) -> bool {
    let i = ranges.partition_point(|&(s, _)| s <= ts);
    i > 0 && ranges[i - 1].1 > ts
}

/// Runs the migrations and creates the samples table of the store's mode.
pub(crate) async fn migrate(conn: &mut PgConnection, config: &PostgresConfig) -> Result<bool> {
    sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
        .bind(lock_key(&config.schema))
        .execute(&mut *conn)
        .await
        .db()?;
    let result = migrate_locked(conn, config).await;
    let unlock = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
        .bind(lock_key(&config.schema))
        .execute(&mut *conn)
        .await
        .db();
    let timescale = result?;
    unlock?;
    Ok(timescale)
}

async fn migrate_locked(conn: &mut PgConnection, config: &PostgresConfig) -> Result<bool> {
    // TimescaleDB first: a `timescale://` store the server cannot hold creates nothing.
    let extension = timescale::installed_version(conn).await?;
    if config.timescale() && extension.is_none() {
        let available = timescale::available(conn).await?;
        if !available {
            return Err(Error::config(
                "timescale:// needs the timescaledb extension, which this server does not have \
                 (pg_available_extensions); use postgres:// for native partitioning",
            ));
        }
        timescale::create_extension(conn)
            .await
            .map_err(|e| Error::config("cannot create the timescaledb extension").with_source(e))?;
    }

    let schema = config.quoted_schema();
    // Audited: the schema is a checked identifier, quoted.
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE SCHEMA IF NOT EXISTS {schema}"
    )))
    .execute(&mut *conn)
    .await
    .db()?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (\
         version bigint PRIMARY KEY, description text NOT NULL, \
         applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&mut *conn)
    .await
    .db()?;
    let applied: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM schema_migrations")
        .fetch_one(&mut *conn)
        .await
        .db()?;
    let applied = applied.unwrap_or(0);
    let newest = MIGRATIONS.last().map_or(0, |m| m.version);
    if applied > newest {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "schema {} is at version {applied}, newer than this aimon knows ({newest})",
                config.schema
            ),
        ));
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > applied) {
        let mut tx = conn.begin().await.db()?;
        sqlx::raw_sql(migration.sql).execute(&mut *tx).await.db()?;
        sqlx::query("INSERT INTO schema_migrations (version, description) VALUES ($1, $2)")
            .bind(migration.version)
            .bind(migration.description)
            .execute(&mut *tx)
            .await
            .db()?;
        tx.commit().await.db()?;
        tracing::info!(backend = %config.name, schema = %config.schema, version = migration.version, "applied migration");
    }

    let samples_kind: Option<String> = sqlx::query_scalar(
        "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = 'samples'",
    )
    .bind(&config.schema)
    .fetch_optional(&mut *conn)
    .await
    .db()?;
    match (samples_kind.as_deref(), config.timescale()) {
        (None, false) => {
            let mut tx = conn.begin().await.db()?;
            sqlx::raw_sql(NATIVE_SAMPLES).execute(&mut *tx).await.db()?;
            sqlx::raw_sql(NATIVE_CHUNKS).execute(&mut *tx).await.db()?;
            sqlx::raw_sql(CHUNKS_IRREGULAR_INDEX)
                .execute(&mut *tx)
                .await
                .db()?;
            tx.commit().await.db()?;
            Ok(false)
        }
        (None, true) => {
            let mut tx = conn.begin().await.db()?;
            sqlx::raw_sql(PLAIN_SAMPLES).execute(&mut *tx).await.db()?;
            for statement in timescale::setup_statements(config) {
                sqlx::raw_sql(AssertSqlSafe(statement))
                    .execute(&mut *tx)
                    .await
                    .db()?;
            }
            tx.commit().await.db()?;
            Ok(true)
        }
        (Some("p"), false) => Ok(false),
        (Some("p"), true) => Err(Error::config(format!(
            "schema {} holds a natively partitioned store; open it with postgres://, not timescale://",
            config.schema
        ))),
        (Some(_), _) => {
            // A plain table: a hypertable (its chunks are TimescaleDB's).
            if !config.timescale() && extension.is_none() {
                return Err(Error::corrupted(format!(
                    "schema {} has a samples table that is neither partitioned nor a hypertable",
                    config.schema
                )));
            }
            timescale::update_policies(conn, config).await?;
            Ok(true)
        }
    }
}

/// How many partitions one transaction may lock, derived from the server's
/// `max_locks_per_transaction`.
///
/// PostgreSQL's lock table holds `max_locks_per_transaction × (max_connections + …)` locks
/// shared by every session; a transaction that touches more relations than its share can fill
/// it, and then it and every other session asking for a lock fail with `out of shared memory`.
/// A transaction that keeps to that average can never do so, however many run at once. The
/// locks counted (`pg_locks`, PostgreSQL 15): creating a partition takes about eight until
/// commit (the table and its TOAST table in two modes each, the TOAST index, the primary key,
/// catalog objects); writing rows into a partition takes one or two (the table, its index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LockBudget {
    /// Partitions created per DDL transaction.
    pub(crate) partitions_per_ddl: usize,
    /// Partitions one write transaction inserts into.
    pub(crate) partitions_per_write: usize,
}

impl LockBudget {
    /// The budget of a server whose `max_locks_per_transaction` is `max_locks`: an eighth of
    /// it for a write's partitions (a partition of the native mode is two tables, the head's
    /// with its primary key and the chunks' with its primary key and `chunks_irregular`: five
    /// locks; the rest is the series and tag-set tables, their indexes and the parent tables),
    /// a thirty-second for a DDL transaction's, at least one each.
    pub(crate) fn for_max_locks(max_locks: i64) -> LockBudget {
        let max_locks = usize::try_from(max_locks).unwrap_or(0);
        LockBudget {
            partitions_per_ddl: (max_locks / 32).max(1),
            partitions_per_write: (max_locks / 8).max(1),
        }
    }

    /// Reads `max_locks_per_transaction` from the server.
    pub(crate) async fn of_server(conn: &mut PgConnection) -> Result<LockBudget> {
        let max_locks: i64 =
            sqlx::query_scalar("SELECT current_setting('max_locks_per_transaction')::bigint")
                .fetch_one(conn)
                .await
                .db()?;
        Ok(LockBudget::for_max_locks(max_locks))
    }
}

impl Default for LockBudget {
    /// The budget of PostgreSQL's default `max_locks_per_transaction`, 64.
    fn default() -> Self {
        LockBudget::for_max_locks(64)
    }
}

/// The start of the `interval`-aligned slot holding `ts`.
fn slot_start(ts: i64, interval: i64) -> i64 {
    ts - ts.rem_euclid(interval)
}

impl PostgresBackend {
    /// Makes sure a partition covers every timestamp in `times` (microseconds), creating the
    /// missing ones. Native mode only; a no-op when the cache already covers them all.
    ///
    /// The partitions are created a few per transaction ([`LockBudget::partitions_per_ddl`]),
    /// each transaction committed before the next begins: creating a partition locks it and
    /// its parent exclusively until commit, and a batch spanning thousands of intervals would
    /// otherwise exhaust the server's lock table and block every reader of `samples` for as
    /// long as it runs. Each transaction takes the schema's advisory lock and re-reads the
    /// catalog around its timestamps, so concurrent writers never create overlapping
    /// partitions. A failure midway keeps the partitions already committed: they are empty
    /// and harmless, and the retry creates the rest.
    pub(crate) async fn ensure_partitions(&self, times: &BTreeSet<i64>) -> Result<()> {
        if self.timescale || times.is_empty() {
            return Ok(());
        }
        let missing: Vec<i64> = {
            let cache = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
            times
                .iter()
                .copied()
                .filter(|t| !covered(&cache, *t))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let interval = self.config.partition_micros();
        let per_transaction = self.lock_budget.partitions_per_ddl;
        let mut conn = self.pool.acquire().await.db()?;
        let mut created = 0;
        let mut next = 0;
        while next < missing.len() {
            // The timestamps of the next `per_transaction` slots: at most that many partitions
            // unless partitions of another interval split a slot (then the loop below stops
            // at the budget and the next transaction goes on).
            let mut slots = 0;
            let mut last_slot = None;
            let mut end = next;
            while end < missing.len() {
                let slot = slot_start(missing[end], interval);
                if last_slot != Some(slot) {
                    if slots == per_transaction {
                        break;
                    }
                    slots += 1;
                    last_slot = Some(slot);
                }
                end += 1;
            }
            let low = slot_start(missing[next], interval);
            let high = slot_start(missing[end - 1], interval).saturating_add(interval);
            let mut tx = conn.begin().await.db()?;
            advisory_xact_lock(&mut tx, &lock_key(&self.config.schema))
                .await
                .db()?;
            // Every partition a new one in [low, high) could be clipped by or lie in.
            let mut existing = load_partitions_between(&mut tx, low, high).await?;
            let mut made = 0;
            while next < end && made < per_transaction {
                let ts = missing[next];
                next += 1;
                if covered(&existing, ts) {
                    continue;
                }
                let (from, to) = new_partition_range(ts, interval, &existing);
                let name = partition_name(from);
                sqlx::raw_sql(AssertSqlSafe(create_partition_sql(&name, from, to)))
                    .execute(&mut *tx)
                    .await
                    .db()?;
                sqlx::query(
                    "INSERT INTO sample_partitions (name, start_time, end_time) \
                     VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
                )
                .bind(&name)
                .bind(time::from_micros(from))
                .bind(time::from_micros(to))
                .execute(&mut *tx)
                .await
                .db()?;
                existing.push((from, to));
                existing.sort_unstable();
                made += 1;
            }
            tx.commit().await.db()?;
            created += made;
        }
        if created > 0 {
            tracing::debug!(backend = %self.config.name, created, "created sample partitions");
        }
        let all = load_partitions(&mut conn).await?;
        *self.partitions.lock().unwrap_or_else(|e| e.into_inner()) = all;
        Ok(())
    }

    /// Forgets the cached partitions (another process may have dropped some).
    pub(crate) async fn reload_partitions(&self) -> Result<()> {
        if self.timescale {
            return Ok(());
        }
        let mut conn = self.pool.acquire().await.db()?;
        let ranges = load_partitions(&mut conn).await?;
        *self.partitions.lock().unwrap_or_else(|e| e.into_inner()) = ranges;
        Ok(())
    }

    /// Creates the partition of now and `partitions_ahead` after it.
    pub(crate) async fn create_partitions_ahead(&self) -> Result<()> {
        let interval = self.config.partition_micros();
        let now = time::to_micros(time::now());
        let times: BTreeSet<i64> = (0..=i64::from(self.config.partitions_ahead))
            .map(|i| now.saturating_add(interval.saturating_mul(i)))
            .filter(|t| *t < time::MAX_TIMESTAMP_MICROS)
            .collect();
        self.ensure_partitions(&times).await
    }
}

/// Every partition aimon created, sorted by start.
pub(crate) async fn load_partitions(conn: &mut PgConnection) -> Result<Vec<(i64, i64)>> {
    let rows =
        sqlx::query("SELECT start_time, end_time FROM sample_partitions ORDER BY start_time")
            .fetch_all(&mut *conn)
            .await
            .db()?;
    partition_ranges(&rows)
}

/// The partitions that overlap `[low, high)` (microseconds), sorted by start.
async fn load_partitions_between(
    conn: &mut PgConnection,
    low: i64,
    high: i64,
) -> Result<Vec<(i64, i64)>> {
    let rows = sqlx::query(
        "SELECT start_time, end_time FROM sample_partitions \
         WHERE end_time > $1 AND start_time < $2 ORDER BY start_time",
    )
    .bind(time::from_micros(low))
    .bind(time::from_micros(high))
    .fetch_all(&mut *conn)
    .await
    .db()?;
    partition_ranges(&rows)
}

fn partition_ranges(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<(i64, i64)>> {
    rows.iter()
        .map(|r| {
            let s: chrono::DateTime<chrono::Utc> = r.try_get(0).db()?;
            let e: chrono::DateTime<chrono::Utc> = r.try_get(1).db()?;
            Ok((time::to_micros(s), time::to_micros(e)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000_000;

    #[test]
    fn partitions_are_interval_aligned_and_named_by_start() {
        let ts = 1_704_067_200_000_000 + 5 * 3_600_000_000; // 2024-01-01T05:00Z
        assert_eq!(
            new_partition_range(ts, DAY, &[]),
            (1_704_067_200_000_000, 1_704_067_200_000_000 + DAY)
        );
        assert_eq!(
            partition_name(1_704_067_200_000_000),
            "samples_p20240101_000000"
        );
        assert_eq!(
            create_partition_sql("samples_p20240101_000000", 0, DAY),
            "CREATE TABLE IF NOT EXISTS \"samples_p20240101_000000\" PARTITION OF samples \
             FOR VALUES FROM ('1970-01-01T00:00:00.000000Z') TO ('1970-01-02T00:00:00.000000Z'); \
             CREATE TABLE IF NOT EXISTS \"chunks_p20240101_000000\" PARTITION OF chunks \
             FOR VALUES FROM ('1970-01-01T00:00:00.000000Z') TO ('1970-01-02T00:00:00.000000Z')"
        );
    }

    #[test]
    fn lock_budget_keeps_each_transaction_within_its_share_of_the_lock_table() {
        // PostgreSQL's default max_locks_per_transaction: 2 partitions created (two tables
        // each, about 34 locks) or 8 written into (five locks each, at most 40, plus the fixed
        // tables) per
        // transaction.
        let default = LockBudget::default();
        assert_eq!(
            (default.partitions_per_ddl, default.partitions_per_write),
            (2, 8)
        );
        let tuned = LockBudget::for_max_locks(1024);
        assert_eq!(
            (tuned.partitions_per_ddl, tuned.partitions_per_write),
            (32, 128)
        );
        // A tiny setting still allows one partition at a time.
        let tiny = LockBudget::for_max_locks(10);
        assert_eq!((tiny.partitions_per_ddl, tiny.partitions_per_write), (1, 1));
        assert_eq!(LockBudget::for_max_locks(-1).partitions_per_write, 1);
    }

    #[test]
    fn new_partitions_are_clipped_to_their_neighbours() {
        // Existing 6-hour partitions around a day-wide slot.
        let h = 3_600_000_000;
        let existing = [(0, 6 * h), (18 * h, 24 * h)];
        assert_eq!(new_partition_range(10 * h, DAY, &existing), (6 * h, 18 * h));
        assert!(covered(&existing, 0));
        assert!(covered(&existing, 6 * h - 1));
        assert!(!covered(&existing, 6 * h));
        assert!(covered(&existing, 20 * h));
        assert!(!covered(&existing, 24 * h));
    }
}
