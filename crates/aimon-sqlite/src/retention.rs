//! `apply_retention`: a sweep of `DELETE`s over the indexed time columns.
//!
//! Reads never depend on the sweep: they filter expired rows themselves (see `metrics.rs`,
//! `alerts.rs`, `agent_states.rs`), so sweeping only reclaims space.

use aimon_core::{Result, RetentionReport, time};
use sqlx::Transaction;
use sqlx::sqlite::Sqlite;

use crate::backend::{DbResult, SqliteBackend};

/// Drops the tag-set index rows no sample can use any more, after the samples older than
/// `cutoff` were deleted: (series, tag set) rows of removed series or whose newest sample was
/// older than `cutoff`, then the pairs of tag sets no series uses.
async fn prune_tagset_index(tx: &mut Transaction<'static, Sqlite>, cutoff: i64) -> Result<()> {
    sqlx::query(
        "DELETE FROM series_tagsets WHERE last_ts < ? \
         OR series_id NOT IN (SELECT id FROM series)",
    )
    .bind(cutoff)
    .execute(&mut **tx)
    .await
    .db()?;
    sqlx::query("DELETE FROM tagset_pairs WHERE tags NOT IN (SELECT tags FROM series_tagsets)")
        .execute(&mut **tx)
        .await
        .db()?;
    Ok(())
}

impl SqliteBackend {
    pub(crate) async fn sweep(&self) -> Result<RetentionReport> {
        let now = time::now();
        let retention = self.config.retention;
        let mut report = RetentionReport::default();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.db()?;
        if let Some(cutoff) = retention.metric_cutoff(now) {
            // `series_id IN (…)` lets SQLite walk the primary key series by series.
            report.samples_removed = sqlx::query(
                "DELETE FROM samples WHERE series_id IN (SELECT id FROM series) AND ts < ?",
            )
            .bind(cutoff)
            .execute(&mut *tx)
            .await
            .db()?
            .rows_affected();
            report.series_removed = sqlx::query(
                "DELETE FROM series WHERE updated_at < ? \
                 AND NOT EXISTS (SELECT 1 FROM samples x WHERE x.series_id = series.id LIMIT 1)",
            )
            .bind(cutoff)
            .execute(&mut *tx)
            .await
            .db()?
            .rows_affected();
            prune_tagset_index(&mut tx, cutoff).await?;
        }
        if let Some(cutoff) = retention.alert_cutoff(now) {
            report.alerts_removed = sqlx::query("DELETE FROM alerts WHERE updated_at < ?")
                .bind(cutoff)
                .execute(&mut *tx)
                .await
                .db()?
                .rows_affected();
        }
        if let Some(cutoff) = retention.agent_state_cutoff(now) {
            report.agent_states_removed =
                sqlx::query("DELETE FROM agent_states WHERE last_heartbeat < ?")
                    .bind(cutoff)
                    .execute(&mut *tx)
                    .await
                    .db()?
                    .rows_affected();
        }
        tx.commit().await.db()?;
        tracing::debug!(backend = %self.config.name, ?report, "retention sweep");
        Ok(report)
    }
}
