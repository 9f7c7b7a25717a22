//! `metric_history` in SQL: buckets by `date_bin` (or TimescaleDB's `time_bucket`), with an
//! exact decimal sum where the float sum could be off.

use aimon_core::downsample::{Downsampler, SUM_SCALE_UP};
use aimon_core::query::{Aggregation, HistoryBucket, HistoryQuery, HistorySeries};
use aimon_core::{Error, Result, model::tags_json, time};
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::backend::{DbResult, PostgresBackend};
use crate::error::sqlstate;
use crate::sql::{Run, Sql};
use crate::timescale;

use super::chunks;

/// One aggregated bucket as the SQL returns it.
struct HistoryRow {
    group: Option<String>,
    bucket: DateTime<Utc>,
    value: f64,
    count: u64,
    /// `sum(abs(value))` for sums and averages: the error bound of the float sum.
    abs_sum: f64,
    /// The exact sum times 2⁻⁶⁴ (exact path): the average where the sum is beyond f64.
    scaled_sum: Option<f64>,
}

impl PostgresBackend {
    pub(crate) async fn history(&self, query: &HistoryQuery) -> Result<Vec<HistorySeries>> {
        let range = query.range_micros();
        let cutoff = self.config.retention.metric_cutoff(time::now());
        let low = time::from_micros(range.start.max(cutoff.unwrap_or(i64::MIN)));
        let high = time::from_micros(range.end);
        if !self.timescale {
            return self
                .native_history(
                    query,
                    range.start.max(cutoff.unwrap_or(i64::MIN)),
                    range.end,
                )
                .await;
        }

        let mut inner = Sql::new("SELECT ");
        let join_tagsets = query.group_by.is_some() || !query.tags.is_empty();
        match &query.group_by {
            Some(tag) => {
                inner
                    .push("(t.tags_jsonb ->> ")
                    .bind(tag.as_str())
                    .push(") COLLATE \"C\"");
            }
            None => {
                inner.push("NULL::text");
            }
        }
        inner.push(" AS grp, ");
        let mut step = Sql::default();
        step.bind(query.step_micros());
        if self.timescale {
            let placeholder = format!("${}", inner.args.len() + 1);
            inner.args.extend(step.args);
            inner.push(&timescale::bucket_expression(&placeholder));
        } else {
            inner.push("date_bin(");
            inner.append(step);
            inner.push(
                "::bigint * INTERVAL '1 microsecond', x.time, TIMESTAMPTZ '1970-01-01 00:00:00+00')",
            );
        }
        inner.push(
            " AS bucket, x.time AS time, s.id AS sid, x.tags AS tags, x.value AS value \
             FROM samples x JOIN series s ON s.sid = x.sid",
        );
        if join_tagsets {
            // The sample's decoded tags, from its (series, tag set) row.
            inner.push(" JOIN series_tagsets t ON t.sid = x.sid AND t.tags_key = x.tags_key");
        }
        inner
            .push(" WHERE s.name = ")
            .bind(query.name.as_str())
            .push(" AND x.time >= ")
            .bind(low)
            .push(" AND x.time < ")
            .bind(high);
        if !query.tags.is_empty() {
            inner
                .push(" AND t.tags_jsonb @> ")
                .bind(tags_json(&query.tags))
                .push("::jsonb");
        }

        // Without `group_by`, the inner `grp` is NULL throughout: grouping by the bucket alone
        // gives the same groups with a cheaper plan.
        let keys = if query.group_by.is_some() {
            "grp, bucket"
        } else {
            "bucket"
        };
        let order = if query.group_by.is_some() {
            "grp NULLS FIRST, bucket"
        } else {
            "bucket"
        };
        let exact = inner.clone();
        let rows = self
            .history_rows(query.aggregation, keys, order, inner, false)
            .await?;
        // Sum and average: PostgreSQL adds float8 naively. Where the sum's error bound,
        // (n - 1) · 2⁻⁵³ · Σ|v|, could reach 1e-10 of it (cancelling values), the whole query
        // runs again with an exact decimal sum, so small terms between cancelling values
        // survive as the shared semantics want. So it does where a float8 sum overflowed
        // (`None`): the decimal sum cannot, and is read back as ±Inf only where it is beyond
        // f64 itself.
        let rows = match rows {
            Some(rows)
                if !matches!(query.aggregation, Aggregation::Sum | Aggregation::Avg)
                    || rows.iter().all(|r| {
                        let bound =
                            (r.count.saturating_sub(1)) as f64 * f64::EPSILON / 2.0 * r.abs_sum;
                        bound <= 1e-10 * r.value.abs()
                    }) =>
            {
                rows
            }
            _ => self
                .history_rows(query.aggregation, keys, order, exact, true)
                .await?
                .unwrap_or_default(),
        };
        let mut out: Vec<HistorySeries> = Vec::new();
        for row in rows {
            let value = match query.aggregation {
                Aggregation::Count => row.count as f64,
                Aggregation::Avg => match row.scaled_sum {
                    // The rounded quotient can pass f64::MAX by an ulp; the mean never does.
                    Some(scaled) if !row.value.is_finite() => {
                        (scaled / row.count as f64 * SUM_SCALE_UP).clamp(-f64::MAX, f64::MAX)
                    }
                    _ => row.value / row.count as f64,
                },
                _ => row.value,
            };
            let bucket = HistoryBucket {
                start: row.bucket,
                value,
                count: row.count,
            };
            match out.last_mut() {
                Some(series) if series.group == row.group => series.buckets.push(bucket),
                _ => out.push(HistorySeries {
                    group: row.group,
                    buckets: vec![bucket],
                }),
            }
        }
        Ok(out)
    }

    /// Native mode: the matching tag sets, then their chunks' summaries where a bucket covers
    /// a whole chunk, and the decoded samples of the others and the head's rows, all folded by
    /// core's [`Downsampler`] (so the answer is the reference backend's).
    async fn native_history(
        &self,
        query: &HistoryQuery,
        low: i64,
        high: i64,
    ) -> Result<Vec<HistorySeries>> {
        if low < high
            && super::summed::applies(query)
            && let Some(out) = self.summed_history(query, low, high).await?
        {
            self.one_statement_histories
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(out);
        }
        let sql = tagsets_sql(query);
        let mut tx = self.read_tx().await?;
        let rows = sql.query().fetch_all(&mut *tx).await.db()?;
        let tagsets = rows
            .iter()
            .map(|row| {
                Ok(chunks::Tagset {
                    tsid: row.try_get(0).db()?,
                    series_id: row.try_get(1).db()?,
                    tags: row.try_get(2).db()?,
                    group: row.try_get(3).db()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Head rows aggregated by the server first; read instead where a float sum turns out
        // not exact enough against its bucket's total.
        let (out, exact) = native_pass(&mut tx, &tagsets, query, low, high, true).await?;
        let out = if exact {
            out
        } else {
            native_pass(&mut tx, &tagsets, query, low, high, false)
                .await?
                .0
        };
        tx.commit().await.db()?;
        Ok(out)
    }

    /// Runs the aggregate of `inner` (the matching samples with their group and bucket);
    /// `None` where a float8 sum overflowed (only without `exact_sum`).
    async fn history_rows(
        &self,
        aggregation: Aggregation,
        keys: &str,
        order: &str,
        inner: Sql,
        exact_sum: bool,
    ) -> Result<Option<Vec<HistoryRow>>> {
        let window = |order_by: &str| {
            format!(
                "SELECT grp, bucket, value, cnt, NULL::float8 FROM (SELECT grp, bucket, value, \
                 row_number() OVER (PARTITION BY {keys} ORDER BY {order_by}) AS rn, \
                 count(*) OVER (PARTITION BY {keys}) AS cnt FROM ("
            )
        };
        let (head, tail) = match aggregation {
            Aggregation::First => (
                window("time ASC, sid ASC, tags ASC"),
                format!(") q) w WHERE rn = 1 ORDER BY {order}"),
            ),
            Aggregation::Last => (
                window("time DESC, sid DESC, tags DESC"),
                format!(") q) w WHERE rn = 1 ORDER BY {order}"),
            ),
            other => {
                let aggregate = match other {
                    Aggregation::Min => "min(value), count(*), NULL::float8",
                    Aggregation::Max => "max(value), count(*), NULL::float8",
                    Aggregation::Count => "count(*)::float8, count(*), NULL::float8",
                    // An exact decimal sum of the values (each float8 read through its
                    // shortest exact text form), rounded once by aimon's parser, which reads
                    // a sum beyond f64 as ±Inf (PostgreSQL's cast would fail). The sum times
                    // 2⁻⁶⁴ (exact) gives the average of such a bucket.
                    _ if exact_sum => {
                        "sum(value::text::numeric)::text, count(*), \
                         (sum(value::text::numeric) \
                         * 5.42101086242752217003726400434970855712890625e-20)::text"
                    }
                    _ => "sum(value), count(*), sum(abs(value))",
                };
                (
                    format!(
                        "SELECT {}, bucket, {aggregate} FROM (",
                        if keys == "bucket" {
                            "NULL::text"
                        } else {
                            "grp"
                        }
                    ),
                    format!(") q GROUP BY {keys} ORDER BY {order}"),
                )
            }
        };
        let mut sql = Sql::new(&head);
        sql.append(inner);
        sql.push(&tail);

        let rows = match sql.query().fetch_all(&self.pool).await {
            // 22003 numeric_value_out_of_range: float8 `sum` overflowed (only sums and
            // averages add up values here).
            Err(e) if !exact_sum && sqlstate(&e).as_deref() == Some("22003") => return Ok(None),
            rows => rows.db()?,
        };
        let decimal = |row: &PgRow, i: usize| -> Result<Option<f64>> {
            row.try_get::<Option<String>, _>(i)
                .db()?
                .map(|text| {
                    text.parse::<f64>()
                        .map_err(|_| Error::malformed(format_args!("numeric sum {text:?}")))
                })
                .transpose()
        };
        rows.iter()
            .map(|row| {
                let count: i64 = row.try_get(3).db()?;
                let (value, abs_sum, scaled_sum) = if exact_sum {
                    (decimal(row, 2)?.unwrap_or(f64::NAN), 0.0, decimal(row, 4)?)
                } else {
                    let abs_sum = row.try_get::<Option<f64>, _>(4).db()?.unwrap_or(0.0);
                    (row.try_get(2).db()?, abs_sum, None)
                };
                Ok(HistoryRow {
                    group: row.try_get(0).db()?,
                    bucket: row.try_get(1).db()?,
                    value,
                    count: u64::try_from(count).unwrap_or(0),
                    abs_sum,
                    scaled_sum,
                })
            })
            .collect::<Result<_>>()
            .map(Some)
    }
}

/// One pass of the native history (see [`chunks::history`]): the answer, and whether the float
/// sums of head rows the server aggregated are within 1e-10 of their buckets' sums (always,
/// without `head_by_server` or for aggregations other than sums and averages).
async fn native_pass(
    conn: &mut sqlx::PgConnection,
    tagsets: &[chunks::Tagset],
    query: &HistoryQuery,
    low: i64,
    high: i64,
    head_by_server: bool,
) -> Result<(Vec<HistorySeries>, bool)> {
    let mut downsampler = Downsampler::new(query);
    let mut bounds = chunks::ErrorBounds::default();
    chunks::history(
        conn,
        tagsets,
        low,
        high,
        query.step_micros(),
        query.aggregation,
        head_by_server,
        &mut bounds,
        &mut downsampler,
    )
    .await?;
    let out = downsampler.finish();
    let exact = bounds.hold(&out, query.aggregation);
    Ok((out, exact))
}

/// The tag sets `query` reads: `tsid`, `id` (the series'), `tags` (canonical JSON), `grp` (the
/// `group_by` tag's value, else `NULL`) and `head_window`, for the native history's two paths.
pub(crate) fn tagsets_sql(query: &HistoryQuery) -> Sql {
    let mut sql = Sql::new("SELECT t.tsid, s.id, t.tags, ");
    match &query.group_by {
        Some(tag) => {
            sql.push("t.tags_jsonb ->> ").bind(tag.as_str());
        }
        None => {
            sql.push("NULL::text");
        }
    }
    sql.push(
        " AS grp, t.head_window FROM series_tagsets t JOIN series s ON s.sid = t.sid \
         WHERE s.name = ",
    )
    .bind(query.name.as_str());
    if !query.tags.is_empty() {
        sql.push(" AND t.tags_jsonb @> ")
            .bind(tags_json(&query.tags))
            .push("::jsonb");
    }
    sql
}
