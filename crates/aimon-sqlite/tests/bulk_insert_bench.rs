//! Bulk-insert throughput against the `sqlite3` shell's `.import` of the same rows into the same
//! table. Ignored by default; run it optimised:
//!
//! ```text
//! cargo test --release -p aimon-sqlite --test bulk_insert_bench -- --ignored --nocapture
//! ```
//!
//! It asserts that `save_metrics` reaches at least half the shell's rate, and is skipped (with a
//! message) when no `sqlite3` binary is on the `PATH`.

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use aimon_core::model::tags_json;
use aimon_core::{Metric, MetricType, MetricValue, StorageBackend, time};
use aimon_sqlite::{SqliteBackend, SqliteConfig};

const SERIES: usize = 100;
const SAMPLES_PER_SERIES: usize = 2_000;
const BATCH_SERIES: usize = 10;

fn data() -> Vec<Metric> {
    let base = 1_704_067_200_000_000_i64;
    (0..SERIES)
        .map(|s| {
            let mut m = Metric::new(format!("agent-{s}/latency"), "latency", MetricType::Gauge);
            for i in 0..SAMPLES_PER_SERIES {
                m.values.push(
                    MetricValue::new(
                        time::from_micros(base + i as i64 * 1_000_000),
                        i as f64 * 0.5,
                    )
                    .tag("host", format!("h{}", s % 7))
                    .tag("model", "small"),
                );
            }
            m
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark; run with --release --ignored"]
async fn save_metrics_keeps_up_with_the_sqlite3_shell() {
    if Command::new("sqlite3").arg("--version").output().is_err() {
        eprintln!("no sqlite3 binary on the PATH; skipping");
        return;
    }
    let metrics = data();
    let rows = (SERIES * SAMPLES_PER_SERIES) as f64;
    let dir = tempfile::tempdir().unwrap();

    // The shell: same schema, WAL, synchronous=NORMAL, one CSV import.
    let csv = dir.path().join("samples.csv");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&csv).unwrap());
        for m in &metrics {
            for v in &m.values {
                let tags = tags_json(&v.tags).replace('"', "\"\"");
                writeln!(
                    out,
                    "{},{},\"{}\",{}",
                    m.id,
                    time::to_micros(v.timestamp),
                    tags,
                    v.value
                )
                .unwrap();
            }
        }
    }
    let shell_db = dir.path().join("shell.db");
    let script = format!(
        "PRAGMA journal_mode=WAL;\nPRAGMA synchronous=NORMAL;\n\
         CREATE TABLE samples (series_id TEXT NOT NULL, ts INTEGER NOT NULL, tags TEXT NOT NULL, \
         value NOT NULL, PRIMARY KEY (series_id, ts, tags)) WITHOUT ROWID;\n\
         .mode csv\n.import {} samples\n",
        csv.display()
    );
    let started = Instant::now();
    let mut child = Command::new("sqlite3")
        .arg(&shell_db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let shell_secs = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shell_rate = rows / shell_secs;

    let store = SqliteBackend::open(SqliteConfig::file("bench", dir.path().join("aimon.db")))
        .await
        .unwrap();
    let started = Instant::now();
    for batch in metrics.chunks(BATCH_SERIES) {
        store.save_metrics(batch).await.unwrap();
    }
    let ours_secs = started.elapsed().as_secs_f64();
    let ours_rate = rows / ours_secs;
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.samples as f64, rows);

    let ratio = ours_rate / shell_rate;
    eprintln!(
        "sqlite3 .import: {shell_rate:.0} rows/s; save_metrics: {ours_rate:.0} rows/s; ratio {ratio:.2}"
    );
    assert!(
        ratio >= 0.5,
        "save_metrics reached only {ratio:.2}× the shell's rate"
    );
}
