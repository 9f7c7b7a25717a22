//! # aimon-registry
//!
//! Maps a [`StorageBackendType`] or a URL scheme to the driver compiled into this build, and
//! holds named backends in a [`StorageManager`].
//!
//! Each driver sits behind its own cargo feature. Asking for a type whose driver is not compiled
//! in fails with [`ErrorKind::ConfigInvalid`] naming the feature to enable; an unknown scheme
//! lists the known ones.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let backend = aimon_registry::open_url("scratch", "memory://").await?;
//! assert_eq!(backend.name(), "scratch");
//! # Ok::<(), aimon_core::Error>(())
//! # }).unwrap();
//! ```
#![deny(unsafe_code)]

mod manager;

use std::sync::Arc;

use aimon_core::{
    Error, ErrorKind, MemoryBackend, Result, StorageBackend, StorageBackendType, StorageConfig,
};

pub use manager::StorageManager;

/// A driver known to this build.
#[derive(Debug, Clone, Copy)]
pub struct BackendDescriptor {
    pub backend_type: StorageBackendType,
    /// The cargo feature of the `aimon` crate that compiles the driver in.
    pub feature: &'static str,
    /// Whether the driver is compiled into this build.
    pub available: bool,
}

/// Whether the workspace has a driver crate for a type yet (a driver that does not exist is
/// absent, never stubbed).
fn implemented(backend_type: StorageBackendType) -> bool {
    matches!(
        backend_type,
        StorageBackendType::Memory
            | StorageBackendType::Sqlite
            | StorageBackendType::Redis
            | StorageBackendType::Postgres
            | StorageBackendType::Timescale
            | StorageBackendType::Influxdb
            | StorageBackendType::Qdrant
    )
}

fn feature(backend_type: StorageBackendType) -> &'static str {
    match backend_type {
        StorageBackendType::Memory => "(always built)",
        other => other.as_str(),
    }
}

/// Every backend type with its feature and whether this build has it.
pub fn descriptors() -> Vec<BackendDescriptor> {
    StorageBackendType::ALL
        .into_iter()
        .map(|backend_type| BackendDescriptor {
            backend_type,
            feature: feature(backend_type),
            available: is_available(backend_type),
        })
        .collect()
}

/// Whether `backend_type` can be opened by this build.
pub fn is_available(backend_type: StorageBackendType) -> bool {
    backend_type == StorageBackendType::Memory
        || (backend_type == StorageBackendType::Sqlite && cfg!(feature = "sqlite"))
        || (backend_type == StorageBackendType::Redis && cfg!(feature = "redis"))
        || (backend_type == StorageBackendType::Postgres && cfg!(feature = "postgres"))
        || (backend_type == StorageBackendType::Timescale && cfg!(feature = "timescale"))
        || (backend_type == StorageBackendType::Influxdb && cfg!(feature = "influxdb"))
        || (backend_type == StorageBackendType::Qdrant && cfg!(feature = "qdrant"))
}

fn unavailable(backend_type: StorageBackendType) -> Error {
    let built: Vec<_> = StorageBackendType::ALL
        .into_iter()
        .filter(|t| is_available(*t))
        .map(|t| t.as_str())
        .collect();
    let message = if implemented(backend_type) {
        format!(
            "the {backend_type} backend is not compiled into this build; enable the cargo feature \
             `{}` of the `aimon` crate. This build has: {}",
            feature(backend_type),
            built.join(", ")
        )
    } else {
        format!(
            "the {backend_type} driver is not part of this version of aimon yet (it will ship \
             behind the cargo feature `{}`). This build has: {}",
            feature(backend_type),
            built.join(", ")
        )
    };
    Error::new(ErrorKind::ConfigInvalid, message)
}

/// Opens the backend a configuration describes.
pub async fn open(config: &StorageConfig) -> Result<Arc<dyn StorageBackend>> {
    validate_scheme(config)?;
    let opened: Result<Arc<dyn StorageBackend>> = match config.backend_type {
        StorageBackendType::Memory => Ok(Arc::new(MemoryBackend::from_config(config)?)),
        #[cfg(feature = "sqlite")]
        StorageBackendType::Sqlite => Ok(Arc::new(
            aimon_sqlite::SqliteBackend::connect(config).await?,
        )),
        #[cfg(feature = "redis")]
        StorageBackendType::Redis => {
            Ok(Arc::new(aimon_redis::RedisBackend::connect(config).await?))
        }
        #[cfg(feature = "postgres")]
        StorageBackendType::Postgres => Ok(Arc::new(
            aimon_postgres::PostgresBackend::connect(config).await?,
        )),
        #[cfg(feature = "timescale")]
        StorageBackendType::Timescale => Ok(Arc::new(
            aimon_postgres::PostgresBackend::connect(config).await?,
        )),
        #[cfg(feature = "influxdb")]
        StorageBackendType::Influxdb => Ok(Arc::new(
            aimon_influxdb::InfluxBackend::connect(config).await?,
        )),
        // Both `qdrant://` (server) and `qdrant-edge://` (embedded, feature `qdrant-edge`).
        #[cfg(feature = "qdrant")]
        StorageBackendType::Qdrant => Ok(Arc::new(
            aimon_qdrant::QdrantBackend::connect(config).await?,
        )),
        other => Err(unavailable(other)),
    };
    opened.map_err(|e| {
        if e.backend().is_none() {
            e.with_backend(&config.name)
        } else {
            e
        }
    })
}

/// Opens a backend from a URL alone; the type comes from the scheme.
pub async fn open_url(name: &str, url: &str) -> Result<Arc<dyn StorageBackend>> {
    open(&StorageConfig::from_url(name, url)?).await
}

/// A configuration's `backend_type` and its URL's scheme must agree: `backend_type = "redis"`
/// with a `postgres://` URL is a mistake worth stopping at.
fn validate_scheme(config: &StorageConfig) -> Result<()> {
    let from_url = StorageBackendType::from_url(&config.connection_string)?;
    let compatible = from_url == config.backend_type
        || (config.backend_type == StorageBackendType::Timescale
            && from_url == StorageBackendType::Postgres);
    if compatible {
        Ok(())
    } else {
        Err(Error::config(format!(
            "backend_type is {} but the connection string {} is a {from_url} URL",
            config.backend_type,
            aimon_core::redact_url(&config.connection_string)
        ))
        .with_backend(&config.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_scheme_lists_known_ones() {
        let err = open_url("x", "cassandra://db:9042").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
        assert!(err.to_string().contains("sqlite"), "{err}");
    }

    #[test]
    fn an_unavailable_driver_names_its_feature() {
        let err = unavailable(StorageBackendType::Qdrant);
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
        assert!(err.to_string().contains("`qdrant`"), "{err}");
    }

    #[cfg(not(feature = "qdrant"))]
    #[tokio::test]
    async fn a_driver_not_in_this_build_names_its_feature() {
        let err = open_url("x", "qdrant://localhost:6334").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
        assert!(err.to_string().contains("`qdrant`"), "{err}");
    }

    #[tokio::test]
    async fn type_and_scheme_must_agree() {
        let mut config = StorageConfig::from_url("x", "memory://").unwrap();
        config.backend_type = StorageBackendType::Sqlite;
        let err = open(&config).await.unwrap_err();
        assert!(err.to_string().contains("memory URL"), "{err}");
    }

    #[tokio::test]
    async fn unknown_options_fail_to_open() {
        let config = StorageConfig::from_url("x", "memory://")
            .unwrap()
            .option("metric_ttl_secs", 5);
        let err = open(&config).await.unwrap_err();
        assert!(err.to_string().contains("metric_ttl_secs"), "{err}");
    }
}
