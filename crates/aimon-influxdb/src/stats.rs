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

impl InfluxBackend {
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
        Ok(DatabaseStats {
            backend: self.config.name.clone(),
            backend_type: StorageBackendType::Influxdb,
            version: server.version,
            uptime_seconds,
            series,
            samples,
            alerts,
            agent_states,
            extra,
        })
    }
}
