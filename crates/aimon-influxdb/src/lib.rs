//! # aimon-influxdb
//!
//! The InfluxDB backend of aimon: one driver for InfluxDB 1.x (v1 API: `/write`, InfluxQL on
//! `/query`, databases and retention policies) and for the v2 write API of 2.x and 3.x
//! (`/api/v2/write` with org, bucket and token; reads through their v1-compatibility
//! `/query`). It speaks HTTP through `reqwest` (rustls, ring) and writes line protocol itself.
//!
//! ```no_run
//! # async fn demo() -> aimon_core::Result<()> {
//! use aimon_core::{StorageBackend, StorageConfig};
//! let config = StorageConfig::from_url("fleet", "influxdb://127.0.0.1:8086/aimon")?
//!     .option("metric_ttl_seconds", 7 * 86_400);
//! let store = aimon_influxdb::InfluxBackend::connect(&config).await?;
//! println!("{:?}", store.stats().await?);
//! # Ok(()) }
//! ```
//!
//! See [`config`] for the URLs and options, and the sections below for the data layout and
//! where InfluxDB's semantics differ from the other backends.
#![deny(unsafe_code)]

mod agent_states;
mod alerts;
pub mod backend;
mod backup;
pub mod client;
pub mod config;
mod error;
pub mod line;
mod metrics;
mod retention;
mod schema;
mod stats;

pub use backend::InfluxBackend;
pub use client::ServerInfo;
pub use config::{ApiSettings, InfluxConfig};
pub use metrics::sample_lines;

/// The URL schemes this backend opens.
pub const SCHEMES: &[&str] = &["influxdb", "influxdb+https", "influxdb2"];

/// Opens the store an `influxdb` configuration describes; the same as
/// [`InfluxBackend::connect`].
pub async fn connect(config: &aimon_core::StorageConfig) -> aimon_core::Result<InfluxBackend> {
    InfluxBackend::connect(config).await
}
