//! Backups: the portable archive (through [`aimon_core::archive`]) and SQLite's own format, a
//! database file written by `VACUUM INTO` and merged back with `ATTACH DATABASE`.

use std::path::Path;

use aimon_core::{BackupFormat, Error, ErrorKind, Result, TransferReport, time};
use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;

use crate::agent_states::state_update;
use crate::alerts::alert_update;
use crate::backend::{DbResult, SqliteBackend};
use crate::config::SqliteLocation;

/// The schema name a restored file is attached as.
const ATTACHED: &str = "aimon_restore";

/// The tables a native backup must have.
const TABLES: [&str; 4] = ["series", "samples", "alerts", "agent_states"];

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

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// What a merge carried.
struct Merged {
    series: u64,
    samples: u64,
    alerts: u64,
    agent_states: u64,
    expired: u64,
}

/// Merges the attached backup into `main` in one transaction, by the same rules as writes.
async fn merge(
    conn: &mut SqliteConnection,
    metric_cutoff: Option<i64>,
    alert_cutoff: Option<i64>,
    state_cutoff: Option<i64>,
) -> Result<Merged> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.db()?;
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM aimon_restore.sqlite_master WHERE type = 'table' \
         AND name IN ('series', 'samples', 'alerts', 'agent_states')",
    )
    .fetch_one(&mut *tx)
    .await
    .db()?;
    if tables != TABLES.len() as i64 {
        return Err(Error::new(
            ErrorKind::Corrupted,
            "the file is not an aimon SQLite backup (tables are missing)",
        ));
    }
    let totals: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM aimon_restore.series), \
         (SELECT count(*) FROM aimon_restore.samples), \
         (SELECT count(*) FROM aimon_restore.alerts), \
         (SELECT count(*) FROM aimon_restore.agent_states)",
    )
    .fetch_one(&mut *tx)
    .await
    .db()?;
    let expired: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM aimon_restore.samples WHERE ?1 IS NOT NULL AND ts < ?1), \
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
         OR EXISTS (SELECT 1 FROM aimon_restore.samples x WHERE x.series_id = b.id AND x.ts >= ?1 \
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
    sqlx::query(
        "INSERT INTO main.samples (series_id, ts, tags, value) \
         SELECT x.series_id, x.ts, x.tags, x.value FROM aimon_restore.samples x \
         WHERE (?1 IS NULL OR x.ts >= ?1) \
         AND x.series_id IN (SELECT id FROM aimon_restore.series) \
         ON CONFLICT (series_id, ts, tags) DO UPDATE SET value = excluded.value",
    )
    .bind(metric_cutoff)
    .execute(&mut *tx)
    .await
    .db()?;
    // The tag-set index, from the merged samples (the file may predate the index).
    sqlx::query(
        "INSERT INTO main.series_tagsets (series_id, tags, last_ts) \
         SELECT x.series_id, x.tags, max(x.ts) FROM aimon_restore.samples x \
         WHERE (?1 IS NULL OR x.ts >= ?1) \
         AND x.series_id IN (SELECT id FROM aimon_restore.series) \
         GROUP BY x.series_id, x.tags \
         ON CONFLICT (series_id, tags) DO UPDATE SET last_ts = excluded.last_ts \
         WHERE excluded.last_ts > series_tagsets.last_ts",
    )
    .bind(metric_cutoff)
    .execute(&mut *tx)
    .await
    .db()?;
    sqlx::query(
        "INSERT OR IGNORE INTO main.tagset_pairs (\"key\", \"value\", tags) \
         SELECT j.key, j.value, t.tags \
         FROM (SELECT DISTINCT tags FROM main.series_tagsets) AS t, json_each(t.tags) AS j \
         WHERE NOT EXISTS (SELECT 1 FROM main.tagset_pairs p WHERE p.tags = t.tags LIMIT 1)",
    )
    .execute(&mut *tx)
    .await
    .db()?;
    sqlx::query(concat!(
        "INSERT INTO main.alerts (id, name, description, severity, source, status, start_time, \
         end_time, acknowledged_by, acknowledged_at, resolved_by, resolved_at, labels, \
         annotations, metadata, created_at, updated_at) \
         SELECT b.id, b.name, b.description, b.severity, b.source, b.status, b.start_time, \
         b.end_time, b.acknowledged_by, b.acknowledged_at, b.resolved_by, b.resolved_at, \
         b.labels, b.annotations, b.metadata, b.created_at, b.updated_at \
         FROM aimon_restore.alerts b WHERE ?1 IS NULL OR b.updated_at >= ?1 \
         ON CONFLICT (id) DO UPDATE SET ",
        alert_update!()
    ))
    .bind(alert_cutoff)
    .execute(&mut *tx)
    .await
    .db()?;
    // Agent states: an older heartbeat than the stored one does not replace it.
    sqlx::query(concat!(
        "INSERT INTO main.agent_states (agent_id, id, status, metrics, last_heartbeat, metadata, \
         created_at, updated_at) \
         SELECT b.agent_id, b.id, b.status, b.metrics, b.last_heartbeat, b.metadata, \
         b.created_at, b.updated_at FROM aimon_restore.agent_states b \
         WHERE ?1 IS NULL OR b.last_heartbeat >= ?1 \
         ON CONFLICT (agent_id) DO UPDATE SET ",
        state_update!()
    ))
    .bind(state_cutoff)
    .execute(&mut *tx)
    .await
    .db()?;
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
        .db()?;
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
