//! Alerts: upsert by id, queries, similarity.

use aimon_core::backend::StorageEvent;
use aimon_core::driver::AlertDriver;
use aimon_core::driver::Selection;
use aimon_core::driver::Valid;
use aimon_core::driver::ValidId;
use aimon_core::memory::truncate_alert;
use aimon_core::query::{self, AlertQuery};
use aimon_core::similarity::{self, Scored, SimilarAlertsQuery, SimilarityTarget};
use aimon_core::{
    Alert, DataKind, Result, RetentionPolicy, WriteReport, filter as core_filter, time,
};

use crate::backend::QdrantBackend;
use crate::engine::Collection;
use crate::filter;
use crate::ids::point_id;
use crate::payload;

impl QdrantBackend {
    async fn live_alert(&self, id: &str) -> Result<Option<Alert>> {
        let cutoff = self.retention().alert_cutoff(time::now());
        let found = self
            .engine
            .get(Collection::Alerts, vec![point_id("alert", id)])
            .await?;
        for (_, p) in found {
            let alert = payload::decode_alert(&p)?;
            if alert.id == id && RetentionPolicy::is_live(cutoff, alert.updated_at) {
                return Ok(Some(alert));
            }
        }
        Ok(None)
    }
}

#[async_trait::async_trait]
impl AlertDriver for QdrantBackend {
    async fn save_alerts(&self, batch: Valid<'_, [Alert]>) -> Result<WriteReport> {
        let alerts = batch.get();
        let cutoff = self.retention().alert_cutoff(time::now());
        let mut report = WriteReport::default();
        let mut points = Vec::with_capacity(alerts.len());
        let mut events = Vec::new();
        for alert in alerts {
            if !RetentionPolicy::is_live(cutoff, alert.updated_at) {
                report.expired += 1;
                continue;
            }
            points.push(payload::alert_point(
                &truncate_alert(alert),
                &*self.embedder,
            )?);
            report.written += 1;
            events.push(StorageEvent::AlertWritten {
                backend: self.config.name.clone(),
                alert_id: alert.id.clone(),
                status: alert.status.to_string(),
            });
        }
        let _writer = self.writer.lock().await;
        self.engine.upsert(Collection::Alerts, points).await?;
        events.into_iter().for_each(|e| self.publish(e));
        Ok(report)
    }

    async fn get_alert(&self, id: ValidId<'_>) -> Result<Option<Alert>> {
        let id = id.get();
        self.live_alert(id).await
    }

    async fn query_alerts(&self, query: Selection<'_, AlertQuery>) -> Result<Vec<Alert>> {
        let (query, options) = (query.get(), query.options());
        let cutoff = self.retention().alert_cutoff(time::now());
        let ir = filter::alerts(query, cutoff);
        let mut found = Vec::new();
        for (_, p) in self.engine.scroll(Collection::Alerts, &ir).await? {
            let alert = payload::decode_alert(&p)?;
            if RetentionPolicy::is_live(cutoff, alert.updated_at) && query.matches(&alert, options)
            {
                found.push(alert);
            }
        }
        core_filter::sort_and_page(
            &mut found,
            options,
            query::tie_breaker(DataKind::Alerts).name,
        );
        Ok(found)
    }

    async fn find_similar_alerts(&self, query: &SimilarAlertsQuery) -> Result<Vec<Scored<Alert>>> {
        let embedder = &*self.embedder;
        let options = query.resolve(embedder.dimension())?;
        let cutoff = self.retention().alert_cutoff(time::now());
        let target = match &query.target {
            SimilarityTarget::Item(id) => self.live_alert(id).await?,
            _ => None,
        };
        let (vector, exclude) =
            similarity::alert_query_vector(&query.target, target.as_ref(), embedder)?;
        let ir = filter::alerts(&query.filter, cutoff);
        crate::rank::search(
            self,
            Collection::Alerts,
            vector,
            exclude,
            query.limit,
            &ir,
            |p| {
                let alert = payload::decode_alert(p)?;
                if !RetentionPolicy::is_live(cutoff, alert.updated_at)
                    || !query.filter.matches(&alert, &options)
                {
                    return Ok(None);
                }
                let v = similarity::alert_vector(&alert, embedder);
                Ok(Some((alert.id.clone(), alert, v)))
            },
        )
        .await
    }
}
