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
#![warn(missing_docs)]

mod manager;
mod router;

use std::sync::Arc;

use aimon_core::{
    Contract, Descriptor, Error, ErrorKind, Result, StorageBackend, StorageBackendType,
    StorageConfig,
};

pub use manager::StorageManager;
pub use router::{Backend, Router};

/// The drivers compiled into this build: one line per driver feature. Each driver crate
/// describes itself (types, URL schemes, feature, constructor) in its `DRIVER` constant.
const DRIVERS: &[Descriptor] = &[
    aimon_core::memory::DRIVER,
    #[cfg(feature = "sqlite")]
    aimon_sqlite::DRIVER,
    #[cfg(feature = "redis")]
    aimon_redis::DRIVER,
    #[cfg(feature = "postgres")]
    aimon_postgres::DRIVER,
    #[cfg(feature = "timescale")]
    aimon_postgres::TIMESCALE_DRIVER,
    #[cfg(feature = "influxdb")]
    aimon_influxdb::DRIVER,
    #[cfg(feature = "qdrant")]
    aimon_qdrant::DRIVER,
];

/// A backend type, its feature and whether this build has its driver.
#[derive(Debug, Clone, Copy)]
pub struct BackendDescriptor {
    /// The type.
    pub backend_type: StorageBackendType,
    /// The cargo feature of the `aimon` crate that compiles the driver in.
    pub feature: &'static str,
    /// Whether the driver is compiled into this build.
    pub available: bool,
}

/// The drivers of this build, as they describe themselves.
pub fn drivers() -> &'static [Descriptor] {
    DRIVERS
}

fn driver(backend_type: StorageBackendType) -> Option<&'static Descriptor> {
    DRIVERS.iter().find(|d| d.types.contains(&backend_type))
}

/// The feature that compiles a type's driver in: its descriptor's, or by convention the type's
/// name for a driver this build does not have.
fn feature(backend_type: StorageBackendType) -> &'static str {
    driver(backend_type).map_or(backend_type.as_str(), |d| d.feature)
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
    driver(backend_type).is_some()
}

fn unavailable(backend_type: StorageBackendType) -> Error {
    let built: Vec<_> = StorageBackendType::ALL
        .into_iter()
        .filter(|t| is_available(*t))
        .map(|t| t.as_str())
        .collect();
    Error::new(
        ErrorKind::ConfigInvalid,
        format!(
            "the {backend_type} backend is not compiled into this build; enable the cargo feature \
             `{}` of the `aimon` crate. This build has: {}",
            feature(backend_type),
            built.join(", ")
        ),
    )
}

/// Opens the backend a configuration describes, behind the [`Contract`] layer.
pub async fn open(config: &StorageConfig) -> Result<Arc<dyn StorageBackend>> {
    validate_scheme(config)?;
    match driver(config.backend_type) {
        Some(descriptor) => open_with(descriptor, config).await,
        None => Err(unavailable(config.backend_type).with_backend(&config.name)),
    }
}

/// Opens a configuration with a given driver, behind the [`Contract`] layer: how a driver
/// that is not part of this build (a crate of your own) is opened exactly as the built-in
/// ones are.
pub async fn open_with(
    descriptor: &Descriptor,
    config: &StorageConfig,
) -> Result<Arc<dyn StorageBackend>> {
    match (descriptor.open)(config).await {
        Ok(driver) => Ok(Contract::shared(driver)),
        Err(e) if e.backend().is_none() => Err(e.with_backend(&config.name)),
        Err(e) => Err(e),
    }
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

    /// Core's scheme list and the drivers' own descriptors say the same thing.
    #[test]
    fn every_driver_scheme_is_core_scheme_of_its_types() {
        for d in DRIVERS {
            let mut theirs: Vec<_> = d.types.iter().flat_map(|t| t.schemes()).copied().collect();
            let mut ours = d.schemes.to_vec();
            theirs.sort_unstable();
            ours.sort_unstable();
            assert_eq!(ours, theirs, "{d:?}");
            for t in d.types {
                assert_eq!(
                    DRIVERS.iter().filter(|o| o.types.contains(t)).count(),
                    1,
                    "one driver per type: {t}"
                );
            }
        }
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
