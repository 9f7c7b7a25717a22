//! Alerts: one point per alert id (tag `id`, time 0), so a rewrite overwrites (rule 4).

use aimon_core::backend::{StorageEvent, WriteReport};
use aimon_core::driver::AlertDriver;
use aimon_core::driver::Selection;
use aimon_core::driver::Valid;
use aimon_core::driver::ValidId;
use aimon_core::memory::truncate_alert;
use aimon_core::query::AlertQuery;
use aimon_core::{Alert, Result, RetentionPolicy, time};

use crate::backend::{ALERTS, InfluxBackend, docs};
use crate::client::{LineBuffer, Target};
use crate::line;

impl InfluxBackend {
    /// Every live alert.
    pub(crate) async fn live_alerts(&self) -> Result<Vec<Alert>> {
        let cutoff = self.config.retention.alert_cutoff(time::now());
        let answer = self
            .client
            .query_one(&format!("SELECT \"doc\" FROM {}", self.from(ALERTS)))
            .await?;
        Ok(docs::<Alert>(&answer, "alert")?
            .into_iter()
            .map(|(_, a)| a)
            .filter(|a| RetentionPolicy::is_live(cutoff, a.updated_at))
            .collect())
    }
}

#[async_trait::async_trait]
impl AlertDriver for InfluxBackend {
    async fn save_alerts(&self, batch: Valid<'_, [Alert]>) -> Result<WriteReport> {
        let alerts = batch.get();
        let cutoff = self.config.retention.alert_cutoff(time::now());
        let mut report = WriteReport::default();
        let mut lines = LineBuffer::default();
        let mut events = Vec::new();
        for alert in alerts {
            if !RetentionPolicy::is_live(cutoff, alert.updated_at) {
                report.expired += 1;
                continue;
            }
            let alert = truncate_alert(alert);
            let s = &mut lines.text;
            s.push_str(ALERTS);
            s.push_str(",id=");
            line::push_tag(s, &alert.id);
            s.push_str(" doc=");
            line::push_string_field(
                s,
                &serde_json::to_string(&alert).map_err(aimon_core::Error::from)?,
            );
            s.push_str(",updated_at=");
            line::push_int(s, time::to_micros(alert.updated_at));
            s.push_str(" 0");
            lines.end_line();
            report.written += 1;
            events.push(StorageEvent::AlertWritten {
                backend: self.config.name.clone(),
                alert_id: alert.id.clone(),
                status: alert.status.to_string(),
            });
        }
        self.client.write_lines(Target::Meta, &lines).await?;
        events.into_iter().for_each(|e| self.publish(e));
        Ok(report)
    }

    async fn get_alert(&self, id: ValidId<'_>) -> Result<Option<Alert>> {
        let id = id.get();
        let cutoff = self.config.retention.alert_cutoff(time::now());
        let answer = self
            .client
            .query_one(&format!(
                "SELECT \"doc\" FROM {} WHERE \"id\" = {}",
                self.from(ALERTS),
                line::tag_literal(id)
            ))
            .await?;
        Ok(docs::<Alert>(&answer, "alert")?
            .into_iter()
            .map(|(_, a)| a)
            .find(|a| a.id == id && RetentionPolicy::is_live(cutoff, a.updated_at)))
    }

    async fn query_alerts(&self, query: Selection<'_, AlertQuery>) -> Result<Vec<Alert>> {
        let items = self.live_alerts().await?.into_iter();
        Ok(query.select_in_memory(items, None))
    }
}
