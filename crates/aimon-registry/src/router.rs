//! [`Router`]: named backends, a default, and per-kind routes, behind the [`StorageBackend`]
//! trait itself.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use aimon_core::{
    AgentState, AgentStateQuery, Alert, AlertQuery, BackupFormat, Capabilities, DataKind,
    DatabaseStats, Error, ErrorKind, EventStream, HistoryQuery, HistorySeries, Metric, MetricQuery,
    Result, RetentionMechanism, RetentionReport, Scored, SimilarAgentStatesQuery,
    SimilarAlertsQuery, StorageBackend, StorageBackendType, TransferReport, WriteReport,
};
use async_trait::async_trait;

/// A shared backend, as the router holds it.
pub type Backend = Arc<dyn StorageBackend>;

#[derive(Default)]
struct Table {
    backends: BTreeMap<String, Backend>,
    default: Option<String>,
    routes: BTreeMap<DataKind, String>,
}

/// Holds named backends, one of them the default, and routes each call to one of them: the
/// backend named in the call ([`Router::resolve`]), else the one routed for the call's data
/// kind ([`Router::route`]), else the default.
///
/// As a [`StorageBackend`] it routes by kind: metric calls to the metrics route, alert calls to
/// the alerts route, agent-state calls to theirs; `stats`, `backup`, `restore` and `subscribe`
/// go to the default backend, `apply_retention` and `close` to every backend. Its `name` is the
/// one it was created with; its type and capabilities are the default backend's (`memory` and
/// none while it holds no backend).
pub struct Router {
    name: String,
    table: RwLock<Table>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = self.read();
        f.debug_struct("Router")
            .field("name", &self.name)
            .field("backends", &table.backends.keys().collect::<Vec<_>>())
            .field("default", &table.default)
            .field("routes", &table.routes)
            .finish()
    }
}

impl Router {
    /// An empty router called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Router {
            name: name.into(),
            table: RwLock::new(Table::default()),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a backend of that name is held.
    pub fn contains(&self, name: &str) -> bool {
        self.read().backends.contains_key(name)
    }

    /// Adds a backend under its own name; it becomes the default when `make_default` is set or
    /// when it is the first. A name already held is a [`ErrorKind::Conflict`].
    pub fn add(&self, backend: Backend, make_default: bool) -> Result<()> {
        let mut table = self.write();
        let name = backend.name().to_owned();
        if table.backends.contains_key(&name) {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("a backend named {name:?} exists already"),
            ));
        }
        if make_default || table.default.is_none() {
            table.default = Some(name.clone());
        }
        table.backends.insert(name, backend);
        Ok(())
    }

    /// Removes one backend (its routes go; the default passes to the first remaining), or
    /// every backend when `name` is `None`, and returns what it removed.
    pub fn remove(&self, name: Option<&str>) -> Result<Vec<Backend>> {
        let mut table = self.write();
        match name {
            Some(name) => {
                let backend = Self::lookup(&table, name)?;
                table.backends.remove(name);
                table.routes.retain(|_, n| n != name);
                if table.default.as_deref() == Some(name) {
                    table.default = table.backends.keys().next().cloned();
                }
                Ok(vec![backend])
            }
            None => {
                table.routes.clear();
                table.default = None;
                Ok(std::mem::take(&mut table.backends).into_values().collect())
            }
        }
    }

    /// Makes `name` the default backend.
    pub fn set_default(&self, name: &str) -> Result<()> {
        let mut table = self.write();
        Self::lookup(&table, name)?;
        table.default = Some(name.to_owned());
        Ok(())
    }

    /// Sends every call for `kind` without an explicit backend name to `name`.
    pub fn route(&self, kind: DataKind, name: &str) -> Result<()> {
        let mut table = self.write();
        Self::lookup(&table, name)?;
        table.routes.insert(kind, name.to_owned());
        Ok(())
    }

    /// The names of the backends, in order.
    pub fn names(&self) -> Vec<String> {
        self.read().backends.keys().cloned().collect()
    }

    /// Every backend, in name order.
    pub fn backends(&self) -> Vec<Backend> {
        self.read().backends.values().cloned().collect()
    }

    fn lookup(table: &Table, name: &str) -> Result<Backend> {
        table.backends.get(name).cloned().ok_or_else(|| {
            let known: Vec<_> = table.backends.keys().map(String::as_str).collect();
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
    pub fn get(&self, name: Option<&str>) -> Result<Backend> {
        let table = self.read();
        match name.or(table.default.as_deref()) {
            Some(name) => Self::lookup(&table, name),
            None => Err(Error::new(
                ErrorKind::NotFound,
                "no backend has been initialized",
            )),
        }
    }

    /// The first backend (by name) of a type.
    pub fn by_type(&self, backend_type: StorageBackendType) -> Result<Backend> {
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

    /// The backend a call for `kind` goes to: `name` if given, else the kind's route, else the
    /// default.
    pub fn resolve(&self, kind: DataKind, name: Option<&str>) -> Result<Backend> {
        let route = match name {
            Some(_) => None,
            None => self.read().routes.get(&kind).cloned(),
        };
        self.get(name.or(route.as_deref()))
    }

    /// The backend named, or every backend when `name` is `None`.
    pub(crate) fn targets(&self, name: Option<&str>) -> Result<Vec<Backend>> {
        match name {
            Some(name) => Ok(vec![self.get(Some(name))?]),
            None => Ok(self.backends()),
        }
    }
}

/// Applies retention on each of `targets` in turn; the reports are summed.
pub(crate) async fn retention_of(targets: Vec<Backend>) -> Result<RetentionReport> {
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

/// Closes each of `targets`; the first error is returned after every one was tried.
pub(crate) async fn close_all(targets: Vec<Backend>) -> Result<()> {
    let mut first_error = None;
    for backend in targets {
        if let Err(e) = backend.close().await {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[async_trait]
impl StorageBackend for Router {
    fn name(&self) -> &str {
        &self.name
    }

    fn backend_type(&self) -> StorageBackendType {
        self.get(None)
            .map_or(StorageBackendType::Memory, |b| b.backend_type())
    }

    fn capabilities(&self) -> Capabilities {
        self.get(None)
            .map(|b| b.capabilities())
            .unwrap_or(Capabilities {
                server_side_downsampling: false,
                pub_sub: false,
                cross_process_events: false,
                native_backup: false,
                similarity_search: false,
                agent_state_history: false,
                retention: RetentionMechanism::Sweep,
            })
    }

    async fn save_metrics(&self, metrics: &[Metric]) -> Result<WriteReport> {
        self.resolve(DataKind::Metrics, None)?
            .save_metrics(metrics)
            .await
    }
    async fn get_metric(&self, id: &str) -> Result<Option<Metric>> {
        self.resolve(DataKind::Metrics, None)?.get_metric(id).await
    }
    async fn query_metrics(&self, query: &MetricQuery) -> Result<Vec<Metric>> {
        self.resolve(DataKind::Metrics, None)?
            .query_metrics(query)
            .await
    }
    async fn metric_history(&self, query: &HistoryQuery) -> Result<Vec<HistorySeries>> {
        self.resolve(DataKind::Metrics, None)?
            .metric_history(query)
            .await
    }
    async fn save_alerts(&self, alerts: &[Alert]) -> Result<WriteReport> {
        self.resolve(DataKind::Alerts, None)?
            .save_alerts(alerts)
            .await
    }
    async fn get_alert(&self, id: &str) -> Result<Option<Alert>> {
        self.resolve(DataKind::Alerts, None)?.get_alert(id).await
    }
    async fn query_alerts(&self, query: &AlertQuery) -> Result<Vec<Alert>> {
        self.resolve(DataKind::Alerts, None)?
            .query_alerts(query)
            .await
    }
    async fn find_similar_alerts(&self, query: &SimilarAlertsQuery) -> Result<Vec<Scored<Alert>>> {
        self.resolve(DataKind::Alerts, None)?
            .find_similar_alerts(query)
            .await
    }
    async fn save_agent_states(&self, states: &[AgentState]) -> Result<WriteReport> {
        self.resolve(DataKind::AgentStates, None)?
            .save_agent_states(states)
            .await
    }
    async fn get_agent_state(&self, agent_id: &str) -> Result<Option<AgentState>> {
        self.resolve(DataKind::AgentStates, None)?
            .get_agent_state(agent_id)
            .await
    }
    async fn get_agent_states(&self, query: &AgentStateQuery) -> Result<Vec<AgentState>> {
        self.resolve(DataKind::AgentStates, None)?
            .get_agent_states(query)
            .await
    }
    async fn find_similar_agent_states(
        &self,
        query: &SimilarAgentStatesQuery,
    ) -> Result<Vec<Scored<AgentState>>> {
        self.resolve(DataKind::AgentStates, None)?
            .find_similar_agent_states(query)
            .await
    }
    async fn apply_retention(&self) -> Result<RetentionReport> {
        retention_of(self.backends()).await
    }
    async fn backup(&self, path: &Path, format: BackupFormat) -> Result<TransferReport> {
        self.get(None)?.backup(path, format).await
    }
    async fn restore(&self, path: &Path, format: BackupFormat) -> Result<TransferReport> {
        self.get(None)?.restore(path, format).await
    }
    async fn stats(&self) -> Result<DatabaseStats> {
        self.get(None)?.stats().await
    }
    async fn subscribe(&self) -> Result<EventStream> {
        self.get(None)?.subscribe().await
    }
    async fn close(&self) -> Result<()> {
        close_all(self.remove(None)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aimon_core::{AlertSeverity, MetricType, MetricValue, StorageConfig};

    async fn router() -> Router {
        let router = Router::new("fleet");
        for (name, default) in [("hot", true), ("history", false)] {
            let config = StorageConfig::from_url(name, "memory://").unwrap();
            router
                .add(crate::open(&config).await.unwrap(), default)
                .unwrap();
        }
        router.route(DataKind::Metrics, "history").unwrap();
        router
    }

    #[tokio::test]
    async fn as_a_backend_it_routes_each_call_by_its_kind() {
        let router = router().await;
        let metric = Metric::new("m", "cpu", MetricType::Cpu)
            .with_value(MetricValue::new(aimon_core::time::now(), 1.0));
        router.save_metric(&metric).await.unwrap();
        let alert = Alert::new("a1", "latency", AlertSeverity::High, "agent-1");
        router.save_alert(&alert).await.unwrap();
        let history = router.get(Some("history")).unwrap();
        let hot = router.get(Some("hot")).unwrap();
        assert!(history.get_metric("m").await.unwrap().is_some());
        assert!(hot.get_metric("m").await.unwrap().is_none());
        assert!(hot.get_alert("a1").await.unwrap().is_some());
        assert!(router.get_metric("m").await.unwrap().is_some());
        // Stats and the type are the default backend's; the name is the router's own.
        assert_eq!(router.stats().await.unwrap().backend, "hot");
        assert_eq!(router.name(), "fleet");
        assert_eq!(router.backend_type(), StorageBackendType::Memory);
    }

    #[tokio::test]
    async fn closing_the_router_closes_and_forgets_every_backend() {
        let router = router().await;
        let hot = router.get(Some("hot")).unwrap();
        router.close().await.unwrap();
        assert!(router.names().is_empty());
        let err = hot.get_alert("a1").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        let err = router.get_alert("a1").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(!router.capabilities().pub_sub);
    }
}
