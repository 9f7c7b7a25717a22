//! # aimon
//!
//! Storage for monitoring fleets of AI agents. Applications record **metrics** (time series of
//! tagged samples: tokens, latency, cost), **alerts** (severity, lifecycle, labels) and **agent
//! states** (status, heartbeat), and aimon stores and queries them through one async trait,
//! [`StorageBackend`], over several backends that give the same answers.
//!
//! | cargo feature | backend | URL |
//! |---|---|---|
//! | always | in-memory reference | `memory://` |
//! | `sqlite` (default) | SQLite, embedded | `sqlite://path`, `sqlite::memory:` |
//! | `redis` | Redis standalone, Sentinel, Cluster | `redis://`, `rediss://`, `redis+sentinel://`, `redis+cluster://` |
//! | `postgres` | PostgreSQL, native time partitions | `postgres://`, `postgresql://` |
//! | `timescale` | PostgreSQL with TimescaleDB (hypertable mode; CI runs it against TimescaleDB 2.26.4) | `timescale://` |
//! | `influxdb` | InfluxDB 1.x (v1 API), the v2 write API of 2.x / 3.x | `influxdb://`, `influxdb+https://`, `influxdb2://` |
//! | `qdrant` | a Qdrant server over gRPC (compiles and is unit-tested; run against a server only where `AIMON_TEST_QDRANT_URL`, a `qdrant` binary or Docker is there) | `qdrant://host:6334` |
//! | `qdrant-edge` | the embedded Qdrant engine, in-process (implies `qdrant`; a long first compile) | `qdrant-edge:///path` |
//!
//! Asking for a backend whose feature is off is a clear [`ErrorKind::ConfigInvalid`] error
//! naming the feature, never a stub.
//!
//! ```
//! use aimon::{Metric, MetricType, MetricValue, MetricQuery, StorageManager, StorageConfig};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let storage = StorageManager::new();
//! storage.initialize_backend(StorageConfig::from_url("main", "memory://")?).await?;
//!
//! let metric = Metric::new("agent-1/latency", "llm.latency_ms", MetricType::Gauge)
//!     .with_value(MetricValue::new(aimon::time::now(), 842.0).tag("model", "large"));
//! storage.save_metric(&metric, None).await?;
//!
//! let found = storage.query_metrics(&MetricQuery::new().name("llm.latency_ms"), None).await?;
//! assert_eq!(found.len(), 1);
//! # Ok::<(), aimon::Error>(())
//! # }).unwrap();
//! ```
//!
//! # Opening a store by URL
//!
//! [`open_url`] picks the driver from the URL's scheme and returns it behind the shared
//! contract layer (validation, error context, capability checks); [`open`] does the same from a
//! [`StorageConfig`] with options. Every backend answers the same [`StorageBackend`] calls.
//!
//! ```
//! use aimon::{StorageBackend, StorageBackendType};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let scratch = aimon::open_url("scratch", "memory://").await?;
//! assert_eq!(scratch.backend_type(), StorageBackendType::Memory);
//!
//! // A private in-memory SQLite database (feature `sqlite`, on by default).
//! let sqlite = aimon::open_url("local", "sqlite::memory:").await?;
//! assert!(sqlite.capabilities().similarity_search);
//!
//! // Options travel in a `StorageConfig`; an option the driver does not read is an error.
//! let config = aimon::StorageConfig::from_url("short-lived", "memory://")?
//!     .option("metric_ttl_seconds", 3600);
//! let short_lived = aimon::open(&config).await?;
//! assert_eq!(short_lived.name(), "short-lived");
//!
//! let typo = aimon::StorageConfig::from_url("typo", "memory://")?.option("metric_ttl", 3600);
//! assert_eq!(aimon::open(&typo).await.unwrap_err().kind(), aimon::ErrorKind::ConfigInvalid);
//! # Ok::<(), aimon::Error>(())
//! # }).unwrap();
//! ```
//!
//! # Metrics: saving, querying, history
//!
//! A [`Metric`] is a series (its `id` names it) with samples; saving again adds samples, and a
//! sample with the same timestamp and tags overwrites the stored one. [`MetricQuery`] selects
//! series and, with a time range or tags, their samples; [`StorageBackend::metric_history`]
//! aggregates every series of one name into time buckets.
//!
//! ```
//! use aimon::{
//!     Aggregation, HistoryQuery, Metric, MetricQuery, MetricType, MetricValue, StorageBackend,
//! };
//! use chrono::{TimeDelta, TimeZone, Utc};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = aimon::open_url("metrics", "sqlite::memory:").await?;
//! let t0 = Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0).unwrap();
//! let minute = TimeDelta::minutes(1);
//!
//! let latency = Metric::new("agent-1/latency", "llm.latency_ms", MetricType::Gauge)
//!     .with_value(MetricValue::new(t0, 800.0).tag("model", "large"))
//!     .with_value(MetricValue::new(t0 + TimeDelta::seconds(30), 600.0).tag("model", "large"))
//!     .with_value(MetricValue::new(t0 + minute, 200.0).tag("model", "small"));
//! let report = store.save_metric(&latency).await?;
//! assert_eq!(report.written, 3);
//!
//! // Series by name; the tag filter keeps only matching samples.
//! let query = MetricQuery::new().name("llm.latency_ms").tag("model", "large");
//! let found = store.query_metrics(&query).await?;
//! assert_eq!(found.len(), 1);
//! assert_eq!(found[0].values.len(), 2);
//!
//! // One-minute averages; buckets start at multiples of the step since the Unix epoch.
//! let history = HistoryQuery::new("llm.latency_ms", minute, Aggregation::Avg)
//!     .range(t0, t0 + TimeDelta::hours(1));
//! let series = store.metric_history(&history).await?;
//! let buckets: Vec<_> = series[0].buckets.iter().map(|b| (b.value, b.count)).collect();
//! assert_eq!(buckets, [(700.0, 2), (200.0, 1)]);
//!
//! // `group_by` splits the history by a tag's values.
//! let by_model = store.metric_history(&history.group_by("model")).await?;
//! let groups: Vec<_> = by_model.iter().map(|s| s.group.as_deref()).collect();
//! assert_eq!(groups, [Some("large"), Some("small")]);
//! # Ok::<(), aimon::Error>(())
//! # }).unwrap();
//! ```
//!
//! # Alerts: the lifecycle
//!
//! Alerts are upserted by id: change one with [`Alert::acknowledge`] or [`Alert::resolve`] and
//! save it again. [`AlertQuery`] filters by status, severity (exact or minimum), source, labels
//! and a `start_time` range.
//!
//! ```
//! use aimon::{Alert, AlertQuery, AlertSeverity, AlertStatus, StorageBackend};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = aimon::open_url("alerts", "memory://").await?;
//!
//! let mut alert = Alert::new("a-1", "high-latency", AlertSeverity::High, "agent-1");
//! alert.labels.insert("team".into(), "inference".into());
//! store.save_alert(&alert).await?;
//!
//! let urgent = AlertQuery::new().min_severity(AlertSeverity::Medium).status(AlertStatus::Active);
//! assert_eq!(store.query_alerts(&urgent).await?.len(), 1);
//!
//! alert.acknowledge("oncall@example.com");
//! store.save_alert(&alert).await?;
//! alert.resolve("oncall@example.com");
//! store.save_alert(&alert).await?;
//!
//! let stored = store.get_alert("a-1").await?.expect("saved above");
//! assert_eq!(stored.status, AlertStatus::Resolved);
//! assert_eq!(stored.acknowledged_by.as_deref(), Some("oncall@example.com"));
//! assert!(stored.end_time.is_some());
//! assert!(store.query_alerts(&urgent).await?.is_empty());
//! # Ok::<(), aimon::Error>(())
//! # }).unwrap();
//! ```
//!
//! # Agent states
//!
//! Stores keep the latest state per agent by `last_heartbeat`: an older state is counted as
//! `superseded` and not stored, an equal one replaces the stored one.
//!
//! ```
//! use aimon::{AgentState, AgentStateQuery, StorageBackend};
//! use chrono::TimeDelta;
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = aimon::open_url("agents", "memory://").await?;
//!
//! let mut busy = AgentState::new("s-2", "agent-1", "busy");
//! busy.metrics.insert("queue_depth".into(), 12.into());
//! store.save_agent_state(&busy).await?;
//!
//! let mut late = AgentState::new("s-1", "agent-1", "idle");
//! late.last_heartbeat = busy.last_heartbeat - TimeDelta::seconds(10);
//! assert_eq!(store.save_agent_state(&late).await?.superseded, 1);
//!
//! let latest = store.get_agent_state("agent-1").await?.expect("saved above");
//! assert_eq!(latest.status, "busy");
//! let busy_agents = store.get_agent_states(&AgentStateQuery::new().status("busy")).await?;
//! assert_eq!(busy_agents.len(), 1);
//! # Ok::<(), aimon::Error>(())
//! # }).unwrap();
//! ```
//!
//! # Several backends: the `StorageManager`
//!
//! A [`StorageManager`] holds named backends and sends each call to the backend it names, else
//! to the one routed for the call's data kind, else to the default. It also publishes an
//! in-process event for every successful write, whatever the backend.
//!
//! ```
//! use aimon::{
//!     AgentState, DataKind, Metric, MetricType, MetricValue, StorageConfig, StorageManager,
//! };
//! use futures::StreamExt;
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let storage = StorageManager::new();
//! storage
//!     .initialize_backend(StorageConfig::from_url("hot", "memory://")?.default_backend(true))
//!     .await?;
//! storage.initialize_backend(StorageConfig::from_url("history", "sqlite::memory:")?).await?;
//! storage.route(DataKind::Metrics, "history")?;
//! let mut events = storage.subscribe();
//!
//! // Metrics go to `history`, agent states to the default, `hot`.
//! let metric = Metric::new("agent-1/tokens", "llm.tokens", MetricType::Counter)
//!     .with_value(MetricValue::new(aimon::time::now(), 1536.0));
//! storage.save_metric(&metric, None).await?;
//! storage.save_agent_state(&AgentState::new("s-1", "agent-1", "busy"), None).await?;
//!
//! assert!(storage.get_metric("agent-1/tokens", Some("history")).await?.is_some());
//! assert!(storage.get_metric("agent-1/tokens", Some("hot")).await?.is_none());
//! assert!(storage.get_agent_state("agent-1", Some("hot")).await?.is_some());
//!
//! let first = events.next().await.expect("one event per write");
//! assert!(matches!(first, aimon::StorageEvent::MetricWritten { samples: 1, .. }));
//!
//! storage.close(None).await?;
//! # Ok::<(), aimon::Error>(())
//! # }).unwrap();
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub use aimon_core::*;
pub use aimon_registry::{
    BackendDescriptor, StorageManager, descriptors, is_available, open, open_url,
};

#[cfg(feature = "sqlite")]
pub use aimon_sqlite as sqlite;

#[cfg(feature = "redis")]
pub use aimon_redis as redis;

#[cfg(feature = "postgres")]
pub use aimon_postgres as postgres;

#[cfg(feature = "influxdb")]
pub use aimon_influxdb as influxdb;

#[cfg(feature = "qdrant")]
pub use aimon_qdrant as qdrant;
