//! Agent states: the latest state per agent (an equal heartbeat replaces, an older one is
//! superseded), reads and queries.

use aimon_core::driver::AgentStateDriver;
use aimon_core::driver::Selection;
use aimon_core::driver::Valid;
use aimon_core::driver::ValidId;
use aimon_core::query::{AgentStateQuery, tie_breaker};
use aimon_core::{AgentState, DataKind, Result, RetentionPolicy, StorageEvent, WriteReport, time};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::backend::{DbResult, PostgresBackend};
use crate::error::parse_json;
use crate::sql::{Run, Sql, push_filters, push_order_and_page};

/// The columns of `agent_states`, in the order [`state_from_row`] reads them.
pub(crate) const STATE_COLUMNS: &str =
    "agent_id, id, status, metrics, last_heartbeat, metadata, created_at, updated_at, embedding";

/// Only a state at least as recent as the stored one replaces it.
const UPSERT_STATE: &str = "INSERT INTO agent_states AS a (agent_id, id, status, metrics, \
    last_heartbeat, metadata, created_at, updated_at, embedding) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
    ON CONFLICT (agent_id) DO UPDATE SET id = EXCLUDED.id, status = EXCLUDED.status, \
    metrics = EXCLUDED.metrics, last_heartbeat = EXCLUDED.last_heartbeat, \
    metadata = EXCLUDED.metadata, created_at = EXCLUDED.created_at, \
    updated_at = EXCLUDED.updated_at, embedding = EXCLUDED.embedding \
    WHERE EXCLUDED.last_heartbeat >= a.last_heartbeat";

pub(crate) fn state_from_row(row: &PgRow) -> Result<AgentState> {
    let metrics: String = row.try_get(3).db()?;
    let metadata: String = row.try_get(5).db()?;
    Ok(AgentState {
        agent_id: row.try_get(0).db()?,
        id: row.try_get(1).db()?,
        status: row.try_get(2).db()?,
        metrics: parse_json(&metrics, "agent metrics")?,
        last_heartbeat: row.try_get(4).db()?,
        metadata: parse_json(&metadata, "agent metadata")?,
        created_at: row.try_get(6).db()?,
        updated_at: row.try_get(7).db()?,
        embedding: row.try_get(8).db()?,
    })
}

#[async_trait::async_trait]
impl AgentStateDriver for PostgresBackend {
    async fn save_agent_states(&self, batch: Valid<'_, [AgentState]>) -> Result<WriteReport> {
        let states = batch.get();
        let cutoff = self.config.retention.agent_state_cutoff(time::now());
        let mut report = WriteReport::default();
        let mut events = Vec::new();
        let mut tx = self.pool.begin().await.db()?;
        for state in states {
            if !RetentionPolicy::is_live(cutoff, state.last_heartbeat) {
                report.expired += 1;
                continue;
            }
            let done = sqlx::query(UPSERT_STATE)
                .bind(state.agent_id.as_str())
                .bind(state.id.as_str())
                .bind(state.status.as_str())
                .bind(serde_json::to_string(&state.metrics)?)
                .bind(state.last_heartbeat)
                .bind(serde_json::to_string(&state.metadata)?)
                .bind(state.created_at)
                .bind(state.updated_at)
                .bind(state.embedding.as_deref())
                .execute(&mut *tx)
                .await
                .db()?;
            if done.rows_affected() == 0 {
                report.superseded += 1;
            } else {
                report.written += 1;
                events.push(serde_json::to_string(&StorageEvent::AgentStateWritten {
                    backend: self.config.name.clone(),
                    agent_id: state.agent_id.clone(),
                    status: state.status.clone(),
                })?);
            }
        }
        self.notify(&mut tx, events).await?;
        tx.commit().await.db()?;
        Ok(report)
    }

    async fn get_agent_state(&self, agent_id: ValidId<'_>) -> Result<Option<AgentState>> {
        let agent_id = agent_id.get();
        let cutoff = self.config.retention.agent_state_cutoff(time::now());
        let mut sql = Sql::new("SELECT ");
        sql.push(STATE_COLUMNS)
            .push(" FROM agent_states WHERE agent_id = ")
            .bind(agent_id);
        if let Some(cutoff) = cutoff {
            sql.push(" AND last_heartbeat >= ")
                .bind(time::from_micros(cutoff));
        }
        sql.query()
            .fetch_optional(&self.pool)
            .await
            .db()?
            .as_ref()
            .map(state_from_row)
            .transpose()
    }

    async fn get_agent_states(
        &self,
        query: Selection<'_, AgentStateQuery>,
    ) -> Result<Vec<AgentState>> {
        let (query, options) = (query.get(), query.options());
        let cutoff = self.config.retention.agent_state_cutoff(time::now());
        let low = match (cutoff, query.heartbeat_after_micros()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let mut sql = Sql::new("SELECT ");
        sql.push(STATE_COLUMNS)
            .push(" FROM agent_states WHERE TRUE");
        if let Some(low) = low {
            sql.push(" AND last_heartbeat >= ")
                .bind(time::from_micros(low));
        }
        if let Some(status) = &query.status {
            sql.push(" AND status = ").bind(status.as_str());
        }
        push_filters(&mut sql, options, "metadata");
        push_order_and_page(&mut sql, options, tie_breaker(DataKind::AgentStates));
        sql.query()
            .fetch_all(&self.pool)
            .await
            .db()?
            .iter()
            .map(state_from_row)
            .collect()
    }
}
