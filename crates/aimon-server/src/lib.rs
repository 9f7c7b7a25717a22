//! `aimon serve`: an HTTP server in front of aimon's backends, so agents in any language can
//! write and read: a JSON API under `/api/v1`, OpenTelemetry metrics (OTLP/HTTP) at
//! `/v1/metrics`, Prometheus remote write at `/api/v1/write`, live events as Server-Sent
//! Events, and its own metrics at `/metrics`. docs/server.md describes every route.
//!
//! ```no_run
//! # async fn run() -> aimon::Result<()> {
//! let manager = std::sync::Arc::new(aimon::StorageManager::new());
//! manager
//!     .initialize_backend(aimon::StorageConfig::from_url("default", "sqlite://./aimon.db")?)
//!     .await?;
//! let server = aimon_server::Server::bind(manager, aimon_server::ServerConfig::default())?;
//! println!("listening on {}", server.local_addr());
//! server
//!     .serve(aimon_server::shutdown_signal(), std::time::Duration::from_secs(10))
//!     .await
//! # }
//! ```

mod api;
mod auth;
mod body;
pub mod config;
mod dashboard;
mod error;
mod events;
mod fleet;
mod ingest;
pub mod otlp;
mod params;
mod receivers;
pub mod remote_write;
mod server;
mod telemetry;
mod tls;

pub use auth::Scope;
pub use config::{Limits, ServerConfig, TlsConfig, TokenConfig};
pub use server::{Server, router};

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
