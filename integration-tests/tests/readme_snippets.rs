//! The snippets of the README's "Sending data from your agents" section, run as written: the
//! first ```python block with OpenTelemetry's Python SDK, the first ```yaml block as the
//! `remote_write` part of a real Prometheus's configuration, and the `curl` line that reads the
//! history back. Each runs against an `aimon serve` server on a free loopback port in front of a
//! fresh SQLite store, with the README's address (`127.0.0.1:8428`) replaced by the server's.
//!
//! The values checked here are the ones the README's snippet records: change both together.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use aimon_integration_tests::fixtures::{self, Fixture};
use aimon_registry::StorageManager;
use aimon_server::{Server, ServerConfig};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The heading of the section the snippets come from.
const SECTION: &str = "## Sending data from your agents";

/// The server's address as the README writes it.
const README_ADDRESS: &str = "127.0.0.1:8428";

/// The README's section, from its heading to the next heading of the same level.
fn section() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).expect("the README is readable");
    let start = readme
        .find(&format!("\n{SECTION}\n"))
        .unwrap_or_else(|| panic!("README.md has no section {SECTION:?}"));
    let body = &readme[start + SECTION.len() + 2..];
    let end = body.find("\n## ").unwrap_or(body.len());
    body[..end].to_owned()
}

/// The content of the first fenced block of `language` in `text`, its last newline included.
fn block(text: &str, language: &str) -> String {
    let fence = format!("```{language}\n");
    let start = text
        .find(&fence)
        .unwrap_or_else(|| panic!("no ```{language} block in {SECTION:?}"))
        + fence.len();
    let length = text[start..]
        .find("\n```")
        .unwrap_or_else(|| panic!("the ```{language} block is not closed"));
    text[start..=start + length].to_owned()
}

/// `snippet` aimed at `address` instead of the README's. It must name the README's address:
/// otherwise it would talk to whatever listens there, not to the test's server.
fn aimed_at(snippet: &str, address: &str) -> String {
    assert!(
        snippet.contains(README_ADDRESS),
        "the snippet does not use {README_ADDRESS}:\n{snippet}"
    );
    snippet.replace(README_ADDRESS, address)
}

/// A server on a free loopback port in front of a fresh SQLite store.
struct Running {
    address: String,
    http: reqwest::Client,
    manager: Arc<StorageManager>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<aimon_core::Result<()>>>,
}

impl Running {
    async fn start(fixture: &Fixture) -> Running {
        let manager = Arc::new(StorageManager::new());
        manager
            .initialize_backend(fixture.config(&[]))
            .await
            .expect("a fresh SQLite store");
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ServerConfig::default()
        };
        let server = Server::bind(Arc::clone(&manager), config).expect("bind");
        let address = server.local_addr().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(10),
        ));
        Running {
            address,
            http: reqwest::Client::new(),
            manager,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The JSON answer of `GET path`, which must be 200.
    async fn get(&self, path: &str) -> Value {
        let url = format!("http://{}{path}", self.address);
        self.get_url(&url).await
    }

    async fn get_url(&self, url: &str) -> Value {
        let response = self.http.get(url).send().await.expect("the server answers");
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 200, "GET {url}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// Stops the server and waits until everything it accepted is stored.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("the server task").expect("a clean stop");
        }
        let _ = self.manager.close(None).await;
    }
}

/// A child process, killed and reaped when this is dropped, whatever the test's outcome; its
/// output goes to `log`, printed when it is dropped by a failing test.
struct ChildProcess {
    child: Child,
    log: PathBuf,
}

impl ChildProcess {
    fn spawn(mut command: Command, log: &Path) -> ChildProcess {
        let file = std::fs::File::create(log).unwrap();
        let child = command
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{command:?} starts: {e}"));
        ChildProcess {
            child,
            log: log.to_path_buf(),
        }
    }

    /// Waits for the process to exit, at most `limit`, and asserts that it succeeded.
    async fn succeeds_within(&mut self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "the child process ended with {status}");
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the child process still runs after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("output of the child process:\n{log}");
        }
    }
}

fn python_otel_is_installed() -> bool {
    let probe = Command::new("python3")
        .args([
            "-c",
            "import opentelemetry.sdk.metrics, opentelemetry.exporter.otlp.proto.http",
        ])
        .output();
    matches!(probe, Ok(out) if out.status.success())
}

/// The values of the samples of `metric` (a `Metric` as JSON) tagged `gen_ai.token.type=kind`;
/// each also carries the agent and model tags the snippet sets.
fn values_of(metric: &Value, kind: &str) -> Vec<f64> {
    metric["values"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["tags"]["gen_ai.token.type"] == kind)
        .map(|v| {
            assert_eq!(v["tags"]["agent"], "triage", "{v}");
            assert_eq!(v["tags"]["gen_ai.request.model"], "gpt-4o", "{v}");
            v["value"].as_f64().unwrap()
        })
        .collect()
}

/// The Python snippet delivers its token counts: `_sum` and `_count` per token type, exact, and
/// the README's `curl` of the history answers the input total.
#[test]
fn the_python_opentelemetry_snippet_delivers_its_metrics() {
    fixtures::run_check(
        "the_python_opentelemetry_snippet_delivers_its_metrics",
        async {
            if !python_otel_is_installed() {
                fixtures::skip(
                    "python-otel",
                    "python3 with opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http is not installed",
                );
                return;
            }
            let Some(fixture) = fixtures::sqlite().await else {
                return;
            };
            let section = section();
            let server = Running::start(&fixture).await;
            let dir = tempfile::tempdir().unwrap();
            let script = dir.path().join("snippet.py");
            std::fs::write(
                &script,
                aimed_at(&block(&section, "python"), &server.address),
            )
            .unwrap();
            let mut python = Command::new("python3");
            python.arg(&script).current_dir(dir.path());
            let mut python = ChildProcess::spawn(python, &dir.path().join("python.log"));
            python.succeeds_within(Duration::from_secs(60)).await;

            // Each export (the flush, then the shutdown) repeats the running totals.
            let sum = server
                .get("/api/v1/metrics/triage%2Fgen_ai.client.token.usage_sum")
                .await;
            assert_eq!(sum["name"], "gen_ai.client.token.usage_sum");
            assert_eq!(sum["type"], "histogram");
            assert_eq!(sum["unit"], "{token}");
            let input = values_of(&sum, "input");
            let output = values_of(&sum, "output");
            assert!(
                !input.is_empty() && input.iter().all(|v| *v == 1200.0),
                "{sum}"
            );
            assert!(
                !output.is_empty() && output.iter().all(|v| *v == 310.0),
                "{sum}"
            );
            let count = server
                .get("/api/v1/metrics/triage%2Fgen_ai.client.token.usage_count")
                .await;
            let counts = [values_of(&count, "input"), values_of(&count, "output")].concat();
            assert!(
                !counts.is_empty() && counts.iter().all(|v| *v == 1.0),
                "{count}"
            );

            // The README's curl line, as written but for the address.
            let curl = section
                .lines()
                .find(|l| l.starts_with("curl '"))
                .expect("a `curl '…'` line in the section");
            let url = aimed_at(curl.split('\'').nth(1).unwrap(), &server.address);
            let history = server.get_url(&url).await;
            let newest = |group: &str| {
                let series = history
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|s| s["group"] == group)
                    .unwrap_or_else(|| panic!("no group {group} in {history}"));
                series["buckets"].as_array().unwrap().last().unwrap()["value"]
                    .as_f64()
                    .unwrap()
            };
            assert_eq!((newest("input"), newest("output")), (1200.0, 310.0));
            server.stop().await;
        },
    );
}

/// Prometheus, configured with the README's `remote_write` fragment (and, in the test's own
/// part, a 1 s scrape of the server's `/metrics`), delivers what it scrapes through aimon.
#[test]
fn the_prometheus_remote_write_fragment_delivers_scraped_samples() {
    fixtures::run_check(
        "the_prometheus_remote_write_fragment_delivers_scraped_samples",
        async {
            let Some(binary) = fixtures::find_binary("prometheus") else {
                fixtures::skip(
                    "prometheus",
                    "no `prometheus` binary on PATH (Debian: apt-get install prometheus)",
                );
                return;
            };
            let Some(fixture) = fixtures::sqlite().await else {
                return;
            };
            let fragment = block(&section(), "yaml");
            let server = Running::start(&fixture).await;
            let target = &server.address;
            let config = format!(
                "global:\n  scrape_interval: 1s\n\
                 scrape_configs:\n  - job_name: aimon\n    static_configs:\n      - targets: ['{target}']\n{}",
                aimed_at(&fragment, target)
            );
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
            let port = fixtures::free_port().unwrap();
            let mut command = Command::new(binary);
            command
                .arg(format!(
                    "--config.file={}",
                    dir.path().join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"));
            let prometheus = ChildProcess::spawn(command, &dir.path().join("prometheus.log"));

            // `up{job="aimon"}` arrives as the series `aimon/up`, its labels as tags.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let up = loop {
                let found = server.get("/api/v1/metrics?name=up&tag=job%3Daimon").await;
                if let Some(up) = found
                    .as_array()
                    .and_then(|a| a.first())
                    .filter(|m| !m["values"].as_array().unwrap().is_empty())
                {
                    break up.clone();
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no remote-written sample within 60 s"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            };
            drop(prometheus);
            assert_eq!(up["id"], "aimon/up");
            for sample in up["values"].as_array().unwrap() {
                assert_eq!(sample["value"], 1.0, "{up}");
                assert_eq!(sample["tags"]["instance"], target.as_str(), "{up}");
            }
            server.stop().await;
        },
    );
}
