//! What a driver implements: the [`Driver`] trait, the checked inputs it is handed, and the
//! [`Descriptor`] a driver crate exports so the registry can list and open it.
//!
//! A driver does only its store's work. The rules every backend shares (DESIGN.md) are applied
//! once, by the [`Contract`](crate::contract::Contract) layer that turns a driver into a
//! [`StorageBackend`]: input validation, `Unavailable` after `close`, the operation and the
//! backend's name on every error, a `tracing` span per operation, and capabilities (a `false`
//! capability answers `Unsupported` before the driver is called). The types below make the first
//! rule structural: a driver's write methods take a [`Valid`] batch, which only the contract can
//! build, so a driver cannot forget to validate and nothing is validated twice.
//!
//! Adding a driver: a crate with a type implementing [`Driver`] (and its per-kind traits
//! [`MetricDriver`], [`AlertDriver`], [`AgentStateDriver`], one per file) and a
//! `pub const DRIVER:` [`Descriptor`]; the registry opens it through the descriptor and wraps it
//! in the contract.

use std::future::Future;
use std::ops::{Deref, Range};
use std::path::Path;
use std::pin::Pin;

use async_trait::async_trait;

use crate::archive::Exporter;
use crate::backend::{
    Capabilities, DatabaseStats, EventStream, RetentionReport, StorageBackend, TransferReport,
    WriteReport,
};
use crate::config::{StorageBackendType, StorageConfig};
use crate::error::{Error, Result};
use crate::model::{AgentState, Alert, DataKind, Metric};
use crate::query::{
    AgentStateQuery, AlertQuery, HistoryQuery, HistorySeries, MetricQuery, ResolvedOptions,
};
use crate::similarity::{Scored, SimilarAgentStatesQuery, SimilarAlertsQuery};
use crate::validate;

/// An input that passed the contract's checks, with what the checks found (`V`): the runs of
/// equal tags of a metric batch, the resolved options of a query.
///
/// Only this crate builds one, so a driver that is handed a `Valid` value knows it was checked.
/// It dereferences to the input itself.
#[derive(Debug)]
pub struct Valid<'a, T: ?Sized, V = ()> {
    value: &'a T,
    view: V,
}

impl<T: ?Sized, V> Deref for Valid<'_, T, V> {
    type Target = T;

    fn deref(&self) -> &T {
        self.value
    }
}

impl<'a, T, V> IntoIterator for Valid<'a, [T], V> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.value.iter()
    }
}

impl<'a, T, V> IntoIterator for &Valid<'a, [T], V> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.value.iter()
    }
}

/// Builds a [`Valid`] view by checking an input, as the contract does; implemented for each
/// input the contract checks. Tools that encode a batch outside a call (a benchmark's baseline)
/// validate it this way too.
pub trait Check<'a, T: ?Sized>: Sized {
    /// Checks `value` with [`crate::validate`], keeping what the checks found.
    fn check(value: &'a T) -> Result<Self>;
}

impl<'a, T: ?Sized, V> Valid<'a, T, V> {
    /// The checked input, with the lifetime of the call.
    pub fn get(&self) -> &'a T {
        self.value
    }
}

/// The runs of equal tags of every metric of a batch (see [`validate::metric_runs`]), found
/// while the batch was validated. Drivers that encode a series key per run (InfluxDB's line
/// protocol) use them instead of a second walk over every sample's tags.
#[derive(Debug, Default)]
pub struct MetricRuns {
    ranges: Vec<Range<usize>>,
    /// Where each metric's runs end in `ranges`.
    ends: Vec<usize>,
}

/// A validated batch of metrics.
pub type MetricBatch<'a> = Valid<'a, [Metric], MetricRuns>;
/// A validated id (a metric id, an alert id or an agent id).
pub type ValidId<'a> = Valid<'a, str>;
/// A validated query with its resolved filters, order and page.
pub type Selection<'a, Q> = Valid<'a, Q, ResolvedOptions>;

impl<'a> Check<'a, [Metric]> for MetricBatch<'a> {
    /// Validates `metrics` as [`validate::metrics`] does, keeping their runs.
    fn check(metrics: &'a [Metric]) -> Result<Self> {
        let mut ranges = Vec::with_capacity(metrics.len());
        let mut ends = Vec::with_capacity(metrics.len());
        for metric in metrics {
            validate::metric_runs(metric, |run| ranges.push(run))?;
            ends.push(ranges.len());
        }
        Ok(Valid {
            value: metrics,
            view: MetricRuns { ranges, ends },
        })
    }
}

impl MetricBatch<'_> {
    /// The runs of equal tags of the `m`th metric: each maximal range of consecutive samples
    /// with equal tags, in order, covering every sample.
    pub fn runs(&self, m: usize) -> &[Range<usize>] {
        let start = if m == 0 { 0 } else { self.view.ends[m - 1] };
        &self.view.ranges[start..self.view.ends[m]]
    }

    /// The number of runs in the whole batch.
    pub fn run_count(&self) -> usize {
        self.view.ranges.len()
    }
}

impl<'a> Check<'a, [Alert]> for Valid<'a, [Alert]> {
    fn check(alerts: &'a [Alert]) -> Result<Self> {
        validate::alerts(alerts)?;
        Ok(Valid {
            value: alerts,
            view: (),
        })
    }
}

impl<'a> Check<'a, [AgentState]> for Valid<'a, [AgentState]> {
    fn check(states: &'a [AgentState]) -> Result<Self> {
        validate::agent_states(states)?;
        Ok(Valid {
            value: states,
            view: (),
        })
    }
}

impl<'a> Check<'a, str> for ValidId<'a> {
    /// Checks an id as the field `id`.
    fn check(id: &'a str) -> Result<Self> {
        Self::named("id", id)
    }
}

impl<'a> ValidId<'a> {
    pub(crate) fn named(field: &'static str, id: &'a str) -> Result<Self> {
        validate::name(field, id)?;
        Ok(Valid {
            value: id,
            view: (),
        })
    }
}

impl<'a> Check<'a, HistoryQuery> for Valid<'a, HistoryQuery> {
    fn check(query: &'a HistoryQuery) -> Result<Self> {
        query.validate()?;
        Ok(Valid {
            value: query,
            view: (),
        })
    }
}

impl<'a, Q> Selection<'a, Q> {
    fn resolved(value: &'a Q, view: ResolvedOptions) -> Self {
        Valid { value, view }
    }

    /// The query's filters, order and page, checked against its data kind.
    pub fn options(&self) -> &ResolvedOptions {
        &self.view
    }
}

/// A query a backend may answer by filtering items in memory: alerts and agent states.
pub trait InMemoryQuery {
    /// What the query selects.
    type Item: crate::filter::Record;
    /// Its data kind (for the order's tie-breaker).
    const KIND: DataKind;
    /// The timestamp retention judges an item by.
    fn retention_time(item: &Self::Item) -> chrono::DateTime<chrono::Utc>;
    /// Whether `item` passes every condition of the query.
    fn matches(&self, item: &Self::Item, options: &ResolvedOptions) -> bool;
}

impl InMemoryQuery for AlertQuery {
    type Item = Alert;
    const KIND: DataKind = DataKind::Alerts;
    fn retention_time(item: &Alert) -> chrono::DateTime<chrono::Utc> {
        item.updated_at
    }
    fn matches(&self, item: &Alert, options: &ResolvedOptions) -> bool {
        AlertQuery::matches(self, item, options)
    }
}

impl InMemoryQuery for AgentStateQuery {
    type Item = AgentState;
    const KIND: DataKind = DataKind::AgentStates;
    fn retention_time(item: &AgentState) -> chrono::DateTime<chrono::Utc> {
        item.last_heartbeat
    }
    fn matches(&self, item: &AgentState, options: &ResolvedOptions) -> bool {
        AgentStateQuery::matches(self, item, options)
    }
}

impl<Q: InMemoryQuery> Selection<'_, Q> {
    /// The whole selection of a backend that filters in memory: the items still live under
    /// `cutoff` (µs, from [`crate::RetentionPolicy`]) that match the query, sorted and paged as
    /// it says.
    ///
    /// Items may be owned or borrowed (`&Alert`), so a store that holds them clones only the
    /// winners.
    pub fn select_in_memory<I>(
        &self,
        items: impl IntoIterator<Item = I>,
        cutoff: Option<i64>,
    ) -> Vec<I>
    where
        I: std::borrow::Borrow<Q::Item> + crate::filter::Record,
    {
        let mut found: Vec<I> = items
            .into_iter()
            .filter(|item| {
                let item = item.borrow();
                crate::RetentionPolicy::is_live(cutoff, Q::retention_time(item))
                    && self.value.matches(item, &self.view)
            })
            .collect();
        crate::filter::sort_and_page(
            &mut found,
            &self.view,
            crate::query::tie_breaker(Q::KIND).name,
        );
        found
    }
}

impl<'a> Check<'a, MetricQuery> for Selection<'a, MetricQuery> {
    fn check(query: &'a MetricQuery) -> Result<Self> {
        Ok(Self::resolved(query, query.resolve()?))
    }
}

impl<'a> Check<'a, AlertQuery> for Selection<'a, AlertQuery> {
    fn check(query: &'a AlertQuery) -> Result<Self> {
        Ok(Self::resolved(query, query.resolve()?))
    }
}

impl<'a> Check<'a, AgentStateQuery> for Selection<'a, AgentStateQuery> {
    fn check(query: &'a AgentStateQuery) -> Result<Self> {
        Ok(Self::resolved(query, query.resolve()?))
    }
}

/// The metric calls of a driver, usually implemented in its `metrics.rs`; each follows the
/// matching [`StorageBackend`] method's semantics for input the contract accepted.
#[async_trait]
pub trait MetricDriver: Send + Sync {
    /// [`StorageBackend::save_metrics`] for a validated batch.
    async fn save_metrics(&self, batch: MetricBatch<'_>) -> Result<WriteReport>;

    /// [`StorageBackend::get_metric`].
    async fn get_metric(&self, id: ValidId<'_>) -> Result<Option<Metric>>;

    /// [`StorageBackend::query_metrics`].
    async fn query_metrics(&self, query: Selection<'_, MetricQuery>) -> Result<Vec<Metric>>;

    /// [`StorageBackend::metric_history`].
    async fn metric_history(&self, query: Valid<'_, HistoryQuery>) -> Result<Vec<HistorySeries>>;
}

/// The alert calls of a driver, usually implemented in its `alerts.rs`.
#[async_trait]
pub trait AlertDriver: Send + Sync {
    /// [`StorageBackend::save_alerts`] for a validated batch.
    async fn save_alerts(&self, batch: Valid<'_, [Alert]>) -> Result<WriteReport>;

    /// [`StorageBackend::get_alert`].
    async fn get_alert(&self, id: ValidId<'_>) -> Result<Option<Alert>>;

    /// [`StorageBackend::query_alerts`].
    async fn query_alerts(&self, query: Selection<'_, AlertQuery>) -> Result<Vec<Alert>>;

    /// [`StorageBackend::find_similar_alerts`]; called only when
    /// [`Capabilities::similarity_search`] is set. The query's target and dimension are the
    /// driver's to resolve (they depend on its embedder).
    async fn find_similar_alerts(&self, query: &SimilarAlertsQuery) -> Result<Vec<Scored<Alert>>> {
        let _ = query;
        Err(Error::unsupported("similarity search"))
    }
}

/// The agent-state calls of a driver, usually implemented in its `agent_states.rs`.
#[async_trait]
pub trait AgentStateDriver: Send + Sync {
    /// [`StorageBackend::save_agent_states`] for a validated batch.
    async fn save_agent_states(&self, batch: Valid<'_, [AgentState]>) -> Result<WriteReport>;

    /// [`StorageBackend::get_agent_state`].
    async fn get_agent_state(&self, agent_id: ValidId<'_>) -> Result<Option<AgentState>>;

    /// [`StorageBackend::get_agent_states`].
    async fn get_agent_states(
        &self,
        query: Selection<'_, AgentStateQuery>,
    ) -> Result<Vec<AgentState>>;

    /// [`StorageBackend::find_similar_agent_states`]; as
    /// [`AlertDriver::find_similar_alerts`].
    async fn find_similar_agent_states(
        &self,
        query: &SimilarAgentStatesQuery,
    ) -> Result<Vec<Scored<AgentState>>> {
        let _ = query;
        Err(Error::unsupported("similarity search"))
    }
}

/// The store-specific half of a backend: its metric, alert and agent-state calls (one trait
/// each, so that each lives in its own file) and the calls below. The
/// [`Contract`](crate::contract::Contract) layer calls them after its checks and makes a
/// [`StorageBackend`] of them.
///
/// A driver never needs to validate input, check that it is open, or label its errors with
/// the operation or its name: the layer does. It returns its store's errors with the right
/// [`ErrorKind`](crate::ErrorKind).
#[async_trait]
pub trait Driver: MetricDriver + AlertDriver + AgentStateDriver + 'static {
    /// The configured name of this backend.
    fn name(&self) -> &str;

    /// The type of store this driver talks to.
    fn backend_type(&self) -> StorageBackendType;

    /// What this driver really does; the contract refuses what it does not.
    fn capabilities(&self) -> Capabilities;

    /// [`StorageBackend::apply_retention`].
    async fn apply_retention(&self) -> Result<RetentionReport>;

    /// How a portable backup reads this store; `None` (the default) reads it through the
    /// public queries ([`crate::archive::QueryExporter`]).
    fn exporter(&self) -> Option<Box<dyn Exporter + '_>> {
        None
    }

    /// Writes the store's own backup format to `path`; called only when
    /// [`Capabilities::native_backup`] is set. `store` is this driver behind its contract.
    async fn backup_native(
        &self,
        store: &dyn StorageBackend,
        path: &Path,
    ) -> Result<TransferReport> {
        let _ = (store, path);
        Err(Error::unsupported("a native backup format"))
    }

    /// Merges a backup in the store's own format; as [`Driver::backup_native`]. `store` is this
    /// driver behind its contract, for restores that go through the portable path.
    async fn restore_native(
        &self,
        store: &dyn StorageBackend,
        path: &Path,
    ) -> Result<TransferReport> {
        let _ = (store, path);
        Err(Error::unsupported("a native backup format"))
    }

    /// [`StorageBackend::stats`].
    async fn stats(&self) -> Result<DatabaseStats>;

    /// [`StorageBackend::subscribe`]; called only when [`Capabilities::pub_sub`] is set.
    async fn subscribe(&self) -> Result<EventStream> {
        Err(Error::unsupported("live updates (subscribe)"))
    }

    /// Releases connections; the contract calls it once, on the first
    /// [`StorageBackend::close`].
    async fn close(&self) -> Result<()>;
}

/// What opening a driver returns: a future of the boxed driver.
pub type Opening<'a> = Pin<Box<dyn Future<Output = Result<Box<dyn Driver>>> + Send + 'a>>;

/// Opens a driver from a [`StorageConfig`] whose type is one of the descriptor's.
pub type OpenFn = for<'a> fn(&'a StorageConfig) -> Opening<'a>;

/// What a driver crate tells the registry about itself: one `pub const DRIVER: Descriptor` per
/// crate, and the registry's table is the list of those its build enables.
#[derive(Clone, Copy)]
pub struct Descriptor {
    /// The backend types the driver opens (PostgreSQL's opens `postgres` and `timescale`).
    pub types: &'static [StorageBackendType],
    /// The URL schemes it accepts, every one of them mapping to one of `types` in
    /// [`StorageBackendType::from_scheme`].
    pub schemes: &'static [&'static str],
    /// The cargo feature of the `aimon` and `aimon-registry` crates that compiles it in.
    pub feature: &'static str,
    /// Opens the driver; the registry wraps it in the contract.
    pub open: OpenFn,
}

impl std::fmt::Debug for Descriptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Descriptor")
            .field("types", &self.types)
            .field("schemes", &self.schemes)
            .field("feature", &self.feature)
            .finish_non_exhaustive()
    }
}

/// Boxes a driver's `connect` for a [`Descriptor`]'s `open`:
/// `open: |config| aimon_core::driver::boxed(SqliteBackend::connect(config))`.
pub fn boxed<'a, D: Driver>(connect: impl Future<Output = Result<D>> + Send + 'a) -> Opening<'a> {
    Box::pin(async move { Ok(Box::new(connect.await?) as Box<dyn Driver>) })
}

/// A boxed driver is a driver: the registry's table opens `Box<dyn Driver>`.
#[async_trait]
impl<D: Driver + ?Sized> MetricDriver for Box<D> {
    async fn save_metrics(&self, batch: MetricBatch<'_>) -> Result<WriteReport> {
        (**self).save_metrics(batch).await
    }
    async fn get_metric(&self, id: ValidId<'_>) -> Result<Option<Metric>> {
        (**self).get_metric(id).await
    }
    async fn query_metrics(&self, query: Selection<'_, MetricQuery>) -> Result<Vec<Metric>> {
        (**self).query_metrics(query).await
    }
    async fn metric_history(&self, query: Valid<'_, HistoryQuery>) -> Result<Vec<HistorySeries>> {
        (**self).metric_history(query).await
    }
}

#[async_trait]
impl<D: Driver + ?Sized> AlertDriver for Box<D> {
    async fn save_alerts(&self, batch: Valid<'_, [Alert]>) -> Result<WriteReport> {
        (**self).save_alerts(batch).await
    }
    async fn get_alert(&self, id: ValidId<'_>) -> Result<Option<Alert>> {
        (**self).get_alert(id).await
    }
    async fn query_alerts(&self, query: Selection<'_, AlertQuery>) -> Result<Vec<Alert>> {
        (**self).query_alerts(query).await
    }
    async fn find_similar_alerts(&self, query: &SimilarAlertsQuery) -> Result<Vec<Scored<Alert>>> {
        (**self).find_similar_alerts(query).await
    }
}

#[async_trait]
impl<D: Driver + ?Sized> AgentStateDriver for Box<D> {
    async fn save_agent_states(&self, batch: Valid<'_, [AgentState]>) -> Result<WriteReport> {
        (**self).save_agent_states(batch).await
    }
    async fn get_agent_state(&self, agent_id: ValidId<'_>) -> Result<Option<AgentState>> {
        (**self).get_agent_state(agent_id).await
    }
    async fn get_agent_states(
        &self,
        query: Selection<'_, AgentStateQuery>,
    ) -> Result<Vec<AgentState>> {
        (**self).get_agent_states(query).await
    }
    async fn find_similar_agent_states(
        &self,
        query: &SimilarAgentStatesQuery,
    ) -> Result<Vec<Scored<AgentState>>> {
        (**self).find_similar_agent_states(query).await
    }
}

#[async_trait]
impl<D: Driver + ?Sized> Driver for Box<D> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn backend_type(&self) -> StorageBackendType {
        (**self).backend_type()
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    async fn apply_retention(&self) -> Result<RetentionReport> {
        (**self).apply_retention().await
    }
    fn exporter(&self) -> Option<Box<dyn Exporter + '_>> {
        (**self).exporter()
    }
    async fn backup_native(
        &self,
        store: &dyn StorageBackend,
        path: &Path,
    ) -> Result<TransferReport> {
        (**self).backup_native(store, path).await
    }
    async fn restore_native(
        &self,
        store: &dyn StorageBackend,
        path: &Path,
    ) -> Result<TransferReport> {
        (**self).restore_native(store, path).await
    }
    async fn stats(&self) -> Result<DatabaseStats> {
        (**self).stats().await
    }
    async fn subscribe(&self) -> Result<EventStream> {
        (**self).subscribe().await
    }
    async fn close(&self) -> Result<()> {
        (**self).close().await
    }
}
