//! Runs the built `aimon` binary in a temporary directory.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn aimon(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aimon"))
        .args(args)
        .current_dir(dir)
        .env_remove("AIMON_STORAGE")
        .env_remove("AIMON_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("the aimon binary runs")
}

/// Runs a command that must succeed and returns its stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = aimon(dir, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "aimon {args:?} failed ({:?}): {stderr}",
        out.status.code()
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn ok_json(dir: &Path, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let stdout = ok(dir, &args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("aimon {args:?}: {e}: {stdout}"))
}

/// Runs a command that must fail with `code` and one `error: …` line on stderr; returns it.
fn fails(dir: &Path, args: &[&str], code: i32) -> String {
    let out = aimon(dir, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "aimon {args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "aimon {args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "aimon {args:?}: {stderr:?}");
    assert!(stderr.starts_with("error: "), "aimon {args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "aimon {args:?} printed to stdout");
    stderr
}

fn sqlite_available() -> bool {
    let dir = tempfile::tempdir().unwrap();
    let backends = ok_json(dir.path(), &["backends"]);
    backends
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["backend_type"] == "sqlite" && b["available"] == true)
}

fn count(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// The entry of `backend` in `aimon backends --json`.
fn listed_backend(dir: &Path, backend: &str) -> Value {
    let backends = ok_json(dir, &["backends"]);
    backends
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["backend_type"] == backend)
        .unwrap_or_else(|| panic!("{backend} is not listed: {backends}"))
        .clone()
}

#[test]
fn backends_lists_memory_and_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let memory = listed_backend(dir.path(), "memory");
    assert_eq!(memory["available"], true);
    assert!(
        sqlite_available(),
        "the CLI is built with the sqlite backend"
    );
    let table = ok(dir.path(), &["backends"]);
    assert!(
        table.contains("sqlite") && table.contains("redis"),
        "{table}"
    );
}

/// The binary under test carries the dev-dependencies' features too (the integration tests
/// enable every driver), so this shows what `backends` says, not what a plain build has: the
/// unit test `the_default_features_have_the_qdrant_server_mode` checks that.
#[test]
fn backends_lists_the_qdrant_server_mode() {
    let dir = tempfile::tempdir().unwrap();
    let qdrant = listed_backend(dir.path(), "qdrant");
    assert_eq!(qdrant["available"], true, "{qdrant}");
    let schemes = qdrant["schemes"].as_array().unwrap();
    assert!(schemes.iter().any(|s| s == "qdrant"), "{qdrant}");
}

#[test]
fn a_qdrant_server_that_is_not_there_fails_fast_as_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = format!(
        "qdrant://127.0.0.1:{}?api_key=Zq7s3cretPw",
        aimon_integration_tests::fixtures::free_port().unwrap()
    );
    for command in [vec!["demo"], vec!["stats"]] {
        let mut args = vec!["--storage", url.as_str()];
        args.extend(command.iter().copied());
        let started = std::time::Instant::now();
        let err = fails(d, &args, 1);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{command:?} took {:?}",
            started.elapsed()
        );
        // The typed kind, the backend's operation and the server it could not reach.
        assert!(err.contains("connect on "), "{err}");
        assert!(err.contains(": unavailable: qdrant: "), "{err}");
        assert!(
            err.contains("Failed to connect to http://127.0.0.1:"),
            "{err}"
        );
        assert!(!err.contains("Zq7s3cretPw"), "{err}");
        assert!(!err.contains("MetadataMap"), "{err}");
    }
}

#[test]
fn the_stats_table_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A long path: SQLite reports it among its extra figures.
    let deep = d.join("a-directory-with-a-long-name/".repeat(6));
    std::fs::create_dir_all(&deep).unwrap();
    let sqlite = format!("sqlite://{}", deep.join("fleet.db").display());
    ok(
        d,
        &[
            "--storage",
            &sqlite,
            "demo",
            "--agents",
            "2",
            "--hours",
            "1",
        ],
    );
    for store in ["memory://", sqlite.as_str()] {
        let table = ok(d, &["--storage", store, "stats"]);
        for line in table.lines() {
            assert!(
                line.chars().count() <= 120,
                "{store}: {} columns: {line}\n{table}",
                line.chars().count()
            );
        }
        assert!(table.contains("agent states"), "{table}");
        assert!(table.contains("bytes/sample"), "{table}");
    }
    let table = ok(d, &["--storage", &sqlite, "stats"]);
    // The extras are rows (key, value), the path wrapped over several lines, not one wide cell.
    for key in ["file_size_bytes", "journal_mode", "path"] {
        assert!(table.contains(key), "{key}: {table}");
    }
    assert!(!table.contains("file_size_bytes="), "{table}");
    // `--json` keeps its shape: `extra` is the backend's own object.
    let stats = ok_json(d, &["--storage", &sqlite, "stats"]);
    let extra = stats[0]["extra"].as_object().expect("extra is an object");
    assert!(extra["file_size_bytes"].as_u64().unwrap() > 0, "{extra:?}");
    assert_eq!(
        extra["path"].as_str().unwrap(),
        deep.join("fleet.db").display().to_string()
    );
    assert_eq!(count(&stats[0], "samples"), 2 * 360 * 6);
    // The size (page_count × page_size, WAL pages included) and what a sample costs in it.
    let size = stats[0]["size_bytes"]
        .as_u64()
        .expect("SQLite reports its size");
    assert_eq!(size % extra["page_size"].as_u64().unwrap(), 0, "{stats}");
    assert_eq!(
        stats[0]["bytes_per_sample"].as_f64().unwrap(),
        size as f64 / (2 * 360 * 6) as f64
    );
    // A backend that cannot tell says so: null, not 0.
    let memory = ok_json(d, &["--storage", "memory://", "stats"]);
    assert!(memory[0]["size_bytes"].is_null(), "{memory}");
    assert!(memory[0]["bytes_per_sample"].is_null(), "{memory}");
}

/// The demo prints what a sample costs in the store after its writes, next to the rate.
#[test]
fn the_demo_reports_bytes_per_sample() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sqlite = format!("sqlite://{}", d.join("fleet.db").display());
    let demo = [
        "--storage",
        sqlite.as_str(),
        "demo",
        "--agents",
        "2",
        "--hours",
        "1",
    ];
    let summary = ok_json(d, &demo);
    let store = &summary["store"];
    assert_eq!(count(store, "samples"), 2 * 360 * 6, "{store}");
    let size = store["size_bytes"].as_u64().unwrap();
    assert_eq!(
        store["bytes_per_sample"].as_f64().unwrap(),
        size as f64 / (2 * 360 * 6) as f64
    );
    // The same figure `stats` gives, read right after the writes.
    let stats = ok_json(d, &["--storage", &sqlite, "stats"]);
    assert_eq!(stats[0]["size_bytes"], size);
    let text = ok(d, &[&demo[..], &["--quiet"]].concat());
    let line = text
        .lines()
        .find(|l| l.starts_with("Store: "))
        .unwrap_or_else(|| panic!("no store line: {text}"));
    assert!(line.contains("bytes/sample"), "{line}");
    // The whole store: both runs' samples.
    assert!(line.contains("8,640 samples"), "{line}");
    let text = ok(
        d,
        &[
            "--storage",
            "memory://",
            "demo",
            "--agents",
            "2",
            "--hours",
            "1",
            "--quiet",
        ],
    );
    assert!(
        text.contains("Store size: not reported by the memory backend"),
        "{text}"
    );
}

#[test]
fn demo_against_memory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let summary = ok_json(
        d,
        &[
            "--storage",
            "memory://",
            "demo",
            "--agents",
            "3",
            "--hours",
            "1",
        ],
    );
    assert_eq!(count(&summary, "samples_written"), 3 * 360 * 6);
    assert!(summary["samples_per_second"].as_f64().unwrap() > 0.0);
    let fleet = summary["fleet"].as_array().unwrap();
    assert_eq!(fleet.len(), 3);
    for agent in fleet {
        assert!(agent["last_heartbeat"].is_string(), "{agent}");
        assert!(agent["avg_latency_ms"].as_f64().unwrap() > 0.0, "{agent}");
    }
    // Half-hour buckets of a one-hour window: two or three of them.
    let history = summary["latency_history"].as_array().unwrap();
    assert!((2..=3).contains(&history.len()), "{history:?}");

    // The table form shows the fleet, the alerts and the chart.
    let text = ok(
        d,
        &[
            "--storage",
            "memory://",
            "demo",
            "--agents",
            "3",
            "--hours",
            "1",
            "--quiet",
        ],
    );
    assert!(text.contains("samples/s"), "{text}");
    assert!(text.contains("agent-03"), "{text}");
    assert!(text.contains("Fleet average latency"), "{text}");
}

/// A second demo run into the same store shows what the first showed: every read of the summary
/// is restricted to its own run.
/// The default build opens `timescale://` (issue 17): `backends` says so, and the demo, `stats`
/// and a native backup restored into a second store run against a TimescaleDB server (the
/// fixture's own cluster preloading the extension, or `AIMON_TEST_TIMESCALE_URL`).
#[test]
fn the_demo_runs_against_timescaledb() {
    use aimon_integration_tests::fixtures;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let timescale = listed_backend(d, "timescale");
    assert_eq!(timescale["available"], true, "{timescale}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Held to the end: the fixture drops the schemas of the configs it made when it goes.
    let Some(fixture) = runtime.block_on(fixtures::timescale()) else {
        return;
    };
    let url_of = |config: &aimon::StorageConfig| {
        let schema = config.options["schema"].as_str().unwrap();
        let url = &config.connection_string;
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}schema={schema}")
    };
    let url = url_of(&fixture.config(&[]));
    let summary = ok_json(
        d,
        &[
            "--storage",
            &url,
            "demo",
            "--agents",
            "3",
            "--hours",
            "1",
            "--quiet",
        ],
    );
    assert_eq!(count(&summary, "samples_written"), 3 * 360 * 6);
    assert_eq!(summary["fleet"].as_array().unwrap().len(), 3);
    let history = summary["latency_history"].as_array().unwrap();
    assert!((2..=3).contains(&history.len()), "{history:?}");
    let stats = ok_json(d, &["--storage", &url, "stats"]);
    assert_eq!(stats[0]["backend_type"], "timescale", "{stats}");
    assert_eq!(stats[0]["extra"]["mode"], "timescaledb", "{stats}");
    assert_eq!(count(&stats[0], "samples"), 3 * 360 * 6);
    // The schema's relations with the hypertable's chunks: the same figure the demo printed.
    let size = stats[0]["size_bytes"].as_u64().unwrap();
    assert_eq!(stats[0]["extra"]["total_size_bytes"], size, "{stats}");
    assert_eq!(summary["store"]["size_bytes"], size, "{summary}");

    let backup = d.join("native");
    let backup = backup.to_str().unwrap();
    ok_json(
        d,
        &["--storage", &url, "backup", "--native", backup, "--quiet"],
    );
    let copy = url_of(&fixture.config(&[]));
    let restored = ok_json(
        d,
        &["--storage", &copy, "restore", "--native", backup, "--quiet"],
    );
    assert_eq!(count(&restored, "samples"), 3 * 360 * 6, "{restored}");
    let copied = ok_json(d, &["--storage", &copy, "stats"]);
    for key in ["series", "samples", "alerts", "agent_states"] {
        assert_eq!(copied[0][key], stats[0][key], "{key}");
    }
}

#[test]
fn the_demo_runs_again_into_the_same_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = format!("sqlite://{}", d.join("aimon.db").display());
    // The same window both times, so the same seed simulates the same values: noon UTC
    // yesterday (the load follows the time of day; at noon this fleet ends with open alerts).
    let end = format!(
        "{}T12:00:00Z",
        (chrono::Utc::now() - chrono::TimeDelta::days(1)).date_naive()
    );
    let demo = |extra: &[&str]| {
        let mut args = vec![
            "--storage",
            url.as_str(),
            "demo",
            "--agents",
            "20",
            "--hours",
            "2",
            "--end",
            end.as_str(),
        ];
        args.extend_from_slice(extra);
        ok_json(d, &args)
    };
    let first = demo(&[]);
    let second = demo(&[]);
    let (run1, run2) = (
        first["run"].as_str().unwrap(),
        second["run"].as_str().unwrap(),
    );
    assert_ne!(run1, run2);

    for key in [
        "samples_written",
        "agents",
        "series",
        "alert_writes",
        "agent_state_updates",
    ] {
        assert_eq!(first[key], second[key], "{key}");
    }
    assert_eq!(count(&second, "samples_written"), 20 * 2 * 360 * 6);
    // Per agent: tokens, cost, latency, status and open alerts of the run alone.
    assert_eq!(first["fleet"], second["fleet"]);
    assert_eq!(first["latency_history"], second["latency_history"]);
    let open = |summary: &Value| summary["open_alerts"].as_array().unwrap().clone();
    assert_eq!(open(&first).len(), open(&second).len());
    assert!(!open(&second).is_empty(), "the fleet ends with open alerts");
    for (a, b) in open(&first).iter().zip(&open(&second)) {
        assert_eq!(b["labels"]["run"], run2, "{b}");
        assert!(
            b["id"].as_str().unwrap().starts_with(&format!("{run2}/")),
            "{b}"
        );
        assert_eq!(a["name"], b["name"]);
        assert_eq!(a["source"], b["source"]);
    }
    // SQLite answers similarity: the most severe open alert comes with resolved alerts like it.
    let past = &second["similar_past_alerts"];
    assert_eq!(past["alert_id"], open(&second)[0]["id"], "{past}");
    let similar = past["similar"].as_array().unwrap();
    assert!(!similar.is_empty(), "{past}");
    for row in similar {
        assert_eq!(row["alert"]["status"], "resolved", "{row}");
        assert_ne!(row["alert"]["id"], past["alert_id"]);
    }
    let scores: Vec<f64> = similar
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");

    // The store holds both runs; each is found by its tag and label.
    let stats = ok_json(d, &["--storage", &url, "stats"]);
    assert_eq!(
        count(&stats[0], "samples"),
        2 * count(&first, "samples_written")
    );
    let tag = format!("run={run1}");
    let alerts = ok_json(
        d,
        &[
            "--storage",
            &url,
            "query",
            "alerts",
            "--label",
            &tag,
            "--limit",
            "10000",
        ],
    );
    assert!(
        alerts
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["labels"]["run"] == run1)
    );
    // The latest state of every agent is the newest run's.
    let agents = ok_json(d, &["--storage", &url, "query", "agents"]);
    assert!(
        agents
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["metadata"]["run"] == run2),
        "{agents}"
    );

    // A named run is fine once, not twice.
    let named = demo(&["--run", "mine"]);
    assert_eq!(named["run"], "mine");
    assert_eq!(named["fleet"], first["fleet"]);
    let err = fails(
        d,
        &[
            "--storage",
            &url,
            "demo",
            "--agents",
            "1",
            "--hours",
            "1",
            "--run",
            "mine",
        ],
        1,
    );
    assert!(err.contains("already holds demo run"), "{err}");
}

#[test]
fn every_command_runs_against_memory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = ["--storage", "memory://"];
    let with =
        |rest: &[&str]| -> Vec<String> { m.iter().chain(rest).map(|s| s.to_string()).collect() };
    let run = |rest: &[&str]| {
        let args = with(rest);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(d, &args)
    };
    run(&[
        "query",
        "metrics",
        "--name",
        "llm.latency_ms",
        "--since",
        "6h",
    ]);
    run(&[
        "query",
        "alerts",
        "--min-severity",
        "high",
        "--filter",
        "status in active,acknowledged",
    ]);
    run(&[
        "query",
        "agents",
        "--status",
        "failed",
        "--sort",
        "last_heartbeat:desc",
    ]);
    let history = run(&["history", "llm.latency_ms", "--since", "6h", "--step", "5m"]);
    assert!(history.contains("No samples"), "{history}");
    let stats = ok_json(d, &["--storage", "memory://", "stats"]);
    assert_eq!(stats[0]["backend_type"], "memory");
    let report = ok_json(d, &["--storage", "memory://", "retention", "apply"]);
    assert_eq!(count(&report, "samples_removed"), 0);
    let backup = d.join("backup");
    let report = ok_json(
        d,
        &["--storage", "memory://", "backup", backup.to_str().unwrap()],
    );
    assert_eq!(report["operation"], "backup");
    let report = ok_json(
        d,
        &[
            "--storage",
            "memory://",
            "restore",
            backup.to_str().unwrap(),
        ],
    );
    assert_eq!(report["operation"], "restore");
    let report = ok_json(d, &["migrate", "--from", "memory://", "--to", "memory://"]);
    assert_eq!(count(&report["restore"], "samples"), 0);
}

#[test]
fn bench_reports_throughput_and_latencies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sqlite = format!("sqlite://{}", d.join("bench.db").display());
    for store in ["memory://", sqlite.as_str()] {
        let report = ok_json(
            d,
            &[
                "--storage",
                store,
                "bench",
                "--samples",
                "2000",
                "--batch",
                "500",
                "--queries",
                "5",
            ],
        );
        assert_eq!(count(&report, "samples_written"), 2000, "{store}");
        assert!(report.get("temporary_store").is_none(), "{report}");
        assert!(!report["run"].as_str().unwrap().is_empty(), "{report}");
        assert_eq!(count(&report, "batches"), 4, "{store}");
        assert!(report["samples_per_second"].as_f64().unwrap() > 0.0);
        // The store's bytes per sample after the writes; memory cannot tell.
        let per_sample = &report["store"]["bytes_per_sample"];
        if store == "memory://" {
            assert!(per_sample.is_null(), "{report}");
        } else {
            assert!(per_sample.as_f64().unwrap() > 0.0, "{report}");
        }
        for key in ["batch_latency", "query_metrics", "metric_history"] {
            let l = &report[key];
            assert!(
                l["p50_ms"].as_f64().unwrap() <= l["p99_ms"].as_f64().unwrap(),
                "{l}"
            );
        }
    }
}

/// `--similarity N` upserts N alerts and times similarity queries where the store has the
/// capability; a store without it is refused rather than timed answering nothing.
#[test]
fn bench_similarity_mode_reports_upserts_and_query_latency() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sqlite = format!("sqlite://{}", d.join("bench.db").display());
    for store in ["memory://", sqlite.as_str()] {
        let report = ok_json(
            d,
            &[
                "--storage",
                store,
                "bench",
                "--similarity",
                "300",
                "--batch",
                "100",
                "--queries",
                "4",
            ],
        );
        assert_eq!(count(&report, "alerts"), 300, "{report}");
        assert!(report["upserts_per_second"].as_f64().unwrap() > 0.0);
        let p = |k: &str| report[k].as_f64().unwrap();
        assert!(
            p("p50_ms") <= p("p95_ms") && p("p95_ms") <= p("max_ms"),
            "{report}"
        );
        let stats = ok_json(d, &["--storage", store, "stats"]);
        if store != "memory://" {
            assert_eq!(count(&stats[0], "alerts"), 300, "{stats}");
        }
    }
}

/// Without a store the bench writes into a temporary SQLite file, never into ./aimon.db; a
/// store given explicitly keeps the samples and the report says which run they are.
#[test]
fn bench_uses_a_temporary_store_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bench = [
        "bench",
        "--samples",
        "1000",
        "--batch",
        "500",
        "--queries",
        "2",
    ];
    let report = ok_json(d, &bench);
    assert_eq!(count(&report, "samples_written"), 1000);
    assert_eq!(report["backend"], "default (sqlite)");
    let url = report["temporary_store"].as_str().unwrap();
    let file = url.strip_prefix("sqlite://").unwrap();
    assert!(!Path::new(file).exists(), "{file} was not removed");
    assert!(!Path::new(file).parent().unwrap().exists(), "{url}");
    assert!(!d.join("aimon.db").exists());
    let text = ok(d, &[&bench[..], &["--quiet"]].concat());
    assert!(text.contains("into a temporary sqlite://"), "{text}");
    assert!(text.contains("(removed afterwards)"), "{text}");
    assert!(!d.join("aimon.db").exists());

    // Explicitly given, the store keeps the run, which the report names.
    let sqlite = format!("sqlite://{}", d.join("kept.db").display());
    let text = ok(
        d,
        &[&["--storage", sqlite.as_str()][..], &bench[..]].concat(),
    );
    assert!(!text.contains("temporary"), "{text}");
    let run = text
        .lines()
        .find_map(|l| l.strip_prefix("Run "))
        .and_then(|l| l.split(':').next())
        .unwrap_or_else(|| panic!("no run id in {text}"));
    let tag = format!("run={run}");
    let kept = ok_json(
        d,
        &[
            "--storage",
            &sqlite,
            "query",
            "metrics",
            "--name",
            "aimon.bench.value",
            "--tag",
            &tag,
            "--limit",
            "1000",
        ],
    );
    let samples: usize = kept
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["values"].as_array().unwrap().len())
        .sum();
    assert_eq!(samples, 1000);
    let help = ok(d, &["bench", "--help"]);
    assert!(help.contains("temporary directory"), "{help}");
    assert!(help.contains("run=RUN"), "{help}");
}

/// The bench's baseline loads the same samples with the `sqlite3` shell (CI installs it) and
/// reports the ratio; it refuses stores that are not SQLite.
#[test]
fn bench_compares_with_the_sqlite3_shell() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sqlite = format!("sqlite://{}", d.join("bench.db").display());
    let report = ok_json(
        d,
        &[
            "--storage",
            &sqlite,
            "bench",
            "--samples",
            "3000",
            "--batch",
            "1000",
            "--queries",
            "2",
            "--compare-sqlite3",
        ],
    );
    let baseline = &report["baseline"];
    assert!(
        baseline["tool"].as_str().unwrap().starts_with("sqlite3 3."),
        "{baseline}"
    );
    assert!(
        baseline["samples_per_second"].as_f64().unwrap() > 0.0,
        "{baseline}"
    );
    assert!(baseline["ratio"].as_f64().unwrap() > 0.0, "{baseline}");
    // Both stores measured alike: page_count × page_size over the rows.
    assert!(
        baseline["bytes_per_sample"].as_f64().unwrap() > 0.0,
        "{baseline}"
    );
    assert!(
        report["store"]["bytes_per_sample"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    // The temporary default store is SQLite too.
    let report = ok_json(
        d,
        &[
            "bench",
            "--samples",
            "1000",
            "--queries",
            "2",
            "--compare-sqlite3",
        ],
    );
    assert!(report["temporary_store"].is_string(), "{report}");
    assert!(
        report["baseline"]["ratio"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    let err = fails(
        d,
        &[
            "--storage",
            "memory://",
            "bench",
            "--samples",
            "10",
            "--compare-sqlite3",
        ],
        1,
    );
    assert!(err.contains("needs a sqlite:// store"), "{err}");
}

#[test]
fn the_whole_workflow_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = format!("sqlite://{}", d.join("fleet.db").display());
    let s = ["--storage", url.as_str()];
    let args =
        |rest: &[&str]| -> Vec<String> { s.iter().chain(rest).map(|x| x.to_string()).collect() };
    let json = |rest: &[&str]| {
        let a = args(rest);
        ok_json(d, &a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let text = |rest: &[&str]| {
        let a = args(rest);
        ok(d, &a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let summary = json(&["demo", "--agents", "3", "--hours", "1"]);
    let samples = count(&summary, "samples_written");
    assert_eq!(samples, 3 * 360 * 6);

    // Data persists between processes.
    let metrics = json(&[
        "query",
        "metrics",
        "--name",
        "llm.latency_ms",
        "--since",
        "2h",
    ]);
    assert_eq!(metrics.as_array().unwrap().len(), 3);
    assert_eq!(metrics[0]["values"].as_array().unwrap().len(), 360);
    let one = json(&[
        "query",
        "metrics",
        "--tag",
        "agent=agent-02",
        "--limit",
        "2",
        "--sort",
        "name:desc",
    ]);
    assert_eq!(one.as_array().unwrap().len(), 2);
    assert_eq!(one[0]["name"], "llm.prompt_tokens");
    let agents = json(&["query", "agents"]);
    assert_eq!(agents.as_array().unwrap().len(), 3);
    json(&[
        "query",
        "alerts",
        "--since",
        "2h",
        "--filter",
        "severity >= low",
        "--sort",
        "start_time:desc",
    ]);

    let history = json(&[
        "history",
        "llm.latency_ms",
        "--since",
        "2h",
        "--step",
        "10m",
        "--group-by",
        "agent",
    ]);
    assert_eq!(history.as_array().unwrap().len(), 3);
    let chart = text(&[
        "history",
        "llm.cost_usd",
        "--since",
        "2h",
        "--step",
        "5m",
        "--agg",
        "sum",
    ]);
    assert!(chart.contains('┤'), "{chart}");

    let stats = json(&["stats"]);
    assert_eq!(count(&stats[0], "samples"), samples);

    // Backup, then restore into a second store.
    let backup = d.join("backup");
    let report = json(&["backup", backup.to_str().unwrap()]);
    assert_eq!(count(&report, "samples"), samples);
    let copy = format!("sqlite://{}", d.join("copy.db").display());
    let report = ok_json(
        d,
        &["--storage", &copy, "restore", backup.to_str().unwrap()],
    );
    assert_eq!(count(&report, "samples"), samples);
    let stats = ok_json(d, &["--storage", &copy, "stats"]);
    assert_eq!(count(&stats[0], "samples"), samples);

    // Native backup.
    let native = d.join("native.db");
    json(&["backup", "--native", native.to_str().unwrap()]);
    assert!(native.exists());

    // Migrate into a third store.
    let third = format!("sqlite://{}", d.join("third.db").display());
    let report = ok_json(d, &["migrate", "--from", &url, "--to", &third]);
    assert_eq!(count(&report["restore"], "samples"), samples);
    let stats = ok_json(d, &["--storage", &third, "stats"]);
    assert_eq!(count(&stats[0], "agent_states"), 3);

    json(&["retention", "apply"]);
}

#[test]
fn the_example_config_runs_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/aimon.toml");
    let summary = ok_json(
        dir.path(),
        &["--config", example, "demo", "--agents", "2", "--hours", "1"],
    );
    assert_eq!(count(&summary, "samples_written"), 2 * 360 * 6);
    // Metrics are routed to the sqlite backend "local", a file in the working directory.
    assert!(dir.path().join("aimon.db").exists());
    let stats = ok_json(
        dir.path(),
        &["--config", example, "--backend", "local", "stats"],
    );
    assert_eq!(count(&stats[0], "samples"), 2 * 360 * 6);
}

#[test]
fn hostile_input_is_one_line_and_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = "memory://";
    // Usage errors: exit code 2.
    for (args, needle) in [
        (
            vec!["--storage", m, "history", "x", "--step", "0s"],
            "greater than zero",
        ),
        (
            vec!["--storage", m, "history", "x", "--since", "banana"],
            "banana",
        ),
        (
            vec!["--storage", m, "query", "metrics", "--tag", "novalue"],
            "KEY=VALUE",
        ),
        (
            vec!["--storage", m, "query", "alerts", "--severity", "loud"],
            "loud",
        ),
        (
            vec![
                "--storage",
                m,
                "query",
                "alerts",
                "--filter",
                "severity like high",
            ],
            "like",
        ),
        (
            vec!["--storage", m, "query", "metrics", "--limit", "0"],
            "limit",
        ),
        (
            vec![
                "--storage",
                m,
                "query",
                "metrics",
                "--sort",
                "name:sideways",
            ],
            "sideways",
        ),
        (vec!["--storage", m, "demo", "--agents", "0"], "agents"),
        (vec!["--storage", m, "demo", "--interval=-5s"], "interval"),
        (vec!["--storage", m, "bench", "--samples", "0"], "samples"),
        (vec!["--storage", m, "history"], "<NAME>"),
        (vec!["--storage", m, "stats", "--frobnicate"], "frobnicate"),
        (vec!["nosuchcommand"], "nosuchcommand"),
    ] {
        let err = fails(d, &args, 2);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // Runtime errors: exit code 1.
    let missing = d.join("missing.toml");
    let nothing = d.join("no-such-backup");
    for (args, needle) in [
        (vec!["--storage", "nope://x", "stats"], "nope"),
        (
            vec!["--config", missing.to_str().unwrap(), "stats"],
            "missing.toml",
        ),
        (
            vec!["--storage", m, "restore", nothing.to_str().unwrap()],
            "no-such-backup",
        ),
        (
            vec!["--storage", m, "--backend", "elsewhere", "stats"],
            "elsewhere",
        ),
        (
            vec![
                "--storage",
                m,
                "query",
                "alerts",
                "--filter",
                "colour eq red",
            ],
            "colour",
        ),
        (
            vec!["--storage", m, "query", "agents", "--sort", "colour"],
            "sort_by: unknown agent_states field \"colour\"",
        ),
        (
            vec!["--storage", m, "history", "x", "--step", "15600w"],
            "step",
        ),
        (
            vec![
                "--storage",
                "postgres://postgres@127.0.0.1:1/postgres?shema=x",
                "stats",
            ],
            "unknown URL parameter \"shema\"",
        ),
        // The cluster client's own warning no longer adds a second line.
        (
            vec!["--storage", "redis+cluster://127.0.0.1:1", "stats"],
            "unavailable",
        ),
        (
            vec!["--storage", m, "demo", "--hours", "1", "--interval", "2h"],
            "interval",
        ),
        (
            vec!["--storage", m, "history", "bad\tname", "--since", "1h"],
            "name",
        ),
        (
            vec![
                "--storage",
                m,
                "query",
                "metrics",
                "--tag",
                "model=a",
                "--tag",
                "model=b",
            ],
            "given twice",
        ),
        (
            vec![
                "--storage",
                m,
                "query",
                "alerts",
                "--label",
                "region=eu",
                "--label",
                "region=us",
            ],
            "given twice",
        ),
        (
            vec!["migrate", "--from", m, "--to", "cassandra://db"],
            "cassandra",
        ),
        (
            vec!["--storage", "redis://u:hunter2@localhost:6379/0", "stats"],
            "redis",
        ),
    ] {
        let err = fails(d, &args, 1);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
    // A hostile manifest: escape sequences in a file name reach the error only as text.
    let hostile = d.join("hostile-archive");
    std::fs::create_dir(&hostile).unwrap();
    std::fs::write(
        hostile.join("manifest.json"),
        r#"{"format":"aimon-archive","version":1,"created_at":"2024-01-01T00:00:00Z",
            "source":{"backend":"x","backend_type":"memory"},
            "counts":{"series":0,"samples":0,"alerts":0,"agent_states":0},
            "files":{"metrics":"metrics\u001b[2J\u001b[31mRED","alerts":"a","agent_states":"s"}}"#,
    )
    .unwrap();
    let err = fails(
        d,
        &["--storage", m, "restore", hostile.to_str().unwrap()],
        1,
    );
    assert!(!err.contains('\u{1b}'), "{err:?}");
    assert!(err.contains("metrics\\u{1b}[2J\\u{1b}[31mRED"), "{err}");
    // A config file that is not valid.
    let bad = d.join("bad.toml");
    std::fs::write(&bad, "[[storage]]\nname = 1\n").unwrap();
    fails(d, &["--config", bad.to_str().unwrap(), "stats"], 1);
    // A backup into a directory that is not empty.
    let full = d.join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("something"), "x").unwrap();
    fails(d, &["--storage", m, "backup", full.to_str().unwrap()], 1);
}

/// A `redis-server` of the test's own on a free port, killed on drop; `None` (a reported skip)
/// when there is no `redis-server` binary (CI has one).
struct RedisServer {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    fn start(extra: &[&str]) -> Option<RedisServer> {
        let found = Command::new("redis-server").arg("--version").output();
        if found.is_err() {
            eprintln!("SKIPPED redis: no redis-server binary on PATH");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let server = RedisServer {
            child,
            port,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server not ready"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Some(server)
    }

    /// Keys of the server (a test may SCAN; the driver never does).
    fn keys(&self, auth: Option<&str>, pattern: &str) -> Vec<String> {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-p", &self.port.to_string(), "--scan", "--pattern", pattern]);
        if let Some(password) = auth {
            cmd.env("REDISCLI_AUTH", password);
        }
        let out = cmd.output().expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Redis baseline runs `redis-benchmark` ZADDs on the same server, reports both rates and
/// the ratio, deletes its key, never shows the password, and refuses other stores.
#[test]
fn bench_compares_with_redis_benchmark() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let err = fails(
        d,
        &[
            "--storage",
            "memory://",
            "bench",
            "--samples",
            "10",
            "--compare-redis-benchmark",
        ],
        1,
    );
    assert!(err.contains("needs a redis:// store"), "{err}");
    let Some(server) = RedisServer::start(&[]) else {
        return;
    };
    let url = format!("redis://127.0.0.1:{}", server.port);
    let report = ok_json(
        d,
        &[
            "--storage",
            &url,
            "bench",
            "--samples",
            "3000",
            "--batch",
            "1000",
            "--queries",
            "2",
            "--compare-redis-benchmark",
        ],
    );
    let baseline = &report["baseline"];
    assert!(
        baseline["tool"]
            .as_str()
            .unwrap()
            .starts_with("redis-benchmark "),
        "{baseline}"
    );
    let command = baseline["command"].as_str().unwrap();
    assert!(
        command.contains("-P 64 -n 3000 -r 3000 -q ZADD {aimon}:bench:"),
        "{command}"
    );
    assert!(baseline["samples_per_second"].as_f64().unwrap() > 0.0);
    assert!(baseline["ratio"].as_f64().unwrap() > 0.0, "{baseline}");
    assert_eq!(count(&report, "samples_written"), 3000);
    // Both measured with MEMORY USAGE … SAMPLES 0: the baseline key over its members, the
    // namespace's keys over the store's samples.
    assert!(
        baseline["bytes_per_sample"].as_f64().unwrap() > 0.0,
        "{baseline}"
    );
    assert!(
        report["store"]["bytes_per_sample"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(
        server.keys(None, "{aimon}:bench:*").is_empty(),
        "the baseline key is deleted"
    );
    let table = ok(
        d,
        &[
            "--storage",
            &url,
            "bench",
            "--samples",
            "1000",
            "--queries",
            "1",
            "--compare-redis-benchmark",
        ],
    );
    assert!(table.contains("requests/s (faster of "), "{table}");
    assert!(
        table.contains("after aimon's writes); aimon reached"),
        "{table}"
    );

    // With a password: it reaches redis-benchmark only through REDISCLI_AUTH. A
    // redis-benchmark that does not read it fails with one line; the password shows nowhere.
    drop(server);
    let secret = "s3cr3t-pw";
    let Some(server) = RedisServer::start(&["--requirepass", secret]) else {
        return;
    };
    let url = format!("redis://:{secret}@127.0.0.1:{}", server.port);
    let args = [
        "--storage",
        &url,
        "bench",
        "--samples",
        "500",
        "--queries",
        "1",
        "--compare-redis-benchmark",
        "--json",
    ];
    let out = aimon(d, &args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!stdout.contains(secret) && !stderr.contains(secret));
    if out.status.success() {
        let report: Value = serde_json::from_str(&stdout).unwrap();
        assert!(report["baseline"]["ratio"].as_f64().unwrap() > 0.0);
    } else {
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("REDISCLI_AUTH"), "{stderr}");
    }
    assert!(server.keys(Some(secret), "{aimon}:bench:*").is_empty());
}

/// The PostgreSQL baseline loads the same samples with `psql \copy` into a schema of its own,
/// dropped afterwards, and both stores' bytes per sample are measured from their relations.
#[test]
fn bench_compares_with_psql() {
    use aimon_integration_tests::fixtures;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Held to the end: the fixture drops the schemas of the configs it made when it goes.
    let Some(fixture) = runtime.block_on(fixtures::postgres()) else {
        return;
    };
    let config = fixture.config(&[]);
    let schema = config.options["schema"].as_str().unwrap();
    let url = &config.connection_string;
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}schema={schema}");
    let report = ok_json(
        d,
        &[
            "--storage",
            &url,
            "bench",
            "--samples",
            "3000",
            "--batch",
            "1000",
            "--queries",
            "1",
            "--compare-psql",
        ],
    );
    assert_eq!(count(&report, "samples_written"), 3000);
    let baseline = &report["baseline"];
    assert!(
        baseline["tool"].as_str().unwrap().starts_with("psql"),
        "{baseline}"
    );
    assert!(baseline["ratio"].as_f64().unwrap() > 0.0, "{baseline}");
    assert!(
        baseline["bytes_per_sample"].as_f64().unwrap() > 0.0,
        "{baseline}"
    );
    let store = &report["store"];
    assert_eq!(count(store, "samples"), 3000, "{store}");
    assert!(store["bytes_per_sample"].as_f64().unwrap() > 0.0, "{store}");
}

/// The InfluxDB baseline posts the same line-protocol batches with `curl` in rounds taking
/// turns with aimon's writes, into a database it drops again, and reports every round; other
/// stores are refused.
#[test]
fn bench_compares_with_curl_on_influxdb() {
    use aimon_integration_tests::fixtures;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let err = fails(
        d,
        &[
            "--storage",
            "memory://",
            "bench",
            "--samples",
            "10",
            "--compare-curl",
        ],
        1,
    );
    assert!(err.contains("needs an influxdb:// store"), "{err}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = match runtime.block_on(fixtures::influxdb_server()) {
        Ok(server) => server,
        Err(reason) => {
            fixtures::skip("influxdb", &reason);
            return;
        }
    };
    // `influxdb://host:port` of the server's URL, without its database and options.
    let (authority, _) = fixtures::influxdb_url_parts(&server.url);
    let database = fixtures::unique_namespace("cli_bench");
    let url = format!("{authority}/{database}");
    let report = ok_json(
        d,
        &[
            "--storage",
            &url,
            "bench",
            "--samples",
            "3000",
            "--batch",
            "1000",
            "--queries",
            "1",
            "--compare-curl",
        ],
    );
    assert_eq!(count(&report, "samples_written"), 3000);
    let baseline = &report["baseline"];
    assert!(
        baseline["tool"].as_str().unwrap().starts_with("curl "),
        "{baseline}"
    );
    assert!(
        baseline["command"]
            .as_str()
            .unwrap()
            .contains("round R of 2, taking turns with aimon's; 3 × (url = "),
        "{baseline}"
    );
    // Three batches: two rounds (an even number, so each goes first once), curl and aimon
    // taking turns, the sums compared.
    assert_eq!(baseline["method"], "interleaved rounds", "{baseline}");
    let runs = baseline["runs_seconds"].as_array().unwrap();
    let aimon_rounds = baseline["aimon_rounds_seconds"].as_array().unwrap();
    assert_eq!((runs.len(), aimon_rounds.len()), (2, 2), "{baseline}");
    assert!(
        runs.iter()
            .chain(aimon_rounds)
            .all(|r| r.as_f64().unwrap() > 0.0),
        "{baseline}"
    );
    let sum: f64 = runs.iter().map(|r| r.as_f64().unwrap()).sum();
    assert!(
        (baseline["seconds"].as_f64().unwrap() - sum).abs() < 1e-9,
        "{baseline}"
    );
    let aimon_sum: f64 = aimon_rounds.iter().map(|r| r.as_f64().unwrap()).sum();
    let write_seconds = report["write_seconds"].as_f64().unwrap();
    assert!((write_seconds - aimon_sum).abs() < 1e-6, "{report}");
    assert!(baseline["ratio"].as_f64().unwrap() > 0.0, "{baseline}");
    // Both databases measured by their shards' diskBytes (TSM files and WAL).
    assert!(
        baseline["bytes_per_sample"].as_f64().unwrap() > 0.0,
        "{baseline}"
    );
    assert!(
        report["store"]["bytes_per_sample"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    // Both baseline databases are gone; aimon's own stays.
    let http = authority.replacen("influxdb://", "http://", 1);
    let shown = Command::new("curl")
        .args(["-s", "--get", &format!("{http}/query")])
        .args(["--data-urlencode", "q=SHOW DATABASES"])
        .output()
        .expect("curl runs");
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains(&database), "{shown}");
    let baseline_db = format!("aimon_curl_baseline_{}", report["run"].as_str().unwrap());
    assert!(!shown.contains(&baseline_db), "{shown}");
    let dropped = Command::new("curl")
        .args(["-s", "-XPOST", &format!("{http}/query")])
        .args([
            "--data-urlencode",
            &format!("q=DROP DATABASE \"{database}\""),
        ])
        .output()
        .expect("curl runs");
    assert!(dropped.status.success());
}

/// Runs `aimon ARGS stats` at every verbosity (and with `RUST_LOG=trace`) and asserts that
/// `secret` shows nowhere in its output, whether the command succeeds or fails.
fn assert_secret_never_shows(dir: &Path, args: &[&str], secret: &str) {
    let verbosities: [(&[&str], Option<&str>); 5] = [
        (&[], None),
        (&["-v"], None),
        (&["-vv"], None),
        (&["-vvv"], None),
        (&[], Some("trace")),
    ];
    for (flags, rust_log) in verbosities {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aimon"));
        cmd.args(flags)
            .args(args)
            .arg("stats")
            .current_dir(dir)
            .env_remove("AIMON_STORAGE")
            .env_remove("AIMON_CONFIG")
            .env_remove("RUST_LOG");
        if let Some(filter) = rust_log {
            cmd.env("RUST_LOG", filter);
        }
        let out = cmd.output().expect("the aimon binary runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !text.contains(secret),
            "aimon {flags:?} {args:?} (RUST_LOG={rust_log:?}) printed the secret:\n{text}"
        );
        assert!(!text.contains("panicked"), "aimon {args:?}: {text}");
    }
}

/// A password, token or API key given in any part of a URL or in any option never appears in
/// any output at any verbosity: for unreachable servers, refused parameters, and real servers
/// that accept or refuse the credentials.
#[test]
fn secrets_never_show_at_any_verbosity() {
    use aimon_integration_tests::fixtures;

    const SECRET: &str = "Zq7s3cretPw";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut urls = vec![
        format!("postgres://postgres:{SECRET}@127.0.0.1:1/postgres?sslpassword={SECRET}"),
        format!("postgres://postgres:{SECRET}@127.0.0.1:1/postgres?password={SECRET}"),
        format!("postgresql://u:{SECRET}@127.0.0.1:1/db?shema={SECRET}"),
        format!("timescale://u:{SECRET}@127.0.0.1:1/db"),
        format!("redis://:{SECRET}@127.0.0.1:1"),
        format!("redis://user:{SECRET}@127.0.0.1:1/0?password={SECRET}"),
        format!("rediss://:{SECRET}@127.0.0.1:1"),
        format!("redis+cluster://:{SECRET}@127.0.0.1:1"),
        format!("redis+sentinel://:{SECRET}@127.0.0.1:1/mymaster"),
        format!("influxdb://u:{SECRET}@127.0.0.1:1/db"),
        format!("influxdb://127.0.0.1:1/db?token={SECRET}"),
        format!("influxdb2://127.0.0.1:1?org=o&bucket=b&token={SECRET}"),
        format!("qdrant://127.0.0.1:1?api_key={SECRET}"),
        format!("memory://u:{SECRET}@x"),
    ];
    // Real servers: Redis with another password, PostgreSQL (trust authentication takes any
    // password), InfluxDB (authentication off).
    let redis = RedisServer::start(&["--requirepass", "another-password"]);
    if let Some(server) = &redis {
        urls.push(format!("redis://:{SECRET}@127.0.0.1:{}", server.port));
        urls.push(format!(
            "redis://default:{SECRET}@127.0.0.1:{}/0",
            server.port
        ));
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Held to the end: the fixture drops the schema of the config it made when it goes.
    let postgres = runtime.block_on(fixtures::postgres());
    if let Some(fixture) = &postgres {
        let config = fixture.config(&[]);
        let url = url::Url::parse(&config.connection_string).unwrap();
        let schema = config.options["schema"].as_str().unwrap().to_owned();
        urls.push(format!(
            "postgres://{}:{SECRET}@{}:{}{}?schema={schema}&application_name=aimon-test",
            url.username(),
            url.host_str().unwrap(),
            url.port().unwrap_or(5432),
            url.path(),
        ));
    }
    let influx = runtime.block_on(fixtures::influxdb_server());
    match &influx {
        Ok(server) => {
            let (authority, _) = fixtures::influxdb_url_parts(&server.url);
            let authority = authority.replacen("://", &format!("://aimon:{SECRET}@"), 1);
            urls.push(format!(
                "{authority}/{}",
                fixtures::unique_namespace("cli_secret")
            ));
        }
        Err(reason) => {
            fixtures::skip("influxdb", reason);
        }
    }
    for url in &urls {
        assert_secret_never_shows(d, &["--storage", url], SECRET);
    }
    // Secrets given as options in a configuration file.
    for (backend_type, url, option) in [
        ("influxdb", "influxdb://127.0.0.1:1/db", "token"),
        ("influxdb", "influxdb://u@127.0.0.1:1/db", "password"),
        ("qdrant", "qdrant://127.0.0.1:1", "api_key"),
    ] {
        let config = d.join(format!("{backend_type}-{option}.toml"));
        std::fs::write(
            &config,
            format!(
                "[[storage]]\nname = \"s\"\nbackend_type = \"{backend_type}\"\n\
                 connection_string = \"{url}\"\ndefault = true\n\
                 [storage.options]\n{option} = \"{SECRET}\"\n"
            ),
        )
        .unwrap();
        assert_secret_never_shows(d, &["--config", config.to_str().unwrap()], SECRET);
    }
}

/// A reader that closes the pipe early (`aimon … --json | head`) ends the output quietly: exit
/// code 0 and nothing on stderr, as Unix tools do.
#[test]
fn a_closed_pipe_ends_json_output_quietly() {
    use std::io::Read;
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = format!("sqlite://{}", d.join("pipe.db").display());
    ok(
        d,
        &[
            "--storage",
            &db,
            "demo",
            "--agents",
            "3",
            "--hours",
            "1",
            "--quiet",
        ],
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_aimon"))
        .args([
            "--storage",
            &db,
            "query",
            "metrics",
            "--limit",
            "1000",
            "--json",
        ])
        .current_dir(d)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    // The output is far larger than a pipe's buffer: the writer meets the closed pipe.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(stderr.is_empty(), "{stderr}");
}

/// One HTTP/1.1 request over a plain socket; the status and the body.
fn http(addr: &str, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// `aimon serve`: tokens from AIMON_TOKENS, a request log at -v without any token in it, and a
/// clean stop on SIGTERM with what it acknowledged stored.
#[test]
fn serve_logs_without_secrets_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("served.db").display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_aimon"))
        .args(["--storage", &db, "-v", "serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env(
            "AIMON_TOKENS",
            "agents:write:t0p-s3cret-w,ui:read:t0p-s3cret-r",
        )
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first
        .trim()
        .rsplit("http://")
        .next()
        .expect("the address on stdout")
        .to_owned();
    let body = r#"{"alerts": [{"id": "a-1", "name": "n", "severity": "low", "source": "s"}]}"#;
    let post = |token: &str| {
        format!(
            "POST /api/v1/alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    assert_eq!(http(&addr, &post("t0p-s3cret-w")).0, 200);
    let (status, answer) = http(&addr, &post("t0p-s3cret-r"));
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = http(&addr, &post("guessed-wrong"));
    assert_eq!(status, 401, "{answer}");
    assert!(!answer.contains("guessed-wrong"), "{answer}");
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(
        stderr.contains("method=POST route=/api/v1/alerts status=200"),
        "{stderr}"
    );
    assert!(stderr.contains("token=agents"), "{stderr}");
    assert!(
        stderr.contains("method=POST route=/api/v1/alerts status=403"),
        "{stderr}"
    );
    assert!(stderr.contains("stopped"), "{stderr}");
    for secret in ["t0p-s3cret-w", "t0p-s3cret-r", "guessed-wrong"] {
        assert!(!stderr.contains(secret), "{secret} in {stderr}");
    }
    let stored = ok(dir.path(), &["--storage", &db, "query", "alerts", "--json"]);
    let stored: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored[0]["id"], "a-1");
}

/// `aimon serve` refuses a non-loopback address without tokens, before it listens.
#[test]
fn serve_refuses_an_open_public_address() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("open.db").display());
    let out = Command::new(env!("CARGO_BIN_EXE_aimon"))
        .args(["--storage", &db, "serve", "--listen", "0.0.0.0:0"])
        .current_dir(dir.path())
        .env_remove("AIMON_TOKENS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without tokens"), "{stderr}");
}

/// A config file with only a `[server]` section serves the store `--storage` names; a typo in
/// it is an error naming the key.
#[test]
fn serve_reads_a_server_only_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("s.db").display());
    std::fs::write(
        dir.path().join("server.toml"),
        "[server]\nlisten = \"0.0.0.0:0\"\n[[server.tokens]]\nname = \"ci\"\nsecret = \"x\"\nscopes = []\n",
    )
    .unwrap();
    // The file is read: its non-loopback address needs tokens, and its token has no scope.
    let out = aimon(
        dir.path(),
        &["--storage", &db, "--config", "server.toml", "serve"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no scope"), "{stderr}");
    std::fs::write(
        dir.path().join("typo.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\nlimts = {}\n",
    )
    .unwrap();
    let out = aimon(
        dir.path(),
        &["--storage", &db, "--config", "typo.toml", "serve"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("limts"), "{stderr}");
}
