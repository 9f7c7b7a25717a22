//! Alerts: one hash per alert (`j` = JSON, `x` = the index keys it is in) in the namespace
//! slot, indexed by status, severity, source and label.

use aimon_core::driver::AlertDriver;
use aimon_core::driver::Selection;
use aimon_core::driver::Valid;
use aimon_core::driver::ValidId;
use aimon_core::memory::truncate_alert;
use aimon_core::query::AlertQuery;
use aimon_core::{Alert, Error, Result, RetentionPolicy, StorageEvent, WriteReport, time};

use crate::backend::{RedisBackend, bytes, live_until_arg};
use crate::scripts::SCRIPTS;

impl RedisBackend {
    /// The `j` field of each item key, decoded.
    pub(crate) async fn fetch_items<T: serde::de::DeserializeOwned>(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<T>>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(1000) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("HGET").arg(key).arg("j");
            }
            for reply in self.pool.pipeline(&pipe).await? {
                out.push(match bytes(&reply) {
                    None => None,
                    Some(json) => {
                        Some(serde_json::from_slice(json).map_err(|_| Error::malformed("item"))?)
                    }
                });
            }
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl AlertDriver for RedisBackend {
    async fn save_alerts(&self, batch: Valid<'_, [Alert]>) -> Result<WriteReport> {
        let alerts = batch.get();
        let ttl = self.config.retention.alert_ttl;
        let cutoff = self.config.retention.alert_cutoff(time::now());
        let channel = self.keys.channel();
        let (master, registry) = (self.keys.alert_index(), self.keys.registry());
        let mut pipe = redis::pipe();
        if self.atomic_batches() {
            pipe.atomic();
        }
        let mut report = WriteReport::default();
        for alert in alerts {
            if !RetentionPolicy::is_live(cutoff, alert.updated_at) {
                report.expired += 1;
                continue;
            }
            let alert = truncate_alert(alert);
            let mut keys = vec![
                self.keys.alert(&alert.id),
                master.clone(),
                registry.clone(),
                self.keys.alerts_by_status(alert.status.as_str()),
                self.keys.alerts_by_severity(alert.severity.rank()),
                self.keys.alerts_by_source(&alert.source),
            ];
            keys.extend(
                alert
                    .labels
                    .iter()
                    .map(|(k, v)| self.keys.alerts_by_label(k, v)),
            );
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let event = serde_json::to_string(&StorageEvent::AlertWritten {
                backend: self.config.name.clone(),
                alert_id: alert.id.clone(),
                status: alert.status.to_string(),
            })?;
            let mut cmd = SCRIPTS.alert.cmd(&keys);
            cmd.arg(&alert.id)
                .arg(serde_json::to_string(&alert)?)
                .arg(live_until_arg(time::to_micros(alert.updated_at), ttl))
                .arg(&channel)
                .arg(event);
            pipe.add_command(cmd);
            report.written += 1;
        }
        if report.written > 0 {
            self.pool.write(&pipe).await?;
        }
        Ok(report)
    }

    async fn get_alert(&self, id: ValidId<'_>) -> Result<Option<Alert>> {
        let id = id.get();
        let cutoff = self.config.retention.alert_cutoff(time::now());
        let found = self.fetch_items::<Alert>(&[self.keys.alert(id)]).await?;
        Ok(found
            .into_iter()
            .flatten()
            .find(|a| a.id == id && RetentionPolicy::is_live(cutoff, a.updated_at)))
    }

    async fn query_alerts(&self, query: Selection<'_, AlertQuery>) -> Result<Vec<Alert>> {
        let selection = query;
        let query = selection.get();
        let now = time::now();
        let cutoff = self.config.retention.alert_cutoff(now);
        let index = if let Some(status) = query.status {
            self.keys.alerts_by_status(status.as_str())
        } else if let Some(severity) = query.severity {
            self.keys.alerts_by_severity(severity.rank())
        } else if let Some(source) = &query.source {
            self.keys.alerts_by_source(source)
        } else if let Some((k, v)) = query.labels.iter().next() {
            self.keys.alerts_by_label(k, v)
        } else {
            self.keys.alert_index()
        };
        let ids = self.live_ids(&index, time::to_micros(now)).await?;
        let keys: Vec<String> = ids.iter().map(|id| self.keys.alert(id)).collect();
        let items = self
            .fetch_items::<Alert>(&keys)
            .await?
            .into_iter()
            .flatten();
        Ok(selection.select_in_memory(items, cutoff))
    }
}
