//! Retention options (DESIGN.md rule 6), shared by every backend.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Options;
use crate::error::Result;
use crate::time;

/// How long each kind of data lives; `None` keeps it forever.
///
/// A sample expires `metric_ttl` after its timestamp, an alert `alert_ttl` after its
/// `updated_at`, an agent state `agent_state_ttl` after its `last_heartbeat`. Expired data is
/// never returned by a read, even before it is physically removed, and data that arrives
/// already expired is counted in the write report but not stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// How long a sample lives after its timestamp; also bounds how long a series without live
    /// samples lives after its `updated_at`.
    pub metric_ttl: Option<Duration>,
    /// How long an alert lives after its `updated_at`.
    pub alert_ttl: Option<Duration>,
    /// How long an agent state lives after its `last_heartbeat`.
    pub agent_state_ttl: Option<Duration>,
}

/// The option names, as in the prototype.
pub const METRIC_TTL_OPTION: &str = "metric_ttl_seconds";
/// The option that sets [`RetentionPolicy::alert_ttl`], in seconds.
pub const ALERT_TTL_OPTION: &str = "alert_ttl_seconds";
/// The option that sets [`RetentionPolicy::agent_state_ttl`], in seconds.
pub const AGENT_STATE_TTL_OPTION: &str = "agent_state_ttl_seconds";

impl RetentionPolicy {
    /// Reads the three `*_ttl_seconds` options (positive integers) and marks them used.
    pub fn from_options(options: &mut Options) -> Result<Self> {
        let seconds = |o: &mut Options, key| -> Result<Option<Duration>> {
            Ok(o.positive_u64(key)?.map(Duration::from_secs))
        };
        Ok(RetentionPolicy {
            metric_ttl: seconds(options, METRIC_TTL_OPTION)?,
            alert_ttl: seconds(options, ALERT_TTL_OPTION)?,
            agent_state_ttl: seconds(options, AGENT_STATE_TTL_OPTION)?,
        })
    }

    /// The instant in microseconds before which data with `ttl` is expired at `now`, or `None`
    /// when the data never expires. Data at exactly `cutoff` is live.
    pub fn cutoff_micros(ttl: Option<Duration>, now: DateTime<Utc>) -> Option<i64> {
        let ttl = ttl?;
        let ttl_micros = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
        Some(time::to_micros(now).saturating_sub(ttl_micros))
    }

    /// The sample cutoff at `now` (see [`RetentionPolicy::cutoff_micros`]).
    pub fn metric_cutoff(&self, now: DateTime<Utc>) -> Option<i64> {
        Self::cutoff_micros(self.metric_ttl, now)
    }

    /// The alert cutoff at `now`, compared with `updated_at`.
    pub fn alert_cutoff(&self, now: DateTime<Utc>) -> Option<i64> {
        Self::cutoff_micros(self.alert_ttl, now)
    }

    /// The agent state cutoff at `now`, compared with `last_heartbeat`.
    pub fn agent_state_cutoff(&self, now: DateTime<Utc>) -> Option<i64> {
        Self::cutoff_micros(self.agent_state_ttl, now)
    }

    /// Whether a timestamp is live under a cutoff from one of the `*_cutoff` methods.
    pub fn is_live(cutoff: Option<i64>, ts: DateTime<Utc>) -> bool {
        cutoff.is_none_or(|c| time::to_micros(ts) >= c)
    }
}
