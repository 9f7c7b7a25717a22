//! The dashboard in a real browser: Debian's `chromium`, headless, driven through
//! `chromedriver` (WebDriver, with the fantoccini crate), against the built `aimon serve` on a
//! SQLite store filled by `aimon demo` (20 agents × 24 h).
//!
//! Every test starts its own server and browser, on free loopback ports; Chromium resolves no
//! name but the loopback addresses (`--host-resolver-rules`) and runs with its background
//! networking off, so nothing leaves the machine. Screenshots of every page at 1280 px and 390 px
//! go to `target/dashboard-screenshots/`. Without `chromium` and `chromedriver` the tests are
//! skipped, unless `AIMON_REQUIRE` names `chromium` (as CI does), which makes that a failure.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use aimon_integration_tests::fixtures;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// Desktop and phone widths, each with a height.
const WIDTHS: [(u32, u32); 2] = [(1280, 900), (390, 844)];

/// Tokens of the servers that have some: `reader` may read, `writer` may also act.
const READ_TOKEN: &str = "read-secret-3f9a";
const WRITE_TOKEN: &str = "write-secret-81c2";

/// The WebDriver codes of the Tab and Enter keys.
const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";

/// Text that would run if a page put it in as markup.
const HOSTILE: &str =
    r#"<img src=x onerror="window.injected=1"><script>window.injected=2</script>"#;

/// One browser test at a time: each runs a server and a browser, and this machine has 2 cores.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A child process killed and reaped on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child process leading its own process group, which is killed whole on drop: chromedriver
/// and the Chromium processes it starts, whatever way the test ends.
struct ProcessGroup(Child);

impl ProcessGroup {
    fn spawn(command: &mut Command) -> ProcessGroup {
        use std::os::unix::process::CommandExt;
        ProcessGroup(
            command
                .process_group(0)
                .spawn()
                .expect("the process starts"),
        )
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The demo's store, written once per test binary; each server serves a copy of it.
fn demo_store() -> &'static Path {
    static STORE: OnceLock<PathBuf> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("aimon-dashboard-demo")
            .tempdir()
            .unwrap()
            .keep();
        let out = Command::new(env!("CARGO_BIN_EXE_aimon"))
            .args(["--storage", "sqlite://./aimon.db", "demo"])
            .current_dir(&dir)
            .env_remove("AIMON_STORAGE")
            .env_remove("AIMON_CONFIG")
            .output()
            .expect("aimon demo runs");
        assert!(
            out.status.success(),
            "aimon demo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// `aimon serve` on a copy of the demo's store.
struct Served {
    address: String,
    dir: tempfile::TempDir,
    tokens: bool,
    process: Option<Process>,
}

impl Served {
    fn start(tokens: bool) -> Served {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(demo_store()).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
        let port = fixtures::free_port().unwrap();
        let mut served = Served {
            address: format!("127.0.0.1:{port}"),
            dir,
            tokens,
            process: None,
        };
        served.restart();
        served
    }

    /// Starts the server (again) on its port, and waits until it listens.
    fn restart(&mut self) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_aimon"));
        command
            .args(["--storage", "sqlite://./aimon.db", "serve", "--listen"])
            .arg(&self.address)
            .current_dir(self.dir.path())
            .env_remove("AIMON_STORAGE")
            .env_remove("AIMON_CONFIG")
            .env_remove("AIMON_TOKENS")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if self.tokens {
            command.env(
                "AIMON_TOKENS",
                format!("reader:read:{READ_TOKEN},writer:write:{WRITE_TOKEN}"),
            );
        }
        let mut child = command.spawn().expect("aimon serve starts");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert!(
            line.contains("listening on"),
            "aimon serve printed {line:?}"
        );
        self.process = Some(Process(child));
    }

    fn stop(&mut self) {
        self.process = None;
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// The JSON answer of `GET path` (with the write token where the server has tokens).
    async fn get(&self, path: &str) -> Value {
        let mut request = reqwest::Client::new().get(self.url(path));
        if self.tokens {
            request = request.bearer_auth(WRITE_TOKEN);
        }
        let response = request.send().await.expect("the server answers");
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    /// `POST path` with a JSON body, which must succeed.
    async fn post(&self, path: &str, body: Value) {
        let mut request = reqwest::Client::new().post(self.url(path)).json(&body);
        if self.tokens {
            request = request.bearer_auth(WRITE_TOKEN);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status();
        assert!(
            status.is_success(),
            "POST {path}: {status} {}",
            response.text().await.unwrap()
        );
    }
}

/// A headless Chromium through its own `chromedriver`.
struct Browser {
    client: Client,
    _driver: ProcessGroup,
    /// Chromium's profile, removed after the driver's processes are gone.
    _profile: tempfile::TempDir,
}

/// Reads the browser's console (`goog:loggingPrefs`), which the W3C protocol has no command for.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

impl Browser {
    /// A browser of `width` × `height`, or `None` (a reported skip) without Chromium.
    async fn open(width: u32, height: u32) -> Option<Browser> {
        let (Some(chromium), Some(driver)) = (
            fixtures::find_binary("chromium"),
            fixtures::find_binary("chromedriver"),
        ) else {
            fixtures::skip(
                "chromium",
                "no `chromium` and `chromedriver` on PATH (Debian: apt-get install chromium chromium-driver)",
            );
            return None;
        };
        let port = fixtures::free_port().unwrap();
        let profile = tempfile::tempdir().unwrap();
        let driver = ProcessGroup::spawn(
            Command::new(driver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !fixtures::port_accepts(port) {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let capabilities = json!({
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--disable-default-apps", "--no-pings",
                    "--disable-domain-reliability", "--disable-client-side-phishing-detection",
                    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
                    // Nothing but loopback: every other name fails to resolve.
                    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
                ],
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        client.set_window_size(width, height).await.unwrap();
        Some(Browser {
            client,
            _driver: driver,
            _profile: profile,
        })
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// A fresh load of `url` (not a hash change inside the loaded page).
    async fn load(&self, url: &str) {
        self.goto("about:blank").await;
        self.goto(url).await;
    }

    /// Loads the current URL again.
    async fn reload(&self) {
        let url = self.client.current_url().await.unwrap();
        self.load(url.as_str()).await;
    }

    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Polls `script` (an expression) until it is truthy; panics after `seconds`, naming `what`.
    async fn until(&self, what: &str, seconds: u64, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let value = self.js(&format!("return {script};")).await;
            if !(value.is_null() || value == false || value == "" || value == 0) {
                return value;
            }
            if Instant::now() > deadline {
                let state = self
                    .js("return document.body && document.body.dataset.state")
                    .await;
                let error = self
                    .js("const e = document.querySelector('[data-testid=error]'); return e && e.textContent")
                    .await;
                let console = self.console().await;
                let done = self
                    .js("return performance.getEntriesByType('resource').map(r => r.name + ' ' + Math.round(r.duration))")
                    .await;
                let url = self.client.current_url().await.map(|u| u.to_string());
                panic!(
                    "{what}: not within {seconds} s (page {url:?}, state {state}, error {error}, console {console:#?}, requests done {done:#})"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn ready(&self, what: &str) {
        self.until(what, 30, "document.body.dataset.state === 'ready'")
            .await;
    }

    /// The console's entries since the last call, as `level: message`.
    async fn console(&self) -> Vec<(String, String, String)> {
        let log = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .expect("chromedriver's browser log");
        log.as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                (text("level"), text("source"), text("message"))
            })
            .collect()
    }

    /// Fails on any error the page logged, after checking the log reaches the test at all.
    async fn assert_no_console_errors(&self, page: &str) {
        let errors: Vec<_> = self
            .console()
            .await
            .into_iter()
            .filter(|(level, ..)| level == "SEVERE")
            .collect();
        assert!(errors.is_empty(), "{page}: console errors {errors:#?}");
    }

    async fn click(&self, css: &str) {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../dashboard-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// A number as a cell shows it (`$1,234.56`, `1,084 ms`, `12.5 s`, `1.07 %`, `5`) and its unit;
/// `None` for compact forms (`26.7M`), which round too much to compare.
fn shown_number(text: &str) -> Option<(f64, &'static str)> {
    let text = text.trim();
    let (number, unit) = if let Some(n) = text.strip_suffix(" ms") {
        (n, "ms")
    } else if let Some(n) = text.strip_suffix(" s") {
        (n, "s")
    } else if let Some(n) = text.strip_suffix(" %") {
        (n, "%")
    } else if let Some(n) = text.strip_prefix('$') {
        (n, "$")
    } else {
        (text, "")
    };
    number.replace(',', "").parse().ok().map(|n| (n, unit))
}

/// The demo's last 24 hours as the dashboard's custom range (whole seconds, so the hash and
/// the API's parameters name the same instants).
fn demo_range() -> (String, String) {
    let end = chrono::Utc::now().with_timezone(&chrono::Utc);
    let end = end - chrono::TimeDelta::nanoseconds(i64::from(end.timestamp_subsec_nanos()));
    let start = end - chrono::TimeDelta::hours(24);
    let f = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    (f(start), f(end))
}

fn run(name: &str, check: impl std::future::Future<Output = ()>) {
    let _one = one_at_a_time();
    fixtures::run_check(name, check);
}

/// Every page at both widths: loads without a console error, draws its charts, does not
/// overflow the phone's width, and leaves a screenshot. Prints how long the overview took from
/// navigation to its last chart drawn, its data requests, and the page weight. The pages load
/// one after another in one tab: a page left behind that kept its event stream open would hold
/// one of the browser's six connections to the server, and the sixth page would never load.
#[test]
fn every_page_renders_without_console_errors_at_both_widths() {
    run("every_page_renders", async {
        let served = Served::start(false);
        let pages = [
            ("fleet", "/#/"),
            ("agent", "/#/agent/agent-03"),
            (
                "explorer",
                "/#/explorer?metric=llm.latency_ms&agg=avg&group_by=model",
            ),
            ("alerts", "/#/alerts"),
        ];
        for (width, height) in WIDTHS {
            let Some(browser) = Browser::open(width, height).await else {
                return;
            };
            // The console reaches the test: a probe error shows, then the log is clear.
            browser.goto(&served.url("/")).await;
            browser.js("console.error('probe'); return 1;").await;
            let probe = browser.console().await;
            assert!(
                probe
                    .iter()
                    .any(|(l, _, m)| l == "SEVERE" && m.contains("probe")),
                "the console log does not reach the test: {probe:?}"
            );
            for (name, path) in pages {
                browser.load(&served.url(path)).await;
                browser.ready(&format!("{name} at {width} px")).await;
                let charts = browser
                    .js("return [...document.querySelectorAll('[data-testid=chart]')].map(c => +c.dataset.points)")
                    .await;
                let charts = charts.as_array().unwrap();
                if name != "alerts" {
                    assert!(!charts.is_empty(), "{name}: no chart");
                    assert!(
                        charts.iter().all(|p| p.as_f64().unwrap() > 0.0),
                        "{name}: a chart without points: {charts:?}"
                    );
                }
                let overflow = browser
                    .js("return document.documentElement.scrollWidth - window.innerWidth")
                    .await;
                assert!(
                    overflow.as_i64().unwrap() <= 0,
                    "{name} overflows {width} px by {overflow} px"
                );
                browser.assert_no_console_errors(name).await;
                browser.screenshot(&format!("{name}-{width}")).await;
            }
            if width == 1280 {
                // A fresh load of the overview: navigation start to the last chart drawn.
                browser.load(&served.url("/")).await;
                browser.ready("the overview").await;
                let timing = browser
                    .js(r#"
                        const ready = performance.getEntriesByName('aimon:ready')[0].startTime;
                        const resources = performance.getEntriesByType('resource');
                        const nav = performance.getEntriesByType('navigation')[0];
                        const api = resources.filter(r => r.name.includes('/api/v1/') && !r.name.includes('/events'));
                        const assets = resources.filter(r => r.name.includes('/ui/'));
                        return {
                            ready,
                            requests: api.map(r => [new URL(r.name).pathname, r.responseEnd - r.requestStart]),
                            weight: nav.encodedBodySize + assets.reduce((s, r) => s + r.encodedBodySize, 0),
                            raw: nav.decodedBodySize + assets.reduce((s, r) => s + r.decodedBodySize, 0),
                        };"#)
                    .await;
                let weight = timing["weight"].as_f64().unwrap();
                println!(
                    "overview of the demo fleet: rendered in {:.0} ms after navigation; page weight {:.1} KB compressed ({:.1} KB raw); data requests (ms): {}",
                    timing["ready"].as_f64().unwrap(),
                    weight / 1024.0,
                    timing["raw"].as_f64().unwrap() / 1024.0,
                    timing["requests"]
                );
                assert!(weight > 0.0, "the page weight was not measured: {timing}");
                assert!(
                    weight <= 300.0 * 1024.0,
                    "page weight {weight} bytes compressed, over the 300 KB budget"
                );
            }
            browser.close().await;
        }
    });
}

/// The fleet table shows, for every agent and every figure, the number the API answers for the
/// same range; the tag filter keeps only the agents with that tag.
#[test]
fn the_fleet_table_shows_what_the_api_answers() {
    run("the_fleet_table_shows_what_the_api_answers", async {
        let served = Served::start(false);
        let Some(browser) = Browser::open(1280, 900).await else {
            return;
        };
        let (start, end) = demo_range();
        let query = format!("range=custom&start={start}&end={end}");
        browser.goto(&served.url(&format!("/#/?{query}"))).await;
        browser.ready("the fleet").await;
        let api = served
            .get(&format!("/api/v1/fleet?start={start}&end={end}"))
            .await;
        let shown = browser
            .js(r#"return [...document.querySelectorAll('[data-testid=fleet-table] tr[data-agent]')].map(tr =>
                [tr.dataset.agent, Object.fromEntries([...tr.querySelectorAll('[data-field]')].map(td => [td.dataset.field, td.dataset.value]))]
                .concat([Object.fromEntries([...tr.querySelectorAll('[data-field]')].map(td => [td.dataset.field, td.textContent.trim()]))]))"#)
            .await;
        let shown = shown.as_array().unwrap();
        let agents = api["agents"].as_array().unwrap();
        assert_eq!(shown.len(), agents.len(), "rows: {shown:?}");
        assert_eq!(agents.len(), 20);
        let (mut compared, mut read) = (0, 0);
        for agent in agents {
            let id = agent["agent_id"].as_str().unwrap();
            let row = shown
                .iter()
                .find(|r| r[0] == id)
                .unwrap_or_else(|| panic!("no row for {id}"));
            for field in [
                "tokens",
                "cost_usd",
                "latency_avg_ms",
                "latency_p95_ms",
                "error_rate",
                "open_alerts",
            ] {
                let cell = row[1][field]
                    .as_str()
                    .unwrap_or_else(|| panic!("{id}: no {field} cell"));
                let expected = agent[field].as_f64().unwrap();
                let got: f64 = cell
                    .parse()
                    .unwrap_or_else(|_| panic!("{id} {field}: {cell:?}"));
                assert!(
                    (got - expected).abs() <= expected.abs() * 1e-12,
                    "{id} {field}: page {got}, API {expected}"
                );
                // And the text people read says the same, in the column's unit.
                let text = row[2][field].as_str().unwrap();
                if let Some((shown, unit)) = shown_number(text) {
                    let expected = match unit {
                        "%" => expected * 100.0,
                        "s" => expected / 1000.0,
                        _ => expected,
                    };
                    let tolerance = if text.contains('.') { 0.006 } else { 0.51 };
                    assert!(
                        (shown - expected).abs() <= tolerance,
                        "{id} {field}: shown {text:?}, API {expected}"
                    );
                    read += 1;
                }
                compared += 1;
            }
        }
        assert_eq!(compared, 20 * 6);
        assert!(read >= 20 * 5, "only {read} cells' text compared");
        let totals = browser
            .js("const t = document.querySelector('[data-testid=fleet-totals] [data-field=cost_usd]'); return t && t.dataset.value")
            .await;
        let total: f64 = totals.as_str().unwrap().parse().unwrap();
        let expected = api["totals"]["cost_usd"].as_f64().unwrap();
        assert!(
            (total - expected).abs() <= expected * 1e-12,
            "{total} vs {expected}"
        );

        // The tag filter: only the agents of one model.
        let model = agents[0]["tags"]["model"].as_str().unwrap().to_owned();
        let filtered = served
            .get(&format!(
                "/api/v1/fleet?start={start}&end={end}&tag=model={model}"
            ))
            .await;
        let expected = filtered["agents"].as_array().unwrap().len();
        assert!(expected < 20, "{model} is every agent's model");
        browser
            .load(&served.url(&format!("/#/?{query}&tag=model%3D{model}")))
            .await;
        browser.ready("the filtered fleet").await;
        let rows = browser
            .js("return document.querySelectorAll('[data-testid=fleet-table] tr[data-agent]').length")
            .await;
        assert_eq!(rows.as_u64().unwrap() as usize, expected);
        browser.assert_no_console_errors("fleet").await;
        browser.close().await;
    });
}

/// The explorer's bucket table holds, bucket for bucket, what `/api/v1/history` answers for
/// the same metric, aggregation, grouping, step and range.
#[test]
fn the_explorer_shows_the_buckets_the_api_answers() {
    run("the_explorer_shows_the_buckets_the_api_answers", async {
        let served = Served::start(false);
        let Some(browser) = Browser::open(1280, 900).await else {
            return;
        };
        // A range on 5-minute boundaries, so the page asks for exactly this one.
        let now = chrono::Utc::now().timestamp();
        let end = chrono::DateTime::from_timestamp(now - now % 300, 0).unwrap();
        let start = end - chrono::TimeDelta::hours(6);
        let f =
            |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let (start, end) = (f(start), f(end));
        browser
            .load(&served.url(&format!(
                "/#/explorer?metric=llm.cost_usd&agg=sum&group_by=model&step=5m&range=custom&start={start}&end={end}"
            )))
            .await;
        browser.ready("the explorer").await;
        assert_eq!(
            browser
                .js("return document.querySelector('[data-testid=chart]').dataset.step")
                .await,
            "300"
        );
        let shown = browser
            .js(r#"return [...document.querySelectorAll('[data-testid=buckets] tbody tr[data-start]')].map(tr =>
                Object.fromEntries([...tr.querySelectorAll('[data-field]')].map(td => [td.dataset.field, td.dataset.value])))"#)
            .await;
        let shown = shown.as_array().unwrap();
        let api = served
            .get(&format!(
                "/api/v1/history?name=llm.cost_usd&aggregation=sum&group_by=model&step=5m&start={start}&end={end}"
            ))
            .await;
        let mut expected = Vec::new();
        for series in api.as_array().unwrap() {
            for bucket in series["buckets"].as_array().unwrap() {
                expected.push((
                    series["group"].as_str().unwrap().to_owned(),
                    bucket["start"].as_str().unwrap().to_owned(),
                    bucket["value"].as_f64().unwrap(),
                    bucket["count"].as_u64().unwrap(),
                ));
            }
        }
        assert!(expected.len() > 100, "{} buckets", expected.len());
        assert_eq!(shown.len(), expected.len());
        for (group, bucket_start, value, count) in &expected {
            let row = shown
                .iter()
                .find(|r| r["group"] == group.as_str() && r["start"] == bucket_start.as_str())
                .unwrap_or_else(|| panic!("no row for {group} at {bucket_start}"));
            let got: f64 = row["value"].as_str().unwrap().parse().unwrap();
            assert!(
                (got - value).abs() <= value.abs() * 1e-12,
                "{group} {bucket_start}: {got} vs {value}"
            );
            assert_eq!(row["count"], count.to_string());
        }
        browser.assert_no_console_errors("explorer").await;
        browser.close().await;
    });
}

/// The keyboard alone: the first Tab reaches the skip link; Enter on a column's sort button
/// sorts the fleet by it (the biggest cost first); Enter on an agent's link opens its page.
#[test]
fn the_fleet_works_from_the_keyboard() {
    run("the_fleet_works_from_the_keyboard", async {
        let served = Served::start(false);
        let Some(browser) = Browser::open(1280, 900).await else {
            return;
        };
        browser.load(&served.url("/#/")).await;
        browser.ready("the fleet").await;
        let key = |k: &'static str| {
            let browser = &browser;
            async move {
                let focused = browser.client.active_element().await.unwrap();
                focused.send_keys(k).await.unwrap();
            }
        };
        browser.js("document.activeElement.blur(); return 1;").await;
        key(TAB).await;
        let focused = browser.js("return document.activeElement.className").await;
        assert_eq!(focused, "skip-link");

        // Tab by Tab to the cost column's sort button.
        let mut presses = 0;
        while browser
            .js("return document.activeElement.dataset.sort !== 'cost_usd'")
            .await
            == true
        {
            presses += 1;
            assert!(
                presses < 150,
                "Tab never reaches the cost column's sort button"
            );
            key(TAB).await;
        }
        key(ENTER).await;
        let sorted = browser
            .until(
                "sorted by cost",
                10,
                "document.body.dataset.state === 'ready' && document.querySelector('[data-testid=fleet-table] th[aria-sort=descending] button[data-sort=cost_usd]') && location.hash.includes('sort=cost_usd')",
            )
            .await;
        assert_eq!(sorted, true);
        let costs = browser
            .js("return [...document.querySelectorAll('[data-testid=fleet-table] tr[data-agent] td[data-field=cost_usd]')].map(td => +td.dataset.value)")
            .await;
        let costs: Vec<f64> = serde_json::from_value(costs).unwrap();
        assert!(costs.windows(2).all(|w| w[0] >= w[1]), "{costs:?}");
        assert_eq!(
            browser
                .js("return document.activeElement.dataset.sort")
                .await,
            "cost_usd",
            "the focus stays on the button"
        );

        // On from there to the first agent's link.
        while browser
            .js("return !document.activeElement.closest('[data-testid=fleet-table] tr[data-agent]')")
            .await
            == true
        {
            presses += 1;
            assert!(presses < 300, "Tab never reaches an agent's link");
            key(TAB).await;
        }
        let first = browser
            .js("return document.activeElement.textContent")
            .await;
        key(ENTER).await;
        browser
            .until(
                "the agent's page",
                10,
                // The agent's own heading: the hash changes before the page does, and the
                // fleet page was `ready` too.
                &format!(
                    "location.hash.startsWith('#/agent/{0}') && document.body.dataset.state === 'ready' \
                     && [...document.querySelectorAll('main h1')].some(h => h.textContent.includes('{0}'))",
                    first.as_str().unwrap()
                ),
            )
            .await;
        // The page changed under the keyboard: focus moves to its content, not back to the top.
        browser
            .until(
                "focus on the agent page's content",
                5,
                "document.activeElement && document.activeElement.id === 'main'",
            )
            .await;
        browser.assert_no_console_errors("fleet and agent").await;
        browser.close().await;
    });
}

/// The range picker and the explorer's controls change what the chart draws, and the URL
/// keeps the view: a reload shows the same.
#[test]
fn the_range_picker_and_controls_change_the_chart() {
    run("the_range_picker_and_controls_change_the_chart", async {
        let served = Served::start(false);
        let Some(browser) = Browser::open(1280, 900).await else {
            return;
        };
        browser
            .goto(&served.url("/#/explorer?metric=llm.latency_ms&agg=avg"))
            .await;
        browser.ready("the explorer").await;
        let chart = "document.querySelector('[data-testid=chart]').dataset";
        let day = browser.js(&format!("return {chart}.step")).await;
        browser
            .client
            .find(Locator::Css("[data-testid=range]"))
            .await
            .unwrap()
            .select_by_value("1h")
            .await
            .unwrap();
        browser
            .until(
                "a finer step for one hour",
                10,
                &format!("document.body.dataset.state === 'ready' && {chart}.step !== {day}"),
            )
            .await;
        let hour = browser.js(&format!("return +{chart}.step")).await;
        assert!(
            hour.as_f64().unwrap() < day.as_str().unwrap().parse::<f64>().unwrap(),
            "1 h step {hour}, 24 h step {day}"
        );
        assert!(
            browser
                .js("return location.hash")
                .await
                .as_str()
                .unwrap()
                .contains("range=1h")
        );

        // Grouping by model: one series per model, in the bucket table too.
        browser
            .client
            .find(Locator::Css("[data-testid=group-by]"))
            .await
            .unwrap()
            .select_by_value("model")
            .await
            .unwrap();
        // The bucket table turns to one group per model (the models of the last hour); the
        // state alone could still be the ungrouped view's `ready`.
        let models = served
            .get("/api/v1/history?name=llm.latency_ms&start=1h&step=1h&group_by=model")
            .await;
        let models = models.as_array().unwrap().len();
        assert!(models > 1, "{models} models");
        browser
            .until(
                "one group per model",
                10,
                &format!(
                    "document.body.dataset.state === 'ready' && location.hash.includes('group_by=model') \
                     && new Set([...document.querySelectorAll('[data-testid=buckets] tbody tr')].map(r => r.cells[0].textContent)).size === {models}"
                ),
            )
            .await;
        // Reload: the URL holds the view.
        browser.reload().await;
        browser.ready("the explorer after a reload").await;
        let range = browser
            .js("return document.querySelector('[data-testid=range]').value")
            .await;
        assert_eq!(range, "1h");
        let group = browser
            .js("return document.querySelector('[data-testid=group-by]').value")
            .await;
        assert_eq!(group, "model");
        browser.assert_no_console_errors("explorer").await;
        browser.close().await;
    });
}

/// A sample written through the API shows on the open page without a reload, and the page
/// says when the server goes away and comes back by itself.
#[test]
fn live_samples_appear_and_the_page_reconnects() {
    run("live_samples_appear_and_the_page_reconnects", async {
        let mut served = Served::start(false);
        let Some(browser) = Browser::open(1280, 900).await else {
            return;
        };
        browser
            .goto(&served.url("/#/explorer?metric=llm.latency_ms&agg=max&range=1h"))
            .await;
        browser.ready("the explorer").await;
        browser
            .until(
                "the live indicator",
                10,
                "document.querySelector('[data-testid=live]').textContent.trim() === 'live'",
            )
            .await;
        browser.js("window.notReloaded = true; return 1;").await;
        let value = 987_654.0;
        served
            .post(
                "/api/v1/metrics",
                json!({"metrics": [{"id": "agent-01/llm.latency_ms", "name": "llm.latency_ms",
                    "values": [{"timestamp": chrono::Utc::now().to_rfc3339(), "value": value,
                                "tags": {"agent": "agent-01"}}]}]}),
            )
            .await;
        let written = Instant::now();
        browser
            .until(
                "the new sample on the chart",
                10,
                &format!("+document.querySelector('[data-testid=chart]').dataset.last === {value}"),
            )
            .await;
        let elapsed = written.elapsed();
        println!(
            "a sample written through the API was drawn {} ms later",
            elapsed.as_millis()
        );
        assert!(
            elapsed <= Duration::from_secs(2),
            "the sample took {elapsed:?} to show"
        );
        assert_eq!(browser.js("return window.notReloaded === true").await, true);

        // The server stops: the page says so; it starts again: the page is live again.
        served.stop();
        browser
            .until(
                "the drop shown",
                15,
                "document.querySelector('[data-testid=live]').textContent.trim() !== 'live'",
            )
            .await;
        served.restart();
        browser
            .until(
                "live again",
                30,
                "document.querySelector('[data-testid=live]').textContent.trim() === 'live'",
            )
            .await;
        assert_eq!(browser.js("return window.notReloaded === true").await, true);
        browser.close().await;
    });
}

/// With tokens: no token and a wrong token each get a clear message; a read token shows the
/// pages but cannot acknowledge (the store keeps the alert as it was); a write token
/// acknowledges and resolves, and the store has it.
#[test]
fn tokens_gate_the_pages_and_the_alert_actions() {
    run("tokens_gate_the_pages_and_the_alert_actions", async {
        let served = Served::start(true);
        let Some(browser) = Browser::open(1280, 900).await else {
            return;
        };
        let id = "agent-05/dashboard-test";
        served
            .post(
                "/api/v1/alerts",
                json!({"alerts": [{"id": id, "name": "high-latency", "severity": "high",
                    "source": "agent-05", "description": HOSTILE,
                    "labels": {"note": HOSTILE}}]}),
            )
            .await;

        browser.goto(&served.url("/#/alerts?status=active")).await;
        browser
            .until(
                "the token prompt",
                15,
                "document.body.dataset.state === 'auth'",
            )
            .await;
        browser.screenshot("token-prompt-1280").await;
        let message = browser
            .js("return document.querySelector('[data-testid=token-message]').textContent")
            .await;
        assert!(message.as_str().unwrap().contains("token"), "{message}");

        let enter = |token: &'static str| {
            let browser = &browser;
            async move {
                let input = browser
                    .client
                    .find(Locator::Css("[data-testid=token-input]"))
                    .await
                    .unwrap();
                input.clear().await.unwrap();
                input.send_keys(token).await.unwrap();
                browser.click("[data-testid=token-save]").await;
            }
        };
        enter("not-a-token").await;
        browser
            .until(
                "the wrong token refused",
                15,
                "document.body.dataset.state === 'auth' && /not accepted|wrong|invalid/i.test(document.querySelector('[data-testid=token-message]').textContent)",
            )
            .await;
        assert!(
            !browser
                .js("return document.documentElement.outerHTML")
                .await
                .as_str()
                .unwrap()
                .contains("not-a-token"),
            "the token shows in the page"
        );

        enter(READ_TOKEN).await;
        browser.ready("the alerts with a read token").await;
        let stored = browser
            .js("return sessionStorage.getItem('aimon.token')")
            .await;
        assert_eq!(stored, READ_TOKEN);
        assert_eq!(browser.js("return localStorage.length").await, 0);
        let row = format!("tr[data-alert='{id}']");
        browser.click(&row).await;
        browser.click("[data-testid=ack]").await;
        browser
            .until(
                "the missing scope explained",
                10,
                "/write/.test((document.querySelector('[data-testid=action-message]') || {}).textContent || '')",
            )
            .await;
        let alert = served.get("/api/v1/alerts/agent-05%2Fdashboard-test").await;
        assert_eq!(alert["status"], "active", "a read token changed the alert");
        // The alert's text is shown as text: its markup neither runs nor becomes elements.
        let shown = browser
            .js("return document.querySelector('main').textContent")
            .await;
        assert!(
            shown.as_str().unwrap().contains(HOSTILE),
            "the description is not shown"
        );
        assert_eq!(
            browser
                .js("return [window.injected === undefined, document.querySelectorAll('main img, main script').length]")
                .await,
            json!([true, 0])
        );

        // A write token acknowledges, then resolves.
        browser
            .js(&format!(
                "sessionStorage.setItem('aimon.token', '{WRITE_TOKEN}'); return 1;"
            ))
            .await;
        browser.reload().await;
        browser.ready("the alerts with a write token").await;
        browser.click(&row).await;
        browser.click("[data-testid=ack]").await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let alert = served.get("/api/v1/alerts/agent-05%2Fdashboard-test").await;
            if alert["status"] == "acknowledged" {
                assert_eq!(alert["acknowledged_by"], "writer");
                break;
            }
            assert!(Instant::now() < deadline, "not acknowledged: {alert}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        browser
            .until(
                "the row acknowledged",
                10,
                &format!("(document.querySelector(\"{row}\") || {{dataset: {{}}}}).dataset.status === 'acknowledged'"),
            )
            .await;
        browser.click("[data-testid=resolve]").await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let alert = served.get("/api/v1/alerts/agent-05%2Fdashboard-test").await;
            if alert["status"] == "resolved" {
                break;
            }
            assert!(Instant::now() < deadline, "not resolved: {alert}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Only the expected refusals reached the console: the 401s and the 403 above.
        let unexpected: Vec<_> = browser
            .console()
            .await
            .into_iter()
            .filter(|(level, source, message)| {
                level == "SEVERE"
                    && !(source == "network"
                        && (message.contains("401") || message.contains("403")))
            })
            .collect();
        assert!(unexpected.is_empty(), "console errors: {unexpected:#?}");
        browser.close().await;
    });
}
