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
#![deny(unsafe_code)]

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
