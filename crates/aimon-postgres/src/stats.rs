//! `get_database_stats`: the server's version and uptime, live counts, relation sizes and
//! partitions.

use std::collections::BTreeMap;

use aimon_core::{DatabaseStats, Result, time};
use sqlx::Row;

use crate::backend::{DbResult, PostgresBackend};
use crate::error::count;
use crate::metrics::{native_sample_count, push_series_live};
use crate::sql::{Run, Sql};
use sqlx::AssertSqlSafe;

impl PostgresBackend {
    pub(crate) async fn database_stats(&self) -> Result<DatabaseStats> {
        let now = time::now();
        let retention = self.config.retention;
        let at = |c: Option<i64>| c.map(time::from_micros);
        let mut tx = self.read_tx().await?;
        // The native mode counts its series and samples below (chunks need decoding).
        let series_and_samples = if self.timescale {
            "(SELECT count(*) FROM series s WHERE $1::timestamptz IS NULL OR s.updated_at >= $1 \
              OR EXISTS (SELECT 1 FROM samples x WHERE x.sid = s.sid AND x.time >= $1)), \
             (SELECT count(*) FROM samples x JOIN series s ON s.sid = x.sid \
              WHERE $1::timestamptz IS NULL OR x.time >= $1)"
        } else {
            "(SELECT 0::bigint WHERE $1::timestamptz IS NULL OR TRUE), 0::bigint"
        };
        // Audited: fixed SQL text.
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT current_setting('server_version'), \
             extract(epoch FROM now() - pg_postmaster_start_time())::bigint, \
             {series_and_samples}, \
             (SELECT count(*) FROM alerts WHERE $2::timestamptz IS NULL OR updated_at >= $2), \
             (SELECT count(*) FROM agent_states \
              WHERE $3::timestamptz IS NULL OR last_heartbeat >= $3)"
        )))
        .bind(at(retention.metric_cutoff(now)))
        .bind(at(retention.alert_cutoff(now)))
        .bind(at(retention.agent_state_cutoff(now)))
        .fetch_one(&mut *tx)
        .await
        .db()?;
        let version: String = row.try_get(0).db()?;
        let uptime: i64 = row.try_get(1).db()?;
        let (mut series, mut samples, alerts, agent_states): (i64, i64, i64, i64) = (
            row.try_get(2).db()?,
            row.try_get(3).db()?,
            row.try_get(4).db()?,
            row.try_get(5).db()?,
        );
        let mut chunk_rows = 0;
        if !self.timescale {
            let cutoff = retention.metric_cutoff(now);
            let mut sql = Sql::new("SELECT count(*) FROM series s WHERE TRUE");
            push_series_live(&mut sql, cutoff, false);
            series = sql
                .query()
                .fetch_one(&mut *tx)
                .await
                .db()?
                .try_get(0)
                .db()?;
            let low = cutoff.unwrap_or(time::MIN_TIMESTAMP_MICROS);
            samples = i64::try_from(native_sample_count(&mut tx, low).await?).unwrap_or(i64::MAX);
            chunk_rows = sqlx::query_scalar("SELECT count(*) FROM chunks")
                .fetch_one(&mut *tx)
                .await
                .db()?;
        }
        // Sizes of the schema's tables with their indexes and TOAST (a partitioned table's size
        // is its partitions', which live in the same schema) and of its sequences (the series
        // ids'): every relation of the schema that has storage of its own, each counted once.
        let sizes = sqlx::query(
            "SELECT coalesce(p.relname, c.relname) AS t, sum(pg_total_relation_size(c.oid))::bigint \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_inherits i ON i.inhrelid = c.oid \
             LEFT JOIN pg_class p ON p.oid = i.inhparent \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'm', 'S') GROUP BY 1 ORDER BY 1",
        )
        .bind(&self.config.schema)
        .fetch_all(&mut *tx)
        .await
        .db()?;
        let partitions: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent \
             JOIN pg_namespace n ON n.oid = p.relnamespace \
             WHERE n.nspname = $1 AND p.relname = 'samples'",
        )
        .bind(&self.config.schema)
        .fetch_one(&mut *tx)
        .await
        .db()?;
        let stored_samples: i64 = sqlx::query_scalar("SELECT count(*) FROM samples")
            .fetch_one(&mut *tx)
            .await
            .db()?;
        // TimescaleDB: the hypertable's rows are in chunks outside the schema (and compressed
        // ones in chunks of another hypertable), so the samples table's own size is its empty
        // root's. `hypertable_size` counts them all.
        let hypertable = if self.timescale {
            let row = sqlx::query(
                "SELECT hypertable_size($1::regclass), \
                 (SELECT count(*) FROM timescaledb_information.chunks \
                  WHERE hypertable_schema = $2 AND hypertable_name = 'samples' AND is_compressed), \
                 (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb')",
            )
            .bind(format!("{}.samples", self.config.quoted_schema()))
            .bind(&self.config.schema)
            .fetch_one(&mut *tx)
            .await
            .db()?;
            let size: Option<i64> = row.try_get(0).db()?;
            let compressed: i64 = row.try_get(1).db()?;
            let version: Option<String> = row.try_get(2).db()?;
            Some((size.unwrap_or(0), compressed, version.unwrap_or_default()))
        } else {
            None
        };
        tx.commit().await.db()?;

        let mut extra = BTreeMap::new();
        let mut relation_sizes = serde_json::Map::new();
        let mut total = 0i64;
        for row in &sizes {
            let name: String = row.try_get(0).db()?;
            let mut bytes: i64 = row.try_get(1).db()?;
            if let Some((hypertable_bytes, _, _)) = &hypertable
                && name == "samples"
            {
                bytes = *hypertable_bytes;
            }
            total += bytes;
            relation_sizes.insert(name, serde_json::json!(bytes));
        }
        if let Some((_, compressed, version)) = hypertable {
            extra.insert(
                "compressed_chunks".to_owned(),
                serde_json::json!(count(compressed)),
            );
            extra.insert("timescaledb_version".to_owned(), serde_json::json!(version));
        }
        extra.insert("schema".to_owned(), serde_json::json!(self.config.schema));
        extra.insert(
            "relation_sizes_bytes".to_owned(),
            serde_json::Value::Object(relation_sizes),
        );
        extra.insert("total_size_bytes".to_owned(), serde_json::json!(total));
        extra.insert("partitions".to_owned(), serde_json::json!(partitions));
        extra.insert(
            "partition_interval_seconds".to_owned(),
            serde_json::json!(self.config.partition_interval.as_secs()),
        );
        extra.insert(
            "stored_sample_rows".to_owned(),
            serde_json::json!(count(stored_samples)),
        );
        if !self.timescale {
            extra.insert(
                "chunk_rows".to_owned(),
                serde_json::json!(count(chunk_rows)),
            );
        }
        extra.insert(
            "mode".to_owned(),
            serde_json::json!(if self.timescale {
                "timescaledb"
            } else {
                "native_partitions"
            }),
        );
        extra.insert(
            "max_connections".to_owned(),
            serde_json::json!(self.config.max_connections),
        );
        Ok(DatabaseStats {
            backend: self.config.name.clone(),
            backend_type: self.config.backend_type,
            version,
            uptime_seconds: count(uptime),
            series: count(series),
            samples: count(samples),
            alerts: count(alerts),
            agent_states: count(agent_states),
            size_bytes: Some(count(total)),
            extra,
        })
    }
}
