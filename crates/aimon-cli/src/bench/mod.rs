//! `aimon bench`: ingest throughput and query latency of the configured store.
//!
//! Without `--storage`, `AIMON_STORAGE` or a config file the bench writes into a temporary SQLite
//! file that is removed afterwards, never into the demo's `./aimon.db`. A store given explicitly
//! keeps the samples; they are tagged `run=<id>` and the report prints the id.
//!
//! `--codecs` measures the chunk codec instead and opens no store ([`codecs_bench`]).

use std::time::{Duration, Instant};

use chrono::TimeDelta;
use serde::Serialize;

use aimon::{Aggregation, HistoryQuery, MetricQuery};

use crate::cli::{BenchArgs, Global};
use crate::config::Storage;
use crate::error::{CliError, Result};
use crate::footprint::{self, Footprint};
use crate::output::{self, millis, thousands};
use crate::progress;

mod codecs;
mod curl;
mod plain_sql;
mod psql;
mod redis_benchmark;
mod serve;
mod similarity;
mod sqlite3;
mod workload;

pub use codecs::codecs_bench;
use curl::CurlBaseline;
use plain_sql::PlainSql;
use psql::psql_baseline;
use redis_benchmark::{RedisTarget, redis_benchmark_baseline, redis_target};
use similarity::similarity_bench;
use sqlite3::sqlite3_baseline;
use workload::Workload;

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
    /// The store's size and bytes per sample right after the writes (all its samples, earlier
    /// runs' included, when the store is not a temporary one).
    store: Footprint,
    batch_latency: Latency,
    query_iterations: u64,
    query_metrics: Latency,
    metric_history: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<Baseline>,
    #[serde(skip_serializing_if = "Option::is_none")]
    history_baseline: Option<HistoryBaseline>,
}

/// `--compare-sql`: the hand-written history query over plain rows, timed next to aimon's.
#[derive(Debug, Serialize)]
struct HistoryBaseline {
    statement: String,
    latency: Latency,
    /// The plain query's p50 divided by aimon's: how many times faster aimon answered.
    speedup: f64,
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
///
/// [`CURL_ROUNDS`]: curl::CURL_ROUNDS
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
    /// The size of what the tool loaded over its rows, measured as aimon's store is (see
    /// [`ToolRun::bytes_per_sample`]); `None` where it cannot be.
    bytes_per_sample: Option<f64>,
}

/// One timed run of a baseline tool.
struct ToolRun {
    tool: String,
    command: String,
    seconds: f64,
    samples_per_second: f64,
    /// The bytes the tool's store took per row it loaded, measured the way the store's aimon
    /// backend measures `size_bytes`: the sqlite3 database's `page_count × page_size`, the
    /// psql schema's relation sizes, the redis-benchmark key's `MEMORY USAGE … SAMPLES 0`
    /// over its members, the curl database's shard `diskBytes`.
    bytes_per_sample: Option<f64>,
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
            bytes_per_sample: best.bytes_per_sample,
        }
    }
}

pub async fn run(storage: &Storage, global: &Global, args: &BenchArgs) -> Result<()> {
    let backend = storage.manager.get_backend(storage.name())?;
    let name = storage.name();
    if let Some(alerts) = args.similarity {
        return similarity_bench(storage, global, args, alerts).await;
    }
    if args.serve {
        return serve::serve_bench(storage, global, args).await;
    }
    if args.compare_sqlite3 && backend.backend_type() != aimon::StorageBackendType::Sqlite {
        return Err(CliError::new(format!(
            "--compare-sqlite3 needs a sqlite:// store; {} is {}",
            backend.name(),
            backend.backend_type()
        )));
    }
    if args.compare_sql && backend.backend_type() != aimon::StorageBackendType::Sqlite {
        return Err(CliError::new(format!(
            "--compare-sql needs a sqlite:// store; {} is {}",
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
    // Right after the writes, before the queries: what the samples cost in the store.
    let store = Footprint::read(storage).await?;

    // Query phase.
    let plain = if args.compare_sql {
        let config = match storage.temporary_url() {
            Some(url) => Some(aimon::StorageConfig::from_url(backend.name(), url)?),
            None => store_config(storage, global, backend.name())?,
        }
        .ok_or_else(|| CliError::new("--compare-sql: cannot tell which file the store is"))?;
        Some(PlainSql::prepare(&config, &run, &workload).await?)
    } else {
        None
    };
    let end = aimon::time::now() + TimeDelta::seconds(1);
    let step =
        TimeDelta::microseconds(((end - start).num_microseconds().unwrap_or(1) / 60).max(1_000));
    let mut query_times = Vec::new();
    let mut history_times = Vec::new();
    let mut plain_times = Vec::new();
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
        let answer = storage.manager.get_metric_history(&history, name).await?;
        history_times.push(started.elapsed());
        if let Some(plain) = &plain {
            let micros = |t| aimon::time::to_micros(t);
            let (took, buckets) = plain
                .history(
                    micros(start),
                    micros(end),
                    step.num_microseconds().unwrap_or(1),
                )
                .await?;
            plain_times.push(took);
            let aimon_buckets = answer.first().map_or(0, |s| s.buckets.len());
            if buckets != aimon_buckets {
                return Err(CliError::new(format!(
                    "--compare-sql: the plain query gave {buckets} buckets, aimon {aimon_buckets}"
                )));
            }
        }
    }
    let history_baseline = match plain {
        Some(plain) => {
            let statement = plain.statement();
            plain.finish().await?;
            let (ours, theirs) = (latency(&history_times), latency(&plain_times));
            Some(HistoryBaseline {
                statement,
                speedup: theirs.p50_ms / ours.p50_ms.max(1e-9),
                latency: theirs,
            })
        }
        None => None,
    };

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
            bytes_per_sample: tool.bytes_per_sample,
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
        store,
        batch_latency: latency(&batch_times),
        query_iterations: args.queries,
        query_metrics: latency(&query_times),
        metric_history: latency(&history_times),
        baseline,
        history_baseline,
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
    output::line(report.store.sentence(backend.backend_type()));
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
        let size = match b.bytes_per_sample {
            Some(per) => format!(
                "; its store took {} bytes/sample",
                footprint::per_sample(per)
            ),
            None => String::new(),
        };
        output::line(format!(
            "Baseline: {} `{}` {what} in {:.2} s, {} {unit} ({how}); aimon reached {:.2}× its rate{size}",
            b.tool,
            b.command,
            b.seconds,
            thousands(b.samples_per_second as u64),
            b.ratio
        ));
    }
    if let Some(h) = &report.history_baseline {
        output::line(format!(
            "History baseline: `{}` over the same samples as plain rows in the same file: p50 \
             {:.2} ms, p99 {:.2} ms; aimon's metric_history answered {:.1}× faster (p50)",
            h.statement, h.latency.p50_ms, h.latency.p99_ms, h.speedup
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
                "To delete them: sqlite3 FILE \"DELETE FROM chunks WHERE tagset IN (SELECT id FROM \
                 series_tagsets WHERE series_id LIKE 'bench-{run}/%'); DELETE FROM series_tagsets \
                 WHERE series_id LIKE 'bench-{run}/%'; DELETE FROM series WHERE id LIKE 'bench-{run}/%'\"",
                run = report.run
            ));
        }
    }
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

/// The batches of round `round` of `rounds`: aimon's and curl's rounds hold the same ones.
fn round_batches(batches: u64, rounds: u64, round: u64) -> std::ops::Range<u64> {
    batches * round / rounds..batches * (round + 1) / rounds
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
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = latency(&samples);
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (50.0, 99.0, 100.0));
        let one = latency(&[Duration::from_millis(7)]);
        assert_eq!((one.p50_ms, one.p99_ms), (7.0, 7.0));
        assert_eq!(latency(&[]).p50_ms, 0.0);
    }
}
