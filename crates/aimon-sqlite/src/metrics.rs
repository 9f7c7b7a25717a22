//! Series and samples: writes, reads, queries and `metric_history`, over the chunks of
//! [`crate::chunks`].

use std::collections::HashMap;
use std::sync::Arc;

use aimon_core::chunk::Samples;
use aimon_core::downsample::Downsampler;
use aimon_core::driver::{MetricBatch, MetricDriver, Selection, Valid, ValidId};
use aimon_core::query::{HistoryQuery, HistorySeries, MetricQuery, tie_breaker};
use aimon_core::{
    DataKind, Error, Metric, MetricType, MetricValue, Result, RetentionPolicy, Tags, WriteReport,
    model::tags_json, time,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::backend::{DbResult, SqliteBackend};
use crate::chunks::{self, HistoryScan, Tagset};
use crate::error::{json_column, parse_json};
use crate::sql::{Run, Sql, push_filters, push_order_and_page, push_series_tag_match};

/// The SQL condition "series `s` is live": it was updated within the TTL or has a sample
/// since the cutoff. Exact from the chunks' `last_ts`: a chunk's newest timestamp is its
/// newest sample's, whatever later fragments overwrote.
pub(crate) fn push_series_live(sql: &mut Sql, cutoff: Option<i64>) {
    if let Some(cutoff) = cutoff {
        sql.push(" AND (s.updated_at >= ")
            .bind(cutoff)
            .push(
                " OR EXISTS (SELECT 1 FROM series_tagsets t JOIN chunks c ON c.tagset = t.id \
                 WHERE t.series_id = s.id AND c.last_ts >= ",
            )
            .bind(cutoff)
            .push(" LIMIT 1))");
    }
}

/// The columns of `series`, in the order [`metric_from_row`] reads them.
pub(crate) const SERIES_COLUMNS: &str =
    "s.id, s.name, s.\"type\", s.description, s.unit, s.metadata, s.created_at, s.updated_at";

const UPSERT_SERIES: &str = "INSERT INTO series \
    (id, name, \"type\", description, unit, metadata, created_at, updated_at) \
    VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
    ON CONFLICT (id) DO UPDATE SET name = excluded.name, \"type\" = excluded.\"type\", \
    description = excluded.description, unit = excluded.unit, metadata = excluded.metadata, \
    updated_at = excluded.updated_at";

pub(crate) fn metric_from_row(row: &SqliteRow) -> Result<Metric> {
    let get_text = |i: usize| row.try_get::<String, _>(i).db();
    let metric_type: String = get_text(2)?;
    Ok(Metric {
        id: get_text(0)?,
        name: get_text(1)?,
        metric_type: metric_type
            .parse::<MetricType>()
            .map_err(|_| Error::malformed("metric type"))?,
        description: row.try_get(3).db()?,
        unit: row.try_get(4).db()?,
        values: Vec::new(),
        metadata: json_column(row, 5, "series metadata")?,
        created_at: time::from_micros(row.try_get(6).db()?),
        updated_at: time::from_micros(row.try_get(7).db()?),
    })
}

pub(crate) fn parse_tags(json: &str) -> Result<Tags> {
    parse_json(json, "sample tags")
}

/// A sample value (or an aggregate of them) at column `i`: a REAL, or an INTEGER read as
/// `f64`. Anything else (text, a blob, `NULL`) is a decode error (`Corrupted`), never a value
/// made up from its bytes.
pub(crate) fn sample_value(row: &SqliteRow, i: usize) -> Result<f64> {
    match row.try_get::<f64, _>(i) {
        Ok(value) => Ok(value),
        Err(not_real) => match row.try_get::<i64, _>(i) {
            Ok(integer) => Ok(integer as f64),
            Err(_) => Err(not_real).db(),
        },
    }
}

/// The samples of the loaded tag sets as a metric's values: ordered by timestamp, then tags
/// (the canonical JSON), as every backend orders them.
fn values_of(loaded: Vec<(Tagset, Samples)>) -> Result<Vec<MetricValue>> {
    let mut keyed: Vec<(i64, &str, f64, usize)> = Vec::new();
    let mut tags: Vec<Tags> = Vec::with_capacity(loaded.len());
    for (i, (tagset, samples)) in loaded.iter().enumerate() {
        tags.push(parse_tags(&tagset.tags)?);
        keyed.extend(
            samples
                .timestamps
                .iter()
                .zip(&samples.values)
                .map(|(&ts, &value)| (ts, &*tagset.tags, value, i)),
        );
    }
    keyed.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    Ok(keyed
        .into_iter()
        .map(|(ts, _, value, i)| MetricValue {
            timestamp: time::from_micros(ts),
            value,
            tags: tags[i].clone(),
        })
        .collect())
}

/// The live samples of one write under one (series, tag set), in write order.
struct TagRun<'a> {
    series_id: &'a str,
    /// The canonical tags JSON.
    json: Arc<str>,
    tags: &'a Tags,
    samples: Vec<(i64, f64)>,
}

/// The [`TagRun`]s of one write.
#[derive(Default)]
struct Runs<'a> {
    index: HashMap<(&'a str, Arc<str>), usize>,
    runs: Vec<TagRun<'a>>,
}

impl<'a> Runs<'a> {
    /// The run of (series, tags), created when new.
    fn of(&mut self, series_id: &'a str, tags: &'a Tags) -> usize {
        let json: Arc<str> = tags_json(tags).into();
        *self
            .index
            .entry((series_id, Arc::clone(&json)))
            .or_insert_with(|| {
                self.runs.push(TagRun {
                    series_id,
                    json,
                    tags,
                    samples: Vec::new(),
                });
                self.runs.len() - 1
            })
    }
}

#[async_trait::async_trait]
impl MetricDriver for SqliteBackend {
    async fn save_metrics(&self, batch: MetricBatch<'_>) -> Result<WriteReport> {
        let metrics = batch.get();
        let cutoff = self.config.retention.metric_cutoff(time::now());
        let mut report = WriteReport::default();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.db()?;
        let mut runs = Runs::default();
        for metric in metrics {
            let live = metric
                .values
                .iter()
                .filter(|v| RetentionPolicy::is_live(cutoff, v.timestamp))
                .count();
            report.expired += (metric.values.len() - live) as u64;
            let meta_live = RetentionPolicy::is_live(cutoff, metric.updated_at);
            if live == 0 && !meta_live {
                let exists = sqlx::query("SELECT 1 FROM series WHERE id = ?")
                    .bind(metric.id.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .db()?
                    .is_some();
                if !exists {
                    continue;
                }
            }
            sqlx::query(UPSERT_SERIES)
                .bind(metric.id.as_str())
                .bind(metric.name.as_str())
                .bind(metric.metric_type.as_str())
                .bind(metric.description.as_deref())
                .bind(metric.unit.as_deref())
                .bind(serde_json::to_string(&metric.metadata)?)
                .bind(time::to_micros(metric.created_at))
                .bind(time::to_micros(metric.updated_at))
                .execute(&mut *tx)
                .await
                .db()?;
            // The run of the previous sample: consecutive samples usually share their tags, so
            // the tags are serialized once a run, not once a sample.
            let mut current: Option<(usize, &Tags)> = None;
            for sample in &metric.values {
                if !RetentionPolicy::is_live(cutoff, sample.timestamp) {
                    continue;
                }
                let run = match current {
                    Some((run, tags)) if *tags == sample.tags => run,
                    _ => runs.of(&metric.id, &sample.tags),
                };
                current = Some((run, &sample.tags));
                runs.runs[run]
                    .samples
                    .push((time::to_micros(sample.timestamp), sample.value));
            }
            report.written += live as u64;
        }
        let writes = runs
            .runs
            .into_iter()
            .map(|run| chunks::Write {
                series_id: run.series_id,
                tags_json: run.json,
                tags: std::borrow::Cow::Borrowed(run.tags),
                samples: Samples::from_unsorted(run.samples),
            })
            .collect();
        chunks::write(&mut tx, writes).await?;
        tx.commit().await.db()?;
        Ok(report)
    }

    async fn get_metric(&self, id: ValidId<'_>) -> Result<Option<Metric>> {
        let id = id.get();
        let cutoff = self.config.retention.metric_cutoff(time::now());
        let mut tx = self.pool.begin().await.db()?;
        let mut sql = Sql::new("SELECT ");
        sql.push(SERIES_COLUMNS)
            .push(" FROM series s WHERE s.id = ")
            .bind(id);
        push_series_live(&mut sql, cutoff);
        let Some(row) = sql.query().fetch_optional(&mut *tx).await.db()? else {
            tx.commit().await.db()?;
            return Ok(None);
        };
        let mut metric = metric_from_row(&row)?;
        let tagsets = chunks::tagsets_of(&mut tx, &[id], &Tags::new()).await?;
        let loaded = chunks::load(&mut tx, &tagsets, cutoff.unwrap_or(i64::MIN), i64::MAX).await?;
        tx.commit().await.db()?;
        metric.values = values_of(loaded)?;
        Ok(Some(metric))
    }

    async fn query_metrics(&self, query: Selection<'_, MetricQuery>) -> Result<Vec<Metric>> {
        let (query, options) = (query.get(), query.options());
        let range = query.range_micros();
        let sample_filter = query.start.is_some() || query.end.is_some() || !query.tags.is_empty();
        let cutoff = self.config.retention.metric_cutoff(time::now());
        let low = range.start.max(cutoff.unwrap_or(i64::MIN));

        let mut sql = Sql::new("SELECT ");
        sql.push(SERIES_COLUMNS).push(" FROM series s WHERE 1");
        if let Some(name) = &query.name {
            sql.push(" AND s.name = ").bind(name.as_str());
        }
        if let Some(t) = query.metric_type {
            sql.push(" AND s.\"type\" = ").bind(t.as_str());
        }
        push_series_live(&mut sql, cutoff);
        push_filters(&mut sql, options, "s.labels");
        if sample_filter {
            // Candidates in order; whether each has a matching sample is decided from its
            // chunks below, so the page is cut there.
            push_series_tag_match(&mut sql, "s.id", &query.tags);
            let mut unpaged = options.clone();
            unpaged.limit = usize::MAX;
            unpaged.offset = 0;
            push_order_and_page(&mut sql, &unpaged, tie_breaker(DataKind::Metrics));
        } else {
            push_order_and_page(&mut sql, options, tie_breaker(DataKind::Metrics));
        }

        let mut tx = self.pool.begin().await.db()?;
        let rows = sql.query().fetch_all(&mut *tx).await.db()?;
        let candidates = rows
            .iter()
            .map(metric_from_row)
            .collect::<Result<Vec<_>>>()?;
        let ids: Vec<&str> = candidates.iter().map(|m| m.id.as_str()).collect();
        let tagsets = chunks::tagsets_of(&mut tx, &ids, &query.tags).await?;
        let matching = if sample_filter {
            Some(chunks::with_sample_in(&mut tx, &tagsets, low, range.end).await?)
        } else {
            None
        };
        let mut series_of: HashMap<Arc<str>, Vec<Tagset>> = HashMap::new();
        for tagset in &tagsets {
            if matching.as_ref().is_none_or(|m| m.contains(&tagset.id)) {
                series_of
                    .entry(Arc::clone(&tagset.series_id))
                    .or_default()
                    .push(tagset.clone());
            }
        }
        let skip = if sample_filter { options.offset } else { 0 };
        let found: Vec<Metric> = candidates
            .iter()
            .filter(|m| !sample_filter || series_of.contains_key(m.id.as_str()))
            .skip(skip)
            .take(options.limit)
            .cloned()
            .collect();
        let wanted: Vec<Tagset> = found
            .iter()
            .flat_map(|m| series_of.get(m.id.as_str()).into_iter().flatten().cloned())
            .collect();
        let loaded = if query.series_only {
            Vec::new()
        } else {
            chunks::load(&mut tx, &wanted, low, range.end).await?
        };
        tx.commit().await.db()?;
        let mut values: HashMap<Arc<str>, Vec<(Tagset, Samples)>> = HashMap::new();
        for (tagset, samples) in loaded {
            values
                .entry(Arc::clone(&tagset.series_id))
                .or_default()
                .push((tagset, samples));
        }
        found
            .into_iter()
            .map(|mut metric| {
                metric.values = values_of(values.remove(metric.id.as_str()).unwrap_or_default())?;
                Ok(metric)
            })
            .collect()
    }

    async fn metric_history(&self, query: Valid<'_, HistoryQuery>) -> Result<Vec<HistorySeries>> {
        let query = query.get();
        let range = query.range_micros();
        let cutoff = self.config.retention.metric_cutoff(time::now());
        let mut tx = self.pool.begin().await.db()?;
        let mut sql = Sql::new("SELECT s.id FROM series s WHERE s.name = ");
        sql.bind(query.name.as_str());
        push_series_tag_match(&mut sql, "s.id", &query.tags);
        let ids: Vec<String> = sql
            .query()
            .fetch_all(&mut *tx)
            .await
            .db()?
            .iter()
            .map(|row| row.try_get(0).db())
            .collect::<Result<_>>()?;
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let tagsets = chunks::tagsets_of(&mut tx, &ids, &query.tags).await?;
        let scan = HistoryScan {
            lo: range.start.max(cutoff.unwrap_or(i64::MIN)),
            hi: range.end,
            step: query.step_micros(),
            group_by: query.group_by.as_deref(),
        };
        let mut downsampler = Downsampler::new(query);
        chunks::fold_history(&mut tx, &tagsets, &scan, &mut downsampler).await?;
        tx.commit().await.db()?;
        Ok(downsampler.finish())
    }
}
