//! Storage configuration: [`StorageConfig`], [`StorageBackendType`] and option parsing.
//!
//! The prototype's configuration loads as it is, from TOML or JSON:
//!
//! ```
//! # use aimon_core::{StorageConfig, StorageBackendType};
//! let config: StorageConfig = toml::from_str(r#"
//!     name = "redis-storage"
//!     backend_type = "redis"
//!     connection_string = "redis://localhost:6379/0"
//!     default = true
//!     [options]
//!     metric_ttl_seconds = 86400
//!     alert_ttl_seconds = 172800
//!     agent_state_ttl_seconds = 3600
//!     max_connections = 10
//! "#).unwrap();
//! assert_eq!(config.backend_type, StorageBackendType::Redis);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// The kinds of store aimon knows, whether or not their driver is compiled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum StorageBackendType {
    /// Redis standalone, Sentinel or Cluster (`redis://`, `rediss://`, `redis+sentinel://`,
    /// `redis+cluster://`).
    Redis,
    /// PostgreSQL with native time partitions (`postgres://`, `postgresql://`).
    Postgres,
    /// PostgreSQL with TimescaleDB hypertables (`timescale://`); the PostgreSQL driver.
    Timescale,
    /// InfluxDB 1.x, or the v2 write API of 2.x / 3.x (`influxdb://`, `influxdb+https://`,
    /// `influxdb2://`).
    Influxdb,
    /// A Qdrant server (`qdrant://`) or the embedded engine (`qdrant-edge://`).
    Qdrant,
    /// SQLite, embedded (`sqlite://path`, `sqlite::memory:`).
    Sqlite,
    /// The in-memory reference backend (`memory://`); nothing survives the process.
    Memory,
}

impl StorageBackendType {
    /// Every type, in declaration order.
    pub const ALL: [StorageBackendType; 7] = [
        StorageBackendType::Redis,
        StorageBackendType::Postgres,
        StorageBackendType::Timescale,
        StorageBackendType::Influxdb,
        StorageBackendType::Qdrant,
        StorageBackendType::Sqlite,
        StorageBackendType::Memory,
    ];

    /// The lower-case name used in configuration files (`backend_type = "redis"`).
    pub fn as_str(self) -> &'static str {
        match self {
            StorageBackendType::Redis => "redis",
            StorageBackendType::Postgres => "postgres",
            StorageBackendType::Timescale => "timescale",
            StorageBackendType::Influxdb => "influxdb",
            StorageBackendType::Qdrant => "qdrant",
            StorageBackendType::Sqlite => "sqlite",
            StorageBackendType::Memory => "memory",
        }
    }

    /// The URL schemes that select this type (DESIGN.md "Registry and manager").
    pub fn schemes(self) -> &'static [&'static str] {
        match self {
            StorageBackendType::Redis => &["redis", "rediss", "redis+sentinel", "redis+cluster"],
            StorageBackendType::Postgres => &["postgres", "postgresql"],
            StorageBackendType::Timescale => &["timescale"],
            StorageBackendType::Influxdb => &["influxdb", "influxdb+https", "influxdb2"],
            StorageBackendType::Qdrant => &["qdrant", "qdrant-edge"],
            StorageBackendType::Sqlite => &["sqlite"],
            StorageBackendType::Memory => &["memory"],
        }
    }

    /// The type a URL scheme selects.
    pub fn from_scheme(scheme: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.schemes().iter().any(|s| s.eq_ignore_ascii_case(scheme)))
    }

    /// The type a connection string selects, by its scheme.
    pub fn from_url(url: &str) -> Result<Self> {
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
        Self::from_scheme(scheme).ok_or_else(|| {
            let known: Vec<_> = Self::ALL
                .iter()
                .flat_map(|t| t.schemes())
                .copied()
                .collect();
            Error::config(format!(
                "unknown storage URL scheme {scheme:?} in {}; known schemes: {}",
                redact_url(url),
                known.join(", ")
            ))
        })
    }
}

impl fmt::Display for StorageBackendType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StorageBackendType {
    type Err = Error;

    /// Case-insensitive; also takes `postgresql` and `timescaledb`.
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.to_ascii_lowercase();
        let lower = lower.strip_prefix("storagebackendtype.").unwrap_or(&lower);
        match lower {
            "postgresql" => return Ok(StorageBackendType::Postgres),
            "timescaledb" => return Ok(StorageBackendType::Timescale),
            _ => {}
        }
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == lower)
            .ok_or_else(|| {
                let known: Vec<_> = Self::ALL.iter().map(|t| t.as_str()).collect();
                Error::config(format!(
                    "unknown backend type {s:?}; known types: {}",
                    known.join(", ")
                ))
            })
    }
}

impl Serialize for StorageBackendType {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for StorageBackendType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One named storage: the prototype's `StorageConfig`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Names the backend in the manager, in routing rules, events and errors; unique per manager.
    pub name: String,
    /// Which driver opens `connection_string`; must agree with its scheme.
    pub backend_type: StorageBackendType,
    /// The store's URL; secrets in it are redacted in every output.
    pub connection_string: String,
    /// Whether the manager routes calls here when nothing else selects a backend; at most one per
    /// manager. Default `false`.
    #[serde(default)]
    pub default: bool,
    /// Driver options (`metric_ttl_seconds`, `max_connections`…); an option the driver does not
    /// read
    /// is `ConfigInvalid`. URL query parameters fill in options not set here.
    #[serde(default)]
    pub options: BTreeMap<String, serde_json::Value>,
}

impl StorageConfig {
    /// A configuration whose type comes from the URL's scheme.
    pub fn from_url(name: impl Into<String>, url: impl Into<String>) -> Result<Self> {
        let url = url.into();
        Ok(StorageConfig {
            name: name.into(),
            backend_type: StorageBackendType::from_url(&url)?,
            connection_string: url,
            default: false,
            options: BTreeMap::new(),
        })
    }

    /// Sets one option, replacing any earlier value.
    pub fn option(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.options.insert(key.into(), value.into());
        self
    }

    /// Marks (or unmarks) this backend as the manager's default.
    pub fn default_backend(mut self, default: bool) -> Self {
        self.default = default;
        self
    }

    /// The options as a reader that remembers which were used.
    pub fn reader(&self) -> Options {
        Options::new(self.options.clone())
    }
}

/// Never prints a password or token: the connection string is redacted, secret options hidden.
impl fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options: BTreeMap<_, _> = self
            .options
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret_key(k) {
                    "***".to_owned()
                } else {
                    v.to_string()
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("StorageConfig")
            .field("name", &self.name)
            .field("backend_type", &self.backend_type)
            .field("connection_string", &redact_url(&self.connection_string))
            .field("default", &self.default)
            .field("options", &options)
            .finish()
    }
}

fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "token",
        "secret",
        "api_key",
        "apikey",
        "credential",
    ]
    .iter()
    .any(|s| key.contains(s))
}

/// Whether the part of a URL after its scheme's `:` starts with an authority (`//…`) holding
/// user information (`user:password@`): what embedded stores, whose URLs name a path, refuse
/// rather than take a password for part of a file name.
pub fn authority_has_userinfo(after_scheme: &str) -> bool {
    after_scheme
        .strip_prefix("//")
        .is_some_and(|rest| rest.split('/').next().is_some_and(|a| a.contains('@')))
}

/// A connection string fit for logs and errors: the scheme, user, host, port, path and the
/// names of its query parameters; the password, every parameter's value and any fragment
/// become `***`. Values are hidden whatever their name: a secret may sit under a parameter
/// the backend does not know (`?sslpassword=…`, a typo of `token`), which is exactly the URL
/// an error message quotes.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        // Not a URL we can take apart; keep only the scheme rather than risk printing a secret.
        return match raw.split_once(':') {
            Some((_, rest)) if !rest.contains(['@', '=', '?', '#']) => raw.to_owned(),
            Some((scheme, _)) => format!("{scheme}:***"),
            None => "***".to_owned(),
        };
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, &str)> = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), if v.is_empty() { "" } else { "***" }))
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    if url.fragment().is_some() {
        url.set_fragment(Some("***"));
    }
    url.to_string()
}

fn at_most(key: &str, value: Option<u64>, max: u64) -> Result<Option<u64>> {
    match value {
        Some(n) if n > max => Err(Error::config(format!(
            "option {key}: {n} is more than {max}"
        ))),
        other => Ok(other),
    }
}

/// A password, token or API key: `Debug` and `Display` print `***`, so a configuration that
/// holds one can be logged or put in an error as it is. [`Secret::expose`] is for the one place
/// that hands it to the server (a header, a handshake), never for printing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password, token or API key.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the request or handshake that carries it, or for a tool that
    /// passes it on privately (the `aimon bench` baselines hand it to `psql` and `curl` through
    /// their environment or a file readable by its user only). Never print it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Backend options from a [`StorageConfig`], read by name. [`Options::finish`] fails on any
/// option nobody read, so a typo never silently drops a setting.
#[derive(Debug, Clone, Default)]
pub struct Options {
    values: BTreeMap<String, serde_json::Value>,
    used: BTreeSet<String>,
}

impl Options {
    /// A reader over these values, none of them read yet.
    pub fn new(values: BTreeMap<String, serde_json::Value>) -> Self {
        Options {
            values,
            used: BTreeSet::new(),
        }
    }

    /// Adds an option unless it is already set (URL query parameters under explicit options).
    pub fn insert_default(&mut self, key: impl Into<String>, value: serde_json::Value) {
        self.values.entry(key.into()).or_insert(value);
    }

    fn take(&mut self, key: &str) -> Option<&serde_json::Value> {
        self.used.insert(key.to_owned());
        self.values.get(key)
    }

    /// An unsigned integer, given as a number or a string of digits.
    pub fn u64(&mut self, key: &str) -> Result<Option<u64>> {
        let Some(value) = self.take(key) else {
            return Ok(None);
        };
        let parsed = match value {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        parsed.map(Some).ok_or_else(|| {
            Error::config(format!(
                "option {key}: expected a non-negative integer, got {value}"
            ))
        })
    }

    /// Like [`Options::u64`] but zero is an error too.
    pub fn positive_u64(&mut self, key: &str) -> Result<Option<u64>> {
        match self.u64(key)? {
            Some(0) => Err(Error::config(format!(
                "option {key}: must be greater than zero"
            ))),
            other => Ok(other),
        }
    }

    /// [`Options::u64`] no greater than `max`: `option {key}: {n} is more than {max}`.
    pub fn u64_at_most(&mut self, key: &str, max: u64) -> Result<Option<u64>> {
        let value = self.u64(key)?;
        at_most(key, value, max)
    }

    /// [`Options::positive_u64`] no greater than `max` (pool sizes, counts).
    pub fn positive_u64_at_most(&mut self, key: &str, max: u64) -> Result<Option<u64>> {
        let value = self.positive_u64(key)?;
        at_most(key, value, max)
    }

    /// A positive number of milliseconds (`timeout_ms`…).
    pub fn millis(&mut self, key: &str) -> Result<Option<std::time::Duration>> {
        Ok(self
            .positive_u64(key)?
            .map(std::time::Duration::from_millis))
    }

    /// A positive number of seconds (`timeout_seconds`…).
    pub fn seconds(&mut self, key: &str) -> Result<Option<std::time::Duration>> {
        Ok(self.positive_u64(key)?.map(std::time::Duration::from_secs))
    }

    /// One of a fixed set of names, matched case-insensitively; anything else is
    /// `option {key}: "…" is not one of a, b, c`.
    pub fn choice<T: Copy>(&mut self, key: &str, choices: &[(&str, T)]) -> Result<Option<T>> {
        let Some(value) = self.string(key)? else {
            return Ok(None);
        };
        choices
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&value))
            .map(|&(_, choice)| Some(choice))
            .ok_or_else(|| {
                let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
                Error::config(format!(
                    "option {key}: {value:?} is not one of {}",
                    names.join(", ")
                ))
            })
    }

    /// A boolean, given as `true`/`false` or the strings `"true"`/`"false"`.
    pub fn bool(&mut self, key: &str) -> Result<Option<bool>> {
        let Some(value) = self.take(key) else {
            return Ok(None);
        };
        match value {
            serde_json::Value::Bool(b) => Ok(Some(*b)),
            serde_json::Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
            serde_json::Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
            other => Err(Error::config(format!(
                "option {key}: expected true or false, got {other}"
            ))),
        }
    }

    /// A string.
    pub fn string(&mut self, key: &str) -> Result<Option<String>> {
        let Some(value) = self.take(key) else {
            return Ok(None);
        };
        match value {
            serde_json::Value::String(s) => Ok(Some(s.clone())),
            serde_json::Value::Number(n) => Ok(Some(n.to_string())),
            other => Err(Error::config(format!(
                "option {key}: expected a string, got {other}"
            ))),
        }
    }

    /// Fails naming every option that no reader asked for.
    pub fn finish(self, backend: &str) -> Result<()> {
        let unknown: Vec<_> = self
            .values
            .keys()
            .filter(|k| !self.used.contains(*k))
            .cloned()
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let mut known: Vec<_> = self.used.into_iter().collect();
        known.sort();
        Err(Error::config(format!(
            "unknown option{} {} for the {backend} backend; known options: {}",
            if unknown.len() == 1 { "" } else { "s" },
            unknown.join(", "),
            known.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_option_readers() {
        let mut options = Options::new(BTreeMap::from([
            ("pool".to_owned(), serde_json::json!(8)),
            ("big".to_owned(), serde_json::json!("101")),
            ("zero".to_owned(), serde_json::json!(0)),
            ("timeout_ms".to_owned(), serde_json::json!(250)),
            ("timeout_seconds".to_owned(), serde_json::json!("3")),
            ("mode".to_owned(), serde_json::json!("FULL")),
            ("bad_mode".to_owned(), serde_json::json!("half")),
        ]));
        assert_eq!(options.positive_u64_at_most("pool", 100).unwrap(), Some(8));
        assert_eq!(options.positive_u64_at_most("absent", 100).unwrap(), None);
        let err = options.u64_at_most("big", 100).unwrap_err();
        assert_eq!(err.message(), "option big: 101 is more than 100");
        let err = options.positive_u64_at_most("zero", 100).unwrap_err();
        assert_eq!(err.message(), "option zero: must be greater than zero");
        assert_eq!(
            options.millis("timeout_ms").unwrap(),
            Some(std::time::Duration::from_millis(250))
        );
        assert_eq!(
            options.seconds("timeout_seconds").unwrap(),
            Some(std::time::Duration::from_secs(3))
        );
        let modes = [("normal", 1), ("full", 2)];
        assert_eq!(options.choice("mode", &modes).unwrap(), Some(2));
        let err = options.choice("bad_mode", &modes).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::ConfigInvalid);
        assert_eq!(
            err.message(),
            r#"option bad_mode: "half" is not one of normal, full"#
        );
        options.finish("test").unwrap();
    }

    #[test]
    fn secrets_print_as_stars() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "*** ***");
        assert_eq!(secret.expose(), "hunter2");
    }

    const PROTOTYPE_JSON: &str = r#"{
        "name": "redis-storage",
        "backend_type": "redis",
        "connection_string": "redis://localhost:6379/0",
        "default": true,
        "options": {
            "metric_ttl_seconds": 86400,
            "alert_ttl_seconds": 172800,
            "agent_state_ttl_seconds": 3600,
            "max_connections": 10
        }
    }"#;

    #[test]
    fn prototype_config_loads_from_json() {
        let config: StorageConfig = serde_json::from_str(PROTOTYPE_JSON).unwrap();
        assert_eq!(config.name, "redis-storage");
        assert!(config.default);
        assert_eq!(config.options["max_connections"], 10);
    }

    #[test]
    fn backend_type_accepts_the_prototype_enum_spelling() {
        assert_eq!(
            "REDIS".parse::<StorageBackendType>().unwrap(),
            StorageBackendType::Redis
        );
        assert_eq!(
            "StorageBackendType.POSTGRES"
                .parse::<StorageBackendType>()
                .unwrap(),
            StorageBackendType::Postgres
        );
    }

    #[test]
    fn unknown_scheme_lists_the_known_ones() {
        let err = StorageBackendType::from_url("mongodb://u:hunter2@host/db").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("redis+sentinel") && text.contains("sqlite"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn unknown_options_are_named() {
        let mut options = Options::new(BTreeMap::from([
            ("metric_ttl_second".to_owned(), serde_json::json!(60)),
            ("max_connections".to_owned(), serde_json::json!(4)),
        ]));
        assert_eq!(options.u64("max_connections").unwrap(), Some(4));
        let err = options.finish("sqlite").unwrap_err();
        assert!(err.to_string().contains("metric_ttl_second"), "{err}");
    }

    #[test]
    fn secrets_never_show_in_debug_or_redacted_urls() {
        let config =
            StorageConfig::from_url("r", "redis://user:hunter2@localhost:6379/0?token=abc")
                .unwrap()
                .option("api_key", "sekrit");
        let shown = format!("{config:?}");
        for secret in ["hunter2", "abc", "sekrit"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("localhost:6379"), "{shown}");
    }
}
