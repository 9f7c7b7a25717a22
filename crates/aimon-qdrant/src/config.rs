//! [`QdrantConfig`]: which Qdrant to use and how, parsed from a [`StorageConfig`].
//!
//! | URL | store |
//! |---|---|
//! | `qdrant-edge:///var/lib/aimon/q` | embedded engine in the absolute directory `/var/lib/aimon/q` |
//! | `qdrant-edge://data/q`, `qdrant-edge:data/q` | embedded engine in the relative directory `data/q` |
//! | `qdrant://host:6334` | a Qdrant server over gRPC (plain) |
//! | `qdrant://host:6334?tls=true` | the same over TLS (`https://`, the system's root certificates) |
//! | `qdrant://host:6334?api_key=KEY` | with an API key (also the option `api_key` or the environment variable [`API_KEY_ENV`]) |
//! | `qdrant://host:6334?rest_port=6333` | the REST port native backups and `stats` use (default [`DEFAULT_REST_PORT`], same host and TLS) |
//! | `qdrant://host:6334?replication_factor=2&write_consistency_factor=2` | the collections' cluster layout ([`CollectionOptions`]), also as options |
//!
//! Options: the retention trio; server mode also `api_key`, `collection_prefix` (default
//! [`DEFAULT_COLLECTION_PREFIX`]; collections are `<prefix>_<kind>`), `timeout_ms`,
//! `snapshot_timeout_ms` (native backups: making, uploading and recovering a snapshot; default
//! [`DEFAULT_SNAPSHOT_TIMEOUT`]) and the four collection options below (given in the URL's
//! query or as options; an option wins over the URL). Any other option is a `ConfigInvalid`
//! error that names it. The API key never appears in `Debug` output, logs or errors.
//!
//! ## Collection options (a Qdrant cluster)
//!
//! Applied when aimon **creates** its four collections (every collection gets the same
//! values); a collection that already exists keeps its own, with a warning in the log when they
//! differ (`shard_number` is fixed at creation; the others can be changed with Qdrant's
//! update-collection API). Unset, each is the server's default. `stats` reports the values each
//! collection really has.
//!
//! | option | values | default | what it costs |
//! |---|---|---|---|
//! | `shard_number` | 1..=[`MAX_COLLECTION_COUNT`] | the server's: 1 standalone, the number of nodes in a cluster | each shard has its own segments, WAL and optimizer: more shards spread writes and searches over more nodes, but cost memory and file handles per shard (times four collections) and make every filtered scroll and count fan out to all of them; fixed once the collection exists |
//! | `replication_factor` | 1..=[`MAX_COLLECTION_COUNT`] | the server's (1) | every shard is stored on that many nodes: disk, memory and write traffic grow by the same factor; reads survive `replication_factor - 1` lost nodes; a factor above the number of nodes leaves shards under-replicated |
//! | `write_consistency_factor` | 1..=`replication_factor` | the server's (1) | how many replicas must apply a write before it is acknowledged: a write waits for the slowest of them, and fails with a retryable `Unavailable` while fewer replicas are active (the replicas that did apply it keep it: retrying is an overwrite, never a duplicate). Above 1 it needs `replication_factor` set too |
//! | `on_disk_payload` | `true`, `false` | the server's (`true` on current servers) | `true` keeps payloads (aimon's whole documents) on disk and in the page cache: less memory, but scans, retention sweeps and backups read them from disk when memory is short; `false` keeps them in memory. Sent as Qdrant's `on_disk_payload` (deprecated since 1.19 in favour of `payload.memory`, which it maps to: `cold` or `cached`), so older servers apply it too |

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use aimon_core::config::{Options, Secret};
use aimon_core::{Error, Result, RetentionPolicy, StorageBackendType, StorageConfig, redact_url};

/// The environment variable read for the server's API key when neither the URL nor the options
/// carry one.
pub const API_KEY_ENV: &str = "AIMON_QDRANT_API_KEY";
/// Collections are named `<prefix>_<kind>` on a server unless `collection_prefix` says otherwise.
pub const DEFAULT_COLLECTION_PREFIX: &str = "aimon";
/// The gRPC port of a Qdrant server.
pub const DEFAULT_GRPC_PORT: u16 = 6334;
/// The REST port of a Qdrant server: native backups download and upload snapshots there
/// (qdrant-client's snapshot download is a default feature this crate leaves off).
pub const DEFAULT_REST_PORT: u16 = 6333;
/// How long making or recovering one collection snapshot may take unless `snapshot_timeout_ms`
/// says otherwise: it grows with the collection, far past one request's timeout.
pub const DEFAULT_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Per-request timeout unless `timeout_ms` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest `shard_number` or `replication_factor` aimon accepts: far above any real
/// cluster, a guard against a typo creating a million shards in each of four collections.
pub const MAX_COLLECTION_COUNT: u32 = 1024;
/// The collection options, in the order the docs and errors list them.
pub const COLLECTION_OPTION_KEYS: [&str; 4] = [
    "shard_number",
    "replication_factor",
    "write_consistency_factor",
    "on_disk_payload",
];

/// How aimon's collections are laid out on a Qdrant cluster, applied when it creates them
/// (see the [module docs](self#collection-options-a-qdrant-cluster) for what each costs).
/// `None` leaves the server's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CollectionOptions {
    /// Shards per collection (option `shard_number`, 1..=[`MAX_COLLECTION_COUNT`]); fixed once the
    /// collection exists.
    pub shard_number: Option<u32>,
    /// Nodes that store each shard (option `replication_factor`, 1..=[`MAX_COLLECTION_COUNT`]).
    pub replication_factor: Option<u32>,
    /// Replicas that must apply a write before it is acknowledged (option
    /// `write_consistency_factor`, 1..=`replication_factor`).
    pub write_consistency_factor: Option<u32>,
    /// Whether payloads (aimon's documents) stay on disk rather than in memory (option
    /// `on_disk_payload`).
    pub on_disk_payload: Option<bool>,
}

impl CollectionOptions {
    /// Reads and checks the four options: counts are at least 1 (and at most
    /// [`MAX_COLLECTION_COUNT`]), `write_consistency_factor` is at most `replication_factor`
    /// (which it needs when above 1). Every problem is `ConfigInvalid` naming the option.
    pub fn from_options(options: &mut Options) -> Result<Self> {
        let count = |options: &mut Options, key: &str| -> Result<Option<u32>> {
            Ok(options
                .positive_u64_at_most(key, u64::from(MAX_COLLECTION_COUNT))?
                .map(|n| n as u32))
        };
        let shard_number = count(options, "shard_number")?;
        let replication_factor = count(options, "replication_factor")?;
        let write_consistency_factor = count(options, "write_consistency_factor")?;
        let on_disk_payload = options.bool("on_disk_payload")?;
        match (write_consistency_factor, replication_factor) {
            (Some(w), Some(r)) if w > r => {
                return Err(Error::config(format!(
                    "option write_consistency_factor: {w} is more than replication_factor {r} \
                     (a write cannot be applied by more replicas than a shard has)"
                )));
            }
            (Some(w), None) if w > 1 => {
                return Err(Error::config(format!(
                    "option write_consistency_factor: {w} needs replication_factor (at least \
                     {w}) too; a collection has one replica of each shard unless told otherwise"
                )));
            }
            _ => {}
        }
        Ok(CollectionOptions {
            shard_number,
            replication_factor,
            write_consistency_factor,
            on_disk_payload,
        })
    }

    /// Whether every option is left to the server.
    pub fn is_default(&self) -> bool {
        *self == CollectionOptions::default()
    }
}

/// Where the data lives.
#[derive(Clone, PartialEq, Eq)]
pub enum QdrantMode {
    /// The embedded engine in a directory (`qdrant-edge://`, feature `qdrant-edge`).
    Embedded {
        /// The directory holding one sub-directory per collection; created if missing.
        path: PathBuf,
    },
    /// A server (`qdrant://`).
    Server {
        /// `http://host:port` or `https://host:port`: what qdrant-client connects to.
        endpoint: String,
        /// `http(s)://host:rest_port`: the REST API, for snapshot downloads and uploads.
        rest_endpoint: String,
        /// Sent with every request: from the URL's `api_key`, the option, or [`API_KEY_ENV`].
        api_key: Option<Secret>,
        /// Collections are named `<prefix>_<kind>` (option `collection_prefix`, default
        /// [`DEFAULT_COLLECTION_PREFIX`]); several stores can share a server.
        collection_prefix: String,
        /// Per request (option `timeout_ms`, default [`DEFAULT_TIMEOUT`]).
        timeout: Duration,
        /// Bounds snapshot creation and upload (native backups).
        snapshot_timeout: Duration,
        /// Applied when aimon creates its collections.
        collection_options: CollectionOptions,
    },
}

impl fmt::Debug for QdrantMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QdrantMode::Embedded { path } => {
                f.debug_struct("Embedded").field("path", path).finish()
            }
            QdrantMode::Server {
                endpoint,
                rest_endpoint,
                api_key,
                collection_prefix,
                timeout,
                snapshot_timeout,
                collection_options,
            } => f
                .debug_struct("Server")
                .field("endpoint", endpoint)
                .field("rest_endpoint", rest_endpoint)
                .field("api_key", &api_key.as_ref().map(|_| "***"))
                .field("collection_prefix", collection_prefix)
                .field("timeout", timeout)
                .field("snapshot_timeout", snapshot_timeout)
                .field("collection_options", collection_options)
                .finish(),
        }
    }
}

/// The Qdrant backend's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QdrantConfig {
    /// The backend's configured name.
    pub name: String,
    /// The embedded engine or a server, with its settings.
    pub mode: QdrantMode,
    /// TTLs from the `*_ttl_seconds` options; `apply_retention` deletes expired points.
    pub retention: RetentionPolicy,
}

impl QdrantConfig {
    /// Parses a `qdrant` [`StorageConfig`] (`qdrant://` or `qdrant-edge://`).
    pub fn from_storage_config(config: &StorageConfig) -> Result<Self> {
        Self::parse(config, std::env::var(API_KEY_ENV).ok())
    }

    /// As [`QdrantConfig::from_storage_config`], with the environment's API key given.
    pub fn parse(config: &StorageConfig, env_api_key: Option<String>) -> Result<Self> {
        if config.backend_type != StorageBackendType::Qdrant {
            return Err(Error::config(format!(
                "the qdrant backend cannot open a {} configuration",
                config.backend_type
            )));
        }
        let url = config.connection_string.as_str();
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
        let mut options = config.reader();
        let retention = RetentionPolicy::from_options(&mut options)?;
        let mode = if scheme.eq_ignore_ascii_case("qdrant-edge") {
            QdrantMode::Embedded {
                path: parse_edge_path(url)?,
            }
        } else if scheme.eq_ignore_ascii_case("qdrant") {
            let ServerUrl {
                endpoint,
                rest_endpoint,
                api_key: url_key,
                options: url_options,
            } = parse_server_url(url)?;
            for (key, value) in url_options {
                options.insert_default(key, serde_json::Value::String(value));
            }
            let option_key = options.string("api_key")?;
            let api_key = url_key
                .or(option_key)
                .or(env_api_key)
                .filter(|k| !k.is_empty())
                .map(Secret::new);
            let collection_prefix = options
                .string("collection_prefix")?
                .unwrap_or_else(|| DEFAULT_COLLECTION_PREFIX.to_owned());
            check_prefix(&collection_prefix)?;
            let timeout = options.millis("timeout_ms")?.unwrap_or(DEFAULT_TIMEOUT);
            let snapshot_timeout = options
                .millis("snapshot_timeout_ms")?
                .unwrap_or(DEFAULT_SNAPSHOT_TIMEOUT);
            let collection_options = CollectionOptions::from_options(&mut options)?;
            QdrantMode::Server {
                endpoint,
                rest_endpoint,
                api_key,
                collection_prefix,
                timeout,
                snapshot_timeout,
                collection_options,
            }
        } else {
            return Err(Error::config(format!(
                "{} is not a qdrant:// or qdrant-edge:// URL",
                redact_url(url)
            )));
        };
        options.finish("qdrant")?;
        Ok(QdrantConfig {
            name: config.name.clone(),
            mode,
            retention,
        })
    }
}

/// `qdrant-edge:///abs`, `qdrant-edge://rel/dir`, `qdrant-edge:rel/dir`, percent-decoded.
fn parse_edge_path(url: &str) -> Result<PathBuf> {
    let rest = &url["qdrant-edge:".len()..];
    if aimon_core::config::authority_has_userinfo(rest) {
        return Err(Error::config(
            "a qdrant-edge URL names a directory; it takes no user, password or host \
             (qdrant:// is the server)",
        ));
    }
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    if rest.contains('?') || rest.contains('#') {
        return Err(Error::config(format!(
            "{}: qdrant-edge URLs take a directory and nothing else (options go in the \
             configuration's options)",
            redact_url(url)
        )));
    }
    let decoded = percent_encoding::percent_decode_str(rest)
        .decode_utf8()
        .map_err(|_| Error::config(format!("{}: the path is not UTF-8", redact_url(url))))?;
    if decoded.is_empty() || decoded == "/" {
        return Err(Error::config(format!(
            "{}: name a directory, e.g. qdrant-edge:///var/lib/aimon/qdrant",
            redact_url(url)
        )));
    }
    Ok(PathBuf::from(decoded.as_ref()))
}

/// What a `qdrant://` URL names.
struct ServerUrl {
    endpoint: String,
    rest_endpoint: String,
    api_key: Option<String>,
    /// The [`CollectionOptions`] given as query parameters (checked with the options).
    options: Vec<(String, String)>,
}

/// `qdrant://host[:port][?api_key=..&tls=true&rest_port=..&shard_number=..&…]`.
fn parse_server_url(raw: &str) -> Result<ServerUrl> {
    let url = url::Url::parse(raw)
        .map_err(|e| Error::config(format!("invalid qdrant URL {}: {e}", redact_url(raw))))?;
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Error::config(format!("{} has no host", redact_url(raw))))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::config(format!(
            "{}: Qdrant takes an API key (?api_key= or the option api_key), not user:password",
            redact_url(raw)
        )));
    }
    if !matches!(url.path(), "" | "/") || url.fragment().is_some() {
        return Err(Error::config(format!(
            "{}: a qdrant URL has no path",
            redact_url(raw)
        )));
    }
    let port = url.port().unwrap_or(DEFAULT_GRPC_PORT);
    let mut tls = false;
    let mut api_key = None;
    let mut rest_port = DEFAULT_REST_PORT;
    let mut options = Vec::new();
    for (k, v) in url.query_pairs() {
        match k.as_ref() {
            "tls" => {
                tls = match v.as_ref() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(Error::config(format!(
                            "{}: tls must be true or false",
                            redact_url(raw)
                        )));
                    }
                }
            }
            "api_key" => api_key = Some(v.into_owned()),
            "rest_port" => {
                rest_port = v.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
                    Error::config(format!(
                        "{}: rest_port must be a port number (1-65535)",
                        redact_url(raw)
                    ))
                })?;
            }
            key if COLLECTION_OPTION_KEYS.contains(&key) => {
                if options.iter().any(|(k, _)| k == key) {
                    return Err(Error::config(format!(
                        "{}: the URL parameter {key} is given twice",
                        redact_url(raw)
                    )));
                }
                options.push((key.to_owned(), v.into_owned()));
            }
            other => {
                return Err(Error::config(format!(
                    "{}: unknown URL parameter {other:?} (known: tls, api_key, rest_port, {})",
                    redact_url(raw),
                    COLLECTION_OPTION_KEYS.join(", ")
                )));
            }
        }
    }
    let scheme = if tls { "https" } else { "http" };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    Ok(ServerUrl {
        endpoint: format!("{scheme}://{host}:{port}"),
        rest_endpoint: format!("{scheme}://{host}:{rest_port}"),
        api_key,
        options,
    })
}

fn check_prefix(prefix: &str) -> Result<()> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 200
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "collection_prefix {prefix:?}: use 1-200 ASCII letters, digits, '_' or '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aimon_core::ErrorKind;
    use serde_json::json;

    fn parse(url: &str) -> Result<QdrantConfig> {
        QdrantConfig::parse(&StorageConfig::from_url("q", url)?, None)
    }

    #[test]
    fn edge_urls_name_a_directory() {
        let path = |u| match parse(u).unwrap().mode {
            QdrantMode::Embedded { path } => path,
            other => panic!("{other:?}"),
        };
        assert_eq!(path("qdrant-edge:///tmp/q"), PathBuf::from("/tmp/q"));
        assert_eq!(path("qdrant-edge://data/q"), PathBuf::from("data/q"));
        assert_eq!(path("qdrant-edge:data/q"), PathBuf::from("data/q"));
        assert_eq!(path("qdrant-edge:///tmp/a%20b"), PathBuf::from("/tmp/a b"));
        for bad in [
            "qdrant-edge://",
            "qdrant-edge:///",
            "qdrant-edge:///tmp/q?x=1",
        ] {
            assert_eq!(
                parse(bad).unwrap_err().kind(),
                ErrorKind::ConfigInvalid,
                "{bad}"
            );
        }
    }

    #[test]
    fn server_urls_map_to_grpc_endpoints() {
        let server = |u: &str| match parse(u).unwrap().mode {
            QdrantMode::Server {
                endpoint, api_key, ..
            } => (endpoint, api_key),
            other => panic!("{other:?}"),
        };
        assert_eq!(server("qdrant://db").0, "http://db:6334");
        let rest = |u: &str| match parse(u).unwrap().mode {
            QdrantMode::Server { rest_endpoint, .. } => rest_endpoint,
            other => panic!("{other:?}"),
        };
        assert_eq!(rest("qdrant://db"), "http://db:6333");
        assert_eq!(
            rest("qdrant://db:7000?tls=true&rest_port=7001"),
            "https://db:7001"
        );
        assert_eq!(server("qdrant://db:7000?tls=true").0, "https://db:7000");
        assert_eq!(server("qdrant://[::1]:6334").0, "http://[::1]:6334");
        let (_, key) = server("qdrant://db?api_key=s3cret");
        assert_eq!(key.unwrap().expose(), "s3cret");
        for bad in [
            "qdrant://db?tls=maybe",
            "qdrant://db?foo=1",
            "qdrant://u:p@db",
            "qdrant://db/x",
            "qdrant://db?rest_port=0",
            "qdrant://db?rest_port=http",
        ] {
            assert_eq!(
                parse(bad).unwrap_err().kind(),
                ErrorKind::ConfigInvalid,
                "{bad}"
            );
        }
    }

    #[test]
    fn snapshots_have_their_own_timeout() {
        let timeouts =
            |config: StorageConfig| match QdrantConfig::parse(&config, None).unwrap().mode {
                QdrantMode::Server {
                    timeout,
                    snapshot_timeout,
                    ..
                } => (timeout, snapshot_timeout),
                other => panic!("{other:?}"),
            };
        let config = StorageConfig::from_url("q", "qdrant://db").unwrap();
        assert_eq!(
            timeouts(config.clone()),
            (DEFAULT_TIMEOUT, DEFAULT_SNAPSHOT_TIMEOUT)
        );
        let config = config.option("snapshot_timeout_ms", 5_000);
        assert_eq!(timeouts(config.clone()).1, Duration::from_secs(5));
        let bad = config.option("snapshot_timeout_ms", 0);
        assert!(QdrantConfig::parse(&bad, None).is_err());
    }

    #[test]
    fn the_api_key_comes_from_url_option_or_environment_and_never_prints() {
        let config = StorageConfig::from_url("q", "qdrant://db").unwrap();
        let parsed = QdrantConfig::parse(&config, Some("from-env-key".into())).unwrap();
        let text = format!("{parsed:?}");
        assert!(!text.contains("from-env-key"), "{text}");
        assert!(text.contains("***"), "{text}");
        let QdrantMode::Server { api_key, .. } = &parsed.mode else {
            panic!()
        };
        assert_eq!(api_key.as_ref().unwrap().expose(), "from-env-key");

        let config = config.option("api_key", "from-option");
        let parsed = QdrantConfig::parse(&config, Some("from-env-key".into())).unwrap();
        let QdrantMode::Server { api_key, .. } = &parsed.mode else {
            panic!()
        };
        assert_eq!(api_key.as_ref().unwrap().expose(), "from-option");

        let err = parse("qdrant://db?api_key=hunter2&tls=nope").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    fn collection_options(config: &StorageConfig) -> Result<CollectionOptions> {
        match QdrantConfig::parse(config, None)?.mode {
            QdrantMode::Server {
                collection_options, ..
            } => Ok(collection_options),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn collection_options_default_to_the_servers() {
        let config = StorageConfig::from_url("q", "qdrant://db").unwrap();
        let options = collection_options(&config).unwrap();
        assert!(options.is_default(), "{options:?}");
    }

    #[test]
    fn collection_options_come_from_the_url_or_the_options() {
        let config = StorageConfig::from_url(
            "q",
            "qdrant://db?shard_number=6&replication_factor=3&write_consistency_factor=2\
             &on_disk_payload=false",
        )
        .unwrap();
        assert_eq!(
            collection_options(&config).unwrap(),
            CollectionOptions {
                shard_number: Some(6),
                replication_factor: Some(3),
                write_consistency_factor: Some(2),
                on_disk_payload: Some(false),
            }
        );
        let config = StorageConfig::from_url("q", "qdrant://db")
            .unwrap()
            .option("shard_number", 2)
            .option("replication_factor", "2")
            .option("on_disk_payload", true);
        let options = collection_options(&config).unwrap();
        assert_eq!(options.shard_number, Some(2));
        assert_eq!(options.replication_factor, Some(2));
        assert_eq!(options.write_consistency_factor, None);
        assert_eq!(options.on_disk_payload, Some(true));
        // An explicit option wins over the URL's parameter.
        let config = StorageConfig::from_url("q", "qdrant://db?shard_number=4")
            .unwrap()
            .option("shard_number", 8);
        assert_eq!(collection_options(&config).unwrap().shard_number, Some(8));
    }

    #[test]
    fn collection_counts_are_bounded() {
        for (key, value, needle) in [
            ("shard_number", json!(0), "greater than zero"),
            ("replication_factor", json!(0), "greater than zero"),
            ("write_consistency_factor", json!(0), "greater than zero"),
            (
                "shard_number",
                json!(MAX_COLLECTION_COUNT + 1),
                "more than 1024",
            ),
            ("replication_factor", json!(1_000_000), "more than 1024"),
            ("shard_number", json!(-1), "non-negative integer"),
            ("shard_number", json!("many"), "non-negative integer"),
            ("replication_factor", json!(1.5), "non-negative integer"),
            ("on_disk_payload", json!("yes"), "true or false"),
            ("on_disk_payload", json!(1), "true or false"),
        ] {
            let config = StorageConfig::from_url("q", "qdrant://db")
                .unwrap()
                .option(key, value.clone());
            let err = collection_options(&config).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{key}={value}");
            let text = err.to_string();
            assert!(text.contains(key), "{key}={value}: {text}");
            assert!(text.contains(needle), "{key}={value}: {text}");
        }
        let config = StorageConfig::from_url("q", "qdrant://db")
            .unwrap()
            .option("shard_number", MAX_COLLECTION_COUNT)
            .option("replication_factor", MAX_COLLECTION_COUNT);
        let options = collection_options(&config).unwrap();
        assert_eq!(options.shard_number, Some(MAX_COLLECTION_COUNT));
    }

    #[test]
    fn write_consistency_is_at_most_the_replication_factor() {
        let with = |pairs: &[(&str, u32)]| {
            let mut config = StorageConfig::from_url("q", "qdrant://db").unwrap();
            for (k, v) in pairs {
                config = config.option(*k, *v);
            }
            collection_options(&config)
        };
        with(&[("replication_factor", 3), ("write_consistency_factor", 3)]).unwrap();
        with(&[("replication_factor", 3), ("write_consistency_factor", 1)]).unwrap();
        // 1 is every collection's default: it needs no replication_factor.
        with(&[("write_consistency_factor", 1)]).unwrap();
        let err = with(&[("replication_factor", 2), ("write_consistency_factor", 3)]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
        assert!(
            err.to_string()
                .contains("write_consistency_factor: 3 is more than replication_factor 2"),
            "{err}"
        );
        let err = with(&[("write_consistency_factor", 2)]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
        assert!(
            err.to_string().contains("needs replication_factor"),
            "{err}"
        );
    }

    #[test]
    fn bad_collection_url_parameters_are_named_without_the_api_key() {
        for (url, needle) in [
            ("qdrant://db?api_key=hunter2&shard_number=0", "shard_number"),
            (
                "qdrant://db?api_key=hunter2&replication_factor=x",
                "replication_factor",
            ),
            (
                "qdrant://db?api_key=hunter2&replication_factor=1&write_consistency_factor=2",
                "write_consistency_factor",
            ),
            (
                "qdrant://db?api_key=hunter2&on_disk_payload=maybe",
                "on_disk_payload",
            ),
            (
                "qdrant://db?api_key=hunter2&shard_number=2&shard_number=3",
                "twice",
            ),
            ("qdrant://db?api_key=hunter2&shards=2", "\"shards\""),
        ] {
            let err = parse(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{url}");
            let text = err.to_string();
            assert!(text.contains(needle), "{url}: {text}");
            assert!(!text.contains("hunter2"), "{url}: {text}");
        }
    }

    #[test]
    fn collection_options_are_unknown_to_the_embedded_mode() {
        let config = StorageConfig::from_url("q", "qdrant-edge:///tmp/q")
            .unwrap()
            .option("replication_factor", 2);
        let err = QdrantConfig::parse(&config, None).unwrap_err();
        assert!(err.to_string().contains("replication_factor"), "{err}");
    }

    #[test]
    fn unknown_options_are_named() {
        let config = StorageConfig::from_url("q", "qdrant-edge:///tmp/q")
            .unwrap()
            .option("metric_ttl_secs", 5);
        let err = QdrantConfig::parse(&config, None).unwrap_err();
        assert!(err.to_string().contains("metric_ttl_secs"), "{err}");
        // Server-only options are unknown to the embedded mode.
        let config = StorageConfig::from_url("q", "qdrant-edge:///tmp/q")
            .unwrap()
            .option("api_key", "k");
        assert!(QdrantConfig::parse(&config, None).is_err());
    }
}
