//! `aimon demo`: simulate a fleet into the store, then read it back the way a user would.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use aimon::{
    AgentStateQuery, Aggregation, Alert, AlertQuery, FilterOp, HistoryQuery, HistorySeries,
    QueryOptions, SortOrder, WriteReport,
};

use crate::chart;
use crate::cli::{DemoArgs, Global};
use crate::config::Storage;
use crate::error::{CliError, Result};
use crate::output::{self, thousands};
use crate::progress;
use crate::sim::{Fleet, METRICS, SimCounts};

/// Items the summary reads back at most.
const READ_LIMIT: usize = 10_000;
/// Open alerts shown in the table.
const SHOWN_ALERTS: usize = 15;

#[derive(Debug, Serialize)]
struct Summary {
    backend: String,
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
    agent_state_writes: u64,
    batches: u64,
    elapsed_seconds: f64,
    samples_per_second: f64,
    simulation: SimCounts,
    fleet: Vec<AgentRow>,
    open_alerts: Vec<Alert>,
    latency_history: Vec<Point>,
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
    let end = window_end(aimon::time::now(), args.interval);
    let mut fleet = Fleet::new(args.agents, args.seed, end, args.interval, ticks);
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
    let (mut metrics_report, mut alert_writes, mut state_writes, mut batches) =
        (WriteReport::default(), 0u64, 0u64, 0u64);
    while let Some(batch) = rx.recv().await {
        metrics_report += storage.manager.save_metrics(&batch.metrics, name).await?;
        if !batch.alerts.is_empty() {
            alert_writes += storage
                .manager
                .save_alerts(&batch.alerts, name)
                .await?
                .written;
        }
        state_writes += storage
            .manager
            .save_agent_states(&batch.states, name)
            .await?
            .written;
        batches += 1;
        bar.inc(batch.samples);
    }
    let elapsed = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let counts = generator
        .join()
        .map_err(|_| CliError::new("the simulation thread failed"))?;

    let read_end = end + args.interval;
    let fleet_rows = fleet_table(storage, &agents_meta, start, read_end).await?;
    let open_alerts = open_alerts(storage).await?;
    let latency = history(
        storage,
        "llm.latency_ms",
        start,
        read_end,
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
        agent_state_writes: state_writes,
        batches,
        elapsed_seconds: elapsed,
        samples_per_second: samples_total as f64 / elapsed.max(1e-9),
        simulation: counts,
        fleet: fleet_rows,
        open_alerts,
        latency_history,
    };
    if global.json {
        return output::json(&summary);
    }
    print_summary(&summary);
    Ok(())
}

/// `metric_history` through the manager.
pub async fn history(
    storage: &Storage,
    name: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    step: TimeDelta,
    aggregation: Aggregation,
    group_by: Option<&str>,
) -> Result<Vec<HistorySeries>> {
    let mut query = HistoryQuery::new(name, step, aggregation).range(start, end);
    query.group_by = group_by.map(str::to_owned);
    Ok(storage
        .manager
        .get_metric_history(&query, storage.name())
        .await?)
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
    storage: &Storage,
    meta: &BTreeMap<String, (String, String)>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<AgentRow>> {
    let name = storage.name();
    let step = TimeDelta::hours(1);
    let agent = Some("agent");
    let prompt = totals(
        history(
            storage,
            "llm.prompt_tokens",
            start,
            end,
            step,
            Aggregation::Sum,
            agent,
        )
        .await?,
    );
    let completion = totals(
        history(
            storage,
            "llm.completion_tokens",
            start,
            end,
            step,
            Aggregation::Sum,
            agent,
        )
        .await?,
    );
    let latency = totals(
        history(
            storage,
            "llm.latency_ms",
            start,
            end,
            step,
            Aggregation::Avg,
            agent,
        )
        .await?,
    );
    let cost = totals(
        history(
            storage,
            "llm.cost_usd",
            start,
            end,
            step,
            Aggregation::Sum,
            agent,
        )
        .await?,
    );
    let states = storage
        .manager
        .get_agent_states(
            &AgentStateQuery::new().options(QueryOptions::default().limit(READ_LIMIT)),
            name,
        )
        .await?;
    let states: BTreeMap<_, _> = states
        .into_iter()
        .map(|s| (s.agent_id.clone(), s))
        .collect();
    let mut open: BTreeMap<String, u64> = BTreeMap::new();
    for alert in open_alert_query(storage, READ_LIMIT).await? {
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

async fn open_alert_query(storage: &Storage, limit: usize) -> Result<Vec<Alert>> {
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
        .query_alerts(&AlertQuery::new().options(options), storage.name())
        .await?)
}

async fn open_alerts(storage: &Storage) -> Result<Vec<Alert>> {
    let mut alerts = open_alert_query(storage, READ_LIMIT).await?;
    // Most severe first, then the most recent.
    alerts.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.start_time.cmp(&a.start_time))
    });
    Ok(alerts)
}

fn print_summary(s: &Summary) {
    let now = aimon::time::now();
    output::line(format!(
        "Simulated {} agents over {}h at {}s intervals (seed {}) into {}",
        s.agents, s.hours, s.interval_seconds, s.seed, s.backend
    ));
    output::line(format!(
        "Wrote {} samples in {} series, {} alert updates and {} agent states in {:.2} s: {} samples/s",
        thousands(s.samples_written),
        thousands(s.series),
        thousands(s.alert_writes),
        thousands(s.agent_state_writes),
        s.elapsed_seconds,
        thousands(s.samples_per_second as u64),
    ));
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
