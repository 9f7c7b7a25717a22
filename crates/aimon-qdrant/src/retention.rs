//! Retention (DESIGN.md rule 6): reads filter expired data themselves; `apply_retention`
//! sweeps it (Qdrant has no TTL) by scrolling the candidates a range filter selects, checking
//! each exactly, and deleting by id, so the report's counts are exact.

use aimon_core::{Result, RetentionReport, time};

use crate::backend::QdrantBackend;
use crate::engine::Collection;
use crate::filter::{self, FilterIr};
use crate::payload::{self, field};

/// Live counts for `stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LiveCounts {
    pub series: u64,
    pub samples: u64,
    pub alerts: u64,
    pub agent_states: u64,
}

pub(crate) async fn apply(backend: &QdrantBackend) -> Result<RetentionReport> {
    let now = time::now();
    let policy = *backend.retention();
    let engine = &backend.engine;
    let mut report = RetentionReport::default();
    let _writer = backend.writer.lock().await;
    if let Some(cutoff) = policy.metric_cutoff(now) {
        let mut expired = Vec::new();
        for (id, p) in engine
            .scroll(Collection::Samples, &filter::before(field::TS_US, cutoff))
            .await?
        {
            if payload::decode_sample(&p)?.ts < cutoff {
                expired.push(id);
            }
        }
        report.samples_removed = expired.len() as u64;
        engine.delete(Collection::Samples, expired).await?;
        // Every sample left is live now: a stale series without samples is gone.
        let mut dead = Vec::new();
        for (id, p) in engine
            .scroll(
                Collection::Series,
                &filter::before(field::UPDATED_US, cutoff),
            )
            .await?
        {
            let meta = payload::decode_series(&p)?;
            if time::to_micros(meta.updated_at) >= cutoff {
                continue;
            }
            let own = FilterIr::new().keyword(field::SERIES_ID, meta.id.clone());
            if engine.count(Collection::Samples, &own).await? == 0 {
                dead.push(id);
            }
        }
        report.series_removed = dead.len() as u64;
        engine.delete(Collection::Series, dead).await?;
    }
    if let Some(cutoff) = policy.alert_cutoff(now) {
        let mut expired = Vec::new();
        for (id, p) in engine
            .scroll(
                Collection::Alerts,
                &filter::before(field::UPDATED_US, cutoff),
            )
            .await?
        {
            if time::to_micros(payload::decode_alert(&p)?.updated_at) < cutoff {
                expired.push(id);
            }
        }
        report.alerts_removed = expired.len() as u64;
        engine.delete(Collection::Alerts, expired).await?;
    }
    if let Some(cutoff) = policy.agent_state_cutoff(now) {
        let mut expired = Vec::new();
        for (id, p) in engine
            .scroll(
                Collection::AgentStates,
                &filter::before(field::HEARTBEAT_US, cutoff),
            )
            .await?
        {
            if time::to_micros(payload::decode_agent_state(&p)?.last_heartbeat) < cutoff {
                expired.push(id);
            }
        }
        report.agent_states_removed = expired.len() as u64;
        engine.delete(Collection::AgentStates, expired).await?;
    }
    Ok(report)
}

/// Counts of live data, from the engine's counts: nothing is read into memory but the series
/// documents, and only with a metric TTL.
///
/// With a TTL, live items are those whose time field is at least the cutoff: one filtered
/// count per kind. The filter's `f64` bound is exact while the cutoff is below 2^53 µs (until
/// the year 2255); past that, [`filter::float_bounds`] rounds it down and a count may take in
/// items a few µs older than the cutoff. A series is live if updated within the TTL or
/// holding a live sample: the series updated before the cutoff are read and each is asked for
/// one live sample.
pub(crate) async fn live_counts(backend: &QdrantBackend) -> Result<LiveCounts> {
    let now = time::now();
    let policy = *backend.retention();
    let engine = &backend.engine;
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
