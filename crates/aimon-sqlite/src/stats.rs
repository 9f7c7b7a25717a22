//! `get_database_stats`: SQLite's version, live counts and file figures.

use std::collections::BTreeMap;

use aimon_core::{DatabaseStats, Result, StorageBackendType, time};

use crate::backend::{DbResult, SqliteBackend};
use crate::config::SqliteLocation;
use crate::error::count;

/// Live (unexpired) items.
pub(crate) struct LiveCounts {
    pub series: u64,
    pub samples: u64,
    pub alerts: u64,
    pub agent_states: u64,
}

impl SqliteBackend {
    pub(crate) async fn live_counts(&self) -> Result<LiveCounts> {
        let now = time::now();
        let retention = self.config.retention;
        let metric_cutoff = retention.metric_cutoff(now);
        let mut tx = self.pool.begin().await.db()?;
        let (series, alerts, agent_states): (i64, i64, i64) = sqlx::query_as(
            "SELECT \
             (SELECT count(*) FROM series s WHERE ?1 IS NULL OR s.updated_at >= ?1 \
              OR EXISTS (SELECT 1 FROM series_tagsets t JOIN chunks c ON c.tagset = t.id \
              WHERE t.series_id = s.id AND c.last_ts >= ?1 LIMIT 1)), \
             (SELECT count(*) FROM alerts WHERE ?2 IS NULL OR updated_at >= ?2), \
             (SELECT count(*) FROM agent_states WHERE ?3 IS NULL OR last_heartbeat >= ?3)",
        )
        .bind(metric_cutoff)
        .bind(retention.alert_cutoff(now))
        .bind(retention.agent_state_cutoff(now))
        .fetch_one(&mut *tx)
        .await
        .db()?;
        let samples = crate::chunks::count_live(&mut tx, metric_cutoff).await?;
        tx.commit().await.db()?;
        Ok(LiveCounts {
            series: count(series),
            samples,
            alerts: count(alerts),
            agent_states: count(agent_states),
        })
    }

    pub(crate) async fn database_stats(&self) -> Result<DatabaseStats> {
        let version: String = sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&self.pool)
            .await
            .db()?;
        let counts = self.live_counts().await?;
        let page_count: i64 = sqlx::query_scalar("PRAGMA page_count")
            .fetch_one(&self.pool)
            .await
            .db()?;
        let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
            .fetch_one(&self.pool)
            .await
            .db()?;
        let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&self.pool)
            .await
            .db()?;
        let mut extra = BTreeMap::new();
        let (path, file_size) = match &self.config.location {
            SqliteLocation::File(path) => (
                path.display().to_string(),
                std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            ),
            SqliteLocation::Memory => (":memory:".to_owned(), 0),
        };
        extra.insert("path".to_owned(), serde_json::json!(path));
        extra.insert("file_size_bytes".to_owned(), serde_json::json!(file_size));
        extra.insert("page_count".to_owned(), serde_json::json!(page_count));
        extra.insert("page_size".to_owned(), serde_json::json!(page_size));
        extra.insert("journal_mode".to_owned(), serde_json::json!(journal_mode));
        extra.insert(
            "max_connections".to_owned(),
            serde_json::json!(self.config.max_connections),
        );
        Ok(DatabaseStats {
            backend: self.config.name.clone(),
            backend_type: StorageBackendType::Sqlite,
            version,
            uptime_seconds: self.uptime_seconds(),
            series: counts.series,
            samples: counts.samples,
            alerts: counts.alerts,
            agent_states: counts.agent_states,
            // The database's pages, committed ones still in the WAL included (see the crate
            // docs, "Stats"); never negative.
            size_bytes: Some(page_count.max(0) as u64 * page_size.max(0) as u64),
            extra,
        })
    }
}
