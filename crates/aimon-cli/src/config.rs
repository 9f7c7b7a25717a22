//! Where the data goes: `--storage URL`, `AIMON_STORAGE`, a config file, or the default SQLite
//! file, opened into a [`StorageManager`].
//!
//! The config file lists named backends exactly as `aimon::StorageConfig` spells them, and may
//! route each kind of data to one of them:
//!
//! ```toml
//! [[storage]]
//! name = "hot"
//! backend_type = "memory"
//! connection_string = "memory://"
//! default = true
//!
//! [routes]
//! metrics = "hot"
//! ```
//!
//! `AIMON_ROUTES_METRICS=name` (and `_ALERTS`, `_AGENT_STATES`) override the routes.

use std::path::Path;
use std::sync::Arc;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

use aimon::{DataKind, StorageConfig, StorageManager};

use crate::cli::Global;
use crate::error::{CliError, Result};

/// Used when neither `--storage`, `AIMON_STORAGE` nor a config file is given.
pub const DEFAULT_STORAGE: &str = "sqlite://./aimon.db";

/// The name of the single backend opened from a URL.
pub const URL_BACKEND_NAME: &str = "default";

/// The config file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub storage: Vec<StorageConfig>,
    #[serde(default)]
    pub routes: Routes,
    /// `aimon serve`: listen address, tokens, TLS, CORS and limits.
    #[serde(default)]
    pub server: Option<aimon_server::ServerConfig>,
}

/// Which named backend receives each kind of data when a command names none.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routes {
    pub metrics: Option<String>,
    pub alerts: Option<String>,
    pub agent_states: Option<String>,
}

impl Routes {
    fn pairs(&self) -> impl Iterator<Item = (DataKind, &str)> {
        [
            (DataKind::Metrics, &self.metrics),
            (DataKind::Alerts, &self.alerts),
            (DataKind::AgentStates, &self.agent_states),
        ]
        .into_iter()
        .filter_map(|(kind, name)| name.as_deref().map(|n| (kind, n)))
    }
}

/// Loads a config file (TOML) with `AIMON_ROUTES_*` overrides from the environment.
pub fn load_file(path: &Path) -> Result<FileConfig> {
    if !path.is_file() {
        return Err(CliError::new(format!(
            "config file {} does not exist or is not a file",
            path.display()
        )));
    }
    let config: FileConfig = Figment::new()
        .merge(Toml::file_exact(path))
        .merge(Env::prefixed("AIMON_ROUTES_").map(|k| format!("routes.{k}").into()))
        .extract()?;
    if config.storage.is_empty() {
        return Err(CliError::new(format!(
            "config file {} has no [[storage]] backend",
            path.display()
        )));
    }
    Ok(config)
}

/// The `[server]` section of a config file, which may hold nothing else when `--storage`
/// names the store (the other sections are checked for their names only).
pub fn load_server_section(path: &Path) -> Result<Option<aimon_server::ServerConfig>> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ServerOnly {
        #[serde(default)]
        #[allow(dead_code)]
        storage: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        #[allow(dead_code)]
        routes: Option<serde::de::IgnoredAny>,
        #[serde(default)]
        server: Option<aimon_server::ServerConfig>,
    }
    if !path.is_file() {
        return Err(CliError::new(format!(
            "config file {} does not exist or is not a file",
            path.display()
        )));
    }
    let file: ServerOnly = Figment::new().merge(Toml::file_exact(path)).extract()?;
    Ok(file.server)
}

/// What a command falls back to when neither `--storage`, `AIMON_STORAGE` nor a config file is
/// given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// [`DEFAULT_STORAGE`], the file the demo fills and the other commands read.
    DefaultFile,
    /// A fresh SQLite file in a temporary directory, removed when the storage closes (`bench`,
    /// which must not leave its samples in the user's store).
    TemporarySqlite,
}

/// Where the open store came from.
#[derive(Debug)]
pub enum Origin {
    /// `--storage` or `AIMON_STORAGE`.
    Url,
    /// `--config` or `AIMON_CONFIG`.
    ConfigFile,
    /// Nothing given: [`DEFAULT_STORAGE`].
    Default,
    /// Nothing given, [`Fallback::TemporarySqlite`]: the directory is removed on close.
    Temporary { url: String, dir: tempfile::TempDir },
}

/// An open set of backends and the backend a command asked for (`--backend`).
pub struct Storage {
    pub manager: Arc<StorageManager>,
    pub backend: Option<String>,
    pub origin: Origin,
}

impl Storage {
    /// The backend name to pass to every manager call.
    pub fn name(&self) -> Option<&str> {
        self.backend.as_deref()
    }

    /// The URL of the temporary store, when that is what was opened.
    pub fn temporary_url(&self) -> Option<&str> {
        match &self.origin {
            Origin::Temporary { url, .. } => Some(url),
            _ => None,
        }
    }

    /// Opens what the global flags describe, or `fallback` when they describe nothing.
    pub async fn open(global: &Global, fallback: Fallback) -> Result<Storage> {
        let manager = StorageManager::new();
        let origin = if let Some(url) = &global.storage {
            open_url(&manager, url).await?;
            Origin::Url
        } else if let Some(path) = &global.config {
            let file = load_file(path)?;
            open_file(&manager, file).await?;
            Origin::ConfigFile
        } else {
            match fallback {
                Fallback::DefaultFile => {
                    open_url(&manager, DEFAULT_STORAGE).await?;
                    Origin::Default
                }
                Fallback::TemporarySqlite => {
                    let dir = tempfile::Builder::new().prefix("aimon-").tempdir()?;
                    let url = format!("sqlite://{}", dir.path().join("aimon.db").display());
                    open_url(&manager, &url).await?;
                    Origin::Temporary { url, dir }
                }
            }
        };
        let storage = Storage {
            manager: Arc::new(manager),
            backend: global.backend.clone(),
            origin,
        };
        // Fail early, naming the configured backends, when --backend names none of them.
        storage.manager.get_backend(storage.name())?;
        Ok(storage)
    }

    /// Closes every backend, flushing what they buffer; then removes a temporary store.
    pub async fn close(self) -> Result<()> {
        self.manager.close(None).await?;
        if let Origin::Temporary { dir, .. } = self.origin {
            dir.close()?;
        }
        Ok(())
    }
}

async fn open_url(manager: &StorageManager, url: &str) -> Result<()> {
    let config = StorageConfig::from_url(URL_BACKEND_NAME, url)?.default_backend(true);
    manager.initialize_backend(config).await?;
    Ok(())
}

async fn open_file(manager: &StorageManager, file: FileConfig) -> Result<()> {
    manager.initialize_backends(file.storage).await?;
    for (kind, name) in file.routes.pairs() {
        manager
            .route(kind, name)
            .map_err(|e| CliError::new(format!("[routes] {kind}: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/aimon.toml");

    #[test]
    fn the_example_config_loads() {
        let config = load_file(Path::new(EXAMPLE)).unwrap();
        let names: Vec<_> = config.storage.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["hot", "local"]);
        assert!(config.storage.iter().any(|s| s.default));
        assert_eq!(config.routes.metrics.as_deref(), Some("local"));
        assert_eq!(
            config.storage[0].options["metric_ttl_seconds"],
            serde_json::json!(86_400)
        );
    }

    #[test]
    fn missing_files_and_unknown_fields_are_errors() {
        let err = load_file(Path::new("/nonexistent/aimon.toml")).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(
            &path,
            "[[storage]]\nname = \"a\"\nbackend_type = \"memory\"\nconnection_string = \"memory://\"\ncolour = 1\n",
        )
        .unwrap();
        let err = load_file(&path).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");

        std::fs::write(&path, "[routes]\nmetrics = \"a\"\n").unwrap();
        let err = load_file(&path).unwrap_err();
        assert!(err.to_string().contains("no [[storage]]"), "{err}");
    }

    #[tokio::test]
    async fn routes_must_name_a_configured_backend() {
        let manager = StorageManager::new();
        let file = FileConfig {
            storage: vec![StorageConfig::from_url("a", "memory://").unwrap()],
            routes: Routes {
                alerts: Some("b".into()),
                ..Routes::default()
            },
            server: None,
        };
        let err = open_file(&manager, file).await.unwrap_err();
        assert!(err.to_string().contains("[routes] alerts"), "{err}");
    }
}
