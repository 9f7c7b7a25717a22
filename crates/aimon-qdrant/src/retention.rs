//! Retention (DESIGN.md rule 6): reads filter expired data themselves; `apply_retention`
//! sweeps it (Qdrant has no TTL) by scrolling the candidates a range filter selects, checking
//! each exactly, and deleting by id, so the report's counts are exact.

use aimon_core::{Result, RetentionReport, time};

use crate::backend::QdrantBackend;
use crate::engine::Collection;
use crate::filter::{self, FilterIr};
use crate::payload::{self, field};

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
