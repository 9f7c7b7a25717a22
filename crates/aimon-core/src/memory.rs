//! The in-memory reference backend (`memory://`): the executable meaning of DESIGN.md. It passes
//! the whole conformance suite and is what other backends are compared with. Data lives as long
//! as the backend value; nothing is persisted except through `backup`.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use async_trait::async_trait;

use crate::backend::{
    Capabilities, DatabaseStats, EventStream, LocalEvents, RetentionMechanism, RetentionReport,
    StorageEvent, WriteReport,
};
use crate::config::{StorageBackendType, StorageConfig};
use crate::downsample::{Downsampler, SampleRef};
use crate::driver::{
    AgentStateDriver, AlertDriver, Descriptor, Driver, MetricBatch, MetricDriver, Selection, Valid,
    ValidId,
};
use crate::error::{Error, Result};
use crate::filter;
use crate::model::{AgentState, Alert, DataKind, Metric, MetricValue, Tags, tags_json};
use crate::query::{self, AgentStateQuery, AlertQuery, HistoryQuery, HistorySeries, MetricQuery};
use crate::retention::RetentionPolicy;
use crate::similarity::{
    self, Embedder, HashingEmbedder, Ranker, Scored, SimilarAgentStatesQuery, SimilarAlertsQuery,
};
use crate::time;

/// Samples of one series keyed by (timestamp µs, canonical tags JSON).
type Samples = BTreeMap<(i64, String), (Tags, f64)>;

#[derive(Debug)]
struct Series {
    /// Metadata; `values` stays empty here.
    meta: Metric,
    samples: Samples,
}

/// The metadata of `metric` without its samples, as a series stores it.
fn series_metadata(metric: &Metric, created_at: chrono::DateTime<chrono::Utc>) -> Metric {
    Metric {
        id: metric.id.clone(),
        name: metric.name.clone(),
        metric_type: metric.metric_type,
        description: metric.description.clone(),
        unit: metric.unit.clone(),
        values: Vec::new(),
        metadata: metric.metadata.clone(),
        created_at,
        updated_at: time::truncate(metric.updated_at),
    }
}

#[derive(Debug, Default)]
struct Store {
    series: BTreeMap<String, Series>,
    alerts: BTreeMap<String, Alert>,
    agents: BTreeMap<String, AgentState>,
}

/// The memory driver, for the registry: `memory://`, always built.
pub const DRIVER: Descriptor = Descriptor {
    types: &[StorageBackendType::Memory],
    schemes: &["memory"],
    feature: "(always built)",
    open: |config| crate::driver::boxed(async move { MemoryBackend::from_config(config) }),
};

/// The in-memory backend.
pub struct MemoryBackend {
    name: String,
    retention: RetentionPolicy,
    store: RwLock<Store>,
    events: LocalEvents,
    started: Instant,
    embedder: Arc<dyn Embedder>,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("name", &self.name)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl MemoryBackend {
    /// A backend from a `memory://` configuration; its options are the retention trio.
    pub fn from_config(config: &StorageConfig) -> Result<Self> {
        if config.backend_type != StorageBackendType::Memory {
            return Err(Error::config(format!(
                "the memory backend cannot open a {} configuration",
                config.backend_type
            )));
        }
        check_url(&config.connection_string)?;
        let mut options = config.reader();
        let retention = RetentionPolicy::from_options(&mut options)?;
        options.finish("memory")?;
        Ok(Self::new(&config.name, retention))
    }

    /// An empty store named `name` with the 384-dimension [`crate::HashingEmbedder`]; what
    /// `memory://` opens.
    pub fn new(name: impl Into<String>, retention: RetentionPolicy) -> Self {
        MemoryBackend {
            name: name.into(),
            retention,
            store: RwLock::new(Store::default()),
            events: LocalEvents::new(),
            started: Instant::now(),
            embedder: Arc::new(HashingEmbedder::default()),
        }
    }

    /// Uses `embedder` for similarity search instead of the default [`HashingEmbedder`].
    pub fn with_embedder(mut self, embedder: Arc<dyn Embedder>) -> Self {
        self.embedder = embedder;
        self
    }

    fn read(&self) -> RwLockReadGuard<'_, Store> {
        // A panic while holding the lock cannot leave a half-applied write: writes are applied
        // after validation by infallible map operations.
        self.store.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, event: StorageEvent) {
        self.events.publish(event);
    }

    /// Live samples of a series under `cutoff`, in key order.
    fn live_samples(
        series: &Series,
        cutoff: Option<i64>,
    ) -> impl Iterator<Item = (&(i64, String), &(Tags, f64))> {
        let from = cutoff.unwrap_or(i64::MIN);
        series.samples.range((from, String::new())..)
    }

    /// A series is live while it has a live sample or its metadata was updated within the TTL.
    fn series_is_live(series: &Series, cutoff: Option<i64>) -> bool {
        RetentionPolicy::is_live(cutoff, series.meta.updated_at)
            || Self::live_samples(series, cutoff).next().is_some()
    }

    fn to_metric(series: &Series, samples: impl Iterator<Item = (Tags, f64, i64)>) -> Metric {
        let mut metric = series.meta.clone();
        metric.values = samples
            .map(|(tags, value, ts)| MetricValue {
                timestamp: time::from_micros(ts),
                value,
                tags,
            })
            .collect();
        metric
    }
}

fn tags_match(sample_tags: &Tags, wanted: &Tags) -> bool {
    wanted.iter().all(|(k, v)| sample_tags.get(k) == Some(v))
}

#[async_trait]
impl Driver for MemoryBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn backend_type(&self) -> StorageBackendType {
        StorageBackendType::Memory
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            server_side_downsampling: false,
            pub_sub: true,
            cross_process_events: false,
            native_backup: false,
            similarity_search: true,
            agent_state_history: false,
            retention: RetentionMechanism::Sweep,
        }
    }

    async fn apply_retention(&self) -> Result<RetentionReport> {
        let now = time::now();
        let mut report = RetentionReport::default();
        let mut store = self.write();
        if let Some(cutoff) = self.retention.metric_cutoff(now) {
            store.series.retain(|_, series| {
                let keep = series.samples.split_off(&(cutoff, String::new()));
                report.samples_removed += series.samples.len() as u64;
                series.samples = keep;
                let live = Self::series_is_live(series, Some(cutoff));
                report.series_removed += u64::from(!live);
                live
            });
        }
        if let Some(cutoff) = self.retention.alert_cutoff(now) {
            let before = store.alerts.len();
            store
                .alerts
                .retain(|_, a| RetentionPolicy::is_live(Some(cutoff), a.updated_at));
            report.alerts_removed = (before - store.alerts.len()) as u64;
        }
        if let Some(cutoff) = self.retention.agent_state_cutoff(now) {
            let before = store.agents.len();
            store
                .agents
                .retain(|_, s| RetentionPolicy::is_live(Some(cutoff), s.last_heartbeat));
            report.agent_states_removed = (before - store.agents.len()) as u64;
        }
        Ok(report)
    }

    async fn stats(&self) -> Result<DatabaseStats> {
        let now = time::now();
        let metric_cutoff = self.retention.metric_cutoff(now);
        let alert_cutoff = self.retention.alert_cutoff(now);
        let agent_cutoff = self.retention.agent_state_cutoff(now);
        let store = self.read();
        let live_series: Vec<_> = store
            .series
            .values()
            .filter(|s| Self::series_is_live(s, metric_cutoff))
            .collect();
        Ok(DatabaseStats {
            backend: self.name.clone(),
            backend_type: StorageBackendType::Memory,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: self.started.elapsed().as_secs(),
            series: live_series.len() as u64,
            samples: live_series
                .iter()
                .map(|s| Self::live_samples(s, metric_cutoff).count() as u64)
                .sum(),
            alerts: store
                .alerts
                .values()
                .filter(|a| RetentionPolicy::is_live(alert_cutoff, a.updated_at))
                .count() as u64,
            agent_states: store
                .agents
                .values()
                .filter(|s| RetentionPolicy::is_live(agent_cutoff, s.last_heartbeat))
                .count() as u64,
            // The heap a Rust value occupies is not something this process can measure
            // exactly, and an estimate would read as a measurement next to the other backends'.
            size_bytes: None,
            extra: BTreeMap::new(),
        })
    }

    async fn subscribe(&self) -> Result<EventStream> {
        Ok(self.events.subscribe())
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl MetricDriver for MemoryBackend {
    async fn save_metrics(&self, metrics: MetricBatch<'_>) -> Result<WriteReport> {
        let cutoff = self.retention.metric_cutoff(time::now());
        let mut report = WriteReport::default();
        let mut events = Vec::with_capacity(metrics.len());
        {
            let mut store = self.write();
            for metric in metrics {
                let live: Vec<_> = metric
                    .values
                    .iter()
                    .filter(|v| RetentionPolicy::is_live(cutoff, v.timestamp))
                    .collect();
                report.expired += (metric.values.len() - live.len()) as u64;
                let meta_live = RetentionPolicy::is_live(cutoff, metric.updated_at);
                if live.is_empty() && !meta_live && !store.series.contains_key(&metric.id) {
                    continue;
                }
                let series = match store.series.entry(metric.id.clone()) {
                    Entry::Occupied(entry) => {
                        let series = entry.into_mut();
                        series.meta = series_metadata(metric, series.meta.created_at);
                        series
                    }
                    Entry::Vacant(entry) => entry.insert(Series {
                        meta: series_metadata(metric, time::truncate(metric.created_at)),
                        samples: Samples::new(),
                    }),
                };
                for sample in &live {
                    let key = (time::to_micros(sample.timestamp), tags_json(&sample.tags));
                    series
                        .samples
                        .insert(key, (sample.tags.clone(), sample.value));
                }
                report.written += live.len() as u64;
                events.push(StorageEvent::MetricWritten {
                    backend: self.name.clone(),
                    metric_id: metric.id.clone(),
                    samples: live.len() as u64,
                });
            }
        }
        events.into_iter().for_each(|e| self.publish(e));
        Ok(report)
    }

    async fn get_metric(&self, id: ValidId<'_>) -> Result<Option<Metric>> {
        let cutoff = self.retention.metric_cutoff(time::now());
        let store = self.read();
        Ok(store
            .series
            .get(id.get())
            .filter(|s| Self::series_is_live(s, cutoff))
            .map(|series| {
                Self::to_metric(
                    series,
                    Self::live_samples(series, cutoff)
                        .map(|((ts, _), (tags, v))| (tags.clone(), *v, *ts)),
                )
            }))
    }

    async fn query_metrics(&self, query: Selection<'_, MetricQuery>) -> Result<Vec<Metric>> {
        let options = query.options();
        let range = query.range_micros();
        let sample_filter = query.start.is_some() || query.end.is_some() || !query.tags.is_empty();
        let cutoff = self.retention.metric_cutoff(time::now());
        let store = self.read();
        let mut found = Vec::new();
        for series in store.series.values() {
            let meta = &series.meta;
            if query.name.as_ref().is_some_and(|n| *n != meta.name)
                || query.metric_type.is_some_and(|t| t != meta.metric_type)
                || !Self::series_is_live(series, cutoff)
                || !filter::matches_all(meta, options)
            {
                continue;
            }
            let samples: Vec<_> = Self::live_samples(series, cutoff)
                .filter(|((ts, _), (tags, _))| range.contains(*ts) && tags_match(tags, &query.tags))
                .map(|((ts, _), (tags, v))| (tags.clone(), *v, *ts))
                .collect();
            if sample_filter && samples.is_empty() {
                continue;
            }
            found.push(Self::to_metric(series, samples.into_iter()));
        }
        filter::sort_and_page(
            &mut found,
            options,
            query::tie_breaker(DataKind::Metrics).name,
        );
        Ok(found)
    }

    async fn metric_history(&self, query: Valid<'_, HistoryQuery>) -> Result<Vec<HistorySeries>> {
        let range = query.range_micros();
        let cutoff = self.retention.metric_cutoff(time::now());
        let mut downsampler = Downsampler::new(&query);
        let store = self.read();
        for series in store.series.values().filter(|s| s.meta.name == query.name) {
            for ((ts, tags_key), (tags, value)) in Self::live_samples(series, cutoff) {
                if !range.contains(*ts) || !tags_match(tags, &query.tags) {
                    continue;
                }
                downsampler.push(SampleRef {
                    series_id: &series.meta.id,
                    tags_json: tags_key,
                    group: query
                        .group_by
                        .as_ref()
                        .and_then(|g| tags.get(g))
                        .map(String::as_str),
                    timestamp_micros: *ts,
                    value: *value,
                });
            }
        }
        Ok(downsampler.finish())
    }
}

#[async_trait]
impl AlertDriver for MemoryBackend {
    async fn save_alerts(&self, alerts: Valid<'_, [Alert]>) -> Result<WriteReport> {
        let cutoff = self.retention.alert_cutoff(time::now());
        let mut report = WriteReport::default();
        let mut events = Vec::new();
        {
            let mut store = self.write();
            for alert in alerts {
                if !RetentionPolicy::is_live(cutoff, alert.updated_at) {
                    report.expired += 1;
                    continue;
                }
                store.alerts.insert(alert.id.clone(), truncate_alert(alert));
                report.written += 1;
                events.push(StorageEvent::AlertWritten {
                    backend: self.name.clone(),
                    alert_id: alert.id.clone(),
                    status: alert.status.to_string(),
                });
            }
        }
        events.into_iter().for_each(|e| self.publish(e));
        Ok(report)
    }

    async fn get_alert(&self, id: ValidId<'_>) -> Result<Option<Alert>> {
        let cutoff = self.retention.alert_cutoff(time::now());
        Ok(self
            .read()
            .alerts
            .get(id.get())
            .filter(|a| RetentionPolicy::is_live(cutoff, a.updated_at))
            .cloned())
    }

    async fn query_alerts(&self, query: Selection<'_, AlertQuery>) -> Result<Vec<Alert>> {
        let cutoff = self.retention.alert_cutoff(time::now());
        let store = self.read();
        let page = query.select_in_memory(store.alerts.values(), cutoff);
        Ok(page.into_iter().cloned().collect())
    }

    async fn find_similar_alerts(&self, query: &SimilarAlertsQuery) -> Result<Vec<Scored<Alert>>> {
        let embedder = &*self.embedder;
        let options = query.resolve(embedder.dimension())?;
        let cutoff = self.retention.alert_cutoff(time::now());
        let live = |a: &&Alert| RetentionPolicy::is_live(cutoff, a.updated_at);
        // Scored under the read lock, by reference: only the winners are cloned.
        let store = self.read();
        let target = match &query.target {
            similarity::SimilarityTarget::Item(id) => store.alerts.get(id).filter(live),
            _ => None,
        };
        let (vector, exclude) = similarity::alert_query_vector(&query.target, target, embedder)?;
        let mut ranker = Ranker::new(vector, exclude, query.limit);
        for alert in store
            .alerts
            .values()
            .filter(|a| live(a) && query.filter.matches(a, &options))
        {
            let v = similarity::alert_vector(alert, embedder);
            ranker.push(&alert.id, alert, &v)?;
        }
        Ok(ranker.finish().into_iter().map(Scored::cloned).collect())
    }
}

#[async_trait]
impl AgentStateDriver for MemoryBackend {
    async fn save_agent_states(&self, states: Valid<'_, [AgentState]>) -> Result<WriteReport> {
        let cutoff = self.retention.agent_state_cutoff(time::now());
        let mut report = WriteReport::default();
        let mut events = Vec::new();
        {
            let mut store = self.write();
            for state in states {
                if !RetentionPolicy::is_live(cutoff, state.last_heartbeat) {
                    report.expired += 1;
                    continue;
                }
                let state = truncate_state(state);
                if store
                    .agents
                    .get(&state.agent_id)
                    .is_some_and(|old| old.last_heartbeat > state.last_heartbeat)
                {
                    report.superseded += 1;
                    continue;
                }
                events.push(StorageEvent::AgentStateWritten {
                    backend: self.name.clone(),
                    agent_id: state.agent_id.clone(),
                    status: state.status.clone(),
                });
                store.agents.insert(state.agent_id.clone(), state);
                report.written += 1;
            }
        }
        events.into_iter().for_each(|e| self.publish(e));
        Ok(report)
    }

    async fn get_agent_state(&self, agent_id: ValidId<'_>) -> Result<Option<AgentState>> {
        let cutoff = self.retention.agent_state_cutoff(time::now());
        Ok(self
            .read()
            .agents
            .get(agent_id.get())
            .filter(|s| RetentionPolicy::is_live(cutoff, s.last_heartbeat))
            .cloned())
    }

    async fn get_agent_states(
        &self,
        query: Selection<'_, AgentStateQuery>,
    ) -> Result<Vec<AgentState>> {
        let cutoff = self.retention.agent_state_cutoff(time::now());
        let store = self.read();
        let page = query.select_in_memory(store.agents.values(), cutoff);
        Ok(page.into_iter().cloned().collect())
    }

    async fn find_similar_agent_states(
        &self,
        query: &SimilarAgentStatesQuery,
    ) -> Result<Vec<Scored<AgentState>>> {
        let embedder = &*self.embedder;
        let options = query.resolve(embedder.dimension())?;
        let cutoff = self.retention.agent_state_cutoff(time::now());
        let live = |s: &&AgentState| RetentionPolicy::is_live(cutoff, s.last_heartbeat);
        let store = self.read();
        let target = match &query.target {
            similarity::SimilarityTarget::Item(id) => store.agents.get(id).filter(live),
            _ => None,
        };
        let (vector, exclude) =
            similarity::agent_state_query_vector(&query.target, target, embedder)?;
        let mut ranker = Ranker::new(vector, exclude, query.limit);
        for state in store
            .agents
            .values()
            .filter(|s| live(s) && query.filter.matches(s, &options))
        {
            let v = similarity::agent_state_vector(state, embedder);
            ranker.push(&state.agent_id, state, &v)?;
        }
        Ok(ranker.finish().into_iter().map(Scored::cloned).collect())
    }
}

/// `memory://` may carry a label as its host (`memory://scratch`) and nothing else: credentials,
/// ports, paths or parameters would mean the caller expects something this backend ignores.
fn check_url(raw: &str) -> Result<()> {
    let url = url::Url::parse(raw).map_err(|e| {
        Error::config(format!(
            "invalid memory URL {}: {e}",
            crate::redact_url(raw)
        ))
    })?;
    let extra = !url.username().is_empty()
        || url.password().is_some()
        || url.port().is_some()
        || !matches!(url.path(), "" | "/")
        || url.query().is_some()
        || url.fragment().is_some();
    if extra {
        return Err(Error::config(format!(
            "{} has parts the memory backend does not use; write memory:// or memory://LABEL",
            crate::redact_url(raw)
        )));
    }
    Ok(())
}

/// The alert as every backend stores it: timestamps to the microsecond.
pub fn truncate_alert(alert: &Alert) -> Alert {
    Alert {
        start_time: time::truncate(alert.start_time),
        end_time: alert.end_time.map(time::truncate),
        acknowledged_at: alert.acknowledged_at.map(time::truncate),
        resolved_at: alert.resolved_at.map(time::truncate),
        created_at: time::truncate(alert.created_at),
        updated_at: time::truncate(alert.updated_at),
        ..alert.clone()
    }
}

/// The agent state as every backend stores it: timestamps to the microsecond.
pub fn truncate_state(state: &AgentState) -> AgentState {
    AgentState {
        last_heartbeat: time::truncate(state.last_heartbeat),
        created_at: time::truncate(state.created_at),
        updated_at: time::truncate(state.updated_at),
        ..state.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn memory_urls_take_a_label_and_nothing_else() {
        for ok in ["memory://", "memory://scratch", "memory:///"] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "memory://u:hunter2@h",
            "memory://h:1",
            "memory://h/db",
            "memory://?x=1",
        ] {
            let err = check_url(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{bad}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }
}
