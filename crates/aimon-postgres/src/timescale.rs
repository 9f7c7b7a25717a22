//! The TimescaleDB mode (`timescale://`): samples in a hypertable, retention and compression as
//! TimescaleDB policies, `time_bucket` for history.
//!
//! Verified against TimescaleDB 2.26.4 in CI (see the crate docs): the statements below are
//! unit-tested as text and run by the conformance suite and `integration-tests/tests/timescale.rs`.

use std::time::Duration;

use aimon_core::Result;
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection as _};

use crate::backend::DbResult;
use crate::config::PostgresConfig;

/// The installed version of the `timescaledb` extension in this database, if any.
pub(crate) async fn installed_version(conn: &mut PgConnection) -> Result<Option<String>> {
    sqlx::query_scalar("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
        .fetch_optional(conn)
        .await
        .db()
}

/// Whether the server can create the extension (`pg_available_extensions`).
pub(crate) async fn available(conn: &mut PgConnection) -> Result<bool> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
            .fetch_optional(conn)
            .await
            .db()?;
    Ok(found.is_some())
}

/// The advisory lock that serialises creating the extension: the database holds one
/// `timescaledb` extension for every store, and the migration lock is per schema.
const EXTENSION_LOCK: &str = "aimon.extension.timescaledb";

/// Creates the `timescaledb` extension in this database unless it exists. Two stores opened at
/// once on a database without it would both run `CREATE EXTENSION IF NOT EXISTS`, and the
/// later one fails on `pg_extension`'s unique name (`IF NOT EXISTS` checks before inserting,
/// not atomically); a transaction-scoped advisory lock taken first makes the later one wait
/// and then see the extension (its statement's snapshot is taken after the lock).
pub(crate) async fn create_extension(conn: &mut PgConnection) -> sqlx::Result<()> {
    let mut tx = conn.begin().await?;
    crate::schema::advisory_xact_lock(&mut tx, EXTENSION_LOCK).await?;
    // In `public`, named explicitly: the connection's search_path starts with the store's
    // schema, which may not exist yet, and an extension inside it would go with the store.
    sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS timescaledb WITH SCHEMA public")
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// An `interval` literal of whole seconds (built from an integer).
pub(crate) fn interval_literal(duration: Duration) -> String {
    format!("INTERVAL '{} seconds'", duration.as_secs())
}

/// `'"schema".samples'`, the hypertable as a `regclass` literal's text.
fn table_literal(config: &PostgresConfig) -> String {
    format!("'{}.samples'", config.quoted_schema().replace('\'', "''"))
}

/// The statements that turn the freshly created (plain, empty) `samples` table into a
/// hypertable and install the policies of `config`, in order. Table names are resolved by the
/// search path, which names the store's schema; `regclass` casts take the quoted schema
/// explicitly so the policies bind to this schema's table whatever the path.
pub(crate) fn setup_statements(config: &PostgresConfig) -> Vec<String> {
    let table = table_literal(config);
    let mut out = vec![format!(
        "SELECT create_hypertable({table}::regclass, 'time', chunk_time_interval => {}, \
         if_not_exists => TRUE)",
        interval_literal(config.partition_interval)
    )];
    out.extend(policy_statements(
        config,
        &Policies {
            compression_enabled: false,
            drop_after_seconds: None,
            compress_after_seconds: None,
        },
    ));
    out
}

/// The policies a hypertable has on the server (read by [`POLICIES_QUERY`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Policies {
    /// Compression is enabled on the hypertable (`ALTER TABLE … SET (timescaledb.compress)`).
    pub compression_enabled: bool,
    /// The retention policy's `drop_after`, in seconds; `None` without one.
    pub drop_after_seconds: Option<f64>,
    /// The compression policy's `compress_after`, in seconds; `None` without one.
    pub compress_after_seconds: Option<f64>,
}

/// Reads [`Policies`] of the store's hypertable: `$1` is the schema.
pub(crate) const POLICIES_QUERY: &str = "SELECT \
     coalesce((SELECT compression_enabled FROM timescaledb_information.hypertables \
      WHERE hypertable_schema = $1 AND hypertable_name = 'samples'), FALSE), \
     (SELECT extract(epoch FROM (config->>'drop_after')::interval)::float8 \
      FROM timescaledb_information.jobs WHERE hypertable_schema = $1 \
      AND hypertable_name = 'samples' AND proc_name = 'policy_retention' LIMIT 1), \
     (SELECT extract(epoch FROM (config->>'compress_after')::interval)::float8 \
      FROM timescaledb_information.jobs WHERE hypertable_schema = $1 \
      AND hypertable_name = 'samples' AND proc_name = 'policy_compression' LIMIT 1)";

/// The statements that bring the hypertable's policies from `current` to `config`'s
/// `metric_ttl` (a retention policy) and `compression_after` (compression segmented by series
/// and tag set and ordered by time, so each compressed segment is one time series; and its
/// policy); run in one transaction. A setting that `config` leaves out leaves the
/// server's policy alone: a store opened only to read (the CLI's `stats`, say) must not remove
/// the retention policy a writer set, and a policy is removed with TimescaleDB's
/// `remove_retention_policy` / `remove_compression_policy`. A policy at another interval is
/// replaced: left at the first opener's setting, it would go on dropping (or compressing)
/// what the new setting keeps.
pub(crate) fn policy_statements(config: &PostgresConfig, current: &Policies) -> Vec<String> {
    let table = table_literal(config);
    let differs = |now: Option<f64>, wanted: Duration| {
        now.is_none_or(|seconds| (seconds - wanted.as_secs_f64()).abs() >= 0.5)
    };
    let mut out = Vec::new();
    if let Some(ttl) = config.retention.metric_ttl
        && differs(current.drop_after_seconds, ttl)
    {
        if current.drop_after_seconds.is_some() {
            out.push(format!(
                "SELECT remove_retention_policy({table}::regclass, if_exists => TRUE)"
            ));
        }
        out.push(format!(
            "SELECT add_retention_policy({table}::regclass, {}, if_not_exists => TRUE)",
            interval_literal(ttl)
        ));
    }
    if let Some(after) = config.compression_after {
        if !current.compression_enabled {
            out.push(
                "ALTER TABLE samples SET (timescaledb.compress, \
                 timescaledb.compress_segmentby = 'sid, tags_key', timescaledb.compress_orderby = 'time')"
                    .to_owned(),
            );
        }
        if differs(current.compress_after_seconds, after) {
            if current.compress_after_seconds.is_some() {
                out.push(format!(
                    "SELECT remove_compression_policy({table}::regclass, if_exists => TRUE)"
                ));
            }
            out.push(format!(
                "SELECT add_compression_policy({table}::regclass, {}, if_not_exists => TRUE)",
                interval_literal(after)
            ));
        }
    }
    out
}

/// Brings the policies of the store's existing hypertable to `config` (see
/// [`policy_statements`]), in one transaction.
pub(crate) async fn update_policies(
    conn: &mut PgConnection,
    config: &PostgresConfig,
) -> Result<()> {
    if config.retention.metric_ttl.is_none() && config.compression_after.is_none() {
        return Ok(());
    }
    let (compression_enabled, drop_after_seconds, compress_after_seconds) =
        sqlx::query_as::<_, (bool, Option<f64>, Option<f64>)>(POLICIES_QUERY)
            .bind(&config.schema)
            .fetch_one(&mut *conn)
            .await
            .db()?;
    let statements = policy_statements(
        config,
        &Policies {
            compression_enabled,
            drop_after_seconds,
            compress_after_seconds,
        },
    );
    if statements.is_empty() {
        return Ok(());
    }
    let mut tx = conn.begin().await.db()?;
    for statement in &statements {
        // Audited: built from a checked schema name (quoted) and whole seconds.
        sqlx::raw_sql(AssertSqlSafe(statement.clone()))
            .execute(&mut *tx)
            .await
            .db()?;
    }
    tx.commit().await.db()?;
    tracing::info!(backend = %config.name, schema = %config.schema, "moved the TimescaleDB policies to the store's settings");
    Ok(())
}

/// The bucket expression of history in TimescaleDB mode: `time_bucket` with the Unix epoch as
/// origin (its default origin is 2000-01-03, a Monday), `$step` in microseconds.
pub(crate) fn bucket_expression(step_placeholder: &str) -> String {
    format!(
        "time_bucket({step_placeholder}::bigint * INTERVAL '1 microsecond', x.time, \
         TIMESTAMPTZ '1970-01-01 00:00:00+00')"
    )
}

/// The ends of the store's chunks that end at or before `$2` (the retention cutoff), oldest
/// first; `$1` is the schema. These are the chunks `drop_chunks(older_than => $2)` drops.
pub(crate) const EXPIRED_CHUNK_ENDS_QUERY: &str = "SELECT range_end \
     FROM timescaledb_information.chunks WHERE hypertable_schema = $1 \
     AND hypertable_name = 'samples' AND range_end <= $2 ORDER BY range_start";

/// `drop_chunks` for the hypertable's chunks that end at or before `$1` (a `timestamptz`):
/// what `apply_retention` runs in TimescaleDB mode, a group of chunks at a time, so expired
/// chunks go at once rather than at the policy's next run.
pub(crate) fn drop_chunks_statement(config: &PostgresConfig) -> String {
    format!(
        "SELECT count(*) FROM drop_chunks({}::regclass, older_than => $1::timestamptz)",
        table_literal(config)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aimon_core::StorageConfig;

    fn config(options: &[(&str, serde_json::Value)]) -> PostgresConfig {
        let mut c = StorageConfig::from_url("ts", "timescale://db/x").unwrap();
        for (k, v) in options {
            c = c.option(*k, v.clone());
        }
        PostgresConfig::from_storage_config(&c).unwrap()
    }

    #[test]
    fn hypertable_alone_without_ttl_or_compression() {
        let statements = setup_statements(&config(&[("schema", "fleet".into())]));
        assert_eq!(
            statements,
            [
                "SELECT create_hypertable('\"fleet\".samples'::regclass, 'time', \
                 chunk_time_interval => INTERVAL '86400 seconds', if_not_exists => TRUE)"
            ]
        );
    }

    #[test]
    fn retention_and_compression_policies() {
        let statements = setup_statements(&config(&[
            ("metric_ttl_seconds", 3600.into()),
            ("compression_after", "7d".into()),
            ("partition_interval", "6h".into()),
        ]));
        assert_eq!(statements.len(), 4);
        assert!(statements[0].contains("INTERVAL '21600 seconds'"));
        assert_eq!(
            statements[1],
            "SELECT add_retention_policy('\"aimon\".samples'::regclass, \
             INTERVAL '3600 seconds', if_not_exists => TRUE)"
        );
        assert!(statements[2].starts_with("ALTER TABLE samples SET (timescaledb.compress"));
        assert!(statements[2].contains("compress_segmentby = 'sid, tags_key'"));
        assert!(statements[2].contains("compress_orderby = 'time'"));
        assert_eq!(
            statements[3],
            "SELECT add_compression_policy('\"aimon\".samples'::regclass, \
             INTERVAL '604800 seconds', if_not_exists => TRUE)"
        );
    }

    #[test]
    fn policies_move_to_the_settings_and_stay_without_them() {
        let settings = config(&[
            ("metric_ttl_seconds", 3600.into()),
            ("compression_after", "1d".into()),
        ]);
        let none = Policies {
            compression_enabled: false,
            drop_after_seconds: None,
            compress_after_seconds: None,
        };
        // None yet: compression enabled, both policies added.
        let fresh = policy_statements(&settings, &none);
        assert_eq!(fresh.len(), 3);
        assert!(fresh[0].starts_with("SELECT add_retention_policy("));
        assert!(fresh[1].starts_with("ALTER TABLE samples SET (timescaledb.compress"));
        assert!(fresh[2].starts_with("SELECT add_compression_policy("));
        // Already there at these intervals: nothing to do.
        let same = Policies {
            compression_enabled: true,
            drop_after_seconds: Some(3600.0),
            compress_after_seconds: Some(86_400.0),
        };
        assert!(policy_statements(&settings, &same).is_empty());
        // At other intervals: each replaced, compression left enabled.
        let other = Policies {
            compression_enabled: true,
            drop_after_seconds: Some(60.0),
            compress_after_seconds: Some(7.0 * 86_400.0),
        };
        assert_eq!(
            policy_statements(&settings, &other),
            [
                "SELECT remove_retention_policy('\"aimon\".samples'::regclass, if_exists => TRUE)",
                "SELECT add_retention_policy('\"aimon\".samples'::regclass, \
                 INTERVAL '3600 seconds', if_not_exists => TRUE)",
                "SELECT remove_compression_policy('\"aimon\".samples'::regclass, if_exists => TRUE)",
                "SELECT add_compression_policy('\"aimon\".samples'::regclass, \
                 INTERVAL '86400 seconds', if_not_exists => TRUE)",
            ]
        );
        // Settings left out leave the server's policies alone.
        assert!(policy_statements(&config(&[]), &other).is_empty());
    }

    #[test]
    fn buckets_align_to_the_unix_epoch() {
        let expr = bucket_expression("$2");
        assert_eq!(
            expr,
            "time_bucket($2::bigint * INTERVAL '1 microsecond', x.time, \
             TIMESTAMPTZ '1970-01-01 00:00:00+00')"
        );
        assert_eq!(
            drop_chunks_statement(&config(&[])),
            "SELECT count(*) FROM drop_chunks('\"aimon\".samples'::regclass, \
             older_than => $1::timestamptz)"
        );
    }
}
