//! `aimon serve`: the store of `--storage`/`--config` behind the HTTP server of
//! `aimon-server`.

use std::sync::Arc;
use std::time::Duration;

use aimon::DataKind;
use aimon_server::{Server, ServerConfig, TlsConfig, TokenConfig};

use crate::cli::{Global, ServeArgs};
use crate::config::{self, Storage};
use crate::error::{CliError, Result};

/// The server's configuration: the config file's `[server]` (a file of that section alone is
/// enough when `--storage` names the store), then the flags and `AIMON_TOKENS`.
pub fn server_config(global: &Global, args: &ServeArgs) -> Result<ServerConfig> {
    let mut server = match &global.config {
        Some(path) => config::load_server_section(path)?.unwrap_or_default(),
        None => ServerConfig::default(),
    };
    if let Some(listen) = args.listen {
        server.listen = listen;
    }
    if let Some(tokens) = &args.tokens {
        server.tokens.extend(
            TokenConfig::parse_list(tokens)
                .map_err(|e| CliError::new(format!("AIMON_TOKENS: {e}")))?,
        );
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        server.tls = Some(TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    server
        .cors_origins
        .extend(args.cors_origins.iter().cloned());
    Ok(server)
}

pub async fn run(storage: &Storage, global: &Global, args: &ServeArgs) -> Result<()> {
    let config = server_config(global, args)?;
    // `--backend NAME` serves that backend for every kind of data.
    if let Some(name) = storage.name() {
        for kind in [DataKind::Metrics, DataKind::Alerts, DataKind::AgentStates] {
            storage.manager.route(kind, name)?;
        }
    }
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let server = Server::bind(Arc::clone(&storage.manager), config)?;
    // One line on stdout: scripts read the address (the port, with --listen …:0).
    println!(
        "aimon serve: listening on {scheme}://{}",
        server.local_addr()
    );
    server
        .serve(
            aimon_server::shutdown_signal(),
            Duration::from_secs(args.grace_seconds),
        )
        .await?;
    eprintln!("aimon serve: stopped; everything accepted is stored");
    Ok(())
}
