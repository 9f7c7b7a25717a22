//! `get_metric` and `query_metrics`: series rows, then their samples, in one snapshot.

use aimon_core::driver::Selection;
use std::collections::HashMap;

use aimon_core::query::{MetricQuery, tie_breaker};
use aimon_core::{DataKind, Metric, MetricValue, Result, Tags, model::tags_json, time};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{
    SERIES_COLUMNS, chunks, metric_from_row, native_tagsets, push_sample_exists, push_series_live,
};
use crate::backend::{DbResult, PostgresBackend};
use crate::error::parse_json;
use crate::sql::{Run, Sql, push_filters, push_order_and_page};

/// A sample from the columns `first` (time), `first + 1` (tags), `first + 2` (value).
fn sample_from_row(row: &PgRow, first: usize) -> Result<MetricValue> {
    let tags: String = row.try_get(first + 1).db()?;
    Ok(MetricValue {
        timestamp: row.try_get(first).db()?,
        value: row.try_get(first + 2).db()?,
        tags: parse_json(&tags, "sample tags")?,
    })
}

/// Appends ` AND` a condition: the sample `x`'s tag set holds every wanted pair, found through
/// the GIN-indexed `series_tagsets` rather than by decoding each sample's JSON.
fn push_tags_match(sql: &mut Sql, wanted: &Tags) {
    if !wanted.is_empty() {
        sql.push(" AND (x.sid, x.tags_key) IN (SELECT t.sid, t.tags_key FROM series_tagsets t WHERE t.tags_jsonb @> ")
            .bind(tags_json(wanted))
            .push("::jsonb)");
    }
}

/// Appends ` AND` a condition: series `s` has a tag set holding every wanted pair.
fn push_series_tags_match(sql: &mut Sql, wanted: &Tags) {
    if !wanted.is_empty() {
        sql.push(" AND s.sid IN (SELECT t.sid FROM series_tagsets t WHERE t.tags_jsonb @> ")
            .bind(tags_json(wanted))
            .push("::jsonb)");
    }
}

impl PostgresBackend {
    pub(crate) async fn read_metric(&self, id: &str) -> Result<Option<Metric>> {
        let cutoff = self.config.retention.metric_cutoff(time::now());
        let mut tx = self.read_tx().await?;
        let mut sql = Sql::new("SELECT ");
        sql.push(SERIES_COLUMNS)
            .push(" FROM series s WHERE s.id = ")
            .bind(id);
        push_series_live(&mut sql, cutoff, self.timescale);
        let Some(row) = sql.query().fetch_optional(&mut *tx).await.db()? else {
            tx.commit().await.db()?;
            return Ok(None);
        };
        let (sid, mut metric) = metric_from_row(&row)?;
        if !self.timescale {
            let low = cutoff.unwrap_or(time::MIN_TIMESTAMP_MICROS);
            let mut found = native_samples(
                &mut tx,
                &[sid],
                &Tags::new(),
                low,
                time::MAX_TIMESTAMP_MICROS,
            )
            .await?;
            tx.commit().await.db()?;
            metric.values = found.remove(&sid).unwrap_or_default();
            return Ok(Some(metric));
        }
        let rows = sqlx::query(
            "SELECT time, tags, value FROM samples WHERE sid = $1 AND time >= $2 \
             ORDER BY time, tags",
        )
        .bind(sid)
        .bind(time::from_micros(
            cutoff.unwrap_or(time::MIN_TIMESTAMP_MICROS),
        ))
        .fetch_all(&mut *tx)
        .await
        .db()?;
        tx.commit().await.db()?;
        metric.values = rows
            .iter()
            .map(|row| sample_from_row(row, 0))
            .collect::<Result<_>>()?;
        Ok(Some(metric))
    }

    pub(crate) async fn select_metrics(
        &self,
        query: Selection<'_, MetricQuery>,
    ) -> Result<Vec<Metric>> {
        let (query, options) = (query.get(), query.options());
        let range = query.range_micros();
        let sample_filter = query.start.is_some() || query.end.is_some() || !query.tags.is_empty();
        let cutoff = self.config.retention.metric_cutoff(time::now());
        let low = time::from_micros(range.start.max(cutoff.unwrap_or(i64::MIN)));
        let high = time::from_micros(range.end);

        let sample_condition = |sql: &mut Sql| {
            sql.push(" AND x.time >= ")
                .bind(low)
                .push(" AND x.time < ")
                .bind(high);
            push_tags_match(sql, &query.tags);
        };

        let mut sql = Sql::new("SELECT ");
        sql.push(SERIES_COLUMNS).push(" FROM series s WHERE TRUE");
        if let Some(name) = &query.name {
            sql.push(" AND s.name = ").bind(name.as_str());
        }
        if let Some(t) = query.metric_type {
            sql.push(" AND s.\"type\" = ").bind(t.as_str());
        }
        push_series_live(&mut sql, cutoff, self.timescale);
        push_filters(&mut sql, options, "s.labels");
        if sample_filter && !self.timescale {
            let (low, high) = (range.start.max(cutoff.unwrap_or(i64::MIN)), range.end);
            sql.push(" AND ");
            push_sample_exists(&mut sql, false, low, high, Some(&query.tags));
            // Chunks may enclose a range without a sample in it: the series are checked
            // against the samples read, and paged here.
            let mut all = options.clone();
            all.limit = usize::MAX;
            all.offset = 0;
            push_order_and_page(&mut sql, &all, tie_breaker(DataKind::Metrics));
            let mut tx = self.read_tx().await?;
            let rows = sql.query().fetch_all(&mut *tx).await.db()?;
            let mut found = Vec::with_capacity(rows.len());
            for row in &rows {
                found.push(metric_from_row(row)?);
            }
            let sids: Vec<i64> = found.iter().map(|f| f.0).collect();
            let mut samples = native_samples(&mut tx, &sids, &query.tags, low, high).await?;
            tx.commit().await.db()?;
            return Ok(found
                .into_iter()
                .filter_map(|(sid, mut metric)| {
                    metric.values = samples.remove(&sid)?;
                    Some(metric)
                })
                .skip(options.offset)
                .take(options.limit)
                .collect());
        }
        if sample_filter {
            push_series_tags_match(&mut sql, &query.tags);
            sql.push(" AND EXISTS (SELECT 1 FROM samples x WHERE x.sid = s.sid");
            sample_condition(&mut sql);
            sql.push(")");
        }
        push_order_and_page(&mut sql, options, tie_breaker(DataKind::Metrics));

        let mut tx = self.read_tx().await?;
        let rows = sql.query().fetch_all(&mut *tx).await.db()?;
        let mut found = Vec::with_capacity(rows.len());
        let mut index: HashMap<i64, usize> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let (sid, metric) = metric_from_row(row)?;
            index.insert(sid, found.len());
            found.push(metric);
        }
        // The series are decided by now (by the statement's `EXISTS` where samples filter
        // them): a catalog needs no sample.
        if found.is_empty() || query.series_only {
            tx.commit().await.db()?;
            return Ok(found);
        }
        let sids: Vec<i64> = index.keys().copied().collect();
        if !self.timescale {
            let low = cutoff.unwrap_or(time::MIN_TIMESTAMP_MICROS);
            let mut samples = native_samples(
                &mut tx,
                &sids,
                &Tags::new(),
                low,
                time::MAX_TIMESTAMP_MICROS,
            )
            .await?;
            tx.commit().await.db()?;
            for (sid, i) in index {
                found[i].values = samples.remove(&sid).unwrap_or_default();
            }
            return Ok(found);
        }
        let mut sql =
            Sql::new("SELECT x.sid, x.time, x.tags, x.value FROM samples x WHERE x.sid = ANY(");
        sql.bind(crate::sql::Arg::Ints(sids)).push(")");
        sample_condition(&mut sql);
        sql.push(" ORDER BY x.sid, x.time, x.tags");
        let rows = sql.query().fetch_all(&mut *tx).await.db()?;
        tx.commit().await.db()?;
        for row in &rows {
            let sid: i64 = row.try_get(0).db()?;
            if let Some(&i) = index.get(&sid) {
                found[i].values.push(sample_from_row(row, 1)?);
            }
        }
        Ok(found)
    }
}

/// Native mode: the samples of series `sids` in `[low, high)` whose tags hold `tags`, per
/// series in (time, tags) order, read from chunks and the head; series without one are absent.
async fn native_samples(
    conn: &mut sqlx::PgConnection,
    sids: &[i64],
    tags: &Tags,
    low: i64,
    high: i64,
) -> Result<HashMap<i64, Vec<MetricValue>>> {
    let tagsets = native_tagsets(conn, sids, tags).await?;
    let list: Vec<chunks::Tagset> = tagsets.iter().map(|t| t.1.clone()).collect();
    let mut samples = chunks::read(conn, &list, low, high).await?;
    let mut out: HashMap<i64, Vec<(i64, &str, MetricValue)>> = HashMap::new();
    for (sid, tagset) in &tagsets {
        let Some(found) = samples.remove(&tagset.tsid) else {
            continue;
        };
        let parsed: Tags = parse_json(&tagset.tags, "sample tags")?;
        let values = out.entry(*sid).or_default();
        for (&ts, &value) in found.timestamps.iter().zip(&found.values) {
            values.push((
                ts,
                tagset.tags.as_str(),
                MetricValue {
                    timestamp: time::from_micros(ts),
                    value,
                    tags: parsed.clone(),
                },
            ));
        }
    }
    Ok(out
        .into_iter()
        .map(|(sid, mut values)| {
            values.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
            (sid, values.into_iter().map(|v| v.2).collect())
        })
        .collect())
}
