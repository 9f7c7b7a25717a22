//! Native backups. Embedded: every shard flushed under its writer lock and its directory copied
//! (sparse-aware), plus a manifest; a restore opens a scratch copy of each shard. Server: one
//! collection snapshot per kind, downloaded over the REST port, plus a manifest
//! ([`crate::snapshot`]); a restore uploads each into a scratch collection. Either way the
//! restore reads every point, checks the whole backup (decoding and validating every item) and
//! only then merges it with the write rules: retention applied, the latest agent state kept,
//! series `created_at` kept.

use aimon_core::driver::{AgentStateDriver, AlertDriver, Check, MetricDriver};
use std::collections::BTreeMap;
use std::path::Path;

use aimon_core::{BackupFormat, Error, ErrorKind, Metric, Result, TransferReport};

use crate::backend::QdrantBackend;
use crate::engine::Collection;
use crate::payload;

pub(crate) async fn native_backup(backend: &QdrantBackend, path: &Path) -> Result<TransferReport> {
    if path.exists() {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "{} exists; a native backup goes into a new directory",
                path.display()
            ),
        ));
    }
    let counts = backend.live_counts().await?;
    // Writes that read first (metrics, agent states) finish before the copy starts.
    let _writer = backend.writer.lock().await;
    let bytes = backend.engine.native_backup(path).await?;
    Ok(TransferReport {
        format: BackupFormat::Native,
        series: counts.series,
        samples: counts.samples,
        alerts: counts.alerts,
        agent_states: counts.agent_states,
        expired: 0,
        bytes,
    })
}

fn corrupted(e: Error) -> Error {
    if e.kind() == ErrorKind::Corrupted {
        e
    } else {
        Error::corrupted(format!("the native backup holds an invalid item: {e}"))
    }
}

pub(crate) async fn native_restore(backend: &QdrantBackend, path: &Path) -> Result<TransferReport> {
    let collections = backend.engine.read_native_backup(path).await?;
    let mut series: BTreeMap<String, Metric> = BTreeMap::new();
    let mut samples = Vec::new();
    let mut alerts = Vec::new();
    let mut states = Vec::new();
    for (collection, payloads) in &collections {
        for p in payloads {
            match collection {
                Collection::Series => {
                    let meta = payload::decode_series(p)?;
                    series.insert(meta.id.clone(), meta);
                }
                Collection::Samples => samples.push(payload::decode_sample(p)?),
                Collection::Alerts => alerts.push(payload::decode_alert(p)?),
                Collection::AgentStates => states.push(payload::decode_agent_state(p)?),
            }
        }
    }
    samples.sort_by(|a, b| {
        (&a.series_id, a.ts, &a.tags_json).cmp(&(&b.series_id, b.ts, &b.tags_json))
    });
    let sample_count = samples.len() as u64;
    for s in &samples {
        let meta = series.get_mut(&s.series_id).ok_or_else(|| {
            Error::corrupted(format!(
                "a sample of series {:?} has no series in the backup",
                s.series_id
            ))
        })?;
        meta.values.push(s.to_value());
    }
    let metrics: Vec<Metric> = series.into_values().collect();
    // Checked whole before anything is written, as the contract checks a call's input.
    let metric_batch = Check::check(metrics.as_slice()).map_err(corrupted)?;
    let alert_batch = Check::check(alerts.as_slice()).map_err(corrupted)?;
    let state_batch = Check::check(states.as_slice()).map_err(corrupted)?;
    let mut expired = 0;
    let m = backend.save_metrics(metric_batch).await?;
    expired += m.expired;
    let a = backend.save_alerts(alert_batch).await?;
    expired += a.expired;
    let s = backend.save_agent_states(state_batch).await?;
    expired += s.expired;
    Ok(TransferReport {
        format: BackupFormat::Native,
        series: metrics.len() as u64,
        samples: sample_count,
        alerts: alerts.len() as u64,
        agent_states: states.len() as u64,
        expired,
        bytes: aimon_core::archive::dir_size(path),
    })
}
