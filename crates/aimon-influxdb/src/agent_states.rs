//! Agent states: points of measurement `agent_states` keyed by the tag `agent_id` at the time of
//! their `last_heartbeat`; reads take the latest point per agent (`last()`), so a stale write
//! can never hide a newer state, and an equal heartbeat overwrites (rule 5).

use aimon_core::driver::AgentStateDriver;
use aimon_core::driver::Selection;
use aimon_core::driver::Valid;
use aimon_core::driver::ValidId;
use std::collections::HashMap;

use aimon_core::backend::{StorageEvent, WriteReport};
use aimon_core::memory::truncate_state;
use aimon_core::query::AgentStateQuery;
use aimon_core::{AgentState, Result, RetentionPolicy, time};

use crate::backend::{AGENT_STATES, InfluxBackend, any_of, docs, time_range};
use crate::client::{LineBuffer, Target};
use crate::line;

const AGENTS_PER_STATEMENT: usize = 200;

impl InfluxBackend {
    /// The latest heartbeat (µs) stored for each of `agents`.
    async fn latest_heartbeats(&self, agents: &[&str]) -> Result<HashMap<String, i64>> {
        let mut out = HashMap::new();
        if agents.is_empty() {
            return Ok(out);
        }
        let from = self.from(AGENT_STATES);
        let statements: Vec<String> = agents
            .chunks(AGENTS_PER_STATEMENT)
            .map(|chunk| {
                format!(
                    "SELECT last(\"doc\") AS doc FROM {from} WHERE {} AND {} GROUP BY \"agent_id\"",
                    any_of("agent_id", chunk),
                    time_range(time::MIN_TIMESTAMP_MICROS, time::MAX_TIMESTAMP_MICROS)
                )
            })
            .collect();
        for series in self.client.query(&statements.join("; ")).await? {
            for (ts, state) in docs::<AgentState>(&series, "agent state")? {
                let _ = ts;
                let hb = time::to_micros(state.last_heartbeat);
                let e = out.entry(state.agent_id).or_insert(hb);
                *e = (*e).max(hb);
            }
        }
        Ok(out)
    }

    /// The latest live state of every agent (of `agent_id` only, if given).
    pub(crate) async fn live_agent_states(
        &self,
        agent_id: Option<&str>,
    ) -> Result<Vec<AgentState>> {
        let cutoff = self
            .config
            .retention
            .agent_state_cutoff(time::now())
            .unwrap_or(time::MIN_TIMESTAMP_MICROS)
            .max(time::MIN_TIMESTAMP_MICROS);
        let only = agent_id
            .map(|a| format!("{} AND ", any_of("agent_id", &[a])))
            .unwrap_or_default();
        let answer = self
            .client
            .query_one(&format!(
                "SELECT last(\"doc\") AS doc FROM {} WHERE {only}{} GROUP BY \"agent_id\"",
                self.from(AGENT_STATES),
                time_range(cutoff, time::MAX_TIMESTAMP_MICROS)
            ))
            .await?;
        Ok(docs::<AgentState>(&answer, "agent state")?
            .into_iter()
            .map(|(_, s)| s)
            .filter(|s| {
                agent_id.is_none_or(|a| a == s.agent_id)
                    && time::to_micros(s.last_heartbeat) >= cutoff
            })
            .collect())
    }

    /// Each agent and the time (µs) of its latest stored state, live or not.
    pub(crate) async fn all_latest_heartbeats(&self) -> Result<Vec<(String, i64)>> {
        let answer = self
            .client
            .query_one(&format!(
                "SELECT last(\"doc\") AS doc FROM {} WHERE {} GROUP BY \"agent_id\"",
                self.from(AGENT_STATES),
                time_range(time::MIN_TIMESTAMP_MICROS, time::MAX_TIMESTAMP_MICROS)
            ))
            .await?;
        Ok(docs::<AgentState>(&answer, "agent state")?
            .into_iter()
            .map(|(ts, state)| (state.agent_id, ts))
            .collect())
    }

    /// Deletes every agent's states older than its latest (`latest`: agent and the latest
    /// state's time, µs). Reads only ever see the latest state per agent, so the older points
    /// are dead weight; without this, a heartbeat every few seconds grows the measurement
    /// forever when there is no `agent_state_ttl`. A state written meanwhile is newer than
    /// the time each statement names, so it stays. Returns how many points went.
    pub(crate) async fn prune_superseded_states(&self, latest: &[(String, i64)]) -> Result<u64> {
        let from = self.from(AGENT_STATES);
        let mut pruned = 0;
        for chunk in latest.chunks(AGENTS_PER_STATEMENT) {
            let counts: Vec<String> = chunk
                .iter()
                .map(|(agent, ts)| {
                    format!(
                        "SELECT count(\"doc\") FROM {from} WHERE {} AND {}",
                        any_of("agent_id", &[agent.as_str()]),
                        time_range(time::MIN_TIMESTAMP_MICROS, *ts)
                    )
                })
                .collect();
            // One answer per statement, in order: each agent's count of superseded points.
            let answers = self.client.query(&counts.join("; ")).await?;
            let mut deletes = Vec::new();
            for ((agent, ts), series) in chunk.iter().zip(&answers) {
                let old: u64 = series
                    .iter()
                    .flat_map(|s| {
                        let i = s.column("count");
                        s.values.iter().filter_map(move |row| {
                            i.and_then(|i| row.get(i)).and_then(crate::client::cell_i64)
                        })
                    })
                    .map(|n| u64::try_from(n).unwrap_or(0))
                    .sum();
                if old == 0 {
                    // A DELETE visits every shard of the database: only where there is
                    // something to delete.
                    continue;
                }
                pruned += old;
                deletes.push(format!(
                    "DELETE FROM {} WHERE {} AND time < {}",
                    line::ident(AGENT_STATES),
                    any_of("agent_id", &[agent.as_str()]),
                    ts.saturating_mul(1000)
                ));
            }
            if !deletes.is_empty() {
                self.client.query(&deletes.join("; ")).await?;
            }
        }
        Ok(pruned)
    }
}

#[async_trait::async_trait]
impl AgentStateDriver for InfluxBackend {
    async fn save_agent_states(&self, batch: Valid<'_, [AgentState]>) -> Result<WriteReport> {
        let states = batch.get();
        let cutoff = self.config.retention.agent_state_cutoff(time::now());
        let agents: Vec<&str> = {
            let mut seen = std::collections::BTreeSet::new();
            states
                .iter()
                .map(|s| s.agent_id.as_str())
                .filter(|a| seen.insert(*a))
                .collect()
        };
        let mut latest = self.latest_heartbeats(&agents).await?;
        let mut report = WriteReport::default();
        let mut lines = LineBuffer::default();
        let mut events = Vec::new();
        for state in states {
            if !RetentionPolicy::is_live(cutoff, state.last_heartbeat) {
                report.expired += 1;
                continue;
            }
            let state = truncate_state(state);
            let hb = time::to_micros(state.last_heartbeat);
            if latest.get(&state.agent_id).is_some_and(|old| *old > hb) {
                report.superseded += 1;
                continue;
            }
            latest.insert(state.agent_id.clone(), hb);
            let s = &mut lines.text;
            s.push_str(AGENT_STATES);
            s.push_str(",agent_id=");
            line::push_tag(s, &state.agent_id);
            s.push_str(" doc=");
            line::push_string_field(
                s,
                &serde_json::to_string(&state).map_err(aimon_core::Error::from)?,
            );
            s.push(' ');
            s.push_str(&hb.to_string());
            lines.end_line();
            report.written += 1;
            events.push(StorageEvent::AgentStateWritten {
                backend: self.config.name.clone(),
                agent_id: state.agent_id.clone(),
                status: state.status.clone(),
            });
        }
        self.client.write_lines(Target::Meta, &lines).await?;
        events.into_iter().for_each(|e| self.publish(e));
        Ok(report)
    }

    async fn get_agent_state(&self, agent_id: ValidId<'_>) -> Result<Option<AgentState>> {
        let agent_id = agent_id.get();
        Ok(self.live_agent_states(Some(agent_id)).await?.pop())
    }

    async fn get_agent_states(
        &self,
        query: Selection<'_, AgentStateQuery>,
    ) -> Result<Vec<AgentState>> {
        let items = self.live_agent_states(None).await?.into_iter();
        Ok(query.select_in_memory(items, None))
    }
}
