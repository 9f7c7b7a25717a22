//! The [`StorageBackend`] trait every driver implements, and what its methods return.

use std::collections::BTreeMap;
use std::path::Path;
use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::config::StorageBackendType;
use crate::error::Result;
use crate::model::{AgentState, Alert, Metric};
use crate::query::{AgentStateQuery, AlertQuery, HistoryQuery, HistorySeries, MetricQuery};
use crate::similarity::{Scored, SimilarAgentStatesQuery, SimilarAlertsQuery};

/// How a backend removes expired data physically. Reads filter expired data whatever this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionMechanism {
    /// `apply_retention` deletes expired rows.
    Sweep,
    /// The store expires keys by itself (Redis).
    KeyExpiry,
    /// Whole time partitions or chunks are dropped (PostgreSQL, TimescaleDB, and SQLite, which
    /// keeps samples as chunks of a four-hour window): samples of the one straddling the cutoff
    /// stay, hidden from reads, until it goes. Alerts and agent states are swept exactly.
    PartitionDrop,
    /// The store's retention policies (InfluxDB).
    RetentionPolicy,
}

/// What a backend really does (DESIGN.md rule 9). A `false` flag means the matching call returns
/// [`crate::ErrorKind::Unsupported`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// `metric_history` runs in the store (SQL, InfluxQL…) rather than in aimon.
    pub server_side_downsampling: bool,
    /// `subscribe` works.
    pub pub_sub: bool,
    /// Events written by other processes reach `subscribe`.
    pub cross_process_events: bool,
    /// `backup` / `restore` accept [`BackupFormat::Native`].
    pub native_backup: bool,
    /// Similarity search over alerts and agent states.
    pub similarity_search: bool,
    /// The store keeps every agent state, not only the latest.
    pub agent_state_history: bool,
    /// How expired data is removed physically (reads hide it either way).
    pub retention: RetentionMechanism,
}

/// What a write did. Items that arrive already past their TTL are counted as `expired` and not
/// stored; agent states older than the stored one are counted as `superseded`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteReport {
    /// Samples, alerts or agent states stored (an overwrite counts as stored).
    pub written: u64,
    /// Items not stored because they were already past their TTL on arrival (DESIGN.md rule 6).
    pub expired: u64,
    /// Agent states not stored because the stored state of that agent is newer (DESIGN.md rule 5).
    pub superseded: u64,
}

impl std::ops::AddAssign for WriteReport {
    fn add_assign(&mut self, other: Self) {
        self.written += other.written;
        self.expired += other.expired;
        self.superseded += other.superseded;
    }
}

/// What `apply_retention` removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionReport {
    /// Samples removed.
    pub samples_removed: u64,
    /// Series removed: no live sample left and `updated_at` older than `metric_ttl`.
    pub series_removed: u64,
    /// Alerts removed.
    pub alerts_removed: u64,
    /// Agent states removed.
    pub agent_states_removed: u64,
}

/// The format of a backup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupFormat {
    /// The portable archive (see [`crate::archive`]): any backend restores it.
    #[default]
    Portable,
    /// The store's own format (SQLite `VACUUM INTO`, Redis RDB…); see
    /// [`Capabilities::native_backup`].
    Native,
}

/// Counts of what a backup or restore carried.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferReport {
    /// The format written or read.
    pub format: BackupFormat,
    /// Series carried.
    pub series: u64,
    /// Samples carried.
    pub samples: u64,
    /// Alerts carried.
    pub alerts: u64,
    /// Agent states carried.
    pub agent_states: u64,
    /// Items a restore did not store because they had expired.
    #[serde(default)]
    pub expired: u64,
    /// Size of the backup on disk, in bytes.
    pub bytes: u64,
}

/// `get_database_stats` (DESIGN.md rule 13).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatabaseStats {
    /// The backend's configured name.
    pub backend: String,
    /// Which driver answers.
    pub backend_type: StorageBackendType,
    /// The store's version as it reports it (`3.45.1` for SQLite).
    pub version: String,
    /// Seconds since the store (or, for embedded stores, this backend) started.
    pub uptime_seconds: u64,
    /// Series stored.
    pub series: u64,
    /// Samples stored.
    pub samples: u64,
    /// Alerts stored.
    pub alerts: u64,
    /// Agent states stored.
    pub agent_states: u64,
    /// The bytes the store holds for this backend's data (samples, series, alerts, agent states,
    /// and their indexes), measured the way the driver's crate docs say: SQLite's pages, the
    /// memory of a Redis namespace's keys, a PostgreSQL schema's relations, an InfluxDB
    /// database's shards. `None` where the backend cannot tell (the memory backend, a Qdrant
    /// server), never a guess. Absent in JSON written before the field existed: `None`.
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// Backend-specific figures (file size, memory, partitions…).
    #[serde(default)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl DatabaseStats {
    /// The store's size divided by its live samples: what one sample costs, with the series,
    /// alerts and agent states it holds spread over the samples (samples dominate a monitoring
    /// store). `None` when the size is unknown or there is no sample to divide by.
    ///
    /// ```
    /// # use aimon_core::{DatabaseStats, StorageBackendType};
    /// let stats = DatabaseStats {
    ///     backend: "main".into(),
    ///     backend_type: StorageBackendType::Sqlite,
    ///     version: "3.45.1".into(),
    ///     uptime_seconds: 0,
    ///     series: 1,
    ///     samples: 4,
    ///     alerts: 0,
    ///     agent_states: 0,
    ///     size_bytes: Some(4096),
    ///     extra: Default::default(),
    /// };
    /// assert_eq!(stats.bytes_per_sample(), Some(1024.0));
    /// ```
    pub fn bytes_per_sample(&self) -> Option<f64> {
        match (self.size_bytes, self.samples) {
            (Some(size), samples) if samples > 0 => Some(size as f64 / samples as f64),
            _ => None,
        }
    }
}

/// A write, as seen by subscribers. Payloads carry ids and counts, not whole items, so they fit
/// any transport (PostgreSQL `NOTIFY` takes under 8,000 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StorageEvent {
    /// Samples (or only the metadata) of one series were stored.
    MetricWritten {
        /// Name of the backend that stored it.
        backend: String,
        /// The series' [`Metric::id`].
        metric_id: String,
        /// Samples stored by the write (0 for a metadata-only save).
        samples: u64,
    },
    /// An alert was stored (created or replaced).
    AlertWritten {
        /// Name of the backend that stored it.
        backend: String,
        /// The alert's [`Alert::id`].
        alert_id: String,
        /// Its status after the write, as [`crate::AlertStatus::as_str`] spells it.
        status: String,
    },
    /// An agent state was stored (not one counted as superseded).
    AgentStateWritten {
        /// Name of the backend that stored it.
        backend: String,
        /// The agent's [`AgentState::agent_id`].
        agent_id: String,
        /// The state's free-form status.
        status: String,
    },
}

/// The stream `subscribe` returns.
pub type EventStream = Pin<Box<dyn Stream<Item = StorageEvent> + Send>>;

/// In-process events: what a backend without a change feed of its own (memory, InfluxDB,
/// Qdrant) and the `StorageManager` deliver to `subscribe`. Every event goes to every
/// subscriber of this process; one that falls more than [`LocalEvents::BUFFER`] events behind
/// misses the oldest.
#[derive(Debug, Clone)]
pub struct LocalEvents(tokio::sync::broadcast::Sender<StorageEvent>);

impl LocalEvents {
    /// Events buffered per subscriber before the slowest one starts missing them.
    pub const BUFFER: usize = 4096;

    /// A channel with no subscriber yet.
    pub fn new() -> Self {
        LocalEvents(tokio::sync::broadcast::channel(Self::BUFFER).0)
    }

    /// Sends the event of a write that succeeded; no subscriber is not an error.
    pub fn publish(&self, event: StorageEvent) {
        let _ = self.0.send(event);
    }

    /// The events published from now on.
    pub fn subscribe(&self) -> EventStream {
        use futures::StreamExt;
        let stream = tokio_stream::wrappers::BroadcastStream::new(self.0.subscribe())
            .filter_map(|event| async move { event.ok() });
        Box::pin(stream)
    }
}

impl Default for LocalEvents {
    fn default() -> Self {
        Self::new()
    }
}

/// One store of metrics, alerts and agent states. Every method validates its input with
/// [`crate::validate`] before touching the store and follows DESIGN.md's shared semantics, which
/// the conformance suite in `integration-tests` checks.
#[async_trait]
pub trait StorageBackend: Send + Sync + 'static {
    /// The configured name of this backend.
    fn name(&self) -> &str;

    /// Which driver this is.
    fn backend_type(&self) -> StorageBackendType;

    /// What this backend supports; a `false` flag means the matching call is `Unsupported`.
    fn capabilities(&self) -> Capabilities;

    /// Saves series metadata and samples; a rewritten (series, timestamp, tags) key overwrites.
    /// The batch is validated whole before anything is written.
    async fn save_metrics(&self, metrics: &[Metric]) -> Result<WriteReport>;

    /// [`StorageBackend::save_metrics`] with one series.
    async fn save_metric(&self, metric: &Metric) -> Result<WriteReport> {
        self.save_metrics(std::slice::from_ref(metric)).await
    }

    /// A series with every live sample, sorted by timestamp (then tags).
    async fn get_metric(&self, id: &str) -> Result<Option<Metric>>;

    /// Series matching the query, sorted and paged by its options (DESIGN.md rule 2); each series
    /// carries its live samples within the query's time range and tag filter.
    async fn query_metrics(&self, query: &MetricQuery) -> Result<Vec<Metric>>;

    /// Samples of every series named `query.name`, merged and aggregated into `step` buckets
    /// (DESIGN.md rule 3); one [`HistorySeries`] per `group_by` value, empty buckets omitted.
    async fn metric_history(&self, query: &HistoryQuery) -> Result<Vec<HistorySeries>>;

    /// Upserts alerts by id.
    async fn save_alerts(&self, alerts: &[Alert]) -> Result<WriteReport>;

    /// [`StorageBackend::save_alerts`] with one alert.
    async fn save_alert(&self, alert: &Alert) -> Result<WriteReport> {
        self.save_alerts(std::slice::from_ref(alert)).await
    }

    /// One alert by id; `None` if it is missing or expired.
    async fn get_alert(&self, id: &str) -> Result<Option<Alert>>;

    /// Alerts matching the query, sorted and paged by its options (DESIGN.md rule 2).
    async fn query_alerts(&self, query: &AlertQuery) -> Result<Vec<Alert>>;

    /// Keeps the latest state per agent: a state whose `last_heartbeat` is older than the stored
    /// one is counted as superseded and not stored; an equal one replaces it.
    async fn save_agent_states(&self, states: &[AgentState]) -> Result<WriteReport>;

    /// [`StorageBackend::save_agent_states`] with one state.
    async fn save_agent_state(&self, state: &AgentState) -> Result<WriteReport> {
        self.save_agent_states(std::slice::from_ref(state)).await
    }

    /// The latest state of one agent.
    async fn get_agent_state(&self, agent_id: &str) -> Result<Option<AgentState>>;

    /// The latest state of every agent matching the query, sorted and paged by its options.
    async fn get_agent_states(&self, query: &AgentStateQuery) -> Result<Vec<AgentState>>;

    /// Alerts most like a text, a stored alert or a vector, among those the query's filter
    /// selects, best first (DESIGN.md rule 12; the semantics are in [`crate::similarity`]).
    /// [`crate::ErrorKind::Unsupported`] unless [`Capabilities::similarity_search`].
    async fn find_similar_alerts(&self, query: &SimilarAlertsQuery) -> Result<Vec<Scored<Alert>>> {
        let _ = query;
        Err(crate::Error::unsupported("similarity search")
            .with_operation("find_similar_alerts")
            .with_backend(self.name()))
    }

    /// The latest agent states most like a text, an agent's state or a vector; as
    /// [`StorageBackend::find_similar_alerts`].
    async fn find_similar_agent_states(
        &self,
        query: &SimilarAgentStatesQuery,
    ) -> Result<Vec<Scored<AgentState>>> {
        let _ = query;
        Err(crate::Error::unsupported("similarity search")
            .with_operation("find_similar_agent_states")
            .with_backend(self.name()))
    }

    /// Physically removes expired data.
    async fn apply_retention(&self) -> Result<RetentionReport>;

    /// Writes a backup to `path`: a directory for [`BackupFormat::Portable`], the store's own
    /// file or directory for [`BackupFormat::Native`].
    async fn backup(&self, path: &Path, format: BackupFormat) -> Result<TransferReport>;

    /// Merges a backup into this store by the keys of DESIGN.md rules 1, 4 and 5.
    async fn restore(&self, path: &Path, format: BackupFormat) -> Result<TransferReport>;

    /// Counts and figures about the store (DESIGN.md rule 13).
    async fn stats(&self) -> Result<DatabaseStats>;

    /// Live write events; [`crate::ErrorKind::Unsupported`] unless [`Capabilities::pub_sub`].
    async fn subscribe(&self) -> Result<EventStream>;

    /// Releases connections. Later calls fail with `Unavailable`.
    async fn close(&self) -> Result<()>;
}

/// Names the backend and its type; never its connection string.
impl std::fmt::Debug for dyn StorageBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageBackend")
            .field("name", &self.name())
            .field("backend_type", &self.backend_type())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(size_bytes: Option<u64>, samples: u64) -> DatabaseStats {
        DatabaseStats {
            backend: "main".into(),
            backend_type: StorageBackendType::Memory,
            version: "1".into(),
            uptime_seconds: 0,
            series: 0,
            samples,
            alerts: 0,
            agent_states: 0,
            size_bytes,
            extra: BTreeMap::new(),
        }
    }

    #[test]
    fn bytes_per_sample_is_the_size_over_the_samples() {
        assert_eq!(stats(Some(1_000), 8).bytes_per_sample(), Some(125.0));
        assert_eq!(stats(Some(0), 8).bytes_per_sample(), Some(0.0));
    }

    #[test]
    fn bytes_per_sample_is_none_without_a_size_or_a_sample() {
        assert_eq!(stats(None, 8).bytes_per_sample(), None);
        assert_eq!(stats(Some(4_096), 0).bytes_per_sample(), None);
    }

    #[test]
    fn stats_written_before_the_size_existed_read_as_unknown() {
        let mut old = serde_json::to_value(stats(Some(1), 1)).unwrap();
        old.as_object_mut().unwrap().remove("size_bytes");
        let read: DatabaseStats = serde_json::from_value(old).unwrap();
        assert_eq!(read.size_bytes, None);
    }
}
