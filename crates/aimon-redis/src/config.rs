//! [`RedisConfig`]: the topology, credentials and options of a Redis store, parsed from a
//! [`StorageConfig`].
//!
//! | URL | topology |
//! |---|---|
//! | `redis://[user:password@]host[:port][/db]` | one server |
//! | `rediss://[user:password@]host[:port][/db]` | one server over TLS (rustls, ring provider) |
//! | `redis+sentinel://[user:password@]host:port[,host:port…]/MASTER[/db]` | the master that the Sentinels name `MASTER`; credentials are the data nodes' |
//! | `redis+cluster://[user:password@]host:port[,host:port…]` | a Redis Cluster, from any seed nodes |
//!
//! Options: `namespace` (key prefix, default [`DEFAULT_NAMESPACE`]), `max_connections`
//! (multiplexed connections used round-robin, default [`DEFAULT_MAX_CONNECTIONS`]),
//! `connect_timeout_ms` (default [`DEFAULT_CONNECT_TIMEOUT_MS`]), `response_timeout_ms`
//! (default [`DEFAULT_RESPONSE_TIMEOUT_MS`]; redis-rs alone would give up after 500 ms, too
//! short for a large batch or history script), `wait_replicas` / `wait_timeout_ms` (issue
//! `WAIT` after each write until that many replicas acknowledged it), for `rediss://`
//! `tls_ca_file` (a PEM file of the CA to trust instead of the system's roots) and
//! `tls_cert_file` + `tls_key_file` (a client certificate, for servers that ask for one), and
//! the retention trio. Anything else is a [`aimon_core::ErrorKind::ConfigInvalid`] error naming
//! it.

use std::fmt;
use std::time::Duration;

use aimon_core::{Error, Result, RetentionPolicy, StorageBackendType, StorageConfig, redact_url};

/// The key prefix unless `namespace` says otherwise.
pub const DEFAULT_NAMESPACE: &str = "aimon";
/// Multiplexed connections per backend unless `max_connections` says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4;
/// Upper bound of `max_connections`.
pub const MAX_MAX_CONNECTIONS: usize = 64;
/// How long opening a connection may take unless `connect_timeout_ms` says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// How long one command or pipeline may wait for its answer unless `response_timeout_ms` says
/// otherwise.
pub const DEFAULT_RESPONSE_TIMEOUT_MS: u64 = 30_000;
/// How long `WAIT` waits for replicas unless `wait_timeout_ms` says otherwise.
pub const DEFAULT_WAIT_TIMEOUT_MS: u64 = 1_000;
/// Longest accepted namespace, in bytes.
pub const MAX_NAMESPACE_BYTES: usize = 64;

/// Where the data lives.
#[derive(Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server (`redis://`, `rediss://`).
    Standalone {
        /// The connection string, credentials included, as redis-rs reads it.
        url: String,
    },
    /// A Redis Cluster (`redis+cluster://`).
    Cluster {
        /// One `redis://[credentials@]host:port` URL per seed node.
        nodes: Vec<String>,
    },
    /// The master a set of Sentinels names.
    Sentinel {
        /// `redis://host:port` of each Sentinel.
        sentinels: Vec<String>,
        /// The master name the Sentinels are asked for (the URL's first path segment).
        master: String,
        /// The database number on the master (the URL's second path segment, default 0).
        db: i64,
        /// `user:password@` as written in the URL (percent-encoded), or empty.
        userinfo: String,
        /// Whether the data nodes are reached over TLS; always `false` from a
        /// `redis+sentinel://` URL today.
        tls: bool,
    },
}

impl Topology {
    /// `standalone`, `cluster` or `sentinel`.
    pub fn kind(&self) -> &'static str {
        match self {
            Topology::Standalone { .. } => "standalone",
            Topology::Cluster { .. } => "cluster",
            Topology::Sentinel { .. } => "sentinel",
        }
    }
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topology::Standalone { url } => f
                .debug_struct("Standalone")
                .field("url", &redact_url(url))
                .finish(),
            Topology::Cluster { nodes } => f
                .debug_struct("Cluster")
                .field(
                    "nodes",
                    &nodes.iter().map(|n| redact_url(n)).collect::<Vec<_>>(),
                )
                .finish(),
            Topology::Sentinel {
                sentinels,
                master,
                db,
                tls,
                ..
            } => f
                .debug_struct("Sentinel")
                .field("sentinels", sentinels)
                .field("master", master)
                .field("db", db)
                .field("tls", tls)
                .finish_non_exhaustive(),
        }
    }
}

/// PEM contents for TLS, read from the `tls_*_file` options. `Debug` shows no contents.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA to trust instead of the system's roots.
    pub ca: Option<Vec<u8>>,
    /// A client certificate and its key.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsFiles {
    /// As redis-rs takes them.
    pub fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca.clone(),
        }
    }
}

impl fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsFiles")
            .field("ca", &self.ca.is_some())
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

/// What the server's persistence must promise for `connect` to succeed (option
/// `min_durability`): aimon cannot change a server's fsync policy, only refuse one that is
/// weaker than the application needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum MinDurability {
    /// No check (the default): with `appendonly no`, acknowledged writes since the last RDB
    /// snapshot are lost when the server dies.
    #[default]
    None,
    /// `appendonly yes`: every acknowledged write is in the AOF before the reply, so it survives
    /// the server process being killed; with `appendfsync everysec` (Redis's default) an OS
    /// crash or power loss may lose about the last second.
    Aof,
    /// `appendonly yes` and `appendfsync always`: every acknowledged write was fsynced, so it
    /// survives power loss too, at the cost of one fsync per write on the server.
    Fsync,
}

impl MinDurability {
    /// The option value (`none`, `aof`, `fsync`).
    pub fn as_str(self) -> &'static str {
        match self {
            MinDurability::None => "none",
            MinDurability::Aof => "aof",
            MinDurability::Fsync => "fsync",
        }
    }
}

/// The Redis backend's settings. `Debug` never shows credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// The backend's configured name.
    pub name: String,
    /// Which servers hold the data, from the URL's scheme.
    pub topology: Topology,
    /// Every key of this backend starts with `{namespace}` or `{namespace|`.
    pub namespace: String,
    /// TTLs from the `*_ttl_seconds` options; Redis expires keys itself.
    pub retention: RetentionPolicy,
    /// Multiplexed connections used round-robin (option `max_connections`,
    /// 1..=[`MAX_MAX_CONNECTIONS`], default [`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// How long opening a connection may take (option `connect_timeout_ms`, default
    /// [`DEFAULT_CONNECT_TIMEOUT_MS`]).
    pub connect_timeout: Duration,
    /// How long one command or pipeline may wait for its answer (option `response_timeout_ms`,
    /// default [`DEFAULT_RESPONSE_TIMEOUT_MS`]).
    pub response_timeout: Duration,
    /// Replicas that must acknowledge each write (`WAIT`); 0 skips `WAIT`.
    pub wait_replicas: u64,
    /// How long `WAIT` waits for `wait_replicas` (option `wait_timeout_ms`, default
    /// [`DEFAULT_WAIT_TIMEOUT_MS`]).
    pub wait_timeout: Duration,
    /// What the server's persistence must promise (checked on connect).
    pub min_durability: MinDurability,
    /// The CA and client certificate of a `rediss://` server, when options name them.
    pub tls: Option<TlsFiles>,
    /// The connection string, redacted, for messages.
    pub display_url: String,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("name", &self.name)
            .field("url", &self.display_url)
            .field("topology", &self.topology)
            .field("namespace", &self.namespace)
            .field("retention", &self.retention)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("wait_replicas", &self.wait_replicas)
            .field("wait_timeout", &self.wait_timeout)
            .field("min_durability", &self.min_durability)
            .field("tls", &self.tls)
            .finish()
    }
}

impl RedisConfig {
    /// Parses a `redis` [`StorageConfig`]: its URL and options.
    pub fn from_storage_config(config: &StorageConfig) -> Result<Self> {
        if config.backend_type != StorageBackendType::Redis {
            return Err(Error::config(format!(
                "the redis backend cannot open a {} configuration",
                config.backend_type
            )));
        }
        let topology = parse_url(&config.connection_string)?;
        let mut options = config.reader();
        let retention = RetentionPolicy::from_options(&mut options)?;
        let namespace = options
            .string("namespace")?
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        check_namespace(&namespace)?;
        let max_connections = options
            .positive_u64_at_most("max_connections", MAX_MAX_CONNECTIONS as u64)?
            .map_or(DEFAULT_MAX_CONNECTIONS, |n| n as usize);
        let ms = |v: Option<Duration>, default| v.unwrap_or(Duration::from_millis(default));
        let connect_timeout = ms(
            options.millis("connect_timeout_ms")?,
            DEFAULT_CONNECT_TIMEOUT_MS,
        );
        let response_timeout = ms(
            options.millis("response_timeout_ms")?,
            DEFAULT_RESPONSE_TIMEOUT_MS,
        );
        let wait_replicas = options.u64("wait_replicas")?.unwrap_or(0);
        let wait_timeout = ms(options.millis("wait_timeout_ms")?, DEFAULT_WAIT_TIMEOUT_MS);
        let min_durability = options
            .choice(
                "min_durability",
                &[
                    ("none", MinDurability::None),
                    ("aof", MinDurability::Aof),
                    ("fsync", MinDurability::Fsync),
                ],
            )?
            .unwrap_or_default();
        let tls = tls_files(&topology, &mut options)?;
        options.finish("redis")?;
        Ok(RedisConfig {
            name: config.name.clone(),
            topology,
            namespace,
            retention,
            max_connections,
            connect_timeout,
            response_timeout,
            wait_replicas,
            wait_timeout,
            min_durability,
            tls,
            display_url: redact_url(&config.connection_string),
        })
    }
}

/// Reads the `tls_*_file` options: only for `rediss://`, a certificate only with its key.
fn tls_files(
    topology: &Topology,
    options: &mut aimon_core::config::Options,
) -> Result<Option<TlsFiles>> {
    let (ca, cert, key) = (
        options.string("tls_ca_file")?,
        options.string("tls_cert_file")?,
        options.string("tls_key_file")?,
    );
    if ca.is_none() && cert.is_none() && key.is_none() {
        return Ok(None);
    }
    let tls = matches!(topology, Topology::Standalone { url } if url.starts_with("rediss://"));
    if !tls {
        return Err(Error::config(
            "options tls_ca_file, tls_cert_file and tls_key_file are for a rediss:// URL",
        ));
    }
    let read = |option: &str, path: &str| {
        std::fs::read(path).map_err(|e| Error::config(format!("option {option}: {path}: {e}")))
    };
    let client = match (cert, key) {
        (Some(cert), Some(key)) => {
            Some((read("tls_cert_file", &cert)?, read("tls_key_file", &key)?))
        }
        (None, None) => None,
        _ => {
            return Err(Error::config(
                "options tls_cert_file and tls_key_file go together",
            ));
        }
    };
    let ca = ca.map(|path| read("tls_ca_file", &path)).transpose()?;
    Ok(Some(TlsFiles { ca, client }))
}

/// A namespace is 1 to 64 bytes of ASCII letters, digits, `_`, `-` and `.`: nothing that is
/// hash-tag, glob or key-separator syntax.
pub fn check_namespace(namespace: &str) -> Result<()> {
    let ok = !namespace.is_empty()
        && namespace.len() <= MAX_NAMESPACE_BYTES
        && namespace
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "option namespace: {namespace:?} must be 1 to {MAX_NAMESPACE_BYTES} bytes of ASCII \
             letters, digits, `_`, `-` and `.`"
        )))
    }
}

fn bad(url: &str, why: &str) -> Error {
    Error::config(format!(
        "invalid redis URL {}: {why}; expected redis://[user:password@]host[:port][/db], \
         rediss://…, redis+sentinel://host:port[,host:port]/MASTER[/db] or \
         redis+cluster://host:port[,host:port]",
        redact_url(url)
    ))
}

/// Parses the four URL forms (see the module docs).
pub fn parse_url(url: &str) -> Result<Topology> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad(url, "no scheme"))?;
    let scheme = scheme.to_ascii_lowercase();
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(i) => (&authority[..=i], &authority[i + 1..]),
        None => ("", authority),
    };
    if path.contains(['?', '#']) {
        return Err(bad(
            url,
            "URL parameters are not read; pass settings as options",
        ));
    }
    let hosts: Vec<&str> = hosts.split(',').map(str::trim).collect();
    if hosts.iter().any(|h| h.is_empty()) {
        return Err(bad(url, "a host is missing"));
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let parse_db = |s: &str| -> Result<i64> {
        s.parse::<i64>()
            .ok()
            .filter(|db| *db >= 0)
            .ok_or_else(|| bad(url, "the database is not a non-negative number"))
    };
    match scheme.as_str() {
        "redis" | "rediss" => {
            if hosts.len() != 1 {
                return Err(bad(
                    url,
                    "one host only (use redis+cluster:// or redis+sentinel:// for several)",
                ));
            }
            if segments.len() > 1 {
                return Err(bad(url, "the path is only a database number"));
            }
            if let Some(db) = segments.first() {
                parse_db(db)?;
            }
            // Let redis-rs confirm it reads the URL the same way.
            redis::Client::open(url).map_err(|e| bad(url, &e.to_string()))?;
            Ok(Topology::Standalone {
                url: url.to_owned(),
            })
        }
        "redis+cluster" => {
            if !segments.is_empty() && segments != ["0"] {
                return Err(bad(url, "a cluster has only database 0"));
            }
            let nodes: Vec<String> = hosts
                .iter()
                .map(|h| format!("redis://{userinfo}{h}"))
                .collect();
            for node in &nodes {
                redis::Client::open(node.as_str()).map_err(|e| bad(url, &e.to_string()))?;
            }
            Ok(Topology::Cluster { nodes })
        }
        "redis+sentinel" => {
            let (master, db) = match segments.as_slice() {
                [master] => (*master, 0),
                [master, db] => (*master, parse_db(db)?),
                _ => return Err(bad(url, "the path must be /MASTER or /MASTER/db")),
            };
            let sentinels: Vec<String> = hosts.iter().map(|h| format!("redis://{h}")).collect();
            for s in &sentinels {
                redis::Client::open(s.as_str()).map_err(|e| bad(url, &e.to_string()))?;
            }
            Ok(Topology::Sentinel {
                sentinels,
                master: master.to_owned(),
                db,
                userinfo: userinfo.to_owned(),
                tls: false,
            })
        }
        _ => Err(bad(url, "unknown scheme")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aimon_core::ErrorKind;

    fn config(url: &str) -> StorageConfig {
        StorageConfig::from_url("r", url).unwrap()
    }

    #[test]
    fn url_forms() {
        assert!(matches!(
            parse_url("redis://127.0.0.1:6379/2").unwrap(),
            Topology::Standalone { .. }
        ));
        assert!(matches!(
            parse_url("rediss://u:p@example.com:6380").unwrap(),
            Topology::Standalone { .. }
        ));
        match parse_url("redis+cluster://:pw@a:7000,b:7001").unwrap() {
            Topology::Cluster { nodes } => {
                assert_eq!(nodes, ["redis://:pw@a:7000", "redis://:pw@b:7001"])
            }
            other => panic!("{other:?}"),
        }
        match parse_url("redis+sentinel://s1:26379,s2:26380/mymaster/3").unwrap() {
            Topology::Sentinel {
                sentinels,
                master,
                db,
                ..
            } => {
                assert_eq!(sentinels, ["redis://s1:26379", "redis://s2:26380"]);
                assert_eq!(master, "mymaster");
                assert_eq!(db, 3);
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            "redis://a,b",
            "redis://h/x",
            "redis://h/1/2",
            "redis+sentinel://s1",
            "redis+cluster://a:1/3",
            "redis://h?db=1",
            "redis://",
            "memcached://h",
        ] {
            assert_eq!(
                parse_url(bad).unwrap_err().kind(),
                ErrorKind::ConfigInvalid,
                "{bad}"
            );
        }
    }

    #[test]
    fn tls_files_are_read_checked_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, b"-----BEGIN CERTIFICATE-----secret-ish").unwrap();
        let pem = pem.to_str().unwrap();
        let c = RedisConfig::from_storage_config(
            &config("rediss://:pw@h:6380").option("tls_ca_file", pem),
        )
        .unwrap();
        let tls = c.tls.as_ref().unwrap();
        assert!(tls.ca.as_ref().unwrap().starts_with(b"-----BEGIN"));
        assert!(tls.client.is_none());
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("secret-ish") && !shown.contains("pw"),
            "{shown}"
        );
        for (url, options) in [
            // TLS files for a plain-text URL.
            ("redis://h", vec![("tls_ca_file", pem)]),
            // A missing file.
            ("rediss://h", vec![("tls_ca_file", "/no/such/ca.pem")]),
            // A certificate without its key.
            ("rediss://h", vec![("tls_cert_file", pem)]),
        ] {
            let mut cfg = config(url);
            for (k, v) in options {
                cfg = cfg.option(k, v);
            }
            let err = RedisConfig::from_storage_config(&cfg).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{url}: {err}");
            assert!(err.to_string().contains("tls_"), "{err}");
        }
    }

    #[test]
    fn options_defaults_and_errors() {
        let c = RedisConfig::from_storage_config(&config("redis://h")).unwrap();
        assert_eq!(c.namespace, DEFAULT_NAMESPACE);
        assert_eq!(c.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(
            c.response_timeout,
            Duration::from_millis(DEFAULT_RESPONSE_TIMEOUT_MS)
        );
        let c = RedisConfig::from_storage_config(
            &config("redis://h")
                .option("namespace", "ns_1")
                .option("max_connections", 2)
                .option("connect_timeout_ms", 100)
                .option("response_timeout_ms", "250")
                .option("metric_ttl_seconds", 60),
        )
        .unwrap();
        assert_eq!(c.namespace, "ns_1");
        assert_eq!(c.max_connections, 2);
        assert_eq!(c.connect_timeout, Duration::from_millis(100));
        assert_eq!(c.response_timeout, Duration::from_millis(250));
        assert_eq!(c.retention.metric_ttl, Some(Duration::from_secs(60)));
        for (key, value) in [
            ("namespce", serde_json::json!("x")),
            ("namespace", serde_json::json!("a{b}")),
            ("namespace", serde_json::json!("a*")),
            ("namespace", serde_json::json!("")),
            ("max_connections", serde_json::json!(0)),
            ("max_connections", serde_json::json!(1000)),
            ("response_timeout_ms", serde_json::json!(0)),
        ] {
            let err = RedisConfig::from_storage_config(&config("redis://h").option(key, value))
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ConfigInvalid, "{key}");
        }
    }

    #[test]
    fn credentials_never_show() {
        for url in [
            "redis://user:hunter2@h:6379/0",
            "redis+cluster://user:hunter2@a:1,b:2",
            "redis+sentinel://user:hunter2@s:26379/m",
        ] {
            let c = RedisConfig::from_storage_config(&config(url)).unwrap();
            let shown = format!("{c:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
            let err = RedisConfig::from_storage_config(&config(url).option("nope", 1)).unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        let err = parse_url("redis://user:hunter2@h/x").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
