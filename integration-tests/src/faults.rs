//! The fault suite: what an acknowledged write is worth when something dies in the middle of a
//! batch. Every backend runs the same scenarios, through [`fault_suite!`](crate::fault_suite):
//!
//! 1. **The client killed mid-batch** ([`client_killed_mid_batch`]): a child process (this test
//!    binary run again with [`WRITER_ENV`], see [`writer_child`]) writes numbered batches into
//!    one namespace and prints `fault-writer-ack <n>` once `save_metrics`, `save_alerts` and
//!    `save_agent_states` of batch `n` returned `Ok`; the parent `SIGKILL`s it at a random
//!    (seeded, printed) point, reopens the store and checks it ([`verify`]); then re-sends the
//!    unacknowledged batch and checks that the store is exactly complete.
//! 2. **The server killed with `SIGKILL` mid-batch and restarted** on the same data
//!    ([`disrupted_mid_batch`] with a [`Fault`] that kills and restarts a private server).
//! 3. **The connection cut mid-batch** ([`disrupted_mid_batch`] with a [`Fault`] that cuts the
//!    store's connections: `CLIENT KILL`, `pg_terminate_backend`, a stopped server).
//!
//! What is checked after every fault ([`verify`]): every acknowledged batch is present exactly
//! once (sample count and value of every key, each alert and agent state); no sample key appears
//! twice; the one batch that was in flight is absent or partly present, never duplicated and
//! never with a wrong value; nothing after it exists; the store's own counts (`stats`) agree;
//! and re-sending the batch in flight makes the store exactly complete. A write cut by a fault
//! must fail with a retryable kind (`Unavailable` or `Timeout`), never another kind or a panic.
//!
//! Randomness comes from one seed per check, printed on stderr (`fault seed: …`); set
//! [`SEED_ENV`] to replay it. The checks of one test binary run one at a time ([`serial`]):
//! they kill processes and connections, and the machine is small.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aimon_core::{
    AgentState, Alert, AlertSeverity, ErrorKind, Metric, MetricType, MetricValue, StorageBackend,
    StorageConfig,
};
use futures::future::BoxFuture;

use crate::conformance::support::{Backend, at, t0};
use crate::fixtures::{
    Fixture, Readiness, ServerEnv, ServerSpec, Watchdog, free_port, port_accepts,
};

/// Set in the child process of [`client_killed_mid_batch`]: a JSON request `{config, start}`.
pub const WRITER_ENV: &str = "AIMON_FAULT_WRITER";
/// Replays a run: the seed [`client_killed_mid_batch`] and [`disrupted_mid_batch`] print.
pub const SEED_ENV: &str = "AIMON_FAULT_SEED";
/// What the writer child prints, followed by the batch number, once a batch was acknowledged.
const ACK: &str = "fault-writer-ack ";
/// Rounds of kill, reopen, check and retry per scenario.
pub const ROUNDS: usize = 5;

/// The size of one numbered batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Series, each getting `samples` samples per batch (the same series in every batch).
    pub series: usize,
    pub samples: usize,
    /// Alerts and agent states per batch (new ids in every batch).
    pub alerts: usize,
    pub states: usize,
}

/// The child writer's batches: small, so that many are acknowledged per round.
pub const SMALL: Shape = Shape {
    series: 3,
    samples: 40,
    alerts: 2,
    states: 2,
};

/// The in-process writer's batches: long enough that a cut often lands inside one.
pub const LARGE: Shape = Shape {
    series: 3,
    samples: 1_000,
    alerts: 5,
    states: 5,
};

/// The id of series `s`.
pub fn series_id(s: usize) -> String {
    format!("fault-s{s}")
}

fn alert_id(batch: u64, j: usize) -> String {
    format!("fault-a{batch}-{j}")
}

fn agent_id(batch: u64, j: usize) -> String {
    format!("fault-agent{batch}-{j}")
}

/// The value of sample `i` of series `s` in batch `batch`: every key has its own value, so a
/// sample written under the wrong key shows.
fn expected_value(batch: u64, s: usize, i: usize) -> f64 {
    (batch * 1_000_000 + i as u64 * 10 + s as u64) as f64 + 0.25
}

/// Batch `n`: samples of every series at their own seconds (tagged with the batch number and a
/// host), new alerts and new agents.
pub fn batch(n: u64, shape: Shape) -> (Vec<Metric>, Vec<Alert>, Vec<AgentState>) {
    let metrics = (0..shape.series)
        .map(|s| {
            let mut m = Metric::new(series_id(s), "fault.load", MetricType::Gauge);
            m.created_at = t0();
            m.updated_at = t0();
            m.values = (0..shape.samples)
                .map(|i| {
                    let second = n as i64 * shape.samples as i64 + i as i64;
                    MetricValue::new(at(second), expected_value(n, s, i))
                        .tag("batch", n.to_string())
                        .tag("host", format!("h{}", i % 2))
                })
                .collect();
            m
        })
        .collect();
    let alerts = (0..shape.alerts)
        .map(|j| {
            let mut a = Alert::new(
                alert_id(n, j),
                format!("batch {n}"),
                AlertSeverity::High,
                "fault",
            );
            a.start_time = at(n as i64);
            a.created_at = at(n as i64);
            a.updated_at = at(n as i64);
            a
        })
        .collect();
    let states = (0..shape.states)
        .map(|j| {
            let mut s = AgentState::new(
                format!("fault-st{n}-{j}"),
                agent_id(n, j),
                format!("batch {n}"),
            );
            s.last_heartbeat = at(n as i64);
            s.created_at = at(n as i64);
            s.updated_at = at(n as i64);
            s
        })
        .collect();
    (metrics, alerts, states)
}

/// Writes batch `n`: samples, then alerts, then agent states; `Ok` only when all three were.
pub async fn write_batch(
    store: &dyn StorageBackend,
    n: u64,
    shape: Shape,
) -> aimon_core::Result<()> {
    let (metrics, alerts, states) = batch(n, shape);
    store.save_metrics(&metrics).await?;
    store.save_alerts(&alerts).await?;
    store.save_agent_states(&states).await?;
    Ok(())
}

/// Checks that batches `0..complete` are each present exactly once, that batch `complete` is
/// absent or (if `partial_allowed`) partly present without a duplicate or a wrong value, and
/// that nothing after it exists; the store's `stats` counts must agree with what was read.
pub async fn verify(
    store: &dyn StorageBackend,
    shape: Shape,
    complete: u64,
    partial_allowed: bool,
) -> Result<(), String> {
    let mut problems = Vec::new();
    // (series, batch) → samples read.
    let mut counts: BTreeMap<(usize, u64), usize> = BTreeMap::new();
    let mut total_samples = 0u64;
    for s in 0..shape.series {
        let id = series_id(s);
        let metric = store
            .get_metric(&id)
            .await
            .map_err(|e| format!("get_metric({id}): {e}"))?;
        let Some(metric) = metric else {
            if complete > 0 {
                problems.push(format!("series {id} is missing"));
            }
            continue;
        };
        let mut keys = HashSet::new();
        for v in &metric.values {
            total_samples += 1;
            let key = (v.timestamp, v.tags.clone());
            if !keys.insert(key) {
                problems.push(format!(
                    "{id}: sample {} {:?} appears twice",
                    v.timestamp, v.tags
                ));
                continue;
            }
            let Some(b) = v.tags.get("batch").and_then(|b| b.parse::<u64>().ok()) else {
                problems.push(format!("{id}: a sample without a batch tag: {v:?}"));
                continue;
            };
            let second = (v.timestamp - t0()).num_seconds() - (b * shape.samples as u64) as i64;
            let in_range = (0..shape.samples as i64).contains(&second);
            let i = second.max(0) as usize;
            if !in_range
                || v.value.to_bits() != expected_value(b, s, i).to_bits()
                || v.tags.get("host") != Some(&format!("h{}", i % 2))
            {
                problems.push(format!("{id}: batch {b}: a wrong sample {v:?}"));
                continue;
            }
            *counts.entry((s, b)).or_default() += 1;
        }
    }
    for ((s, b), n) in &counts {
        let ok = if *b < complete {
            *n == shape.samples
        } else {
            *b == complete && partial_allowed && *n <= shape.samples
        };
        if !ok {
            problems.push(format!(
                "series {s}: batch {b} has {n} of {} samples (complete up to {complete}, batch {complete} {})",
                shape.samples,
                if partial_allowed { "may be partial" } else { "absent" }
            ));
        }
    }
    for s in 0..shape.series {
        for b in 0..complete {
            if !counts.contains_key(&(s, b)) {
                problems.push(format!("series {s}: acknowledged batch {b} is missing"));
            }
        }
    }
    let mut alerts = 0u64;
    let mut states = 0u64;
    for b in 0..=complete + 1 {
        let may = b == complete && partial_allowed;
        for j in 0..shape.alerts {
            let id = alert_id(b, j);
            match store
                .get_alert(&id)
                .await
                .map_err(|e| format!("get_alert: {e}"))?
            {
                Some(a) if a.name == format!("batch {b}") && (b < complete || may) => alerts += 1,
                Some(a) => problems.push(format!("alert {id} should not exist: {a:?}")),
                None if b < complete => problems.push(format!("alert {id} is missing")),
                None => {}
            }
        }
        for j in 0..shape.states {
            let id = agent_id(b, j);
            match store
                .get_agent_state(&id)
                .await
                .map_err(|e| format!("get_agent_state: {e}"))?
            {
                Some(s) if s.status == format!("batch {b}") && (b < complete || may) => states += 1,
                Some(s) => problems.push(format!("agent state of {id} should not exist: {s:?}")),
                None if b < complete => problems.push(format!("agent state of {id} is missing")),
                None => {}
            }
        }
    }
    let stats = store.stats().await.map_err(|e| format!("stats: {e}"))?;
    if (stats.samples, stats.alerts, stats.agent_states) != (total_samples, alerts, states) {
        problems.push(format!(
            "stats count {} samples, {} alerts, {} agent states; reads found {total_samples}, {alerts}, {states}",
            stats.samples, stats.alerts, stats.agent_states
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        problems.truncate(20);
        Err(problems.join("\n"))
    }
}

// ---------------------------------------------------------------------------------------------
// Seeds, serial execution

/// A small deterministic generator (SplitMix64): the checks need reproducible choices, not
/// quality randomness.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// The seed of [`SEED_ENV`], else one from the clock; printed on stderr so a failure can be
    /// replayed.
    pub fn from_env(check: &str) -> Self {
        let seed = std::env::var(SEED_ENV)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        let _ = writeln!(
            std::io::stderr(),
            "{check}: fault seed: {seed} (replay with {SEED_ENV}={seed})"
        );
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }
}

/// Holds the fault checks of one test binary to one at a time: they kill clients, connections
/// and servers.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Scenario 1: the client killed mid-batch

/// The child side of [`client_killed_mid_batch`]: without [`WRITER_ENV`] it does nothing. With
/// it, opens the store the parent names (through `aimon_registry::open`) and writes [`SMALL`]
/// batches from `start` on, printing `fault-writer-ack <n>` after each, retrying a batch that fails
/// retryably, until killed (or 10,000 batches).
pub fn writer_child() {
    let Ok(request) = std::env::var(WRITER_ENV) else {
        return;
    };
    crate::fixtures::run_check("fault writer", async move {
        let request: serde_json::Value = serde_json::from_str(&request).expect("a JSON request");
        let config: StorageConfig =
            serde_json::from_value(request["config"].clone()).expect("a StorageConfig");
        let start = request["start"].as_u64().expect("a start batch");
        let store = aimon_registry::open(&config)
            .await
            .expect("the writer opens the store");
        let mut out = std::io::stdout();
        for n in start..start + 10_000 {
            loop {
                match write_batch(store.as_ref(), n, SMALL).await {
                    Ok(()) => break,
                    Err(e) if e.is_retryable() => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("batch {n}: {e}"),
                }
            }
            let _ = writeln!(out, "{ACK}{n}");
            let _ = out.flush();
        }
    });
}

/// Scenario 1. `writer_test` is the full name of the test that calls [`writer_child`].
pub async fn client_killed_mid_batch(fixture: &Fixture, writer_test: &str) {
    let mut rng = Rng::from_env(&format!("{}: client killed", fixture.backend()));
    let config = fixture.config(&[]);
    let mut next = 0u64;
    for round in 0..ROUNDS {
        let request = serde_json::json!({ "config": config, "start": next }).to_string();
        let wait_acks = rng.between(1, 4);
        let delay = Duration::from_millis(rng.between(0, 40));
        let exe = std::env::current_exe().expect("the test binary");
        let test = writer_test.to_owned();
        let acks = tokio::task::spawn_blocking(move || {
            run_and_kill_writer(&exe, &test, &request, wait_acks, delay)
        })
        .await
        .expect("the writer runner");
        let acks = acks.unwrap_or_else(|e| panic!("round {round}: {e}"));
        let expected: Vec<u64> = (next..next + acks.len() as u64).collect();
        assert_eq!(acks, expected, "round {round}: acknowledgements in order");
        let in_flight = next + acks.len() as u64;
        let store = open_retrying(fixture, &config).await;
        if let Err(e) = verify(store.as_ref(), SMALL, in_flight, true).await {
            panic!(
                "{}: round {round}: after the writer was killed with batches {next}..{in_flight} acknowledged:\n{e}",
                fixture.backend()
            );
        }
        write_batch(store.as_ref(), in_flight, SMALL)
            .await
            .unwrap_or_else(|e| panic!("re-sending batch {in_flight}: {e}"));
        if let Err(e) = verify(store.as_ref(), SMALL, in_flight + 1, false).await {
            panic!(
                "{}: round {round}: after re-sending batch {in_flight}:\n{e}",
                fixture.backend()
            );
        }
        let _ = store.close().await;
        next = in_flight + 1;
    }
}

/// Opens `config` again, retrying while the store is not ready yet (a restarted server, a file
/// a killed process held).
async fn open_retrying(fixture: &Fixture, config: &StorageConfig) -> Backend {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match fixture.open_config(config.clone()).await {
            Ok(store) => return store,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{}: reopening the store: {e}", fixture.backend()),
        }
    }
}

/// Runs the writer child, waits for `wait_acks` acknowledgements, sleeps `delay`, kills it with
/// `SIGKILL` and returns every batch number it acknowledged.
fn run_and_kill_writer(
    exe: &Path,
    test: &str,
    request: &str,
    wait_acks: u64,
    delay: Duration,
) -> Result<Vec<u64>, String> {
    let mut child = Command::new(exe)
        .args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WRITER_ENV, request)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the writer: {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut other = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest's own `test … ` may precede the first one on its line.
            let ack = line.find(ACK).map(|at| &line[at + ACK.len()..]);
            match ack.and_then(|n| n.trim().parse::<u64>().ok()) {
                Some(n) => {
                    let _ = tx.send(n);
                }
                None => other.push(line),
            }
        }
        other
    });
    let mut acks = Vec::new();
    let start = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut failure = None;
    while (acks.len() as u64) < wait_acks {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(n) => acks.push(n),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(Some(status)) = child.try_wait() {
                    failure = Some(format!("the writer exited early with {status}"));
                    break;
                }
                if Instant::now() > deadline {
                    failure = Some(format!("no {wait_acks} acknowledgements within 60 s"));
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                failure = Some(format!(
                    "the writer closed its output after {:?} ({:?})",
                    start.elapsed(),
                    child.try_wait()
                ));
                break;
            }
        }
    }
    std::thread::sleep(delay);
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    let other = reader.join().unwrap_or_default();
    acks.extend(rx.try_iter());
    let errors = errors.join().unwrap_or_default();
    let errors = format!("{errors}\nstdout: {}", tail(&other.join("\n")));
    match failure {
        Some(why) => Err(format!("{why}; its stderr: {}", tail(&errors))),
        None => Ok(acks),
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().rev().take(15).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join("\n")
}

// ---------------------------------------------------------------------------------------------
// Scenarios 2 and 3: a fault injected while an in-process writer runs

/// Something that breaks a running store and puts it right again.
pub trait Fault: Send {
    /// What it does, for messages (`SIGKILL redis-server and restart it`).
    fn describe(&self) -> String;
    /// Breaks the store (kills the server, cuts connections, stops the server).
    fn inject(&mut self) -> BoxFuture<'_, ()>;
    /// Puts it right (restarts or resumes the server; nothing for a cut connection).
    fn recover(&mut self) -> BoxFuture<'_, ()>;
}

/// A store to break: the configuration of a fresh namespace on a server the fault may disturb
/// (a private one: never a server other tests share) and the fault itself.
pub struct FaultTarget {
    pub backend: String,
    pub config: StorageConfig,
    pub fault: Box<dyn Fault>,
    /// Whether the store may ride through the fault with every write succeeding (a client that
    /// reconnects and resends by itself, as the Redis Cluster client does): after
    /// [`ABSORBED_CUTS`] faults without a failed write the round ends and the data is checked.
    /// Otherwise a write must fail within that many faults.
    pub may_absorb_cuts: bool,
    /// The batches the writer writes ([`LARGE`] unless a scenario needs another).
    pub shape: Shape,
    /// Keeps the private server (and its data directory) alive.
    pub guard: Box<dyn std::any::Any + Send>,
}

/// How many faults a round injects before it gives up waiting for a failed write.
pub const ABSORBED_CUTS: usize = 10;

/// Scenarios 2 and 3: an in-process writer writes [`LARGE`] batches; after a random number of
/// acknowledgements and a random delay the fault is injected (again every three batches that
/// still succeed, up to [`ABSORBED_CUTS`] times, until a write fails). The failed write must be `Unavailable`
/// or `Timeout`; after recovery a freshly opened store holds every acknowledged batch exactly
/// once and the failed one at most partly, and re-sending the failed batch through the
/// original store (which must recover by itself) makes the store exactly complete.
pub async fn disrupted_mid_batch(mut target: FaultTarget, rounds: usize) {
    let what = format!("{}: {}", target.backend, target.fault.describe());
    let mut rng = Rng::from_env(&what);
    let opener = Fixture::new(target.backend.clone(), |_| {
        unreachable!("opens given configs")
    });
    let store: Backend = open_retrying(&opener, &target.config).await;
    let shape = target.shape;
    let mut next = 0u64;
    for round in 0..rounds {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let store = store.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                for n in next..next + 100_000 {
                    if stop.load(Ordering::SeqCst) {
                        return (n, None);
                    }
                    if let Err(e) = write_batch(store.as_ref(), n, shape).await {
                        return (n, Some(e));
                    }
                    let _ = tx.send(n);
                }
                panic!("the writer was never interrupted");
            })
        };
        tokio::pin!(writer);
        let mut acks = Vec::new();
        let wait_acks = rng.between(1, 3) as usize;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut injections = 0;
        let mut since_injection = 0;
        let failed = loop {
            tokio::select! {
                ack = rx.recv() => {
                    let Some(n) = ack else { continue };
                    acks.push(n);
                    since_injection += 1;
                    let due = if injections == 0 { acks.len() >= wait_acks } else { since_injection >= 3 };
                    if due && injections >= ABSORBED_CUTS && target.may_absorb_cuts {
                        stop.store(true, Ordering::SeqCst);
                    } else if due {
                        assert!(injections < ABSORBED_CUTS, "{what}: round {round}: {ABSORBED_CUTS} injections and no write failed");
                        tokio::time::sleep(Duration::from_millis(rng.between(0, 60))).await;
                        target.fault.inject().await;
                        injections += 1;
                        since_injection = 0;
                    }
                }
                result = &mut writer => break result.expect("the writer task"),
            }
            assert!(
                Instant::now() < deadline,
                "{what}: round {round}: no failure within 120 s"
            );
        };
        let (in_flight, err) = failed;
        let err = match err {
            Some(err) => {
                assert!(
                    injections > 0,
                    "{what}: round {round}: batch {in_flight} failed before any fault: {err}"
                );
                assert!(
                    matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout)
                        && err.is_retryable(),
                    "{what}: round {round}: batch {in_flight} failed with {:?}, not a retryable kind: {err}",
                    err.kind()
                );
                err.to_string()
            }
            None => {
                let _ = writeln!(
                    std::io::stderr(),
                    "{what}: round {round}: the store absorbed {injections} cuts without a failed write"
                );
                "not written: the writer stopped".to_owned()
            }
        };
        while let Ok(n) = rx.try_recv() {
            acks.push(n);
        }
        let expected: Vec<u64> = (next..in_flight).collect();
        assert_eq!(
            acks, expected,
            "{what}: round {round}: acknowledgements in order"
        );
        target.fault.recover().await;
        let fresh = open_retrying(&opener, &target.config).await;
        if let Err(e) = verify(fresh.as_ref(), shape, in_flight, true).await {
            panic!(
                "{what}: round {round}: batches {next}..{in_flight} acknowledged, {in_flight} cut ({err}):\n{e}"
            );
        }
        // The original store recovers by itself: the retry goes through it.
        let retry_deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match write_batch(store.as_ref(), in_flight, shape).await {
                Ok(()) => break,
                Err(e) if e.is_retryable() && Instant::now() < retry_deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("{what}: round {round}: retrying batch {in_flight}: {e}"),
            }
        }
        if let Err(e) = verify(fresh.as_ref(), shape, in_flight + 1, false).await {
            panic!("{what}: round {round}: after retrying batch {in_flight}:\n{e}");
        }
        let _ = fresh.close().await;
        next = in_flight + 1;
    }
    let _ = store.close().await;
    drop(target);
}

// ---------------------------------------------------------------------------------------------
// Private servers

/// A server of the check's own, in its own temporary directory and port, that can be killed
/// with `SIGKILL` and restarted on the same data (unlike the fixtures' shared servers).
#[derive(Debug)]
pub struct PrivateServer {
    pub backend: &'static str,
    binary: PathBuf,
    args: fn(&ServerEnv) -> Vec<OsString>,
    readiness: Readiness,
    pub env: ServerEnv,
    child: Option<Child>,
    watchdog: Option<Watchdog>,
    _dir: tempfile::TempDir,
}

impl PrivateServer {
    /// Starts `binary` with `spec`'s arguments on free ports in a new temporary directory and
    /// waits (60 s at most) until `spec.readiness` says it is up. Blocking.
    pub fn start(spec: &ServerSpec, binary: &Path) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("aimon-fault-{}-", spec.backend))
            .tempdir()
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let no_port = |e: std::io::Error| format!("no free port: {e}");
        let mut server = PrivateServer {
            backend: spec.backend,
            binary: binary.to_path_buf(),
            args: spec.args,
            readiness: spec.readiness,
            env: ServerEnv {
                port: free_port().map_err(no_port)?,
                extra_ports: (0..spec.extra_ports)
                    .map(|_| free_port())
                    .collect::<std::io::Result<_>>()
                    .map_err(no_port)?,
                dir: dir.path().to_path_buf(),
            },
            child: None,
            watchdog: None,
            _dir: dir,
        };
        server.spawn()?;
        Ok(server)
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Spawns the server and waits until it is ready; a server that exits before (PostgreSQL
    /// while the killed one's backends still hold its shared memory) is started again.
    fn spawn(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.env.dir.join("server.log"))
                .map_err(|e| format!("cannot open the server log: {e}"))?;
            let log_err = log.try_clone().map_err(|e| format!("server log: {e}"))?;
            let mut child = Command::new(&self.binary)
                .args((self.args)(&self.env))
                .current_dir(&self.env.dir)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .map_err(|e| format!("cannot spawn {}: {e}", self.binary.display()))?;
            self.watchdog = Watchdog::spawn(&format!("kill -9 {} 2>/dev/null", child.id())).ok();
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                let ready = match self.readiness {
                    Readiness::TcpAccept => port_accepts(self.env.port),
                    Readiness::Probe(probe) => probe(&self.env),
                };
                if ready {
                    self.child = Some(child);
                    return Ok(());
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "{} not ready after 60 s: {}",
                        self.backend,
                        self.log_tail()
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} keeps exiting: {}",
                    self.backend,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn log_tail(&self) -> String {
        tail(&std::fs::read_to_string(self.env.dir.join("server.log")).unwrap_or_default())
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`) to the server process.
    pub fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .args([&format!("-{signal}"), &pid.to_string()])
                .status();
            assert!(status.is_ok_and(|s| s.success()), "kill -{signal} {pid}");
        }
    }

    /// `SIGKILL`s the server and reaps it. Blocking.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Its watchdog has nothing left to kill; dropping it now keeps the pid from being reused
        // under it.
        self.watchdog = None;
    }

    /// Starts the server again on the same port and data. Blocking.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn()
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.signal("CONT");
        self.kill();
    }
}

/// A [`Fault`] that `SIGKILL`s a [`PrivateServer`] and restarts it on the same data.
pub struct ServerKill(pub Arc<Mutex<PrivateServer>>);

impl Fault for ServerKill {
    fn describe(&self) -> String {
        let server = self.0.lock().unwrap_or_else(|e| e.into_inner());
        format!(
            "server {} killed with SIGKILL mid-batch and restarted",
            server.backend
        )
    }
    fn inject(&mut self) -> BoxFuture<'_, ()> {
        let server = self.0.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                server.lock().unwrap_or_else(|e| e.into_inner()).kill()
            })
            .await
            .expect("kill");
        })
    }
    fn recover(&mut self) -> BoxFuture<'_, ()> {
        let server = self.0.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                server.lock().unwrap_or_else(|e| e.into_inner()).restart()
            })
            .await
            .expect("restart")
            .expect("the server restarts on its data");
        })
    }
}

/// A [`Fault`] that stops a [`PrivateServer`] with `SIGSTOP` (its connections hang: the store
/// must time out) and resumes it with `SIGCONT`.
pub struct ServerStop(pub Arc<Mutex<PrivateServer>>);

impl Fault for ServerStop {
    fn describe(&self) -> String {
        let server = self.0.lock().unwrap_or_else(|e| e.into_inner());
        format!("server {} stopped with SIGSTOP mid-batch", server.backend)
    }
    fn inject(&mut self) -> BoxFuture<'_, ()> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .signal("STOP");
        Box::pin(async {})
    }
    fn recover(&mut self) -> BoxFuture<'_, ()> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .signal("CONT");
        Box::pin(async {})
    }
}

/// The usual skip: `AIMON_REQUIRE` naming `backend` turns it into a failure.
fn skip_target(backend: &str, reason: &str) -> Option<FaultTarget> {
    crate::fixtures::skip(backend, reason);
    None
}

/// A [`PrivateServer`] of `spec`, from its binary on `PATH`.
async fn start_private(spec: ServerSpec) -> Result<Arc<Mutex<PrivateServer>>, String> {
    let Some(path) = crate::fixtures::find_binary(spec.binary) else {
        return Err(format!(
            "no `{}` binary on PATH for a private server",
            spec.binary
        ));
    };
    tokio::task::spawn_blocking(move || PrivateServer::start(&spec, &path))
        .await
        .map_err(|e| format!("starting {}: {e}", spec.backend))?
        .map(|s| Arc::new(Mutex::new(s)))
}

// ---------------------------------------------------------------------------------------------
// Redis

/// A durable `redis-server`: every write appended to the AOF and fsynced before the reply.
#[cfg(feature = "redis")]
pub fn durable_redis_args(env: &ServerEnv) -> Vec<OsString> {
    [
        "--port",
        &env.port.to_string(),
        "--bind",
        "127.0.0.1",
        "--dir",
        &env.dir.display().to_string(),
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]
    .map(OsString::from)
    .to_vec()
}

#[cfg(feature = "redis")]
fn redis_cli_blocking(args: Vec<String>) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            crate::fixtures::redis_cli(&args)
        })
        .await
        .expect("redis-cli")
        .expect("redis-cli answers");
    })
}

/// `CLIENT KILL TYPE normal` on every node of a private Redis (standalone, Cluster or the
/// master behind a Sentinel): every client connection is cut, replication and cluster links
/// are not.
#[cfg(feature = "redis")]
pub struct RedisClientKill {
    /// `host:port` of every data node.
    pub nodes: Vec<String>,
    /// A Sentinel to ask for the current master instead (`host:port`).
    pub sentinel: Option<String>,
}

#[cfg(feature = "redis")]
impl Fault for RedisClientKill {
    fn describe(&self) -> String {
        "connections cut by CLIENT KILL TYPE normal mid-batch".to_owned()
    }
    fn inject(&mut self) -> BoxFuture<'_, ()> {
        let nodes = self.nodes.clone();
        let sentinel = self.sentinel.clone();
        Box::pin(async move {
            let mut nodes = nodes;
            if let Some(sentinel) = sentinel {
                let (host, port) = sentinel.split_once(':').expect("host:port");
                let (host, port) = (host.to_owned(), port.to_owned());
                let out = tokio::task::spawn_blocking(move || {
                    crate::fixtures::redis_cli(&[
                        "-h",
                        &host,
                        "-p",
                        &port,
                        "sentinel",
                        "get-master-addr-by-name",
                        crate::fixtures::REDIS_SENTINEL_MASTER,
                    ])
                })
                .await
                .expect("redis-cli")
                .expect("the Sentinel answers");
                nodes = vec![out.lines().collect::<Vec<_>>().join(":")];
            }
            for node in nodes {
                let (host, port) = node.split_once(':').expect("host:port");
                redis_cli_blocking(
                    ["-h", host, "-p", port, "client", "kill", "type", "normal"]
                        .map(str::to_owned)
                        .to_vec(),
                )
                .await;
            }
        })
    }
    fn recover(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// A private durable `redis-server` ([`durable_redis_args`]), its port and a store's
/// configuration in a new namespace on it.
#[cfg(feature = "redis")]
async fn private_redis() -> Result<(Arc<Mutex<PrivateServer>>, u16, StorageConfig), String> {
    let server = start_private(ServerSpec {
        args: durable_redis_args,
        ..crate::fixtures::REDIS
    })
    .await?;
    let port = server.lock().unwrap_or_else(|e| e.into_inner()).env.port;
    let namespace = crate::fixtures::unique_namespace("redis");
    let config = StorageConfig::from_url(&namespace, format!("redis://127.0.0.1:{port}/0"))
        .expect("a redis URL")
        .option("namespace", namespace.as_str());
    Ok((server, port, config))
}

/// A private durable `redis-server` ([`durable_redis_args`]) killed and restarted.
#[cfg(feature = "redis")]
pub async fn redis_server_killed() -> Option<FaultTarget> {
    let (server, _, config) = match private_redis().await {
        Ok(private) => private,
        Err(e) => return skip_target("redis", &e),
    };
    Some(FaultTarget {
        backend: "redis".into(),
        config,
        fault: Box::new(ServerKill(server.clone())),
        guard: Box::new(server),
        may_absorb_cuts: false,
        shape: LARGE,
    })
}

/// Batches of one whole hour each: with hour-long chunk windows (Redis), every write opens a
/// window and seals the one before, so a fault at a random moment often lands in a seal.
pub const SEALING: Shape = Shape {
    series: 3,
    samples: 3_600,
    alerts: 1,
    states: 1,
};

/// A private durable `redis-server` stopped by `SHUTDOWN NOSAVE` (the AOF, `appendfsync
/// always`, is all it keeps) and restarted, while [`SEALING`] batches seal windows.
#[cfg(feature = "redis")]
pub async fn redis_shut_down_while_sealing() -> Option<FaultTarget> {
    let (server, port, config) = match private_redis().await {
        Ok(private) => private,
        Err(e) => return skip_target("redis", &e),
    };
    Some(FaultTarget {
        backend: "redis".into(),
        config,
        fault: Box::new(RedisShutdown {
            restart: ServerKill(server.clone()),
            port,
        }),
        guard: Box::new(server),
        may_absorb_cuts: false,
        shape: SEALING,
    })
}

/// A [`Fault`]: `SHUTDOWN NOSAVE` of a private Redis, then a restart on its data (as
/// [`ServerKill`] restarts it).
pub struct RedisShutdown {
    restart: ServerKill,
    port: u16,
}

impl Fault for RedisShutdown {
    fn describe(&self) -> String {
        "redis-server stopped by SHUTDOWN NOSAVE while windows seal, and restarted".to_owned()
    }
    fn inject(&mut self) -> BoxFuture<'_, ()> {
        let port = self.port.to_string();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                // The server closes the connection instead of answering: no reply to check.
                let _ = crate::fixtures::redis_cli(&["-p", &port, "SHUTDOWN", "NOSAVE"]);
            })
            .await
            .expect("shutdown");
        })
    }
    fn recover(&mut self) -> BoxFuture<'_, ()> {
        self.restart.recover()
    }
}

/// `CLIENT KILL` on a private standalone `redis-server`.
#[cfg(feature = "redis")]
pub async fn redis_connection_cut() -> Option<FaultTarget> {
    let (server, port, config) = match private_redis().await {
        Ok(private) => private,
        Err(e) => return skip_target("redis", &e),
    };
    Some(FaultTarget {
        backend: "redis".into(),
        config,
        fault: Box::new(RedisClientKill {
            nodes: vec![format!("127.0.0.1:{port}")],
            sentinel: None,
        }),
        guard: Box::new(server),
        may_absorb_cuts: false,
        shape: LARGE,
    })
}

/// `CLIENT KILL` on every master of a private 3-master Cluster.
#[cfg(feature = "redis")]
pub async fn redis_cluster_connection_cut() -> Option<FaultTarget> {
    let server =
        match tokio::task::spawn_blocking(crate::fixtures::start_private_redis_cluster).await {
            Ok(Ok(server)) => server,
            Ok(Err(e)) => return skip_target("redis-cluster", &e),
            Err(e) => return skip_target("redis-cluster", &e.to_string()),
        };
    let nodes: Vec<String> = server
        .url
        .trim_start_matches("redis+cluster://")
        .split(',')
        .map(str::to_owned)
        .collect();
    let namespace = crate::fixtures::unique_namespace("redis-cluster");
    let config = StorageConfig::from_url(&namespace, server.url.clone())
        .expect("a cluster URL")
        .option("namespace", namespace.as_str());
    Some(FaultTarget {
        backend: "redis-cluster".into(),
        config,
        fault: Box::new(RedisClientKill {
            nodes,
            sentinel: None,
        }),
        guard: Box::new(server),
        may_absorb_cuts: true,
        shape: LARGE,
    })
}

/// `CLIENT KILL` on the master of a private master + replica + Sentinel set.
#[cfg(feature = "redis")]
pub async fn redis_sentinel_connection_cut() -> Option<FaultTarget> {
    let server = match tokio::task::spawn_blocking(|| {
        crate::fixtures::start_private_redis_sentinel(1)
    })
    .await
    {
        Ok(Ok(server)) => server,
        Ok(Err(e)) => return skip_target("redis-sentinel", &e),
        Err(e) => return skip_target("redis-sentinel", &e.to_string()),
    };
    let sentinel = server
        .url
        .trim_start_matches("redis+sentinel://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let namespace = crate::fixtures::unique_namespace("redis-sentinel");
    let config = StorageConfig::from_url(&namespace, server.url.clone())
        .expect("a sentinel URL")
        .option("namespace", namespace.as_str());
    Some(FaultTarget {
        backend: "redis-sentinel".into(),
        config,
        fault: Box::new(RedisClientKill {
            nodes: Vec::new(),
            sentinel: Some(sentinel),
        }),
        guard: Box::new(server),
        may_absorb_cuts: false,
        shape: LARGE,
    })
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// A private PostgreSQL cluster with the server's default durability (`fsync`, `synchronous_commit`
/// on): `initdb` on the first start only, so a restart finds the same data. As root, both run as
/// the `postgres` user.
#[cfg(feature = "postgres")]
pub fn durable_postgres_args(env: &ServerEnv) -> Vec<OsString> {
    let Some(bin) = crate::fixtures::postgres_bin_dir() else {
        return vec!["-c".into(), "echo 'no initdb' >&2; exit 1".into()];
    };
    let script = format!(
        "set -e; \
         if [ \"$(id -u)\" = 0 ]; then chown postgres \"{dir}\"; \
         run() {{ setpriv --reuid=postgres --regid=postgres --init-groups \"$@\"; }}; \
         else run() {{ \"$@\"; }}; fi; \
         if [ ! -f \"{data}/PG_VERSION\" ]; then \
           run \"{bin}/initdb\" -D \"{data}\" -U postgres --auth=trust -E UTF8 >/dev/null; fi; \
         exec $(if [ \"$(id -u)\" = 0 ]; then echo setpriv --reuid=postgres --regid=postgres --init-groups; fi) \
         \"{bin}/postgres\" -D \"{data}\" -p {port} -c listen_addresses=127.0.0.1 \
         -c unix_socket_directories= -c max_connections=40 -c shared_buffers=16MB",
        dir = env.dir.display(),
        bin = bin.display(),
        data = env.dir.join("data").display(),
        port = env.port,
    );
    vec!["-c".into(), script.into()]
}

#[cfg(feature = "postgres")]
async fn private_postgres() -> Result<(Arc<Mutex<PrivateServer>>, StorageConfig), String> {
    if crate::fixtures::postgres_bin_dir().is_none() {
        return Err("no initdb on PATH or in /usr/lib/postgresql/*/bin".to_owned());
    }
    let server = start_private(ServerSpec {
        args: durable_postgres_args,
        ..crate::fixtures::POSTGRES
    })
    .await?;
    let port = server.lock().unwrap_or_else(|e| e.into_inner()).env.port;
    let namespace = crate::fixtures::unique_namespace("postgres");
    let config = StorageConfig::from_url(
        &namespace,
        format!("postgres://postgres@127.0.0.1:{port}/postgres"),
    )
    .expect("a postgres URL")
    .option("schema", namespace.as_str());
    Ok((server, config))
}

/// A private PostgreSQL cluster killed with `SIGKILL` (the postmaster) and restarted.
#[cfg(feature = "postgres")]
pub async fn postgres_server_killed() -> Option<FaultTarget> {
    let (server, config) = match private_postgres().await {
        Ok(found) => found,
        Err(e) => return skip_target("postgres", &e),
    };
    Some(FaultTarget {
        backend: "postgres".into(),
        config,
        fault: Box::new(ServerKill(server.clone())),
        guard: Box::new(server),
        may_absorb_cuts: false,
        shape: LARGE,
    })
}

/// `pg_terminate_backend` of every client connection but the killer's own, on a private cluster.
#[cfg(feature = "postgres")]
pub struct PostgresTerminate {
    pub url: String,
}

#[cfg(feature = "postgres")]
impl Fault for PostgresTerminate {
    fn describe(&self) -> String {
        "connections cut by pg_terminate_backend mid-batch".to_owned()
    }
    fn inject(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            use sqlx::Connection as _;
            let mut conn = sqlx::PgConnection::connect(&self.url)
                .await
                .expect("connects");
            let _: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
            )
            .fetch_all(&mut conn)
            .await
            .expect("pg_terminate_backend");
            let _ = conn.close().await;
        })
    }
    fn recover(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// `pg_terminate_backend` on a private PostgreSQL cluster.
#[cfg(feature = "postgres")]
pub async fn postgres_connection_cut() -> Option<FaultTarget> {
    let (server, config) = match private_postgres().await {
        Ok(found) => found,
        Err(e) => return skip_target("postgres", &e),
    };
    let url = crate::fixtures::postgres_driver_url(&config.connection_string);
    Some(FaultTarget {
        backend: "postgres".into(),
        config,
        fault: Box::new(PostgresTerminate { url }),
        guard: Box::new(server),
        may_absorb_cuts: false,
        shape: LARGE,
    })
}

// ---------------------------------------------------------------------------------------------
// InfluxDB

#[cfg(feature = "influxdb")]
async fn private_influxdb(
    timeout_seconds: u64,
) -> Result<(Arc<Mutex<PrivateServer>>, StorageConfig), String> {
    // The fixture's configuration: WAL with `wal-fsync-delay = "0s"` (fsync before every
    // acknowledgement); a restart writes it again with the same ports and directories.
    let spec = crate::fixtures::INFLUXDB;
    let server = start_private(spec).await?;
    let port = server.lock().unwrap_or_else(|e| e.into_inner()).env.port;
    let namespace = crate::fixtures::unique_namespace("influxdb");
    let config = StorageConfig::from_url(
        &namespace,
        format!("influxdb://127.0.0.1:{port}/{namespace}"),
    )
    .expect("an influxdb URL")
    .option("timeout_seconds", timeout_seconds);
    Ok((server, config))
}

/// A private `influxd` killed with `SIGKILL` and restarted on its data and WAL.
#[cfg(feature = "influxdb")]
pub async fn influxdb_server_killed() -> Option<FaultTarget> {
    let (server, config) = match private_influxdb(30).await {
        Ok(found) => found,
        Err(e) => return skip_target("influxdb", &e),
    };
    Some(FaultTarget {
        backend: "influxdb".into(),
        config,
        fault: Box::new(ServerKill(server.clone())),
        guard: Box::new(server),
        may_absorb_cuts: false,
        shape: LARGE,
    })
}

/// A private `influxd` stopped with `SIGSTOP` (requests hang until the store's 2 s timeout) and
/// resumed.
#[cfg(feature = "influxdb")]
pub async fn influxdb_server_stopped() -> Option<FaultTarget> {
    let (server, config) = match private_influxdb(2).await {
        Ok(found) => found,
        Err(e) => return skip_target("influxdb", &e),
    };
    Some(FaultTarget {
        backend: "influxdb".into(),
        config,
        fault: Box::new(ServerStop(server.clone())),
        guard: Box::new(server),
        may_absorb_cuts: false,
        shape: LARGE,
    })
}

// ---------------------------------------------------------------------------------------------
// The macro

/// Expands to the fault suite of one backend in a module `$module`: the ignored
/// `writer_child` test (the child process of scenario 1), `client_killed_mid_batch` on the
/// fixture `$fixture` (an `impl Future<Output = Option<Fixture>>`, as for
/// [`conformance_suite!`](crate::conformance_suite)), and one test per `name = target` pair,
/// where `target` is an `impl Future<Output = Option<FaultTarget>>` run through
/// [`disrupted_mid_batch`] for `rounds` rounds.
///
/// ```ignore
/// aimon_integration_tests::fault_suite!(redis, fixtures::redis(),
///     server_killed_mid_batch_and_restarted = (faults::redis_server_killed(), 2),
///     connection_cut_mid_batch = (faults::redis_connection_cut(), 3));
/// ```
#[macro_export]
macro_rules! fault_suite {
    ($module:ident, $fixture:expr $(, $name:ident = ($target:expr, $rounds:expr))* $(,)?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            #[ignore = "the writer child process of client_killed_mid_batch"]
            fn writer_child() {
                $crate::faults::writer_child();
            }

            #[test]
            fn client_killed_mid_batch() {
                let _serial = $crate::faults::serial();
                $crate::fixtures::run_check("client_killed_mid_batch", async {
                    let Some(fixture) = $fixture.await else { return };
                    let writer = concat!(stringify!($module), "::writer_child");
                    $crate::faults::client_killed_mid_batch(&fixture, writer).await;
                });
            }

            $(
                #[test]
                fn $name() {
                    let _serial = $crate::faults::serial();
                    $crate::fixtures::run_check(stringify!($name), async {
                        let Some(target) = $target.await else { return };
                        $crate::faults::disrupted_mid_batch(target, $rounds).await;
                    });
                }
            )*
        }
    };
}
