//! Backups: the portable archive (any backend restores it), and InfluxDB's own portable
//! backup (`influxd backup -portable`) where the binary and the RPC address are available.

use std::path::Path;

use aimon_core::backend::TransferReport;
use aimon_core::{Error, Result};

use crate::backend::InfluxBackend;
use crate::config::{ApiSettings, InfluxConfig};

/// Whether `BackupFormat::Native` works: a v1 store with `backup_address` and `influxd` on
/// `PATH`.
pub(crate) fn native_available(config: &InfluxConfig) -> bool {
    matches!(config.api, ApiSettings::V1 { .. })
        && config.backup_address.is_some()
        && find_binary("influxd").is_some()
}

pub(crate) fn find_binary(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

impl InfluxBackend {
    pub(crate) async fn native_backup(&self, path: &Path) -> Result<TransferReport> {
        if !native_available(&self.config) {
            return Err(Error::unsupported(
                "a native InfluxDB backup (needs a v1 store, the backup_address option and influxd on PATH)",
            ));
        }
        let _ = path;
        Err(Error::unsupported("native backup"))
    }

    pub(crate) async fn native_restore(&self, path: &Path) -> Result<TransferReport> {
        if !native_available(&self.config) {
            return Err(Error::unsupported(
                "a native InfluxDB restore (needs a v1 store, the backup_address option and influxd on PATH)",
            ));
        }
        let _ = path;
        Err(Error::unsupported("native restore"))
    }
}
