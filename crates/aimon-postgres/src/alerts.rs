//! Alerts: upserts by id, reads and queries.

use aimon_core::driver::AlertDriver;
use aimon_core::driver::Selection;
use aimon_core::driver::Valid;
use aimon_core::driver::ValidId;
use aimon_core::query::{AlertQuery, tie_breaker};
use aimon_core::{
    Alert, AlertSeverity, AlertStatus, DataKind, Error, Result, RetentionPolicy, StorageEvent,
    WriteReport, model::tags_json, time,
};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::backend::{DbResult, PostgresBackend};
use crate::error::parse_json;
use crate::sql::{Run, Sql, push_filters, push_order_and_page};

/// The columns of `alerts`, in the order [`alert_from_row`] reads them.
pub(crate) const ALERT_COLUMNS: &str = "id, name, description, severity, source, status, \
    start_time, end_time, acknowledged_by, acknowledged_at, resolved_by, resolved_at, \
    labels::text, annotations, metadata, created_at, updated_at, embedding";

const UPSERT_ALERT: &str = "INSERT INTO alerts (id, name, description, severity, source, \
    status, start_time, end_time, acknowledged_by, acknowledged_at, resolved_by, resolved_at, \
    labels, annotations, metadata, created_at, updated_at, embedding) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb, $14, $15, $16, $17, \
    $18) \
    ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, description = EXCLUDED.description, \
    severity = EXCLUDED.severity, source = EXCLUDED.source, status = EXCLUDED.status, \
    start_time = EXCLUDED.start_time, end_time = EXCLUDED.end_time, \
    acknowledged_by = EXCLUDED.acknowledged_by, acknowledged_at = EXCLUDED.acknowledged_at, \
    resolved_by = EXCLUDED.resolved_by, resolved_at = EXCLUDED.resolved_at, \
    labels = EXCLUDED.labels, annotations = EXCLUDED.annotations, \
    metadata = EXCLUDED.metadata, created_at = EXCLUDED.created_at, \
    updated_at = EXCLUDED.updated_at, embedding = EXCLUDED.embedding";

pub(crate) fn alert_from_row(row: &PgRow) -> Result<Alert> {
    let severity: i32 = row.try_get(3).db()?;
    let status: String = row.try_get(5).db()?;
    let labels: String = row.try_get(12).db()?;
    let annotations: String = row.try_get(13).db()?;
    let metadata: String = row.try_get(14).db()?;
    Ok(Alert {
        id: row.try_get(0).db()?,
        name: row.try_get(1).db()?,
        description: row.try_get(2).db()?,
        severity: AlertSeverity::from_rank(i64::from(severity))
            .ok_or_else(|| Error::malformed("alert severity"))?,
        source: row.try_get(4).db()?,
        status: status
            .parse::<AlertStatus>()
            .map_err(|_| Error::malformed("alert status"))?,
        start_time: row.try_get(6).db()?,
        end_time: row.try_get(7).db()?,
        acknowledged_by: row.try_get(8).db()?,
        acknowledged_at: row.try_get(9).db()?,
        resolved_by: row.try_get(10).db()?,
        resolved_at: row.try_get(11).db()?,
        labels: parse_json(&labels, "alert labels")?,
        annotations: parse_json(&annotations, "alert annotations")?,
        metadata: parse_json(&metadata, "alert metadata")?,
        created_at: row.try_get(15).db()?,
        updated_at: row.try_get(16).db()?,
        embedding: row.try_get(17).db()?,
    })
}

#[async_trait::async_trait]
impl AlertDriver for PostgresBackend {
    async fn save_alerts(&self, batch: Valid<'_, [Alert]>) -> Result<WriteReport> {
        let alerts = batch.get();
        let cutoff = self.config.retention.alert_cutoff(time::now());
        let mut report = WriteReport::default();
        let mut events = Vec::new();
        let mut tx = self.pool.begin().await.db()?;
        for alert in alerts {
            if !RetentionPolicy::is_live(cutoff, alert.updated_at) {
                report.expired += 1;
                continue;
            }
            sqlx::query(UPSERT_ALERT)
                .bind(alert.id.as_str())
                .bind(alert.name.as_str())
                .bind(alert.description.as_deref())
                .bind(alert.severity.rank() as i32)
                .bind(alert.source.as_str())
                .bind(alert.status.as_str())
                .bind(alert.start_time)
                .bind(alert.end_time)
                .bind(alert.acknowledged_by.as_deref())
                .bind(alert.acknowledged_at)
                .bind(alert.resolved_by.as_deref())
                .bind(alert.resolved_at)
                .bind(tags_json(&alert.labels))
                .bind(tags_json(&alert.annotations))
                .bind(serde_json::to_string(&alert.metadata)?)
                .bind(alert.created_at)
                .bind(alert.updated_at)
                .bind(alert.embedding.as_deref())
                .execute(&mut *tx)
                .await
                .db()?;
            report.written += 1;
            events.push(serde_json::to_string(&StorageEvent::AlertWritten {
                backend: self.config.name.clone(),
                alert_id: alert.id.clone(),
                status: alert.status.as_str().to_owned(),
            })?);
        }
        self.notify(&mut tx, events).await?;
        tx.commit().await.db()?;
        Ok(report)
    }

    async fn get_alert(&self, id: ValidId<'_>) -> Result<Option<Alert>> {
        let id = id.get();
        let cutoff = self.config.retention.alert_cutoff(time::now());
        let mut sql = Sql::new("SELECT ");
        sql.push(ALERT_COLUMNS)
            .push(" FROM alerts WHERE id = ")
            .bind(id);
        if let Some(cutoff) = cutoff {
            sql.push(" AND updated_at >= ")
                .bind(time::from_micros(cutoff));
        }
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
        let range = query.range_micros();
        let cutoff = self.config.retention.alert_cutoff(time::now());
        let mut sql = Sql::new("SELECT ");
        sql.push(ALERT_COLUMNS).push(" FROM alerts WHERE TRUE");
        if let Some(cutoff) = cutoff {
            sql.push(" AND updated_at >= ")
                .bind(time::from_micros(cutoff));
        }
        if query.start.is_some() {
            sql.push(" AND start_time >= ")
                .bind(time::from_micros(range.start));
        }
        if query.end.is_some() {
            sql.push(" AND start_time < ")
                .bind(time::from_micros(range.end));
        }
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
        if !query.labels.is_empty() {
            sql.push(" AND labels @> ")
                .bind(tags_json(&query.labels))
                .push("::jsonb");
        }
        push_filters(&mut sql, options, "labels");
        push_order_and_page(&mut sql, options, tie_breaker(DataKind::Alerts));
        sql.query()
            .fetch_all(&self.pool)
            .await
            .db()?
            .iter()
            .map(alert_from_row)
            .collect()
    }
}
