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
use crate::sql::Sql;

mod history;
mod read;
mod write;

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
pub(crate) fn push_series_live(sql: &mut Sql, cutoff: Option<i64>) {
    if let Some(cutoff) = cutoff {
        let cutoff = time::from_micros(cutoff);
        sql.push(" AND (s.updated_at >= ")
            .bind(cutoff)
            .push(" OR EXISTS (SELECT 1 FROM samples x WHERE x.sid = s.sid AND x.time >= ")
            .bind(cutoff)
            .push("))");
    }
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
