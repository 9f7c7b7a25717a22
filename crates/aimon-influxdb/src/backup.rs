//! Backups: the portable archive (any backend restores it), and InfluxDB's own portable backup
//! (`influxd backup -portable`) where the binary and the server's RPC address are available.
//!
//! A native backup is a directory: what `influxd backup -portable -database DB -host ADDR`
//! writes (the database's shards, both retention policies, a manifest of its own), plus
//! `aimon-influxdb.json` naming the source database and retention policies. A native restore
//! cannot load into an existing database (`influxd restore` only creates new ones), so it
//! restores into a scratch database (`influxd restore -portable -db DB -newdb SCRATCH`), merges
//! that into this store with the write rules (an aimon archive written from the scratch
//! database and restored here, so rules 1, 4, 5 and 6 apply as for any restore), and drops the
//! scratch database.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use aimon_core::backend::{BackupFormat, StorageBackend, TransferReport};
use aimon_core::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};

use crate::backend::InfluxBackend;
use crate::config::{ApiSettings, InfluxConfig};
use crate::line;

/// The file aimon adds to `influxd backup`'s output.
const MANIFEST: &str = "aimon-influxdb.json";

#[derive(Debug, Serialize, Deserialize)]
struct NativeManifest {
    format: String,
    database: String,
    retention_policy: String,
    meta_retention_policy: String,
    server_version: String,
}

const FORMAT: &str = "aimon-influxdb-native";

/// Whether `BackupFormat::Native` works: a v1 store with `backup_address` and `influxd` on
/// `PATH`.
pub(crate) fn native_available(config: &InfluxConfig) -> bool {
    matches!(config.api, ApiSettings::V1 { .. })
        && config.backup_address.is_some()
        && aimon_core::archive::find_on_path("influxd").is_some()
}

/// Runs `influxd` with `args`; a failure carries its standard error (no credentials: the RPC
/// service takes none).
async fn influxd(args: &[&std::ffi::OsStr]) -> Result<()> {
    let binary = aimon_core::archive::find_on_path("influxd")
        .ok_or_else(|| Error::unsupported("a native backup without influxd on PATH"))?;
    let out = tokio::process::Command::new(binary)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| Error::new(ErrorKind::Backend, "cannot run influxd").with_source(e))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: String = stderr
        .lines()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join(" | ");
    let kind = if stderr.contains("connection refused") {
        ErrorKind::Unavailable
    } else {
        ErrorKind::Backend
    };
    Err(Error::new(
        kind,
        format!("influxd {} failed: {tail}", args[0].to_string_lossy()),
    ))
}

impl InfluxBackend {
    fn native_settings(&self) -> Result<(&str, &str, &str, &str)> {
        match (&self.config.api, &self.config.backup_address) {
            (
                ApiSettings::V1 {
                    database,
                    retention_policy,
                    meta_retention_policy,
                    ..
                },
                Some(address),
            ) if native_available(&self.config) => {
                Ok((database, retention_policy, meta_retention_policy, address))
            }
            _ => Err(Error::unsupported(
                "a native InfluxDB backup (it needs a v1 store, the backup_address option and \
                 influxd on PATH)",
            )),
        }
    }

    pub(crate) async fn native_backup(&self, path: &Path) -> Result<TransferReport> {
        let (database, rp, meta_rp, address) = self.native_settings()?;
        match std::fs::read_dir(path).map(|mut entries| entries.next().is_some()) {
            Ok(true) => {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "{} exists and is not empty; choose a new backup path",
                        path.display()
                    ),
                ));
            }
            Ok(false) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(path)?,
            Err(e) => return Err(e.into()),
        }
        let stats = self.database_stats().await?;
        influxd(&[
            "backup".as_ref(),
            "-portable".as_ref(),
            "-database".as_ref(),
            database.as_ref(),
            "-host".as_ref(),
            address.as_ref(),
            path.as_os_str(),
        ])
        .await?;
        let manifest = NativeManifest {
            format: FORMAT.to_owned(),
            database: database.to_owned(),
            retention_policy: rp.to_owned(),
            meta_retention_policy: meta_rp.to_owned(),
            server_version: self.server.version.clone(),
        };
        std::fs::write(path.join(MANIFEST), serde_json::to_vec_pretty(&manifest)?)?;
        Ok(TransferReport {
            format: BackupFormat::Native,
            series: stats.series,
            samples: stats.samples,
            alerts: stats.alerts,
            agent_states: stats.agent_states,
            expired: 0,
            bytes: aimon_core::archive::dir_size(path),
        })
    }

    pub(crate) async fn native_restore(
        &self,
        store: &dyn aimon_core::StorageBackend,
        path: &Path,
    ) -> Result<TransferReport> {
        let (database, _, _, address) = self.native_settings()?;
        let manifest: NativeManifest = match std::fs::read(path.join(MANIFEST)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::corrupted("not a native InfluxDB backup of aimon").with_source(e)
            })?,
            Err(_) if !path.exists() => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("no backup at {}", path.display()),
                ));
            }
            Err(_) => {
                return Err(Error::corrupted(format!(
                    "{} is not a native InfluxDB backup of aimon (no {MANIFEST})",
                    path.display()
                )));
            }
        };
        if manifest.format != FORMAT {
            return Err(Error::corrupted(format!(
                "{} is not a native InfluxDB backup of aimon",
                path.display()
            )));
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let scratch = format!("{database}_restore_{}_{nanos}", std::process::id());
        influxd(&[
            "restore".as_ref(),
            "-portable".as_ref(),
            "-db".as_ref(),
            manifest.database.as_ref(),
            "-newdb".as_ref(),
            scratch.as_ref(),
            "-host".as_ref(),
            address.as_ref(),
            path.as_os_str(),
        ])
        .await
        .map_err(|e| {
            if e.kind() == ErrorKind::Backend {
                Error::corrupted(format!(
                    "influxd could not restore {}: {}",
                    path.display(),
                    e.message()
                ))
            } else {
                e
            }
        })?;
        let merged = self.merge_from_scratch(store, &scratch, &manifest).await;
        let dropped = self
            .client
            .query(&format!("DROP DATABASE {}", line::ident(&scratch)))
            .await;
        let mut report = merged?;
        dropped?;
        report.format = BackupFormat::Native;
        Ok(report)
    }

    /// Reads the scratch database through a second backend and merges it here through an
    /// aimon archive in a temporary directory.
    async fn merge_from_scratch(
        &self,
        store: &dyn aimon_core::StorageBackend,
        scratch: &str,
        manifest: &NativeManifest,
    ) -> Result<TransferReport> {
        let mut config = (*self.config).clone();
        config.name = format!("{}-restore", self.config.name);
        config.retention = Default::default();
        config.api = ApiSettings::V1 {
            database: scratch.to_owned(),
            retention_policy: manifest.retention_policy.clone(),
            meta_retention_policy: manifest.meta_retention_policy.clone(),
            username: match &self.config.api {
                ApiSettings::V1 { username, .. } => username.clone(),
                _ => None,
            },
            password: match &self.config.api {
                ApiSettings::V1 { password, .. } => password.clone(),
                _ => None,
            },
        };
        let source = aimon_core::Contract::new(InfluxBackend::open(config).await?);
        let dir = tempfile_dir()?;
        let archive = dir.join("archive");
        let result = async {
            aimon_core::archive::write(&source, &archive).await?;
            aimon_core::archive::restore(store, &archive).await
        }
        .await;
        let _ = source.close().await;
        let _ = std::fs::remove_dir_all(&dir);
        result
    }
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir() -> Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!(
        "aimon-influxdb-restore-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_backup_needs_v1_an_address_and_influxd() {
        let config = |url: &str| {
            InfluxConfig::parse(
                &aimon_core::StorageConfig::from_url("i", url).unwrap(),
                |_| Some("t".to_owned()),
            )
            .unwrap()
        };
        assert!(!native_available(&config("influxdb://h/db")));
        assert!(!native_available(&config(
            "influxdb2://h?org=o&bucket=b&backup_address=h:8088"
        )));
        assert_eq!(
            native_available(&config("influxdb://h/db?backup_address=h:8088")),
            aimon_core::archive::find_on_path("influxd").is_some()
        );
    }
}
