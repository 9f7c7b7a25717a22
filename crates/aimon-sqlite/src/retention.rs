//! `apply_retention`: a sweep of `DELETE`s over the indexed time columns; samples go by whole
//! chunks.
//!
//! Reads never depend on the sweep: they filter expired rows themselves (see `metrics.rs`,
//! `alerts.rs`, `agent_states.rs`), so sweeping only reclaims space.

use aimon_core::{Result, RetentionReport, time};
use sqlx::Transaction;
use sqlx::sqlite::Sqlite;

use crate::backend::{DbResult, SqliteBackend};

/// Drops the registry rows no chunk uses any more (their samples all expired, or their series
/// was removed), then the pairs of tag sets no series uses.
async fn prune_tagsets(tx: &mut Transaction<'static, Sqlite>) -> Result<()> {
    sqlx::query(
        "DELETE FROM series_tagsets WHERE series_id NOT IN (SELECT id FROM series) \
         OR NOT EXISTS (SELECT 1 FROM chunks c WHERE c.tagset = series_tagsets.id LIMIT 1)",
    )
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
            report.samples_removed = crate::chunks::drop_expired(&mut tx, cutoff).await?;
            report.series_removed = sqlx::query(
                "DELETE FROM series WHERE updated_at < ? AND NOT EXISTS (SELECT 1 \
                 FROM series_tagsets t JOIN chunks c ON c.tagset = t.id \
                 WHERE t.series_id = series.id LIMIT 1)",
            )
            .bind(cutoff)
            .execute(&mut *tx)
            .await
            .db()?
            .rows_affected();
            prune_tagsets(&mut tx).await?;
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
