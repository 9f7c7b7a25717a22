//! Connections: a small round-robin set of reconnecting multiplexed connections to a server,
//! a Cluster, or the master a set of Sentinels names (re-resolved after a failover).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aimon_core::{Error, ErrorKind, Result};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, RedisFuture, Value};
use tokio::sync::RwLock;

use crate::config::{RedisConfig, Topology};
use crate::error::{from_redis, is_noscript, kind_of};
use crate::scripts::SCRIPTS;

/// One connection of any topology, as redis-rs's `ConnectionLike`.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The hash tag of a command's first key (`EVALSHA sha n key…`, `MEMORY USAGE key…` or
/// `CMD key…`): every command of this driver touches one slot, named by that tag.
fn hash_tag(cmd: &Cmd) -> Vec<u8> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|a| match a {
            redis::Arg::Simple(b) => Some(b),
            _ => None,
        })
        .collect();
    let key_at = match args.first() {
        Some(name)
            if name.eq_ignore_ascii_case(b"EVALSHA") || name.eq_ignore_ascii_case(b"EVAL") =>
        {
            3
        }
        Some(name) if name.eq_ignore_ascii_case(b"MEMORY") => 2,
        _ => 1,
    };
    let key = args.get(key_at).copied().unwrap_or_default();
    match key.iter().position(|b| *b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|b| *b == b'}') {
            Some(len) if len > 0 => key[open + 1..open + 1 + len].to_vec(),
            _ => key.to_vec(),
        },
        None => key.to_vec(),
    }
}

/// The connections of one backend.
pub(crate) struct Pool {
    conns: RwLock<Vec<Conn>>,
    /// The data node `conns` talk to (the master, on Sentinel); empty on a Cluster.
    node: std::sync::Mutex<String>,
    next: AtomicUsize,
    config: Arc<RedisConfig>,
}

fn manager_config(config: &RedisConfig) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.response_timeout))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(2))
}

/// Asks the Sentinels where the master is; returns its `redis[s]://` URL.
pub(crate) async fn sentinel_master_url(config: &RedisConfig) -> Result<String> {
    let Topology::Sentinel {
        sentinels,
        master,
        db,
        userinfo,
        tls,
    } = &config.topology
    else {
        return Err(Error::new(
            ErrorKind::Backend,
            "not a Sentinel configuration",
        ));
    };
    let mut last_error = None;
    for sentinel in sentinels {
        let attempt = async {
            let client = redis::Client::open(sentinel.as_str()).map_err(from_redis)?;
            let mut conn = tokio::time::timeout(
                config.connect_timeout,
                client.get_multiplexed_async_connection(),
            )
            .await
            .map_err(|_| Error::new(ErrorKind::Timeout, "a Sentinel did not answer in time"))?
            .map_err(from_redis)?;
            let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(master)
                .query_async(&mut conn)
                .await
                .map_err(from_redis)?;
            addr.ok_or_else(|| {
                Error::new(
                    ErrorKind::ConfigInvalid,
                    format!("the Sentinels know no master named {master:?}"),
                )
            })
        };
        match attempt.await {
            Ok((host, port)) => {
                let scheme = if *tls { "rediss" } else { "redis" };
                return Ok(format!("{scheme}://{userinfo}{host}:{port}/{db}"));
            }
            Err(e) if e.kind() == ErrorKind::ConfigInvalid => return Err(e),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error
        .unwrap_or_else(|| Error::new(ErrorKind::Unavailable, "no Sentinel answered"))
        .with_context("sentinels", sentinels.join(",")))
}

/// The URL of one data node to open a plain connection to (the server, the current master,
/// or the first Cluster seed).
pub(crate) async fn data_node_url(config: &RedisConfig) -> Result<String> {
    match &config.topology {
        Topology::Standalone { url } => Ok(url.clone()),
        Topology::Cluster { nodes } => nodes
            .first()
            .cloned()
            .ok_or_else(|| Error::config("a cluster URL needs a node")),
        Topology::Sentinel { .. } => sentinel_master_url(config).await,
    }
}

/// A client for one data node, with the configured CA and client certificate on `rediss://`.
pub(crate) fn client(
    config: &RedisConfig,
    info: impl redis::IntoConnectionInfo,
) -> Result<redis::Client> {
    match &config.tls {
        Some(tls) => redis::Client::build_with_tls(info, tls.certificates()),
        None => redis::Client::open(info),
    }
    .map_err(from_redis)
}

/// Opens one connection; `url` is the data node (standalone or Sentinel master) to use.
async fn open_one(config: &RedisConfig, url: &str) -> Result<Conn> {
    match &config.topology {
        Topology::Standalone { .. } | Topology::Sentinel { .. } => {
            let client = client(config, url)?;
            let manager = tokio::time::timeout(
                config.connect_timeout * 2,
                ConnectionManager::new_with_config(client, manager_config(config)),
            )
            .await
            .map_err(|_| Error::new(ErrorKind::Timeout, "Redis did not answer in time"))?
            .map_err(from_redis)?;
            let mut conn = Conn::Single(manager);
            if matches!(config.topology, Topology::Sentinel { .. }) {
                // The Sentinels may lag behind a failover: insist on a master.
                let role: Vec<Value> = redis::cmd("ROLE")
                    .query_async(&mut conn)
                    .await
                    .map_err(from_redis)?;
                let is_master =
                    matches!(role.first(), Some(Value::BulkString(b)) if b == b"master");
                if !is_master {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        "the node the Sentinels name is not a master yet",
                    ));
                }
            }
            Ok(conn)
        }
        Topology::Cluster { nodes } => {
            let client = ClusterClientBuilder::new(nodes.clone())
                .connection_timeout(config.connect_timeout)
                .response_timeout(config.response_timeout)
                .retries(6)
                .build()
                .map_err(from_redis)?;
            let conn =
                tokio::time::timeout(config.connect_timeout * 2, client.get_async_connection())
                    .await
                    .map_err(|_| {
                        Error::new(ErrorKind::Timeout, "the Cluster did not answer in time")
                    })?
                    .map_err(from_redis)?;
            Ok(Conn::Cluster(conn))
        }
    }
}

impl Pool {
    pub(crate) async fn open(config: Arc<RedisConfig>) -> Result<Self> {
        let (conns, node) = Self::open_all(&config, None).await?;
        let pool = Pool {
            conns: RwLock::new(conns),
            node: std::sync::Mutex::new(node),
            next: AtomicUsize::new(0),
            config,
        };
        pool.load_scripts().await?;
        Ok(pool)
    }

    /// Opens every connection, to `node` or else the data node the configuration names now;
    /// returns them with that node's URL (empty on a Cluster).
    async fn open_all(config: &RedisConfig, node: Option<String>) -> Result<(Vec<Conn>, String)> {
        let node = match (&config.topology, node) {
            (Topology::Cluster { .. }, _) => String::new(),
            (_, Some(node)) => node,
            (_, None) => data_node_url(config).await?,
        };
        let mut conns = Vec::with_capacity(config.max_connections);
        for _ in 0..config.max_connections.max(1) {
            conns.push(open_one(config, &node).await?);
        }
        Ok((conns, node))
    }

    /// On Sentinel, after a sign that this node may no longer be the master (too few replicas
    /// acknowledged a `WAIT`): asks the Sentinels again and reconnects when they name another
    /// node. A forced failover leaves the old master writable, without replicas, until the
    /// Sentinels convert it, so no error would ever move the connections otherwise.
    async fn follow_master(&self) {
        if !matches!(self.config.topology, Topology::Sentinel { .. }) {
            return;
        }
        let Ok(named) = sentinel_master_url(&self.config).await else {
            return;
        };
        if *self.node.lock().unwrap_or_else(|e| e.into_inner()) == named {
            return;
        }
        self.reconnect(Some(named)).await;
    }

    async fn reconnect(&self, node: Option<String>) {
        match Self::open_all(&self.config, node).await {
            Ok((conns, node)) => {
                tracing::info!(backend = %self.config.name, "reconnected to the master the Sentinels name");
                *self.conns.write().await = conns;
                *self.node.lock().unwrap_or_else(|e| e.into_inner()) = node;
            }
            Err(e) => {
                tracing::debug!(backend = %self.config.name, error = %e, "Sentinel re-resolution failed")
            }
        }
    }

    async fn conn(&self) -> Conn {
        let conns = self.conns.read().await;
        let i = self.next.fetch_add(1, Ordering::Relaxed) % conns.len().max(1);
        conns[i].clone()
    }

    /// Loads every script (on every node of a Cluster).
    pub(crate) async fn load_scripts(&self) -> Result<()> {
        let mut conn = self.conn().await;
        for script in SCRIPTS.all() {
            let sha: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(&script.code)
                .query_async(&mut conn)
                .await
                .map_err(from_redis)?;
            if sha != script.sha {
                return Err(Error::new(
                    ErrorKind::Backend,
                    format!("script {} loaded under an unexpected SHA1", script.name),
                ));
            }
        }
        Ok(())
    }

    /// After a connection-level failure on Sentinel: find the (new) master and reconnect.
    async fn maybe_failover(&self, err: &RedisError) {
        if !matches!(self.config.topology, Topology::Sentinel { .. }) {
            return;
        }
        let readonly = matches!(
            err.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
        );
        if !(readonly || kind_of(err) == ErrorKind::Unavailable || err.is_timeout()) {
            return;
        }
        self.reconnect(None).await;
    }

    /// Runs one command.
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T> {
        let mut reloaded = false;
        loop {
            let mut conn = self.conn().await;
            match cmd.query_async::<T>(&mut conn).await {
                Ok(v) => return Ok(v),
                Err(e) if is_noscript(&e) && !reloaded => {
                    reloaded = true;
                    self.load_scripts().await?;
                }
                Err(e) => {
                    self.maybe_failover(&e).await;
                    return Err(from_redis(e));
                }
            }
        }
    }

    /// Runs a pipeline: one round trip on a server; on a Cluster one pipeline per hash slot
    /// (redis-rs sends a pipeline to one node), sent concurrently, replies put back in order.
    /// Every reply is checked. Replies are never ignored: callers get one per command.
    pub(crate) async fn pipeline(&self, pipe: &Pipeline) -> Result<Vec<Value>> {
        if !matches!(self.config.topology, Topology::Cluster { .. }) || pipe.len() <= 1 {
            return self.pipeline_once(pipe).await;
        }
        let mut groups: Vec<(Vec<u8>, Pipeline, Vec<usize>)> = Vec::new();
        for (i, cmd) in pipe.cmd_iter().enumerate() {
            let tag = hash_tag(cmd);
            let group = match groups.iter_mut().position(|(t, _, _)| *t == tag) {
                Some(g) => g,
                None => {
                    groups.push((tag, redis::pipe(), Vec::new()));
                    groups.len() - 1
                }
            };
            groups[group].1.add_command(cmd.clone());
            groups[group].2.push(i);
        }
        if groups.len() == 1 {
            return self.pipeline_once(pipe).await;
        }
        let results =
            futures::future::join_all(groups.iter().map(|(_, p, _)| self.pipeline_once(p))).await;
        let mut out = vec![Value::Nil; pipe.len()];
        for ((_, _, positions), result) in groups.iter().zip(results) {
            for (i, v) in positions.iter().zip(result?) {
                out[*i] = v;
            }
        }
        Ok(out)
    }

    /// Runs a pipeline (in one round trip per node); every reply checked. Scripts missing from
    /// the server's cache are loaded and the pipeline retried once: every write of this driver
    /// is idempotent, so a retry never duplicates.
    async fn pipeline_once(&self, pipe: &Pipeline) -> Result<Vec<Value>> {
        let mut conn = self.conn().await;
        self.pipeline_on(&mut conn, pipe).await
    }

    async fn pipeline_on(&self, conn: &mut Conn, pipe: &Pipeline) -> Result<Vec<Value>> {
        let mut reloaded = false;
        loop {
            let outcome = pipe
                .query_async::<Vec<Value>>(conn)
                .await
                .and_then(|values| {
                    for v in &values {
                        if let Value::ServerError(e) = v {
                            return Err(RedisError::from(e.clone()));
                        }
                    }
                    Ok(values)
                });
            match outcome {
                Ok(v) => return Ok(v),
                Err(e) if is_noscript(&e) && !reloaded => {
                    reloaded = true;
                    self.load_scripts().await?;
                }
                Err(e) => {
                    self.maybe_failover(&e).await;
                    return Err(from_redis(e));
                }
            }
        }
    }

    /// Runs a write pipeline and, when `wait_replicas` asks for it, `WAIT`s **on the same
    /// connection** (`WAIT` counts the replicas that reached the offset of the calling
    /// client's own last write; asked on another connection it would vouch for nothing).
    pub(crate) async fn write(&self, pipe: &Pipeline) -> Result<Vec<Value>> {
        if self.config.wait_replicas == 0
            || matches!(self.config.topology, Topology::Cluster { .. })
        {
            return self.pipeline(pipe).await;
        }
        let mut conn = self.conn().await;
        let replies = self.pipeline_on(&mut conn, pipe).await?;
        self.wait_replicas_on(&mut conn).await?;
        Ok(replies)
    }

    /// `WAIT n timeout` on `conn`, after a write on it. Fails with `Unavailable` when fewer
    /// replicas acknowledged.
    async fn wait_replicas_on(&self, conn: &mut Conn) -> Result<()> {
        let wanted = self.config.wait_replicas;
        let acked: u64 = match redis::cmd("WAIT")
            .arg(wanted)
            .arg(self.config.wait_timeout.as_millis() as u64)
            .query_async(conn)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                self.maybe_failover(&e).await;
                return Err(from_redis(e));
            }
        };
        if acked < wanted {
            self.follow_master().await;
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("only {acked} of {wanted} replicas acknowledged the write"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_pipeline_groups_commands_by_the_slot_of_their_key() {
        let mut get = redis::cmd("HGET");
        get.arg("{ns|a}:v").arg("field");
        assert_eq!(hash_tag(&get), b"ns|a");
        let mut script = redis::cmd("EVALSHA");
        script.arg("0123").arg(1).arg("{ns}:m:meta:a");
        assert_eq!(hash_tag(&script), b"ns");
        // The key of `MEMORY USAGE` is its third word: grouped by "USAGE", every key of a
        // namespace would go to one node, which answers MOVED for the others.
        let mut usage = redis::cmd("MEMORY");
        usage.arg("USAGE").arg("{ns|b}:z").arg("SAMPLES").arg(0);
        assert_eq!(hash_tag(&usage), b"ns|b");
    }
}
