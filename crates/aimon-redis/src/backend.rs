//! [`RedisBackend`]: the [`StorageBackend`] implementation.

use aimon_core::driver::Driver;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use aimon_core::backend::{
    Capabilities, DatabaseStats, EventStream, RetentionMechanism, RetentionReport, StorageBackend,
    TransferReport,
};
use aimon_core::{Error, Result, StorageBackendType, StorageConfig};
use async_trait::async_trait;
use redis::Value;

use crate::config::{MinDurability, RedisConfig};
use crate::conn::Pool;
use crate::keys::Keys;

/// A Redis namespace behind the [`StorageBackend`] trait. Open it with
/// [`RedisBackend::connect`]; see the crate docs for URLs, options and the key layout.
pub struct RedisBackend {
    pub(crate) config: Arc<RedisConfig>,
    pub(crate) pool: Arc<Pool>,
    pub(crate) keys: Keys,
    /// What this process wrote through the scripts and may skip them for (see
    /// `chunks::known_key`), and since when it has been collecting it.
    pub(crate) known: Arc<std::sync::Mutex<(Instant, std::collections::HashSet<u64>)>>,
    started: Instant,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Refuses a server whose persistence is weaker than `wanted` (`CONFIG GET appendonly` and
/// `appendfsync`; on a Cluster every node that answers must qualify).
async fn check_durability(pool: &Pool, wanted: MinDurability) -> Result<()> {
    let mut settings = Vec::new();
    for key in ["appendonly", "appendfsync"] {
        let reply: redis::Value = pool
            .query(redis::cmd("CONFIG").arg("GET").arg(key))
            .await
            .map_err(|e| {
                Error::config(format!(
                    "option min_durability={}: the server's {key} setting cannot be read (CONFIG GET): {e}",
                    wanted.as_str()
                ))
            })?;
        let values = config_values(&reply, key);
        if values.is_empty() {
            return Err(Error::config(format!(
                "option min_durability={}: the server did not report {key}",
                wanted.as_str()
            )));
        }
        settings.push((key, values));
    }
    let all = |key: &str, ok: &dyn Fn(&str) -> bool| {
        settings
            .iter()
            .filter(|(k, _)| *k == key)
            .all(|(_, values)| values.iter().all(|v| ok(v)))
    };
    let enough = match wanted {
        MinDurability::None => true,
        MinDurability::Aof => all("appendonly", &|v| v == "yes"),
        MinDurability::Fsync => {
            all("appendonly", &|v| v == "yes") && all("appendfsync", &|v| v == "always")
        }
    };
    if enough {
        return Ok(());
    }
    let found: Vec<String> = settings
        .iter()
        .map(|(k, v)| format!("{k} {}", v.join("/")))
        .collect();
    Err(Error::config(format!(
        "option min_durability={}: the server has {}; it needs appendonly yes{}",
        wanted.as_str(),
        found.join(", "),
        if wanted == MinDurability::Fsync {
            " and appendfsync always"
        } else {
            ""
        }
    )))
}

/// The values of `key` in a `CONFIG GET` reply: a flat list or map of name and value, or (from
/// a Cluster) one such reply per node.
fn config_values(reply: &redis::Value, key: &str) -> Vec<String> {
    fn text(value: &redis::Value) -> Option<String> {
        match value {
            redis::Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
            redis::Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    }
    let mut found = Vec::new();
    match reply {
        redis::Value::Array(items) | redis::Value::Set(items) => {
            let mut i = 0;
            while i < items.len() {
                if text(&items[i]).is_some_and(|k| k.eq_ignore_ascii_case(key))
                    && let Some(v) = items.get(i + 1).and_then(text)
                {
                    found.push(v.to_ascii_lowercase());
                    i += 2;
                    continue;
                }
                found.extend(config_values(&items[i], key));
                i += 1;
            }
        }
        redis::Value::Map(pairs) => {
            for (k, v) in pairs {
                match (text(k), text(v)) {
                    (Some(k), Some(v)) if k.eq_ignore_ascii_case(key) => {
                        found.push(v.to_ascii_lowercase())
                    }
                    _ => found.extend(config_values(v, key)),
                }
            }
        }
        _ => {}
    }
    found
}

impl RedisBackend {
    /// Connects as a `redis` [`StorageConfig`] says (see [`crate::config`]).
    pub async fn connect(config: &StorageConfig) -> Result<RedisBackend> {
        let parsed = RedisConfig::from_storage_config(config)
            .map_err(|e| e.with_operation("connect").with_backend(&config.name))?;
        Self::open(parsed).await
    }

    /// Connects with parsed settings.
    pub async fn open(config: RedisConfig) -> Result<RedisBackend> {
        let config = Arc::new(config);
        let name = config.name.clone();
        tracing::debug!(backend = %name, url = %config.display_url, topology = config.topology.kind(), "connecting to redis");
        let pool = Pool::open(config.clone()).await.map_err(|e| {
            e.with_operation("connect")
                .with_backend(&name)
                .with_context("url", &config.display_url)
        })?;
        if config.min_durability > MinDurability::None {
            check_durability(&pool, config.min_durability)
                .await
                .map_err(|e| e.with_operation("connect").with_backend(&name))?;
        }
        let backend = RedisBackend {
            keys: Keys::new(&config.namespace),
            config,
            pool: Arc::new(pool),
            known: Arc::new(std::sync::Mutex::new((Instant::now(), Default::default()))),
            started: Instant::now(),
        };
        backend.migrate_layout().await.map_err(|e| {
            e.with_operation("connect")
                .with_backend(&name)
                .with_context("migration", "samples into chunks")
        })?;
        Ok(backend)
    }

    /// Another namespace over the same connections (used by native restore).
    pub(crate) fn sibling(&self, namespace: &str) -> RedisBackend {
        let mut config = (*self.config).clone();
        config.namespace = namespace.to_owned();
        RedisBackend {
            config: Arc::new(config),
            pool: self.pool.clone(),
            keys: Keys::new(namespace),
            known: Arc::new(std::sync::Mutex::new((Instant::now(), Default::default()))),
            started: self.started,
        }
    }

    /// The settings this backend was opened with.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// The key prefix of this backend.
    pub fn namespace(&self) -> &str {
        self.keys.namespace()
    }

    pub(crate) fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Whether a batch may be wrapped in `MULTI`/`EXEC` (not on a Cluster, where one batch
    /// spans slots).
    pub(crate) fn atomic_batches(&self) -> bool {
        !matches!(
            self.config.topology,
            crate::config::Topology::Cluster { .. }
        )
    }
}

/// The bytes of a bulk or simple string reply.
pub(crate) fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

/// A string reply, if it is valid UTF-8.
pub(crate) fn text(v: &Value) -> Option<&str> {
    bytes(v).and_then(|b| std::str::from_utf8(b).ok())
}

/// The items of an array reply.
pub(crate) fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        _ => &[],
    }
}

/// An integer reply.
pub(crate) fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => text(other).and_then(|s| s.parse().ok()).unwrap_or(0),
    }
}

/// Timestamps in keys and script arguments: 16-digit zero-padded microseconds.
pub(crate) fn pad(micros: i64) -> String {
    format!("{:016}", micros.max(0))
}

/// A TTL in microseconds, or `""` for none (as the scripts take it).
pub(crate) fn ttl_arg(ttl: Option<std::time::Duration>) -> String {
    ttl.map(|t| i64::try_from(t.as_micros()).unwrap_or(i64::MAX).to_string())
        .unwrap_or_default()
}

/// The instant until which data stamped `micros` lives, or `""` without a TTL.
pub(crate) fn live_until_arg(micros: i64, ttl: Option<std::time::Duration>) -> String {
    ttl.map(|t| {
        micros
            .saturating_add(i64::try_from(t.as_micros()).unwrap_or(i64::MAX))
            .to_string()
    })
    .unwrap_or_default()
}

#[async_trait]
impl Driver for RedisBackend {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn backend_type(&self) -> StorageBackendType {
        StorageBackendType::Redis
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            server_side_downsampling: true,
            pub_sub: true,
            cross_process_events: true,
            native_backup: true,
            similarity_search: false,
            agent_state_history: false,
            retention: RetentionMechanism::KeyExpiry,
        }
    }

    async fn apply_retention(&self) -> Result<RetentionReport> {
        self.sweep().await
    }

    async fn backup_native(&self, _: &dyn StorageBackend, path: &Path) -> Result<TransferReport> {
        self.native_backup(path).await
    }

    async fn restore_native(
        &self,
        store: &dyn StorageBackend,
        path: &Path,
    ) -> Result<TransferReport> {
        self.native_restore(store, path).await
    }

    async fn stats(&self) -> Result<DatabaseStats> {
        self.database_stats().await
    }

    async fn subscribe(&self) -> Result<EventStream> {
        self.open_subscription().await
    }

    async fn close(&self) -> Result<()> {
        tracing::debug!(backend = %self.config.name, "closing the redis backend");
        Ok(())
    }
}
