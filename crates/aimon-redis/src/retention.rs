//! `apply_retention`. Redis expires whole keys by itself (`PEXPIREAT` set at write time);
//! this sweep drops the chunks of live series whose whole window is past the cutoff (reads
//! filter inside a chunk), drops what expired from the id indexes, and removes index members and empty index
//! keys that point at expired data, so indexes never grow without bound.

use aimon_core::{Result, RetentionReport, time};

use crate::backend::{RedisBackend, int};
use crate::chunks::WINDOW;
use crate::scripts::SCRIPTS;

impl RedisBackend {
    /// `(id, live_until score)` of every member of an id index.
    pub(crate) async fn index_members(&self, index: &str) -> Result<Vec<(String, f64)>> {
        let reply: Vec<(String, f64)> = self
            .pool
            .query(
                redis::cmd("ZRANGE")
                    .arg(index)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES"),
            )
            .await?;
        Ok(reply)
    }

    /// Drops the items of `index` whose live-until score is before `now`; returns how many.
    async fn drop_expired(
        &self,
        index: &str,
        now: i64,
        item_key: impl Fn(&str) -> String,
    ) -> Result<u64> {
        let expired: Vec<String> = self
            .pool
            .query(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(index)
                    .arg("-inf")
                    .arg(format!("({now}")),
            )
            .await?;
        let mut removed = 0;
        for chunk in expired.chunks(500) {
            let mut cmd = SCRIPTS.drop_items.cmd(&[index]);
            cmd.arg(now);
            for id in chunk {
                cmd.arg(id).arg(item_key(id));
            }
            removed += self.pool.query::<u64>(&cmd).await?;
        }
        Ok(removed)
    }

    pub(crate) async fn sweep(&self) -> Result<RetentionReport> {
        let now = time::now();
        let now_us = time::to_micros(now);
        let retention = self.config.retention;
        let mut report = RetentionReport::default();
        if let Some(cutoff) = retention.metric_cutoff(now) {
            let members = self.index_members(&self.keys.series_index()).await?;
            let (expired, live): (Vec<_>, Vec<_>) = members
                .into_iter()
                .partition(|(_, score)| *score < now_us as f64);
            // Samples of expired series that Redis has not dropped yet.
            for chunk in expired.chunks(500) {
                let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
                for loaded in self
                    .load(&ids, i64::MIN, i64::MAX, Some(i64::MAX), &|_| true)
                    .await?
                {
                    report.samples_removed += loaded.count(i64::MIN, i64::MAX);
                }
                let mut pipe = redis::pipe();
                for id in &ids {
                    let mut del = redis::cmd("DEL");
                    del.arg(&self.keys.series_samples(id).all()[..]);
                    del.arg(self.keys.legacy_samples(id))
                        .arg(self.keys.legacy_values(id));
                    pipe.add_command(del);
                }
                self.pool.pipeline(&pipe).await?;
            }
            report.series_removed = self
                .drop_expired(&self.keys.series_index(), now_us, |id| {
                    self.keys.series_meta(id)
                })
                .await?;
            for chunk in live.chunks(500) {
                let mut pipe = redis::pipe();
                for (id, _) in chunk {
                    let keys = self.keys.series_samples(id);
                    let mut cmd = SCRIPTS
                        .trim
                        .cmd(&[&keys.state, &keys.chunks, &keys.summaries]);
                    cmd.arg(cutoff).arg(WINDOW);
                    pipe.add_command(cmd);
                }
                for reply in self.pool.pipeline(&pipe).await? {
                    report.samples_removed += int(&reply).max(0) as u64;
                }
            }
        }
        if retention.alert_ttl.is_some() {
            report.alerts_removed = self
                .drop_expired(&self.keys.alert_index(), now_us, |id| self.keys.alert(id))
                .await?;
        }
        if retention.agent_state_ttl.is_some() {
            report.agent_states_removed = self
                .drop_expired(&self.keys.agent_index(), now_us, |id| self.keys.agent(id))
                .await?;
        }
        let mut cmd = SCRIPTS.sweep_indexes.cmd(&[&self.keys.registry()]);
        cmd.arg(now_us);
        self.pool.query::<i64>(&cmd).await?;
        Ok(report)
    }

    /// Index members (in every id and secondary index of the namespace) whose item key no
    /// longer exists, plus index keys listed in the registry that are gone or empty. After
    /// `apply_retention` this is zero; tests count it.
    pub async fn orphan_index_members(&self) -> Result<u64> {
        let mut orphans = 0;
        let registry: Vec<String> = self
            .pool
            .query(redis::cmd("SMEMBERS").arg(self.keys.registry()))
            .await?;
        let mut indexes: Vec<String> = vec![
            self.keys.series_index(),
            self.keys.alert_index(),
            self.keys.agent_index(),
        ];
        indexes.extend(registry);
        for index in &indexes {
            let kind = if let Some(rel) = self.keys.relative(index) {
                rel.get(2..3).unwrap_or("").to_owned()
            } else {
                continue;
            };
            let members = self.index_members(index).await?;
            if members.is_empty() {
                // An empty index key left in the registry is an orphan too.
                let is_master = [
                    self.keys.series_index(),
                    self.keys.alert_index(),
                    self.keys.agent_index(),
                ]
                .contains(index);
                orphans += u64::from(!is_master);
                continue;
            }
            let mut pipe = redis::pipe();
            for (id, _) in &members {
                let key = match kind.as_str() {
                    "m" => self.keys.series_meta(id),
                    "a" => self.keys.alert(id),
                    _ => self.keys.agent(id),
                };
                pipe.cmd("EXISTS").arg(key);
            }
            for reply in self.pool.pipeline(&pipe).await? {
                if int(&reply) == 0 {
                    orphans += 1;
                }
            }
        }
        Ok(orphans)
    }
}
