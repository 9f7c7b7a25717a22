//! The data aimon stores: metrics (series of samples), alerts and agent states.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::time::now;

/// Free-form JSON attached to an item.
pub type Metadata = serde_json::Map<String, serde_json::Value>;
/// Sample tags, alert labels and annotations: ordered so that equal maps serialize equally.
pub type Tags = BTreeMap<String, String>;

/// What a metric measures. Serialized in lower case (`"gauge"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricType {
    /// A value that goes up and down (latency, queue depth); the last sample is the current value.
    Gauge,
    /// A running total that only grows (tokens used, requests served).
    Counter,
    /// Samples of a distribution (one sample per observation or bucket).
    Histogram,
    /// Pre-aggregated quantiles or totals reported by the agent.
    Summary,
    /// CPU usage of the agent's host or process.
    Cpu,
    /// Memory usage of the agent's host or process.
    Memory,
    /// Disk usage or I/O.
    Disk,
    /// Network traffic or latency.
    Network,
    /// Anything else; say what in the metric's `description` and `unit`.
    Custom,
}

impl MetricType {
    /// Every metric type, in declaration order.
    pub const ALL: [MetricType; 9] = [
        MetricType::Gauge,
        MetricType::Counter,
        MetricType::Histogram,
        MetricType::Summary,
        MetricType::Cpu,
        MetricType::Memory,
        MetricType::Disk,
        MetricType::Network,
        MetricType::Custom,
    ];

    /// The lower-case name used in JSON, URLs and stores (`"gauge"`); `FromStr` parses it back.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Gauge => "gauge",
            MetricType::Counter => "counter",
            MetricType::Histogram => "histogram",
            MetricType::Summary => "summary",
            MetricType::Cpu => "cpu",
            MetricType::Memory => "memory",
            MetricType::Disk => "disk",
            MetricType::Network => "network",
            MetricType::Custom => "custom",
        }
    }
}

/// Severity of an alert, ordered: `Info < Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertSeverity {
    /// For the record only; rank 0.
    Info,
    /// Rank 1.
    Low,
    /// Rank 2.
    Medium,
    /// Rank 3.
    High,
    /// Needs attention now; rank 4, the highest.
    Critical,
}

impl AlertSeverity {
    /// Every severity, lowest first (index = [`AlertSeverity::rank`]).
    pub const ALL: [AlertSeverity; 5] = [
        AlertSeverity::Info,
        AlertSeverity::Low,
        AlertSeverity::Medium,
        AlertSeverity::High,
        AlertSeverity::Critical,
    ];

    /// The lower-case name used in JSON, filters and stores (`"critical"`).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertSeverity::Info => "info",
            AlertSeverity::Low => "low",
            AlertSeverity::Medium => "medium",
            AlertSeverity::High => "high",
            AlertSeverity::Critical => "critical",
        }
    }

    /// 0 for `Info` up to 4 for `Critical`; stores keep this number so they can compare severities.
    pub fn rank(self) -> i64 {
        self as i64
    }

    /// The inverse of [`AlertSeverity::rank`]; `None` outside `0..=4`.
    pub fn from_rank(rank: i64) -> Option<Self> {
        Self::ALL.get(usize::try_from(rank).ok()?).copied()
    }
}

/// Where an alert is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// Firing, nobody has taken it yet (the state of [`Alert::new`]).
    Active,
    /// Someone took it ([`Alert::acknowledge`]); still open.
    Acknowledged,
    /// Over ([`Alert::resolve`]); `end_time` says when.
    Resolved,
    /// Firing but silenced on purpose.
    Suppressed,
}

impl AlertStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [AlertStatus; 4] = [
        AlertStatus::Active,
        AlertStatus::Acknowledged,
        AlertStatus::Resolved,
        AlertStatus::Suppressed,
    ];

    /// The lower-case name used in JSON, filters and stores (`"acknowledged"`).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Active => "active",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Resolved => "resolved",
            AlertStatus::Suppressed => "suppressed",
        }
    }
}

macro_rules! string_enum {
    ($ty:ident, $what:literal) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = Error;

            /// Case-insensitive, so the prototype's `"GAUGE"` spellings load too.
            fn from_str(s: &str) -> Result<Self> {
                $ty::ALL
                    .into_iter()
                    .find(|v| v.as_str().eq_ignore_ascii_case(s))
                    .ok_or_else(|| {
                        let known: Vec<_> = $ty::ALL.iter().map(|v| v.as_str()).collect();
                        Error::invalid_input(
                            $what,
                            format!("unknown value {s:?}; expected one of {}", known.join(", ")),
                        )
                    })
            }
        }
    };
}
string_enum!(MetricType, "metric type");
string_enum!(AlertSeverity, "alert severity");
string_enum!(AlertStatus, "alert status");

/// One sample of a series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricValue {
    /// When the sample was taken; stored to the microsecond (sub-microsecond parts are truncated).
    pub timestamp: DateTime<Utc>,
    /// The measured value; must be finite.
    pub value: f64,
    /// Dimensions of the sample (`model`, `region`…); part of the sample's key with the timestamp.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
}

impl MetricValue {
    /// A sample without tags.
    pub fn new(timestamp: DateTime<Utc>, value: f64) -> Self {
        MetricValue {
            timestamp,
            value,
            tags: Tags::new(),
        }
    }

    /// Adds a tag; a builder for tests and examples.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }
}

/// A series: metadata plus samples. The `id` names the series (DESIGN.md rule 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Names the series; saving again under the same id updates it (DESIGN.md rule 1).
    pub id: String,
    /// What is measured (`llm.latency_ms`); queries and `metric_history` select by it, and several
    /// series may share it.
    pub name: String,
    /// What kind of measurement; serialized as `"type"`.
    #[serde(rename = "type")]
    pub metric_type: MetricType,
    /// Free text for people.
    #[serde(default)]
    pub description: Option<String>,
    /// Unit of the values (`ms`, `tokens`, `USD`); free text, aimon does not convert.
    #[serde(default)]
    pub unit: Option<String>,
    /// Samples to store; reads return them sorted by timestamp, then tags.
    #[serde(default)]
    pub values: Vec<MetricValue>,
    /// Free-form JSON about the series (at most 1 MiB as compact JSON).
    #[serde(default)]
    pub metadata: Metadata,
    /// When the series was first saved; later saves keep the stored value.
    pub created_at: DateTime<Utc>,
    /// When the series' metadata was last saved; also keeps the series alive under `metric_ttl`.
    pub updated_at: DateTime<Utc>,
}

impl Metric {
    /// A series with no samples, created now.
    pub fn new(id: impl Into<String>, name: impl Into<String>, metric_type: MetricType) -> Self {
        let now = now();
        Metric {
            id: id.into(),
            name: name.into(),
            metric_type,
            description: None,
            unit: None,
            values: Vec::new(),
            metadata: Metadata::new(),
            created_at: now,
            updated_at: now,
        }
    }

    /// Appends a sample; a builder for tests and examples.
    pub fn with_value(mut self, value: MetricValue) -> Self {
        self.values.push(value);
        self
    }
}

/// An alert and its lifecycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique key; saving an alert with a stored id replaces it (upsert).
    pub id: String,
    /// What fired (`high-latency`).
    pub name: String,
    /// Free text for people (up to 1 MiB).
    #[serde(default)]
    pub description: Option<String>,
    /// How bad it is; filters compare severities by rank.
    pub severity: AlertSeverity,
    /// Who raised it (an agent id, a rule, a service).
    pub source: String,
    /// Where the alert is in its lifecycle.
    pub status: AlertStatus,
    /// When the condition began; the time range of an [`crate::AlertQuery`] applies to it.
    pub start_time: DateTime<Utc>,
    /// When it ended; set by [`Alert::resolve`].
    #[serde(default)]
    pub end_time: Option<DateTime<Utc>>,
    /// Who acknowledged it; set by [`Alert::acknowledge`].
    #[serde(default)]
    pub acknowledged_by: Option<String>,
    /// When it was acknowledged.
    #[serde(default)]
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// Who resolved it; set by [`Alert::resolve`].
    #[serde(default)]
    pub resolved_by: Option<String>,
    /// When it was resolved.
    #[serde(default)]
    pub resolved_at: Option<DateTime<Utc>>,
    /// Identifying key/value pairs (`agent=a1`); queries can require them.
    #[serde(default)]
    pub labels: Tags,
    /// Descriptive key/value pairs (runbook links, summaries); not filtered on.
    #[serde(default)]
    pub annotations: Tags,
    /// Free-form JSON (at most 1 MiB as compact JSON).
    #[serde(default)]
    pub metadata: Metadata,
    /// The alert's own vector for similarity search; when absent, the backend's embedder
    /// embeds [`crate::similarity::alert_text`]. Finite, not all zeros, at most
    /// [`crate::validate::MAX_EMBEDDING_DIMENSION`] values; stored exactly by every backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
    /// When the alert was first created.
    pub created_at: DateTime<Utc>,
    /// When the alert was last changed; `alert_ttl` counts from it.
    pub updated_at: DateTime<Utc>,
}

impl Alert {
    /// An active alert that starts now.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        severity: AlertSeverity,
        source: impl Into<String>,
    ) -> Self {
        let now = now();
        Alert {
            id: id.into(),
            name: name.into(),
            description: None,
            severity,
            source: source.into(),
            status: AlertStatus::Active,
            start_time: now,
            end_time: None,
            acknowledged_by: None,
            acknowledged_at: None,
            resolved_by: None,
            resolved_at: None,
            labels: Tags::new(),
            annotations: Tags::new(),
            metadata: Metadata::new(),
            embedding: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// Marks the alert acknowledged by `user` now.
    pub fn acknowledge(&mut self, user: impl Into<String>) {
        let now = now();
        self.status = AlertStatus::Acknowledged;
        self.acknowledged_by = Some(user.into());
        self.acknowledged_at = Some(now);
        self.updated_at = now;
    }

    /// Marks the alert resolved by `user` now; its `end_time` becomes now.
    pub fn resolve(&mut self, user: impl Into<String>) {
        let now = now();
        self.status = AlertStatus::Resolved;
        self.resolved_by = Some(user.into());
        self.resolved_at = Some(now);
        self.end_time = Some(now);
        self.updated_at = now;
    }
}

/// What the agent says about itself. Stores keep the latest per `agent_id` (DESIGN.md rule 5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    /// Identifies this report (a state document's own id).
    pub id: String,
    /// The agent reporting; stores keep one state per agent, the latest by `last_heartbeat`.
    pub agent_id: String,
    /// Free-form status (`running`, `idle`, `error`…); queries match it exactly.
    pub status: String,
    /// Current figures the agent reports about itself, as JSON (at most 1 MiB as compact JSON).
    #[serde(default)]
    pub metrics: Metadata,
    /// When the agent last reported; decides which state is the latest and `agent_state_ttl`.
    pub last_heartbeat: DateTime<Utc>,
    /// Free-form JSON (at most 1 MiB as compact JSON).
    #[serde(default)]
    pub metadata: Metadata,
    /// The state's own vector for similarity search; when absent, the backend's embedder embeds
    /// [`crate::similarity::agent_state_text`]. Same rules as [`Alert::embedding`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
    /// When the state was created.
    pub created_at: DateTime<Utc>,
    /// When the state was last changed.
    pub updated_at: DateTime<Utc>,
}

impl AgentState {
    /// A state reported now.
    pub fn new(
        id: impl Into<String>,
        agent_id: impl Into<String>,
        status: impl Into<String>,
    ) -> Self {
        let now = now();
        AgentState {
            id: id.into(),
            agent_id: agent_id.into(),
            status: status.into(),
            metrics: Metadata::new(),
            last_heartbeat: now,
            metadata: Metadata::new(),
            embedding: None,
            created_at: now,
            updated_at: now,
        }
    }
}

/// The three kinds of data, for routing, archives and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    /// Metrics: series and their samples.
    Metrics,
    /// Alerts.
    Alerts,
    /// Agent states.
    AgentStates,
}

impl DataKind {
    /// The three kinds, in archive order.
    pub const ALL: [DataKind; 3] = [DataKind::Metrics, DataKind::Alerts, DataKind::AgentStates];

    /// The snake-case name used in routing rules, archives and events (`"agent_states"`).
    pub fn as_str(self) -> &'static str {
        match self {
            DataKind::Metrics => "metrics",
            DataKind::Alerts => "alerts",
            DataKind::AgentStates => "agent_states",
        }
    }
}

impl fmt::Display for DataKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Tags as canonical JSON (keys sorted, serde_json's escaping): how stores key and order
/// samples that share a timestamp, identically on every backend.
pub fn tags_json(tags: &Tags) -> String {
    serde_json::to_string(tags).expect("a string map always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_are_ordered() {
        assert!(AlertSeverity::Info < AlertSeverity::Low);
        assert!(AlertSeverity::High < AlertSeverity::Critical);
        assert_eq!(AlertSeverity::from_rank(4), Some(AlertSeverity::Critical));
        assert_eq!(AlertSeverity::from_rank(5), None);
    }

    #[test]
    fn enums_parse_case_insensitively_and_list_choices_on_error() {
        assert_eq!("GAUGE".parse::<MetricType>().unwrap(), MetricType::Gauge);
        let err = "loud".parse::<AlertSeverity>().unwrap_err();
        assert!(
            err.to_string()
                .contains("info, low, medium, high, critical"),
            "{err}"
        );
    }

    #[test]
    fn resolve_sets_end_time_and_status() {
        let mut alert = Alert::new("a1", "latency", AlertSeverity::High, "agent-1");
        alert.acknowledge("ops");
        assert_eq!(alert.status, AlertStatus::Acknowledged);
        alert.resolve("ops");
        assert_eq!(alert.status, AlertStatus::Resolved);
        assert_eq!(alert.end_time, alert.resolved_at);
    }
}
