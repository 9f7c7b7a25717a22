//! Alerts: upserts by id, reads and queries.

use aimon_core::driver::AlertDriver;
use aimon_core::driver::Check;
use aimon_core::driver::Selection;
use aimon_core::driver::Valid;
use aimon_core::driver::ValidId;
use aimon_core::query::{AlertQuery, ResolvedOptions, tie_breaker};
use aimon_core::similarity::{self, Ranker, Scored, SimilarAlertsQuery, SimilarityTarget};
use aimon_core::{
    Alert, AlertSeverity, AlertStatus, DataKind, Error, Result, RetentionPolicy, WriteReport,
    model::tags_json, time,
};
use futures::TryStreamExt;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::backend::{DbResult, SqliteBackend};
use crate::error::{embedding_column, encode_embedding, json_column};
use crate::sql::{Run, Sql, push_filters, push_order_and_page, push_tag_match};

/// The columns of `alerts`, in the order [`alert_from_row`] reads them and
/// [`UPSERT_ALERT`] binds them.
pub(crate) const ALERT_COLUMNS: &str = "id, name, description, severity, source, status, \
    start_time, end_time, acknowledged_by, acknowledged_at, resolved_by, resolved_at, labels, \
    annotations, metadata, created_at, updated_at, embedding";

/// The update half of the alert upsert: every column but the key.
macro_rules! alert_update {
    () => {
        "name = excluded.name, description = excluded.description, \
         severity = excluded.severity, source = excluded.source, status = excluded.status, \
         start_time = excluded.start_time, end_time = excluded.end_time, \
         acknowledged_by = excluded.acknowledged_by, acknowledged_at = excluded.acknowledged_at, \
         resolved_by = excluded.resolved_by, resolved_at = excluded.resolved_at, \
         labels = excluded.labels, annotations = excluded.annotations, \
         metadata = excluded.metadata, created_at = excluded.created_at, \
         updated_at = excluded.updated_at, embedding = excluded.embedding"
    };
}
pub(crate) use alert_update;

const UPSERT_ALERT: &str = concat!(
    "INSERT INTO alerts (id, name, description, severity, source, status, start_time, \
     end_time, acknowledged_by, acknowledged_at, resolved_by, resolved_at, labels, annotations, \
     metadata, created_at, updated_at, embedding) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
     ON CONFLICT (id) DO UPDATE SET ",
    alert_update!()
);

fn micros(row: &SqliteRow, i: usize) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    Ok(row
        .try_get::<Option<i64>, _>(i)
        .db()?
        .map(time::from_micros))
}

pub(crate) fn alert_from_row(row: &SqliteRow) -> Result<Alert> {
    let severity: i64 = row.try_get(3).db()?;
    let status: String = row.try_get(5).db()?;
    let required =
        |i| -> Result<_> { micros(row, i)?.ok_or_else(|| Error::malformed("alert time")) };
    Ok(Alert {
        id: row.try_get(0).db()?,
        name: row.try_get(1).db()?,
        description: row.try_get(2).db()?,
        severity: AlertSeverity::from_rank(severity)
            .ok_or_else(|| Error::malformed("alert severity"))?,
        source: row.try_get(4).db()?,
        status: status
            .parse::<AlertStatus>()
            .map_err(|_| Error::malformed("alert status"))?,
        start_time: required(6)?,
        end_time: micros(row, 7)?,
        acknowledged_by: row.try_get(8).db()?,
        acknowledged_at: micros(row, 9)?,
        resolved_by: row.try_get(10).db()?,
        resolved_at: micros(row, 11)?,
        labels: json_column(row, 12, "alert labels")?,
        annotations: json_column(row, 13, "alert annotations")?,
        metadata: json_column(row, 14, "alert metadata")?,
        created_at: required(15)?,
        updated_at: required(16)?,
        embedding: embedding_column(row, 17)?,
    })
}

impl SqliteBackend {
    /// `SELECT` of the live alerts `query` selects (`options` is its resolved options), with
    /// no order or paging.
    fn alert_selection(&self, query: &AlertQuery, options: &ResolvedOptions) -> Sql {
        let range = query.range_micros();
        let cutoff = self.config.retention.alert_cutoff(time::now());
        let mut sql = Sql::new("SELECT ");
        sql.push(ALERT_COLUMNS)
            .push(" FROM alerts WHERE updated_at >= ")
            .bind(cutoff.unwrap_or(i64::MIN))
            .push(" AND start_time >= ")
            .bind(range.start)
            .push(" AND start_time < ")
            .bind(range.end);
        if let Some(status) = query.status {
            sql.push(" AND status = ").bind(status.as_str());
        }
        if let Some(severity) = query.severity {
            sql.push(" AND severity = ").bind(severity.rank());
        }
        if let Some(severity) = query.min_severity {
            sql.push(" AND severity >= ").bind(severity.rank());
        }
        if let Some(source) = &query.source {
            sql.push(" AND source = ").bind(source.as_str());
        }
        push_tag_match(&mut sql, "labels", &query.labels);
        push_filters(&mut sql, options, "labels");
        sql
    }
}

#[async_trait::async_trait]
impl AlertDriver for SqliteBackend {
    async fn save_alerts(&self, batch: Valid<'_, [Alert]>) -> Result<WriteReport> {
        let alerts = batch.get();
        let cutoff = self.config.retention.alert_cutoff(time::now());
        let mut report = WriteReport::default();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.db()?;
        for alert in alerts {
            if !RetentionPolicy::is_live(cutoff, alert.updated_at) {
                report.expired += 1;
                continue;
            }
            sqlx::query(UPSERT_ALERT)
                .bind(alert.id.as_str())
                .bind(alert.name.as_str())
                .bind(alert.description.as_deref())
                .bind(alert.severity.rank())
                .bind(alert.source.as_str())
                .bind(alert.status.as_str())
                .bind(time::to_micros(alert.start_time))
                .bind(alert.end_time.map(time::to_micros))
                .bind(alert.acknowledged_by.as_deref())
                .bind(alert.acknowledged_at.map(time::to_micros))
                .bind(alert.resolved_by.as_deref())
                .bind(alert.resolved_at.map(time::to_micros))
                .bind(tags_json(&alert.labels))
                .bind(tags_json(&alert.annotations))
                .bind(serde_json::to_string(&alert.metadata)?)
                .bind(time::to_micros(alert.created_at))
                .bind(time::to_micros(alert.updated_at))
                .bind(encode_embedding(alert.embedding.as_deref()))
                .execute(&mut *tx)
                .await
                .db()?;
            report.written += 1;
        }
        tx.commit().await.db()?;
        Ok(report)
    }

    async fn get_alert(&self, id: ValidId<'_>) -> Result<Option<Alert>> {
        let id = id.get();
        let cutoff = self.config.retention.alert_cutoff(time::now());
        let mut sql = Sql::new("SELECT ");
        sql.push(ALERT_COLUMNS)
            .push(" FROM alerts WHERE id = ")
            .bind(id)
            .push(" AND updated_at >= ")
            .bind(cutoff.unwrap_or(i64::MIN));
        sql.query()
            .fetch_optional(&self.pool)
            .await
            .db()?
            .as_ref()
            .map(alert_from_row)
            .transpose()
    }

    async fn query_alerts(&self, query: Selection<'_, AlertQuery>) -> Result<Vec<Alert>> {
        let (query, options) = (query.get(), query.options());
        let mut sql = self.alert_selection(query, options);
        push_order_and_page(&mut sql, options, tie_breaker(DataKind::Alerts));
        sql.query()
            .fetch_all(&self.pool)
            .await
            .db()?
            .iter()
            .map(alert_from_row)
            .collect()
    }

    /// Similarity by brute force: the filters run in SQL, rows stream through the core
    /// [`Ranker`] (which keeps only the best few), scoring runs in Rust.
    async fn find_similar_alerts(&self, query: &SimilarAlertsQuery) -> Result<Vec<Scored<Alert>>> {
        let embedder = &*self.embedder;
        let options = query.resolve(embedder.dimension())?;
        let target = match &query.target {
            SimilarityTarget::Item(id) => self.get_alert(Check::check(id.as_str())?).await?,
            _ => None,
        };
        let (vector, exclude) =
            similarity::alert_query_vector(&query.target, target.as_ref(), embedder)?;
        let mut ranker = Ranker::new(vector, exclude, query.limit);
        let sql = self.alert_selection(&query.filter, &options);
        let mut rows = sql.query().fetch(&self.pool);
        while let Some(row) = rows.try_next().await.db()? {
            let alert = alert_from_row(&row)?;
            let v = similarity::alert_vector(&alert, embedder);
            let key = alert.id.clone();
            ranker.push(&key, alert, &v)?;
        }
        Ok(ranker.finish())
    }
}
