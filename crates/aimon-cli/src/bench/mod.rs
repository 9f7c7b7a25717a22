//! `aimon bench`: ingest throughput and query latency of the configured store.
//!
//! Without `--storage`, `AIMON_STORAGE` or a config file the bench writes into a temporary SQLite
//! file that is removed afterwards, never into the demo's `./aimon.db`. A store given explicitly
//! keeps the samples; they are tagged `run=<id>` and the report prints the id.

use std::time::{Duration, Instant};

use chrono::TimeDelta;
use serde::Serialize;

use aimon::{Aggregation, HistoryQuery, Metric, MetricQuery, MetricType, MetricValue, Tags};

use crate::cli::{BenchArgs, Global};
use crate::config::Storage;
use crate::error::{CliError, Result};
use crate::output::{self, millis, thousands};
use crate::progress;

const METRIC_NAME: &str = "aimon.bench.value";

#[derive(Debug, Serialize, PartialEq)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// p50, p99 and max of `samples` (nearest rank).
pub fn latency(samples: &[Duration]) -> Latency {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = |q: f64| {
        if sorted.is_empty() {
            return 0.0;
        }
        let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
        millis(sorted[i])
    };
    Latency {
        p50_ms: rank(0.50),
        p99_ms: rank(0.99),
        max_ms: rank(1.0),
    }
}

#[derive(Debug, Serialize)]
struct Report {
    backend: String,
    /// The store's URL when it is a temporary one, removed after the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    temporary_store: Option<String>,
    /// Tagged `run=<id>` on every sample; series ids start with `bench-<id>/`.
    run: String,
    samples: u64,
    series: u64,
    batch: u64,
    batches: u64,
    samples_written: u64,
    write_seconds: f64,
    wall_seconds: f64,
    samples_per_second: f64,
    batch_latency: Latency,
    query_iterations: u64,
    query_metrics: Latency,
    metric_history: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<Baseline>,
}

/// The raw tool loading the same samples, measured in the same run, in one of two ways.
///
/// - Before and after (`sqlite3`, `psql`, `redis-benchmark`): the whole load once before
///   aimon's writes and once after, compared against the faster of the two. A server is still
///   busy (compacting, checkpointing) with what the previous phase wrote, which slows whatever
///   runs next; timing the tool on both sides keeps that from favouring aimon.
/// - Interleaved rounds (`curl`): the batches are cut into [`CURL_ROUNDS`] rounds; in each,
///   curl posts its share and aimon writes the same share, taking turns at going first, and
///   the sums are compared. On this 2-core machine InfluxDB's speed drifts by ±15% within a
///   minute, and "the faster of two runs" is itself biased (the best of two noisy timings is
///   faster than a typical one); in rounds both tools meet the same drift and the same server
///   state (data accumulated, compactions) within seconds of each other.
#[derive(Debug, Serialize)]
struct Baseline {
    tool: String,
    command: String,
    /// How the runs were compared: `faster of before and after` or `interleaved rounds`.
    method: &'static str,
    /// The compared seconds (the faster run's, or the sum of the rounds) and rate.
    seconds: f64,
    samples_per_second: f64,
    /// Seconds of each run of the tool: before and after aimon's writes, or each round.
    runs_seconds: Vec<f64>,
    /// aimon's seconds in `save_metrics` in each round (interleaved rounds only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    aimon_rounds_seconds: Vec<f64>,
    /// aimon's samples/s divided by the tool's compared rate.
    ratio: f64,
}

/// One timed run of a baseline tool.
struct ToolRun {
    tool: String,
    command: String,
    seconds: f64,
    samples_per_second: f64,
}

impl Baseline {
    /// The comparison of aimon's rate with the faster of the tool's two runs.
    fn of(before: ToolRun, after: ToolRun, aimon_rate: f64) -> Self {
        let runs_seconds = vec![before.seconds, after.seconds];
        let best = if after.samples_per_second > before.samples_per_second {
            after
        } else {
            before
        };
        Baseline {
            tool: best.tool,
            command: best.command,
            method: "faster of before and after",
            seconds: best.seconds,
            samples_per_second: best.samples_per_second,
            runs_seconds,
            aimon_rounds_seconds: Vec::new(),
            ratio: aimon_rate / best.samples_per_second,
        }
    }
}

/// The samples a bench run writes: `samples` values spread round-robin over `series` series,
/// all within the last hour. aimon's ingest and the `sqlite3` baseline read the same ones.
struct Workload {
    samples: u64,
    series: u64,
    start: chrono::DateTime<chrono::Utc>,
    spacing_us: i64,
    ids: Vec<String>,
    tags: Vec<Tags>,
}

impl Workload {
    fn new(run: &str, now: chrono::DateTime<chrono::Utc>, args: &BenchArgs) -> Self {
        let series = args.series.min(args.samples);
        let per_series = args.samples.div_ceil(series);
        // Keep every sample within the last hour, at most one second apart.
        let spacing_us = (3_600_000_000 / per_series as i64).clamp(1, 1_000_000);
        Workload {
            samples: args.samples,
            series,
            start: now - TimeDelta::microseconds(spacing_us * per_series as i64),
            spacing_us,
            ids: (0..series)
                .map(|s| format!("bench-{run}/s{s:04}"))
                .collect(),
            tags: (0..series)
                .map(|s| {
                    Tags::from([
                        ("run".to_owned(), run.to_owned()),
                        ("series".to_owned(), format!("s{s:04}")),
                        ("host".to_owned(), format!("host-{}", s % 10)),
                    ])
                })
                .collect(),
        }
    }

    /// Each series' tags as a quoted CSV field of canonical JSON, for the baselines' files.
    fn csv_tags(&self) -> Vec<String> {
        self.tags
            .iter()
            .map(|t| format!("\"{}\"", aimon::model::tags_json(t).replace('"', "\"\"")))
            .collect()
    }

    /// Sample `i`: its series index, timestamp and value.
    fn sample(&self, i: u64) -> (usize, chrono::DateTime<chrono::Utc>, f64) {
        let s = (i % self.series) as usize;
        let seq = (i / self.series) as i64;
        let timestamp = self.start + TimeDelta::microseconds(seq * self.spacing_us);
        (s, timestamp, 100.0 + (i % 97) as f64 * 1.5)
    }

    /// Samples `range` grouped into one metric per series, as an application would send them.
    fn batch(&self, range: std::ops::Range<u64>) -> Vec<Metric> {
        let mut metrics: Vec<Metric> = Vec::new();
        let mut index = vec![usize::MAX; self.series as usize];
        for i in range {
            let (s, timestamp, value) = self.sample(i);
            if index[s] == usize::MAX {
                index[s] = metrics.len();
                let mut m = Metric::new(self.ids[s].clone(), METRIC_NAME, MetricType::Gauge);
                m.unit = Some("ms".to_owned());
                metrics.push(m);
            }
            metrics[index[s]].values.push(MetricValue {
                timestamp,
                value,
                tags: self.tags[s].clone(),
            });
        }
        metrics
    }
}

pub async fn run(storage: &Storage, global: &Global, args: &BenchArgs) -> Result<()> {
    let backend = storage.manager.get_backend(storage.name())?;
    let name = storage.name();
    if let Some(alerts) = args.similarity {
        return similarity_bench(storage, global, args, alerts).await;
    }
    if args.compare_sqlite3 && backend.backend_type() != aimon::StorageBackendType::Sqlite {
        return Err(CliError::new(format!(
            "--compare-sqlite3 needs a sqlite:// store; {} is {}",
            backend.name(),
            backend.backend_type()
        )));
    }
    let redis_target = if args.compare_redis_benchmark {
        Some(redis_target(storage, global, &backend)?)
    } else {
        None
    };
    if args.compare_psql && backend.backend_type() != aimon::StorageBackendType::Postgres {
        return Err(CliError::new(format!(
            "--compare-psql needs a postgres:// store; {} is {}",
            backend.name(),
            backend.backend_type()
        )));
    }
    let psql_url = match (&global.storage, args.compare_psql) {
        (Some(url), true) => Some(url.clone()),
        (None, true) => {
            return Err(CliError::new(
                "--compare-psql needs the store given as --storage postgres://…",
            ));
        }
        _ => None,
    };
    if args.compare_curl && backend.backend_type() != aimon::StorageBackendType::Influxdb {
        return Err(CliError::new(format!(
            "--compare-curl needs an influxdb:// store; {} is {}",
            backend.name(),
            backend.backend_type()
        )));
    }
    let curl_url = match (&global.storage, args.compare_curl) {
        (Some(url), true) => Some(url.clone()),
        (None, true) => {
            return Err(CliError::new(
                "--compare-curl needs the store given as --storage influxdb://…",
            ));
        }
        _ => None,
    };
    let now = aimon::time::now();
    let run = format!("{}", now.timestamp_millis());
    let workload = Workload::new(&run, now, args);
    let (series, start) = (workload.series, workload.start);

    let baselines = Baselines {
        args,
        workload: &workload,
        redis: redis_target.as_ref(),
        psql_url: psql_url.as_deref(),
    };
    let before = baselines.run(&format!("{run}_before")).await?;
    let curl = match &curl_url {
        Some(url) => Some(CurlBaseline::prepare(url, &run, &workload, args.batch).await?),
        None => None,
    };

    let bar = progress::bar(args.samples, "samples", global);
    let mut batch_times = Vec::new();
    let mut written = 0;
    let mut wall_seconds = 0.0;
    let batches = args.samples.div_ceil(args.batch);
    let rounds = curl.as_ref().map_or(1, CurlBaseline::rounds);
    let mut curl_seconds = Vec::new();
    let mut aimon_rounds_seconds = Vec::new();
    let writes = async {
        for round in 0..rounds {
            let curl_first = round % 2 == 0;
            if let (Some(curl), true) = (&curl, curl_first) {
                curl_seconds.push(curl.round(round)?);
            }
            let mut seconds = 0.0;
            let wall = Instant::now();
            for b in round_batches(batches, rounds, round) {
                let (start, end) = (b * args.batch, ((b + 1) * args.batch).min(args.samples));
                let metrics = workload.batch(start..end);
                let started = Instant::now();
                written += storage.manager.save_metrics(&metrics, name).await?.written;
                let took = started.elapsed();
                seconds += took.as_secs_f64();
                batch_times.push(took);
                bar.inc(end - start);
            }
            aimon_rounds_seconds.push(seconds);
            // aimon's share only: curl's rounds are not aimon's wall time.
            wall_seconds += wall.elapsed().as_secs_f64();
            if let (Some(curl), false) = (&curl, curl_first) {
                curl_seconds.push(curl.round(round)?);
            }
        }
        Ok::<(), CliError>(())
    }
    .await;
    // The baseline's database is dropped whatever happened.
    let curl_run = match curl {
        Some(curl) if writes.is_ok() => Some(curl.finish(curl_seconds).await?),
        Some(curl) => {
            curl.discard().await;
            None
        }
        None => None,
    };
    writes?;
    bar.finish_and_clear();
    let write_seconds: f64 = batch_times.iter().map(Duration::as_secs_f64).sum();

    // Query phase.
    let end = aimon::time::now() + TimeDelta::seconds(1);
    let step =
        TimeDelta::microseconds(((end - start).num_microseconds().unwrap_or(1) / 60).max(1_000));
    let mut query_times = Vec::new();
    let mut history_times = Vec::new();
    for q in 0..args.queries {
        let s = (q % series) as usize;
        let query = MetricQuery::new()
            .name(METRIC_NAME)
            .range(start, end)
            .tag("run", &run)
            .tag("series", format!("s{s:04}"));
        let started = Instant::now();
        storage.manager.query_metrics(&query, name).await?;
        query_times.push(started.elapsed());

        let history = HistoryQuery::new(METRIC_NAME, step, Aggregation::Avg)
            .range(start, end)
            .tag("run", &run);
        let started = Instant::now();
        storage.manager.get_metric_history(&history, name).await?;
        history_times.push(started.elapsed());
    }

    let samples_per_second = args.samples as f64 / write_seconds.max(1e-9);
    let baseline = match (before, curl_run) {
        (Some(before), _) => {
            let after = baselines.run(&format!("{run}_after")).await?;
            after.map(|after| Baseline::of(before, after, samples_per_second))
        }
        (None, Some((tool, runs_seconds))) => Some(Baseline {
            method: "interleaved rounds",
            seconds: tool.seconds,
            samples_per_second: tool.samples_per_second,
            ratio: samples_per_second / tool.samples_per_second,
            tool: tool.tool,
            command: tool.command,
            runs_seconds,
            aimon_rounds_seconds,
        }),
        (None, None) => None,
    };

    let report = Report {
        backend: format!("{} ({})", backend.name(), backend.backend_type()),
        temporary_store: storage.temporary_url().map(str::to_owned),
        run,
        samples: args.samples,
        series,
        batch: args.batch,
        batches: batch_times.len() as u64,
        samples_written: written,
        write_seconds,
        wall_seconds,
        samples_per_second,
        batch_latency: latency(&batch_times),
        query_iterations: args.queries,
        query_metrics: latency(&query_times),
        metric_history: latency(&history_times),
        baseline,
    };
    if global.json {
        return output::json(&report);
    }
    let into = match &report.temporary_store {
        Some(url) => format!("a temporary {url} (removed afterwards)"),
        None => report.backend.clone(),
    };
    output::line(format!(
        "Wrote {} samples in {} batches of {} into {}: {:.2} s in save_metrics ({:.2} s wall), {} samples/s",
        thousands(report.samples_written),
        report.batches,
        thousands(report.batch),
        into,
        report.write_seconds,
        report.wall_seconds,
        thousands(report.samples_per_second as u64),
    ));
    let mut table = output::table(
        &["operation", "calls", "p50 ms", "p99 ms", "max ms"],
        &["calls", "p50 ms", "p99 ms", "max ms"],
    );
    for (what, calls, l) in [
        ("save_metrics batch", report.batches, &report.batch_latency),
        (
            "query_metrics (1 series)",
            report.query_iterations,
            &report.query_metrics,
        ),
        (
            "metric_history (60 buckets)",
            report.query_iterations,
            &report.metric_history,
        ),
    ] {
        table.add_row(vec![
            what.to_owned(),
            calls.to_string(),
            format!("{:.2}", l.p50_ms),
            format!("{:.2}", l.p99_ms),
            format!("{:.2}", l.max_ms),
        ]);
    }
    output::line(table);
    if let Some(b) = &report.baseline {
        let what = if b.tool.starts_with("redis-benchmark") {
            format!("ran {} ZADDs", thousands(report.samples))
        } else {
            "loaded the same samples".to_owned()
        };
        let unit = if b.tool.starts_with("redis-benchmark") {
            "requests/s"
        } else {
            "samples/s"
        };
        let runs: Vec<String> = b.runs_seconds.iter().map(|s| format!("{s:.2}")).collect();
        let how = if b.aimon_rounds_seconds.is_empty() {
            format!(
                "faster of {} s before and after aimon's writes",
                runs.join(" s and ")
            )
        } else {
            let aimon: Vec<String> = b
                .aimon_rounds_seconds
                .iter()
                .map(|s| format!("{s:.2}"))
                .collect();
            format!(
                "rounds taking turns with aimon's: {} s, aimon's {} s",
                runs.join(" + "),
                aimon.join(" + ")
            )
        };
        output::line(format!(
            "Baseline: {} `{}` {what} in {:.2} s, {} {unit} ({how}); aimon reached {:.2}× its rate",
            b.tool,
            b.command,
            b.seconds,
            thousands(b.samples_per_second as u64),
            b.ratio
        ));
    }
    // A memory store is gone when the process ends; any other keeps what the bench wrote.
    if report.temporary_store.is_none()
        && backend.backend_type() != aimon::StorageBackendType::Memory
    {
        output::line(format!(
            "Run {run}: the samples stay in the store, in the series bench-{run}/* of \
             {METRIC_NAME}, tagged run={run} (aimon query metrics --name {METRIC_NAME} --tag run={run})",
            run = report.run
        ));
        if backend.backend_type() == aimon::StorageBackendType::Sqlite {
            output::line(format!(
                "To delete them: sqlite3 FILE \"DELETE FROM samples WHERE series_id LIKE 'bench-{run}/%'; \
                 DELETE FROM series WHERE id LIKE 'bench-{run}/%'\"",
                run = report.run
            ));
        }
    }
    Ok(())
}

/// Root causes the similarity bench writes alerts about, and words that vary their wording.
const SIM_TITLES: &[&str] = &[
    "GPU out of memory",
    "LLM rate limit exceeded",
    "tool call timed out",
    "token budget exceeded",
    "vector database unreachable",
    "context length exceeded",
    "invalid JSON output",
    "disk full on worker",
    "API key rejected",
    "agent stuck in a loop",
    "LLM response latency high",
    "webhook delivery failed",
];
const SIM_WORDS: &[&str] = &[
    "planner",
    "research",
    "coder",
    "vision",
    "support",
    "writer",
    "prod",
    "staging",
    "retry",
    "batch",
    "inference",
    "provider",
    "sandbox",
    "worker",
    "node",
    "queue",
];

#[derive(Debug, Serialize)]
struct SimilarityReport {
    backend: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    temporary_store: Option<String>,
    run: String,
    alerts: u64,
    batch: u64,
    write_seconds: f64,
    upserts_per_second: f64,
    queries: u64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// The `i`th generated alert of run `run`: one of [`SIM_TITLES`], a description varied by
/// index, labelled `run`.
fn similarity_alert(run: &str, i: u64, now: chrono::DateTime<chrono::Utc>) -> aimon::Alert {
    let title = SIM_TITLES[(i % SIM_TITLES.len() as u64) as usize];
    let word = |k: u64| SIM_WORDS[((i / 7 + k * 5) % SIM_WORDS.len() as u64) as usize];
    let mut alert = aimon::Alert::new(
        format!("bench-{run}/a{i:07}"),
        title,
        aimon::AlertSeverity::ALL[(i % 5) as usize],
        format!("{}-agent-{}", word(0), i % 50),
    );
    alert.description = Some(format!(
        "{title} on {} {} during {} ({} #{i})",
        word(1),
        word(2),
        word(3),
        word(4)
    ));
    alert.labels.insert("run".into(), run.to_owned());
    alert.labels.insert("env".into(), word(5).to_owned());
    alert.start_time = now - TimeDelta::seconds((i % 86_400) as i64);
    alert
}

/// `aimon bench --similarity N`: alert upserts per second, then similarity-query latency.
async fn similarity_bench(
    storage: &Storage,
    global: &Global,
    args: &BenchArgs,
    alerts: u64,
) -> Result<()> {
    let backend = storage.manager.get_backend(storage.name())?;
    if !backend.capabilities().similarity_search {
        return Err(CliError::new(format!(
            "--similarity needs a store with similarity search; {} ({}) has none",
            backend.name(),
            backend.backend_type()
        )));
    }
    let name = storage.name();
    let now = aimon::time::now();
    let run = format!("{}", now.timestamp_millis());
    let bar = progress::bar(alerts, "alerts", global);
    let mut write_seconds = 0.0;
    let mut next = 0u64;
    while next < alerts {
        let end = (next + args.batch).min(alerts);
        let batch: Vec<_> = (next..end)
            .map(|i| similarity_alert(&run, i, now))
            .collect();
        let started = Instant::now();
        storage.manager.save_alerts(&batch, name).await?;
        write_seconds += started.elapsed().as_secs_f64();
        bar.inc(end - next);
        next = end;
    }
    bar.finish_and_clear();
    let mut times = Vec::new();
    for q in 0..args.queries {
        let text = format!(
            "{} in {}",
            SIM_TITLES[(q % SIM_TITLES.len() as u64) as usize],
            SIM_WORDS[(q % SIM_WORDS.len() as u64) as usize]
        );
        let query = aimon::SimilarAlertsQuery::text(text)
            .limit(10)
            .filter(aimon::AlertQuery::new().label("run", &run));
        let started = Instant::now();
        let found = storage.manager.find_similar_alerts(&query, name).await?;
        times.push(started.elapsed());
        // A filter that matched nothing would time an empty scan.
        let wanted = alerts.min(10) as usize;
        if found.len() < wanted {
            return Err(CliError::new(format!(
                "find_similar_alerts returned {} of the {wanted} alerts asked for: the run's \
                 alerts are not all there",
                found.len()
            )));
        }
    }
    times.sort();
    let rank = |p: f64| {
        let i = ((p * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1;
        millis(times[i])
    };
    let report = SimilarityReport {
        backend: format!("{} ({})", backend.name(), backend.backend_type()),
        temporary_store: storage.temporary_url().map(str::to_owned),
        run,
        alerts,
        batch: args.batch,
        write_seconds,
        upserts_per_second: alerts as f64 / write_seconds.max(1e-9),
        queries: args.queries,
        p50_ms: rank(0.50),
        p95_ms: rank(0.95),
        p99_ms: rank(0.99),
        max_ms: rank(1.0),
    };
    if global.json {
        return output::json(&report);
    }
    output::line(format!(
        "Upserted {} alerts in batches of {} into {}: {:.2} s in save_alerts, {} upserts/s",
        thousands(report.alerts),
        thousands(report.batch),
        report
            .temporary_store
            .as_deref()
            .map_or_else(|| report.backend.clone(), |u| format!("a temporary {u}")),
        report.write_seconds,
        thousands(report.upserts_per_second as u64),
    ));
    let mut table = output::table(
        &["operation", "calls", "p50 ms", "p95 ms", "p99 ms", "max ms"],
        &["calls", "p50 ms", "p95 ms", "p99 ms", "max ms"],
    );
    table.add_row(vec![
        format!(
            "find_similar_alerts (text, limit 10, over {})",
            thousands(alerts)
        ),
        report.queries.to_string(),
        format!("{:.2}", report.p50_ms),
        format!("{:.2}", report.p95_ms),
        format!("{:.2}", report.p99_ms),
        format!("{:.2}", report.max_ms),
    ]);
    output::line(table);
    Ok(())
}

/// The baseline tool a bench run compares with, if any.
struct Baselines<'a> {
    args: &'a BenchArgs,
    workload: &'a Workload,
    redis: Option<&'a RedisTarget>,
    psql_url: Option<&'a str>,
}

impl Baselines<'_> {
    /// One run of the tool; `run` names what it creates (and removes) on the server.
    async fn run(&self, run: &str) -> Result<Option<ToolRun>> {
        Ok(if self.args.compare_sqlite3 {
            Some(sqlite3_baseline(self.workload).await?)
        } else if let Some(target) = self.redis {
            Some(redis_benchmark_baseline(target, run, self.args.samples).await?)
        } else if let Some(url) = self.psql_url {
            Some(psql_baseline(url, run, self.workload).await?)
        } else {
            None
        })
    }
}

/// Loads the workload's samples with the `sqlite3` shell — CSV, `.import`, one transaction —
/// into a fresh database with aimon's schema (same table, same indexes, same journal settings),
/// and compares its rate with aimon's.
async fn sqlite3_baseline(workload: &Workload) -> Result<ToolRun> {
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
    // aimon creates the schema, so the shell loads into exactly the table and indexes aimon uses.
    let schema = aimon::open_url("sqlite3-baseline", &format!("sqlite://{}", db.display())).await?;
    schema.close().await?;

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
        "PRAGMA journal_mode=WAL;\nPRAGMA synchronous=NORMAL;\nBEGIN;\n.import --csv {} samples\nCOMMIT;\n",
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
    let counted = Command::new("sqlite3")
        .arg(&db)
        .arg("SELECT count(*) FROM samples")
        .output()
        .map_err(shell_error)?;
    let rows: u64 = String::from_utf8_lossy(&counted.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
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
    })
}

/// Where `redis-benchmark` connects: the server of a `redis://` store, and the store's
/// namespace (the baseline key lives there). `Debug` hides the password.
struct RedisTarget {
    host: String,
    port: u16,
    db: i64,
    password: Option<String>,
    namespace: String,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// The configuration the store was opened from: `--storage` / `AIMON_STORAGE`, else the
/// config file's entry of that name.
fn store_config(
    storage: &Storage,
    global: &Global,
    name: &str,
) -> Result<Option<aimon::StorageConfig>> {
    if let Some(url) = &global.storage {
        return Ok(Some(aimon::StorageConfig::from_url(name, url.as_str())?));
    }
    if let (crate::config::Origin::ConfigFile, Some(path)) = (&storage.origin, &global.config) {
        let file = crate::config::load_file(path)?;
        return Ok(file.storage.into_iter().find(|c| c.name == name));
    }
    Ok(None)
}

fn redis_target(
    storage: &Storage,
    global: &Global,
    backend: &std::sync::Arc<dyn aimon::StorageBackend>,
) -> Result<RedisTarget> {
    let refuse = |why: &str| {
        CliError::new(format!(
            "--compare-redis-benchmark needs a redis:// store{why}; {} is {}",
            backend.name(),
            backend.backend_type()
        ))
    };
    if backend.backend_type() != aimon::StorageBackendType::Redis {
        return Err(refuse(""));
    }
    let config = store_config(storage, global, backend.name())?
        .ok_or_else(|| refuse(" given by --storage or --config"))?;
    let redis = aimon::redis::RedisConfig::from_storage_config(&config)?;
    let aimon::redis::Topology::Standalone { url } = &redis.topology else {
        return Err(refuse(" (one server; not Sentinel or Cluster)"));
    };
    parse_redis_url(url, redis.namespace.clone()).ok_or_else(|| refuse(" (not TLS)"))
}

/// `redis://[user:password@]host[:port][/db]` into its parts (the password percent-decoded);
/// `None` for anything else (`rediss://`, an ACL user other than `default`).
fn parse_redis_url(url: &str, namespace: String) -> Option<RedisTarget> {
    let url = url::Url::parse(url).ok()?;
    if url.scheme() != "redis" || !(url.username().is_empty() || url.username() == "default") {
        return None;
    }
    let password = match url.password() {
        Some(p) => Some(
            percent_encoding::percent_decode_str(p)
                .decode_utf8()
                .ok()?
                .into_owned(),
        ),
        None => None,
    }
    .filter(|p| !p.is_empty());
    let host = match url.host()? {
        url::Host::Ipv6(ip) => ip.to_string(),
        host => host.to_string(),
    };
    let db = match url.path().trim_start_matches('/') {
        "" => 0,
        db => db.parse().ok()?,
    };
    Some(RedisTarget {
        host,
        port: url.port().unwrap_or(6379),
        db,
        password,
        namespace,
    })
}

/// `redis-benchmark` or `redis-cli` aimed at the target: host, port and database on the
/// command line, the password only in `REDISCLI_AUTH`.
fn redis_tool(tool: &str, target: &RedisTarget) -> std::process::Command {
    let mut cmd = std::process::Command::new(tool);
    cmd.arg("-h")
        .arg(&target.host)
        .arg("-p")
        .arg(target.port.to_string())
        .env_remove("REDISCLI_AUTH")
        .stdin(std::process::Stdio::null());
    if target.db != 0 {
        cmd.arg(if tool == "redis-cli" { "-n" } else { "--dbnum" })
            .arg(target.db.to_string());
    }
    if let Some(password) = &target.password {
        cmd.env("REDISCLI_AUTH", password);
    }
    cmd
}

/// Runs `redis-benchmark -P 64 -n N -r N -q ZADD KEY __rand_int__ __rand_int__` against the
/// store's server: `N` ZADDs, the one command aimon's layout needs per sample, on a key in the
/// store's namespace that is deleted afterwards. Compares its requests/s with aimon's samples/s.
async fn redis_benchmark_baseline(
    target: &RedisTarget,
    run: &str,
    samples: u64,
) -> Result<ToolRun> {
    let tool_error = |tool: &str, e: std::io::Error| {
        CliError::new(format!(
            "cannot run {tool} for --compare-redis-benchmark: {e}"
        ))
    };
    let version = std::process::Command::new("redis-benchmark")
        .arg("--version")
        .output()
        .map_err(|e| tool_error("redis-benchmark", e))?;
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    let tool = format!(
        "redis-benchmark {}",
        version.split_whitespace().nth(1).unwrap_or("?")
    );
    let key = format!("{{{}}}:bench:redis-benchmark:{run}", target.namespace);
    let n = samples.to_string();
    let args = [
        "-P",
        "64",
        "-n",
        &n,
        "-r",
        &n,
        "-q",
        "ZADD",
        &key,
        "__rand_int__",
        "__rand_int__",
    ];
    let out = redis_tool("redis-benchmark", target)
        .args(args)
        .output()
        .map_err(|e| tool_error("redis-benchmark", e))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Whatever happens, the baseline key goes.
    let cleanup = redis_tool("redis-cli", target)
        .arg("DEL")
        .arg(&key)
        .output();
    if text.contains("NOAUTH") || text.contains("WRONGPASS") {
        return Err(CliError::new(
            "redis-benchmark did not authenticate: it got the password only through \
             REDISCLI_AUTH (aimon never puts it on a command line), which this redis-benchmark \
             does not read",
        ));
    }
    let rate = text
        .split(['\r', '\n'])
        .filter_map(|line| {
            let before = line.split(" requests per second").next()?;
            if before.len() == line.len() {
                return None;
            }
            before.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .next_back();
    let Some(rate) = rate.filter(|r| *r > 0.0 && out.status.success()) else {
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(CliError::new(format!(
            "redis-benchmark gave no requests/s ({}): {}",
            out.status,
            last.trim()
        )));
    };
    match cleanup {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Err(CliError::new(format!(
                "redis-cli DEL of the baseline key {key} failed: {}",
                String::from_utf8_lossy(&o.stdout).trim()
            )));
        }
        Err(e) => return Err(tool_error("redis-cli", e)),
    }
    Ok(ToolRun {
        tool,
        command: format!(
            "redis-benchmark -h {} -p {} {}",
            target.host,
            target.port,
            args.join(" ")
        ),
        seconds: samples as f64 / rate,
        samples_per_second: rate,
    })
}

/// Loads the workload's samples with `psql -c "\copy … FROM file"` (CSV) into a fresh schema
/// of the same server that aimon created (the same partitioned table, partitions and indexes),
/// and compares its rate with aimon's. The schema is dropped afterwards.
async fn psql_baseline(url: &str, run: &str, workload: &Workload) -> Result<ToolRun> {
    use std::io::Write;
    use std::process::Command;

    use aimon::StorageBackend;
    use aimon::postgres::PostgresBackend;

    let tool_error =
        |e: std::io::Error| CliError::new(format!("cannot run psql for --compare-psql: {e}"));
    let version = Command::new("psql")
        .arg("--version")
        .output()
        .map_err(tool_error)?;
    let tool = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let schema = format!("aimon_psql_baseline_{run}");
    let config =
        aimon::StorageConfig::from_url("psql-baseline", url)?.option("schema", schema.as_str());
    let store = PostgresBackend::connect(&config).await?;
    let result = async {
        // The series rows (and their keys) as aimon would have them; then the partitions.
        let series: Vec<Metric> = workload
            .ids
            .iter()
            .map(|id| Metric::new(id.clone(), METRIC_NAME, MetricType::Gauge))
            .collect();
        store.save_metrics(&series).await?;
        let end = workload.start
            + TimeDelta::microseconds(
                workload.spacing_us * workload.samples.div_ceil(workload.series) as i64,
            );
        store.prepare_partitions(workload.start, end).await?;
        let sids: std::collections::HashMap<String, i64> =
            store.series_keys().await?.into_iter().collect();

        let dir = tempfile::tempdir()?;
        let csv = dir.path().join("samples.csv");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&csv)?);
        let tags = workload.csv_tags();
        for i in 0..workload.samples {
            let (s, timestamp, value) = workload.sample(i);
            writeln!(
                out,
                "{},{},{},{value}",
                sids[&workload.ids[s]],
                aimon::time::format(timestamp),
                tags[s]
            )?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;

        let command = format!(
            "\\copy \"{schema}\".samples (sid, time, tags, value) FROM '{}' WITH (FORMAT csv)",
            csv.display()
        );
        // The password reaches psql through PGPASSWORD, never its command line.
        let (libpq_url, password) = store.config().libpq_url_and_password();
        let mut psql = Command::new("psql");
        psql.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(libpq_url)
            .arg("-c")
            .arg(&command)
            .env_remove("PGPASSWORD");
        if let Some(password) = password {
            psql.env("PGPASSWORD", password);
        }
        let started = Instant::now();
        let finished = psql.output().map_err(tool_error)?;
        let seconds = started.elapsed().as_secs_f64();
        if !finished.status.success() {
            return Err(CliError::new(format!(
                "psql \\copy failed: {}",
                String::from_utf8_lossy(&finished.stderr).trim()
            )));
        }
        let stats = store.stats().await?;
        if stats.samples != workload.samples {
            return Err(CliError::new(format!(
                "psql loaded {} rows, expected {}",
                stats.samples, workload.samples
            )));
        }
        let samples_per_second = workload.samples as f64 / seconds.max(1e-9);
        Ok(ToolRun {
            tool,
            command: "psql -c \"\\copy SCHEMA.samples (sid, time, tags, value) FROM 'samples.csv' WITH (FORMAT csv)\""
                .to_owned(),
            seconds,
            samples_per_second,
        })
    }
    .await;
    store.drop_schema().await?;
    result
}

/// How many interleaved rounds `--compare-curl` takes turns in (even; fewer if there are
/// fewer batches).
const CURL_ROUNDS: u64 = 6;

/// `--compare-curl`: one `curl -K` per round posting that round's batches (the lines
/// `save_metrics` writes, gzip) to `/write` of the same server, into a fresh database with the
/// same retention policies, dropped at the end. The files are written before any timing.
struct CurlBaseline {
    store: aimon::influxdb::InfluxBackend,
    dir: tempfile::TempDir,
    /// One curl config per round.
    configs: Vec<std::path::PathBuf>,
    tool: String,
    command: String,
    samples: u64,
}

impl CurlBaseline {
    async fn prepare(url: &str, run: &str, workload: &Workload, batch: u64) -> Result<Self> {
        use aimon::influxdb::InfluxBackend;
        let version = std::process::Command::new("curl")
            .arg("--version")
            .output()
            .map_err(curl_error)?;
        let tool = String::from_utf8_lossy(&version.stdout)
            .lines()
            .next()
            .unwrap_or("curl")
            .split(" (")
            .next()
            .unwrap_or("curl")
            .to_owned();
        let database = format!("aimon_curl_baseline_{run}");
        let mut parsed = url::Url::parse(url)
            .map_err(|e| CliError::new(format!("--compare-curl: not a URL: {e}")))?;
        parsed.set_path(&format!("/{database}"));
        let config = aimon::StorageConfig::from_url("curl-baseline", parsed.as_str())?;
        let store = InfluxBackend::connect(&config).await?;
        match Self::write_files(&store, &database, workload, batch) {
            Ok((dir, configs, command)) => Ok(CurlBaseline {
                store,
                dir,
                configs,
                tool,
                command,
                samples: workload.samples,
            }),
            Err(e) => {
                drop_baseline_database(&store).await;
                Err(e)
            }
        }
    }

    /// The gzip batch files and one curl config per round; returns them with the command
    /// as reported.
    fn write_files(
        store: &aimon::influxdb::InfluxBackend,
        database: &str,
        workload: &Workload,
        batch: u64,
    ) -> Result<(tempfile::TempDir, Vec<std::path::PathBuf>, String)> {
        use std::io::Write;
        let aimon::influxdb::ApiSettings::V1 {
            retention_policy,
            username,
            password,
            ..
        } = &store.config().api
        else {
            return Err(CliError::new(
                "--compare-curl needs an influxdb:// (v1) store",
            ));
        };
        let mut write_url = store.config().base_url.join("write").map_err(|e| {
            CliError::new(format!("--compare-curl: cannot build the write URL: {e}"))
        })?;
        write_url
            .query_pairs_mut()
            .append_pair("db", database)
            .append_pair("rp", retention_policy)
            .append_pair("precision", "u");
        let dir = tempfile::tempdir()?;
        let batches = workload.samples.div_ceil(batch);
        // An even number of rounds (one when there is a single batch), so each tool goes
        // first as often as the other.
        let rounds = match CURL_ROUNDS.min(batches) {
            0 | 1 => 1,
            n => n - n % 2,
        };
        let mut configs = Vec::new();
        for round in 0..rounds {
            let mut conf = String::new();
            for n in round_batches(batches, rounds, round) {
                let (start, end) = (n * batch, ((n + 1) * batch).min(workload.samples));
                let lines = aimon::influxdb::sample_lines(&workload.batch(start..end))?;
                let file = dir.path().join(format!("batch{n:06}.lp.gz"));
                let mut gz = flate2::write::GzEncoder::new(
                    std::fs::File::create(&file)?,
                    flate2::Compression::fast(),
                );
                gz.write_all(lines.as_bytes())?;
                gz.finish()?;
                if !conf.is_empty() {
                    conf.push_str("next\n");
                }
                conf.push_str(&format!(
                    "url = \"{write_url}\"\ndata-binary = \"@{}\"\nheader = \"Content-Encoding: gzip\"\nsilent\nshow-error\nfail\nfail-early\n",
                    file.display()
                ));
                if let Some(user) = username {
                    let secret = password.as_ref().map(|p| p.expose()).unwrap_or("");
                    conf.push_str(&format!(
                        "user = \"{}:{}\"\n",
                        curl_config_quoted(user),
                        curl_config_quoted(secret)
                    ));
                }
            }
            // The config file holds the credentials: readable by this user only.
            let path = dir.path().join(format!("curl{round}.conf"));
            let mut f = std::fs::OpenOptions::new();
            f.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut f, 0o600);
            f.open(&path)?.write_all(conf.as_bytes())?;
            configs.push(path);
        }
        let command = format!(
            "curl -K curlR.conf  # round R of {rounds}, taking turns with aimon's; {batches} × (url = \"{}/write?db=DB&rp={retention_policy}&precision=u\", data-binary = \"@batchN.lp.gz\", header = \"Content-Encoding: gzip\", next)",
            store.config().base_url.as_str().trim_end_matches('/')
        );
        Ok((dir, configs, command))
    }

    fn rounds(&self) -> u64 {
        self.configs.len() as u64
    }

    /// Posts round `round`'s batches; returns its seconds.
    fn round(&self, round: u64) -> Result<f64> {
        let config = &self.configs[round as usize];
        let started = Instant::now();
        let finished = std::process::Command::new("curl")
            .arg("-K")
            .arg(config)
            .current_dir(self.dir.path())
            .output()
            .map_err(curl_error)?;
        let seconds = started.elapsed().as_secs_f64();
        if !finished.status.success() {
            return Err(CliError::new(format!(
                "curl failed: {}",
                String::from_utf8_lossy(&finished.stderr).trim()
            )));
        }
        Ok(seconds)
    }

    /// Checks that every sample arrived and drops the database; returns the run (its
    /// seconds the sum of the rounds) and each round's seconds.
    async fn finish(self, rounds_seconds: Vec<f64>) -> Result<(ToolRun, Vec<f64>)> {
        use aimon::StorageBackend;
        let checked = match self.store.stats().await {
            Ok(stats) if stats.samples == self.samples => Ok(()),
            Ok(stats) => Err(CliError::new(format!(
                "curl loaded {} points, expected {}",
                stats.samples, self.samples
            ))),
            Err(e) => Err(e.into()),
        };
        self.store.drop_database().await?;
        checked?;
        let seconds: f64 = rounds_seconds.iter().sum();
        Ok((
            ToolRun {
                tool: self.tool,
                command: self.command,
                seconds,
                samples_per_second: self.samples as f64 / seconds.max(1e-9),
            },
            rounds_seconds,
        ))
    }

    /// Drops the database after a failed run.
    async fn discard(self) {
        drop_baseline_database(&self.store).await;
    }
}

/// Drops the curl baseline's database; a failure is logged, not returned, as it comes after
/// the error or result that matters.
async fn drop_baseline_database(store: &aimon::influxdb::InfluxBackend) {
    if let Err(e) = store.drop_database().await {
        tracing::warn!(error = %e, "cannot drop the curl baseline's database");
    }
}

/// The batches of round `round` of `rounds`: aimon's and curl's rounds hold the same ones.
fn round_batches(batches: u64, rounds: u64, round: u64) -> std::ops::Range<u64> {
    batches * round / rounds..batches * (round + 1) / rounds
}

/// `s` escaped for a double-quoted value of a curl config file: backslash, quote and the
/// characters that would end or bend the line.
fn curl_config_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c => out.push(c),
        }
    }
    out
}

fn curl_error(e: std::io::Error) -> CliError {
    CliError::new(format!("cannot run curl for --compare-curl: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rounds cover every batch once, in order, as evenly as they can.
    #[test]
    fn rounds_partition_the_batches() {
        for batches in [1u64, 2, 3, 5, 6, 7, 200, 201] {
            for rounds in [1u64, 2, 6] {
                let cut: Vec<_> = (0..rounds)
                    .map(|r| round_batches(batches, rounds, r))
                    .collect();
                assert_eq!(cut[0].start, 0);
                assert_eq!(cut[cut.len() - 1].end, batches);
                for pair in cut.windows(2) {
                    assert_eq!(pair[0].end, pair[1].start);
                }
                let sizes: Vec<_> = cut.iter().map(|r| r.end - r.start).collect();
                let (min, max) = (sizes.iter().min(), sizes.iter().max());
                assert!(
                    max.zip(min).is_some_and(|(max, min)| max - min <= 1),
                    "{sizes:?}"
                );
            }
        }
    }

    #[test]
    fn curl_config_values_cannot_break_their_line() {
        assert_eq!(curl_config_quoted("plain"), "plain");
        assert_eq!(
            curl_config_quoted("a\"b\\c\nd\re\tf\x0bg"),
            "a\\\"b\\\\c\\nd\\re\\tf\\vg"
        );
        assert!(!curl_config_quoted("x\ny\rz").contains(['\n', '\r']));
    }

    #[test]
    fn redis_urls_split_without_showing_the_password() {
        let t = parse_redis_url("redis://:p%40ss@10.0.0.1:6380/2", "ns".into()).unwrap();
        assert_eq!((t.host.as_str(), t.port, t.db), ("10.0.0.1", 6380, 2));
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        assert!(!format!("{t:?}").contains("p@ss"));
        let t = parse_redis_url("redis://default:x@[::1]", "ns".into()).unwrap();
        assert_eq!((t.host.as_str(), t.port, t.db), ("::1", 6379, 0));
        assert!(parse_redis_url("rediss://h:1", "ns".into()).is_none());
        assert!(parse_redis_url("redis://alice:x@h:1", "ns".into()).is_none());
        let t = parse_redis_url("redis://127.0.0.1:6379", "ns".into()).unwrap();
        assert_eq!(t.password, None);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = latency(&samples);
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (50.0, 99.0, 100.0));
        let one = latency(&[Duration::from_millis(7)]);
        assert_eq!((one.p50_ms, one.p99_ms), (7.0, 7.0));
        assert_eq!(latency(&[]).p50_ms, 0.0);
    }
}
