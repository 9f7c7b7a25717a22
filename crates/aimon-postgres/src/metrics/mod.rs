//! Series and samples: bulk writes, reads, queries and the SQL `metric_history`.
//!
//! - [`write`]: `save_metrics`, the bulk upserts of series, samples and tag sets;
//! - [`read`]: `get_metric` and `query_metrics`;
//! - [`history`]: `metric_history` in SQL.
//!
//! Here: the series row as stored, and the transactions every part of the backend shares.

use aimon_core::{Error, Metric, MetricType, Result, time};
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{AssertSqlSafe, Row};

use crate::backend::{DbResult, PostgresBackend};
use crate::error::parse_json;
use crate::sql::{Run, Sql};

pub(crate) mod chunks;
mod history;
mod migrate;
mod read;
mod summed;
pub(crate) mod write;

pub(crate) use write::{INSERT_SAMPLES, UPSERT_TAGSETS, last_bound};

/// The columns of `series`, in the order [`metric_from_row`] reads them.
pub(crate) const SERIES_COLUMNS: &str = "s.sid, s.id, s.name, s.\"type\", s.description, s.unit, \
     s.metadata, s.created_at, s.updated_at";

fn metric_type(text: &str) -> Result<MetricType> {
    text.parse::<MetricType>()
        .map_err(|_| Error::malformed("metric type"))
}

/// A series row (without samples) and its `sid`.
pub(crate) fn metric_from_row(row: &PgRow) -> Result<(i64, Metric)> {
    let metadata: String = row.try_get(6).db()?;
    let kind: String = row.try_get(3).db()?;
    Ok((
        row.try_get(0).db()?,
        Metric {
            id: row.try_get(1).db()?,
            name: row.try_get(2).db()?,
            metric_type: metric_type(&kind)?,
            description: row.try_get(4).db()?,
            unit: row.try_get(5).db()?,
            values: Vec::new(),
            metadata: parse_json(&metadata, "series metadata")?,
            created_at: row.try_get(7).db()?,
            updated_at: row.try_get(8).db()?,
        },
    ))
}

/// The SQL condition "series `s` is live": it has a live sample or was updated within the TTL.
pub(crate) fn push_series_live(sql: &mut Sql, cutoff: Option<i64>, timescale: bool) {
    if let Some(cutoff) = cutoff {
        sql.push(" AND (s.updated_at >= ")
            .bind(time::from_micros(cutoff))
            .push(" OR ");
        push_sample_exists(sql, timescale, cutoff, time::MAX_TIMESTAMP_MICROS, None);
        sql.push(")");
    }
}

/// The SQL condition "series `s` has a sample in `[low, high)` (whose tags hold `tags`)".
/// Native mode: exact for the head's rows, a superset for chunks (a chunk whose first and last
/// samples enclose the range may have none inside it); callers that need exactness check the
/// samples they read.
pub(crate) fn push_sample_exists(
    sql: &mut Sql,
    timescale: bool,
    low: i64,
    high: i64,
    tags: Option<&aimon_core::Tags>,
) {
    let (low_time, high_time) = (time::from_micros(low), time::from_micros(high));
    if timescale {
        sql.push("EXISTS (SELECT 1 FROM samples x WHERE x.sid = s.sid AND x.time >= ")
            .bind(low_time)
            .push(" AND x.time < ")
            .bind(high_time);
        if let Some(tags) = tags.filter(|t| !t.is_empty()) {
            sql.push(" AND (x.sid, x.tags_key) IN (SELECT t.sid, t.tags_key FROM series_tagsets t WHERE t.tags_jsonb @> ")
                .bind(aimon_core::model::tags_json(tags))
                .push("::jsonb)");
        }
        sql.push(")");
        return;
    }
    sql.push("EXISTS (SELECT 1 FROM series_tagsets t WHERE t.sid = s.sid");
    if let Some(tags) = tags.filter(|t| !t.is_empty()) {
        sql.push(" AND t.tags_jsonb @> ")
            .bind(aimon_core::model::tags_json(tags))
            .push("::jsonb");
    }
    sql.push(" AND (EXISTS (SELECT 1 FROM samples x WHERE x.tsid = t.tsid AND x.time >= ")
        .bind(low_time)
        .push(" AND x.time < ")
        .bind(high_time)
        .push(") OR EXISTS (SELECT 1 FROM chunks c WHERE c.tsid = t.tsid AND c.window_start > ")
        .bind(time::from_micros(low.saturating_sub(chunks::WINDOW)))
        .push(" AND c.window_start < ")
        .bind(high_time)
        .push(" AND c.last_time >= ")
        .bind(low_time)
        .push(" AND c.first_time < ")
        .bind(high_time)
        .push(")))");
}

/// The tag sets of series `sids` (whose tags hold `tags`), with their series ids, for reads of
/// the native mode.
pub(crate) async fn native_tagsets(
    conn: &mut PgConnection,
    sids: &[i64],
    tags: &aimon_core::Tags,
) -> Result<Vec<(i64, chunks::Tagset)>> {
    let mut sql = Sql::new(
        "SELECT t.sid, t.tsid, s.id, t.tags FROM series_tagsets t JOIN series s ON s.sid = t.sid \
         WHERE t.sid = ANY(",
    );
    sql.bind(crate::sql::Arg::Ints(sids.to_vec())).push(")");
    if !tags.is_empty() {
        sql.push(" AND t.tags_jsonb @> ")
            .bind(aimon_core::model::tags_json(tags))
            .push("::jsonb");
    }
    let rows = sql.query().fetch_all(&mut *conn).await.db()?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get(0).db()?,
                chunks::Tagset {
                    tsid: row.try_get(1).db()?,
                    series_id: row.try_get(2).db()?,
                    tags: row.try_get(3).db()?,
                    group: None,
                },
            ))
        })
        .collect()
}

/// The windows of chunks (with their samples from `$1` on) grouped: tag set, window, samples
/// counted by the summaries, earliest sample, rows, and whether head rows share the window.
const CHUNK_WINDOWS: &str = "SELECT c.tsid, c.window_start, sum(c.count)::bigint AS n, \
     min(c.first_time) AS ft, count(*) AS pieces, \
     EXISTS (SELECT 1 FROM samples x WHERE x.tsid = c.tsid AND x.time >= c.window_start \
             AND x.time < c.window_start + $2::interval) AS headed \
     FROM chunks c JOIN series_tagsets t ON t.tsid = c.tsid JOIN series s ON s.sid = t.sid \
     WHERE c.window_start > $1 - $2::interval AND c.last_time >= $1 GROUP BY 1, 2";

/// Native mode: the samples at or after `low` of every series, exactly: the summaries' counts
/// of windows stored whole in one chunk row, the head rows of windows without chunks, and the
/// merged samples of the other windows (fragments, a head not sealed yet, the window holding
/// `low`).
pub(crate) async fn native_sample_count(conn: &mut PgConnection, low: i64) -> Result<u64> {
    let window = chrono::TimeDelta::microseconds(chunks::WINDOW);
    let low_time = time::from_micros(low);
    let whole: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT sum(n)::bigint FROM ({CHUNK_WINDOWS}) w WHERE pieces = 1 AND ft >= $1 AND NOT headed"
    )))
    .bind(low_time)
    .bind(window)
    .fetch_one(&mut *conn)
    .await
    .db()?;
    let head: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM samples x JOIN series_tagsets t ON t.tsid = x.tsid \
         JOIN series s ON s.sid = t.sid WHERE x.time >= $1 AND NOT EXISTS (SELECT 1 FROM chunks c \
         WHERE c.tsid = x.tsid AND c.last_time >= $1 \
         AND c.window_start = date_bin($2::interval, x.time, TIMESTAMPTZ 'epoch'))",
    )
    .bind(low_time)
    .bind(window)
    .fetch_one(&mut *conn)
    .await
    .db()?;
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT w.tsid, w.window_start, s.id, t.tags FROM ({CHUNK_WINDOWS}) w \
         JOIN series_tagsets t ON t.tsid = w.tsid JOIN series s ON s.sid = t.sid \
         WHERE NOT (pieces = 1 AND ft >= $1 AND NOT headed)"
    )))
    .bind(low_time)
    .bind(window)
    .fetch_all(&mut *conn)
    .await
    .db()?;
    let mut total =
        u64::try_from(whole.unwrap_or(0)).unwrap_or(0) + u64::try_from(head).unwrap_or(0);
    if rows.is_empty() {
        return Ok(total);
    }
    let mut tagsets = std::collections::HashMap::new();
    let mut windows = std::collections::HashSet::new();
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for row in &rows {
        let tsid: i64 = row.try_get(0).db()?;
        let w = time::to_micros(row.try_get(1).db()?);
        windows.insert((tsid, w));
        first = first.min(w);
        last = last.max(w);
        tagsets.entry(tsid).or_insert(chunks::Tagset {
            tsid,
            series_id: row.try_get(2).db()?,
            tags: row.try_get(3).db()?,
            group: None,
        });
    }
    let tagsets: Vec<chunks::Tagset> = tagsets.into_values().collect();
    let found = chunks::read(conn, &tagsets, first.max(low), last + chunks::WINDOW).await?;
    for (tsid, samples) in found {
        total += samples
            .timestamps
            .iter()
            .filter(|&&t| {
                windows.contains(&(tsid, aimon_core::chunk::window_start(t, chunks::WINDOW)))
            })
            .count() as u64;
    }
    Ok(total)
}

impl PostgresBackend {
    /// A read-only, repeatable-read transaction: the statements of one read see one snapshot.
    pub(crate) async fn read_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .db()
    }

    /// Publishes `events` (JSON payloads) on the store's channel inside `conn`'s transaction:
    /// `NOTIFY` delivers them when, and only if, it commits.
    pub(crate) async fn notify(&self, conn: &mut PgConnection, events: Vec<String>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        sqlx::query(AssertSqlSafe(
            "SELECT pg_notify($1, p) FROM unnest($2::text[]) WITH ORDINALITY AS e(p, n) ORDER BY n",
        ))
        .bind(&self.channel)
        .bind(events)
        .execute(conn)
        .await
        .db()?;
        Ok(())
    }
}

/// The metric calls, each in the file of its job: writes in `write.rs`, reads in `read.rs`,
/// history in `history.rs`.
#[async_trait::async_trait]
impl aimon_core::MetricDriver for PostgresBackend {
    async fn save_metrics(
        &self,
        batch: aimon_core::driver::MetricBatch<'_>,
    ) -> aimon_core::Result<aimon_core::WriteReport> {
        self.write_metrics(&batch).await
    }

    async fn get_metric(
        &self,
        id: aimon_core::driver::ValidId<'_>,
    ) -> aimon_core::Result<Option<aimon_core::Metric>> {
        self.read_metric(&id).await
    }

    async fn query_metrics(
        &self,
        query: aimon_core::driver::Selection<'_, aimon_core::MetricQuery>,
    ) -> aimon_core::Result<Vec<aimon_core::Metric>> {
        self.select_metrics(query).await
    }

    async fn metric_history(
        &self,
        query: aimon_core::driver::Valid<'_, aimon_core::HistoryQuery>,
    ) -> aimon_core::Result<Vec<aimon_core::HistorySeries>> {
        self.history(&query).await
    }
}
