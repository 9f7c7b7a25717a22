//! [`StorageManager`]: the prototype's API over a [`Router`], with in-process events.

use std::path::Path;

use aimon_core::events::Publishing;
use aimon_core::{
    AgentState, AgentStateQuery, Alert, AlertQuery, BackupFormat, DataKind, DatabaseStats, Driver,
    Error, ErrorKind, EventStream, HistoryQuery, HistorySeries, LocalEvents, Metric, MetricQuery,
    Result, RetentionReport, Scored, SimilarAgentStatesQuery, SimilarAlertsQuery, StorageBackend,
    StorageBackendType, StorageConfig, TransferReport, WriteReport,
};

use crate::router::{Backend, Router, close_all, retention_of};

/// Holds named backends, one of them the default, and routes each call to one of them: the
/// backend named in the call, else the one routed for the call's data kind, else the default
/// (a [`Router`]).
///
/// Every write that succeeds is also published to [`StorageManager::subscribe`]rs in this process,
/// whatever the backend: one event per item of the call (the [`Publishing`] layer). A call that
/// stored nothing (every item expired or superseded, see [`WriteReport`]) publishes nothing; in
/// a batch that stored only part, events name every item sent. A backend's own `subscribe`
/// (where `pub_sub` is true) reports exactly what it stored.
///
/// The data methods keep the names of the Python prototype; each takes `backend`, the name of
/// the backend to use, or `None` for the routed or default one.
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
#[derive(Debug)]
pub struct StorageManager {
    router: Router,
    events: LocalEvents,
}

impl Default for StorageManager {
    fn default() -> Self {
        Self::new()
    }
}

impl StorageManager {
    /// A manager with no backend.
    pub fn new() -> Self {
        StorageManager {
            router: Router::new("manager"),
            events: LocalEvents::new(),
        }
    }

    /// The router behind this manager: a [`StorageBackend`] that routes by kind.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The backend a call for `kind` goes to, with its writes published to this manager's
    /// subscribers.
    fn on(&self, kind: DataKind, backend: Option<&str>) -> Result<Publishing<Backend>> {
        Ok(Publishing::new(
            self.router.resolve(kind, backend)?,
            self.events.clone(),
        ))
    }

    /// Opens the backend `config` describes (behind the contract layer) and adds it under
    /// `config.name`. It becomes the default when `config.default` is set or when it is the
    /// first backend.
    pub async fn initialize_backend(&self, config: StorageConfig) -> Result<Backend> {
        if self.router.contains(&config.name) {
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
        self.router.add(backend, make_default)
    }

    /// Adds a driver built elsewhere behind the contract layer, as the registry's own.
    pub fn add_driver(&self, driver: impl Driver, make_default: bool) -> Result<Backend> {
        let backend = aimon_core::Contract::shared(driver);
        self.router.add(backend.clone(), make_default)?;
        Ok(backend)
    }

    /// Makes `name` the default backend.
    pub fn set_default(&self, name: &str) -> Result<()> {
        self.router.set_default(name)
    }

    /// Sends every call for `kind` without an explicit backend name to `name`.
    pub fn route(&self, kind: DataKind, name: &str) -> Result<()> {
        self.router.route(kind, name)
    }

    /// The names of the backends, in order.
    pub fn backend_names(&self) -> Vec<String> {
        self.router.names()
    }

    /// The backend named `name`, or the default one.
    pub fn get_backend(&self, name: Option<&str>) -> Result<Backend> {
        self.router.get(name)
    }

    /// The first backend (by name) of a type.
    pub fn get_backend_by_type(&self, backend_type: StorageBackendType) -> Result<Backend> {
        self.router.by_type(backend_type)
    }

    /// Closes one backend and removes it, or every backend when `name` is `None`.
    pub async fn close(&self, name: Option<&str>) -> Result<()> {
        close_all(self.router.remove(name)?).await
    }

    /// In-process events for every successful write through this manager.
    pub fn subscribe(&self) -> EventStream {
        self.events.subscribe()
    }

    /// Saves one metric's series and samples ([`StorageBackend::save_metric`]).
    pub async fn save_metric(&self, metric: &Metric, backend: Option<&str>) -> Result<WriteReport> {
        self.on(DataKind::Metrics, backend)?
            .save_metric(metric)
            .await
    }

    /// Saves a batch of metrics, validated whole first ([`StorageBackend::save_metrics`]).
    pub async fn save_metrics(
        &self,
        metrics: &[Metric],
        backend: Option<&str>,
    ) -> Result<WriteReport> {
        self.on(DataKind::Metrics, backend)?
            .save_metrics(metrics)
            .await
    }

    /// A series with every live sample ([`StorageBackend::get_metric`]).
    pub async fn get_metric(&self, id: &str, backend: Option<&str>) -> Result<Option<Metric>> {
        self.on(DataKind::Metrics, backend)?.get_metric(id).await
    }

    /// Series and samples matching a query ([`StorageBackend::query_metrics`]).
    pub async fn query_metrics(
        &self,
        query: &MetricQuery,
        backend: Option<&str>,
    ) -> Result<Vec<Metric>> {
        self.on(DataKind::Metrics, backend)?
            .query_metrics(query)
            .await
    }

    /// Samples aggregated into time buckets ([`StorageBackend::metric_history`]).
    pub async fn get_metric_history(
        &self,
        query: &HistoryQuery,
        backend: Option<&str>,
    ) -> Result<Vec<HistorySeries>> {
        self.on(DataKind::Metrics, backend)?
            .metric_history(query)
            .await
    }

    /// Upserts one alert by id ([`StorageBackend::save_alert`]).
    pub async fn save_alert(&self, alert: &Alert, backend: Option<&str>) -> Result<WriteReport> {
        self.on(DataKind::Alerts, backend)?.save_alert(alert).await
    }

    /// Upserts alerts by id ([`StorageBackend::save_alerts`]).
    pub async fn save_alerts(
        &self,
        alerts: &[Alert],
        backend: Option<&str>,
    ) -> Result<WriteReport> {
        self.on(DataKind::Alerts, backend)?
            .save_alerts(alerts)
            .await
    }

    /// One alert by id ([`StorageBackend::get_alert`]).
    pub async fn get_alert(&self, id: &str, backend: Option<&str>) -> Result<Option<Alert>> {
        self.on(DataKind::Alerts, backend)?.get_alert(id).await
    }

    /// Alerts matching a query ([`StorageBackend::query_alerts`]).
    pub async fn query_alerts(
        &self,
        query: &AlertQuery,
        backend: Option<&str>,
    ) -> Result<Vec<Alert>> {
        self.on(DataKind::Alerts, backend)?
            .query_alerts(query)
            .await
    }

    /// Similar alerts on the backend named, else the one alerts are routed to, else the default
    /// ([`StorageBackend::find_similar_alerts`]).
    pub async fn find_similar_alerts(
        &self,
        query: &SimilarAlertsQuery,
        backend: Option<&str>,
    ) -> Result<Vec<Scored<Alert>>> {
        self.on(DataKind::Alerts, backend)?
            .find_similar_alerts(query)
            .await
    }

    /// Saves one agent state, keeping the latest per agent
    /// ([`StorageBackend::save_agent_state`]).
    pub async fn save_agent_state(
        &self,
        state: &AgentState,
        backend: Option<&str>,
    ) -> Result<WriteReport> {
        self.on(DataKind::AgentStates, backend)?
            .save_agent_state(state)
            .await
    }

    /// Saves agent states ([`StorageBackend::save_agent_states`]).
    pub async fn save_agent_states(
        &self,
        states: &[AgentState],
        backend: Option<&str>,
    ) -> Result<WriteReport> {
        self.on(DataKind::AgentStates, backend)?
            .save_agent_states(states)
            .await
    }

    /// The latest state of one agent ([`StorageBackend::get_agent_state`]).
    pub async fn get_agent_state(
        &self,
        agent_id: &str,
        backend: Option<&str>,
    ) -> Result<Option<AgentState>> {
        self.on(DataKind::AgentStates, backend)?
            .get_agent_state(agent_id)
            .await
    }

    /// Agent states matching a query ([`StorageBackend::get_agent_states`]).
    pub async fn get_agent_states(
        &self,
        query: &AgentStateQuery,
        backend: Option<&str>,
    ) -> Result<Vec<AgentState>> {
        self.on(DataKind::AgentStates, backend)?
            .get_agent_states(query)
            .await
    }

    /// Similar agent states, routed like [`StorageManager::get_agent_states`].
    pub async fn find_similar_agent_states(
        &self,
        query: &SimilarAgentStatesQuery,
        backend: Option<&str>,
    ) -> Result<Vec<Scored<AgentState>>> {
        self.on(DataKind::AgentStates, backend)?
            .find_similar_agent_states(query)
            .await
    }

    /// Applies retention on one backend, or on all when `backend` is `None`; the reports are
    /// summed.
    pub async fn apply_retention(&self, backend: Option<&str>) -> Result<RetentionReport> {
        retention_of(self.router.targets(backend)?).await
    }

    /// Writes a backup of one backend, or of the default ([`StorageBackend::backup`]).
    pub async fn backup_database(
        &self,
        path: &Path,
        format: BackupFormat,
        backend: Option<&str>,
    ) -> Result<TransferReport> {
        self.router.get(backend)?.backup(path, format).await
    }

    /// Merges a backup into one backend, or into the default ([`StorageBackend::restore`]).
    pub async fn restore_database(
        &self,
        path: &Path,
        format: BackupFormat,
        backend: Option<&str>,
    ) -> Result<TransferReport> {
        self.router.get(backend)?.restore(path, format).await
    }

    /// The statistics of one backend, or of the default ([`StorageBackend::stats`]).
    pub async fn get_database_stats(&self, backend: Option<&str>) -> Result<DatabaseStats> {
        self.router.get(backend)?.stats().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aimon_core::{AlertSeverity, MetricType, MetricValue, StorageEvent};
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
