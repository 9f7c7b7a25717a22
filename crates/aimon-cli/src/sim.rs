//! The simulated fleet behind `aimon demo`: agents whose load follows the time of day, random
//! walks of latency and error rate, incidents (slowdowns, runaway loops, outages), status
//! changes, and alerts that fire, get acknowledged and resolve — all on simulated time.

use std::f64::consts::TAU;

use chrono::{DateTime, TimeDelta, Timelike, Utc};
use serde_json::json;

use aimon::{AgentState, Alert, AlertSeverity, Metadata, Metric, MetricType, MetricValue, Tags};

/// xoshiro256** seeded through SplitMix64: small, fast and the same on every platform.
pub struct Rng([u64; 4]);

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(f64::MIN_POSITIVE);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// The metrics each agent reports every tick: name, type, unit, description.
pub const METRICS: [(&str, MetricType, &str, &str); 6] = [
    (
        "llm.prompt_tokens",
        MetricType::Counter,
        "tokens",
        "Prompt tokens sent during the interval",
    ),
    (
        "llm.completion_tokens",
        MetricType::Counter,
        "tokens",
        "Completion tokens received during the interval",
    ),
    (
        "llm.latency_ms",
        MetricType::Gauge,
        "ms",
        "Mean model-call latency during the interval",
    ),
    (
        "llm.cost_usd",
        MetricType::Counter,
        "USD",
        "Model spend during the interval",
    ),
    (
        "llm.error_rate",
        MetricType::Gauge,
        "ratio",
        "Share of failed model calls during the interval",
    ),
    (
        "agent.tool_calls",
        MetricType::Counter,
        "calls",
        "Tool invocations during the interval",
    ),
];

/// Model, base latency (ms), USD per 1k prompt tokens, USD per 1k completion tokens.
const MODELS: [(&str, f64, f64, f64); 5] = [
    ("gpt-4o", 900.0, 0.0025, 0.010),
    ("claude-sonnet", 1_100.0, 0.003, 0.015),
    ("llama-3-70b", 650.0, 0.0009, 0.0009),
    ("mistral-large", 800.0, 0.002, 0.006),
    ("gemini-pro", 950.0, 0.00125, 0.005),
];
/// Region and its UTC offset in hours (drives the daily load curve).
const REGIONS: [(&str, i64); 4] = [
    ("us-east-1", -5),
    ("us-west-2", -8),
    ("eu-west-1", 0),
    ("ap-southeast-1", 8),
];
const ROLES: [&str; 5] = [
    "support",
    "research",
    "coding",
    "sales-ops",
    "data-pipeline",
];
const ON_CALL: [&str; 5] = ["alice", "bob", "chen", "dana", "emeka"];

/// Incidents per agent per hour.
const INCIDENT_RATE: f64 = 0.08;
/// Latency above this fires `HighLatency`.
pub const LATENCY_THRESHOLD_MS: f64 = 3_000.0;
/// Error rate above this fires `HighErrorRate`.
pub const ERROR_RATE_THRESHOLD: f64 = 0.05;
/// Spend above this multiple of an agent's normal peak fires `CostBurn`.
const COST_BURN_FACTOR: f64 = 2.5;
/// Consecutive ticks a condition must hold before its alert fires.
const FIRE_AFTER: u32 = 2;
/// Clear time (seconds, at least three ticks) before an open alert resolves.
const RESOLVE_AFTER_SECS: f64 = 120.0;

#[derive(Debug, Clone, Copy, PartialEq)]
enum IncidentKind {
    Slowdown,
    RunawayLoop,
    Outage,
}

#[derive(Debug, Clone, Copy)]
struct Incident {
    kind: IncidentKind,
    until: u64,
    factor: f64,
    /// Extra error rate during a slowdown.
    errors: f64,
}

/// The alert rules, evaluated per agent per tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    HighLatency,
    HighErrorRate,
    AgentDown,
    CostBurn,
}

impl Rule {
    const ALL: [Rule; 4] = [
        Rule::HighLatency,
        Rule::HighErrorRate,
        Rule::AgentDown,
        Rule::CostBurn,
    ];

    fn name(self) -> &'static str {
        match self {
            Rule::HighLatency => "HighLatency",
            Rule::HighErrorRate => "HighErrorRate",
            Rule::AgentDown => "AgentDown",
            Rule::CostBurn => "CostBurn",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Rule::HighLatency => "high-latency",
            Rule::HighErrorRate => "high-error-rate",
            Rule::AgentDown => "agent-down",
            Rule::CostBurn => "cost-burn",
        }
    }
}

/// An alert that has fired and not resolved yet.
struct OpenAlert {
    alert: Alert,
    ack_at: Option<u64>,
    clear_ticks: u32,
}

#[derive(Default)]
struct RuleState {
    firing_ticks: u32,
    open: Option<OpenAlert>,
}

/// What one agent did during one tick.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tick {
    pub requests: f64,
    pub prompt_tokens: f64,
    pub completion_tokens: f64,
    pub latency_ms: f64,
    pub cost_usd: f64,
    pub error_rate: f64,
    pub tool_calls: f64,
}

impl Tick {
    fn values(&self) -> [f64; 6] {
        [
            self.prompt_tokens,
            self.completion_tokens,
            self.latency_ms,
            self.cost_usd,
            self.error_rate,
            self.tool_calls,
        ]
    }
}

/// One simulated agent.
pub struct Agent {
    pub id: String,
    /// The demo run: tagged on every sample, labelled on every alert and kept in agent-state
    /// metadata, so a run reads back only its own data from a store that holds earlier ones.
    run: String,
    pub model: &'static str,
    pub region: &'static str,
    pub role: &'static str,
    utc_offset: i64,
    tags: Tags,
    series: [String; 6],
    base_latency: f64,
    price_in: f64,
    price_out: f64,
    /// Requests per second at full load.
    capacity: f64,
    load_noise: f64,
    idle: bool,
    error_walk: f64,
    incident: Option<Incident>,
    recovering_until: Option<u64>,
    pub status: &'static str,
    rules: [RuleState; 4],
    tokens_total: f64,
    cost_total: f64,
}

impl Agent {
    fn new(index: u32, run: &str, rng: &mut Rng) -> Self {
        let id = format!("agent-{:02}", index + 1);
        let &(model, base_latency, price_in, price_out) = rng.pick(&MODELS);
        let &(region, utc_offset) = rng.pick(&REGIONS);
        let role = *rng.pick(&ROLES);
        let tags = Tags::from([
            ("agent".to_owned(), id.clone()),
            ("model".to_owned(), model.to_owned()),
            ("region".to_owned(), region.to_owned()),
            ("run".to_owned(), run.to_owned()),
        ]);
        let series = METRICS.map(|(name, ..)| format!("{id}/{name}"));
        Agent {
            model,
            region,
            role,
            utc_offset,
            tags,
            series,
            base_latency: base_latency * rng.range(0.8, 1.25),
            price_in,
            price_out,
            capacity: rng.range(0.15, 0.6),
            load_noise: 0.0,
            idle: false,
            error_walk: rng.range(0.002, 0.02),
            incident: None,
            recovering_until: None,
            status: "running",
            rules: Default::default(),
            tokens_total: 0.0,
            cost_total: 0.0,
            id,
            run: run.to_owned(),
        }
    }

    /// Expected spend per second at full load, the yardstick of `CostBurn`.
    fn peak_cost_per_sec(&self) -> f64 {
        self.capacity * (1_500.0 * self.price_in + 400.0 * self.price_out) / 1_000.0
    }

    fn step(&mut self, rng: &mut Rng, tick: u64, at: DateTime<Utc>, dt: f64) -> Tick {
        // Load: a daily curve in the agent's local time (low at 3am, high at 3pm) plus noise.
        let local_hour = (at.hour() as f64 + at.minute() as f64 / 60.0 + self.utc_offset as f64)
            .rem_euclid(24.0);
        let daily = 0.5 - 0.5 * (TAU * (local_hour - 3.0) / 24.0).cos();
        let scale = (dt / 10.0).sqrt().min(10.0);
        self.load_noise = self.load_noise * 0.995f64.powf(dt / 10.0) + 0.01 * scale * rng.normal();
        self.load_noise = self.load_noise.clamp(-0.3, 0.3);
        let load = (0.05 + 0.85 * daily + self.load_noise).clamp(0.0, 1.0);
        // Idle below 10% load until back above 18%, so the status does not flap.
        self.idle = if self.idle { load < 0.18 } else { load < 0.10 };

        // Incidents start at random and end after their duration; outages are followed by a
        // recovery period.
        if let Some(incident) = self.incident
            && tick >= incident.until
        {
            if incident.kind == IncidentKind::Outage {
                self.recovering_until = Some(tick + ticks_for(rng.range(300.0, 900.0), dt));
            }
            self.incident = None;
        }
        if self.recovering_until.is_some_and(|until| tick >= until) {
            self.recovering_until = None;
        }
        if self.incident.is_none()
            && self.recovering_until.is_none()
            && rng.chance(INCIDENT_RATE * dt / 3_600.0)
        {
            let roll = rng.unit();
            let (kind, seconds, factor) = if roll < 0.6 {
                (
                    IncidentKind::Slowdown,
                    rng.range(600.0, 5_400.0),
                    rng.range(2.5, 6.0),
                )
            } else if roll < 0.8 {
                (
                    IncidentKind::RunawayLoop,
                    rng.range(600.0, 2_400.0),
                    rng.range(3.0, 6.0),
                )
            } else {
                (IncidentKind::Outage, rng.range(300.0, 1_800.0), 1.0)
            };
            self.incident = Some(Incident {
                kind,
                until: tick + ticks_for(seconds, dt),
                factor,
                errors: rng.range(0.0, 0.2),
            });
        }
        let kind = self.incident.map(|i| i.kind);
        let factor = self.incident.map_or(1.0, |i| i.factor);
        let recovering = self.recovering_until.is_some();

        // Error rate: a mean-reverting walk, raised by incidents.
        self.error_walk += 0.002 * scale * rng.normal() + 0.05 * (0.01 - self.error_walk);
        self.error_walk = self.error_walk.clamp(0.0, 0.2);
        let error_rate = match kind {
            Some(IncidentKind::Outage) => rng.range(0.85, 1.0),
            Some(IncidentKind::Slowdown) => {
                self.error_walk + self.incident.map_or(0.0, |i| i.errors) * rng.range(0.7, 1.3)
            }
            _ if recovering => self.error_walk + rng.range(0.02, 0.08),
            _ => self.error_walk,
        }
        .clamp(0.0, 1.0);

        let mean_requests = if self.idle {
            0.0
        } else {
            load * self.capacity * dt
        };
        let requests = (mean_requests + mean_requests.sqrt() * rng.normal())
            .round()
            .max(0.0);
        let ok = requests * (1.0 - error_rate);
        let loop_factor = if kind == Some(IncidentKind::RunawayLoop) {
            factor
        } else {
            1.0
        };

        let noise = (0.15 * rng.normal()).exp();
        let latency_ms = match kind {
            Some(IncidentKind::Outage) => rng.range(25_000.0, 30_000.0),
            Some(IncidentKind::Slowdown) => self.base_latency * factor * (1.0 + 0.6 * load) * noise,
            _ if recovering => self.base_latency * 1.8 * noise,
            _ => self.base_latency * (1.0 + 0.6 * load) * noise,
        };
        let per_request = |rng: &mut Rng, mean: f64, sd: f64| {
            if ok <= 0.0 {
                0.0
            } else {
                (ok * mean + (ok.sqrt() * sd) * rng.normal()).max(ok * mean * 0.2)
            }
        };
        let prompt_tokens = (per_request(rng, 1_500.0, 500.0) * loop_factor).round();
        let completion_tokens = (per_request(rng, 400.0, 150.0) * loop_factor).round();
        let cost_usd =
            (prompt_tokens * self.price_in + completion_tokens * self.price_out) / 1_000.0;
        let tool_calls = (per_request(rng, 1.8, 0.6) * loop_factor * loop_factor).round();

        self.tokens_total += prompt_tokens + completion_tokens;
        self.cost_total += cost_usd;
        self.status = match kind {
            Some(IncidentKind::Outage) => "failed",
            _ if recovering => "recovering",
            Some(_) => "degraded",
            None if error_rate > ERROR_RATE_THRESHOLD => "degraded",
            None if self.idle => "idle",
            None => "running",
        };
        Tick {
            requests,
            prompt_tokens,
            completion_tokens,
            latency_ms,
            cost_usd,
            error_rate,
            tool_calls,
        }
    }

    /// The severity a rule gives this tick, or `None` when its condition does not hold.
    fn evaluate(&self, rule: Rule, tick: &Tick, dt: f64) -> Option<(AlertSeverity, f64, f64)> {
        match rule {
            Rule::HighLatency => {
                let v = tick.latency_ms;
                (v > LATENCY_THRESHOLD_MS).then(|| {
                    let sev = if v > 15_000.0 {
                        AlertSeverity::Critical
                    } else if v > 6_000.0 {
                        AlertSeverity::High
                    } else {
                        AlertSeverity::Medium
                    };
                    (sev, v, LATENCY_THRESHOLD_MS)
                })
            }
            Rule::HighErrorRate => {
                let v = tick.error_rate;
                (v > ERROR_RATE_THRESHOLD).then(|| {
                    let sev = if v > 0.5 {
                        AlertSeverity::Critical
                    } else if v > 0.15 {
                        AlertSeverity::High
                    } else {
                        AlertSeverity::Medium
                    };
                    (sev, v, ERROR_RATE_THRESHOLD)
                })
            }
            Rule::AgentDown => {
                (self.status == "failed").then_some((AlertSeverity::Critical, 1.0, 1.0))
            }
            Rule::CostBurn => {
                let per_hour = tick.cost_usd / dt * 3_600.0;
                let limit = COST_BURN_FACTOR * self.peak_cost_per_sec() * 3_600.0;
                (per_hour > limit).then(|| {
                    let sev = if per_hour > 2.0 * limit {
                        AlertSeverity::High
                    } else {
                        AlertSeverity::Low
                    };
                    (sev, per_hour, limit)
                })
            }
        }
    }

    fn state(&self, at: DateTime<Utc>, tick: &Tick) -> AgentState {
        let mut metrics = Metadata::new();
        metrics.insert("requests".into(), json!(tick.requests as u64));
        metrics.insert("latency_ms".into(), json!(round2(tick.latency_ms)));
        metrics.insert("error_rate".into(), json!(round4(tick.error_rate)));
        metrics.insert("tokens_total".into(), json!(self.tokens_total as u64));
        metrics.insert("cost_usd_total".into(), json!(round4(self.cost_total)));
        let mut metadata = Metadata::new();
        metadata.insert("model".into(), json!(self.model));
        metadata.insert("region".into(), json!(self.region));
        metadata.insert("role".into(), json!(self.role));
        metadata.insert("version".into(), json!("1.4.2"));
        metadata.insert("run".into(), json!(self.run));
        AgentState {
            id: format!("{}/{}@{}", self.run, self.id, at.timestamp_millis()),
            agent_id: self.id.clone(),
            status: self.status.to_owned(),
            metrics,
            last_heartbeat: at,
            metadata,
            embedding: None,
            created_at: at,
            updated_at: at,
        }
    }
}

fn micros(d: TimeDelta) -> i64 {
    d.num_microseconds().unwrap_or(i64::MAX)
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// Ticks in `seconds`, at least one.
fn ticks_for(seconds: f64, dt: f64) -> u64 {
    (seconds / dt).ceil().max(1.0) as u64
}

/// What one batch of ticks produced, ready to write.
pub struct Batch {
    pub metrics: Vec<Metric>,
    pub states: Vec<AgentState>,
    pub alerts: Vec<Alert>,
    pub samples: u64,
}

/// Counters of what the simulation did.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct SimCounts {
    pub alerts_fired: u64,
    pub alerts_acknowledged: u64,
    pub alerts_resolved: u64,
    pub status_changes: u64,
}

/// The fleet and its clock.
pub struct Fleet {
    pub agents: Vec<Agent>,
    rng: Rng,
    start: DateTime<Utc>,
    interval: TimeDelta,
    total_ticks: u64,
    next_tick: u64,
    pub counts: SimCounts,
}

impl Fleet {
    /// A fleet of `agents` simulated over `total_ticks` ticks of `interval` ending at `end`.
    pub fn new(
        agents: u32,
        seed: u64,
        run: &str,
        end: DateTime<Utc>,
        interval: TimeDelta,
        total_ticks: u64,
    ) -> Self {
        let mut rng = Rng::new(seed);
        let agents = (0..agents).map(|i| Agent::new(i, run, &mut rng)).collect();
        let span = micros(interval).saturating_mul(total_ticks.saturating_sub(1) as i64);
        Fleet {
            agents,
            rng,
            start: end - TimeDelta::microseconds(span),
            interval,
            total_ticks,
            next_tick: 0,
            counts: SimCounts::default(),
        }
    }

    /// The simulated time of a tick.
    pub fn at(&self, tick: u64) -> DateTime<Utc> {
        self.start + TimeDelta::microseconds(micros(self.interval).saturating_mul(tick as i64))
    }

    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    /// The next `ticks` ticks of every agent, or `None` when the window is done.
    pub fn next_batch(&mut self, ticks: u64) -> Option<Batch> {
        if self.next_tick >= self.total_ticks {
            return None;
        }
        let first = self.next_tick;
        let last = (first + ticks.max(1)).min(self.total_ticks);
        self.next_tick = last;
        let count = (last - first) as usize;
        let dt = self.interval.as_seconds_f64();
        let now = aimon::time::now();

        let mut series: Vec<Metric> = Vec::with_capacity(self.agents.len() * METRICS.len());
        for agent in &self.agents {
            for (i, (name, metric_type, unit, description)) in METRICS.iter().enumerate() {
                series.push(Metric {
                    id: agent.series[i].clone(),
                    name: (*name).to_owned(),
                    metric_type: *metric_type,
                    description: Some((*description).to_owned()),
                    unit: Some((*unit).to_owned()),
                    values: Vec::with_capacity(count),
                    metadata: Metadata::new(),
                    created_at: now,
                    updated_at: now,
                });
            }
        }
        let mut states = Vec::new();
        let mut alerts: Vec<Alert> = Vec::new();
        let mut last_ticks = vec![Tick::default(); self.agents.len()];

        for tick in first..last {
            let at = self.at(tick);
            for (a, agent) in self.agents.iter_mut().enumerate() {
                let before = agent.status;
                let t = agent.step(&mut self.rng, tick, at, dt);
                for (i, value) in t.values().into_iter().enumerate() {
                    series[a * METRICS.len() + i].values.push(MetricValue {
                        timestamp: at,
                        value,
                        tags: agent.tags.clone(),
                    });
                }
                if agent.status != before {
                    self.counts.status_changes += 1;
                    states.push(agent.state(at, &t));
                }
                Self::run_rules(
                    agent,
                    &mut self.rng,
                    &mut self.counts,
                    tick,
                    at,
                    &t,
                    dt,
                    &mut alerts,
                );
                last_ticks[a] = t;
            }
        }
        // A heartbeat of every agent at the end of the batch.
        let at = self.at(last - 1);
        for (agent, t) in self.agents.iter().zip(&last_ticks) {
            states.push(agent.state(at, t));
        }
        // Keep the last version of each alert, in the order they changed.
        let mut seen = std::collections::HashSet::new();
        let mut deduped: Vec<Alert> = alerts
            .into_iter()
            .rev()
            .filter(|a| seen.insert(a.id.clone()))
            .collect();
        deduped.reverse();

        let samples = (count * self.agents.len() * METRICS.len()) as u64;
        Some(Batch {
            metrics: series,
            states,
            alerts: deduped,
            samples,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn run_rules(
        agent: &mut Agent,
        rng: &mut Rng,
        counts: &mut SimCounts,
        tick: u64,
        at: DateTime<Utc>,
        t: &Tick,
        dt: f64,
        changed: &mut Vec<Alert>,
    ) {
        for (r, rule) in Rule::ALL.into_iter().enumerate() {
            let hit = agent.evaluate(rule, t, dt);
            let labels = || {
                Tags::from([
                    ("agent".to_owned(), agent.id.clone()),
                    ("model".to_owned(), agent.model.to_owned()),
                    ("region".to_owned(), agent.region.to_owned()),
                    ("team".to_owned(), agent.role.to_owned()),
                    ("run".to_owned(), agent.run.clone()),
                ])
            };
            let state = &mut agent.rules[r];
            match (hit, state.open.as_mut()) {
                (Some((severity, value, threshold)), None) => {
                    state.firing_ticks += 1;
                    if state.firing_ticks >= FIRE_AFTER {
                        let id = format!(
                            "{}/{}-{}-{}",
                            agent.run,
                            agent.id,
                            rule.slug(),
                            at.timestamp()
                        );
                        let alert = new_alert(
                            id,
                            &agent.id,
                            rule,
                            severity,
                            value,
                            threshold,
                            at,
                            labels(),
                        );
                        counts.alerts_fired += 1;
                        // Most alerts are acknowledged by on-call within 2–20 minutes.
                        let ack_at = rng
                            .chance(0.85)
                            .then(|| tick + ticks_for(rng.range(120.0, 1_200.0), dt));
                        changed.push(alert.clone());
                        state.open = Some(OpenAlert {
                            alert,
                            ack_at,
                            clear_ticks: 0,
                        });
                    }
                }
                (Some((severity, value, _)), Some(open)) => {
                    open.clear_ticks = 0;
                    if severity > open.alert.severity {
                        open.alert.severity = severity;
                        open.alert.updated_at = at;
                        open.alert
                            .metadata
                            .insert("peak_value".into(), json!(round4(value)));
                        changed.push(open.alert.clone());
                    }
                }
                (None, Some(open)) => {
                    open.clear_ticks += 1;
                    if open.clear_ticks >= (RESOLVE_AFTER_SECS / dt).ceil().max(3.0) as u32 {
                        let by = open
                            .alert
                            .acknowledged_by
                            .clone()
                            .unwrap_or_else(|| "auto-resolver".to_owned());
                        open.alert.resolve(by);
                        set_time(&mut open.alert, at, Transition::Resolve);
                        counts.alerts_resolved += 1;
                        changed.push(open.alert.clone());
                        state.open = None;
                        state.firing_ticks = 0;
                    }
                }
                (None, None) => state.firing_ticks = 0,
            }
            if let Some(open) = state.open.as_mut()
                && open.ack_at.is_some_and(|t| tick >= t)
            {
                open.ack_at = None;
                open.alert.acknowledge(*rng.pick(&ON_CALL));
                set_time(&mut open.alert, at, Transition::Acknowledge);
                counts.alerts_acknowledged += 1;
                changed.push(open.alert.clone());
            }
        }
    }
}

enum Transition {
    Acknowledge,
    Resolve,
}

/// `Alert::acknowledge` / `resolve` stamp the wall clock; move the stamps to simulated time.
fn set_time(alert: &mut Alert, at: DateTime<Utc>, transition: Transition) {
    match transition {
        Transition::Acknowledge => alert.acknowledged_at = Some(at),
        Transition::Resolve => {
            alert.resolved_at = Some(at);
            alert.end_time = Some(at);
        }
    }
    alert.updated_at = at;
}

#[allow(clippy::too_many_arguments)]
fn new_alert(
    id: String,
    agent: &str,
    rule: Rule,
    severity: AlertSeverity,
    value: f64,
    threshold: f64,
    at: DateTime<Utc>,
    labels: Tags,
) -> Alert {
    let mut alert = Alert::new(id, rule.name(), severity, agent);
    let summary = match rule {
        Rule::HighLatency => format!("{agent}: latency {value:.0} ms above {threshold:.0} ms"),
        Rule::HighErrorRate => format!(
            "{agent}: error rate {:.1}% above {:.1}%",
            value * 100.0,
            threshold * 100.0
        ),
        Rule::AgentDown => format!("{agent} stopped answering"),
        Rule::CostBurn => format!("{agent}: spend ${value:.2}/h above ${threshold:.2}/h"),
    };
    alert.description = Some(summary.clone());
    alert.labels = labels;
    alert.annotations = Tags::from([
        ("summary".to_owned(), summary),
        (
            "runbook".to_owned(),
            format!("https://runbooks.example/agents/{}", rule.slug()),
        ),
    ]);
    alert.metadata.insert("value".into(), json!(round4(value)));
    alert
        .metadata
        .insert("threshold".into(), json!(round4(threshold)));
    alert.start_time = at;
    alert.created_at = at;
    alert.updated_at = at;
    alert
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rng_is_deterministic_and_uniform_enough() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(8).next_u64(), xs[0]);
        let mean = (0..10_000).map(|_| a.unit()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        let normal_mean = (0..10_000).map(|_| a.normal()).sum::<f64>() / 10_000.0;
        assert!(normal_mean.abs() < 0.05, "{normal_mean}");
    }

    fn run(seed: u64) -> (Vec<Batch>, SimCounts) {
        let end = DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
            .unwrap()
            .to_utc();
        let mut fleet = Fleet::new(10, seed, "test", end, TimeDelta::seconds(10), 8_640);
        let mut batches = Vec::new();
        while let Some(batch) = fleet.next_batch(500) {
            batches.push(batch);
        }
        (batches, fleet.counts)
    }

    #[test]
    fn a_day_of_ten_agents() {
        let (batches, counts) = run(42);
        let samples: u64 = batches.iter().map(|b| b.samples).sum();
        assert_eq!(samples, 10 * 8_640 * 6);
        let values: usize = batches
            .iter()
            .flat_map(|b| &b.metrics)
            .map(|m| m.values.len())
            .sum();
        assert_eq!(values as u64, samples);
        // Every value is valid for aimon.
        assert!(
            batches
                .iter()
                .flat_map(|b| &b.metrics)
                .flat_map(|m| &m.values)
                .all(|v| v.value.is_finite() && v.value >= 0.0)
        );
        // A day brings incidents, alerts and their lifecycle.
        assert!(counts.alerts_fired > 0, "{counts:?}");
        assert!(counts.alerts_acknowledged > 0, "{counts:?}");
        assert!(counts.alerts_resolved > 0, "{counts:?}");
        assert!(counts.status_changes > 0, "{counts:?}");
        let statuses: std::collections::BTreeSet<_> = batches
            .iter()
            .flat_map(|b| &b.states)
            .map(|s| s.status.as_str())
            .collect();
        for s in ["running", "degraded", "failed", "recovering"] {
            assert!(statuses.contains(s), "{statuses:?}");
        }
        // Every sample, alert and state carries the run.
        assert!(
            batches
                .iter()
                .flat_map(|b| &b.metrics)
                .flat_map(|m| &m.values)
                .all(|v| v.tags.get("run").map(String::as_str) == Some("test"))
        );
        for alert in batches.iter().flat_map(|b| &b.alerts) {
            assert_eq!(alert.labels["run"], "test");
            assert!(alert.id.starts_with("test/agent-"), "{}", alert.id);
        }
        for state in batches.iter().flat_map(|b| &b.states) {
            assert_eq!(state.metadata["run"], "test");
        }
        // The last tick is the end of the window.
        let last = batches.last().unwrap().metrics[0].values.last().unwrap();
        assert_eq!(last.timestamp.to_rfc3339(), "2024-05-01T12:00:00+00:00");
        // Alert timestamps are simulated and consistent.
        for alert in batches.iter().flat_map(|b| &b.alerts) {
            assert!(alert.updated_at >= alert.start_time);
            assert!(alert.updated_at <= last.timestamp);
            if let Some(at) = alert.resolved_at {
                assert_eq!(alert.end_time, Some(at));
            }
        }
    }

    #[test]
    fn the_same_seed_simulates_the_same_fleet() {
        let (a, ca) = run(3);
        let (b, cb) = run(3);
        assert_eq!(ca.alerts_fired, cb.alerts_fired);
        assert_eq!(a[3].metrics[5].values, b[3].metrics[5].values);
        let (c, _) = run(4);
        assert_ne!(a[3].metrics[5].values, c[3].metrics[5].values);
    }
}
