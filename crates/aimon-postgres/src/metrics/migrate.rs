//! Schema version 4's data step: the sample rows of an older native store (`legacy_samples`,
//! kept aside by `migrations/0004_chunks.sql`) re-encoded as chunks and head rows.

use std::collections::{BTreeMap, BTreeSet};

use aimon_core::{Result, time};
use chrono::{DateTime, Utc};
use sqlx::{AssertSqlSafe, Row};

use super::chunks::{self, WriteFailure};
use super::write::{SampleGroups, store_groups};
use crate::backend::{DbResult, PostgresBackend};
use crate::config::quote_ident;
use crate::schema::advisory_xact_lock;

/// Series whose legacy rows one statement reads.
const SERIES_PER_READ: i64 = 64;

impl PostgresBackend {
    /// Re-encodes the rows of `legacy_samples`, if there is such a table: one transaction per
    /// legacy partition, oldest first, each storing its rows through the write path (closed
    /// windows as chunks, the open one as head rows) and dropping the partition; a process
    /// killed midway leaves the partitions not yet done, and the next open goes on. Expired
    /// rows are dropped with their partition, never stored. Then the empty parent goes.
    pub(crate) async fn migrate_legacy_samples(&self) -> Result<()> {
        if self.timescale {
            return Ok(());
        }
        let mut conn = self.pool.acquire().await.db()?;
        let present: bool = sqlx::query_scalar("SELECT to_regclass('legacy_samples') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await
            .db()?;
        if !present {
            return Ok(());
        }
        let parts: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'legacy_samples'::regclass ORDER BY 1",
        )
        .fetch_all(&mut *conn)
        .await
        .db()?;
        drop(conn);
        let cutoff = self
            .config
            .retention
            .metric_cutoff(time::now())
            .unwrap_or(time::MIN_TIMESTAMP_MICROS);
        let mut moved = 0u64;
        for part in &parts {
            moved += self.migrate_legacy_partition(part, cutoff).await?;
        }
        let mut tx = self.pool.begin().await.db()?;
        advisory_xact_lock(&mut tx, &legacy_lock(&self.config.schema))
            .await
            .db()?;
        sqlx::raw_sql("DROP TABLE IF EXISTS legacy_samples")
            .execute(&mut *tx)
            .await
            .db()?;
        tx.commit().await.db()?;
        tracing::info!(backend = %self.config.name, partitions = parts.len(), samples = moved, "re-encoded the samples of schema version 3 as chunks");
        Ok(())
    }

    async fn migrate_legacy_partition(&self, part: &str, cutoff: i64) -> Result<u64> {
        let quoted = quote_ident(part);
        // The partitions the rows need, first (their own transactions).
        let mut conn = self.pool.acquire().await.db()?;
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&quoted)
            .fetch_one(&mut *conn)
            .await
            .db()?;
        if !exists {
            return Ok(0);
        }
        // Audited: a partition name read from the catalog, quoted.
        let windows: Vec<DateTime<Utc>> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT DISTINCT date_bin($1::interval, time, TIMESTAMPTZ 'epoch') FROM {quoted} \
             WHERE time >= $2"
        )))
        .bind(chrono::TimeDelta::microseconds(chunks::WINDOW))
        .bind(time::from_micros(cutoff))
        .fetch_all(&mut *conn)
        .await
        .db()?;
        drop(conn);
        let times: BTreeSet<i64> = windows.into_iter().map(time::to_micros).collect();
        self.ensure_partitions(&times).await?;

        let mut tx = self.pool.begin().await.db()?;
        advisory_xact_lock(&mut tx, &legacy_lock(&self.config.schema))
            .await
            .db()?;
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&quoted)
            .fetch_one(&mut *tx)
            .await
            .db()?;
        if !exists {
            // Another process migrated it meanwhile.
            tx.commit().await.db()?;
            return Ok(0);
        }
        let sids: Vec<(i64, String)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT DISTINCT x.sid, s.id FROM {quoted} x JOIN series s ON s.sid = x.sid \
             WHERE x.time >= $1 ORDER BY 1"
        )))
        .bind(time::from_micros(cutoff))
        .fetch_all(&mut *tx)
        .await
        .db()?;
        let mut moved = 0u64;
        for group in sids.chunks(SERIES_PER_READ as usize) {
            let keys: Vec<i64> = group.iter().map(|g| g.0).collect();
            let ids: BTreeMap<i64, &str> = group.iter().map(|g| (g.0, g.1.as_str())).collect();
            let rows = sqlx::query(AssertSqlSafe(format!(
                "SELECT sid, tags, time, value FROM {quoted} WHERE sid = ANY($1) AND time >= $2 \
                 ORDER BY sid, tags, time"
            )))
            .bind(&keys)
            .bind(time::from_micros(cutoff))
            .fetch_all(&mut *tx)
            .await
            .db()?;
            let mut samples: Vec<(i64, String, i64, f64)> = Vec::with_capacity(rows.len());
            for row in &rows {
                let t: DateTime<Utc> = row.try_get(2).db()?;
                samples.push((
                    row.try_get(0).db()?,
                    row.try_get(1).db()?,
                    time::to_micros(t),
                    row.try_get(3).db()?,
                ));
            }
            drop(rows);
            let mut groups: SampleGroups<'_> = BTreeMap::new();
            for (sid, tags, t, v) in &samples {
                let Some(id) = ids.get(sid) else { continue };
                groups
                    .entry((*sid, tags.as_str()))
                    .or_insert_with(|| (id, Vec::new()))
                    .1
                    .push((*t, *v));
            }
            moved += samples.len() as u64;
            match store_groups(&mut tx, groups).await {
                Ok(_) => {}
                Err(WriteFailure::Other(e)) => return Err(e),
                Err(WriteFailure::NoPartition) => {
                    return Err(aimon_core::Error::new(
                        aimon_core::ErrorKind::Backend,
                        format!("no partition covers some samples of {part}"),
                    ));
                }
            }
        }
        // Audited: as above.
        sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE {quoted}")))
            .execute(&mut *tx)
            .await
            .db()?;
        tx.commit().await.db()?;
        Ok(moved)
    }
}

/// The advisory-lock key of a schema's legacy-sample migration.
fn legacy_lock(schema: &str) -> String {
    format!("aimon.legacy.{schema}")
}
