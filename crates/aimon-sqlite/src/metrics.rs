//! Series and samples: writes, reads, queries and the SQL `metric_history`.

use aimon_core::driver::MetricBatch;
use aimon_core::driver::MetricDriver;
use aimon_core::driver::Selection;
use aimon_core::driver::Valid;
use aimon_core::driver::ValidId;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use aimon_core::downsample::SUM_SCALE_UP;
use aimon_core::query::{
    Aggregation, HistoryBucket, HistoryQuery, HistorySeries, MetricQuery, tie_breaker,
};
use aimon_core::{
    DataKind, Error, Metric, MetricType, MetricValue, Result, RetentionPolicy, Tags, WriteReport,
    model::tags_json, time,
};
use sqlx::sqlite::{Sqlite, SqliteRow};
use sqlx::{AssertSqlSafe, Row, Transaction, ValueRef};

use crate::backend::{DbResult, SqliteBackend};
use crate::error::{json_column, parse_json};
use crate::sql::{
    Run, Sql, push_filters, push_matching_tagsets, push_order_and_page, push_series_tag_match,
    push_tags_match,
};

/// Rows per multi-row sample `INSERT`: a fixed size, so the statement is prepared once and
/// cached; 4 parameters a row keeps it far below SQLite's parameter limit.
pub(crate) const INSERT_CHUNK: usize = 500;

/// The columns of `series`, in the order [`metric_from_row`] reads them.
pub(crate) const SERIES_COLUMNS: &str =
    "s.id, s.name, s.\"type\", s.description, s.unit, s.metadata, s.created_at, s.updated_at";

fn insert_samples_sql(rows: usize) -> String {
    let mut sql = String::from("INSERT INTO samples (series_id, ts, tags, value) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str("(?, ?, ?, ?)");
    }
    sql.push_str(" ON CONFLICT (series_id, ts, tags) DO UPDATE SET value = excluded.value");
    sql
}

static INSERT_CHUNK_SQL: LazyLock<Arc<str>> =
    LazyLock::new(|| insert_samples_sql(INSERT_CHUNK).into());

/// Rows per multi-row `INSERT` into the tag-set index (3 parameters a row).
pub(crate) const INDEX_CHUNK: usize = 200;

/// `INSERT` of `rows` (series_id, tags, last_ts) rows into `series_tagsets`, keeping the
/// greatest `last_ts` (and writing nothing when the stored one is not smaller).
fn insert_series_tagsets_sql(rows: usize) -> String {
    let mut sql = String::from("INSERT INTO series_tagsets (series_id, tags, last_ts) VALUES ");
    push_placeholders(&mut sql, rows);
    sql.push_str(
        " ON CONFLICT (series_id, tags) DO UPDATE SET last_ts = excluded.last_ts \
         WHERE excluded.last_ts > series_tagsets.last_ts",
    );
    sql
}

/// `INSERT` of `rows` (key, value, tags) rows into `tagset_pairs`, skipping known ones.
fn insert_tagset_pairs_sql(rows: usize) -> String {
    let mut sql =
        String::from("INSERT OR IGNORE INTO tagset_pairs (\"key\", \"value\", tags) VALUES ");
    push_placeholders(&mut sql, rows);
    sql
}

fn push_placeholders(sql: &mut String, rows: usize) {
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str("(?, ?, ?)");
    }
}

static SERIES_TAGSETS_CHUNK_SQL: LazyLock<Arc<str>> =
    LazyLock::new(|| insert_series_tagsets_sql(INDEX_CHUNK).into());
static TAGSET_PAIRS_CHUNK_SQL: LazyLock<Arc<str>> =
    LazyLock::new(|| insert_tagset_pairs_sql(INDEX_CHUNK).into());

const UPSERT_SERIES: &str = "INSERT INTO series \
    (id, name, \"type\", description, unit, metadata, created_at, updated_at) \
    VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
    ON CONFLICT (id) DO UPDATE SET name = excluded.name, \"type\" = excluded.\"type\", \
    description = excluded.description, unit = excluded.unit, metadata = excluded.metadata, \
    updated_at = excluded.updated_at";

/// One sample row waiting to be inserted.
struct SampleRow {
    series_id: Arc<str>,
    ts: i64,
    /// Shared by the consecutive samples that carry the same tags, so their JSON is built once.
    tags: Arc<str>,
    value: f64,
}

async fn insert_samples(tx: &mut Transaction<'static, Sqlite>, rows: &[SampleRow]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    // Audited: the statement holds only fixed text and placeholders.
    let sql = if rows.len() == INSERT_CHUNK {
        AssertSqlSafe(Arc::clone(&INSERT_CHUNK_SQL))
    } else {
        AssertSqlSafe(Arc::from(insert_samples_sql(rows.len())))
    };
    let mut query = sqlx::query(sql);
    for row in rows {
        query = query
            .bind(Arc::clone(&row.series_id))
            .bind(row.ts)
            .bind(Arc::clone(&row.tags))
            .bind(row.value);
    }
    query.execute(&mut **tx).await.db()?;
    Ok(())
}

/// The granularity of `series_tagsets.last_ts`: one hour.
const LAST_TS_STEP: i64 = 3_600_000_000;

/// The `series_tagsets.last_ts` written for a sample at `ts`: `ts` rounded up past the next
/// whole hour. Any upper bound keeps retention's pruning exact (a row goes once its bound
/// expires, when no sample under it can be left); a coarse one means a series writing in
/// order rewrites its index row once an hour, not in every batch.
pub(crate) fn last_ts_bound(ts: i64) -> i64 {
    ts.div_euclid(LAST_TS_STEP)
        .saturating_add(1)
        .saturating_mul(LAST_TS_STEP)
}

/// The distinct tag sets of one write, for the tag-set index (`series_tagsets`,
/// `tagset_pairs`): a handful a batch, whatever its number of samples.
#[derive(Default)]
struct TagsetIndex<'a> {
    /// series → tags → [`last_ts_bound`] of the newest timestamp written under them.
    series: HashMap<Arc<str>, HashMap<String, i64>>,
    /// Each distinct tag set and its pairs.
    pairs: HashMap<String, &'a Tags>,
}

impl<'a> TagsetIndex<'a> {
    fn add(&mut self, series_id: &Arc<str>, tags_json: &str, tags: &'a Tags, ts: i64) {
        // Looked up by reference: a series' samples repeat a few tag sets.
        let sets = match self.series.get_mut(&**series_id) {
            Some(sets) => sets,
            None => self.series.entry(Arc::clone(series_id)).or_default(),
        };
        let bound = last_ts_bound(ts);
        match sets.get_mut(tags_json) {
            Some(last) => *last = (*last).max(bound),
            None => {
                sets.insert(tags_json.to_owned(), bound);
                if !self.pairs.contains_key(tags_json) {
                    self.pairs.insert(tags_json.to_owned(), tags);
                }
            }
        }
    }

    async fn write(&self, tx: &mut Transaction<'static, Sqlite>) -> Result<()> {
        let series: Vec<(&Arc<str>, &String, i64)> = self
            .series
            .iter()
            .flat_map(|(id, sets)| sets.iter().map(move |(tags, last)| (id, tags, *last)))
            .collect();
        for chunk in series.chunks(INDEX_CHUNK) {
            // Audited: the statement holds only fixed text and placeholders.
            let sql = if chunk.len() == INDEX_CHUNK {
                AssertSqlSafe(Arc::clone(&SERIES_TAGSETS_CHUNK_SQL))
            } else {
                AssertSqlSafe(Arc::from(insert_series_tagsets_sql(chunk.len())))
            };
            let mut query = sqlx::query(sql);
            for (series_id, tags, last_ts) in chunk {
                query = query
                    .bind(Arc::clone(series_id))
                    .bind((*tags).clone())
                    .bind(*last_ts);
            }
            query.execute(&mut **tx).await.db()?;
        }
        let pairs: Vec<(&str, &str, &str)> = self
            .pairs
            .iter()
            .flat_map(|(json, tags)| {
                tags.iter()
                    .map(move |(k, v)| (k.as_str(), v.as_str(), json.as_str()))
            })
            .collect();
        for chunk in pairs.chunks(INDEX_CHUNK) {
            // Audited: the statement holds only fixed text and placeholders.
            let sql = if chunk.len() == INDEX_CHUNK {
                AssertSqlSafe(Arc::clone(&TAGSET_PAIRS_CHUNK_SQL))
            } else {
                AssertSqlSafe(Arc::from(insert_tagset_pairs_sql(chunk.len())))
            };
            let mut query = sqlx::query(sql);
            for (key, value, tags) in chunk {
                query = query
                    .bind(key.to_string())
                    .bind(value.to_string())
                    .bind(tags.to_string());
            }
            query.execute(&mut **tx).await.db()?;
        }
        Ok(())
    }
}

/// The SQL condition "series `s` is live": it has a live sample or was updated within the TTL.
pub(crate) fn push_series_live(sql: &mut Sql, cutoff: Option<i64>) {
    if let Some(cutoff) = cutoff {
        sql.push(" AND (s.updated_at >= ")
            .bind(cutoff)
            .push(" OR EXISTS (SELECT 1 FROM samples x WHERE x.series_id = s.id AND x.ts >= ")
            .bind(cutoff)
            .push(" LIMIT 1))");
    }
}

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

fn sample_from_row(row: &SqliteRow, first: usize) -> Result<MetricValue> {
    let ts: i64 = row.try_get(first).db()?;
    let tags: String = row.try_get(first + 1).db()?;
    let value = sample_value(row, first + 2)?;
    Ok(MetricValue {
        timestamp: time::from_micros(ts),
        value,
        tags: parse_tags(&tags)?,
    })
}

#[async_trait::async_trait]
impl MetricDriver for SqliteBackend {
    async fn save_metrics(&self, batch: MetricBatch<'_>) -> Result<WriteReport> {
        let metrics = batch.get();
        let cutoff = self.config.retention.metric_cutoff(time::now());
        let mut report = WriteReport::default();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.db()?;
        let mut pending: Vec<SampleRow> = Vec::with_capacity(INSERT_CHUNK);
        let mut index = TagsetIndex::default();
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
            let series_id: Arc<str> = Arc::from(metric.id.as_str());
            // The current run of samples sharing a tag set (usually the whole metric): the
            // index sees one entry a run, not a hash lookup a sample.
            let mut run: Option<(Arc<str>, &Tags, i64)> = None;
            for sample in &metric.values {
                if !RetentionPolicy::is_live(cutoff, sample.timestamp) {
                    continue;
                }
                let ts = time::to_micros(sample.timestamp);
                let tags = match &mut run {
                    Some((json, map, last)) if **map == sample.tags => {
                        *last = (*last).max(ts);
                        Arc::clone(json)
                    }
                    _ => {
                        if let Some((json, map, last)) = run.take() {
                            index.add(&series_id, &json, map, last);
                        }
                        let json: Arc<str> = tags_json(&sample.tags).into();
                        run = Some((Arc::clone(&json), &sample.tags, ts));
                        json
                    }
                };
                let row = SampleRow {
                    series_id: Arc::clone(&series_id),
                    ts,
                    tags,
                    value: sample.value,
                };
                pending.push(row);
                if pending.len() == INSERT_CHUNK {
                    insert_samples(&mut tx, &pending).await?;
                    pending.clear();
                }
            }
            if let Some((json, map, last)) = run {
                index.add(&series_id, &json, map, last);
            }
            report.written += live as u64;
        }
        insert_samples(&mut tx, &pending).await?;
        index.write(&mut tx).await?;
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
        let rows = sqlx::query(
            "SELECT ts, tags, value FROM samples WHERE series_id = ? AND ts >= ? \
             ORDER BY ts, tags",
        )
        .bind(id)
        .bind(cutoff.unwrap_or(i64::MIN))
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

    async fn query_metrics(&self, query: Selection<'_, MetricQuery>) -> Result<Vec<Metric>> {
        let (query, options) = (query.get(), query.options());
        let range = query.range_micros();
        let sample_filter = query.start.is_some() || query.end.is_some() || !query.tags.is_empty();
        let cutoff = self.config.retention.metric_cutoff(time::now());
        let low = range.start.max(cutoff.unwrap_or(i64::MIN));

        // The sample condition, shared by the series query (EXISTS) and the sample query.
        let sample_condition = |sql: &mut Sql| {
            sql.push(" AND x.ts >= ")
                .bind(low)
                .push(" AND x.ts < ")
                .bind(range.end);
            push_tags_match(sql, "x.tags", &query.tags);
        };

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
            push_series_tag_match(&mut sql, "s.id", &query.tags);
            sql.push(" AND EXISTS (SELECT 1 FROM samples x WHERE x.series_id = s.id");
            sample_condition(&mut sql);
            sql.push(" LIMIT 1)");
        }
        push_order_and_page(&mut sql, options, tie_breaker(DataKind::Metrics));

        let mut tx = self.pool.begin().await.db()?;
        let rows = sql.query().fetch_all(&mut *tx).await.db()?;
        let mut found = rows
            .iter()
            .map(metric_from_row)
            .collect::<Result<Vec<_>>>()?;
        if found.is_empty() {
            tx.commit().await.db()?;
            return Ok(found);
        }
        let index: HashMap<String, usize> = found
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.clone(), i))
            .collect();
        let ids: Vec<&str> = found.iter().map(|m| m.id.as_str()).collect();
        let mut sql = Sql::new(
            "SELECT x.series_id, x.ts, x.tags, x.value FROM samples x \
             WHERE x.series_id IN (SELECT j.value FROM json_each(",
        );
        sql.bind(serde_json::to_string(&ids)?).push(") AS j)");
        sample_condition(&mut sql);
        sql.push(" ORDER BY x.series_id, x.ts, x.tags");
        let rows = sql.query().fetch_all(&mut *tx).await.db()?;
        tx.commit().await.db()?;
        for row in &rows {
            let series_id: String = row.try_get(0).db()?;
            let Some(&i) = index.get(&series_id) else {
                continue;
            };
            found[i].values.push(sample_from_row(row, 1)?);
        }
        Ok(found)
    }

    async fn metric_history(&self, query: Valid<'_, HistoryQuery>) -> Result<Vec<HistorySeries>> {
        let query = query.get();
        let range = query.range_micros();
        let cutoff = self.config.retention.metric_cutoff(time::now());
        let low = range.start.max(cutoff.unwrap_or(i64::MIN));

        let mut inner = Sql::new("SELECT ");
        match &query.group_by {
            Some(tag) => {
                // The tag's value in the sample's tag set, from the `tagset_pairs` index.
                inner
                    .push("(SELECT g.\"value\" FROM tagset_pairs g WHERE g.tags = x.tags AND g.\"key\" = ")
                    .bind(tag.as_str())
                    .push(")");
            }
            None => {
                inner.push("NULL");
            }
        }
        inner
            .push(" AS grp, x.ts - (x.ts % ")
            .bind(query.step_micros())
            .push(") AS bucket, x.ts AS ts, x.series_id AS sid, x.tags AS tags, x.value AS value");
        if query.tags.is_empty() {
            inner
                .push(" FROM samples x JOIN series s ON s.id = x.series_id WHERE s.name = ")
                .bind(query.name.as_str());
        } else {
            // The candidate series (named so, with a matching tag set), each with `pure`:
            // whether all its tag sets match. By the index's invariant every sample of a pure
            // series matches, so only the others check each sample's tags. `CROSS JOIN` keeps
            // the candidates the outer loop (SQLite would otherwise probe them per sample).
            inner.push(" FROM (SELECT t.series_id AS sid, min(t.tags IN ");
            push_matching_tagsets(&mut inner, &query.tags);
            inner
                .push(
                    ") AS pure FROM series_tagsets t \
                     WHERE t.series_id IN (SELECT s.id FROM series s WHERE s.name = ",
                )
                .bind(query.name.as_str())
                .push(")");
            push_series_tag_match(&mut inner, "t.series_id", &query.tags);
            inner.push(
                " GROUP BY t.series_id) AS c CROSS JOIN samples x \
                 WHERE x.series_id = c.sid AND (c.pure OR x.tags IN ",
            );
            push_matching_tagsets(&mut inner, &query.tags);
            inner.push(")");
        }
        inner
            .push(" AND x.ts >= ")
            .bind(low)
            .push(" AND x.ts < ")
            .bind(range.end);

        // Without `group_by`, `grp` is NULL throughout: keying by the bucket alone gives the
        // same groups with a cheaper sort.
        let keys = if query.group_by.is_some() {
            "grp, bucket"
        } else {
            "bucket"
        };
        let window = |order: &str| {
            format!(
                "SELECT grp, bucket, value, cnt FROM (SELECT grp, bucket, value, \
                 ROW_NUMBER() OVER (PARTITION BY {keys} ORDER BY {order}) AS rn, \
                 COUNT(*) OVER (PARTITION BY {keys}) AS cnt FROM ("
            )
        };
        // `scaled`: sums and averages of the values divided by 2^64 (exact: a power of two,
        // by integer literals so no decimal conversion rounds), for buckets whose sum
        // overflowed.
        let statement = |scaled: bool| {
            let (head, tail) = match query.aggregation {
                Aggregation::First => (
                    window("ts ASC, sid ASC, tags ASC"),
                    format!(")) WHERE rn = 1 ORDER BY {keys}"),
                ),
                Aggregation::Last => (
                    window("ts DESC, sid DESC, tags DESC"),
                    format!(")) WHERE rn = 1 ORDER BY {keys}"),
                ),
                other => {
                    let aggregate = match other {
                        Aggregation::Sum if scaled => "SUM(value / 4294967296 / 4294967296)",
                        Aggregation::Sum => "SUM(value)",
                        Aggregation::Min => "MIN(value)",
                        Aggregation::Max => "MAX(value)",
                        Aggregation::Count => "COUNT(*)",
                        _ if scaled => "AVG(value / 4294967296 / 4294967296)",
                        _ => "AVG(value)",
                    };
                    (
                        format!("SELECT grp, bucket, CAST({aggregate} AS REAL), COUNT(*) FROM ("),
                        format!(") GROUP BY {keys} ORDER BY {keys}"),
                    )
                }
            };
            let mut sql = Sql::default();
            sql.push(&head);
            sql.text.push_str(&inner.text);
            sql.args.extend(inner.args.iter().cloned());
            sql.push(&tail);
            sql
        };
        // SQLite's sum is ±Inf (or NULL, for inf - inf) where a running sum overflowed.
        let value_at = |row: &SqliteRow| -> Result<f64> {
            if row.try_get_raw(2).db()?.is_null() {
                Ok(f64::NAN)
            } else {
                sample_value(row, 2)
            }
        };

        let rows = statement(false).query().fetch_all(&self.pool).await.db()?;
        // Only where a sum overflowed, the query runs again over scaled values, and those
        // buckets take their value from it: a sum then is infinite only where the exact sum
        // is beyond f64::MAX, an average always finite (docs/semantics.md "History").
        let mut rescaled: HashMap<(Option<String>, i64), f64> = HashMap::new();
        if matches!(query.aggregation, Aggregation::Sum | Aggregation::Avg)
            && rows
                .iter()
                .any(|row| value_at(row).is_ok_and(|v| !v.is_finite()))
        {
            for row in statement(true).query().fetch_all(&self.pool).await.db()? {
                let group: Option<String> = row.try_get(0).db()?;
                let bucket: i64 = row.try_get(1).db()?;
                let value = value_at(&row)? * SUM_SCALE_UP;
                let value = if query.aggregation == Aggregation::Avg {
                    // The rounded quotient can pass f64::MAX by an ulp; the mean never does.
                    value.clamp(-f64::MAX, f64::MAX)
                } else {
                    value
                };
                rescaled.insert((group, bucket), value);
            }
        }
        let mut out: Vec<HistorySeries> = Vec::new();
        for row in &rows {
            let group: Option<String> = row.try_get(0).db()?;
            let bucket: i64 = row.try_get(1).db()?;
            let value = value_at(row)?;
            let count: i64 = row.try_get(3).db()?;
            let count = u64::try_from(count).unwrap_or(0);
            let value = if query.aggregation == Aggregation::Count {
                count as f64
            } else if !value.is_finite() {
                rescaled
                    .get(&(group.clone(), bucket))
                    .copied()
                    .unwrap_or(value)
            } else {
                value
            };
            let bucket = HistoryBucket {
                start: time::from_micros(bucket),
                value,
                count,
            };
            match out.last_mut() {
                Some(series) if series.group == group => series.buckets.push(bucket),
                _ => out.push(HistorySeries {
                    group,
                    buckets: vec![bucket],
                }),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_ts_bounds_are_upper_bounds_on_whole_hours() {
        for ts in [
            0,
            1,
            LAST_TS_STEP - 1,
            LAST_TS_STEP,
            1_704_067_200_123_456,
            -5,
        ] {
            let bound = last_ts_bound(ts);
            assert!(bound > ts, "{ts}");
            assert_eq!(bound.rem_euclid(LAST_TS_STEP), 0, "{ts}");
            assert!(bound - ts <= LAST_TS_STEP, "{ts}");
        }
        assert_eq!(last_ts_bound(i64::MAX), i64::MAX);
    }

    #[test]
    fn index_statements_have_three_placeholders_a_row() {
        assert_eq!(
            SERIES_TAGSETS_CHUNK_SQL.matches('?').count(),
            INDEX_CHUNK * 3
        );
        assert_eq!(TAGSET_PAIRS_CHUNK_SQL.matches('?').count(), INDEX_CHUNK * 3);
        assert!(
            insert_series_tagsets_sql(2)
                .contains("WHERE excluded.last_ts > series_tagsets.last_ts")
        );
    }

    #[test]
    fn chunk_statement_has_four_placeholders_a_row() {
        let sql = insert_samples_sql(3);
        assert_eq!(sql.matches('?').count(), 12);
        assert!(sql.contains("ON CONFLICT (series_id, ts, tags) DO UPDATE"));
        assert_eq!(INSERT_CHUNK_SQL.matches('?').count(), INSERT_CHUNK * 4);
    }
}
