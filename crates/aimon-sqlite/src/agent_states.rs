//! Agent states: the latest state per agent (an equal heartbeat replaces, an older one is
//! superseded), reads and queries.

use aimon_core::driver::AgentStateDriver;
use aimon_core::driver::Check;
use aimon_core::driver::Selection;
use aimon_core::driver::Valid;
use aimon_core::driver::ValidId;
use aimon_core::query::{AgentStateQuery, ResolvedOptions, tie_breaker};
use aimon_core::similarity::{self, Ranker, Scored, SimilarAgentStatesQuery, SimilarityTarget};
use aimon_core::{AgentState, DataKind, Result, RetentionPolicy, WriteReport, time};
use futures::TryStreamExt;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::backend::{DbResult, SqliteBackend};
use crate::error::{embedding_column, encode_embedding, json_column};
use crate::sql::{Run, Sql, push_filters, push_order_and_page};

/// The columns of `agent_states`, in the order [`state_from_row`] reads them.
pub(crate) const STATE_COLUMNS: &str =
    "agent_id, id, status, metrics, last_heartbeat, metadata, created_at, updated_at, embedding";

/// The update half of the agent-state upsert: only a state at least as recent replaces.
macro_rules! state_update {
    () => {
        "id = excluded.id, status = excluded.status, metrics = excluded.metrics, \
         last_heartbeat = excluded.last_heartbeat, metadata = excluded.metadata, \
         created_at = excluded.created_at, updated_at = excluded.updated_at, \
         embedding = excluded.embedding \
         WHERE excluded.last_heartbeat >= agent_states.last_heartbeat"
    };
}
pub(crate) use state_update;

const UPSERT_STATE: &str = concat!(
    "INSERT INTO agent_states (agent_id, id, status, metrics, last_heartbeat, metadata, \
     created_at, updated_at, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
     ON CONFLICT (agent_id) DO UPDATE SET ",
    state_update!()
);

pub(crate) fn state_from_row(row: &SqliteRow) -> Result<AgentState> {
    Ok(AgentState {
        agent_id: row.try_get(0).db()?,
        id: row.try_get(1).db()?,
        status: row.try_get(2).db()?,
        metrics: json_column(row, 3, "agent metrics")?,
        last_heartbeat: time::from_micros(row.try_get(4).db()?),
        metadata: json_column(row, 5, "agent metadata")?,
        created_at: time::from_micros(row.try_get(6).db()?),
        updated_at: time::from_micros(row.try_get(7).db()?),
        embedding: embedding_column(row, 8)?,
    })
}

impl SqliteBackend {
    /// `SELECT` of the live latest states `query` selects, with no order or paging.
    fn state_selection(&self, query: &AgentStateQuery, options: &ResolvedOptions) -> Sql {
        let cutoff = self.config.retention.agent_state_cutoff(time::now());
        let mut sql = Sql::new("SELECT ");
        sql.push(STATE_COLUMNS)
            .push(" FROM agent_states WHERE last_heartbeat >= ")
            .bind(cutoff.unwrap_or(i64::MIN));
        if let Some(status) = &query.status {
            sql.push(" AND status = ").bind(status.as_str());
        }
        if let Some(after) = query.heartbeat_after_micros() {
            sql.push(" AND last_heartbeat >= ").bind(after);
        }
        push_filters(&mut sql, options, "metadata");
        sql
    }
}

#[async_trait::async_trait]
impl AgentStateDriver for SqliteBackend {
    async fn save_agent_states(&self, batch: Valid<'_, [AgentState]>) -> Result<WriteReport> {
        let states = batch.get();
        let cutoff = self.config.retention.agent_state_cutoff(time::now());
        let mut report = WriteReport::default();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.db()?;
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
                .bind(time::to_micros(state.last_heartbeat))
                .bind(serde_json::to_string(&state.metadata)?)
                .bind(time::to_micros(state.created_at))
                .bind(time::to_micros(state.updated_at))
                .bind(encode_embedding(state.embedding.as_deref()))
                .execute(&mut *tx)
                .await
                .db()?;
            if done.rows_affected() == 0 {
                report.superseded += 1;
            } else {
                report.written += 1;
            }
        }
        tx.commit().await.db()?;
        Ok(report)
    }

    async fn get_agent_state(&self, agent_id: ValidId<'_>) -> Result<Option<AgentState>> {
        let agent_id = agent_id.get();
        let cutoff = self.config.retention.agent_state_cutoff(time::now());
        let mut sql = Sql::new("SELECT ");
        sql.push(STATE_COLUMNS)
            .push(" FROM agent_states WHERE agent_id = ")
            .bind(agent_id)
            .push(" AND last_heartbeat >= ")
            .bind(cutoff.unwrap_or(i64::MIN));
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
        let mut sql = self.state_selection(query, options);
        push_order_and_page(&mut sql, options, tie_breaker(DataKind::AgentStates));
        sql.query()
            .fetch_all(&self.pool)
            .await
            .db()?
            .iter()
            .map(state_from_row)
            .collect()
    }

    /// Similarity by brute force, as the alerts' (`find_similar_alerts` in `alerts.rs`).
    async fn find_similar_agent_states(
        &self,
        query: &SimilarAgentStatesQuery,
    ) -> Result<Vec<Scored<AgentState>>> {
        let embedder = &*self.embedder;
        let options = query.resolve(embedder.dimension())?;
        let target = match &query.target {
            SimilarityTarget::Item(id) => self.get_agent_state(Check::check(id.as_str())?).await?,
            _ => None,
        };
        let (vector, exclude) =
            similarity::agent_state_query_vector(&query.target, target.as_ref(), embedder)?;
        let mut ranker = Ranker::new(vector, exclude, query.limit);
        let sql = self.state_selection(&query.filter, &options);
        let mut rows = sql.query().fetch(&self.pool);
        while let Some(row) = rows.try_next().await.db()? {
            let state = state_from_row(&row)?;
            let v = similarity::agent_state_vector(&state, embedder);
            let key = state.agent_id.clone();
            ranker.push(&key, state, &v)?;
        }
        Ok(ranker.finish())
    }
}
