//! Backups: the portable archive (through [`aimon_core::archive`]), and PostgreSQL's own
//! format where the tools are installed.

use std::path::Path;

use aimon_core::{Error, Result, TransferReport};

use crate::backend::PostgresBackend;

/// Whether the native format is offered: not yet (see the crate docs).
pub(crate) fn native_available() -> bool {
    false
}

impl PostgresBackend {
    pub(crate) async fn native_backup(&self, _path: &Path) -> Result<TransferReport> {
        Err(Error::unsupported("the native backup format (pg_dump)"))
    }

    pub(crate) async fn native_restore(&self, _path: &Path) -> Result<TransferReport> {
        Err(Error::unsupported("the native backup format (pg_dump)"))
    }
}
