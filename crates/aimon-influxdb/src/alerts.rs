//! Alerts: one point per alert id (tag `id`, time 0), so a rewrite overwrites (rule 4).

use aimon_core::backend::{StorageEvent, WriteReport};
use aimon_core::memory::truncate_alert;
use aimon_core::query::{self, AlertQuery};
use aimon_core::{Alert, DataKind, Result, RetentionPolicy, Tags, filter, time, validate};

use crate::backend::{ALERTS, InfluxBackend, docs};
use crate::client::{LineBuffer, Target};
use crate::line;

fn tags_match(sample_tags: &Tags, wanted: &Tags) -> bool {
    wanted.iter().all(|(k, v)| sample_tags.get(k) == Some(v))
}

impl InfluxBackend {
    pub(crate) async fn write_alerts(&self, alerts: &[Alert]) -> Result<WriteReport> {
        validate::alerts(alerts)?;
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

    pub(crate) async fn read_alert(&self, id: &str) -> Result<Option<Alert>> {
        validate::name("id", id)?;
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

    pub(crate) async fn select_alerts(&self, query: &AlertQuery) -> Result<Vec<Alert>> {
        let options = query.resolve()?;
        let range = query.range_micros();
        let mut found: Vec<Alert> = self
            .live_alerts()
            .await?
            .into_iter()
            .filter(|a| {
                query.status.is_none_or(|s| s == a.status)
                    && query.severity.is_none_or(|s| s == a.severity)
                    && query.min_severity.is_none_or(|s| a.severity >= s)
                    && query.source.as_ref().is_none_or(|s| *s == a.source)
                    && range.contains(time::to_micros(a.start_time))
                    && tags_match(&a.labels, &query.labels)
                    && filter::matches_all(a, &options)
            })
            .collect();
        filter::sort_and_page(
            &mut found,
            &options,
            query::tie_breaker(DataKind::Alerts).name,
        );
        Ok(found)
    }
}
