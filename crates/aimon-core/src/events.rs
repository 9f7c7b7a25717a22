//! [`Publishing`]: the layer that publishes every successful write of the backend it wraps to a
//! [`LocalEvents`] bus, so that `subscribe`rs in this process see the writes of any backend,
//! whatever its own change feed (the [`StorageManager`] of `aimon-registry` wraps each call in
//! it).
//!
//! One event per item of the call: a call that stored nothing (every item expired or
//! superseded, see [`WriteReport`]) publishes nothing; in a batch that stored only part, events
//! name every item sent. A backend's own `subscribe` (where `pub_sub` is true) reports exactly
//! what it stored.
//!
//! [`StorageManager`]: https://docs.rs/aimon-registry

use std::path::Path;

use async_trait::async_trait;

use crate::backend::{
    BackupFormat, Capabilities, DatabaseStats, EventStream, LocalEvents, RetentionReport,
    StorageBackend, StorageEvent, TransferReport, WriteReport,
};
use crate::config::StorageBackendType;
use crate::error::Result;
use crate::model::{AgentState, Alert, Metric};
use crate::query::{AgentStateQuery, AlertQuery, HistoryQuery, HistorySeries, MetricQuery};
use crate::similarity::{Scored, SimilarAgentStatesQuery, SimilarAlertsQuery};

/// `inner`, with its successful writes published to `events`; `subscribe` answers from
/// `events`.
#[derive(Debug, Clone)]
pub struct Publishing<B> {
    inner: B,
    events: LocalEvents,
}

impl<B: StorageBackend> Publishing<B> {
    /// Wraps `inner`, publishing to `events`.
    pub fn new(inner: B, events: LocalEvents) -> Self {
        Publishing { inner, events }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    fn publish_if_stored(
        &self,
        report: &WriteReport,
        events: impl IntoIterator<Item = StorageEvent>,
    ) {
        if report.written > 0 {
            events.into_iter().for_each(|e| self.events.publish(e));
        }
    }
}

#[async_trait]
impl<B: StorageBackend> StorageBackend for Publishing<B> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn backend_type(&self) -> StorageBackendType {
        self.inner.backend_type()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn save_metrics(&self, metrics: &[Metric]) -> Result<WriteReport> {
        let report = self.inner.save_metrics(metrics).await?;
        self.publish_if_stored(
            &report,
            metrics.iter().map(|m| StorageEvent::MetricWritten {
                backend: self.name().to_owned(),
                metric_id: m.id.clone(),
                samples: m.values.len() as u64,
            }),
        );
        Ok(report)
    }

    async fn save_alerts(&self, alerts: &[Alert]) -> Result<WriteReport> {
        let report = self.inner.save_alerts(alerts).await?;
        self.publish_if_stored(
            &report,
            alerts.iter().map(|a| StorageEvent::AlertWritten {
                backend: self.name().to_owned(),
                alert_id: a.id.clone(),
                status: a.status.to_string(),
            }),
        );
        Ok(report)
    }

    async fn save_agent_states(&self, states: &[AgentState]) -> Result<WriteReport> {
        let report = self.inner.save_agent_states(states).await?;
        self.publish_if_stored(
            &report,
            states.iter().map(|s| StorageEvent::AgentStateWritten {
                backend: self.name().to_owned(),
                agent_id: s.agent_id.clone(),
                status: s.status.clone(),
            }),
        );
        Ok(report)
    }

    /// The events of this process's writes through any `Publishing` on the same bus.
    async fn subscribe(&self) -> Result<EventStream> {
        Ok(self.events.subscribe())
    }

    async fn get_metric(&self, id: &str) -> Result<Option<Metric>> {
        self.inner.get_metric(id).await
    }
    async fn query_metrics(&self, query: &MetricQuery) -> Result<Vec<Metric>> {
        self.inner.query_metrics(query).await
    }
    async fn metric_history(&self, query: &HistoryQuery) -> Result<Vec<HistorySeries>> {
        self.inner.metric_history(query).await
    }
    async fn get_alert(&self, id: &str) -> Result<Option<Alert>> {
        self.inner.get_alert(id).await
    }
    async fn query_alerts(&self, query: &AlertQuery) -> Result<Vec<Alert>> {
        self.inner.query_alerts(query).await
    }
    async fn get_agent_state(&self, agent_id: &str) -> Result<Option<AgentState>> {
        self.inner.get_agent_state(agent_id).await
    }
    async fn get_agent_states(&self, query: &AgentStateQuery) -> Result<Vec<AgentState>> {
        self.inner.get_agent_states(query).await
    }
    async fn find_similar_alerts(&self, query: &SimilarAlertsQuery) -> Result<Vec<Scored<Alert>>> {
        self.inner.find_similar_alerts(query).await
    }
    async fn find_similar_agent_states(
        &self,
        query: &SimilarAgentStatesQuery,
    ) -> Result<Vec<Scored<AgentState>>> {
        self.inner.find_similar_agent_states(query).await
    }
    async fn apply_retention(&self) -> Result<RetentionReport> {
        self.inner.apply_retention().await
    }
    async fn backup(&self, path: &Path, format: BackupFormat) -> Result<TransferReport> {
        self.inner.backup(path, format).await
    }
    async fn restore(&self, path: &Path, format: BackupFormat) -> Result<TransferReport> {
        self.inner.restore(path, format).await
    }
    async fn stats(&self) -> Result<DatabaseStats> {
        self.inner.stats().await
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Contract;
    use crate::memory::MemoryBackend;
    use crate::model::{MetricType, MetricValue};
    use crate::retention::RetentionPolicy;
    use futures::StreamExt;

    #[tokio::test]
    async fn writes_that_stored_something_are_published_with_the_inner_name() {
        let events = LocalEvents::new();
        let mut stream = events.subscribe();
        let inner = Contract::new(MemoryBackend::new("inner", RetentionPolicy::default()));
        let store = Publishing::new(inner, events.clone());
        let metric = Metric::new("m", "cpu", MetricType::Cpu)
            .with_value(MetricValue::new(crate::time::now(), 1.0));
        store.save_metric(&metric).await.unwrap();
        assert_eq!(
            stream.next().await,
            Some(StorageEvent::MetricWritten {
                backend: "inner".into(),
                metric_id: "m".into(),
                samples: 1
            })
        );
        // A rejected write publishes nothing: the next event is the alert's.
        let bad = Metric::new("", "cpu", MetricType::Cpu);
        assert!(store.save_metric(&bad).await.is_err());
        let alert = Alert::new("a1", "latency", crate::AlertSeverity::High, "agent-1");
        store.save_alert(&alert).await.unwrap();
        assert!(matches!(
            stream.next().await,
            Some(StorageEvent::AlertWritten { .. })
        ));
    }
}
