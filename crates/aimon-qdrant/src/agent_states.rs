//! Agent states: the latest state per agent, queries, similarity.

use aimon_core::driver::AgentStateDriver;
use aimon_core::driver::Selection;
use aimon_core::driver::Valid;
use aimon_core::driver::ValidId;
use std::collections::BTreeMap;

use aimon_core::backend::StorageEvent;
use aimon_core::memory::truncate_state;
use aimon_core::query::{self, AgentStateQuery};
use aimon_core::similarity::{self, Scored, SimilarAgentStatesQuery, SimilarityTarget};
use aimon_core::{
    AgentState, DataKind, Result, RetentionPolicy, WriteReport, filter as core_filter, time,
};

use crate::backend::QdrantBackend;
use crate::engine::Collection;
use crate::filter;
use crate::ids::point_id;
use crate::payload;

impl QdrantBackend {
    async fn live_state(&self, agent_id: &str) -> Result<Option<AgentState>> {
        let cutoff = self.retention().agent_state_cutoff(time::now());
        let found = self
            .engine
            .get(
                Collection::AgentStates,
                vec![point_id("agent_state", agent_id)],
            )
            .await?;
        for (_, p) in found {
            let state = payload::decode_agent_state(&p)?;
            if state.agent_id == agent_id && RetentionPolicy::is_live(cutoff, state.last_heartbeat)
            {
                return Ok(Some(state));
            }
        }
        Ok(None)
    }
}

#[async_trait::async_trait]
impl AgentStateDriver for QdrantBackend {
    async fn save_agent_states(&self, batch: Valid<'_, [AgentState]>) -> Result<WriteReport> {
        let states = batch.get();
        let cutoff = self.retention().agent_state_cutoff(time::now());
        let _writer = self.writer.lock().await;
        let ids: Vec<_> = states
            .iter()
            .map(|s| point_id("agent_state", &s.agent_id))
            .collect();
        let mut latest: BTreeMap<String, chrono::DateTime<chrono::Utc>> = BTreeMap::new();
        for (_, p) in self.engine.get(Collection::AgentStates, ids).await? {
            let stored = payload::decode_agent_state(&p)?;
            latest.insert(stored.agent_id, stored.last_heartbeat);
        }
        let mut report = WriteReport::default();
        let mut pending: BTreeMap<String, AgentState> = BTreeMap::new();
        let mut events = Vec::new();
        for state in states {
            if !RetentionPolicy::is_live(cutoff, state.last_heartbeat) {
                report.expired += 1;
                continue;
            }
            let state = truncate_state(state);
            if latest
                .get(&state.agent_id)
                .is_some_and(|old| *old > state.last_heartbeat)
            {
                report.superseded += 1;
                continue;
            }
            latest.insert(state.agent_id.clone(), state.last_heartbeat);
            events.push(StorageEvent::AgentStateWritten {
                backend: self.config.name.clone(),
                agent_id: state.agent_id.clone(),
                status: state.status.clone(),
            });
            pending.insert(state.agent_id.clone(), state);
            report.written += 1;
        }
        let mut points = Vec::with_capacity(pending.len());
        for state in pending.values() {
            points.push(payload::agent_state_point(state, &*self.embedder)?);
        }
        self.engine.upsert(Collection::AgentStates, points).await?;
        events.into_iter().for_each(|e| self.publish(e));
        Ok(report)
    }

    async fn get_agent_state(&self, agent_id: ValidId<'_>) -> Result<Option<AgentState>> {
        let agent_id = agent_id.get();
        self.live_state(agent_id).await
    }

    async fn get_agent_states(
        &self,
        query: Selection<'_, AgentStateQuery>,
    ) -> Result<Vec<AgentState>> {
        let (query, options) = (query.get(), query.options());
        let cutoff = self.retention().agent_state_cutoff(time::now());
        let ir = filter::agent_states(query, cutoff);
        let mut found = Vec::new();
        for (_, p) in self.engine.scroll(Collection::AgentStates, &ir).await? {
            let state = payload::decode_agent_state(&p)?;
            if RetentionPolicy::is_live(cutoff, state.last_heartbeat)
                && query.matches(&state, options)
            {
                found.push(state);
            }
        }
        core_filter::sort_and_page(
            &mut found,
            options,
            query::tie_breaker(DataKind::AgentStates).name,
        );
        Ok(found)
    }

    async fn find_similar_agent_states(
        &self,
        query: &SimilarAgentStatesQuery,
    ) -> Result<Vec<Scored<AgentState>>> {
        let embedder = &*self.embedder;
        let options = query.resolve(embedder.dimension())?;
        let cutoff = self.retention().agent_state_cutoff(time::now());
        let target = match &query.target {
            SimilarityTarget::Item(id) => self.live_state(id).await?,
            _ => None,
        };
        let (vector, exclude) =
            similarity::agent_state_query_vector(&query.target, target.as_ref(), embedder)?;
        let ir = filter::agent_states(&query.filter, cutoff);
        crate::rank::search(
            self,
            Collection::AgentStates,
            vector,
            exclude,
            query.limit,
            &ir,
            |p| {
                let state = payload::decode_agent_state(p)?;
                if !RetentionPolicy::is_live(cutoff, state.last_heartbeat)
                    || !query.filter.matches(&state, &options)
                {
                    return Ok(None);
                }
                let v = similarity::agent_state_vector(&state, embedder);
                Ok(Some((state.agent_id.clone(), state, v)))
            },
        )
        .await
    }
}
