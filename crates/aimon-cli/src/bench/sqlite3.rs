//! The `--compare-sqlite3` baseline: the `sqlite3` shell's `.import` of the same samples.

use std::time::Instant;

use super::{ToolRun, Workload};

/// One row a sample, keyed as aimon keys samples.
const PLAIN_TABLE: &str = "CREATE TABLE samples (series_id TEXT NOT NULL, ts INTEGER NOT NULL, \
    tags TEXT NOT NULL, value, PRIMARY KEY (series_id, ts, tags)) WITHOUT ROWID;";
use crate::error::{CliError, Result};

/// Loads the workload's samples with the `sqlite3` shell — CSV, `.import`, one transaction —
/// into a fresh database holding one plain row a sample (the layout aimon used before its
/// chunks: `samples(series_id, ts, tags, value)` keyed by `(series_id, ts, tags)`, aimon's
/// journal settings), and compares its rate with aimon's.
pub(super) async fn sqlite3_baseline(workload: &Workload) -> Result<ToolRun> {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let shell_error = |e: std::io::Error| {
        CliError::new(format!(
            "cannot run the sqlite3 shell for --compare-sqlite3: {e}"
        ))
    };
    let version = Command::new("sqlite3")
        .arg("--version")
        .output()
        .map_err(shell_error)?;
    let tool = format!(
        "sqlite3 {}",
        String::from_utf8_lossy(&version.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("?")
    );

    let dir = tempfile::tempdir()?;
    let db = dir.path().join("baseline.db");

    let csv = dir.path().join("samples.csv");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&csv)?);
    let tags = workload.csv_tags();
    for i in 0..workload.samples {
        let (s, timestamp, value) = workload.sample(i);
        writeln!(
            out,
            "{},{},{},{value}",
            workload.ids[s],
            aimon::time::to_micros(timestamp),
            tags[s]
        )?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;

    let script = format!(
        "PRAGMA journal_mode=WAL;\nPRAGMA synchronous=NORMAL;\n{PLAIN_TABLE}\nBEGIN;\n.import --csv {} samples\nCOMMIT;\n",
        csv.display()
    );
    let started = Instant::now();
    let mut child = Command::new("sqlite3")
        .arg("-batch")
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(shell_error)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let finished = child.wait_with_output()?;
    let seconds = started.elapsed().as_secs_f64();
    if !finished.status.success() || !finished.stderr.is_empty() {
        return Err(CliError::new(format!(
            "sqlite3 .import failed: {}",
            String::from_utf8_lossy(&finished.stderr).trim()
        )));
    }
    // The rows, and the database's size measured as aimon's SQLite backend measures its own.
    let counted = Command::new("sqlite3")
        .arg(&db)
        .arg(
            "SELECT count(*) FROM samples; \
             SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        )
        .output()
        .map_err(shell_error)?;
    let answer = String::from_utf8_lossy(&counted.stdout);
    let mut lines = answer.lines().map(|l| l.trim().parse::<u64>().ok());
    let rows = lines.next().flatten().unwrap_or(0);
    let size_bytes = lines.next().flatten();
    if rows != workload.samples {
        return Err(CliError::new(format!(
            "sqlite3 loaded {rows} rows, expected {}",
            workload.samples
        )));
    }
    let samples_per_second = workload.samples as f64 / seconds.max(1e-9);
    Ok(ToolRun {
        tool,
        command: "BEGIN; .import --csv samples.csv samples; COMMIT".to_owned(),
        seconds,
        samples_per_second,
        bytes_per_sample: size_bytes
            .filter(|_| rows > 0)
            .map(|bytes| bytes as f64 / rows as f64),
    })
}
