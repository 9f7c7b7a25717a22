//! [`InfluxConfig`]: the server, API generation and namespace of an InfluxDB store, parsed from
//! a [`StorageConfig`].
//!
//! | URL | API |
//! |---|---|
//! | `influxdb://[user[:password]@]host[:port]/DATABASE[?rp=…]` | v1: `POST /write?db&rp&precision=u`, InfluxQL on `/query`, database and retention policies managed by aimon (InfluxDB 1.x) |
//! | `influxdb+https://…` | the same over TLS (rustls, ring provider, the system's roots) |
//! | `influxdb2://host[:port]?org=…&bucket=…` | v2 writes (`POST /api/v2/write?org&bucket&precision=us`, `Authorization: Token`), reads through the v1-compatibility `/query` with the bucket as database (InfluxDB 2.x with a DBRP mapping, 3.x) |
//!
//! The port defaults to 8086. Options are [`StorageConfig`] options or URL query parameters
//! (explicit options win), except secrets, which are never accepted in a URL's query:
//!
//! | option | meaning | default |
//! |---|---|---|
//! | `rp` | v1: the retention policy of the samples (made the database's `DEFAULT`) | [`DEFAULT_RP`] |
//! | `meta_rp` | v1: the retention policy (infinite) of series metadata, alerts and agent states | `<rp>_meta` |
//! | `org`, `bucket` | v2: the organisation and bucket of the samples | required |
//! | `meta_bucket` | v2: the bucket of metadata, alerts and agent states; must keep data forever (they are points at time 0) | `<bucket>_meta` |
//! | `token` | v2: the API token | the environment variable `token_env` names |
//! | `token_env` | v2: the environment variable holding the token | `INFLUX_TOKEN` |
//! | `password` | v1: the password, if not in the URL | none |
//! | `batch_lines`, `batch_bytes` | the most lines / uncompressed bytes one write request carries | 5,000 / 4 MiB |
//! | `timeout_seconds` | per HTTP request | 30 |
//! | `tls` | `influxdb2://` over HTTPS | false |
//! | `backup_address` | v1: `host:port` of the server's RPC service, for `influxd backup -portable` | none (no native backup) |
//! | `metric_ttl_seconds`, `alert_ttl_seconds`, `agent_state_ttl_seconds` | retention | keep forever |
//!
//! Anything else is a [`aimon_core::ErrorKind::ConfigInvalid`] error naming it. Passwords and
//! tokens never appear in `Debug` output, logs or errors.

use std::time::Duration;

use aimon_core::config::Secret;
use aimon_core::{Error, Result, RetentionPolicy, StorageBackendType, StorageConfig, redact_url};

/// The samples' retention policy unless `rp` says otherwise.
pub const DEFAULT_RP: &str = "aimon";
/// The environment variable read for the v2 token unless `token_env` says otherwise.
pub const DEFAULT_TOKEN_ENV: &str = "INFLUX_TOKEN";
/// Lines per write request unless `batch_lines` says otherwise (InfluxData's advice).
pub const DEFAULT_BATCH_LINES: usize = 5_000;
/// Uncompressed bytes per write request unless `batch_bytes` says otherwise.
pub const DEFAULT_BATCH_BYTES: usize = 4 << 20;
/// Per-request timeout unless `timeout_seconds` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Options that may be URL query parameters (no secrets among them).
const URL_OPTIONS: &[&str] = &[
    "rp",
    "meta_rp",
    "org",
    "bucket",
    "meta_bucket",
    "token_env",
    "batch_lines",
    "batch_bytes",
    "timeout_seconds",
    "backup_address",
    "tls",
    "metric_ttl_seconds",
    "alert_ttl_seconds",
    "agent_state_ttl_seconds",
];

/// The settings of one API generation, behind one client (Vector's InfluxDB sink does the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiSettings {
    /// The v1 API: InfluxDB 1.x, or the v1-compatibility API of 2.x / 3.x.
    V1 {
        /// The database (the URL's path); against InfluxDB 1.x aimon creates it and its retention
        /// policies.
        database: String,
        /// The samples' retention policy.
        retention_policy: String,
        /// The infinite retention policy of metadata, alerts and agent states.
        meta_retention_policy: String,
        /// The user, from the URL; `None` for a server without authentication.
        username: Option<String>,
        /// The password, from the URL or the `password` option.
        password: Option<Secret>,
    },
    /// v2 writes (`/api/v2/write`) with org, bucket and token; reads through `/query`.
    V2 {
        /// The organisation (option `org`).
        org: String,
        /// The bucket of the samples (option `bucket`, required); its retention is set in InfluxDB.
        bucket: String,
        /// The bucket of series metadata, alerts and agent states (option `meta_bucket`, default
        /// `<bucket>_meta`); it must keep data forever.
        meta_bucket: String,
        /// The API token (option `token`, else the variable `token_env` names, default
        /// [`DEFAULT_TOKEN_ENV`]).
        token: Secret,
    },
}

impl ApiSettings {
    /// The database name `/query` takes: the v1 database, or the v2 bucket (DBRP mapping).
    pub fn database(&self) -> &str {
        match self {
            ApiSettings::V1 { database, .. } => database,
            ApiSettings::V2 { bucket, .. } => bucket,
        }
    }

    /// `v1` or `v2`, for messages and stats.
    pub fn generation(&self) -> &'static str {
        match self {
            ApiSettings::V1 { .. } => "v1",
            ApiSettings::V2 { .. } => "v2",
        }
    }
}

/// The InfluxDB backend's settings. `Debug` never shows credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfluxConfig {
    /// The backend's configured name.
    pub name: String,
    /// `http://host:port/` or `https://host:port/`, without credentials.
    pub base_url: url::Url,
    /// The connection string, redacted, for messages.
    pub display_url: String,
    /// The API generation and its database, buckets and credentials.
    pub api: ApiSettings,
    /// TTLs from the `*_ttl_seconds` options; on 1.x `metric_ttl` is also the samples' retention
    /// policy's duration.
    pub retention: RetentionPolicy,
    /// The most lines one write request carries (option `batch_lines`, default
    /// [`DEFAULT_BATCH_LINES`]).
    pub batch_lines: usize,
    /// The most uncompressed bytes one write request carries (option `batch_bytes`, default
    /// [`DEFAULT_BATCH_BYTES`]).
    pub batch_bytes: usize,
    /// Per HTTP request (option `timeout_seconds`, default [`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// `host:port` of the RPC service `influxd backup` talks to.
    pub backup_address: Option<String>,
}

impl InfluxConfig {
    /// Parses an `influxdb` [`StorageConfig`]: its URL and options.
    pub fn from_storage_config(config: &StorageConfig) -> Result<Self> {
        if config.backend_type != StorageBackendType::Influxdb {
            return Err(Error::config(format!(
                "the influxdb backend cannot open a {} configuration",
                config.backend_type
            )));
        }
        Self::parse(config, |var| std::env::var(var).ok())
    }

    /// [`InfluxConfig::from_storage_config`] with the environment passed in (tests).
    pub fn parse(config: &StorageConfig, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let raw = &config.connection_string;
        let display_url = redact_url(raw);
        let bad = |why: &str| {
            Error::config(format!(
                "not a usable InfluxDB URL ({why}): {display_url}; expected \
                 influxdb://[user[:password]@]host[:port]/DATABASE, influxdb+https://… or \
                 influxdb2://host[:port]?org=…&bucket=…"
            ))
        };
        let url = url::Url::parse(raw).map_err(|_| bad("it does not parse"))?;
        let scheme = url.scheme().to_ascii_lowercase();
        let (v2, https) = match scheme.as_str() {
            "influxdb" => (false, false),
            "influxdb+https" => (false, true),
            "influxdb2" => (true, false),
            _ => return Err(bad("unknown scheme")),
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?;
        let port = url.port().unwrap_or(8086);
        let mut options = config.reader();
        for (key, value) in url.query_pairs() {
            if URL_OPTIONS.contains(&key.as_ref()) {
                options.insert_default(key.into_owned(), serde_json::Value::String(value.into()));
            } else if matches!(key.as_ref(), "token" | "password") {
                return Err(bad(&format!(
                    "secrets do not belong in the query string; give `{key}` as an option{}",
                    if key == "token" {
                        " or through the INFLUX_TOKEN environment variable"
                    } else {
                        " or in the URL's user-info"
                    }
                )));
            } else {
                return Err(bad(&format!("unknown URL parameter {key:?}")));
            }
        }
        let tls = https || options.bool("tls")?.unwrap_or(false);
        let base_url = url::Url::parse(&format!(
            "{}://{}:{port}/",
            if tls { "https" } else { "http" },
            if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else {
                host.to_owned()
            }
        ))
        .map_err(|_| bad("bad host"))?;
        let retention = RetentionPolicy::from_options(&mut options)?;
        let batch_lines = options
            .positive_u64("batch_lines")?
            .map_or(DEFAULT_BATCH_LINES, |n| n.min(1_000_000) as usize);
        let batch_bytes = options
            .positive_u64("batch_bytes")?
            .map_or(DEFAULT_BATCH_BYTES, |n| n.clamp(1024, 1 << 30) as usize);
        let timeout = options
            .seconds("timeout_seconds")?
            .unwrap_or(DEFAULT_TIMEOUT);
        let backup_address = options.string("backup_address")?;
        let api = if v2 {
            if !url.username().is_empty() || url.password().is_some() {
                // Not `bad`: its message shows the URL, and a user name here may be a token.
                return Err(Error::config(
                    "influxdb2:// takes a token option (or INFLUX_TOKEN), not user-info in the URL",
                ));
            }
            if !matches!(url.path(), "" | "/") {
                return Err(bad(
                    "influxdb2:// names its bucket with ?bucket=…, not a path",
                ));
            }
            let org = options
                .string("org")?
                .filter(|s| !s.is_empty())
                .ok_or_else(|| bad("influxdb2:// needs ?org=…"))?;
            let bucket = options
                .string("bucket")?
                .filter(|s| !s.is_empty())
                .ok_or_else(|| bad("influxdb2:// needs ?bucket=…"))?;
            // Not the samples' bucket by default: metadata and alerts are points at time 0,
            // which a bucket with a retention period refuses.
            let meta_bucket = options
                .string("meta_bucket")?
                .unwrap_or_else(|| format!("{bucket}_meta"));
            let token_env = options
                .string("token_env")?
                .unwrap_or_else(|| DEFAULT_TOKEN_ENV.to_owned());
            let token = match options.string("token")? {
                Some(t) => t,
                None => env(&token_env).ok_or_else(|| {
                    Error::config(format!(
                        "{display_url}: no token; set the `token` option or the {token_env} \
                         environment variable"
                    ))
                })?,
            };
            // It goes into an HTTP header: visible ASCII only (the message never shows it).
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Error::config(format!(
                    "{display_url}: the token is empty or holds characters an HTTP header \
                     cannot carry (spaces, control or non-ASCII characters)"
                )));
            }
            for (what, value) in [
                ("org", &org),
                ("bucket", &bucket),
                ("meta_bucket", &meta_bucket),
            ] {
                check_name(what, value)?;
            }
            ApiSettings::V2 {
                org,
                bucket,
                meta_bucket,
                token: Secret::new(token),
            }
        } else {
            let database = percent_decode(url.path().trim_start_matches('/'));
            if database.is_empty() || database.contains('/') {
                return Err(bad(
                    "the path must name one database: influxdb://host:8086/DATABASE",
                ));
            }
            check_name("database", &database)?;
            let retention_policy = options
                .string("rp")?
                .unwrap_or_else(|| DEFAULT_RP.to_owned());
            check_name("rp", &retention_policy)?;
            let meta_retention_policy = options
                .string("meta_rp")?
                .unwrap_or_else(|| format!("{retention_policy}_meta"));
            check_name("meta_rp", &meta_retention_policy)?;
            if meta_retention_policy == retention_policy {
                return Err(Error::config(
                    "option meta_rp: must differ from rp (metadata must outlive samples)",
                ));
            }
            let username = (!url.username().is_empty()).then(|| percent_decode(url.username()));
            let password = match url.password() {
                Some(p) => Some(Secret::new(percent_decode(p))),
                None => options.string("password")?.map(Secret::new),
            };
            ApiSettings::V1 {
                database,
                retention_policy,
                meta_retention_policy,
                username,
                password,
            }
        };
        // Read so that `finish` accepts them in both modes; unused in the other one.
        let _ = options.string("password")?;
        let _ = options.string("token")?;
        let _ = options.string("token_env")?;
        options.finish("influxdb")?;
        Ok(InfluxConfig {
            name: config.name.clone(),
            base_url,
            display_url,
            api,
            retention,
            batch_lines,
            batch_bytes,
            timeout,
            backup_address,
        })
    }

    /// The v1 URL `save_metrics` posts samples to, without credentials:
    /// `<base_url>write?db=<database>&rp=<samples' retention policy>&precision=u`, the
    /// precision of [`crate::sample_lines`]. Public API for outside loaders such as the
    /// `aimon bench --compare-curl` baseline, which post those lines there themselves (with the
    /// credentials of [`ApiSettings::V1`]). `None` for the v2 API.
    pub fn samples_write_url(&self) -> Option<url::Url> {
        let ApiSettings::V1 {
            database,
            retention_policy,
            ..
        } = &self.api
        else {
            return None;
        };
        let mut url = self.base_url.join("write").ok()?;
        url.query_pairs_mut()
            .append_pair("db", database)
            .append_pair("rp", retention_policy)
            .append_pair("precision", "u");
        Some(url)
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Databases, retention policies, orgs and buckets: names aimon creates or writes into URLs.
fn check_name(what: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 255
        && !value
            .chars()
            .any(|c| c.is_control() || matches!(c, '/' | '\\' | '"' | '\''));
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "{what} {value:?} is not a usable name: 1 to 255 characters without control \
             characters, quotes, slashes or backslashes"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aimon_core::ErrorKind;

    fn parse(url: &str, options: &[(&str, serde_json::Value)]) -> Result<InfluxConfig> {
        let mut config = StorageConfig::from_url("i", url).unwrap();
        for (k, v) in options {
            config.options.insert((*k).to_owned(), v.clone());
        }
        InfluxConfig::parse(&config, |var| {
            (var == "INFLUX_TOKEN").then(|| "env-token-s3cr3t".to_owned())
        })
    }

    #[test]
    fn v1_urls_name_a_database_and_retention_policy() {
        let c = parse("influxdb://u:p%40ss@db.example:9999/metrics?rp=week", &[]).unwrap();
        assert_eq!(c.base_url.as_str(), "http://db.example:9999/");
        match &c.api {
            ApiSettings::V1 {
                database,
                retention_policy,
                meta_retention_policy,
                username,
                password,
            } => {
                assert_eq!(database, "metrics");
                assert_eq!(retention_policy, "week");
                assert_eq!(meta_retention_policy, "week_meta");
                assert_eq!(username.as_deref(), Some("u"));
                assert_eq!(password.as_ref().map(Secret::expose), Some("p@ss"));
            }
            other => panic!("{other:?}"),
        }
        let https = parse("influxdb+https://h/d", &[]).unwrap();
        assert_eq!(https.base_url.as_str(), "https://h:8086/");
        assert_eq!(https.batch_lines, DEFAULT_BATCH_LINES);
    }

    /// The write URL outside loaders post samples to: no credentials, the samples' policy.
    #[test]
    fn the_samples_write_url_names_database_policy_and_precision() {
        let c = parse("influxdb://u:p%40ss@db.example:9999/metrics?rp=week", &[]).unwrap();
        assert_eq!(
            c.samples_write_url().unwrap().as_str(),
            "http://db.example:9999/write?db=metrics&rp=week&precision=u"
        );
        let v2 = parse("influxdb2://h:8086?org=acme&bucket=fleet", &[]).unwrap();
        assert_eq!(v2.samples_write_url(), None);
    }

    #[test]
    fn v2_urls_take_org_bucket_and_a_token_from_option_or_env() {
        let c = parse("influxdb2://h:8086?org=acme&bucket=fleet", &[]).unwrap();
        match &c.api {
            ApiSettings::V2 {
                org,
                bucket,
                meta_bucket,
                token,
            } => {
                assert_eq!((org.as_str(), bucket.as_str()), ("acme", "fleet"));
                assert_eq!(meta_bucket, "fleet_meta");
                assert_eq!(token.expose(), "env-token-s3cr3t");
            }
            other => panic!("{other:?}"),
        }
        let c = parse(
            "influxdb2://h?org=acme&bucket=fleet",
            &[("token", "opt-token-s3cr3t".into())],
        )
        .unwrap();
        assert!(
            matches!(&c.api, ApiSettings::V2 { token, .. } if token.expose() == "opt-token-s3cr3t")
        );
        let missing = InfluxConfig::parse(
            &StorageConfig::from_url("i", "influxdb2://h?org=a&bucket=b").unwrap(),
            |_| None,
        )
        .unwrap_err();
        assert!(missing.to_string().contains("INFLUX_TOKEN"), "{missing}");
    }

    #[test]
    fn bad_urls_and_options_are_config_errors() {
        for (url, options) in [
            ("influxdb://h", vec![]),
            ("influxdb://h/a/b", vec![]),
            ("influxdb:///db", vec![]),
            ("influxdb://h/db?colour=red", vec![]),
            ("influxdb://h/db?token=abc", vec![]),
            ("influxdb://h/db?rp=x&meta_rp=x", vec![]),
            ("influxdb://h/d%22b", vec![]),
            ("influxdb2://h?bucket=b", vec![]),
            ("influxdb2://h?org=o", vec![]),
            ("influxdb2://h/path?org=o&bucket=b", vec![]),
            (
                "influxdb2://h?org=o&bucket=b",
                vec![("token", serde_json::json!("tok en\n-s3cr3t"))],
            ),
            (
                "influxdb2://h?org=o&bucket=b",
                vec![("token", serde_json::json!(""))],
            ),
            (
                "influxdb://h/db",
                vec![("batch_lines", serde_json::json!(0))],
            ),
            (
                "influxdb://h/db",
                vec![("metric_ttl_secs", serde_json::json!(5))],
            ),
        ] {
            let err = parse(url, &options).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{url} {options:?}");
            assert!(!err.to_string().contains("s3cr3t"), "{err}");
        }
    }

    #[test]
    fn secrets_never_show_in_debug_or_errors() {
        let c = parse("influxdb://alice:hunter2@h/db", &[]).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("alice"), "{shown}");
        let c = parse(
            "influxdb2://h?org=o&bucket=b",
            &[("token", "tok-s3cr3t".into())],
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("tok-s3cr3t"), "{shown}");
        let c = parse("influxdb2://h?org=o&bucket=b", &[]).unwrap();
        assert!(!format!("{c:?}").contains("env-token-s3cr3t"));
        let err = parse("influxdb://alice:hunter2@h/db?token=zzz-s3cr3t", &[]).unwrap_err();
        for secret in ["hunter2", "zzz-s3cr3t"] {
            assert!(!err.to_string().contains(secret), "{err}");
            assert!(!format!("{err:?}").contains(secret), "{err:?}");
        }
    }
}
