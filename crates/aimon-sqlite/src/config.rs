//! [`SqliteConfig`]: where the database lives and how it is opened, parsed from a
//! [`StorageConfig`].
//!
//! | URL | database |
//! |---|---|
//! | `sqlite://data/aimon.db` | the relative path `data/aimon.db` |
//! | `sqlite:///var/lib/aimon.db` | the absolute path `/var/lib/aimon.db` |
//! | `sqlite:aimon.db` | the relative path `aimon.db` |
//! | `sqlite::memory:`, `sqlite://:memory:` | a private in-memory database |
//!
//! Options: the retention trio (`metric_ttl_seconds`, `alert_ttl_seconds`,
//! `agent_state_ttl_seconds`), `max_connections` (default [`DEFAULT_MAX_CONNECTIONS`]; always 1
//! in memory), `busy_timeout_ms` (default [`DEFAULT_BUSY_TIMEOUT_MS`]) and `synchronous`
//! ([`Synchronous`], default `normal`). Any other option is a
//! [`aimon_core::ErrorKind::ConfigInvalid`] error that names it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use aimon_core::{Error, Result, RetentionPolicy, StorageBackendType, StorageConfig};

/// Connections in the pool of a file database unless `max_connections` says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 8;
/// How long a statement waits for a lock held by another connection, unless `busy_timeout_ms`
/// says otherwise.
pub const DEFAULT_BUSY_TIMEOUT_MS: u64 = 5_000;

/// The option naming the pool size.
pub const MAX_CONNECTIONS_OPTION: &str = "max_connections";
/// The option naming the busy timeout in milliseconds.
pub const BUSY_TIMEOUT_OPTION: &str = "busy_timeout_ms";

/// The option naming SQLite's `synchronous` setting.
pub const SYNCHRONOUS_OPTION: &str = "synchronous";

/// SQLite's `PRAGMA synchronous`: when a commit waits for the disk. The database is always in
/// WAL mode (files), so the trade-off is:
///
/// | value | a commit that returned survives | cost |
/// |---|---|---|
/// | `off` | a crash of the process, not of the machine (power loss may also corrupt the file) | no fsync at all |
/// | `normal` (default) | a crash of the process; power loss or an OS crash may lose the last commits, never corrupt | fsync at checkpoints only |
/// | `full` | power loss and OS crashes too | one fsync of the WAL per commit |
/// | `extra` | as `full`, and the directory is synced after the WAL is reset | slightly more than `full` |
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// No fsync: survives a process crash only; power loss may corrupt the file.
    Off,
    /// Fsync at checkpoints: power loss may lose the last commits, never corrupt. The default.
    #[default]
    Normal,
    /// One fsync of the WAL per commit: a commit that returned survives power loss.
    Full,
    /// As `Full`, and the directory is synced after the WAL is reset.
    Extra,
}

impl Synchronous {
    /// The option value (`off`, `normal`, `full`, `extra`).
    pub fn as_str(self) -> &'static str {
        match self {
            Synchronous::Off => "off",
            Synchronous::Normal => "normal",
            Synchronous::Full => "full",
            Synchronous::Extra => "extra",
        }
    }
}

/// Where the database lives.
#[derive(Clone, PartialEq, Eq)]
pub enum SqliteLocation {
    /// A database file, created on first use.
    File(PathBuf),
    /// A private in-memory database that lives as long as the backend.
    Memory,
}

impl fmt::Debug for SqliteLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqliteLocation::File(path) => f.debug_tuple("File").field(path).finish(),
            SqliteLocation::Memory => f.write_str("Memory"),
        }
    }
}

impl fmt::Display for SqliteLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqliteLocation::File(path) => write!(f, "{}", path.display()),
            SqliteLocation::Memory => f.write_str(":memory:"),
        }
    }
}

/// The SQLite backend's settings.
#[derive(Clone, PartialEq, Eq)]
pub struct SqliteConfig {
    /// The backend's configured name.
    pub name: String,
    /// The database file, or a private in-memory database.
    pub location: SqliteLocation,
    /// TTLs from the `*_ttl_seconds` options; `None` keeps data forever.
    pub retention: RetentionPolicy,
    /// Pool size; 1 for an in-memory database.
    pub max_connections: u32,
    /// How long a statement waits for a lock held by another connection (option `busy_timeout_ms`,
    /// default [`DEFAULT_BUSY_TIMEOUT_MS`]).
    pub busy_timeout: Duration,
    /// When a commit waits for the disk (option `synchronous`).
    pub synchronous: Synchronous,
}

impl fmt::Debug for SqliteConfig {
    // SQLite has no credentials; the fields are listed one by one all the same so that a
    // secret-bearing field added later is not printed by accident.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteConfig")
            .field("name", &self.name)
            .field("location", &self.location)
            .field("retention", &self.retention)
            .field("max_connections", &self.max_connections)
            .field("busy_timeout", &self.busy_timeout)
            .field("synchronous", &self.synchronous)
            .finish()
    }
}

impl SqliteConfig {
    /// Parses a `sqlite` [`StorageConfig`]: its URL and options. Unknown options are an error
    /// naming them.
    pub fn from_storage_config(config: &StorageConfig) -> Result<Self> {
        if config.backend_type != StorageBackendType::Sqlite {
            return Err(Error::config(format!(
                "the sqlite backend cannot open a {} configuration",
                config.backend_type
            )));
        }
        let location = parse_url(&config.connection_string)?;
        let mut options = config.reader();
        let retention = RetentionPolicy::from_options(&mut options)?;
        let max_connections = match options.positive_u64(MAX_CONNECTIONS_OPTION)? {
            None => DEFAULT_MAX_CONNECTIONS,
            Some(n) => u32::try_from(n).map_err(|_| {
                Error::config(format!("option {MAX_CONNECTIONS_OPTION}: {n} is too large"))
            })?,
        };
        let busy_timeout_ms = options
            .u64(BUSY_TIMEOUT_OPTION)?
            .unwrap_or(DEFAULT_BUSY_TIMEOUT_MS);
        let synchronous = options
            .choice(
                SYNCHRONOUS_OPTION,
                &[
                    ("off", Synchronous::Off),
                    ("normal", Synchronous::Normal),
                    ("full", Synchronous::Full),
                    ("extra", Synchronous::Extra),
                ],
            )?
            .unwrap_or_default();
        options.finish("sqlite")?;
        let max_connections = match location {
            SqliteLocation::Memory => 1,
            SqliteLocation::File(_) => max_connections,
        };
        Ok(SqliteConfig {
            name: config.name.clone(),
            location,
            retention,
            max_connections,
            busy_timeout: Duration::from_millis(busy_timeout_ms),
            synchronous,
        })
    }

    /// A configuration for the database file `path` with default options.
    pub fn file(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        SqliteConfig {
            name: name.into(),
            location: SqliteLocation::File(path.into()),
            retention: RetentionPolicy::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            busy_timeout: Duration::from_millis(DEFAULT_BUSY_TIMEOUT_MS),
            synchronous: Synchronous::default(),
        }
    }

    /// A configuration for a private in-memory database.
    pub fn memory(name: impl Into<String>) -> Self {
        SqliteConfig {
            location: SqliteLocation::Memory,
            max_connections: 1,
            ..Self::file(name, "")
        }
    }

    /// Sets the retention policy.
    pub fn with_retention(mut self, retention: RetentionPolicy) -> Self {
        self.retention = retention;
        self
    }
}

/// Parses `sqlite://path`, `sqlite:///abs/path`, `sqlite:path`, `sqlite::memory:` and
/// `sqlite://:memory:`.
pub fn parse_url(url: &str) -> Result<SqliteLocation> {
    let rest = url
        .split_once(':')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("sqlite"))
        .map(|(_, rest)| rest)
        .ok_or_else(|| {
            Error::config(format!(
                "not a sqlite URL: {}; expected sqlite://path, sqlite:///absolute/path or sqlite::memory:",
                aimon_core::redact_url(url)
            ))
        })?;
    if aimon_core::config::authority_has_userinfo(rest) {
        return Err(Error::config(
            "a sqlite URL names a file; it takes no user, password or host \
             (expected sqlite://path, sqlite:///absolute/path or sqlite::memory:)",
        ));
    }
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if path == ":memory:" {
        return Ok(SqliteLocation::Memory);
    }
    if path.is_empty() {
        return Err(Error::config(format!(
            "the sqlite URL {} names no database file; expected sqlite://path, \
             sqlite:///absolute/path or sqlite::memory:",
            aimon_core::redact_url(url)
        )));
    }
    if path.contains('?') || path.contains('#') {
        return Err(Error::config(format!(
            "the sqlite URL {} has URL parameters; pass settings as options \
             ({MAX_CONNECTIONS_OPTION}, {BUSY_TIMEOUT_OPTION}, metric_ttl_seconds, \
             alert_ttl_seconds, agent_state_ttl_seconds)",
            aimon_core::redact_url(url)
        )));
    }
    Ok(SqliteLocation::File(PathBuf::from(path)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aimon_core::ErrorKind;

    fn config(url: &str) -> StorageConfig {
        StorageConfig::from_url("s", url).unwrap()
    }

    #[test]
    fn url_forms() {
        let file = |p: &str| SqliteLocation::File(PathBuf::from(p));
        assert_eq!(parse_url("sqlite://data/a.db").unwrap(), file("data/a.db"));
        assert_eq!(
            parse_url("sqlite:///var/lib/a.db").unwrap(),
            file("/var/lib/a.db")
        );
        assert_eq!(parse_url("sqlite:a.db").unwrap(), file("a.db"));
        assert_eq!(parse_url("SQLITE://a.db").unwrap(), file("a.db"));
        assert_eq!(
            parse_url("sqlite::memory:").unwrap(),
            SqliteLocation::Memory
        );
        assert_eq!(
            parse_url("sqlite://:memory:").unwrap(),
            SqliteLocation::Memory
        );
        for bad in [
            "sqlite://",
            "sqlite:",
            "redis://x",
            "a.db",
            "sqlite://a.db?mode=rwc",
        ] {
            let err = parse_url(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{bad}");
        }
    }

    #[test]
    fn options_are_read_and_defaults_apply() {
        let c = SqliteConfig::from_storage_config(
            &config("sqlite:///tmp/x.db")
                .option("metric_ttl_seconds", 60)
                .option("alert_ttl_seconds", "120")
                .option("max_connections", 3)
                .option("busy_timeout_ms", 250),
        )
        .unwrap();
        assert_eq!(c.retention.metric_ttl, Some(Duration::from_secs(60)));
        assert_eq!(c.retention.alert_ttl, Some(Duration::from_secs(120)));
        assert_eq!(c.retention.agent_state_ttl, None);
        assert_eq!(c.max_connections, 3);
        assert_eq!(c.busy_timeout, Duration::from_millis(250));

        let d = SqliteConfig::from_storage_config(&config("sqlite://x.db")).unwrap();
        assert_eq!(d.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(
            d.busy_timeout,
            Duration::from_millis(DEFAULT_BUSY_TIMEOUT_MS)
        );
        assert_eq!(d.retention, RetentionPolicy::default());
    }

    #[test]
    fn memory_uses_one_connection() {
        let c = SqliteConfig::from_storage_config(
            &config("sqlite::memory:").option("max_connections", 8),
        )
        .unwrap();
        assert_eq!(c.location, SqliteLocation::Memory);
        assert_eq!(c.max_connections, 1);
    }

    #[test]
    fn unknown_and_bad_options_are_config_errors() {
        let err = SqliteConfig::from_storage_config(
            &config("sqlite://x.db").option("metric_ttl_second", 60),
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
        assert!(err.to_string().contains("metric_ttl_second"), "{err}");

        for (key, value) in [
            ("max_connections", serde_json::json!(0)),
            ("max_connections", serde_json::json!(u64::MAX)),
            ("busy_timeout_ms", serde_json::json!(-1)),
            ("metric_ttl_seconds", serde_json::json!(0)),
            ("alert_ttl_seconds", serde_json::json!("soon")),
        ] {
            let err =
                SqliteConfig::from_storage_config(&config("sqlite://x.db").option(key, value))
                    .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{key}");
        }
    }

    #[test]
    fn other_backend_types_are_refused() {
        let err = SqliteConfig::from_storage_config(&config("memory://")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
    }

    #[test]
    fn debug_shows_the_location() {
        let c = SqliteConfig::from_storage_config(&config("sqlite:///tmp/x.db")).unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("/tmp/x.db"), "{shown}");
    }
}
