//! `apply_retention`: whole partitions older than `metric_ttl` are dropped (TimescaleDB:
//! `drop_chunks`), series past their life and expired alerts and agent states are deleted by
//! indexed `DELETE`s, and the partitions ahead of now are created.
//!
//! Reads never depend on this: they filter expired rows themselves, so the partition that
//! straddles the cutoff keeps its expired rows until it is wholly expired, and is filtered at
//! read time meanwhile.

use aimon_core::{Result, RetentionReport, time};
use sqlx::AssertSqlSafe;

use crate::backend::{DbResult, PostgresBackend};
use crate::error::count;
use crate::metrics::push_sample_exists;
use crate::schema::{advisory_xact_lock, chunks_partition_name, load_partitions, lock_key};
use crate::sql::{Run, Sql};
use crate::timescale;

impl PostgresBackend {
    /// Drops the partitions that end at or before `cutoff` and returns the rows they held. A
    /// few go per transaction ([`LockBudget::partitions_per_ddl`](crate::schema::LockBudget),
    /// under the schema's advisory lock, oldest first): dropping a partition locks it and its
    /// parent exclusively until commit, and a store with thousands of expired partitions
    /// would otherwise exhaust the server's lock table and block every reader meanwhile. A
    /// sweep cut short keeps what it committed; the next one drops the rest.
    async fn drop_expired_partitions(&self, cutoff: chrono::DateTime<chrono::Utc>) -> Result<u64> {
        let per_transaction = i64::try_from(self.lock_budget.partitions_per_ddl).unwrap_or(1);
        let mut removed = 0;
        let mut dropped = 0;
        loop {
            let mut tx = self.pool.begin().await.db()?;
            advisory_xact_lock(&mut tx, &lock_key(&self.config.schema))
                .await
                .db()?;
            let expired: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sample_partitions WHERE end_time <= $1 \
                 ORDER BY start_time LIMIT $2",
            )
            .bind(cutoff)
            .bind(per_transaction)
            .fetch_all(&mut *tx)
            .await
            .db()?;
            if expired.is_empty() {
                tx.commit().await.db()?;
                break;
            }
            for name in &expired {
                let quoted = crate::config::quote_ident(name);
                let chunks = crate::config::quote_ident(&chunks_partition_name(name));
                // Audited: partition names are aimon's own (`samples_p…`, `chunks_p…`), quoted.
                let rows: i64 =
                    sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {quoted}")))
                        .fetch_one(&mut *tx)
                        .await
                        .db()?;
                removed += count(rows) + chunked_samples(&mut tx, &chunks).await?;
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "DROP TABLE IF EXISTS {quoted}; DROP TABLE IF EXISTS {chunks}"
                )))
                .execute(&mut *tx)
                .await
                .db()?;
                sqlx::query("DELETE FROM sample_partitions WHERE name = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .db()?;
            }
            tx.commit().await.db()?;
            dropped += expired.len();
        }
        if dropped > 0 {
            tracing::debug!(backend = %self.config.name, dropped, "dropped expired partitions");
        }
        Ok(removed)
    }

    /// TimescaleDB mode: drops the chunks that end at or before `cutoff` (what the retention
    /// policy drops, now) and returns the rows they held, a few chunks per transaction like
    /// [`drop_expired_partitions`](Self::drop_expired_partitions): `drop_chunks` over thousands
    /// of chunks in one transaction locks each chunk, its TOAST table, its indexes and its
    /// compressed chunk until commit and fails with `out of shared memory`. Each transaction,
    /// under the schema's advisory lock (so two sweeps never count the same rows), counts the
    /// rows before the end of its oldest chunks (every older chunk is gone already: chunks
    /// never overlap) and drops those chunks with `drop_chunks(older_than => that end)`. The
    /// chunk straddling the cutoff stays, its expired rows hidden from reads.
    async fn drop_expired_chunks(&self, cutoff: chrono::DateTime<chrono::Utc>) -> Result<u64> {
        let per_transaction = self.lock_budget.partitions_per_ddl.max(1);
        let ends: Vec<chrono::DateTime<chrono::Utc>> =
            sqlx::query_scalar(timescale::EXPIRED_CHUNK_ENDS_QUERY)
                .bind(&self.config.schema)
                .bind(cutoff)
                .fetch_all(&self.pool)
                .await
                .db()?;
        let mut removed = 0;
        for group in ends.chunks(per_transaction) {
            let Some(&end) = group.last() else { continue };
            let mut tx = self.pool.begin().await.db()?;
            advisory_xact_lock(&mut tx, &lock_key(&self.config.schema))
                .await
                .db()?;
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM samples WHERE time < $1")
                .bind(end)
                .fetch_one(&mut *tx)
                .await
                .db()?;
            sqlx::query(AssertSqlSafe(timescale::drop_chunks_statement(
                &self.config,
            )))
            .bind(end)
            .execute(&mut *tx)
            .await
            .db()?;
            tx.commit().await.db()?;
            removed += count(rows);
        }
        if !ends.is_empty() {
            tracing::debug!(backend = %self.config.name, dropped = ends.len(), "dropped expired chunks");
        }
        Ok(removed)
    }

    pub(crate) async fn sweep(&self) -> Result<RetentionReport> {
        let now = time::now();
        let retention = self.config.retention;
        let mut report = RetentionReport::default();
        if let Some(cutoff) = retention.metric_cutoff(now) {
            let cutoff_time = time::from_micros(cutoff);
            if self.timescale {
                report.samples_removed = self.drop_expired_chunks(cutoff_time).await?;
            } else {
                report.samples_removed = self.drop_expired_partitions(cutoff_time).await?;
            }
        }
        // Partitions are gone and their exclusive locks released before the row sweeps, which
        // run as statements of their own (each is whole by itself; a sweep cut short is
        // finished by the next one, and reads filter expired rows meanwhile).
        if !self.timescale {
            let mut conn = self.pool.acquire().await.db()?;
            let partitions = load_partitions(&mut conn).await?;
            *self.partitions.lock().unwrap_or_else(|e| e.into_inner()) = partitions;
        }
        if let Some(cutoff) = retention.metric_cutoff(now) {
            let cutoff_time = time::from_micros(cutoff);
            let mut sql = Sql::new("DELETE FROM series s WHERE s.updated_at < ");
            sql.bind(cutoff_time).push(" AND NOT ");
            push_sample_exists(
                &mut sql,
                self.timescale,
                cutoff,
                time::MAX_TIMESTAMP_MICROS,
                None,
            );
            report.series_removed = sql.query().execute(&self.pool).await.db()?.rows_affected();
            // Tag-set rows whose newest sample has expired (those of removed series went with
            // them, by cascade).
            sqlx::query("DELETE FROM series_tagsets WHERE last_bound < $1")
                .bind(cutoff_time)
                .execute(&self.pool)
                .await
                .db()?;
        }
        if let Some(cutoff) = retention.alert_cutoff(now) {
            report.alerts_removed = sqlx::query("DELETE FROM alerts WHERE updated_at < $1")
                .bind(time::from_micros(cutoff))
                .execute(&self.pool)
                .await
                .db()?
                .rows_affected();
        }
        if let Some(cutoff) = retention.agent_state_cutoff(now) {
            report.agent_states_removed =
                sqlx::query("DELETE FROM agent_states WHERE last_heartbeat < $1")
                    .bind(time::from_micros(cutoff))
                    .execute(&self.pool)
                    .await
                    .db()?
                    .rows_affected();
        }
        if !self.timescale {
            self.create_partitions_ahead().await?;
        }
        tracing::debug!(backend = %self.config.name, ?report, "retention sweep");
        Ok(report)
    }
}

/// The samples held by the chunks' partition `quoted` (a quoted name, or `NULL` count where it
/// does not exist): the summaries' counts of windows stored in one row, the merged samples of
/// windows in fragments (an overwritten timestamp counts once).
async fn chunked_samples(tx: &mut sqlx::PgConnection, quoted: &str) -> Result<u64> {
    // Audited: an aimon partition name, quoted.
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(quoted)
        .fetch_one(&mut *tx)
        .await
        .db()?;
    if !exists {
        return Ok(0);
    }
    let whole: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT sum(n)::bigint FROM (SELECT sum(count) AS n FROM {quoted} \
         GROUP BY tsid, window_start HAVING count(*) = 1) w"
    )))
    .fetch_one(&mut *tx)
    .await
    .db()?;
    let fragments: Vec<(i64, chrono::DateTime<chrono::Utc>, Vec<u8>)> =
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT tsid, window_start, data FROM {quoted} c WHERE EXISTS (SELECT 1 FROM {quoted} d \
             WHERE d.tsid = c.tsid AND d.window_start = c.window_start AND d.seq <> c.seq) \
             ORDER BY tsid, window_start, seq"
        )))
        .fetch_all(&mut *tx)
        .await
        .db()?;
    let mut total = count(whole.unwrap_or(0));
    let mut windows: std::collections::BTreeMap<(i64, i64), std::collections::BTreeSet<i64>> =
        std::collections::BTreeMap::new();
    for (tsid, window, data) in fragments {
        // A damaged fragment of an expired window is dropped with it: counted as its summary
        // cannot be trusted, by nothing.
        if let Ok(part) = aimon_core::chunk::decode(&data) {
            windows
                .entry((tsid, time::to_micros(window)))
                .or_default()
                .extend(part.timestamps);
        }
    }
    total += windows.values().map(|w| w.len() as u64).sum::<u64>();
    Ok(total)
}
