//! Series and samples: `save_metrics`, `get_metric`, `query_metrics`, `metric_history`.
//!
//! A series is one point in `series` (its metadata); each sample one point in `samples`, whose
//! id is derived from the sample key (series, timestamp µs, tags), so a rewrite overwrites.
//! `metric_history` is the core's client-side [`Downsampler`] over the samples a filter selects.

use aimon_core::driver::MetricBatch;
use aimon_core::driver::MetricDriver;
use aimon_core::driver::Selection;
use aimon_core::driver::Valid;
use aimon_core::driver::ValidId;
use std::collections::BTreeMap;

use aimon_core::backend::StorageEvent;
use aimon_core::downsample::{Downsampler, SampleRef};
use aimon_core::query::{self, HistoryQuery, HistorySeries, MetricQuery};
use aimon_core::time;
use aimon_core::{DataKind, Metric, Result, RetentionPolicy, WriteReport, filter as core_filter};

use crate::backend::QdrantBackend;
use crate::engine::Collection;
use crate::filter;
use crate::ids::point_id;
use crate::payload::{self, StoredSample};

/// The metadata of `metric` without samples, as a series point stores it.
fn series_metadata(metric: &Metric, created_at: chrono::DateTime<chrono::Utc>) -> Metric {
    Metric {
        values: Vec::new(),
        created_at,
        updated_at: time::truncate(metric.updated_at),
        ..metric.clone()
    }
}

/// The most series ids a samples filter names; more select through the scroll instead.
const MAX_IDS_IN_FILTER: usize = 1_000;

fn with_samples(meta: Metric, samples: &[StoredSample]) -> Metric {
    Metric {
        values: samples.iter().map(StoredSample::to_value).collect(),
        ..meta
    }
}

impl QdrantBackend {
    /// Stored series metadata by id, for the ids given.
    async fn series_by_id(
        &self,
        ids: impl Iterator<Item = &str>,
    ) -> Result<BTreeMap<String, Metric>> {
        let ids: Vec<_> = ids.map(|id| point_id("series", id)).collect();
        let mut out = BTreeMap::new();
        for (_, p) in self.engine.get(Collection::Series, ids).await? {
            let meta = payload::decode_series(&p)?;
            out.insert(meta.id.clone(), meta);
        }
        Ok(out)
    }

    /// The live samples of the series `ids` that a range and tags select, sorted by (timestamp,
    /// tags) within each series.
    pub(crate) async fn samples_of(
        &self,
        ids: Vec<String>,
        range: Option<query::MicrosRange>,
        tags: &aimon_core::Tags,
        cutoff: Option<i64>,
    ) -> Result<Vec<StoredSample>> {
        let wanted: std::collections::BTreeSet<&str> = ids.iter().map(String::as_str).collect();
        // A long id list would be cloned for every scroll page (and, on a server, sent with every
        // request, up to its size limit): past a bound the filter leaves it out and the `wanted`
        // check below selects the series.
        let by_id = (ids.len() <= MAX_IDS_IN_FILTER).then(|| ids.clone());
        let ir = filter::samples(by_id, range, tags, cutoff);
        let mut out = Vec::new();
        for (_, p) in self.engine.scroll(Collection::Samples, &ir).await? {
            let s = payload::decode_sample(&p)?;
            let live = cutoff.is_none_or(|c| s.ts >= c);
            let in_range = range.is_none_or(|r| r.contains(s.ts));
            let tagged = tags.iter().all(|(k, v)| s.tags.get(k) == Some(v));
            if live && in_range && tagged && wanted.contains(s.series_id.as_str()) {
                out.push(s);
            }
        }
        out.sort_by(|a, b| {
            (&a.series_id, a.ts, &a.tags_json).cmp(&(&b.series_id, b.ts, &b.tags_json))
        });
        Ok(out)
    }
}

#[async_trait::async_trait]
impl MetricDriver for QdrantBackend {
    async fn save_metrics(&self, batch: MetricBatch<'_>) -> Result<WriteReport> {
        let metrics = batch.get();
        let cutoff = self.retention().metric_cutoff(time::now());
        let _writer = self.writer.lock().await;
        let mut known = self
            .series_by_id(metrics.iter().map(|m| m.id.as_str()))
            .await?;
        let mut report = WriteReport::default();
        let mut series_points = BTreeMap::new();
        let mut sample_points = Vec::new();
        let mut events = Vec::new();
        for metric in metrics {
            let live: Vec<_> = metric
                .values
                .iter()
                .filter(|v| RetentionPolicy::is_live(cutoff, v.timestamp))
                .collect();
            report.expired += (metric.values.len() - live.len()) as u64;
            let meta_live = RetentionPolicy::is_live(cutoff, metric.updated_at);
            if live.is_empty() && !meta_live && !known.contains_key(&metric.id) {
                continue;
            }
            let created_at = known
                .get(&metric.id)
                .map_or_else(|| time::truncate(metric.created_at), |m| m.created_at);
            let meta = series_metadata(metric, created_at);
            for sample in &live {
                sample_points.push(payload::sample_point(&meta, sample));
            }
            report.written += live.len() as u64;
            events.push(StorageEvent::MetricWritten {
                backend: self.config.name.clone(),
                metric_id: metric.id.clone(),
                samples: live.len() as u64,
            });
            series_points.insert(meta.id.clone(), payload::series_point(&meta)?);
            known.insert(meta.id.clone(), meta);
        }
        // Samples first: a series point never names samples that were not written.
        self.engine
            .upsert(Collection::Samples, sample_points)
            .await?;
        self.engine
            .upsert(Collection::Series, series_points.into_values().collect())
            .await?;
        events.into_iter().for_each(|e| self.publish(e));
        Ok(report)
    }

    async fn get_metric(&self, id: ValidId<'_>) -> Result<Option<Metric>> {
        let id = id.get();
        let cutoff = self.retention().metric_cutoff(time::now());
        let Some(meta) = self.series_by_id(std::iter::once(id)).await?.remove(id) else {
            return Ok(None);
        };
        let samples = self
            .samples_of(vec![id.to_owned()], None, &aimon_core::Tags::new(), cutoff)
            .await?;
        if !RetentionPolicy::is_live(cutoff, meta.updated_at) && samples.is_empty() {
            return Ok(None);
        }
        Ok(Some(with_samples(meta, &samples)))
    }

    async fn query_metrics(&self, query: Selection<'_, MetricQuery>) -> Result<Vec<Metric>> {
        let (query, options) = (query.get(), query.options());
        let range = query.range_micros();
        let sample_filter = query.start.is_some() || query.end.is_some() || !query.tags.is_empty();
        let cutoff = self.retention().metric_cutoff(time::now());
        let mut metas = Vec::new();
        for (_, p) in self
            .engine
            .scroll(Collection::Series, &filter::series(query))
            .await?
        {
            let meta = payload::decode_series(&p)?;
            if query.name.as_ref().is_some_and(|n| *n != meta.name)
                || query.metric_type.is_some_and(|t| t != meta.metric_type)
                || !core_filter::matches_all(&meta, options)
            {
                continue;
            }
            metas.push(meta);
        }
        let mut found = Vec::new();
        if !metas.is_empty() {
            let ids = metas.iter().map(|m| m.id.clone()).collect();
            let samples = self
                .samples_of(ids, Some(range), &query.tags, cutoff)
                .await?;
            let mut by_series: BTreeMap<&str, Vec<StoredSample>> = BTreeMap::new();
            for s in &samples {
                by_series
                    .entry(s.series_id.as_str())
                    .or_default()
                    .push(s.clone());
            }
            for meta in metas {
                let own = by_series.remove(meta.id.as_str()).unwrap_or_default();
                let live = RetentionPolicy::is_live(cutoff, meta.updated_at) || !own.is_empty();
                if own.is_empty() && (sample_filter || !live) {
                    continue;
                }
                found.push(with_samples(meta, &own));
            }
        }
        core_filter::sort_and_page(
            &mut found,
            options,
            query::tie_breaker(DataKind::Metrics).name,
        );
        Ok(found)
    }

    async fn metric_history(&self, query: Valid<'_, HistoryQuery>) -> Result<Vec<HistorySeries>> {
        let query = query.get();
        let range = query.range_micros();
        let cutoff = self.retention().metric_cutoff(time::now());
        let mut downsampler = Downsampler::new(query);
        let by_name =
            filter::FilterIr::new().keyword(crate::payload::field::NAME, query.name.clone());
        let mut ids = Vec::new();
        for (_, p) in self.engine.scroll(Collection::Series, &by_name).await? {
            let meta = payload::decode_series(&p)?;
            if meta.name == query.name {
                ids.push(meta.id);
            }
        }
        if ids.is_empty() {
            return Ok(downsampler.finish());
        }
        let samples = self
            .samples_of(ids, Some(range), &query.tags, cutoff)
            .await?;
        for s in &samples {
            downsampler.push(SampleRef {
                series_id: &s.series_id,
                tags_json: &s.tags_json,
                group: query
                    .group_by
                    .as_ref()
                    .and_then(|g| s.tags.get(g))
                    .map(String::as_str),
                timestamp_micros: s.ts,
                value: s.value,
            });
        }
        Ok(downsampler.finish())
    }
}
