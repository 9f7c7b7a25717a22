//! `aimon bench --similarity N`: alert upserts, then similarity-query latency.

use std::time::Instant;

use chrono::TimeDelta;
use serde::Serialize;

use crate::cli::{BenchArgs, Global};
use crate::config::Storage;
use crate::error::{CliError, Result};
use crate::output::{self, millis, thousands};
use crate::progress;

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
pub(super) async fn similarity_bench(
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
