//! Fixtures: how the conformance suite gets a fresh, empty backend for each check.
//!
//! A [`Fixture`] opens backends of one kind, each [`Fixture::open`] in a new namespace (a fresh
//! file for SQLite, a fresh key prefix / schema / database / collection for servers), so checks
//! never see each other's data and run in parallel.
//!
//! Server backends are found by [`resolve_server`], in the order DESIGN.md "Testing" fixes:
//!
//! 1. an environment URL, `AIMON_TEST_<BACKEND>_URL` (e.g. `AIMON_TEST_REDIS_URL`);
//! 2. a local server binary ([`ServerSpec::binary`]) on `PATH`, started once per test binary on a
//!    free `127.0.0.1` port in a temporary directory ([`LocalServer`]);
//! 3. with the cargo feature `containers` (on by default), a container of
//!    [`ServerSpec::container`] started through the `testcontainers` crate on the Docker engine
//!    of `DOCKER_HOST` (else the default socket), with host networking, on free ports, from an
//!    image that is already present (the fixtures never pull; see [`containers`]);
//! 4. else the backend is **skipped**, reported on stderr as `SKIPPED <backend>: <reason>` —
//!    unless `AIMON_REQUIRE` (comma-separated backend names, or `all`) names it, in which case
//!    every check **fails** with the reason.
//!
//! `AIMON_TEST_VIA=containers` (every backend) or `AIMON_TEST_VIA=containers:redis,postgres`
//! (those named) skips steps 1 and 2 for those backends: their servers run in containers or the
//! checks **fail** ([`via_containers`]). CI runs the Redis, PostgreSQL and InfluxDB suites and
//! the VictoriaMetrics (v2 write) tests so.
//!
//! The Redis Cluster and Sentinel topologies ([`redis_cluster`], [`redis_sentinel`]) resolve the
//! same way, for the whole topology at once: the environment URL, else every node from the local
//! `redis-server`, else every node in [`REDIS_CONTAINER`] with the same command line as the local
//! binary, else the skip. [`redis_cli`] likewise runs `redis-cli` inside that image when there is
//! no local one (or when Redis runs via containers).
//!
//! A driver issue adds one `ServerSpec` constant and one fixture function like
//! [`memory`] / [`sqlite`] below; see `docs/testing.md`.

use std::any::Any;
use std::collections::HashMap;
use std::ffi::OsString;
use std::future::Future;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aimon_core::{Result, StorageBackend, StorageConfig};

pub mod containers;
pub use containers::ContainerSpec;

/// A boxed future, as openers return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Turns a configuration into a backend. The default is [`aimon_registry::open`]; a backend that
/// lives outside this workspace passes its own constructor ([`Fixture::with_opener`]).
pub type Opener =
    Arc<dyn Fn(StorageConfig) -> BoxFuture<Result<Arc<dyn StorageBackend>>> + Send + Sync>;

/// Builds the configuration of one namespace: gets the namespace name (see [`unique_namespace`])
/// and returns the `StorageConfig` (URL and options) that opens an empty store there.
pub type ConfigFn = Arc<dyn Fn(&str) -> StorageConfig + Send + Sync>;

/// Opens fresh backends of one kind. Cheap to build; the conformance macro builds one per check.
#[derive(Clone)]
pub struct Fixture {
    backend: String,
    config: ConfigFn,
    opener: Opener,
    guards: Vec<Arc<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Fixture {
    /// A fixture for `backend` (its short name, as in `AIMON_REQUIRE`) whose namespaces are
    /// configured by `config` and opened through the registry.
    pub fn new(
        backend: impl Into<String>,
        config: impl Fn(&str) -> StorageConfig + Send + Sync + 'static,
    ) -> Self {
        Fixture {
            backend: backend.into(),
            config: Arc::new(config),
            opener: Arc::new(|config: StorageConfig| {
                Box::pin(async move { aimon_registry::open(&config).await })
            }),
            guards: Vec::new(),
        }
    }

    /// Opens namespaces with `opener` instead of the registry: for a backend that is not
    /// registered in `aimon-registry` (one written outside this workspace).
    pub fn with_opener<F, Fut>(mut self, opener: F) -> Self
    where
        F: Fn(StorageConfig) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Arc<dyn StorageBackend>>> + Send + 'static,
    {
        self.opener = Arc::new(move |config| Box::pin(opener(config)));
        self
    }

    /// Keeps `guard` (a temporary directory, a server handle…) alive as long as the fixture.
    pub fn with_guard(mut self, guard: impl Any + Send + Sync) -> Self {
        self.guards.push(Arc::new(guard));
        self
    }

    /// The backend's short name (`memory`, `sqlite`, `redis`…).
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// The configuration of a new, empty namespace with `options` added (e.g. TTLs).
    pub fn config(&self, options: &[(&str, serde_json::Value)]) -> StorageConfig {
        let namespace = unique_namespace(&self.backend);
        let mut config = (self.config)(&namespace);
        for (key, value) in options {
            config.options.insert((*key).to_owned(), value.clone());
        }
        config
    }

    /// Opens a backend in a new, empty namespace, or returns why it could not.
    pub async fn try_open(
        &self,
        options: &[(&str, serde_json::Value)],
    ) -> Result<Arc<dyn StorageBackend>> {
        (self.opener)(self.config(options)).await
    }

    /// Opens `config` (one made by [`Fixture::config`], perhaps in another process) through
    /// this fixture's opener: to reopen a namespace after a crash or a restart.
    pub async fn open_config(&self, config: StorageConfig) -> Result<Arc<dyn StorageBackend>> {
        (self.opener)(config).await
    }

    /// Opens a backend in a new, empty namespace; panics (failing the check) if it cannot.
    pub async fn open(&self, options: &[(&str, serde_json::Value)]) -> Arc<dyn StorageBackend> {
        match self.try_open(options).await {
            Ok(backend) => backend,
            Err(e) => panic!("{}: cannot open a fresh namespace: {e}", self.backend),
        }
    }
}

/// A `memory://` backend with `options`, through the registry: the reference the cross-backend
/// checks compare with.
pub async fn open_memory(options: &[(&str, serde_json::Value)]) -> Arc<dyn StorageBackend> {
    memory_fixture().open(options).await
}

fn memory_fixture() -> Fixture {
    Fixture::new("memory", |namespace| {
        StorageConfig::from_url(namespace, "memory://").expect("memory:// is a valid URL")
    })
}

/// The in-memory reference backend: every `open` is a new, empty `MemoryBackend`.
pub async fn memory() -> Option<Fixture> {
    Some(memory_fixture())
}

/// SQLite: a temporary directory per fixture, one fresh database file per `open`.
#[cfg(feature = "sqlite")]
pub async fn sqlite() -> Option<Fixture> {
    let dir = match tempfile::Builder::new().prefix("aimon-sqlite-").tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            return skip(
                "sqlite",
                &format!("cannot create a temporary directory: {e}"),
            );
        }
    };
    let root = dir.path().to_path_buf();
    Some(
        Fixture::new("sqlite", move |namespace| {
            let file = root.join(format!("{namespace}.db"));
            StorageConfig::from_url(namespace, format!("sqlite://{}", file.display()))
                .expect("sqlite:// is a valid URL")
        })
        .with_guard(dir),
    )
}

/// Embedded Qdrant (`qdrant-edge://`): a temporary directory per fixture, one fresh store
/// directory per `open`. Needs no server, so it always runs where the feature is compiled.
#[cfg(feature = "qdrant-edge")]
pub async fn qdrant_edge() -> Option<Fixture> {
    let dir = match tempfile::Builder::new()
        .prefix("aimon-qdrant-edge-")
        .tempdir()
    {
        Ok(dir) => dir,
        Err(e) => {
            return skip(
                "qdrant-edge",
                &format!("cannot create a temporary directory: {e}"),
            );
        }
    };
    let root = dir.path().to_path_buf();
    Some(
        Fixture::new("qdrant-edge", move |namespace| {
            let path = root.join(namespace);
            StorageConfig::from_url(namespace, format!("qdrant-edge://{}", path.display()))
                .expect("qdrant-edge:// is a valid URL")
        })
        .with_guard(dir),
    )
}

/// A Qdrant server: `AIMON_TEST_QDRANT_URL` (`qdrant://host:6334[?api_key=…&tls=true&rest_port=…]`),
/// else a local `qdrant` binary on free ports, else (feature `containers`) the pinned
/// `qdrant/qdrant` image ([`QDRANT`]). One set of collections per `open` (option
/// `collection_prefix` = the namespace); on a server the variable names they are left behind,
/// a started server takes them with it.
#[cfg(feature = "qdrant-edge")]
pub async fn qdrant() -> Option<Fixture> {
    let server = match resolve_server(&QDRANT).await {
        Ok(server) => server,
        Err(reason) => return skip("qdrant", &reason),
    };
    let url = server.url.clone();
    let namespaces = Arc::new(Mutex::new(Vec::new()));
    let guard = DropCollections {
        url: url.clone(),
        namespaces: namespaces.clone(),
    };
    Some(
        Fixture::new("qdrant", move |namespace| {
            namespaces
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(namespace.to_owned());
            StorageConfig::from_url(namespace, url.clone())
                .expect("a qdrant:// URL")
                .option("collection_prefix", namespace)
        })
        .with_guard(guard)
        .with_guard(server),
    )
}

/// Drops the collections of every namespace a Qdrant fixture opened when the check ends: a
/// server given the whole suite would otherwise hold hundreds of collections (a Qdrant 1.18
/// server aborted after about 420). [`drop_leftover_qdrant_collections`] removes what a killed
/// run left.
#[cfg(feature = "qdrant-edge")]
struct DropCollections {
    url: String,
    namespaces: Arc<Mutex<Vec<String>>>,
}

#[cfg(feature = "qdrant-edge")]
impl Drop for DropCollections {
    fn drop(&mut self) {
        let namespaces =
            std::mem::take(&mut *self.namespaces.lock().unwrap_or_else(|e| e.into_inner()));
        if namespaces.is_empty() {
            return;
        }
        let url = self.url.clone();
        block_on_own_thread(async move {
            for namespace in namespaces {
                let _ = drop_qdrant_collections(&url, &format!("{namespace}_")).await;
            }
        });
    }
}

/// Drops every collection of the Qdrant server at `url` whose name starts with `prefix`.
#[cfg(feature = "qdrant-edge")]
pub async fn drop_qdrant_collections(url: &str, prefix: &str) -> Result<Vec<String>> {
    let config =
        aimon_qdrant::QdrantConfig::from_storage_config(&StorageConfig::from_url("cleanup", url)?)?;
    aimon_qdrant::server::drop_collections_with_prefix(&config.mode, prefix).await
}

/// Drops the collections every test run's Qdrant namespaces start with (`t_qdrant_`): what a
/// run that was killed before its checks ended left on a long-lived server. Run it when no
/// other test run uses the server (see docs/testing.md).
#[cfg(feature = "qdrant-edge")]
pub async fn drop_leftover_qdrant_collections(url: &str) -> Result<Vec<String>> {
    drop_qdrant_collections(url, &namespace_prefix("qdrant")).await
}

/// A Qdrant server: the local `qdrant` binary with a temporary config (gRPC on the free port,
/// REST on another, written to `rest.port`), or the pinned image with both ports published.
pub const QDRANT: ServerSpec = ServerSpec {
    backend: "qdrant",
    binary: "qdrant",
    args: qdrant_args,
    extra_ports: 1,
    readiness: Readiness::TcpAccept,
    url: |env| {
        format!(
            "qdrant://127.0.0.1:{}?rest_port={}",
            env.port, env.extra_ports[0]
        )
    },
    startup_timeout: Duration::from_secs(60),
    container: Some(QDRANT_CONTAINER),
};

/// The pinned Qdrant image, configured by `QDRANT__*` variables: gRPC (the driver's port) on the
/// free port, REST (snapshots) on the extra one. Qdrant 1.19 is within one minor version of
/// qdrant-client 1.20, the compatibility Qdrant promises.
pub const QDRANT_CONTAINER: ContainerSpec = ContainerSpec {
    name: "qdrant",
    image: "qdrant/qdrant:v1.19.0",
    command: Some(|_| Vec::new()),
    env: |env| {
        [
            ("QDRANT__SERVICE__HOST", "127.0.0.1".to_owned()),
            ("QDRANT__SERVICE__GRPC_PORT", env.port.to_string()),
            ("QDRANT__SERVICE__HTTP_PORT", env.extra_ports[0].to_string()),
            ("QDRANT__TELEMETRY_DISABLED", "true".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .into()
    },
};

fn qdrant_args(env: &ServerEnv) -> Vec<OsString> {
    let rest = env.extra_ports[0];
    let dir = env.dir.display();
    let config = format!(
        "telemetry_disabled: true\n\
         storage:\n  storage_path: \"{dir}/storage\"\n  snapshots_path: \"{dir}/snapshots\"\n\
         service:\n  host: 127.0.0.1\n  http_port: {rest}\n  grpc_port: {port}\n",
        port = env.port,
    );
    let path = env.dir.join("qdrant.yaml");
    let _ = std::fs::write(&path, config);
    vec!["--config-path".into(), path.into_os_string()]
}

/// A standalone `redis-server`: foreground, no persistence, in its own temporary directory.
pub const REDIS: ServerSpec = ServerSpec {
    backend: "redis",
    binary: "redis-server",
    args: redis_args,
    extra_ports: 0,
    readiness: Readiness::TcpAccept,
    url: |env| format!("redis://127.0.0.1:{}/0", env.port),
    startup_timeout: Duration::from_secs(30),
    container: Some(REDIS_CONTAINER),
};

/// The one pinned Redis image: the standalone server of [`REDIS`], every node of the Cluster and
/// Sentinel topologies and `redis-cli` ([`redis_cli`]), each with the local command line.
pub const REDIS_CONTAINER: ContainerSpec = ContainerSpec {
    name: "redis",
    image: "redis:7.4.1",
    command: None,
    env: containers::no_env,
};

fn redis_args(env: &ServerEnv) -> Vec<OsString> {
    vec![
        "--port".into(),
        env.port.to_string().into(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--dir".into(),
        env.dir.clone().into_os_string(),
        "--save".into(),
        "".into(),
        "--appendonly".into(),
        "no".into(),
    ]
}

/// One node of the Cluster the fixture builds (three of them, then `redis-cli --cluster create`).
/// In a container it runs the same command line in the Redis image.
pub const REDIS_CLUSTER_NODE: ServerSpec = ServerSpec {
    backend: "redis-cluster",
    binary: "redis-server",
    args: |env| {
        let mut args = redis_args(env);
        args.extend(
            [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ]
            .map(OsString::from),
        );
        args
    },
    extra_ports: 0,
    readiness: Readiness::TcpAccept,
    url: |env| format!("redis://127.0.0.1:{}", env.port),
    startup_timeout: Duration::from_secs(30),
    container: Some(REDIS_CONTAINER),
};

/// A Sentinel, started as `redis-server sentinel.conf --sentinel` (the `redis-sentinel` binary
/// is the same program) in its data directory, which holds its writable configuration file.
pub const REDIS_SENTINEL_NODE: ServerSpec = ServerSpec {
    backend: "redis-sentinel",
    binary: "sh",
    args: |env| {
        vec![
            "-c".into(),
            format!(
                "cd '{}' && : > sentinel.conf && exec redis-server sentinel.conf --sentinel --port {} --bind 127.0.0.1",
                env.dir.display(),
                env.port
            )
            .into(),
        ]
    },
    extra_ports: 0,
    readiness: Readiness::TcpAccept,
    url: |env| format!("redis://127.0.0.1:{}", env.port),
    startup_timeout: Duration::from_secs(30),
    container: Some(REDIS_CONTAINER),
};

/// The name the Sentinel fixture's master is monitored under.
pub const REDIS_SENTINEL_MASTER: &str = "aimon";

/// Runs `redis-cli` with `args` and returns its standard output: the local `redis-cli`, else
/// (and always when Redis runs via containers, see [`via_containers`]) `redis-cli` inside a
/// container of [`REDIS_CONTAINER`], which reaches `127.0.0.1` servers alike.
pub fn redis_cli(args: &[&str]) -> std::result::Result<String, String> {
    let local = find_binary("redis-cli").filter(|_| !via_containers("redis"));
    let Some(cli) = local else {
        return containers_redis_cli(args).map_err(|e| {
            format!(
                "no `redis-cli` binary on PATH (or Redis runs via containers), and cannot run it in {}: {e}",
                REDIS_CONTAINER.reference()
            )
        });
    };
    let out = Command::new(cli)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("redis-cli: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "redis-cli {}: {}{}",
            args.join(" "),
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(stdout)
}

#[cfg(feature = "containers")]
fn containers_redis_cli(args: &[&str]) -> std::result::Result<String, String> {
    containers::redis_cli(args)
}

#[cfg(not(feature = "containers"))]
fn containers_redis_cli(_args: &[&str]) -> std::result::Result<String, String> {
    Err("containers are off (build with the feature `containers`)".to_owned())
}

#[cfg(feature = "redis")]
fn wait_for(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> std::result::Result<(), String> {
    let deadline = Instant::now() + timeout;
    while !ready() {
        if Instant::now() > deadline {
            return Err(format!("{what} not ready after {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

#[cfg(feature = "redis")]
/// Resolves a Redis topology once per test binary: `AIMON_TEST_<BACKEND>_URL`, else `start`
/// (which runs its nodes through a [`NodeLauncher`]: local binaries, else containers).
fn resolve_redis_topology(
    backend: &'static str,
    start: fn() -> std::result::Result<Server, String>,
) -> Resolution {
    static CELLS: Mutex<Option<ServerCells>> = Mutex::new(None);
    let cell = {
        let mut cells = CELLS.lock().unwrap_or_else(|e| e.into_inner());
        cells
            .get_or_insert_with(HashMap::new)
            .entry(backend)
            .or_default()
            .clone()
    };
    cell.get_or_init(|| {
        let var = ServerSpec { backend, ..REDIS }.env_var();
        if let Ok(url) = std::env::var(&var)
            && !url.trim().is_empty()
            && !via_containers(backend)
        {
            return Ok(Arc::new(Server {
                url: url.trim().to_owned(),
                source: ServerSource::EnvUrl,
                _guard: None,
            }));
        }
        start()
            .map(Arc::new)
            .map_err(|e| format!("{var} is not set; {e}"))
    })
    .clone()
}

/// How a Redis topology (Cluster, Sentinel) runs its nodes: chosen once per topology, so the
/// setup code is the same either way and all nodes of a topology run alike.
#[cfg(feature = "redis")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeLauncher {
    /// Local binaries (`redis-server`, and `spec.binary`), as [`LocalServer::start`].
    Local,
    /// Each node's [`ServerSpec::container`] image with host networking ([`containers::start`]).
    Container,
}

/// One running node of a topology: its port, and what keeps it running.
#[cfg(feature = "redis")]
struct Node {
    port: u16,
    _guard: Box<dyn Any + Send + Sync>,
}

#[cfg(feature = "redis")]
impl NodeLauncher {
    /// Containers when `backend` runs via containers, else local binaries when `redis-server`
    /// is on `PATH`, else containers.
    fn choose(backend: &str) -> Self {
        Self::choose_with(
            via_containers(backend),
            find_binary("redis-server").is_some(),
        )
    }

    fn choose_with(via_containers: bool, local_binary: bool) -> Self {
        if local_binary && !via_containers {
            NodeLauncher::Local
        } else {
            NodeLauncher::Container
        }
    }

    /// Starts one node as `spec` says; it stops when the node drops or the tests exit.
    fn start(&self, spec: &ServerSpec) -> std::result::Result<Node, String> {
        match self {
            NodeLauncher::Local => {
                let binary = find_binary(spec.binary)
                    .ok_or_else(|| format!("no `{}` binary on PATH", spec.binary))?;
                let server = LocalServer::start(spec, &binary)?;
                Ok(Node {
                    port: server.env.port,
                    _guard: Box::new(server.watched()),
                })
            }
            NodeLauncher::Container => {
                let image = spec
                    .container
                    .ok_or_else(|| format!("{} has no container image", spec.backend))?;
                let (env, container) = containers::start(spec, &image).map_err(|e| {
                    if via_containers(spec.backend) {
                        e
                    } else {
                        format!("no `redis-server` binary on PATH, and {e}")
                    }
                })?;
                Ok(Node {
                    port: env.port,
                    _guard: Box::new(container),
                })
            }
        }
    }

    /// Where the topology's servers come from.
    fn source(&self) -> ServerSource {
        match self {
            NodeLauncher::Local => ServerSource::LocalBinary,
            NodeLauncher::Container => ServerSource::Container,
        }
    }
}

#[cfg(feature = "redis")]
/// Three masters with `--cluster-enabled yes`, joined by `redis-cli --cluster create`.
fn start_redis_cluster() -> std::result::Result<Server, String> {
    let launcher = NodeLauncher::choose("redis-cluster");
    let nodes = (0..3)
        .map(|_| launcher.start(&REDIS_CLUSTER_NODE))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let mut args = vec!["--cluster", "create"];
    args.extend(addrs.iter().map(String::as_str));
    args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    redis_cli(&args)?;
    for node in &nodes {
        let port = node.port.to_string();
        wait_for("the cluster", Duration::from_secs(30), || {
            redis_cli(&["-p", &port, "cluster", "info"])
                .is_ok_and(|info| info.contains("cluster_state:ok"))
        })?;
    }
    Ok(Server {
        url: format!("redis+cluster://{}", addrs.join(",")),
        source: launcher.source(),
        _guard: Some(Box::new(nodes)),
    })
}

/// A master, `replicas` replicas and one Sentinel of its own (not the shared one of
/// [`redis_sentinel`]), for a check that disturbs the set, such as a failover (with two
/// replicas the Sentinel points the second at the new master at once, so `WAIT 1` can succeed
/// there before the old master is converted, which takes a Sentinel INFO period, 10 s).
/// Blocking: call it from `spawn_blocking`. `Err` says why it could not start.
#[cfg(feature = "redis")]
pub fn start_private_redis_sentinel(replicas: usize) -> std::result::Result<Server, String> {
    start_redis_sentinel_with(replicas)
}

/// A 3-master Cluster of its own (not the shared one of [`redis_cluster`]), for a check that
/// disturbs it, such as `CLIENT KILL`. Blocking: call it from `spawn_blocking`.
#[cfg(feature = "redis")]
pub fn start_private_redis_cluster() -> std::result::Result<Server, String> {
    start_redis_cluster()
}

#[cfg(feature = "redis")]
/// A master, a replica and one Sentinel monitoring them (quorum 1, fast failure detection).
fn start_redis_sentinel() -> std::result::Result<Server, String> {
    start_redis_sentinel_with(1)
}

#[cfg(feature = "redis")]
fn start_redis_sentinel_with(replicas: usize) -> std::result::Result<Server, String> {
    let launcher = NodeLauncher::choose("redis-sentinel");
    let master = launcher.start(&REDIS)?;
    let mport = master.port.to_string();
    let mut replica_nodes = Vec::new();
    for _ in 0..replicas.max(1) {
        let replica = launcher.start(&REDIS)?;
        let rport = replica.port.to_string();
        redis_cli(&["-p", &rport, "replicaof", "127.0.0.1", &mport])?;
        wait_for("the replica", Duration::from_secs(30), || {
            redis_cli(&["-p", &rport, "info", "replication"])
                .is_ok_and(|info| info.contains("master_link_status:up"))
        })?;
        replica_nodes.push(replica);
    }
    if replicas > 1 {
        // A re-pointed replica resyncs at once instead of after the default 5 s pause.
        for node in std::iter::once(&master).chain(&replica_nodes) {
            let port = node.port.to_string();
            redis_cli(&[
                "-p",
                &port,
                "config",
                "set",
                "repl-diskless-sync-delay",
                "0",
            ])?;
        }
    }
    let rports: Vec<String> = replica_nodes.iter().map(|r| r.port.to_string()).collect();
    let sentinel = launcher.start(&REDIS_SENTINEL_NODE)?;
    let sport = sentinel.port.to_string();
    redis_cli(&[
        "-p",
        &sport,
        "sentinel",
        "monitor",
        REDIS_SENTINEL_MASTER,
        "127.0.0.1",
        &mport,
        "1",
    ])?;
    for (key, value) in [
        ("down-after-milliseconds", "1000"),
        ("failover-timeout", "5000"),
    ] {
        redis_cli(&[
            "-p",
            &sport,
            "sentinel",
            "set",
            REDIS_SENTINEL_MASTER,
            key,
            value,
        ])?;
    }
    wait_for("the Sentinel", Duration::from_secs(30), || {
        redis_cli(&["-p", &sport, "sentinel", "replicas", REDIS_SENTINEL_MASTER])
            .is_ok_and(|out| rports.iter().all(|p| out.contains(p.as_str())))
    })?;
    Ok(Server {
        url: format!("redis+sentinel://127.0.0.1:{sport}/{REDIS_SENTINEL_MASTER}"),
        source: launcher.source(),
        _guard: Some(Box::new((master, replica_nodes, sentinel))),
    })
}

#[cfg(feature = "redis")]
fn redis_fixture(
    backend: &str,
    server: std::result::Result<Arc<Server>, String>,
) -> Option<Fixture> {
    let server = match server {
        Ok(server) => server,
        Err(reason) => return skip(backend, &reason),
    };
    let guard = server.clone();
    Some(
        Fixture::new(backend, move |namespace| {
            StorageConfig::from_url(namespace, server.url.clone())
                .expect("a redis URL")
                .option("namespace", namespace)
        })
        .with_guard(guard),
    )
}

/// Redis, standalone: `AIMON_TEST_REDIS_URL`, else `redis-server` on a free port, else a
/// container (feature `containers`); one key prefix (`namespace`) per `open`.
#[cfg(feature = "redis")]
pub async fn redis() -> Option<Fixture> {
    redis_fixture("redis", resolve_server(&REDIS).await)
}

/// A 3-master Redis Cluster: `AIMON_TEST_REDIS_CLUSTER_URL`, else three `redis-server
/// --cluster-enabled yes` joined by `redis-cli --cluster create`, run from the local binaries or
/// else (feature `containers`) in [`REDIS_CONTAINER`] containers with host networking.
#[cfg(feature = "redis")]
pub async fn redis_cluster() -> Option<Fixture> {
    let server = tokio::task::spawn_blocking(|| {
        resolve_redis_topology("redis-cluster", start_redis_cluster)
    })
    .await
    .unwrap_or_else(|e| Err(format!("the cluster resolver panicked: {e}")));
    redis_fixture("redis-cluster", server)
}

/// Redis behind Sentinel: `AIMON_TEST_REDIS_SENTINEL_URL`, else a master, a replica and a
/// Sentinel started from the local `redis-server` or else (feature `containers`) in
/// [`REDIS_CONTAINER`] containers with host networking.
#[cfg(feature = "redis")]
pub async fn redis_sentinel() -> Option<Fixture> {
    let server = tokio::task::spawn_blocking(|| {
        resolve_redis_topology("redis-sentinel", start_redis_sentinel)
    })
    .await
    .unwrap_or_else(|e| Err(format!("the sentinel resolver panicked: {e}")));
    redis_fixture("redis-sentinel", server)
}

/// The directory of the PostgreSQL server binaries (`initdb`, `postgres`, `pg_ctl`): on `PATH`,
/// else the newest `/usr/lib/postgresql/*/bin` (Debian keeps them off `PATH`).
pub fn postgres_bin_dir() -> Option<PathBuf> {
    if let Some(initdb) = find_binary("initdb") {
        return initdb.parent().map(Path::to_path_buf);
    }
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, bin)| bin)
}

/// A throw-away PostgreSQL cluster: `initdb` (trust authentication) into the temporary
/// directory, then the server in the foreground on the free port. PostgreSQL refuses to run as
/// root, so as root both run as the `postgres` user (`setpriv`, which execs without forking, so
/// killing the child kills the server).
pub const POSTGRES: ServerSpec = ServerSpec {
    backend: "postgres",
    binary: "sh",
    args: postgres_args,
    extra_ports: 0,
    readiness: Readiness::Probe(postgres_ready),
    url: |env| format!("postgres://postgres@127.0.0.1:{}/postgres", env.port),
    startup_timeout: Duration::from_secs(60),
    container: Some(POSTGRES_CONTAINER),
};

/// The pinned PostgreSQL image. Its entrypoint runs `initdb` once (trust authentication), then
/// `postgres` with the command's arguments, as the official image does.
pub const POSTGRES_CONTAINER: ContainerSpec = ContainerSpec {
    name: "postgres",
    image: "postgres:16.4",
    command: Some(postgres_container_args),
    env: |_| vec![("POSTGRES_HOST_AUTH_METHOD".to_owned(), "trust".to_owned())],
};

/// The `postgres` arguments of a server in a container: on `127.0.0.1:<port>`, no fsync.
fn postgres_container_args(env: &ServerEnv) -> Vec<String> {
    [
        "-p",
        &env.port.to_string(),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "fsync=off",
        "-c",
        "max_connections=200",
    ]
    .map(str::to_owned)
    .into()
}

fn postgres_args(env: &ServerEnv) -> Vec<OsString> {
    let Some(bin) = postgres_bin_dir() else {
        return vec![
            "-c".into(),
            "echo 'no initdb on PATH or in /usr/lib/postgresql/*/bin' >&2; exit 1".into(),
        ];
    };
    let data = env.dir.join("data");
    let script = format!(
        "set -e; \
         if [ \"$(id -u)\" = 0 ]; then chown postgres \"{dir}\"; \
         run() {{ setpriv --reuid=postgres --regid=postgres --init-groups \"$@\"; }}; \
         else run() {{ \"$@\"; }}; fi; \
         run \"{bin}/initdb\" -D \"{data}\" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null; \
         exec $(if [ \"$(id -u)\" = 0 ]; then echo setpriv --reuid=postgres --regid=postgres --init-groups; fi) \
         \"{bin}/postgres\" -D \"{data}\" -p {port} -c listen_addresses=127.0.0.1 \
         -c unix_socket_directories= -c fsync=off -c max_connections=200",
        dir = env.dir.display(),
        bin = bin.display(),
        data = data.display(),
        port = env.port,
    );
    vec!["-c".into(), script.into()]
}

fn postgres_ready(env: &ServerEnv) -> bool {
    let Some(isready) = postgres_bin_dir()
        .map(|b| b.join("pg_isready"))
        .filter(|p| p.is_file())
        .or_else(|| find_binary("pg_isready"))
    else {
        return port_accepts(env.port);
    };
    Command::new(isready)
        .args(["-q", "-h", "127.0.0.1", "-p", &env.port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A PostgreSQL server with TimescaleDB: `AIMON_TEST_TIMESCALE_URL` (`timescale://…`), else a
/// local cluster of its own like [`POSTGRES`] (never `AIMON_TEST_POSTGRES_URL`'s server, which
/// does not preload the extension) started with `shared_preload_libraries = timescaledb` and
/// `timescaledb.telemetry_level = off` where the extension's library is installed in the
/// cluster's `pg_config --pkglibdir` (CI builds it there with `.ci/timescaledb.sh`), else the
/// pinned `timescale/timescaledb` image.
pub const TIMESCALE: ServerSpec = ServerSpec {
    backend: "timescale",
    binary: "sh",
    args: timescale_args,
    extra_ports: 0,
    readiness: Readiness::Probe(postgres_ready),
    url: |env| format!("timescale://postgres@127.0.0.1:{}/postgres", env.port),
    startup_timeout: Duration::from_secs(60),
    container: Some(ContainerSpec {
        name: "timescale",
        image: "timescale/timescaledb:2.17.2-pg16",
        command: Some(|env| {
            let mut args = postgres_container_args(env);
            args.extend(["-c", "timescaledb.telemetry_level=off"].map(str::to_owned));
            args
        }),
        env: |_| vec![("POSTGRES_HOST_AUTH_METHOD".to_owned(), "trust".to_owned())],
    }),
};

fn timescale_args(env: &ServerEnv) -> Vec<OsString> {
    let Some(libdir) = postgres_bin_dir().map(|bin| postgres_pkglibdir(&bin)) else {
        return postgres_args(env);
    };
    let library = libdir.join("timescaledb.so");
    if !library.is_file() {
        let message = format!(
            "no {} (build TimescaleDB into this PostgreSQL with .ci/timescaledb.sh)",
            library.display()
        );
        return vec![
            "-c".into(),
            format!("echo '{}' >&2; exit 1", message.replace('\'', "")).into(),
        ];
    }
    let mut args = postgres_args(env);
    if let Some(script) = args.last_mut() {
        let mut text = script.to_string_lossy().into_owned();
        // Telemetry off: nothing outside this machine is reachable, and a check must not try.
        text.push_str(
            " -c shared_preload_libraries=timescaledb -c timescaledb.telemetry_level=off",
        );
        *script = text.into();
    }
    args
}

/// Where the server `bin/postgres` loads extension libraries from: the `pg_config --pkglibdir`
/// next to the real binary (where TimescaleDB's `make install` puts `timescaledb.so`; `bin` may
/// hold only symlinks, such as `/usr/local/bin/postgres`), else `../lib` from there (Debian's
/// layout, when the server headers and their `pg_config` are not installed).
fn postgres_pkglibdir(bin: &Path) -> PathBuf {
    let real_bin = bin
        .join("postgres")
        .canonicalize()
        .ok()
        .and_then(|postgres| postgres.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| bin.to_path_buf());
    Command::new(real_bin.join("pg_config"))
        .arg("--pkglibdir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|dir| PathBuf::from(dir.trim()))
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(|| real_bin.join("../lib"))
}

/// Drops the schemas a fixture created when the fixture goes (at the end of each check).
#[cfg(feature = "postgres")]
struct DropSchemas {
    url: String,
    schemas: Arc<Mutex<Vec<String>>>,
}

#[cfg(feature = "postgres")]
impl Drop for DropSchemas {
    fn drop(&mut self) {
        let schemas = std::mem::take(&mut *self.schemas.lock().unwrap_or_else(|e| e.into_inner()));
        if schemas.is_empty() {
            return;
        }
        let url = self.url.clone();
        block_on_own_thread(async move {
            let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await else {
                return;
            };
            for schema in schemas {
                // Fixture namespaces are [a-z0-9_] (see `unique_namespace`), quoted.
                let statement = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
                let drop_schema = || sqlx::raw_sql(sqlx::AssertSqlSafe(statement.clone()));
                if drop_schema().execute(&mut conn).await.is_err() {
                    // A schema with thousands of partitions (a check that failed before its
                    // retention step) exhausts the lock table in one DROP: its tables go first,
                    // a few per transaction.
                    drop_tables_in_groups(&mut conn, &schema).await;
                    let _ = drop_schema().execute(&mut conn).await;
                }
            }
        });
    }
}

/// Drops the tables of `schema`, 32 per transaction, until none is left or a drop fails.
#[cfg(feature = "postgres")]
async fn drop_tables_in_groups(conn: &mut sqlx::PgConnection, schema: &str) {
    loop {
        let Ok(statements) = sqlx::query_scalar::<_, String>(
            "SELECT format('DROP TABLE IF EXISTS %I.%I CASCADE;', schemaname, tablename) \
             FROM pg_tables WHERE schemaname = $1 LIMIT 32",
        )
        .bind(schema)
        .fetch_all(&mut *conn)
        .await
        else {
            return;
        };
        if statements.is_empty() {
            return;
        }
        let batch = format!("BEGIN; {} COMMIT;", statements.concat());
        if sqlx::raw_sql(sqlx::AssertSqlSafe(batch))
            .execute(&mut *conn)
            .await
            .is_err()
        {
            return;
        }
    }
}

/// A PostgreSQL server's URL as the driver takes it (`timescale://` is the same server).
#[cfg(feature = "postgres")]
pub fn postgres_driver_url(url: &str) -> String {
    match url.split_once("://") {
        Some((_, rest)) => format!("postgres://{rest}"),
        None => url.to_owned(),
    }
}

/// PostgreSQL: `AIMON_TEST_POSTGRES_URL`, else a local `initdb` + `postgres` on a free port,
/// else a container (feature `containers`). One schema per `open`, dropped when the check ends.
#[cfg(feature = "postgres")]
pub async fn postgres() -> Option<Fixture> {
    let server = match resolve_server(&POSTGRES).await {
        Ok(server) => server,
        Err(reason) => return skip("postgres", &reason),
    };
    Some(postgres_fixture("postgres", server.url.clone()).with_guard(server))
}

/// TimescaleDB (`timescale://`): `AIMON_TEST_TIMESCALE_URL`, else a local server with the
/// extension, else a container; one schema per `open`, dropped when the check ends.
#[cfg(feature = "timescale")]
pub async fn timescale() -> Option<Fixture> {
    let server = match resolve_server(&TIMESCALE).await {
        Ok(server) => server,
        Err(reason) => return skip("timescale", &reason),
    };
    Some(postgres_fixture("timescale", server.url.clone()).with_guard(server))
}

/// A fixture on the PostgreSQL server at `url`, one schema per `open`, dropped with the fixture.
#[cfg(feature = "postgres")]
pub fn postgres_fixture(backend: &str, url: String) -> Fixture {
    let schemas = Arc::new(Mutex::new(Vec::new()));
    let guard = DropSchemas {
        url: postgres_driver_url(&url),
        schemas: schemas.clone(),
    };
    Fixture::new(backend, move |namespace| {
        schemas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(namespace.to_owned());
        StorageConfig::from_url(namespace, url.clone())
            .expect("a postgres URL")
            .option("schema", namespace)
    })
    .with_guard(guard)
}

/// InfluxDB 1.x: `influxd run -config <temp config>` with HTTP on the free port, the RPC
/// service (for `influxd backup`) on another free port, reporting, monitoring, continuous
/// queries and the HTTP log off, data, WAL and meta in the temporary directory. The URL carries
/// the RPC address as `backup_address`, so native backups work against it.
pub const INFLUXDB: ServerSpec = ServerSpec {
    backend: "influxdb",
    binary: "influxd",
    args: influxdb_args,
    extra_ports: 1,
    readiness: Readiness::TcpAccept,
    url: |env| {
        format!(
            "influxdb://127.0.0.1:{}/aimon?backup_address=127.0.0.1:{}",
            env.port, env.extra_ports[0]
        )
    },
    startup_timeout: Duration::from_secs(60),
    container: Some(INFLUXDB_CONTAINER),
};

/// The pinned InfluxDB 1.x image, configured as the local server's file is, but by the
/// `INFLUXDB_*` variables `influxd` reads (the official image documents them).
pub const INFLUXDB_CONTAINER: ContainerSpec = ContainerSpec {
    name: "influxdb",
    image: "influxdb:1.8.10",
    command: Some(|_| vec!["influxd".to_owned(), "run".to_owned()]),
    env: |env| {
        let dir = env.dir.display();
        [
            ("INFLUXDB_REPORTING_DISABLED", "true".to_owned()),
            (
                "INFLUXDB_BIND_ADDRESS",
                format!("127.0.0.1:{}", env.extra_ports[0]),
            ),
            ("INFLUXDB_META_DIR", format!("{dir}/meta")),
            ("INFLUXDB_DATA_DIR", format!("{dir}/data")),
            ("INFLUXDB_DATA_WAL_DIR", format!("{dir}/wal")),
            ("INFLUXDB_DATA_QUERY_LOG_ENABLED", "false".to_owned()),
            ("INFLUXDB_DATA_WAL_FSYNC_DELAY", "0s".to_owned()),
            (
                "INFLUXDB_HTTP_BIND_ADDRESS",
                format!("127.0.0.1:{}", env.port),
            ),
            ("INFLUXDB_HTTP_LOG_ENABLED", "false".to_owned()),
            ("INFLUXDB_HTTP_MAX_ROW_LIMIT", "0".to_owned()),
            ("INFLUXDB_HTTP_MAX_BODY_SIZE", "0".to_owned()),
            ("INFLUXDB_MONITOR_STORE_ENABLED", "false".to_owned()),
            ("INFLUXDB_CONTINUOUS_QUERIES_ENABLED", "false".to_owned()),
            ("INFLUXDB_SUBSCRIBER_ENABLED", "false".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .into()
    },
};

fn influxdb_args(env: &ServerEnv) -> Vec<OsString> {
    let rpc = env.extra_ports[0];
    let dir = env.dir.display();
    let config = format!(
        "reporting-disabled = true\n\
         bind-address = \"127.0.0.1:{rpc}\"\n\
         [meta]\n  dir = \"{dir}/meta\"\n\
         [data]\n  dir = \"{dir}/data\"\n  wal-dir = \"{dir}/wal\"\n  query-log-enabled = false\n  wal-fsync-delay = \"0s\"\n\
         [http]\n  bind-address = \"127.0.0.1:{port}\"\n  log-enabled = false\n  max-row-limit = 0\n  max-body-size = 0\n\
         [monitor]\n  store-enabled = false\n\
         [continuous_queries]\n  enabled = false\n\
         [subscriber]\n  enabled = false\n",
        port = env.port,
    );
    let path = env.dir.join("influxd.conf");
    let _ = std::fs::write(&path, config);
    vec!["run".into(), "-config".into(), path.into_os_string()]
}

/// VictoriaMetrics, which accepts InfluxDB's v2 write API (`/api/v2/write`): the real server the
/// v2 write path is tested against. `victoria-metrics -httpListenAddr 127.0.0.1:PORT
/// -storageDataPath <temp>`.
pub const VICTORIA_METRICS: ServerSpec = ServerSpec {
    backend: "victoria-metrics",
    binary: "victoria-metrics",
    args: |env| {
        victoria_metrics_flags(env)
            .into_iter()
            .map(OsString::from)
            .collect()
    },
    extra_ports: 0,
    readiness: Readiness::TcpAccept,
    url: |env| format!("http://127.0.0.1:{}", env.port),
    startup_timeout: Duration::from_secs(60),
    container: Some(ContainerSpec {
        name: "victoria-metrics",
        image: "victoriametrics/victoria-metrics:v1.79.5",
        // The image's entrypoint is the binary: the command is its flags.
        command: Some(victoria_metrics_flags),
        env: containers::no_env,
    }),
};

fn victoria_metrics_flags(env: &ServerEnv) -> Vec<String> {
    vec![
        format!("-httpListenAddr=127.0.0.1:{}", env.port),
        format!("-storageDataPath={}", env.dir.join("data").display()),
        "-search.latencyOffset=0s".to_owned(),
        // Test data is stamped in 2024: keep it (the default keeps one month).
        "-retentionPeriod=100y".to_owned(),
        // One value per series and millisecond, as InfluxDB keeps one per key.
        "-dedup.minScrapeInterval=1ms".to_owned(),
        "-loggerLevel=ERROR".to_owned(),
    ]
}

/// Splits an InfluxDB URL into its `scheme://authority` and its `?query` (or "").
pub fn influxdb_url_parts(url: &str) -> (String, String) {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|j| start + j))
        .unwrap_or(base.len());
    (base[..authority_end].to_owned(), query)
}

/// Drops the databases a fixture created when the fixture goes (at the end of each check),
/// best effort, with a bare HTTP request.
#[cfg(feature = "influxdb")]
struct DropDatabases {
    base: String,
    databases: Arc<Mutex<Vec<String>>>,
}

#[cfg(feature = "influxdb")]
impl Drop for DropDatabases {
    fn drop(&mut self) {
        let databases =
            std::mem::take(&mut *self.databases.lock().unwrap_or_else(|e| e.into_inner()));
        let Some(authority) = self.base.split_once("://").map(|(_, a)| a) else {
            return;
        };
        let host_port = authority.rsplit('@').next().unwrap_or(authority);
        for db in databases {
            // Fixture namespaces are [a-z0-9_] (see `unique_namespace`): no encoding needed
            // beyond the quotes and spaces.
            let request = format!(
                "POST /query?q=DROP%20DATABASE%20%22{db}%22 HTTP/1.0\r\nHost: {host_port}\r\nContent-Length: 0\r\n\r\n"
            );
            if let Ok(mut stream) = TcpStream::connect(host_port) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = stream.write_all(request.as_bytes());
                let _ = std::io::Read::read_to_end(&mut stream, &mut Vec::new());
            }
        }
    }
}

/// InfluxDB: `AIMON_TEST_INFLUXDB_URL` (`influxdb://host:8086[/db][?…]`), else `influxd run` on
/// free ports (Debian's `influxdb` package), else a container (feature `containers`). One
/// database per `open`, dropped when the check ends.
#[cfg(feature = "influxdb")]
pub async fn influxdb() -> Option<Fixture> {
    let server = match resolve_server(&INFLUXDB).await {
        Ok(server) => server,
        Err(reason) => return skip("influxdb", &reason),
    };
    let (base, query) = influxdb_url_parts(&server.url);
    let databases = Arc::new(Mutex::new(Vec::new()));
    let guard = DropDatabases {
        base: base.clone(),
        databases: databases.clone(),
    };
    Some(
        Fixture::new("influxdb", move |namespace| {
            databases
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(namespace.to_owned());
            StorageConfig::from_url(namespace, format!("{base}/{namespace}{query}"))
                .expect("an influxdb URL")
        })
        .with_guard(guard)
        .with_guard(server),
    )
}

/// The InfluxDB server of [`influxdb`] itself, for tests that need its URL (faults, bench).
#[cfg(feature = "influxdb")]
pub async fn influxdb_server() -> std::result::Result<Arc<Server>, String> {
    resolve_server(&INFLUXDB).await
}

/// A VictoriaMetrics server (`AIMON_TEST_VICTORIA_METRICS_URL`, else the local binary, else a
/// container): its `http://host:port`, or `None` after [`skip`]'s rules.
pub async fn victoria_metrics() -> Option<Arc<Server>> {
    match resolve_server(&VICTORIA_METRICS).await {
        Ok(server) => Some(server),
        Err(reason) => {
            skip("victoria-metrics", &reason);
            None
        }
    }
}

/// A name no other namespace of this machine has: lower-case ASCII letters, digits and `_`,
/// starting with a letter and at most 40 bytes, so it is valid as a key prefix, a PostgreSQL
/// schema, an InfluxDB database or bucket and a Qdrant collection. `backend` (sanitized) is part
/// of it, to tell namespaces apart when inspecting a server.
pub fn unique_namespace(backend: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}{}_{}_{n}",
        namespace_prefix(backend),
        base36(u128::from(std::process::id())),
        base36(nanos % 36u128.pow(8))
    )
}

/// Runs `work` to its end on a thread and runtime of its own: a guard's `drop` may run inside
/// a runtime, which cannot block on another.
pub fn block_on_own_thread(work: impl Future<Output = ()> + Send + 'static) {
    let worker = std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            runtime.block_on(work);
        }
    });
    let _ = worker.join();
}

/// How every test namespace of `backend` starts: `t_<backend, 8 letters or digits>_`.
pub fn namespace_prefix(backend: &str) -> String {
    let tag: String = backend
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(8)
        .collect();
    format!("t_{tag}_")
}

fn base36(mut n: u128) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

// ---------------------------------------------------------------------------------------------
// Skips and AIMON_REQUIRE

/// Whether `AIMON_REQUIRE` (comma-separated names, or `all`) names `backend`.
pub fn is_required(backend: &str) -> bool {
    required_in(std::env::var("AIMON_REQUIRE").ok().as_deref(), backend)
}

fn required_in(list: Option<&str>, backend: &str) -> bool {
    list.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .any(|name| name.eq_ignore_ascii_case("all") || name.eq_ignore_ascii_case(backend))
}

/// Whether `AIMON_TEST_VIA` makes `backend`'s servers run in containers only: `containers`
/// (every backend) or `containers:<name>,<name>…`. Panics on any other value, naming it.
pub fn via_containers(backend: &str) -> bool {
    match via_in(std::env::var("AIMON_TEST_VIA").ok().as_deref(), backend) {
        Ok(via) => via,
        Err(e) => panic!("{e}"),
    }
}

fn via_in(value: Option<&str>, backend: &str) -> std::result::Result<bool, String> {
    let value = value.unwrap_or_default().trim();
    if value.is_empty() {
        return Ok(false);
    }
    let (tier, names) = value.split_once(':').unwrap_or((value, "all"));
    if tier.trim() != "containers" {
        return Err(format!(
            "AIMON_TEST_VIA={value:?}: expected `containers` or `containers:<backend>,<backend>…`"
        ));
    }
    Ok(required_in(Some(names), backend))
}

/// Reports that `backend` cannot run here. Returns `None` (the check passes vacuously) after
/// printing `SKIPPED <backend>: <reason>` to stderr, once per test binary and backend; panics
/// with the reason instead when `AIMON_REQUIRE` names the backend or `AIMON_TEST_VIA` runs it
/// in containers.
pub fn skip(backend: &str, reason: &str) -> Option<Fixture> {
    if is_required(backend) {
        panic!("{backend} is required (AIMON_REQUIRE) but cannot run: {reason}");
    }
    if via_containers(backend) {
        panic!("{backend} runs via containers (AIMON_TEST_VIA) but cannot run: {reason}");
    }
    static REPORTED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut reported = REPORTED.lock().unwrap_or_else(|e| e.into_inner());
    if !reported.iter().any(|b| b == backend) {
        reported.push(backend.to_owned());
        // Straight to the process's stderr: libtest captures `eprintln!` of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {backend}: {reason} (set AIMON_REQUIRE={backend} to fail instead)"
        );
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Server resolution

/// What a server needs to start, locally or in a container.
#[derive(Debug, Clone)]
pub struct ServerEnv {
    /// The free `127.0.0.1` port the server must listen on.
    pub port: u16,
    /// Further free `127.0.0.1` ports, [`ServerSpec::extra_ports`] of them (Qdrant's REST
    /// port, InfluxDB's backup RPC port).
    pub extra_ports: Vec<u16>,
    /// An empty directory for the server's data: a temporary directory removed with a local
    /// server, [`containers::CONTAINER_DIR`] in a container.
    pub dir: PathBuf,
}

/// When a started server is ready to serve.
#[derive(Clone, Copy)]
pub enum Readiness {
    /// The port accepts a TCP connection.
    TcpAccept,
    /// A custom probe (e.g. an HTTP health endpoint), called until it returns `true`.
    Probe(fn(&ServerEnv) -> bool),
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Readiness::TcpAccept => f.write_str("TcpAccept"),
            Readiness::Probe(_) => f.write_str("Probe(..)"),
        }
    }
}

/// How to find or start one kind of server. Driver issues fill one in per backend:
///
/// ```
/// use aimon_integration_tests::fixtures::{Readiness, ServerSpec};
/// const REDIS: ServerSpec = ServerSpec {
///     backend: "redis",
///     binary: "redis-server",
///     args: |env| vec![
///         "--port".into(), env.port.to_string().into(),
///         "--bind".into(), "127.0.0.1".into(),
///         "--dir".into(), env.dir.clone().into_os_string(),
///         "--save".into(), "".into(),
///     ],
///     extra_ports: 0,
///     readiness: Readiness::TcpAccept,
///     url: |env| format!("redis://127.0.0.1:{}/0", env.port),
///     startup_timeout: std::time::Duration::from_secs(30),
///     container: None,
/// };
/// assert_eq!(REDIS.env_var(), "AIMON_TEST_REDIS_URL");
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ServerSpec {
    /// The backend's short name: `AIMON_TEST_<BACKEND>_URL` and `AIMON_REQUIRE` use it.
    pub backend: &'static str,
    /// The server binary, looked up on `PATH` (or an absolute path).
    pub binary: &'static str,
    /// The command-line arguments for a port and data directory.
    pub args: fn(&ServerEnv) -> Vec<OsString>,
    /// How many more free ports the server needs ([`ServerEnv::extra_ports`]).
    pub extra_ports: usize,
    pub readiness: Readiness,
    /// The URL of the started server, local or in a container (both listen on `127.0.0.1`).
    pub url: fn(&ServerEnv) -> String,
    /// How long the server may take to become ready (generous: CI machines are small).
    pub startup_timeout: Duration,
    /// The image of the container tier, if the backend has one.
    pub container: Option<ContainerSpec>,
}

impl ServerSpec {
    /// `AIMON_TEST_<BACKEND>_URL`, upper-cased with `-`/`+` as `_`.
    pub fn env_var(&self) -> String {
        format!("AIMON_TEST_{}_URL", env_name(self.backend))
    }
}

/// A backend name as part of an environment variable: upper case, `_` for anything else.
fn env_name(backend: &str) -> String {
    backend
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Where a server came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerSource {
    EnvUrl,
    LocalBinary,
    Container,
}

/// A server the suite can use, shared by every check of a test binary.
#[derive(Debug)]
pub struct Server {
    pub url: String,
    pub source: ServerSource,
    /// Keeps a started server (or container) alive.
    _guard: Option<Box<dyn Any + Send + Sync>>,
}

type Resolution = std::result::Result<Arc<Server>, String>;
/// One resolution cell per backend name, filled once per test binary.
type ServerCells = HashMap<&'static str, Arc<OnceLock<Resolution>>>;

/// Finds or starts the server `spec` describes, once per test binary: later calls (from any
/// check, on any runtime) get the same server. `Err` holds the reason to skip or fail with
/// (pass it to [`skip`]).
pub async fn resolve_server(spec: &'static ServerSpec) -> Resolution {
    static SERVERS: Mutex<Option<ServerCells>> = Mutex::new(None);
    let cell = {
        let mut servers = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
        servers
            .get_or_insert_with(HashMap::new)
            .entry(spec.backend)
            .or_default()
            .clone()
    };
    // Starting a server blocks (process spawn, readiness polling): keep it off the runtime.
    tokio::task::spawn_blocking(move || cell.get_or_init(|| resolve_blocking(spec)).clone())
        .await
        .unwrap_or_else(|e| Err(format!("the server resolver panicked: {e}")))
}

fn resolve_blocking(spec: &'static ServerSpec) -> Resolution {
    if via_containers(spec.backend) {
        return start_in_container(spec).map(Arc::new);
    }
    let var = spec.env_var();
    if let Ok(url) = std::env::var(&var)
        && !url.trim().is_empty()
    {
        return Ok(Arc::new(Server {
            url: url.trim().to_owned(),
            source: ServerSource::EnvUrl,
            _guard: None,
        }));
    }
    let mut reasons = vec![format!("{var} is not set")];
    match find_binary(spec.binary) {
        None => reasons.push(format!("no `{}` binary on PATH", spec.binary)),
        Some(binary) => match LocalServer::start(spec, &binary) {
            Ok(server) => {
                let url = server.url.clone();
                return Ok(Arc::new(Server {
                    url,
                    source: ServerSource::LocalBinary,
                    _guard: Some(Box::new(server.watched())),
                }));
            }
            Err(e) => reasons.push(format!("`{}` did not start: {e}", binary.display())),
        },
    }
    match start_in_container(spec) {
        Ok(server) => return Ok(Arc::new(server)),
        Err(e) => reasons.push(e),
    }
    Err(reasons.join("; "))
}

/// Step 3: `spec`'s server in its container image ([`containers::start`]).
fn start_in_container(spec: &'static ServerSpec) -> std::result::Result<Server, String> {
    let image = spec
        .container
        .ok_or_else(|| format!("{} has no container image", spec.backend))?;
    let (env, container) = containers::start(spec, &image)?;
    Ok(Server {
        url: (spec.url)(&env),
        source: ServerSource::Container,
        _guard: Some(Box::new(container)),
    })
}

/// `name` if it is a path to a file, else the first match on `PATH`.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let direct = Path::new(name);
    if direct.components().count() > 1 {
        return direct.is_file().then(|| direct.to_path_buf());
    }
    aimon_core::archive::find_on_path(name)
}

/// A free TCP port on 127.0.0.1 (bound, then released for the server to take).
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Whether `127.0.0.1:port` accepts a TCP connection.
pub fn port_accepts(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// A server binary run as a foreground child process on a free port in its own temporary
/// directory. Dropping it kills the process and waits for it, then removes the directory.
#[derive(Debug)]
pub struct LocalServer {
    pub url: String,
    pub env: ServerEnv,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl LocalServer {
    /// Starts `binary` as `spec` says and waits until it is ready or `spec.startup_timeout`
    /// passes.
    pub fn start(spec: &ServerSpec, binary: &Path) -> std::result::Result<Self, String> {
        Self::launch(spec, |env| {
            let mut command = Command::new(binary);
            command.args((spec.args)(env));
            command
        })
    }

    /// Creates the directory and ports, spawns the command `command` builds for them (logging
    /// to `server.log` there) and waits for readiness.
    fn launch(
        spec: &ServerSpec,
        command: impl FnOnce(&ServerEnv) -> Command,
    ) -> std::result::Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("aimon-{}-", spec.backend))
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let no_port = |e: std::io::Error| format!("no free port: {e}");
        let env = ServerEnv {
            port: free_port().map_err(no_port)?,
            extra_ports: (0..spec.extra_ports)
                .map(|_| free_port())
                .collect::<std::io::Result<_>>()
                .map_err(no_port)?,
            dir: dir.path().to_path_buf(),
        };
        let log = std::fs::File::create(dir.path().join("server.log"))
            .map_err(|e| format!("cannot create the server log: {e}"))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cannot create the server log: {e}"))?;
        let child = command(&env)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot spawn: {e}"))?;
        let mut server = LocalServer {
            url: (spec.url)(&env),
            env,
            child: Some(child),
            _dir: dir,
        };
        let deadline = Instant::now() + spec.startup_timeout;
        loop {
            if let Some(child) = server.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "exited with {status} before it was ready; log: {}",
                    server.log_tail()
                ));
            }
            let ready = match spec.readiness {
                Readiness::TcpAccept => port_accepts(server.env.port),
                Readiness::Probe(probe) => probe(&server.env),
            };
            if ready {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not ready after {:?}; log: {}",
                    spec.startup_timeout,
                    server.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The process id of the server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.env.dir.join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(10).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// The server plus a watchdog that kills it when this test process exits: a server shared
    /// through a `static` is never dropped, so without the watchdog it would outlive the tests.
    /// The watchdog also removes the server's temporary directory once the server has exited
    /// (within 10 s): a `static` never drops its `TempDir` either.
    pub fn watched(self) -> (Self, Option<Watchdog>) {
        let dir = self.env.dir.display().to_string().replace('\'', r"'\''");
        let watchdog = self.pid().and_then(|pid| {
            Watchdog::spawn(&format!(
                "kill {pid} 2>/dev/null; \
                 for _ in $(seq 100); do kill -0 {pid} 2>/dev/null || break; sleep 0.1; done; \
                 rm -rf '{dir}'"
            ))
            .ok()
        });
        (self, watchdog)
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a shell command when this process exits, however it exits: a `sh` child blocks reading
/// a pipe whose only writer is this process, and runs the command at end of file.
#[derive(Debug)]
pub struct Watchdog {
    child: Child,
}

impl Watchdog {
    pub fn spawn(on_exit: &str) -> std::io::Result<Self> {
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("cat >/dev/null; {on_exit}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Watchdog { child })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Closing the pipe runs the command now; wait so no zombie is left.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Running checks

/// Runs one check on a fresh multi-threaded runtime (what `#[tokio::test(flavor =
/// "multi_thread")]` does), with a generous overall timeout so a hung backend fails instead of
/// stalling the run. The conformance macro calls this; the user's crate needs no tokio.
pub fn run_check<F: Future<Output = ()>>(name: &str, check: F) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        if tokio::time::timeout(Duration::from_secs(300), check)
            .await
            .is_err()
        {
            panic!("{name}: did not finish within 300 s");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_unique_and_portable() {
        let a = unique_namespace("Redis+Cluster");
        let b = unique_namespace("Redis+Cluster");
        assert_ne!(a, b);
        for ns in [&a, &b] {
            assert!(ns.len() <= 40, "{ns}");
            assert!(ns.starts_with("t_redisclu_"), "{ns}");
            assert!(
                ns.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{ns}"
            );
        }
    }

    #[test]
    fn require_list_matches_names_and_all() {
        assert!(required_in(Some("redis, postgres"), "postgres"));
        assert!(required_in(Some("ALL"), "qdrant"));
        assert!(!required_in(Some("redis"), "postgres"));
        assert!(!required_in(None, "redis"));
    }

    #[test]
    fn env_var_names() {
        let spec = ServerSpec {
            backend: "redis-cluster",
            binary: "redis-server",
            args: |_| Vec::new(),
            extra_ports: 0,
            readiness: Readiness::TcpAccept,
            url: |env| format!("redis://127.0.0.1:{}", env.port),
            startup_timeout: Duration::from_secs(1),
            container: None,
        };
        assert_eq!(spec.env_var(), "AIMON_TEST_REDIS_CLUSTER_URL");
    }

    /// The generic mechanism end to end, with `sh` standing in for a server binary: a missing
    /// binary is a reason to skip, and a started one is killed on drop.
    static FAKE: ServerSpec = ServerSpec {
        backend: "fake",
        binary: "sh",
        // A "server" that never listens: readiness comes from the probe instead.
        args: |_| vec!["-c".into(), "sleep 60".into()],
        extra_ports: 1,
        readiness: Readiness::Probe(|env| env.dir.exists()),
        url: |env| format!("fake://127.0.0.1:{}", env.port),
        startup_timeout: Duration::from_secs(10),
        container: None,
    };

    #[test]
    fn local_server_starts_waits_and_is_killed_on_drop() {
        let binary = find_binary("sh").expect("sh on PATH");
        let server = LocalServer::start(&FAKE, &binary).expect("starts");
        let pid = server.pid().expect("a pid");
        let dir = server.env.dir.clone();
        assert!(Path::new(&format!("/proc/{pid}")).exists() || cfg!(not(target_os = "linux")));
        drop(server);
        assert!(!dir.exists(), "the temporary directory is removed");
        if cfg!(target_os = "linux") {
            assert!(
                !Path::new(&format!("/proc/{pid}")).exists(),
                "killed and reaped"
            );
        }
        assert!(find_binary("surely-no-such-server-binary").is_none());
    }

    /// A server kept in a `static` is never dropped: when the test process exits, its watchdog
    /// kills it and removes its temporary directory.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_watchdog_kills_the_server_and_removes_its_directory() {
        let binary = find_binary("sh").expect("sh on PATH");
        let (mut server, watchdog) = LocalServer::start(&FAKE, &binary)
            .expect("starts")
            .watched();
        let dir = server.env.dir.clone();
        // Once this process has exited, the server is reaped by init; here, by a thread.
        let mut child = server.child.take().expect("a child");
        let pid = child.id();
        let reaper = std::thread::spawn(move || child.wait());
        // What the exit of the test process does: the watchdog's pipe closes.
        drop(watchdog.expect("a watchdog"));
        assert!(!dir.exists(), "the temporary directory is removed");
        assert!(!reaper.join().unwrap().unwrap().success(), "killed");
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        std::mem::forget(server);
    }

    /// One pinned image for the standalone container and every topology node.
    #[test]
    fn redis_image_is_pinned_once() {
        for spec in [REDIS, REDIS_CLUSTER_NODE, REDIS_SENTINEL_NODE] {
            let image = spec.container.expect("a container image");
            assert_eq!(image.image, REDIS_CONTAINER.image, "{}", spec.backend);
            assert_eq!(image.image_var(), "AIMON_TEST_REDIS_IMAGE");
        }
        assert_eq!(
            containers::split_reference(REDIS_CONTAINER.image),
            Ok(("redis", "7.4.1"))
        );
    }

    /// Qdrant needs two ports: gRPC for the driver, REST for snapshots. Both reach the URL, from
    /// a local server's config and from a container's environment.
    #[test]
    fn qdrant_servers_listen_on_grpc_and_rest() {
        assert_eq!(QDRANT_CONTAINER.image, "qdrant/qdrant:v1.19.0");
        let dir = tempfile::tempdir().unwrap();
        let env = ServerEnv {
            port: 40003,
            extra_ports: vec![40004],
            dir: dir.path().to_path_buf(),
        };
        let args = (QDRANT.args)(&env);
        assert_eq!(args[0], "--config-path");
        let config = std::fs::read_to_string(&args[1]).unwrap();
        assert!(config.contains("grpc_port: 40003"), "{config}");
        assert!(config.contains("http_port: 40004"), "{config}");
        assert!(config.contains(&format!("{}/storage", dir.path().display())));
        assert_eq!(
            (QDRANT.url)(&env),
            "qdrant://127.0.0.1:40003?rest_port=40004"
        );
        let vars = (QDRANT_CONTAINER.env)(&env);
        for expected in [
            ("QDRANT__SERVICE__HOST", "127.0.0.1"),
            ("QDRANT__SERVICE__GRPC_PORT", "40003"),
            ("QDRANT__SERVICE__HTTP_PORT", "40004"),
        ] {
            assert!(
                vars.iter()
                    .any(|(k, v)| (k.as_str(), v.as_str()) == expected),
                "{vars:?}"
            );
        }
        // The URL parses as the driver's configuration.
        StorageConfig::from_url("q", (QDRANT.url)(&env)).unwrap();
    }

    /// A container listens where a local server would: 127.0.0.1, the fixture's ports.
    #[test]
    fn containers_listen_on_the_loopback_ports_of_the_fixture() {
        let env = ServerEnv {
            port: 41001,
            extra_ports: vec![41002],
            dir: PathBuf::from(containers::CONTAINER_DIR),
        };
        let postgres = POSTGRES_CONTAINER.command_for(&POSTGRES, &env);
        assert_eq!(
            postgres[..4],
            ["-p", "41001", "-c", "listen_addresses=127.0.0.1"]
        );
        let influx = (INFLUXDB_CONTAINER.env)(&env);
        for expected in [
            ("INFLUXDB_HTTP_BIND_ADDRESS", "127.0.0.1:41001"),
            ("INFLUXDB_BIND_ADDRESS", "127.0.0.1:41002"),
            ("INFLUXDB_DATA_DIR", "/tmp/data"),
        ] {
            assert!(
                influx
                    .iter()
                    .any(|(k, v)| (k.as_str(), v.as_str()) == expected),
                "{influx:?}"
            );
        }
        assert_eq!(
            (INFLUXDB.url)(&env),
            "influxdb://127.0.0.1:41001/aimon?backup_address=127.0.0.1:41002"
        );
        let vm = VICTORIA_METRICS.container.unwrap();
        assert_eq!(
            vm.command_for(&VICTORIA_METRICS, &env)[0],
            "-httpListenAddr=127.0.0.1:41001"
        );
        let sentinel = REDIS_CONTAINER.command_for(&REDIS_SENTINEL_NODE, &env);
        assert_eq!(sentinel[..2], ["sh", "-c"]);
        assert!(sentinel[2].starts_with("cd '/tmp' && "), "{sentinel:?}");
        assert!(sentinel[2].ends_with("--sentinel --port 41001 --bind 127.0.0.1"));
    }

    #[test]
    fn via_names_the_backends_that_run_in_containers() {
        assert_eq!(via_in(None, "redis"), Ok(false));
        assert_eq!(via_in(Some(" "), "redis"), Ok(false));
        assert_eq!(via_in(Some("containers"), "qdrant"), Ok(true));
        assert_eq!(
            via_in(Some("containers:redis,postgres"), "postgres"),
            Ok(true)
        );
        assert_eq!(
            via_in(Some("containers:redis,postgres"), "influxdb"),
            Ok(false)
        );
        assert!(via_in(Some("container"), "redis").is_err());
        assert!(via_in(Some("docker:redis"), "redis").is_err());
    }

    #[cfg(feature = "redis")]
    #[test]
    fn topology_nodes_prefer_local_binaries_then_containers() {
        use NodeLauncher::{Container, Local};
        assert_eq!(NodeLauncher::choose_with(false, true), Local);
        assert_eq!(NodeLauncher::choose_with(false, false), Container);
        assert_eq!(NodeLauncher::choose_with(true, true), Container);
        assert_eq!(Container.source(), ServerSource::Container);
    }

    #[test]
    fn influxdb_urls_split_into_base_and_query() {
        assert_eq!(
            influxdb_url_parts("influxdb://127.0.0.1:8086/aimon?backup_address=127.0.0.1:1"),
            (
                "influxdb://127.0.0.1:8086".to_owned(),
                "?backup_address=127.0.0.1:1".to_owned()
            )
        );
        assert_eq!(
            influxdb_url_parts("influxdb://u:p@h:1"),
            ("influxdb://u:p@h:1".to_owned(), String::new())
        );
    }

    #[test]
    fn tcp_readiness_sees_a_listener() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        assert!(port_accepts(listener.local_addr().unwrap().port()));
    }
}
