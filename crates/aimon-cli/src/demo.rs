//! `aimon demo`: simulate a fleet into the store, then read it back the way a user would.
//!
//! Each run has an id (`--run`, by default its start time in milliseconds) that tags every
//! sample (`run=<id>`), labels every alert, prefixes alert ids and sits in agent-state metadata.
//! Every read after the writes is restricted to the run, so running the demo again into the same
//! store shows exactly what the first run showed, not the sum of both. Agent ids stay `agent-01`
//! … across runs; an agent's latest state is the newest run's.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use aimon::{
    AgentStateQuery, Aggregation, Alert, AlertQuery, AlertStatus, FilterOp, HistoryQuery,
    HistorySeries, MetricQuery, QueryOptions, SimilarAlertsQuery, SortOrder, WriteReport,
};

use crate::chart;
use crate::cli::{DemoArgs, Global};
use crate::config::Storage;
use crate::error::{CliError, Result};
use crate::footprint::Footprint;
use crate::output::{self, thousands};
use crate::progress;
use crate::sim::{Fleet, METRICS, SimCounts};
use aimon::parse;

/// Items the summary reads back at most.
const READ_LIMIT: usize = 10_000;
/// Open alerts shown in the table.
const SHOWN_ALERTS: usize = 15;
/// Similar past alerts shown for the most severe open alert.
const SIMILAR_ALERTS: usize = 5;

#[derive(Debug, Serialize)]
struct Summary {
    backend: String,
    /// The backend's type, for the wording of the store's size (in `backend` for JSON).
    #[serde(skip)]
    backend_type: aimon::StorageBackendType,
    /// This run's id: the `run` tag of its samples and label of its alerts.
    run: String,
    agents: u32,
    hours: u32,
    interval_seconds: f64,
    seed: u64,
    ticks: u64,
    window_start: DateTime<Utc>,
    window_end: DateTime<Utc>,
    series: u64,
    samples_written: u64,
    samples_expired: u64,
    alert_writes: u64,
    /// Agent states the simulation sent (status changes and heartbeats).
    agent_state_updates: u64,
    /// Of those, the ones the store kept out because it held a newer state of the agent (from
    /// an earlier run whose window ended later).
    agent_state_updates_superseded: u64,
    batches: u64,
    elapsed_seconds: f64,
    samples_per_second: f64,
    /// The store's size and bytes per sample after the writes: the whole store, earlier runs
    /// included.
    store: Footprint,
    simulation: SimCounts,
    fleet: Vec<AgentRow>,
    open_alerts: Vec<Alert>,
    /// For the most severe open alert, the resolved alerts most like it (any run), when the
    /// backend has the similarity-search capability.
    similar_past_alerts: Option<SimilarPast>,
    latency_history: Vec<Point>,
}

#[derive(Debug, Serialize)]
struct SimilarPast {
    alert_id: String,
    similar: Vec<SimilarRow>,
}

#[derive(Debug, Serialize)]
struct SimilarRow {
    score: f32,
    alert: Alert,
}

#[derive(Debug, Serialize)]
struct AgentRow {
    agent: String,
    status: String,
    last_heartbeat: Option<DateTime<Utc>>,
    model: String,
    region: String,
    tokens: f64,
    avg_latency_ms: Option<f64>,
    cost_usd: f64,
    open_alerts: u64,
}

#[derive(Debug, Serialize)]
struct Point {
    start: DateTime<Utc>,
    value: f64,
    count: u64,
}

/// `now` rounded down to a multiple of `interval` since the epoch, so ticks line up with
/// history buckets.
fn window_end(now: DateTime<Utc>, interval: TimeDelta) -> DateTime<Utc> {
    let step = interval.num_microseconds().unwrap_or(i64::MAX).max(1);
    let t = now.timestamp_micros();
    aimon::time::from_micros(t - t.rem_euclid(step))
}

pub async fn run(storage: &Storage, global: &Global, args: &DemoArgs) -> Result<()> {
    let window = TimeDelta::hours(i64::from(args.hours));
    let interval_us = args.interval.num_microseconds().unwrap_or(i64::MAX);
    let ticks = window.num_microseconds().unwrap_or(i64::MAX) / interval_us;
    if ticks < 1 {
        return Err(CliError::new(format!(
            "--interval {}s is longer than the {}h window",
            args.interval.as_seconds_f64(),
            args.hours
        )));
    }
    let ticks = ticks as u64;
    let samples_total = ticks * u64::from(args.agents) * METRICS.len() as u64;
    if samples_total > 2_000_000_000 {
        return Err(CliError::new(format!(
            "the demo would write {} samples; use fewer agents, fewer hours or a longer --interval",
            thousands(samples_total)
        )));
    }
    let backend = storage.manager.get_backend(storage.name())?;
    let backend_label = format!("{} ({})", backend.name(), backend.backend_type());
    let now = aimon::time::now();
    let run = match &args.run {
        Some(run) => {
            ensure_new_run(storage, run).await?;
            run.clone()
        }
        None => now.timestamp_millis().to_string(),
    };
    let end = window_end(
        parse::time_at(&args.end, now).map_err(CliError::new)?,
        args.interval,
    );
    let mut fleet = Fleet::new(args.agents, args.seed, &run, end, args.interval, ticks);
    let start = fleet.start();
    let agents_meta: BTreeMap<String, (String, String)> = fleet
        .agents
        .iter()
        .map(|a| (a.id.clone(), (a.model.to_owned(), a.region.to_owned())))
        .collect();
    let per_tick = u64::from(args.agents) * METRICS.len() as u64;
    let ticks_per_batch = (args.batch_size / per_tick).max(1);
    tracing::info!(
        agents = args.agents,
        ticks,
        samples_total,
        ticks_per_batch,
        run = %run,
        backend = %backend_label,
        "simulating"
    );

    // The simulation runs on its own thread, one batch ahead of the writer.
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let generator = std::thread::spawn(move || {
        while let Some(batch) = fleet.next_batch(ticks_per_batch) {
            if tx.blocking_send(batch).is_err() {
                break;
            }
        }
        fleet.counts
    });

    let bar = progress::bar(samples_total, "samples", global);
    let name = storage.name();
    let started = Instant::now();
    let (mut metrics_report, mut states_report, mut alert_writes, mut state_updates, mut batches) = (
        WriteReport::default(),
        WriteReport::default(),
        0u64,
        0u64,
        0u64,
    );
    while let Some(batch) = rx.recv().await {
        metrics_report += storage.manager.save_metrics(&batch.metrics, name).await?;
        if !batch.alerts.is_empty() {
            alert_writes += storage
                .manager
                .save_alerts(&batch.alerts, name)
                .await?
                .written;
        }
        state_updates += batch.states.len() as u64;
        states_report += storage
            .manager
            .save_agent_states(&batch.states, name)
            .await?;
        batches += 1;
        bar.inc(batch.samples);
    }
    let elapsed = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let counts = generator
        .join()
        .map_err(|_| CliError::new("the simulation thread failed"))?;
    // SQLite: no checkpoint first. The backend's size is page_count × page_size, which counts
    // the committed pages still in the WAL as well (the aimon-sqlite crate docs, "Stats").
    let store = Footprint::read(storage).await?;

    let reads = RunReads {
        storage,
        run: &run,
        start,
        end: end + args.interval,
    };
    let fleet_rows = fleet_table(&reads, &agents_meta).await?;
    let open_alerts = open_alerts(storage, &run).await?;
    let similar_past_alerts = similar_past(storage, open_alerts.first()).await?;
    let latency = reads
        .history(
            "llm.latency_ms",
            TimeDelta::minutes(30),
            Aggregation::Avg,
            None,
        )
        .await?;
    let latency_history: Vec<Point> = latency
        .into_iter()
        .flat_map(|s| s.buckets)
        .map(|b| Point {
            start: b.start,
            value: b.value,
            count: b.count,
        })
        .collect();

    let summary = Summary {
        backend: backend_label,
        backend_type: backend.backend_type(),
        run,
        agents: args.agents,
        hours: args.hours,
        interval_seconds: args.interval.as_seconds_f64(),
        seed: args.seed,
        ticks,
        window_start: start,
        window_end: end,
        series: per_tick,
        samples_written: metrics_report.written,
        samples_expired: metrics_report.expired,
        alert_writes,
        agent_state_updates: state_updates,
        agent_state_updates_superseded: states_report.superseded,
        batches,
        elapsed_seconds: elapsed,
        samples_per_second: samples_total as f64 / elapsed.max(1e-9),
        store,
        simulation: counts,
        fleet: fleet_rows,
        open_alerts,
        similar_past_alerts,
        latency_history,
    };
    if global.json {
        return output::json(&summary);
    }
    print_summary(&summary);
    Ok(())
}

/// Fails when the store already holds data of `run`, which the summary could not tell apart.
async fn ensure_new_run(storage: &Storage, run: &str) -> Result<()> {
    let one = QueryOptions::default().limit(1);
    let metrics = storage
        .manager
        .query_metrics(
            &MetricQuery::new()
                .name(METRICS[0].0)
                .tag("run", run)
                .options(one.clone()),
            storage.name(),
        )
        .await?;
    let alerts = storage
        .manager
        .query_alerts(
            &AlertQuery::new().label("run", run).options(one),
            storage.name(),
        )
        .await?;
    if metrics.is_empty() && alerts.is_empty() {
        Ok(())
    } else {
        Err(CliError::new(format!(
            "the store already holds demo run {run:?}; choose another --run, or leave it out to use the start time"
        )))
    }
}

/// The samples of one demo run in its window, as the summary reads them back.
struct RunReads<'a> {
    storage: &'a Storage,
    run: &'a str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl RunReads<'_> {
    /// `metric_history` of the run's samples (tag `run=<id>`) through the manager.
    async fn history(
        &self,
        name: &str,
        step: TimeDelta,
        aggregation: Aggregation,
        group_by: Option<&str>,
    ) -> Result<Vec<HistorySeries>> {
        let mut query = HistoryQuery::new(name, step, aggregation)
            .range(self.start, self.end)
            .tag("run", self.run);
        query.group_by = group_by.map(str::to_owned);
        Ok(self
            .storage
            .manager
            .get_metric_history(&query, self.storage.name())
            .await?)
    }
}

/// Per group: (sum of bucket values, sum of value × count, sum of counts).
fn totals(series: Vec<HistorySeries>) -> BTreeMap<String, (f64, f64, u64)> {
    series
        .into_iter()
        .map(|s| {
            let total = s.buckets.iter().fold((0.0, 0.0, 0), |(sum, w, n), b| {
                (sum + b.value, w + b.value * b.count as f64, n + b.count)
            });
            (s.group.unwrap_or_default(), total)
        })
        .collect()
}

async fn fleet_table(
    reads: &RunReads<'_>,
    meta: &BTreeMap<String, (String, String)>,
) -> Result<Vec<AgentRow>> {
    let (storage, run) = (reads.storage, reads.run);
    let name = storage.name();
    let step = TimeDelta::hours(1);
    let agent = Some("agent");
    let prompt = totals(
        reads
            .history("llm.prompt_tokens", step, Aggregation::Sum, agent)
            .await?,
    );
    let completion = totals(
        reads
            .history("llm.completion_tokens", step, Aggregation::Sum, agent)
            .await?,
    );
    let latency = totals(
        reads
            .history("llm.latency_ms", step, Aggregation::Avg, agent)
            .await?,
    );
    let cost = totals(
        reads
            .history("llm.cost_usd", step, Aggregation::Sum, agent)
            .await?,
    );
    let states = storage
        .manager
        .get_agent_states(
            &AgentStateQuery::new().options(QueryOptions::default().limit(READ_LIMIT)),
            name,
        )
        .await?;
    // The latest state of an agent is this run's unless an earlier run's window ended later.
    let states: BTreeMap<_, _> = states
        .into_iter()
        .filter(|s| s.metadata.get("run").and_then(|r| r.as_str()) == Some(run))
        .map(|s| (s.agent_id.clone(), s))
        .collect();
    let mut open: BTreeMap<String, u64> = BTreeMap::new();
    for alert in open_alert_query(storage, run, READ_LIMIT).await? {
        *open.entry(alert.source).or_default() += 1;
    }
    Ok(meta
        .iter()
        .map(|(id, (model, region))| {
            let state = states.get(id);
            let sum = |m: &BTreeMap<String, (f64, f64, u64)>| m.get(id).map_or(0.0, |t| t.0);
            AgentRow {
                agent: id.clone(),
                status: state.map_or_else(|| "unknown".to_owned(), |s| s.status.clone()),
                last_heartbeat: state.map(|s| s.last_heartbeat),
                model: model.clone(),
                region: region.clone(),
                tokens: sum(&prompt) + sum(&completion),
                avg_latency_ms: latency
                    .get(id)
                    .filter(|t| t.2 > 0)
                    .map(|t| t.1 / t.2 as f64),
                cost_usd: sum(&cost),
                open_alerts: open.get(id).copied().unwrap_or(0),
            }
        })
        .collect())
}

async fn open_alert_query(storage: &Storage, run: &str, limit: usize) -> Result<Vec<Alert>> {
    let options = QueryOptions::default()
        .filter(
            "status",
            FilterOp::In,
            serde_json::json!(["active", "acknowledged"]),
        )
        .sort("severity", SortOrder::Desc)
        .limit(limit);
    Ok(storage
        .manager
        .query_alerts(
            &AlertQuery::new().label("run", run).options(options),
            storage.name(),
        )
        .await?)
}

async fn open_alerts(storage: &Storage, run: &str) -> Result<Vec<Alert>> {
    let mut alerts = open_alert_query(storage, run, READ_LIMIT).await?;
    // Most severe first, then the most recent.
    alerts.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.start_time.cmp(&a.start_time))
    });
    Ok(alerts)
}

/// The resolved alerts most like `open`, when the backend answers similarity queries.
async fn similar_past(storage: &Storage, open: Option<&Alert>) -> Result<Option<SimilarPast>> {
    let Some(open) = open else {
        return Ok(None);
    };
    let backend = storage.manager.get_backend(storage.name())?;
    if !backend.capabilities().similarity_search {
        return Ok(None);
    }
    let query = SimilarAlertsQuery::item(&open.id)
        .limit(SIMILAR_ALERTS)
        .filter(AlertQuery::new().status(AlertStatus::Resolved));
    let similar = storage
        .manager
        .find_similar_alerts(&query, storage.name())
        .await?
        .into_iter()
        .map(|s| SimilarRow {
            score: s.score,
            alert: s.item,
        })
        .collect();
    Ok(Some(SimilarPast {
        alert_id: open.id.clone(),
        similar,
    }))
}

fn print_summary(s: &Summary) {
    let now = aimon::time::now();
    output::line(format!(
        "Simulated {} agents over {}h at {}s intervals (seed {}) into {}, run {}",
        s.agents, s.hours, s.interval_seconds, s.seed, s.backend, s.run
    ));
    output::line(format!(
        "Wrote {} samples in {} series, {} alert updates and {} agent state updates in {:.2} s: {} samples/s",
        thousands(s.samples_written),
        thousands(s.series),
        thousands(s.alert_writes),
        thousands(s.agent_state_updates),
        s.elapsed_seconds,
        thousands(s.samples_per_second as u64),
    ));
    output::line(s.store.sentence(s.backend_type));
    if s.samples_expired > 0 {
        output::line(format!(
            "{} samples were already past the metric TTL and were not stored",
            thousands(s.samples_expired)
        ));
    }
    output::line(format!(
        "Alerts fired {}, acknowledged {}, resolved {}; {} status changes",
        s.simulation.alerts_fired,
        s.simulation.alerts_acknowledged,
        s.simulation.alerts_resolved,
        s.simulation.status_changes
    ));
    output::line(format!(
        "What follows is run {run} only: its samples are tagged and its alerts labelled run={run} \
         (aimon query alerts --label run={run}, aimon history NAME --tag run={run})",
        run = s.run
    ));
    output::line("");

    let mut table = output::table(
        &[
            "agent",
            "status",
            "last heartbeat",
            "model",
            "region",
            "tokens",
            "avg latency ms",
            "cost USD",
            "open alerts",
        ],
        &["tokens", "avg latency ms", "cost USD", "open alerts"],
    );
    for row in &s.fleet {
        table.add_row(vec![
            row.agent.clone(),
            row.status.clone(),
            row.last_heartbeat
                .map_or_else(|| "-".to_owned(), |t| output::ago(t, now)),
            row.model.clone(),
            row.region.clone(),
            thousands(row.tokens as u64),
            row.avg_latency_ms
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}")),
            format!("{:.2}", row.cost_usd),
            row.open_alerts.to_string(),
        ]);
    }
    output::line(table);
    output::line("");

    if s.open_alerts.is_empty() {
        output::line("No open alerts.");
    } else {
        output::line(format!(
            "Open alerts: {}{}",
            s.open_alerts.len(),
            if s.open_alerts.len() > SHOWN_ALERTS {
                format!(" (the {SHOWN_ALERTS} most severe)")
            } else {
                String::new()
            }
        ));
        output::line(alerts_table(
            &s.open_alerts[..s.open_alerts.len().min(SHOWN_ALERTS)],
            now,
        ));
    }
    if let Some(past) = &s.similar_past_alerts {
        output::line("");
        if past.similar.is_empty() {
            output::line(format!(
                "Similar past alerts for {}: none resolved yet.",
                past.alert_id
            ));
        } else {
            output::line(format!(
                "Similar past alerts for {} (resolved, by similarity):",
                past.alert_id
            ));
            let mut table = output::table(
                &["score", "id", "name", "source", "started", "resolved by"],
                &["score"],
            );
            for row in &past.similar {
                let a = &row.alert;
                table.add_row(vec![
                    format!("{:.3}", row.score),
                    a.id.clone(),
                    a.name.clone(),
                    a.source.clone(),
                    output::ago(a.start_time, now),
                    a.resolved_by.clone().unwrap_or_else(|| "-".to_owned()),
                ]);
            }
            output::line(table);
        }
    }
    output::line("");
    let points: Vec<_> = s
        .latency_history
        .iter()
        .map(|p| (p.start, p.value))
        .collect();
    output::line(chart::render(
        "Fleet average latency (ms) per 30 min",
        &points,
        64,
        10,
    ));
}

/// The table of alerts `demo` and `query alerts` print.
pub fn alerts_table(alerts: &[Alert], now: DateTime<Utc>) -> comfy_table::Table {
    let mut table = output::table(
        &[
            "id",
            "name",
            "severity",
            "status",
            "source",
            "started",
            "acknowledged by",
            "description",
        ],
        &[],
    );
    for a in alerts {
        table.add_row(vec![
            a.id.clone(),
            a.name.clone(),
            a.severity.to_string(),
            a.status.to_string(),
            a.source.clone(),
            output::ago(a.start_time, now),
            a.acknowledged_by.clone().unwrap_or_else(|| "-".to_owned()),
            a.description.clone().unwrap_or_default(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_ends_on_an_interval_boundary() {
        let now = DateTime::parse_from_rfc3339("2024-05-01T12:00:07.5Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            window_end(now, TimeDelta::seconds(10)).to_rfc3339(),
            "2024-05-01T12:00:00+00:00"
        );
    }
}
