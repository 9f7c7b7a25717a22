//! Agent states: the latest state per agent, one hash per agent (`j` = JSON, `h` = padded
//! heartbeat, `x` = index keys) in the namespace slot, indexed by status.

use aimon_core::driver::AgentStateDriver;
use aimon_core::driver::Selection;
use aimon_core::driver::Valid;
use aimon_core::driver::ValidId;
use aimon_core::memory::truncate_state;
use aimon_core::query::AgentStateQuery;
use aimon_core::{AgentState, Result, RetentionPolicy, StorageEvent, WriteReport, time};

use crate::backend::{RedisBackend, int, live_until_arg, pad};
use crate::scripts::SCRIPTS;

#[async_trait::async_trait]
impl AgentStateDriver for RedisBackend {
    async fn save_agent_states(&self, batch: Valid<'_, [AgentState]>) -> Result<WriteReport> {
        let states = batch.get();
        let ttl = self.config.retention.agent_state_ttl;
        let cutoff = self.config.retention.agent_state_cutoff(time::now());
        let channel = self.keys.channel();
        let (master, registry) = (self.keys.agent_index(), self.keys.registry());
        let mut pipe = redis::pipe();
        if self.atomic_batches() {
            pipe.atomic();
        }
        let mut report = WriteReport::default();
        let mut sent = 0;
        for state in states {
            if !RetentionPolicy::is_live(cutoff, state.last_heartbeat) {
                report.expired += 1;
                continue;
            }
            let state = truncate_state(state);
            let item = self.keys.agent(&state.agent_id);
            let by_status = self.keys.agents_by_status(&state.status);
            let heartbeat = time::to_micros(state.last_heartbeat);
            let event = serde_json::to_string(&StorageEvent::AgentStateWritten {
                backend: self.config.name.clone(),
                agent_id: state.agent_id.clone(),
                status: state.status.clone(),
            })?;
            let mut cmd = SCRIPTS.agent.cmd(&[&item, &master, &registry, &by_status]);
            cmd.arg(&state.agent_id)
                .arg(serde_json::to_string(&state)?)
                .arg(pad(heartbeat))
                .arg(live_until_arg(heartbeat, ttl))
                .arg(&channel)
                .arg(event);
            pipe.add_command(cmd);
            sent += 1;
        }
        if sent > 0 {
            let replies = self.pool.write(&pipe).await?;
            for reply in &replies {
                if int(reply) == 1 {
                    report.written += 1;
                } else {
                    report.superseded += 1;
                }
            }
        }
        Ok(report)
    }

    async fn get_agent_state(&self, agent_id: ValidId<'_>) -> Result<Option<AgentState>> {
        let agent_id = agent_id.get();
        let cutoff = self.config.retention.agent_state_cutoff(time::now());
        let found = self
            .fetch_items::<AgentState>(&[self.keys.agent(agent_id)])
            .await?;
        Ok(found
            .into_iter()
            .flatten()
            .find(|s| s.agent_id == agent_id && RetentionPolicy::is_live(cutoff, s.last_heartbeat)))
    }

    async fn get_agent_states(
        &self,
        query: Selection<'_, AgentStateQuery>,
    ) -> Result<Vec<AgentState>> {
        let selection = query;
        let query = selection.get();
        let now = time::now();
        let cutoff = self.config.retention.agent_state_cutoff(now);
        let index = match &query.status {
            Some(status) => self.keys.agents_by_status(status),
            None => self.keys.agent_index(),
        };
        let ids = self.live_ids(&index, time::to_micros(now)).await?;
        let keys: Vec<String> = ids.iter().map(|id| self.keys.agent(id)).collect();
        let items = self
            .fetch_items::<AgentState>(&keys)
            .await?
            .into_iter()
            .flatten();
        Ok(selection.select_in_memory(items, cutoff))
    }
}
