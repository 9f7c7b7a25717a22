//! `apply_retention`: InfluxDB drops whole shard groups of the samples' retention policy by
//! itself, at least an hour wide; this removes the rest of the expired data now (rule 6).

use std::collections::BTreeSet;

use aimon_core::backend::RetentionReport;
use aimon_core::query::MicrosRange;
use aimon_core::{Result, RetentionPolicy, Tags, time};

use crate::backend::{AGENT_STATES, ALERTS, InfluxBackend, SAMPLES, SERIES, any_of, time_range};
use crate::client::cell_i64;
use crate::config::ApiSettings;
use crate::line;

const IDS_PER_DELETE: usize = 200;

impl InfluxBackend {
    /// `DELETE FROM measurement WHERE ("tag" = … OR …)` in chunks.
    async fn delete_by_tag(&self, measurement: &str, tag: &str, values: &[&str]) -> Result<()> {
        let statements: Vec<String> = values
            .chunks(IDS_PER_DELETE)
            .map(|chunk| {
                format!(
                    "DELETE FROM {} WHERE {}",
                    line::ident(measurement),
                    any_of(tag, chunk)
                )
            })
            .collect();
        for statement in statements {
            self.client.query(&statement).await?;
        }
        Ok(())
    }

    /// How many points of `measurement` (field `field`) lie in `[start, end)`.
    pub(crate) async fn count_points(
        &self,
        measurement: &str,
        field: &str,
        start: i64,
        end: i64,
    ) -> Result<u64> {
        if start >= end {
            return Ok(0);
        }
        let answer = self
            .client
            .query_one(&format!(
                "SELECT count({}) FROM {} WHERE {}",
                line::ident(field),
                self.from(measurement),
                time_range(start, end)
            ))
            .await?;
        Ok(answer
            .iter()
            .flat_map(|s| {
                let i = s.column("count");
                s.values
                    .iter()
                    .filter_map(move |row| i.and_then(|i| row.get(i)).and_then(cell_i64))
            })
            .map(|n| u64::try_from(n).unwrap_or(0))
            .sum())
    }

    pub(crate) async fn sweep(&self) -> Result<RetentionReport> {
        // InfluxQL `DELETE` is a 1.x statement: 2.x/3.x refuse it (their buckets expire data
        // by their own retention), so asking is `Unsupported`, not a server error.
        if matches!(self.config.api, ApiSettings::V2 { .. })
            || self.server.major().is_some_and(|major| major >= 2)
        {
            return Err(aimon_core::Error::new(
                aimon_core::ErrorKind::Unsupported,
                format!(
                    "apply_retention on InfluxDB {}: data expires by the bucket's retention \
                     (reads filter by the TTL meanwhile)",
                    self.server.version
                ),
            ));
        }
        let now = time::now();
        let retention = self.config.retention;
        let mut report = RetentionReport::default();
        if let Some(cutoff) = retention.metric_cutoff(now) {
            let cutoff = cutoff.max(time::MIN_TIMESTAMP_MICROS);
            report.samples_removed = self
                .count_points(SAMPLES, "v", time::MIN_TIMESTAMP_MICROS, cutoff)
                .await?;
            if report.samples_removed > 0 {
                self.client
                    .query(&format!(
                        "DELETE FROM {} WHERE time < {}",
                        line::ident(SAMPLES),
                        cutoff.saturating_mul(1000)
                    ))
                    .await?;
            }
            let stale: Vec<String> = self
                .series_docs(None, None)
                .await?
                .into_iter()
                .filter(|m| !RetentionPolicy::is_live(Some(cutoff), m.updated_at))
                .map(|m| m.id)
                .collect();
            let stale_refs: Vec<&str> = stale.iter().map(String::as_str).collect();
            let live = MicrosRange {
                start: cutoff,
                end: time::MAX_TIMESTAMP_MICROS,
            };
            let with_samples = if stale_refs.is_empty() {
                BTreeSet::new()
            } else {
                self.sids_with_samples(Some(&stale_refs), live, &Tags::new())
                    .await?
            };
            let gone: Vec<&str> = stale_refs
                .into_iter()
                .filter(|id| !with_samples.contains(*id))
                .collect();
            self.delete_by_tag(SERIES, "id", &gone).await?;
            report.series_removed = gone.len() as u64;
            let mut known = self.created.lock().unwrap_or_else(|e| e.into_inner());
            for id in gone {
                known.remove(id);
            }
        }
        if let Some(cutoff) = retention.alert_cutoff(now) {
            let answer = self
                .client
                .query_one(&format!("SELECT \"doc\" FROM {}", self.from(ALERTS)))
                .await?;
            let expired: Vec<String> = crate::backend::docs::<aimon_core::Alert>(&answer, "alert")?
                .into_iter()
                .map(|(_, a)| a)
                .filter(|a| !RetentionPolicy::is_live(Some(cutoff), a.updated_at))
                .map(|a| a.id)
                .collect();
            let refs: Vec<&str> = expired.iter().map(String::as_str).collect();
            self.delete_by_tag(ALERTS, "id", &refs).await?;
            report.alerts_removed = refs.len() as u64;
        }
        let everyone = self.all_latest_heartbeats().await?;
        if let Some(cutoff) = retention.agent_state_cutoff(now) {
            let cutoff = cutoff.max(time::MIN_TIMESTAMP_MICROS);
            report.agent_states_removed =
                everyone.iter().filter(|(_, hb)| *hb < cutoff).count() as u64;
            if cutoff > time::MIN_TIMESTAMP_MICROS {
                self.client
                    .query(&format!(
                        "DELETE FROM {} WHERE time < {}",
                        line::ident(AGENT_STATES),
                        cutoff.saturating_mul(1000)
                    ))
                    .await?;
            }
        }
        // Superseded states (the history behind each agent's latest) go whatever the TTL:
        // nothing reads them. They are not items, so the report does not count them.
        let live: Vec<(String, i64)> = match retention.agent_state_cutoff(now) {
            Some(cutoff) => everyone.into_iter().filter(|(_, t)| *t >= cutoff).collect(),
            None => everyone,
        };
        // Housekeeping after the TTL's deletes: a failure here must not hide their report.
        match self.prune_superseded_states(&live).await {
            Ok(0) => {}
            Ok(pruned) => tracing::debug!(pruned, "superseded agent states deleted"),
            Err(e) => {
                tracing::warn!(error = %e, "superseded agent states not pruned; the next sweep retries")
            }
        }
        Ok(report)
    }
}
