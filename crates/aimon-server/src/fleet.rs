//! `GET /api/v1/fleet`: one row per agent over a time range, the dashboard's overview.
//!
//! An agent is the `agent` tag of its samples (the demo, OTLP and remote-write series all carry
//! it) and the `agent_id` of its states. Its figures come from the metrics the demo and the
//! OpenTelemetry GenAI-style agents report ([`PROMPT_TOKENS`] and the other constants), each
//! read with one `history` query grouped by agent over the whole range (whole windows come from
//! the stores' summaries); the 95th percentile of latency reads the latency samples themselves.

use std::collections::{BTreeMap, HashMap};

use aimon::{
    AgentState, AgentStateQuery, Aggregation, AlertQuery, AlertStatus, HistoryQuery, HistorySeries,
    MetricQuery, QueryOptions, Tags,
};
use axum::Json;
use axum::extract::{RawQuery, State};
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::server::App;

/// The tag naming the agent a sample is about.
pub const AGENT_TAG: &str = "agent";
/// Prompt tokens per interval (summed).
pub const PROMPT_TOKENS: &str = "llm.prompt_tokens";
/// Completion tokens per interval (summed).
pub const COMPLETION_TOKENS: &str = "llm.completion_tokens";
/// Spend per interval in USD (summed).
pub const COST: &str = "llm.cost_usd";
/// Model-call latency in ms (averaged; its 95th percentile from the samples).
pub const LATENCY: &str = "llm.latency_ms";
/// Share of failed calls (averaged over samples).
pub const ERROR_RATE: &str = "llm.error_rate";

/// The most agents, and the most alerts of each kind, one answer counts.
const MAX_ITEMS: usize = 100_000;

/// The overview of a fleet over `[start, end)`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Fleet {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    /// A heartbeat older than this (before `end`) is stale.
    stale_after_seconds: i64,
    /// Every agent with a state or a sample in the range, by `agent_id`.
    agents: Vec<AgentRow>,
    totals: Totals,
    /// The store held more agents, latency series or alerts than one answer reads
    /// ([`MAX_ITEMS`] of each): the figures leave the rest out.
    truncated: bool,
}

/// One agent's figures; a figure without samples is `null`.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct AgentRow {
    agent_id: String,
    /// Its latest state's status; `null` for an agent that only has samples.
    status: Option<String>,
    last_heartbeat: Option<DateTime<Utc>>,
    /// Its last heartbeat is more than `stale_after` before `end`; `null` for an agent without
    /// any state (one that only sends samples, as OTLP and Prometheus senders do).
    stale: Option<bool>,
    /// The string fields of its latest state's metadata (model, region, …).
    #[schema(value_type = Object)]
    tags: Tags,
    #[serde(flatten)]
    figures: Figures,
}

/// The figures of one agent or of the whole fleet.
#[derive(Debug, Default, Clone, Serialize, ToSchema)]
pub struct Figures {
    prompt_tokens: Option<f64>,
    completion_tokens: Option<f64>,
    /// Prompt and completion tokens.
    tokens: Option<f64>,
    cost_usd: Option<f64>,
    latency_avg_ms: Option<f64>,
    /// Nearest-rank 95th percentile of the latency samples.
    latency_p95_ms: Option<f64>,
    /// The mean of the error-rate samples.
    error_rate: Option<f64>,
    /// Latency samples in the range.
    samples: u64,
    /// Alerts from this agent (`source`) that are active or acknowledged now; in `totals`,
    /// every such alert of the store (of the listed agents under a tag filter).
    open_alerts: u64,
    /// Alerts from this agent that started in the range; in `totals`, as `open_alerts`.
    alerts_in_range: u64,
}

/// The fleet's figures, and how many agents it has and how many are stale.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Totals {
    agents: usize,
    stale: usize,
    #[serde(flatten)]
    figures: Figures,
}

/// A sum and a count of samples, per agent.
#[derive(Default, Clone, Copy)]
struct Acc {
    sum: f64,
    count: u64,
}

impl Acc {
    fn total(self) -> Option<f64> {
        (self.count > 0).then_some(self.sum)
    }

    fn mean(self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

/// Every agent of the fleet with its tokens, cost, latency (average and p95), error rate and
/// alerts over a range; `tag=KEY=VALUE` keeps the samples with those tags and the agents whose
/// state metadata has them.
#[utoipa::path(get, path = "/api/v1/fleet", tag = "agents",
    params(("start" = Option<String>, Query, description = "default 24h ago"),
        ("end" = Option<String>, Query, description = "default now"),
        ("tag" = Option<Vec<String>>, Query, description = "KEY=VALUE, repeatable"),
        ("stale_after" = Option<String>, Query, description = "default 5m")),
    responses((status = 200, body = Fleet)))]
pub async fn fleet(State(app): State<App>, RawQuery(query): RawQuery) -> ApiResult<Json<Fleet>> {
    let mut p = Params::new(query.as_deref());
    let end = p.time("end")?.unwrap_or_else(aimon::time::now);
    let start = p.time("start")?.unwrap_or(end - TimeDelta::hours(24));
    let tags = p.pairs("tag")?;
    let stale_after = p.duration("stale_after")?.unwrap_or(TimeDelta::minutes(5));
    p.finish()?;
    if start >= end {
        return Err(ApiError::invalid("start", "start must be before end"));
    }
    if stale_after <= TimeDelta::zero() {
        return Err(ApiError::invalid("stale_after", "must be positive"));
    }

    let m = &app.manager;
    // One bucket covers the range, so whole windows come from summaries; buckets align to
    // the epoch, so the range may straddle two, summed below.
    let step = (end - start).min(aimon::query::MAX_STEP);
    let history = |name: &'static str, aggregation: Aggregation| {
        let mut query = HistoryQuery::new(name, step, aggregation)
            .range(start, end)
            .group_by(AGENT_TAG);
        query.tags = tags.clone();
        async move { m.get_metric_history(&query, None).await }
    };
    let latency_samples = MetricQuery {
        name: Some(LATENCY.to_owned()),
        start: Some(start),
        end: Some(end),
        tags: tags.clone(),
        options: QueryOptions::default().limit(MAX_ITEMS),
        ..MetricQuery::default()
    };
    let states = AgentStateQuery {
        options: QueryOptions::default().limit(MAX_ITEMS),
        ..AgentStateQuery::default()
    };
    let open = |status: AlertStatus| AlertQuery {
        status: Some(status),
        options: QueryOptions::default().limit(MAX_ITEMS),
        ..AlertQuery::default()
    };
    let started = AlertQuery {
        start: Some(start),
        end: Some(end),
        options: QueryOptions::default().limit(MAX_ITEMS),
        ..AlertQuery::default()
    };
    let (active_query, acked_query) = (open(AlertStatus::Active), open(AlertStatus::Acknowledged));
    let (prompt, completion, cost, latency, errors, samples, states, active, acked, started) = tokio::try_join!(
        history(PROMPT_TOKENS, Aggregation::Sum),
        history(COMPLETION_TOKENS, Aggregation::Sum),
        history(COST, Aggregation::Sum),
        history(LATENCY, Aggregation::Avg),
        history(ERROR_RATE, Aggregation::Avg),
        m.query_metrics(&latency_samples, None),
        m.get_agent_states(&states, None),
        m.query_alerts(&active_query, None),
        m.query_alerts(&acked_query, None),
        m.query_alerts(&started, None),
    )?;

    let truncated = [
        samples.len(),
        states.len(),
        active.len(),
        acked.len(),
        started.len(),
    ]
    .iter()
    .any(|&n| n >= MAX_ITEMS);
    let mut latencies: HashMap<String, Vec<f64>> = HashMap::new();
    for series in samples {
        for sample in series.values {
            let Some(agent) = sample.tags.get(AGENT_TAG) else {
                continue;
            };
            match latencies.get_mut(agent) {
                Some(values) => values.push(sample.value),
                None => {
                    latencies.insert(agent.clone(), vec![sample.value]);
                }
            }
        }
    }
    let count_by_source = |alerts: &[aimon::Alert], counts: &mut HashMap<String, u64>| {
        for alert in alerts {
            *counts.entry(alert.source.clone()).or_default() += 1;
        }
    };
    let mut open_alerts = HashMap::new();
    count_by_source(&active, &mut open_alerts);
    count_by_source(&acked, &mut open_alerts);
    let mut in_range = HashMap::new();
    count_by_source(&started, &mut in_range);

    let per_agent = [
        grouped(prompt, Aggregation::Sum),
        grouped(completion, Aggregation::Sum),
        grouped(cost, Aggregation::Sum),
        grouped(latency, Aggregation::Avg),
        grouped(errors, Aggregation::Avg),
    ];
    let [prompt, completion, cost, latency, errors] = &per_agent;

    // Agents: those with samples in the range (under the tag filter), and those with a state
    // whose metadata carries the filter's tags.
    let mut rows: BTreeMap<String, AgentRow> = BTreeMap::new();
    for agent in per_agent
        .iter()
        .flat_map(|g| g.keys())
        .chain(latencies.keys())
    {
        rows.entry(agent.clone()).or_default();
    }
    for state in states {
        let state_tags = metadata_tags(&state);
        if tags.iter().all(|(k, v)| state_tags.get(k) == Some(v))
            || rows.contains_key(&state.agent_id)
        {
            let row = rows.entry(state.agent_id.clone()).or_default();
            row.status = Some(state.status);
            row.last_heartbeat = Some(state.last_heartbeat);
            row.tags = state_tags;
        }
    }

    let mut all_latencies = Vec::new();
    let mut fleet = Totals::default();
    let (mut fleet_latency, mut fleet_errors) = (Acc::default(), Acc::default());
    let (mut fleet_prompt, mut fleet_completion, mut fleet_cost) =
        (Acc::default(), Acc::default(), Acc::default());
    for (agent, row) in rows.iter_mut() {
        row.agent_id = agent.clone();
        row.stale = row
            .last_heartbeat
            .map(|heartbeat| heartbeat < end - stale_after);
        let get = |g: &HashMap<String, Acc>| g.get(agent).copied().unwrap_or_default();
        let (p, c, cost, lat, err) = (
            get(prompt),
            get(completion),
            get(cost),
            get(latency),
            get(errors),
        );
        let mut values = latencies.remove(agent).unwrap_or_default();
        row.figures = Figures {
            prompt_tokens: p.total(),
            completion_tokens: c.total(),
            tokens: tokens(p, c),
            cost_usd: cost.total(),
            latency_avg_ms: lat.mean(),
            latency_p95_ms: p95(&mut values),
            error_rate: err.mean(),
            samples: values.len() as u64,
            open_alerts: open_alerts.get(agent).copied().unwrap_or(0),
            alerts_in_range: in_range.get(agent).copied().unwrap_or(0),
        };
        all_latencies.append(&mut values);
        for (total, acc) in [
            (&mut fleet_prompt, p),
            (&mut fleet_completion, c),
            (&mut fleet_cost, cost),
            (&mut fleet_latency, lat),
            (&mut fleet_errors, err),
        ] {
            total.sum += acc.sum;
            total.count += acc.count;
        }
        fleet.agents += 1;
        fleet.stale += usize::from(row.stale == Some(true));
        fleet.figures.open_alerts += row.figures.open_alerts;
        fleet.figures.alerts_in_range += row.figures.alerts_in_range;
    }
    if tags.is_empty() {
        // Alerts whose source is no agent of the answer (a gateway, a job) count too.
        fleet.figures.open_alerts = (active.len() + acked.len()) as u64;
        fleet.figures.alerts_in_range = started.len() as u64;
    }
    fleet.figures.prompt_tokens = fleet_prompt.total();
    fleet.figures.completion_tokens = fleet_completion.total();
    fleet.figures.tokens = tokens(fleet_prompt, fleet_completion);
    fleet.figures.cost_usd = fleet_cost.total();
    fleet.figures.latency_avg_ms = fleet_latency.mean();
    fleet.figures.error_rate = fleet_errors.mean();
    fleet.figures.samples = all_latencies.len() as u64;
    fleet.figures.latency_p95_ms = p95(&mut all_latencies);

    Ok(Json(Fleet {
        start,
        end,
        stale_after_seconds: stale_after.num_seconds(),
        agents: rows.into_values().collect(),
        totals: fleet,
        truncated,
    }))
}

/// Per agent, the sum of the samples of a history of sums or averages, and their count.
fn grouped(series: Vec<HistorySeries>, aggregation: Aggregation) -> HashMap<String, Acc> {
    let mut out: HashMap<String, Acc> = HashMap::new();
    for s in series {
        let Some(agent) = s.group else { continue };
        let acc = out.entry(agent).or_default();
        for b in s.buckets {
            acc.sum += match aggregation {
                // An average bucket's sum is its mean times its count.
                Aggregation::Avg => b.value * b.count as f64,
                _ => b.value,
            };
            acc.count += b.count;
        }
    }
    out
}

fn tokens(prompt: Acc, completion: Acc) -> Option<f64> {
    (prompt.count + completion.count > 0).then_some(prompt.sum + completion.sum)
}

/// The nearest-rank 95th percentile (the smallest value at or above 95 % of them).
fn p95(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let rank = (values.len() as f64 * 0.95).ceil() as usize;
    let (_, value, _) = values.select_nth_unstable_by(rank.max(1) - 1, f64::total_cmp);
    Some(*value)
}

/// The string fields of a state's metadata, as tags to filter and show.
fn metadata_tags(state: &AgentState) -> Tags {
    state
        .metadata
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p95_is_the_nearest_rank() {
        assert_eq!(p95(&mut []), None);
        assert_eq!(p95(&mut [7.0]), Some(7.0));
        let mut hundred: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(p95(&mut hundred), Some(95.0));
        let mut twenty: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(p95(&mut twenty), Some(19.0));
        let mut twentyone: Vec<f64> = (1..=21).map(f64::from).collect();
        assert_eq!(p95(&mut twentyone), Some(20.0));
    }

    #[test]
    fn averages_weigh_each_bucket_by_its_count() {
        let bucket = |value: f64, count: u64| aimon::HistoryBucket {
            start: DateTime::UNIX_EPOCH,
            value,
            count,
        };
        let series = vec![
            HistorySeries {
                group: Some("a".into()),
                buckets: vec![bucket(10.0, 1), bucket(1.0, 9)],
            },
            HistorySeries {
                group: None,
                buckets: vec![bucket(5.0, 5)],
            },
        ];
        let g = grouped(series.clone(), Aggregation::Avg);
        assert_eq!(g.len(), 1);
        assert_eq!(g["a"].mean(), Some(1.9));
        assert_eq!(g["a"].count, 10);
        let g = grouped(series, Aggregation::Sum);
        assert_eq!(g["a"].total(), Some(11.0));
    }
}
