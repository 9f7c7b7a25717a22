//! `stats`: the server's version and uptime (`/ping`, `SHOW DIAGNOSTICS`), exact live counts,
//! and InfluxDB's own figures (`SHOW SERIES CARDINALITY`, `SHOW STATS`).

use std::collections::BTreeMap;

use aimon_core::backend::DatabaseStats;
use aimon_core::query::MicrosRange;
use aimon_core::{Result, RetentionPolicy, StorageBackendType, Tags, time};
use chrono::{DateTime, Utc};

use crate::backend::{InfluxBackend, SAMPLES};
use crate::client::{Series, cell_i64};
use crate::config::ApiSettings;

/// The first row's value of `column` in the series named `name` (any, if `None`).
fn value<'a>(
    series: &'a [Series],
    name: Option<&str>,
    column: &str,
) -> Option<&'a serde_json::Value> {
    series
        .iter()
        .filter(|s| name.is_none_or(|n| s.name == n))
        .find_map(|s| s.column(column).and_then(|i| s.values.first()?.get(i)))
}

/// The bytes on disk of `database`'s shards in a `SHOW STATS FOR 'shard'` answer: each
/// shard's `diskBytes` (its TSM files plus its WAL segments, as InfluxDB 1.x computes it),
/// summed over the shards tagged with the database, of every retention policy. A database
/// without a shard yet holds nothing: 0.
fn shard_disk_bytes(stats: &[Series], database: &str) -> u64 {
    stats
        .iter()
        .filter(|s| {
            s.name == "shard" && s.tags.get("database").map(String::as_str) == Some(database)
        })
        .filter_map(|s| {
            let i = s.column("diskBytes")?;
            s.values.first()?.get(i).and_then(cell_i64)
        })
        .map(|bytes| u64::try_from(bytes).unwrap_or(0))
        .sum()
}

impl InfluxBackend {
    /// `size_bytes` of `stats`, or why it is unknown. Only InfluxDB 1.x reports shard sizes
    /// (`SHOW STATS`); 2.x and 3.x have no such statement behind their v1-compatible `/query`.
    async fn size_bytes(&self) -> std::result::Result<u64, String> {
        match &self.config.api {
            ApiSettings::V1 { database, .. } => self
                .client
                .query_one("SHOW STATS FOR 'shard'")
                .await
                .map(|stats| shard_disk_bytes(&stats, database))
                .map_err(|e| format!("SHOW STATS failed: {e}")),
            ApiSettings::V2 { .. } => Err(
                "the v2 API reports no bucket's size on disk (no SHOW STATS); not measured".into(),
            ),
        }
    }

    pub(crate) async fn database_stats(&self) -> Result<DatabaseStats> {
        let server = self.client.ping().await?;
        let now = time::now();
        let cutoff = self.config.retention.metric_cutoff(now);
        let live_from = cutoff
            .unwrap_or(time::MIN_TIMESTAMP_MICROS)
            .max(time::MIN_TIMESTAMP_MICROS);
        let samples = self
            .count_points(SAMPLES, "v", live_from, time::MAX_TIMESTAMP_MICROS)
            .await?;
        let docs = self.series_docs(None, None).await?;
        let stale: Vec<&str> = docs
            .iter()
            .filter(|m| !RetentionPolicy::is_live(cutoff, m.updated_at))
            .map(|m| m.id.as_str())
            .collect();
        let stale_live = if stale.is_empty() {
            0
        } else {
            self.sids_with_samples(
                Some(&stale),
                MicrosRange {
                    start: live_from,
                    end: time::MAX_TIMESTAMP_MICROS,
                },
                &Tags::new(),
            )
            .await?
            .len()
        };
        let series = (docs.len() - stale.len() + stale_live) as u64;
        let alerts = self.live_alerts().await?.len() as u64;
        let agent_states = self.live_agent_states(None).await?.len() as u64;

        let mut extra = BTreeMap::new();
        extra.insert(
            "api".to_owned(),
            serde_json::json!(self.config.api.generation()),
        );
        extra.insert(
            "database".to_owned(),
            serde_json::json!(self.config.api.database()),
        );
        if let ApiSettings::V1 {
            retention_policy, ..
        } = &self.config.api
        {
            extra.insert(
                "retention_policy".to_owned(),
                serde_json::json!(retention_policy),
            );
        }
        if let Some(build) = &server.build {
            extra.insert("build".to_owned(), serde_json::json!(build));
        }
        // InfluxDB's own figures: best effort, 2.x and 3.x answer few of these statements.
        let mut uptime_seconds = 0;
        if let Ok(diagnostics) = self.client.query_one("SHOW DIAGNOSTICS").await {
            let started = value(&diagnostics, Some("system"), "started")
                .and_then(|v| v.as_str())
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc));
            if let Some(started) = started {
                uptime_seconds = (Utc::now() - started).num_seconds().max(0) as u64;
            }
        }
        if let Ok(cardinality) = self.client.query_one("SHOW SERIES CARDINALITY").await {
            let total: i64 = cardinality
                .iter()
                .flat_map(|s| {
                    let i = s.column("count");
                    s.values
                        .iter()
                        .filter_map(move |row| i.and_then(|i| row.get(i)).and_then(cell_i64))
                })
                .sum();
            extra.insert(
                "influx_series_cardinality".to_owned(),
                serde_json::json!(total),
            );
        }
        if let Ok(stats) = self.client.query_one("SHOW STATS FOR 'write'").await
            && let Some(points) = value(&stats, Some("write"), "pointReq").and_then(cell_i64)
        {
            extra.insert(
                "server_points_written".to_owned(),
                serde_json::json!(points),
            );
        }
        let size_bytes = match self.size_bytes().await {
            Ok(bytes) => Some(bytes),
            Err(why) => {
                extra.insert("size_bytes_unknown".to_owned(), serde_json::json!(why));
                None
            }
        };
        Ok(DatabaseStats {
            backend: self.config.name.clone(),
            backend_type: StorageBackendType::Influxdb,
            version: server.version,
            uptime_seconds,
            series,
            samples,
            alerts,
            agent_states,
            size_bytes,
            extra,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SHOW STATS FOR 'shard'` as InfluxDB 1.6.7 answers it (two databases, one with a shard
    /// in each of two retention policies).
    fn shard_stats() -> Vec<Series> {
        let shard = |db: &str, rp: &str, id: u32, disk: u64| {
            serde_json::json!({
                "name": "shard",
                "tags": {"database": db, "engine": "tsm1", "id": id.to_string(),
                         "path": format!("/var/lib/influxdb/data/{db}/{rp}/{id}"),
                         "retentionPolicy": rp,
                         "walPath": format!("/var/lib/influxdb/wal/{db}/{rp}/{id}")},
                "columns": ["diskBytes", "fieldsCreate", "seriesCreate", "writeBytes",
                            "writePointsDropped", "writePointsErr", "writePointsOk", "writeReq",
                            "writeReqErr", "writeReqOk"],
                "values": [[disk, 2000, 1, 0, 0, 0, 2000, 1, 0, 1]]
            })
        };
        serde_json::from_value(serde_json::json!([
            shard("fleet", "autogen", 1, 20_337),
            shard("fleet", "aimon_meta", 2, 4_096),
            shard("other", "autogen", 3, 1_000_000),
        ]))
        .unwrap()
    }

    #[test]
    fn the_size_sums_the_shards_of_the_database_only() {
        assert_eq!(shard_disk_bytes(&shard_stats(), "fleet"), 24_433);
        assert_eq!(shard_disk_bytes(&shard_stats(), "other"), 1_000_000);
    }

    #[test]
    fn a_database_without_shards_holds_nothing() {
        assert_eq!(shard_disk_bytes(&shard_stats(), "fresh"), 0);
        assert_eq!(shard_disk_bytes(&[], "fresh"), 0);
    }
}
