//! [`PostgresConfig`]: the server, schema and partitioning of a PostgreSQL store, parsed from a
//! [`StorageConfig`].
//!
//! | URL | store |
//! |---|---|
//! | `postgres://[user[:password]@]host[:port]/database[?params]` | PostgreSQL, native partitions |
//! | `postgresql://…` | the same |
//! | `timescale://…` | the same server with the `timescaledb` extension required |
//!
//! libpq parameters in the query string (`sslmode`, `sslrootcert`, `application_name`…) go to
//! the driver as they are. aimon's own options may be given either as options of the
//! [`StorageConfig`] or as query parameters (explicit options win):
//!
//! | option | meaning | default |
//! |---|---|---|
//! | `schema` | the namespace: every table, index and partition lives in it | [`DEFAULT_SCHEMA`] |
//! | `max_connections` | pool size | [`DEFAULT_MAX_CONNECTIONS`] |
//! | `partition_interval` | width of a samples partition: seconds, or `90s`, `15m`, `6h`, `1d`, `1w`; in native mode a whole multiple of ten minutes (the chunk window) | `1d` |
//! | `partitions_ahead` | partitions kept ready past the current one | [`DEFAULT_PARTITIONS_AHEAD`] |
//! | `compression_after` | TimescaleDB: compress chunks older than this (same forms) | off |
//! | `ingest` | `copy` (binary `COPY … FROM STDIN`) or `unnest` (one `INSERT … FROM UNNEST` per batch) | `copy` |
//! | `metric_ttl_seconds`, `alert_ttl_seconds`, `agent_state_ttl_seconds` | retention | keep forever |
//!
//! Anything else is a [`aimon_core::ErrorKind::ConfigInvalid`] error naming it. Credentials
//! never appear in `Debug` output, logs or errors ([`aimon_core::redact_url`]).

use std::fmt;
use std::time::Duration;

use aimon_core::config::Secret;
use aimon_core::{Error, Result, RetentionPolicy, StorageBackendType, StorageConfig, redact_url};

/// The schema unless `schema` says otherwise.
pub const DEFAULT_SCHEMA: &str = "aimon";
/// Pool size unless `max_connections` says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 8;
/// Upper bound of `max_connections`.
pub const MAX_MAX_CONNECTIONS: u64 = 256;
/// Partition width unless `partition_interval` says otherwise: one day.
pub const DEFAULT_PARTITION_INTERVAL: Duration = Duration::from_secs(86_400);
/// Partitions created past the current one unless `partitions_ahead` says otherwise.
pub const DEFAULT_PARTITIONS_AHEAD: u32 = 2;
/// Upper bound of `partitions_ahead`.
pub const MAX_PARTITIONS_AHEAD: u64 = 366;
/// Shortest accepted partition width: partitions narrower than a minute would only multiply
/// tables.
pub const MIN_PARTITION_INTERVAL: Duration = Duration::from_secs(60);

/// aimon's options that may also be given as URL query parameters.
const URL_OPTIONS: &[&str] = &[
    "schema",
    "max_connections",
    "partition_interval",
    "partitions_ahead",
    "compression_after",
    "ingest",
    "metric_ttl_seconds",
    "alert_ttl_seconds",
    "agent_state_ttl_seconds",
];

/// The connection parameters the driver (sqlx) understands, as URL query parameters. Anything
/// else is refused here: the driver would only warn and go on (writing into the default schema
/// after a typo of `schema`), and its warning prints the parameter's value, which may be a
/// password (`sslpassword`, which it does not support).
const DRIVER_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// Whether the driver takes the URL parameter `key` (`options[name]` sets one server option).
fn is_driver_parameter(key: &str) -> bool {
    DRIVER_PARAMETERS.contains(&key)
        || key
            .strip_prefix("options[")
            .is_some_and(|rest| rest.len() > 1 && rest.ends_with(']'))
}

/// How a batch of samples reaches the `samples` table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IngestMethod {
    /// `COPY samples … FROM STDIN (FORMAT binary)` under a savepoint; the `UNNEST … ON
    /// CONFLICT DO UPDATE` upsert only when the batch rewrites a stored key. The default: the
    /// faster of the two (see the crate docs for the measurements).
    #[default]
    Copy,
    /// `INSERT … SELECT FROM UNNEST($1::bigint[], …)`: one statement per batch (the `ON
    /// CONFLICT DO UPDATE` form when the batch rewrites a stored key).
    Unnest,
}

/// The PostgreSQL backend's settings. `Debug` never shows credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// The backend's configured name.
    pub name: String,
    /// `postgres` or `timescale`.
    pub backend_type: StorageBackendType,
    /// The URL handed to the driver: `postgres://`, with aimon's options removed. Holds the
    /// credentials: never print it.
    connect_url: String,
    /// The connection string, redacted, for messages.
    pub display_url: String,
    /// Every object of this store lives in this schema (an identifier, always quoted).
    pub schema: String,
    /// TTLs from the `*_ttl_seconds` options; expired partitions are dropped by `apply_retention`.
    pub retention: RetentionPolicy,
    /// Pool size (option `max_connections`, 1..=[`MAX_MAX_CONNECTIONS`], default
    /// [`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: u32,
    /// Width of one samples partition or chunk (option `partition_interval`, at least
    /// [`MIN_PARTITION_INTERVAL`], default one day).
    pub partition_interval: Duration,
    /// Partitions kept ready past the current one (option `partitions_ahead`,
    /// 0..=[`MAX_PARTITIONS_AHEAD`], default [`DEFAULT_PARTITIONS_AHEAD`]).
    pub partitions_ahead: u32,
    /// TimescaleDB only: compress chunks older than this.
    pub compression_after: Option<Duration>,
    /// How sample batches are written (option `ingest`, default `copy`).
    pub ingest: IngestMethod,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("name", &self.name)
            .field("backend_type", &self.backend_type)
            .field("url", &self.display_url)
            .field("schema", &self.schema)
            .field("retention", &self.retention)
            .field("max_connections", &self.max_connections)
            .field("partition_interval", &self.partition_interval)
            .field("partitions_ahead", &self.partitions_ahead)
            .field("compression_after", &self.compression_after)
            .field("ingest", &self.ingest)
            .finish()
    }
}

impl PostgresConfig {
    /// Parses a `postgres` or `timescale` [`StorageConfig`]: its URL and options.
    pub fn from_storage_config(config: &StorageConfig) -> Result<Self> {
        // The name travels in every NOTIFY payload, which PostgreSQL caps at 8,000 bytes.
        aimon_core::validate::name("the backend name", &config.name)
            .map_err(|e| Error::config(e.to_string()))?;
        let backend_type = config.backend_type;
        if !matches!(
            backend_type,
            StorageBackendType::Postgres | StorageBackendType::Timescale
        ) {
            return Err(Error::config(format!(
                "the postgres backend cannot open a {backend_type} configuration"
            )));
        }
        let parsed = parse_url(&config.connection_string)?;
        let backend_type = if parsed.timescale {
            StorageBackendType::Timescale
        } else {
            backend_type
        };
        let mut options = config.reader();
        for (key, value) in parsed.options {
            options.insert_default(key, serde_json::Value::String(value));
        }
        let retention = RetentionPolicy::from_options(&mut options)?;
        let schema = options
            .string("schema")?
            .unwrap_or_else(|| DEFAULT_SCHEMA.to_owned());
        check_schema(&schema)?;
        let max_connections = options
            .positive_u64_at_most("max_connections", MAX_MAX_CONNECTIONS)?
            .map_or(DEFAULT_MAX_CONNECTIONS, |n| n as u32);
        let partition_interval = match options.string("partition_interval")? {
            None => DEFAULT_PARTITION_INTERVAL,
            Some(text) => parse_duration("partition_interval", &text)?,
        };
        if partition_interval < MIN_PARTITION_INTERVAL {
            return Err(Error::config(format!(
                "option partition_interval: {partition_interval:?} is shorter than one minute"
            )));
        }
        // Native partitions hold whole chunk windows (ten minutes): a partition must end where
        // a window does.
        let window = crate::metrics::chunks::WINDOW as u128;
        if backend_type != StorageBackendType::Timescale
            && partition_interval.as_micros() % window != 0
        {
            return Err(Error::config(format!(
                "option partition_interval: {partition_interval:?} is not a whole multiple of ten \
                 minutes, the chunk window of postgres:// stores"
            )));
        }
        let partitions_ahead = options
            .u64_at_most("partitions_ahead", MAX_PARTITIONS_AHEAD)?
            .map_or(DEFAULT_PARTITIONS_AHEAD, |n| n as u32);
        let compression_after = options
            .string("compression_after")?
            .map(|text| parse_duration("compression_after", &text))
            .transpose()?;
        let ingest = match options.string("ingest")?.as_deref() {
            None | Some("copy") => IngestMethod::Copy,
            Some("unnest") => IngestMethod::Unnest,
            Some(other) => {
                return Err(Error::config(format!(
                    "option ingest: {other:?} is not unnest or copy"
                )));
            }
        };
        options.finish(backend_type.as_str())?;
        Ok(PostgresConfig {
            name: config.name.clone(),
            backend_type,
            connect_url: parsed.connect_url,
            display_url: redact_url(&config.connection_string),
            schema,
            retention,
            max_connections,
            partition_interval,
            partitions_ahead,
            compression_after,
            ingest,
        })
    }

    /// Whether TimescaleDB is required (`timescale://` or `backend_type = timescale`).
    pub fn timescale(&self) -> bool {
        self.backend_type == StorageBackendType::Timescale
    }

    /// The URL for the driver (credentials included): crate-private on purpose.
    pub(crate) fn connect_url(&self) -> &str {
        &self.connect_url
    }

    /// The libpq URL of the server (`postgres://`, aimon's options removed) for tools such as
    /// `psql` and `pg_dump`. **It carries the credentials**: pass it to a process, never print
    /// it (print [`PostgresConfig::display_url`] instead).
    pub fn libpq_url(&self) -> &str {
        &self.connect_url
    }

    /// [`PostgresConfig::libpq_url`] without its password, and the password (percent-decoded)
    /// apart, so that a tool gets it through `PGPASSWORD` and never on its command line, where
    /// other users of the machine could read it. Public API for tools that run `psql` or
    /// `pg_dump` against the store, as the `aimon bench --compare-psql` baseline.
    pub fn libpq_url_and_password(&self) -> (String, Option<Secret>) {
        match url::Url::parse(&self.connect_url) {
            Ok(mut parsed) => {
                let mut password = parsed.password().map(|p| {
                    percent_encoding::percent_decode_str(p)
                        .decode_utf8_lossy()
                        .into_owned()
                });
                let _ = parsed.set_password(None);
                // A `?password=` parameter leaves the URL too.
                let (secret, kept): (Vec<_>, Vec<_>) = parsed
                    .query_pairs()
                    .into_owned()
                    .partition(|(k, _)| k == "password");
                if let Some((_, p)) = secret.into_iter().next_back() {
                    password.get_or_insert(p);
                }
                if kept.is_empty() {
                    parsed.set_query(None);
                } else {
                    parsed.query_pairs_mut().clear().extend_pairs(kept);
                }
                (parsed.to_string(), password.map(Secret::new))
            }
            Err(_) => (self.connect_url.clone(), None),
        }
    }

    /// `partition_interval` in microseconds.
    pub fn partition_micros(&self) -> i64 {
        i64::try_from(self.partition_interval.as_micros()).unwrap_or(i64::MAX)
    }

    /// The schema, quoted as an identifier.
    pub fn quoted_schema(&self) -> String {
        quote_ident(&self.schema)
    }
}

/// What [`parse_url`] takes apart.
#[derive(Debug)]
pub(crate) struct ParsedUrl {
    pub connect_url: String,
    pub timescale: bool,
    /// aimon's options found in the query string.
    pub options: Vec<(String, String)>,
}

/// Splits a `postgres://`, `postgresql://` or `timescale://` URL into the driver's URL and
/// aimon's options.
pub(crate) fn parse_url(raw: &str) -> Result<ParsedUrl> {
    let bad = |why: &str| {
        Error::config(format!(
            "not a usable PostgreSQL URL ({why}): {}; expected \
             postgres://[user[:password]@]host[:port]/database[?sslmode=…]",
            redact_url(raw)
        ))
    };
    let mut url = url::Url::parse(raw).map_err(|_| bad("it does not parse"))?;
    let timescale = match url.scheme().to_ascii_lowercase().as_str() {
        "postgres" | "postgresql" => false,
        "timescale" => true,
        _ => return Err(bad("unknown scheme")),
    };
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    let mut options = Vec::new();
    let mut driver_pairs = Vec::new();
    for (key, value) in url.query_pairs() {
        if URL_OPTIONS.contains(&key.as_ref()) {
            options.push((key.into_owned(), value.into_owned()));
        } else if is_driver_parameter(&key) {
            driver_pairs.push((key.into_owned(), value.into_owned()));
        } else {
            // The value is never shown: it may be a secret.
            return Err(Error::config(format!(
                "unknown URL parameter {key:?}; aimon's options are {} and the driver's \
                 connection parameters {}",
                URL_OPTIONS.join(", "),
                DRIVER_PARAMETERS.join(", "),
            )));
        }
    }
    if driver_pairs.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(driver_pairs);
    }
    // `Url::set_scheme` refuses some changes between special and non-special schemes; these are
    // all non-special, but rebuild the text to be safe.
    let rest = url.as_str().split_once(':').map(|(_, r)| r).unwrap_or("");
    Ok(ParsedUrl {
        connect_url: format!("postgres:{rest}"),
        timescale,
        options,
    })
}

/// A schema name is an identifier: 1 to 63 bytes of ASCII letters, digits and `_`, not starting
/// with a digit, and not a system schema (`pg_*`, `information_schema`). It is always quoted
/// in SQL all the same.
pub fn check_schema(schema: &str) -> Result<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && !schema.as_bytes()[0].is_ascii_digit()
        && schema
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let reserved = schema.to_ascii_lowercase().starts_with("pg_")
        || schema.eq_ignore_ascii_case("information_schema");
    if ok && !reserved {
        Ok(())
    } else {
        Err(Error::config(format!(
            "option schema: {schema:?} is not a usable schema name; use 1 to 63 ASCII letters, \
             digits and _, not starting with a digit or pg_"
        )))
    }
}

/// `"name"` with embedded quotes doubled: an identifier as SQL text.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Parses `3600`, `3600s`, `15m`, `6h`, `1d`, `2w` (also `1 day`, `6 hours`).
pub fn parse_duration(option: &str, text: &str) -> Result<Duration> {
    let bad = || {
        Error::config(format!(
            "option {option}: {text:?} is not a duration; use seconds or a number with s, m, h, d or w"
        ))
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_lowercase();
    let seconds = match unit.as_str() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3_600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 604_800,
        _ => return Err(bad()),
    };
    let total = n.checked_mul(seconds).ok_or_else(bad)?;
    if total == 0 {
        return Err(Error::config(format!(
            "option {option}: must be greater than zero"
        )));
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aimon_core::ErrorKind;

    #[test]
    fn a_backend_name_that_no_event_could_carry_is_refused() {
        let long = "n".repeat(8_000);
        let config = StorageConfig::from_url(long.as_str(), "postgres://h/db").unwrap();
        let err = PostgresConfig::from_storage_config(&config).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{err}");
    }

    #[test]
    fn passwords_leave_the_libpq_url() {
        let config = |url: &str| {
            PostgresConfig::from_storage_config(&StorageConfig::from_url("p", url).unwrap())
                .unwrap()
        };
        let (url, password) =
            config("postgres://u:p%40s+s@h:5432/db?sslmode=require").libpq_url_and_password();
        assert!(
            !url.contains("p%40s") && url.starts_with("postgres://u@h:5432/db"),
            "{url}"
        );
        // Percent-decoding, not form decoding: a `+` stays a `+`.
        assert_eq!(password.as_ref().map(Secret::expose), Some("p@s+s"));
        assert_eq!(config("postgres://h/db").libpq_url_and_password().1, None);
        let (url, password) =
            config("postgres://u@h/db?password=s%26cret&sslmode=disable").libpq_url_and_password();
        assert_eq!(url, "postgres://u@h/db?sslmode=disable");
        assert_eq!(password.as_ref().map(Secret::expose), Some("s&cret"));
    }

    fn config(url: &str) -> StorageConfig {
        StorageConfig::from_url("pg", url).unwrap()
    }

    #[test]
    fn schemes_and_driver_url() {
        let p = parse_url("postgresql://u:p@db:5433/x?sslmode=require&schema=s1").unwrap();
        assert_eq!(p.connect_url, "postgres://u:p@db:5433/x?sslmode=require");
        assert!(!p.timescale);
        assert_eq!(p.options, vec![("schema".to_owned(), "s1".to_owned())]);
        let t = parse_url("timescale://db/x").unwrap();
        assert!(t.timescale);
        assert_eq!(t.connect_url, "postgres://db/x");
        for bad in ["redis://db/0", "postgres://", "postgres:///x", "not a url"] {
            assert_eq!(
                parse_url(bad).unwrap_err().kind(),
                ErrorKind::ConfigInvalid,
                "{bad}"
            );
        }
    }

    #[test]
    fn options_from_the_url_and_the_config() {
        let c = PostgresConfig::from_storage_config(
            &config("postgres://db/x?schema=from_url&partition_interval=6h&max_connections=3")
                .option("schema", "explicit")
                .option("partitions_ahead", 0)
                .option("compression_after", "7d")
                .option("metric_ttl_seconds", 3600),
        )
        .unwrap();
        assert_eq!(c.schema, "explicit");
        assert_eq!(c.partition_interval, Duration::from_secs(6 * 3600));
        assert_eq!(c.max_connections, 3);
        assert_eq!(c.partitions_ahead, 0);
        assert_eq!(c.compression_after, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(c.retention.metric_ttl, Some(Duration::from_secs(3600)));
        assert_eq!(c.connect_url(), "postgres://db/x");

        let d = PostgresConfig::from_storage_config(&config("postgres://db/x")).unwrap();
        assert_eq!(d.schema, DEFAULT_SCHEMA);
        assert_eq!(d.partition_interval, DEFAULT_PARTITION_INTERVAL);
        assert_eq!(d.partitions_ahead, DEFAULT_PARTITIONS_AHEAD);
        assert_eq!(d.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert!(!d.timescale());
        let t = PostgresConfig::from_storage_config(&config("timescale://db/x")).unwrap();
        assert!(t.timescale());
    }

    #[test]
    fn unknown_url_parameters_are_refused_without_their_values() {
        for url in [
            "postgres://db/x?shema=x",
            "postgresql://u@db/x?bogus=1",
            "postgres://db/x?sslpassword=s3cret",
            "postgres://db/x?sslmode=require&sslpassword=s3cret",
            "timescale://db/x?options[=s3cret",
        ] {
            let err = parse_url(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{url}");
            let text = err.to_string();
            assert!(text.contains("unknown URL parameter"), "{text}");
            assert!(!text.contains("s3cret"), "{text}");
        }
        let ok = parse_url(
            "postgres://u:p@db/x?sslmode=verify-full&sslrootcert=/ca.pem&application_name=a\
             &options[statement_timeout]=5s&schema=s",
        )
        .unwrap();
        assert!(
            ok.connect_url.contains("options%5Bstatement_timeout%5D=5s"),
            "{}",
            ok.connect_url
        );
    }

    #[test]
    fn bad_options_are_config_errors() {
        for (key, value) in [
            ("schema", serde_json::json!("a-b")),
            ("schema", serde_json::json!("pg_catalog")),
            ("schema", serde_json::json!("x\"; DROP SCHEMA public; --")),
            ("schema", serde_json::json!("1abc")),
            ("schema", serde_json::json!("")),
            ("max_connections", serde_json::json!(0)),
            ("max_connections", serde_json::json!(100_000)),
            ("partition_interval", serde_json::json!("30s")),
            ("partition_interval", serde_json::json!("1 fortnight")),
            ("partitions_ahead", serde_json::json!(10_000)),
            ("compression_after", serde_json::json!("0")),
            ("metric_ttl_second", serde_json::json!(60)),
        ] {
            let err =
                PostgresConfig::from_storage_config(&config("postgres://db/x").option(key, value))
                    .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{key}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("x", "90").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_duration("x", "1 day").unwrap(),
            Duration::from_secs(86_400)
        );
        assert_eq!(
            parse_duration("x", "15m").unwrap(),
            Duration::from_secs(900)
        );
        assert!(parse_duration("x", "h").is_err());
        assert!(parse_duration("x", "-1h").is_err());
    }

    #[test]
    fn credentials_never_show() {
        let c = PostgresConfig::from_storage_config(&config(
            "postgres://alice:s3cr3t@db/x?sslmode=require&password=other",
        ))
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(!shown.contains("other"), "{shown}");
        assert!(shown.contains("alice"), "{shown}");
        let err =
            PostgresConfig::from_storage_config(&config("postgres://alice:s3cr3t@/x")).unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        assert!(!format!("{err:?}").contains("s3cr3t"), "{err:?}");
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("aimon"), "\"aimon\"");
    }
}
