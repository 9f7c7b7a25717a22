//! `get_database_stats`: live counts from the engine's counts, the engine's own figures, and the
//! server's version and uptime (in embedded mode, this process's).

use std::collections::BTreeMap;

use aimon_core::{DatabaseStats, Result, StorageBackendType, time};

use crate::backend::QdrantBackend;
use crate::engine::{Collection, ServerInfo};
use crate::filter::FilterIr;
use crate::payload::{self, field};

/// Live counts for `stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LiveCounts {
    pub series: u64,
    pub samples: u64,
    pub alerts: u64,
    pub agent_states: u64,
}

impl QdrantBackend {
    /// Counts of live data, from the engine's counts: nothing is read into memory but the series
    /// documents, and only with a metric TTL.
    ///
    /// With a TTL, live items are those whose time field is at least the cutoff: one filtered
    /// count per kind. The filter's `f64` bound is exact while the cutoff is below 2^53 µs (until
    /// the year 2255); past that, [`filter::float_bounds`](crate::filter::float_bounds) rounds it
    /// down and a count may take in items a few µs older than the cutoff. A series is live if
    /// updated within the TTL or holding a live sample: the series updated before the cutoff are
    /// read and each is asked for one live sample.
    pub(crate) async fn live_counts(&self) -> Result<LiveCounts> {
        let now = time::now();
        let policy = *self.retention();
        let engine = &self.engine;
        let since = |field, cutoff: Option<i64>| FilterIr::new().range(field, cutoff, None);
        let mut counts = LiveCounts {
            series: 0,
            samples: 0,
            alerts: engine
                .count(
                    Collection::Alerts,
                    &since(field::UPDATED_US, policy.alert_cutoff(now)),
                )
                .await?,
            agent_states: engine
                .count(
                    Collection::AgentStates,
                    &since(field::HEARTBEAT_US, policy.agent_state_cutoff(now)),
                )
                .await?,
        };
        let cutoff = policy.metric_cutoff(now);
        counts.samples = engine
            .count(Collection::Samples, &since(field::TS_US, cutoff))
            .await?;
        counts.series = engine
            .count(Collection::Series, &since(field::UPDATED_US, cutoff))
            .await?;
        if let Some(cutoff) = cutoff {
            // `range(…, None, Some(cutoff))` is `<= cutoff`: a series updated at the cutoff is
            // counted above already, and skipped here.
            let stale = FilterIr::new().range(field::UPDATED_US, None, Some(cutoff));
            for (_, p) in engine.scroll(Collection::Series, &stale).await? {
                let meta = payload::decode_series(&p)?;
                if time::to_micros(meta.updated_at) >= cutoff {
                    continue;
                }
                let sampled = FilterIr::new().keyword(field::SERIES_ID, meta.id).range(
                    field::TS_US,
                    Some(cutoff),
                    None,
                );
                // One live sample settles it: a page of one, not a count of them all.
                let (page, _) = engine
                    .scroll_page(Collection::Samples, &sampled, None, 1)
                    .await?;
                if !page.is_empty() {
                    counts.series += 1;
                }
            }
        }
        Ok(counts)
    }

    pub(crate) async fn database_stats(&self) -> Result<DatabaseStats> {
        let counts = self.live_counts().await?;
        let mut extra = self.engine.extra_stats().await?;
        extra.insert(
            "embedder".to_owned(),
            serde_json::json!(self.embedder.name()),
        );
        // A server's own version and uptime; the embedded engine runs in this process.
        let (version, uptime_seconds) = match self.engine.server_info().await {
            None => (
                env!("CARGO_PKG_VERSION").to_owned(),
                self.started.elapsed().as_secs(),
            ),
            Some(info) => server_figures(info, chrono::Utc::now(), &mut extra),
        };
        let size_bytes = match self.engine.size_bytes().await {
            Ok(bytes) => Some(bytes),
            Err(why) => {
                extra.insert("size_bytes_unknown".to_owned(), why.into());
                None
            }
        };
        Ok(DatabaseStats {
            backend: self.config.name.clone(),
            backend_type: StorageBackendType::Qdrant,
            version,
            uptime_seconds,
            series: counts.series,
            samples: counts.samples,
            alerts: counts.alerts,
            agent_states: counts.agent_states,
            size_bytes,
            extra,
        })
    }
}

/// The `version` and `uptime_seconds` of a server's `stats` at `now`: what the server answered,
/// else `unknown` and 0, with the reason in `extra` (`server_version_unknown`,
/// `server_uptime_unknown`): a server that does not answer them never fails `stats`.
fn server_figures(
    info: ServerInfo,
    now: chrono::DateTime<chrono::Utc>,
    extra: &mut BTreeMap<String, serde_json::Value>,
) -> (String, u64) {
    let version = match info.version {
        Ok(version) => version,
        Err(why) => {
            extra.insert("server_version_unknown".to_owned(), why.into());
            "unknown".to_owned()
        }
    };
    if let Some(commit) = info.commit {
        extra.insert("server_commit".to_owned(), commit.into());
    }
    let uptime = match info.started {
        Ok(started) => {
            extra.insert("server_started".to_owned(), started.to_rfc3339().into());
            // A clock behind the server's reads as just started, never as a wrapped count.
            u64::try_from((now - started).num_seconds()).unwrap_or(0)
        }
        Err(why) => {
            extra.insert("server_uptime_unknown".to_owned(), why.into());
            0
        }
    };
    (version, uptime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn a_server_reports_its_own_version_and_uptime() {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        let mut extra = BTreeMap::new();
        let info = ServerInfo {
            version: Ok("1.19.0".into()),
            commit: Some("4aac0231".into()),
            started: Ok(Utc.with_ymd_and_hms(2026, 3, 1, 11, 0, 0).unwrap()),
        };
        assert_eq!(
            server_figures(info, now, &mut extra),
            ("1.19.0".to_owned(), 3600)
        );
        assert_eq!(extra["server_commit"], "4aac0231");
        assert_eq!(extra["server_started"], "2026-03-01T11:00:00+00:00");
        assert!(!extra.contains_key("server_version_unknown"));
    }

    #[test]
    fn what_the_server_does_not_answer_is_unknown_not_an_error() {
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
        let mut extra = BTreeMap::new();
        let info = ServerInfo {
            version: Err("health check failed: unavailable".into()),
            commit: None,
            started: Err("qdrant REST /telemetry 403 Forbidden".into()),
        };
        assert_eq!(
            server_figures(info, now, &mut extra),
            ("unknown".to_owned(), 0)
        );
        assert_eq!(
            extra["server_version_unknown"],
            "health check failed: unavailable"
        );
        assert_eq!(
            extra["server_uptime_unknown"],
            "qdrant REST /telemetry 403 Forbidden"
        );
        // A server clock ahead of ours: just started, not 2^64 - 5 seconds.
        let mut extra = BTreeMap::new();
        let info = ServerInfo {
            version: Ok("1.19.0".into()),
            commit: None,
            started: Ok(now + chrono::Duration::seconds(5)),
        };
        assert_eq!(server_figures(info, now, &mut extra).1, 0);
    }
}
