//! [`StorageManager`]: named backends, a default, per-kind routing and in-process events.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use aimon_core::{
    AgentState, AgentStateQuery, Alert, AlertQuery, BackupFormat, DataKind, DatabaseStats, Error,
    ErrorKind, EventStream, HistoryQuery, HistorySeries, LocalEvents, Metric, MetricQuery, Result,
    RetentionReport, Scored, SimilarAgentStatesQuery, SimilarAlertsQuery, StorageBackend,
    StorageBackendType, StorageConfig, StorageEvent, TransferReport, WriteReport,
};

type Backend = Arc<dyn StorageBackend>;

#[derive(Default)]
struct Inner {
    backends: BTreeMap<String, Backend>,
    default: Option<String>,
    routes: BTreeMap<DataKind, String>,
}

/// Holds named backends, one of them the default, and routes each call to one of them: the
/// backend named in the call, else the one routed for the call's data kind, else the default.
///
/// Every write that succeeds is also published to [`StorageManager::subscribe`]rs in this process,
/// whatever the backend: one event per item of the call. A call that stored nothing (every item
/// expired or superseded, see [`WriteReport`]) publishes nothing; in a batch that stored only
/// part, events name every item sent. A backend's own `subscribe` (where `pub_sub` is true)
/// reports exactly what it stored.
///
/// ```
/// use aimon_core::{DataKind, StorageConfig};
/// use aimon_registry::StorageManager;
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let manager = StorageManager::new();
/// manager.initialize_backend(StorageConfig::from_url("hot", "memory://")?.default_backend(true)).await?;
/// manager.initialize_backend(StorageConfig::from_url("history", "memory://")?).await?;
/// manager.route(DataKind::Metrics, "history")?;
/// assert_eq!(manager.get_backend(None)?.name(), "hot");
/// # Ok::<(), aimon_core::Error>(())
/// # }).unwrap();
/// ```
pub struct StorageManager {
    inner: RwLock<Inner>,
    events: LocalEvents,
}

impl Default for StorageManager {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for StorageManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.read();
        f.debug_struct("StorageManager")
            .field("backends", &inner.backends.keys().collect::<Vec<_>>())
            .field("default", &inner.default)
            .field("routes", &inner.routes)
            .finish()
    }
}

impl StorageManager {
    pub fn new() -> Self {
        StorageManager {
            inner: RwLock::new(Inner::default()),
            events: LocalEvents::new(),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the backend `config` describes and adds it under `config.name`. It becomes the
    /// default when `config.default` is set or when it is the first backend.
    pub async fn initialize_backend(&self, config: StorageConfig) -> Result<Backend> {
        if self.read().backends.contains_key(&config.name) {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("a backend named {:?} exists already", config.name),
            ));
        }
        let backend = crate::open(&config).await?;
        self.add_backend(backend.clone(), config.default)
            .inspect_err(|_| {
                // Lost a race with another initialize of the same name: release the new connection.
                let backend = backend.clone();
                tokio::spawn(async move { backend.close().await });
            })?;
        Ok(backend)
    }

    /// Opens every configuration; if one fails, the ones opened by this call are closed again
    /// and the error is returned. At most one may be marked `default`.
    pub async fn initialize_backends(&self, configs: Vec<StorageConfig>) -> Result<()> {
        let defaults: Vec<_> = configs
            .iter()
            .filter(|c| c.default)
            .map(|c| c.name.as_str())
            .collect();
        if defaults.len() > 1 {
            return Err(Error::config(format!(
                "more than one default backend: {}",
                defaults.join(", ")
            )));
        }
        let mut opened = Vec::new();
        for config in configs {
            let name = config.name.clone();
            match self.initialize_backend(config).await {
                Ok(_) => opened.push(name),
                Err(e) => {
                    for name in opened {
                        let _ = self.close(Some(&name)).await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Adds a backend that was built elsewhere, e.g. a custom implementation of the trait.
    pub fn add_backend(&self, backend: Backend, make_default: bool) -> Result<()> {
        let mut inner = self.write();
        let name = backend.name().to_owned();
        if inner.backends.contains_key(&name) {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("a backend named {name:?} exists already"),
            ));
        }
        if make_default || inner.default.is_none() {
            inner.default = Some(name.clone());
        }
        inner.backends.insert(name, backend);
        Ok(())
    }

    /// Makes `name` the default backend.
    pub fn set_default(&self, name: &str) -> Result<()> {
        let mut inner = self.write();
        Self::lookup(&inner, name)?;
        inner.default = Some(name.to_owned());
        Ok(())
    }

    /// Sends every call for `kind` without an explicit backend name to `name`.
    pub fn route(&self, kind: DataKind, name: &str) -> Result<()> {
        let mut inner = self.write();
        Self::lookup(&inner, name)?;
        inner.routes.insert(kind, name.to_owned());
        Ok(())
    }

    /// The names of the backends, in order.
    pub fn backend_names(&self) -> Vec<String> {
        self.read().backends.keys().cloned().collect()
    }

    fn lookup(inner: &Inner, name: &str) -> Result<Backend> {
        inner.backends.get(name).cloned().ok_or_else(|| {
            let known: Vec<_> = inner.backends.keys().map(String::as_str).collect();
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "no backend named {name:?}; configured: {}",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            )
        })
    }

    /// The backend named `name`, or the default one.
    pub fn get_backend(&self, name: Option<&str>) -> Result<Backend> {
        let inner = self.read();
        match name.or(inner.default.as_deref()) {
            Some(name) => Self::lookup(&inner, name),
            None => Err(Error::new(
                ErrorKind::NotFound,
                "no backend has been initialized",
            )),
        }
    }

    /// The first backend (by name) of a type.
    pub fn get_backend_by_type(&self, backend_type: StorageBackendType) -> Result<Backend> {
        self.read()
            .backends
            .values()
            .find(|b| b.backend_type() == backend_type)
            .cloned()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("no {backend_type} backend is configured"),
                )
            })
    }

    fn for_kind(&self, kind: DataKind, name: Option<&str>) -> Result<Backend> {
        let route = if name.is_none() {
            self.read().routes.get(&kind).cloned()
        } else {
            None
        };
        self.get_backend(name.or(route.as_deref()))
    }

    /// Closes one backend and removes it, or every backend when `name` is `None`.
    pub async fn close(&self, name: Option<&str>) -> Result<()> {
        let closing: Vec<Backend> = {
            let mut inner = self.write();
            match name {
                Some(name) => {
                    let backend = Self::lookup(&inner, name)?;
                    inner.backends.remove(name);
                    inner.routes.retain(|_, n| n != name);
                    if inner.default.as_deref() == Some(name) {
                        inner.default = inner.backends.keys().next().cloned();
                    }
                    vec![backend]
                }
                None => {
                    inner.routes.clear();
                    inner.default = None;
                    std::mem::take(&mut inner.backends).into_values().collect()
                }
            }
        };
        let mut first_error = None;
        for backend in closing {
            if let Err(e) = backend.close().await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// In-process events for every successful write through this manager.
    pub fn subscribe(&self) -> EventStream {
        self.events.subscribe()
    }

    fn publish_if_stored(
        &self,
        report: &WriteReport,
        events: impl IntoIterator<Item = StorageEvent>,
    ) {
        if report.written == 0 {
            return;
        }
        for event in events {
            self.events.publish(event);
        }
    }

    pub async fn save_metric(&self, metric: &Metric, backend: Option<&str>) -> Result<WriteReport> {
        self.save_metrics(std::slice::from_ref(metric), backend)
            .await
    }

    pub async fn save_metrics(
        &self,
        metrics: &[Metric],
        backend: Option<&str>,
    ) -> Result<WriteReport> {
        let target = self.for_kind(DataKind::Metrics, backend)?;
        let report = target.save_metrics(metrics).await?;
        self.publish_if_stored(
            &report,
            metrics.iter().map(|m| StorageEvent::MetricWritten {
                backend: target.name().to_owned(),
                metric_id: m.id.clone(),
                samples: m.values.len() as u64,
            }),
        );
        Ok(report)
    }

    pub async fn get_metric(&self, id: &str, backend: Option<&str>) -> Result<Option<Metric>> {
        self.for_kind(DataKind::Metrics, backend)?
            .get_metric(id)
            .await
    }

    pub async fn query_metrics(
        &self,
        query: &MetricQuery,
        backend: Option<&str>,
    ) -> Result<Vec<Metric>> {
        self.for_kind(DataKind::Metrics, backend)?
            .query_metrics(query)
            .await
    }

    pub async fn get_metric_history(
        &self,
        query: &HistoryQuery,
        backend: Option<&str>,
    ) -> Result<Vec<HistorySeries>> {
        self.for_kind(DataKind::Metrics, backend)?
            .metric_history(query)
            .await
    }

    pub async fn save_alert(&self, alert: &Alert, backend: Option<&str>) -> Result<WriteReport> {
        self.save_alerts(std::slice::from_ref(alert), backend).await
    }

    pub async fn save_alerts(
        &self,
        alerts: &[Alert],
        backend: Option<&str>,
    ) -> Result<WriteReport> {
        let target = self.for_kind(DataKind::Alerts, backend)?;
        let report = target.save_alerts(alerts).await?;
        self.publish_if_stored(
            &report,
            alerts.iter().map(|a| StorageEvent::AlertWritten {
                backend: target.name().to_owned(),
                alert_id: a.id.clone(),
                status: a.status.to_string(),
            }),
        );
        Ok(report)
    }

    pub async fn get_alert(&self, id: &str, backend: Option<&str>) -> Result<Option<Alert>> {
        self.for_kind(DataKind::Alerts, backend)?
            .get_alert(id)
            .await
    }

    pub async fn query_alerts(
        &self,
        query: &AlertQuery,
        backend: Option<&str>,
    ) -> Result<Vec<Alert>> {
        self.for_kind(DataKind::Alerts, backend)?
            .query_alerts(query)
            .await
    }

    /// Similar alerts on the backend named, else the one alerts are routed to, else the default.
    pub async fn find_similar_alerts(
        &self,
        query: &SimilarAlertsQuery,
        backend: Option<&str>,
    ) -> Result<Vec<Scored<Alert>>> {
        self.for_kind(DataKind::Alerts, backend)?
            .find_similar_alerts(query)
            .await
    }

    pub async fn save_agent_state(
        &self,
        state: &AgentState,
        backend: Option<&str>,
    ) -> Result<WriteReport> {
        self.save_agent_states(std::slice::from_ref(state), backend)
            .await
    }

    pub async fn save_agent_states(
        &self,
        states: &[AgentState],
        backend: Option<&str>,
    ) -> Result<WriteReport> {
        let target = self.for_kind(DataKind::AgentStates, backend)?;
        let report = target.save_agent_states(states).await?;
        self.publish_if_stored(
            &report,
            states.iter().map(|s| StorageEvent::AgentStateWritten {
                backend: target.name().to_owned(),
                agent_id: s.agent_id.clone(),
                status: s.status.clone(),
            }),
        );
        Ok(report)
    }

    pub async fn get_agent_state(
        &self,
        agent_id: &str,
        backend: Option<&str>,
    ) -> Result<Option<AgentState>> {
        self.for_kind(DataKind::AgentStates, backend)?
            .get_agent_state(agent_id)
            .await
    }

    pub async fn get_agent_states(
        &self,
        query: &AgentStateQuery,
        backend: Option<&str>,
    ) -> Result<Vec<AgentState>> {
        self.for_kind(DataKind::AgentStates, backend)?
            .get_agent_states(query)
            .await
    }

    /// Similar agent states, routed like [`StorageManager::get_agent_states`].
    pub async fn find_similar_agent_states(
        &self,
        query: &SimilarAgentStatesQuery,
        backend: Option<&str>,
    ) -> Result<Vec<Scored<AgentState>>> {
        self.for_kind(DataKind::AgentStates, backend)?
            .find_similar_agent_states(query)
            .await
    }

    /// Applies retention on one backend, or on all when `backend` is `None`; the reports are
    /// summed.
    pub async fn apply_retention(&self, backend: Option<&str>) -> Result<RetentionReport> {
        let targets: Vec<Backend> = match backend {
            Some(name) => vec![self.get_backend(Some(name))?],
            None => self.read().backends.values().cloned().collect(),
        };
        let mut total = RetentionReport::default();
        for target in targets {
            let r = target.apply_retention().await?;
            total.samples_removed += r.samples_removed;
            total.series_removed += r.series_removed;
            total.alerts_removed += r.alerts_removed;
            total.agent_states_removed += r.agent_states_removed;
        }
        Ok(total)
    }

    pub async fn backup_database(
        &self,
        path: &Path,
        format: BackupFormat,
        backend: Option<&str>,
    ) -> Result<TransferReport> {
        self.get_backend(backend)?.backup(path, format).await
    }

    pub async fn restore_database(
        &self,
        path: &Path,
        format: BackupFormat,
        backend: Option<&str>,
    ) -> Result<TransferReport> {
        self.get_backend(backend)?.restore(path, format).await
    }

    pub async fn get_database_stats(&self, backend: Option<&str>) -> Result<DatabaseStats> {
        self.get_backend(backend)?.stats().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aimon_core::{AlertSeverity, MetricType, MetricValue};
    use futures::StreamExt;

    async fn two_backends() -> StorageManager {
        let manager = StorageManager::new();
        manager
            .initialize_backends(vec![
                StorageConfig::from_url("hot", "memory://").unwrap(),
                StorageConfig::from_url("cold", "memory://")
                    .unwrap()
                    .default_backend(true),
            ])
            .await
            .unwrap();
        manager
    }

    #[tokio::test]
    async fn the_default_backend_is_the_one_marked_default() {
        let manager = two_backends().await;
        assert_eq!(manager.get_backend(None).unwrap().name(), "cold");
        assert_eq!(
            manager
                .get_backend_by_type(StorageBackendType::Memory)
                .unwrap()
                .name(),
            "cold"
        );
    }

    #[tokio::test]
    async fn unknown_backend_names_are_not_found_and_list_the_configured() {
        let manager = two_backends().await;
        let err = manager.get_backend(Some("warm")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("cold, hot"), "{err}");
    }

    #[tokio::test]
    async fn duplicate_names_conflict() {
        let manager = two_backends().await;
        let err = manager
            .initialize_backend(StorageConfig::from_url("hot", "memory://").unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
    }

    #[tokio::test]
    async fn routing_sends_a_kind_to_its_backend() {
        let manager = two_backends().await;
        manager.route(DataKind::Alerts, "hot").unwrap();
        let alert = Alert::new("a1", "latency", AlertSeverity::High, "agent-1");
        manager.save_alert(&alert, None).await.unwrap();
        assert!(
            manager
                .get_alert("a1", Some("hot"))
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            manager
                .get_alert("a1", Some("cold"))
                .await
                .unwrap()
                .is_none()
        );
        let metric = Metric::new("m", "cpu", MetricType::Cpu)
            .with_value(MetricValue::new(aimon_core::time::now(), 1.0));
        manager.save_metric(&metric, None).await.unwrap();
        assert!(
            manager
                .get_metric("m", Some("cold"))
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn similarity_queries_follow_the_alert_route() {
        let manager = two_backends().await;
        manager.route(DataKind::Alerts, "hot").unwrap();
        for (id, name) in [("a1", "GPU out of memory"), ("a2", "rate limit exceeded")] {
            let alert = Alert::new(id, name, AlertSeverity::High, "agent-1");
            manager.save_alert(&alert, None).await.unwrap();
        }
        let query = SimilarAlertsQuery::text("out of memory on the GPU").limit(1);
        let found = manager.find_similar_alerts(&query, None).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].item.id, "a1");
        let cold = manager
            .find_similar_alerts(&query, Some("cold"))
            .await
            .unwrap();
        assert!(cold.is_empty());
        let missing = SimilarAgentStatesQuery::item("nobody");
        let err = manager
            .find_similar_agent_states(&missing, None)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn failed_initialize_backends_leaves_nothing_open() {
        let manager = StorageManager::new();
        let err = manager
            .initialize_backends(vec![
                StorageConfig::from_url("ok", "memory://").unwrap(),
                StorageConfig::from_url("bad", "memory://")
                    .unwrap()
                    .option("nope", 1),
            ])
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
        assert!(manager.backend_names().is_empty());
    }

    #[tokio::test]
    async fn writes_are_published_in_process() {
        let manager = two_backends().await;
        let mut events = manager.subscribe();
        let state = AgentState::new("s1", "agent-7", "running");
        manager.save_agent_state(&state, None).await.unwrap();
        let event = events.next().await.unwrap();
        assert_eq!(
            event,
            StorageEvent::AgentStateWritten {
                backend: "cold".into(),
                agent_id: "agent-7".into(),
                status: "running".into()
            }
        );
    }

    #[tokio::test]
    async fn writes_that_store_nothing_publish_nothing() {
        let manager = two_backends().await;
        let mut events = manager.subscribe();
        let mut newer = AgentState::new("s2", "agent-7", "running");
        manager.save_agent_state(&newer, None).await.unwrap();
        assert!(matches!(
            events.next().await,
            Some(StorageEvent::AgentStateWritten { .. })
        ));
        newer.last_heartbeat -= chrono::TimeDelta::minutes(5);
        newer.status = "stale".into();
        let report = manager.save_agent_state(&newer, None).await.unwrap();
        assert_eq!(report.superseded, 1);
        let alert = Alert::new("a1", "latency", AlertSeverity::High, "agent-7");
        manager.save_alert(&alert, None).await.unwrap();
        // The next event is the alert's: the superseded state published none.
        assert!(matches!(
            events.next().await,
            Some(StorageEvent::AlertWritten { .. })
        ));
    }

    #[tokio::test]
    async fn close_all_empties_the_manager() {
        let manager = two_backends().await;
        let hot = manager.get_backend(Some("hot")).unwrap();
        manager.close(None).await.unwrap();
        assert!(manager.get_backend(None).is_err());
        let err = hot.get_alert("x").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
    }
}
