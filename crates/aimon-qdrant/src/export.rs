//! Portable backups page natively: the archive's cursor is the next point id of Qdrant's own
//! scroll, so each page costs its own size. Keyset pages through the query API (`id >` the
//! last one) would scan the whole collection for every page, since Qdrant cannot filter
//! strings by range: quadratic in the number of items.

use std::collections::BTreeMap;

use aimon_core::archive::{ExportPage, Exporter};
use aimon_core::{
    AgentState, AgentStateQuery, Alert, AlertQuery, Error, Metric, Result, RetentionPolicy, Tags,
    time,
};
use async_trait::async_trait;
use uuid::Uuid;

use crate::backend::QdrantBackend;
use crate::engine::Collection;
use crate::filter::{self, FilterIr};
use crate::payload::{self, StoredSample};

/// Reads a Qdrant store for [`aimon_core::archive::write_with`].
pub(crate) struct QdrantExporter<'a>(pub &'a QdrantBackend);

/// The point id a cursor names (only this exporter makes them).
fn offset(cursor: Option<String>) -> Result<Option<Uuid>> {
    cursor
        .map(|c| {
            c.parse().map_err(|_| {
                Error::invalid_input("export cursor", format!("{c:?} is not a point id"))
            })
        })
        .transpose()
}

fn next(offset: Option<Uuid>) -> Option<String> {
    offset.map(|id| id.to_string())
}

#[async_trait]
impl Exporter for QdrantExporter<'_> {
    async fn metrics(&self, cursor: Option<String>, limit: usize) -> Result<ExportPage<Metric>> {
        let backend = self.0;
        let cutoff = backend.retention().metric_cutoff(time::now());
        let (page, after) = backend
            .engine
            .scroll_page(Collection::Series, &FilterIr::new(), offset(cursor)?, limit)
            .await?;
        let metas = page
            .iter()
            .map(|(_, p)| payload::decode_series(p))
            .collect::<Result<Vec<_>>>()?;
        let ids = metas.iter().map(|m| m.id.clone()).collect();
        let samples = backend.samples_of(ids, None, &Tags::new(), cutoff).await?;
        let mut by_series: BTreeMap<&str, Vec<&StoredSample>> = BTreeMap::new();
        for s in &samples {
            by_series.entry(s.series_id.as_str()).or_default().push(s);
        }
        let items = metas
            .into_iter()
            .filter_map(|meta| {
                let own = by_series.remove(meta.id.as_str()).unwrap_or_default();
                let live = RetentionPolicy::is_live(cutoff, meta.updated_at) || !own.is_empty();
                live.then(|| Metric {
                    values: own.into_iter().map(StoredSample::to_value).collect(),
                    ..meta
                })
            })
            .collect();
        Ok(ExportPage {
            items,
            next: next(after),
        })
    }

    async fn alerts(&self, cursor: Option<String>, limit: usize) -> Result<ExportPage<Alert>> {
        let cutoff = self.0.retention().alert_cutoff(time::now());
        let ir = filter::alerts(&AlertQuery::new(), cutoff);
        self.live_page(Collection::Alerts, &ir, cursor, limit, |p| {
            let alert = payload::decode_alert(p)?;
            Ok(RetentionPolicy::is_live(cutoff, alert.updated_at).then_some(alert))
        })
        .await
    }

    async fn agent_states(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<ExportPage<AgentState>> {
        let cutoff = self.0.retention().agent_state_cutoff(time::now());
        let ir = filter::agent_states(&AgentStateQuery::new(), cutoff);
        self.live_page(Collection::AgentStates, &ir, cursor, limit, |p| {
            let state = payload::decode_agent_state(p)?;
            Ok(RetentionPolicy::is_live(cutoff, state.last_heartbeat).then_some(state))
        })
        .await
    }
}

impl QdrantExporter<'_> {
    /// One page of `collection`'s points that `ir` selects, decoded; `decode` answers `None`
    /// for an item that is not live.
    async fn live_page<T>(
        &self,
        collection: Collection,
        ir: &FilterIr,
        cursor: Option<String>,
        limit: usize,
        decode: impl Fn(&serde_json::Map<String, serde_json::Value>) -> Result<Option<T>>,
    ) -> Result<ExportPage<T>> {
        let (page, after) = self
            .0
            .engine
            .scroll_page(collection, ir, offset(cursor)?, limit)
            .await?;
        let mut items = Vec::with_capacity(page.len());
        for (_, p) in &page {
            items.extend(decode(p)?);
        }
        Ok(ExportPage {
            items,
            next: next(after),
        })
    }
}
