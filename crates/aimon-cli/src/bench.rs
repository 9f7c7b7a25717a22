//! `aimon bench`: ingest throughput and query latency of the configured store.

use std::time::{Duration, Instant};

use chrono::TimeDelta;
use serde::Serialize;

use aimon::{Aggregation, HistoryQuery, Metric, MetricQuery, MetricType, MetricValue, Tags};

use crate::cli::{BenchArgs, Global};
use crate::config::Storage;
use crate::error::Result;
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
}

pub async fn run(storage: &Storage, global: &Global, args: &BenchArgs) -> Result<()> {
    let backend = storage.manager.get_backend(storage.name())?;
    let name = storage.name();
    let now = aimon::time::now();
    let run = format!("{}", now.timestamp_millis());
    let series = args.series.min(args.samples);
    let per_series = args.samples.div_ceil(series);
    // Keep every sample within the last hour, at most one second apart.
    let spacing_us = (3_600_000_000 / per_series as i64).clamp(1, 1_000_000);
    let start = now - TimeDelta::microseconds(spacing_us * per_series as i64);
    let ids: Vec<String> = (0..series)
        .map(|s| format!("bench-{run}/s{s:04}"))
        .collect();
    let tags: Vec<Tags> = (0..series)
        .map(|s| {
            Tags::from([
                ("run".to_owned(), run.clone()),
                ("series".to_owned(), format!("s{s:04}")),
                ("host".to_owned(), format!("host-{}", s % 10)),
            ])
        })
        .collect();

    let bar = progress::bar(args.samples, "samples", global);
    let mut batch_times = Vec::new();
    let mut written = 0;
    let wall = Instant::now();
    let mut next = 0u64;
    while next < args.samples {
        let end = (next + args.batch).min(args.samples);
        let mut metrics: Vec<Metric> = Vec::new();
        let mut index = vec![usize::MAX; series as usize];
        for i in next..end {
            let s = (i % series) as usize;
            let seq = (i / series) as i64;
            if index[s] == usize::MAX {
                index[s] = metrics.len();
                let mut m = Metric::new(ids[s].clone(), METRIC_NAME, MetricType::Gauge);
                m.unit = Some("ms".to_owned());
                metrics.push(m);
            }
            metrics[index[s]].values.push(MetricValue {
                timestamp: start + TimeDelta::microseconds(seq * spacing_us),
                value: 100.0 + (i % 97) as f64 * 1.5,
                tags: tags[s].clone(),
            });
        }
        let started = Instant::now();
        written += storage.manager.save_metrics(&metrics, name).await?.written;
        batch_times.push(started.elapsed());
        bar.inc(end - next);
        next = end;
    }
    bar.finish_and_clear();
    let wall_seconds = wall.elapsed().as_secs_f64();
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

    let report = Report {
        backend: format!("{} ({})", backend.name(), backend.backend_type()),
        run,
        samples: args.samples,
        series,
        batch: args.batch,
        batches: batch_times.len() as u64,
        samples_written: written,
        write_seconds,
        wall_seconds,
        samples_per_second: args.samples as f64 / write_seconds.max(1e-9),
        batch_latency: latency(&batch_times),
        query_iterations: args.queries,
        query_metrics: latency(&query_times),
        metric_history: latency(&history_times),
    };
    if global.json {
        return output::json(&report);
    }
    output::line(format!(
        "Wrote {} samples in {} batches of {} into {}: {:.2} s in save_metrics ({:.2} s wall), {} samples/s",
        thousands(report.samples_written),
        report.batches,
        thousands(report.batch),
        report.backend,
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
