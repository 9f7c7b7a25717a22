//! # aimon-core
//!
//! The contract of aimon: the data model ([`Metric`], [`Alert`], [`AgentState`]), queries, the
//! [`StorageBackend`] trait, [`Capabilities`], the one [`Error`] type, retention, validation,
//! [`StorageConfig`], the portable [`archive`], the client-side [`downsample`] fallback, and the
//! in-memory reference backend [`MemoryBackend`]. It depends on no driver.
//!
//! The shared semantics every backend follows are in the workspace's `DESIGN.md` and in
//! `docs/semantics.md`, which also records the decisions this crate takes where the design is
//! silent (microsecond truncation, series liveness, tie-breaking of `first`/`last`…).
//!
//! ```
//! use aimon_core::{Contract, MemoryBackend, Metric, MetricType, MetricValue, StorageBackend, RetentionPolicy};
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = Contract::new(MemoryBackend::new("example", RetentionPolicy::default()));
//! let metric = Metric::new("agent-1/tokens", "llm.tokens", MetricType::Counter)
//!     .with_value(MetricValue::new(aimon_core::time::now(), 512.0).tag("model", "small"));
//! store.save_metric(&metric).await?;
//! let back = store.get_metric("agent-1/tokens").await?.expect("just saved");
//! assert_eq!(back.values, metric.values);
//! # Ok::<(), aimon_core::Error>(())
//! # }).unwrap();
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod archive;
pub mod backend;
pub mod chunk;
pub mod config;
pub mod contract;
pub mod downsample;
pub mod driver;
pub mod error;
pub mod events;
pub mod filter;
pub mod memory;
pub mod model;
pub mod parse;
pub mod query;
pub mod retention;
pub mod similarity;
pub mod sql;
pub mod time;
pub mod validate;

pub use backend::{
    BackupFormat, Capabilities, DatabaseStats, EventStream, LocalEvents, RetentionMechanism,
    RetentionReport, StorageBackend, StorageEvent, TransferReport, WriteReport,
};
pub use config::{StorageBackendType, StorageConfig, redact_url};
pub use contract::Contract;
pub use driver::{AgentStateDriver, AlertDriver, Descriptor, Driver, MetricDriver};
pub use error::{Error, ErrorKind, Result};
pub use memory::MemoryBackend;
pub use model::{
    AgentState, Alert, AlertSeverity, AlertStatus, DataKind, Metadata, Metric, MetricType,
    MetricValue, Tags,
};
pub use query::{
    AgentStateQuery, Aggregation, AlertQuery, FilterOp, HistoryBucket, HistoryQuery, HistorySeries,
    MetricQuery, QueryFilter, QueryOptions, SortOrder,
};
pub use retention::RetentionPolicy;
pub use similarity::{
    Embedder, HashingEmbedder, Scored, SimilarAgentStatesQuery, SimilarAlertsQuery,
    SimilarityTarget,
};
