//! The `--compare-sql` baseline of `metric_history`: the same samples as plain rows
//! `(series_id, ts, value)` in a scratch table of the store's own SQLite file, aggregated by a
//! hand-written `GROUP BY`, timed in the same run as aimon's history query.

use std::time::{Duration, Instant};

use aimon::sqlite::{SqliteConfig, SqliteLocation};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use super::Workload;
use crate::error::{CliError, Result};

/// Rows per `INSERT` while loading the scratch table (3 parameters a row).
const ROWS_PER_INSERT: usize = 300;

/// The scratch table and a connection to the store's file.
pub(super) struct PlainSql {
    pool: SqlitePool,
    table: String,
}

impl PlainSql {
    /// Creates `bench_plain_<run>` in the store's file and loads the workload's samples into
    /// it (not timed).
    pub(super) async fn prepare(
        config: &aimon::StorageConfig,
        run: &str,
        workload: &Workload,
    ) -> Result<PlainSql> {
        let parsed = SqliteConfig::from_storage_config(config)?;
        let SqliteLocation::File(path) = &parsed.location else {
            return Err(CliError::new(
                "--compare-sql needs a SQLite file (an in-memory database is private to aimon)",
            ));
        };
        let fail = |e: sqlx::Error| CliError::new(format!("--compare-sql: {e}"));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(path)
                    .busy_timeout(Duration::from_secs(30)),
            )
            .await
            .map_err(fail)?;
        // `run` is digits (a timestamp in milliseconds): the name needs no quoting.
        let table = format!("bench_plain_{run}");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {table} (series_id TEXT NOT NULL, ts INTEGER NOT NULL, \
             value REAL NOT NULL, PRIMARY KEY (series_id, ts)) WITHOUT ROWID"
        )))
        .execute(&pool)
        .await
        .map_err(fail)?;
        let mut tx = pool.begin().await.map_err(fail)?;
        let insert = |rows: usize| {
            let mut sql = format!("INSERT INTO {table} (series_id, ts, value) VALUES ");
            for i in 0..rows {
                sql.push_str(if i == 0 { "(?, ?, ?)" } else { ", (?, ?, ?)" });
            }
            sql
        };
        let full = insert(ROWS_PER_INSERT);
        let mut i = 0;
        while i < workload.samples {
            let n = (workload.samples - i).min(ROWS_PER_INSERT as u64);
            let sql = if n as usize == ROWS_PER_INSERT {
                full.clone()
            } else {
                insert(n as usize)
            };
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for j in i..i + n {
                let (s, timestamp, value) = workload.sample(j);
                query = query
                    .bind(workload.ids[s].as_str())
                    .bind(aimon::time::to_micros(timestamp))
                    .bind(value);
            }
            query.execute(&mut *tx).await.map_err(fail)?;
            i += n;
        }
        tx.commit().await.map_err(fail)?;
        Ok(PlainSql { pool, table })
    }

    /// The hand-written query, for the report.
    pub(super) fn statement(&self) -> String {
        format!(
            "SELECT ts - ts % :step, avg(value), count(*) FROM {} \
             WHERE ts >= :start AND ts < :end GROUP BY 1",
            self.table
        )
    }

    /// One timed run of the hand-written history query; returns its time and bucket count.
    pub(super) async fn history(
        &self,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<(Duration, usize)> {
        let sql = format!(
            "SELECT ts - ts % ?1, avg(value), count(*) FROM {} WHERE ts >= ?2 AND ts < ?3 \
             GROUP BY 1",
            self.table
        );
        let started = Instant::now();
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(step)
            .bind(start)
            .bind(end)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| CliError::new(format!("--compare-sql: {e}")))?;
        Ok((started.elapsed(), rows.len()))
    }

    /// Drops the scratch table.
    pub(super) async fn finish(self) -> Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {}", self.table)))
            .execute(&self.pool)
            .await
            .map_err(|e| CliError::new(format!("--compare-sql: {e}")))?;
        self.pool.close().await;
        Ok(())
    }
}
