//! Backups: the portable archive (through [`aimon_core::archive`]) and SQLite's own format, a
//! database file written by `VACUUM INTO` and merged back with `ATTACH DATABASE`.

use std::path::Path;

use aimon_core::model::tags_json;
use aimon_core::{BackupFormat, Error, ErrorKind, Result, TransferReport, time, validate};
use futures::TryStreamExt;
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{AssertSqlSafe, Connection, Row};

use crate::agent_states::{STATE_COLUMNS, state_from_row, state_update};
use crate::alerts::{ALERT_COLUMNS, alert_from_row, alert_update};
use crate::backend::{DbResult, MIGRATOR, SqliteBackend};
use crate::chunks;
use crate::config::SqliteLocation;
use crate::error::count;
use crate::metrics::{SERIES_COLUMNS, metric_from_row, parse_tags};

/// The samples of a backup before schema version 4: one row a sample.
const PLAIN_SAMPLES: (&str, &[&str], &[&str]) = (
    "samples",
    &["series_id", "ts", "tags", "value"],
    &["series_id", "ts", "tags"],
);

/// The samples of a backup of schema version 4 or later: chunks and their tag sets.
const CHUNKED_SAMPLES: [(&str, &[&str], &[&str]); 2] = [
    ("chunks", &["tagset", "window_start", "seq", "data"], &[]),
    ("series_tagsets", &["id", "series_id", "tags"], &["id"]),
];

/// The first schema version that keeps samples as chunks.
const CHUNKED_VERSION: i64 = 4;

/// The schema name a restored file is attached as.
const ATTACHED: &str = "aimon_restore";

/// The tables a native backup must have: each with the columns the merge reads, and the
/// primary key (in order) that makes its rows the keys they are in the store.
const TABLES: [(&str, &[&str], &[&str]); 3] = [
    (
        "series",
        &[
            "id",
            "name",
            "type",
            "description",
            "unit",
            "metadata",
            "created_at",
            "updated_at",
        ],
        &["id"],
    ),
    (
        "alerts",
        &[
            "id",
            "name",
            "description",
            "severity",
            "source",
            "status",
            "start_time",
            "end_time",
            "acknowledged_by",
            "acknowledged_at",
            "resolved_by",
            "resolved_at",
            "labels",
            "annotations",
            "metadata",
            "created_at",
            "updated_at",
        ],
        &["id"],
    ),
    (
        "agent_states",
        &[
            "agent_id",
            "id",
            "status",
            "metrics",
            "last_heartbeat",
            "metadata",
            "created_at",
            "updated_at",
        ],
        &["agent_id"],
    ),
];

fn utf8_path(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| {
        Error::invalid_input("path", format!("{} is not valid UTF-8", path.display()))
    })
}

/// A read-only SQLite URI for `path`, percent-encoded so that no character of the path is
/// taken for URI syntax.
pub(crate) fn read_only_uri(path: &str) -> String {
    let mut uri = String::from("file:");
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            uri.push(char::from(byte));
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri.push_str("?mode=ro");
    uri
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// What a merge carried.
struct Merged {
    series: u64,
    samples: u64,
    alerts: u64,
    agent_states: u64,
    expired: u64,
}

/// A damaged backup: `Corrupted`, naming what is wrong.
fn damaged(what: impl std::fmt::Display) -> Error {
    Error::corrupted(format!(
        "the file is not a valid aimon SQLite backup: {what}"
    ))
}

/// A `Corrupted` error on first reading the file: it is no SQLite database (or a damaged one).
fn not_sqlite(e: Error) -> Error {
    if e.kind() == ErrorKind::Corrupted {
        damaged("it is not a readable SQLite database").with_source(e)
    } else {
        e
    }
}

/// Checks that the attached file is an aimon SQLite database of a schema version this build
/// knows, with the tables, columns and keys the merge reads. A file that is not SQLite at all
/// fails on its first read with `SQLITE_NOTADB`, which is `Corrupted` too.
async fn verify_schema(conn: &mut SqliteConnection) -> Result<bool> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM aimon_restore.sqlite_master WHERE type = 'table' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await
    .db()
    .map_err(not_sqlite)?;
    if !tables.iter().any(|t| t == "_sqlx_migrations") {
        return Err(damaged("it has no schema version (_sqlx_migrations)"));
    }
    let failed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM aimon_restore._sqlx_migrations WHERE success IS NOT 1",
    )
    .fetch_one(&mut *conn)
    .await
    .db()?;
    if failed > 0 {
        return Err(damaged("its schema was left half migrated"));
    }
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM aimon_restore._sqlx_migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await
            .db()?;
    let known: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
    let newest = known.iter().copied().max().unwrap_or(0);
    if let Some(newer) = versions.iter().find(|v| **v > newest) {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "the backup has schema version {newer}, newer than this build reads ({newest})"
            ),
        ));
    }
    if versions.is_empty() || known.get(..versions.len()) != Some(versions.as_slice()) {
        return Err(damaged(format!(
            "its schema versions {versions:?} are not a sequence this build knows ({known:?})"
        )));
    }
    let chunked = versions.contains(&CHUNKED_VERSION);
    let samples: &[(&str, &[&str], &[&str])] = if chunked {
        &CHUNKED_SAMPLES
    } else {
        std::slice::from_ref(&PLAIN_SAMPLES)
    };
    for &(table, columns, key) in TABLES.iter().chain(samples) {
        if !tables.iter().any(|t| t == table) {
            return Err(damaged(format!("the table {table} is missing")));
        }
        let found: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, pk FROM pragma_table_info(?1, 'aimon_restore')")
                .bind(table)
                .fetch_all(&mut *conn)
                .await
                .db()?;
        if let Some(missing) = columns
            .iter()
            .find(|c| !found.iter().any(|(name, _)| name == *c))
        {
            return Err(damaged(format!(
                "the table {table} has no column {missing}"
            )));
        }
        let mut pk: Vec<&(String, i64)> = found.iter().filter(|(_, pk)| *pk > 0).collect();
        pk.sort_by_key(|(_, pk)| *pk);
        if !pk
            .iter()
            .map(|(name, _)| name.as_str())
            .eq(key.iter().copied())
        {
            return Err(damaged(format!(
                "the table {table} is not keyed by ({})",
                key.join(", ")
            )));
        }
    }
    Ok(chunked)
}

/// Streams the rows of `sql` (one statement; SQLite hands them over one at a time) and checks
/// each with `check`; the first failure is `Corrupted`, naming `table` and the row (its key,
/// when that much decodes, and its position).
async fn verify_rows(
    conn: &mut SqliteConnection,
    table: &str,
    sql: String,
    check: impl Fn(&SqliteRow) -> Result<()>,
) -> Result<()> {
    // Audited: `sql` is fixed text (this crate's column lists), never data.
    let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(&mut *conn);
    let mut n: u64 = 0;
    while let Some(row) = rows.try_next().await.db()? {
        n += 1;
        if let Err(e) = check(&row) {
            let key = row
                .try_get::<String, _>(0)
                .map(|k| format!(" {k:?}"))
                .unwrap_or_default();
            return Err(damaged(format!("{table} row {n}{key}")).with_source(e));
        }
    }
    Ok(())
}

/// The checks on every sample that need no decoding, in SQL (one pass over the table):
/// text key columns, an integer timestamp in range, a finite number as the value. The first
/// row failing one, with the reason.
const BAD_SAMPLE: &str = "SELECT substr(quote(series_id), 1, 200), substr(quote(ts), 1, 40), \
    CASE WHEN typeof(series_id) <> 'text' THEN 'series_id is ' || typeof(series_id) \
    WHEN typeof(ts) <> 'integer' THEN 'ts is ' || typeof(ts) || ', not an integer' \
    WHEN ts < ?1 OR ts >= ?2 THEN 'ts is outside 1970-01-01T00:00:00Z..2262-01-01T00:00:00Z' \
    WHEN typeof(tags) <> 'text' THEN 'tags are ' || typeof(tags) \
    WHEN typeof(value) NOT IN ('real', 'integer') \
    THEN 'value is ' || typeof(value) || ', not a number' \
    ELSE 'value is not finite' END \
    FROM temp.restore_samples \
    WHERE NOT (typeof(series_id) = 'text' AND typeof(ts) = 'integer' AND ts >= ?1 AND ts < ?2 \
    AND typeof(tags) = 'text' AND typeof(value) IN ('real', 'integer') \
    AND value > -9e999 AND value < 9e999) \
    LIMIT 1";

/// Checks every row of the attached backup as a write would check it (DESIGN.md rule 7),
/// streaming: series, alerts and agent states are decoded by the readers' decoders and
/// validated whole; samples are checked in SQL, and each of their distinct tag sets decoded
/// and validated (and must be canonical JSON, the form samples are keyed by).
async fn verify_rows_all(conn: &mut SqliteConnection, embeddings: Embeddings) -> Result<()> {
    let series = format!("SELECT {SERIES_COLUMNS} FROM aimon_restore.series s ORDER BY s.id");
    verify_rows(conn, "series", series, |row| {
        validate::metric(&metric_from_row(row)?)
    })
    .await?;

    let bad: Option<(String, String, String)> = sqlx::query_as(BAD_SAMPLE)
        .bind(time::MIN_TIMESTAMP_MICROS)
        .bind(time::MAX_TIMESTAMP_MICROS)
        .fetch_optional(&mut *conn)
        .await
        .db()?;
    if let Some((series_id, ts, reason)) = bad {
        return Err(damaged(format!(
            "samples row (series_id {series_id}, ts {ts}): {reason}"
        )));
    }
    verify_rows(
        conn,
        "samples tag set",
        "SELECT DISTINCT tags FROM temp.restore_samples".to_owned(),
        |row| {
            let json: String = row.try_get(0).db()?;
            let tags = parse_tags(&json)?;
            if tags_json(&tags) != json {
                return Err(Error::corrupted("sample tags are not canonical JSON"));
            }
            validate::tags("sample tags", &tags)
        },
    )
    .await?;

    let alerts = format!(
        "SELECT {} FROM aimon_restore.alerts ORDER BY id",
        restored_columns(ALERT_COLUMNS, embeddings.alerts)
    );
    verify_rows(conn, "alerts", alerts, |row| {
        validate::alert(&alert_from_row(row)?)
    })
    .await?;
    let states = format!(
        "SELECT {} FROM aimon_restore.agent_states ORDER BY agent_id",
        restored_columns(STATE_COLUMNS, embeddings.agent_states)
    );
    verify_rows(conn, "agent_states", states, |row| {
        validate::agent_state(&state_from_row(row)?)
    })
    .await?;
    Ok(())
}

/// Which tables of the attached backup have the `embedding` column (schema version 3): older
/// backups restore with no embeddings.
#[derive(Debug, Clone, Copy)]
struct Embeddings {
    alerts: bool,
    agent_states: bool,
}

async fn has_column(conn: &mut SqliteConnection, table: &str, column: &str) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pragma_table_info(?1, 'aimon_restore') WHERE name = ?2",
    )
    .bind(table)
    .bind(column)
    .fetch_one(&mut *conn)
    .await
    .db()?;
    Ok(n > 0)
}

/// A reader's column list for the attached backup: `embedding` (always last) read as NULL
/// where the backup predates it.
fn restored_columns(columns: &str, has_embedding: bool) -> String {
    if has_embedding {
        columns.to_owned()
    } else {
        let base = columns
            .strip_suffix(", embedding")
            .expect("embedding is the last column");
        format!("{base}, NULL AS embedding")
    }
}

fn embedding_expr(has_embedding: bool) -> &'static str {
    if has_embedding { "b.embedding" } else { "NULL" }
}

/// Drops the staged samples of [`merge`] (a table or a view, by the backup's version).
async fn drop_staged(conn: &mut SqliteConnection) -> Result<()> {
    let kind: Option<String> =
        sqlx::query_scalar("SELECT type FROM temp.sqlite_master WHERE name = 'restore_samples'")
            .fetch_optional(&mut *conn)
            .await
            .db()?;
    let sql = match kind.as_deref() {
        Some("view") => "DROP VIEW temp.restore_samples",
        Some(_) => "DROP TABLE temp.restore_samples",
        None => return Ok(()),
    };
    sqlx::query(sql).execute(&mut *conn).await.db()?;
    Ok(())
}

/// Checks the attached backup completely, then merges it into `main` by the same rules as
/// writes, in one transaction: what was checked is what is merged, and a backup that fails a
/// check writes nothing.
///
/// The transaction starts deferred: the checks only read the backup, so writers to the store
/// are held up by the merge alone, whose first write takes the write lock.
async fn merge(
    conn: &mut SqliteConnection,
    metric_cutoff: Option<i64>,
    alert_cutoff: Option<i64>,
    state_cutoff: Option<i64>,
) -> Result<Merged> {
    let mut tx = conn.begin().await.db()?;
    let chunked = verify_schema(&mut tx).await?;
    // The backup's samples as plain rows, whatever its version: checked and merged below.
    if chunked {
        chunks::stage_chunks(&mut tx, ATTACHED).await?;
    } else {
        sqlx::query(
            "CREATE TEMP VIEW restore_samples AS \
             SELECT series_id, ts, tags, value FROM aimon_restore.samples",
        )
        .execute(&mut *tx)
        .await
        .db()?;
    }
    let embeddings = Embeddings {
        alerts: has_column(&mut tx, "alerts", "embedding").await?,
        agent_states: has_column(&mut tx, "agent_states", "embedding").await?,
    };
    verify_rows_all(&mut tx, embeddings).await?;
    let totals: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM aimon_restore.series), \
         (SELECT count(*) FROM temp.restore_samples), \
         (SELECT count(*) FROM aimon_restore.alerts), \
         (SELECT count(*) FROM aimon_restore.agent_states)",
    )
    .fetch_one(&mut *tx)
    .await
    .db()?;
    let expired: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM temp.restore_samples WHERE ?1 IS NOT NULL AND ts < ?1), \
         (SELECT count(*) FROM aimon_restore.alerts WHERE ?2 IS NOT NULL AND updated_at < ?2), \
         (SELECT count(*) FROM aimon_restore.agent_states \
          WHERE ?3 IS NOT NULL AND last_heartbeat < ?3)",
    )
    .bind(metric_cutoff)
    .bind(alert_cutoff)
    .bind(state_cutoff)
    .fetch_one(&mut *tx)
    .await
    .db()?;

    // Series: skipped only when nothing of them is live and they are new here; `created_at`
    // of an existing series is kept.
    sqlx::query(
        "INSERT INTO main.series (id, name, \"type\", description, unit, metadata, created_at, \
         updated_at) \
         SELECT b.id, b.name, b.\"type\", b.description, b.unit, b.metadata, b.created_at, \
         b.updated_at FROM aimon_restore.series b \
         WHERE ?1 IS NULL OR b.updated_at >= ?1 \
         OR EXISTS (SELECT 1 FROM temp.restore_samples x WHERE x.series_id = b.id AND x.ts >= ?1 \
         LIMIT 1) \
         OR EXISTS (SELECT 1 FROM main.series m WHERE m.id = b.id LIMIT 1) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, \"type\" = excluded.\"type\", \
         description = excluded.description, unit = excluded.unit, \
         metadata = excluded.metadata, updated_at = excluded.updated_at",
    )
    .bind(metric_cutoff)
    .execute(&mut *tx)
    .await
    .db()?;
    chunks::ingest_rows(
        &mut tx,
        "temp.restore_samples",
        "aimon_restore.series",
        metric_cutoff,
    )
    .await?;
    // Audited: the only variable part is one of two fixed column expressions.
    sqlx::query(AssertSqlSafe(format!(
        concat!(
            "INSERT INTO main.alerts (id, name, description, severity, source, status, \
             start_time, end_time, acknowledged_by, acknowledged_at, resolved_by, resolved_at, \
             labels, annotations, metadata, created_at, updated_at, embedding) \
             SELECT b.id, b.name, b.description, b.severity, b.source, b.status, b.start_time, \
             b.end_time, b.acknowledged_by, b.acknowledged_at, b.resolved_by, b.resolved_at, \
             b.labels, b.annotations, b.metadata, b.created_at, b.updated_at, {} \
             FROM aimon_restore.alerts b WHERE ?1 IS NULL OR b.updated_at >= ?1 \
             ON CONFLICT (id) DO UPDATE SET ",
            alert_update!()
        ),
        embedding_expr(embeddings.alerts)
    )))
    .bind(alert_cutoff)
    .execute(&mut *tx)
    .await
    .db()?;
    // Agent states: an older heartbeat than the stored one does not replace it.
    sqlx::query(AssertSqlSafe(format!(
        concat!(
            "INSERT INTO main.agent_states (agent_id, id, status, metrics, last_heartbeat, \
             metadata, created_at, updated_at, embedding) \
             SELECT b.agent_id, b.id, b.status, b.metrics, b.last_heartbeat, b.metadata, \
             b.created_at, b.updated_at, {} FROM aimon_restore.agent_states b \
             WHERE ?1 IS NULL OR b.last_heartbeat >= ?1 \
             ON CONFLICT (agent_id) DO UPDATE SET ",
            state_update!()
        ),
        embedding_expr(embeddings.agent_states)
    )))
    .bind(state_cutoff)
    .execute(&mut *tx)
    .await
    .db()?;
    drop_staged(&mut tx).await?;
    tx.commit().await.db()?;
    Ok(Merged {
        series: count(totals.0),
        samples: count(totals.1),
        alerts: count(totals.2),
        agent_states: count(totals.3),
        expired: count(expired.0) + count(expired.1) + count(expired.2),
    })
}

impl SqliteBackend {
    /// `VACUUM INTO` a new file at `path`.
    pub(crate) async fn native_backup(&self, path: &Path) -> Result<TransferReport> {
        let target = utf8_path(path)?;
        if path.symlink_metadata().is_ok() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "{} already exists; a native backup needs a new path",
                    path.display()
                ),
            ));
        }
        let counts = self.live_counts().await?;
        sqlx::query("VACUUM INTO ?")
            .bind(target)
            .execute(&self.pool)
            .await
            .db()?;
        Ok(TransferReport {
            format: BackupFormat::Native,
            series: counts.series,
            samples: counts.samples,
            alerts: counts.alerts,
            agent_states: counts.agent_states,
            expired: 0,
            bytes: file_size(path),
        })
    }

    /// Attaches the file at `path` read-only and merges it in.
    pub(crate) async fn native_restore(&self, path: &Path) -> Result<TransferReport> {
        let source = utf8_path(path)?;
        if !path.is_file() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no backup file at {}", path.display()),
            ));
        }
        let now = time::now();
        let retention = self.config.retention;
        let mut conn = self.pool.acquire().await.db()?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ATTACH DATABASE ? AS {ATTACHED}"
        )))
        .bind(read_only_uri(source))
        .execute(&mut *conn)
        .await
        .db()
        .map_err(not_sqlite)?;
        let merged = merge(
            &mut conn,
            retention.metric_cutoff(now),
            retention.alert_cutoff(now),
            retention.agent_state_cutoff(now),
        )
        .await;
        let detached = sqlx::query(sqlx::AssertSqlSafe(format!("DETACH DATABASE {ATTACHED}")))
            .execute(&mut *conn)
            .await;
        if detached.is_err() && self.config.location != SqliteLocation::Memory {
            // Do not hand a connection with the backup still attached back to the pool.
            conn.close_on_drop();
        }
        let merged = merged?;
        detached.db()?;
        Ok(TransferReport {
            format: BackupFormat::Native,
            series: merged.series,
            samples: merged.samples,
            alerts: merged.alerts,
            agent_states: merged.agent_states,
            expired: merged.expired,
            bytes: file_size(path),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_escape_uri_syntax() {
        assert_eq!(
            read_only_uri("/tmp/a b?c#d%e.db"),
            "file:/tmp/a%20b%3Fc%23d%25e.db?mode=ro"
        );
        assert_eq!(read_only_uri("rel/x.db"), "file:rel/x.db?mode=ro");
    }
}
