//! # aimon-postgres
//!
//! The PostgreSQL backend of aimon (sqlx 0.9), with native time partitions, and a TimescaleDB
//! mode. It follows the shared semantics of `DESIGN.md` and `docs/semantics.md` and answers
//! every call as the reference [`aimon_core::MemoryBackend`] does.
//!
//! ```no_run
//! # async fn demo() -> aimon_core::Result<()> {
//! use aimon_core::{StorageBackend, StorageConfig};
//! let config = StorageConfig::from_url("history", "postgres://aimon:secret@db:5432/aimon?sslmode=require")?
//!     .option("schema", "fleet_a")
//!     .option("metric_ttl_seconds", 30 * 86_400);
//! let store = aimon_postgres::PostgresBackend::connect(&config).await?;
//! println!("{:?}", store.stats().await?);
//! # Ok(()) }
//! ```
#![deny(unsafe_code)]

mod agent_states;
mod alerts;
pub mod backend;
mod backup;
pub mod config;
mod error;
mod events;
mod metrics;
mod retention;
mod schema;
mod sql;
mod stats;
mod timescale;

pub use backend::PostgresBackend;
pub use config::PostgresConfig;

/// The URL schemes this backend opens.
pub const SCHEMES: &[&str] = &["postgres", "postgresql", "timescale"];

/// Opens the store a `postgres` or `timescale` configuration describes; the same as
/// [`PostgresBackend::connect`].
pub async fn connect(config: &aimon_core::StorageConfig) -> aimon_core::Result<PostgresBackend> {
    PostgresBackend::connect(config).await
}
