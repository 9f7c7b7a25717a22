//! `stats`: exact live counts from the id indexes plus figures from `INFO`.

use std::collections::BTreeMap;

use aimon_core::{DatabaseStats, Result, StorageBackendType, time};
use redis::Value;

use crate::backend::{RedisBackend, int, text};

/// `INFO` text as key → value.
fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// The text of an `INFO` reply. A Cluster answers per node, in no fixed order: the node with
/// the smallest address answers for the Cluster, so that successive stats describe the same
/// node (its uptime only grows).
fn info_text(v: &Value) -> String {
    match v {
        Value::Map(pairs) => pairs
            .iter()
            .min_by_key(|(node, _)| text(node).unwrap_or_default().to_owned())
            .map(|(_, v)| info_text(v))
            .unwrap_or_default(),
        other => text(other).unwrap_or_default().to_owned(),
    }
}

impl RedisBackend {
    /// The memory the namespace's keys take: `MEMORY USAGE key SAMPLES 0` (every element of a
    /// key counted, not a sample of them) summed over every key of the namespace, listed
    /// through its indexes as a native backup lists them. Each command goes to the master that
    /// owns the key's slot (on a Cluster, every master that holds part of the namespace; on
    /// Sentinel, the current master); a key that expired since it was listed counts 0.
    pub async fn namespace_memory_bytes(&self) -> Result<u64> {
        let keys = self.namespace_keys().await?;
        let mut total = 0u64;
        for chunk in keys.chunks(500) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("MEMORY")
                    .arg("USAGE")
                    .arg(key)
                    .arg("SAMPLES")
                    .arg(0);
            }
            for reply in self.pool.pipeline(&pipe).await? {
                // Nil (the key is gone) reads as 0.
                total += int(&reply).max(0) as u64;
            }
        }
        Ok(total)
    }

    /// Whether the RedisTimeSeries module answers `TS.INFO` (asked about the namespace's
    /// registry key: a server with the module says that key is not a time series, one without
    /// says the command is unknown). Reported in stats; the driver does not use the module, for
    /// the reason the crate docs give under "Queries and history".
    pub async fn timeseries_module_loaded(&self) -> Result<bool> {
        let mut probe = redis::cmd("TS.INFO");
        probe.arg(self.keys.registry());
        match self.pool.query::<Value>(&probe).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_retryable() => Err(e),
            Err(e) => Ok(!e
                .to_string()
                .to_ascii_lowercase()
                .contains("unknown command")),
        }
    }

    pub(crate) async fn database_stats(&self) -> Result<DatabaseStats> {
        let now = time::now();
        let now_us = time::to_micros(now);
        let cutoff = self.config.retention.metric_cutoff(now).unwrap_or(i64::MIN);
        let series_ids = self.live_ids(&self.keys.series_index(), now_us).await?;
        let mut pipe = redis::pipe();
        for index in [self.keys.alert_index(), self.keys.agent_index()] {
            pipe.cmd("ZCOUNT").arg(index).arg(now_us).arg("+inf");
        }
        pipe.cmd("SMEMBERS").arg(self.keys.registry());
        let replies = self.pool.pipeline(&pipe).await?;
        let count = |i: usize| replies.get(i).map(int).unwrap_or(0).max(0) as u64;
        let (alerts, agent_states) = (count(0), count(1));
        let registry: Vec<String> = replies
            .get(2)
            .map(crate::backend::items)
            .unwrap_or_default()
            .iter()
            .filter_map(|v| text(v).map(str::to_owned))
            .collect();
        let mut extra_reason = None;
        let mut samples = 0u64;
        // Whole chunks count from their summaries; only chunks across the cutoff and the head
        // are decoded.
        for chunk in series_ids.chunks(500) {
            let ids: Vec<&str> = chunk.iter().map(String::as_str).collect();
            for loaded in self
                .load(&ids, cutoff, i64::MAX, Some(i64::MAX), &|_| true)
                .await?
            {
                samples += loaded.count(cutoff, i64::MAX);
            }
        }
        let mut index_members = 0u64;
        for chunk in registry.chunks(500) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("ZCARD").arg(key);
            }
            for reply in self.pool.pipeline(&pipe).await? {
                index_members += int(&reply).max(0) as u64;
            }
        }
        // A server that refuses `MEMORY` (an ACL, a managed service) still gives the counts;
        // the size is then unknown, with the reason, rather than a whole failed `stats`.
        let size_bytes = match self.namespace_memory_bytes().await {
            Ok(bytes) => Some(bytes),
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => {
                tracing::debug!(backend = %self.config.name, error = %e, "MEMORY USAGE refused");
                extra_reason = Some(e.to_string());
                None
            }
        };
        let info_reply: Value = self.pool.query(&redis::cmd("INFO")).await?;
        let info = parse_info(&info_text(&info_reply));
        let get = |k: &str| info.get(k).cloned().unwrap_or_default();
        let num = |k: &str| info.get(k).and_then(|v| v.parse::<u64>().ok());
        let mut extra = BTreeMap::new();
        if let Some(why) = extra_reason {
            extra.insert("size_bytes_unknown".into(), why.into());
        }
        extra.insert("topology".into(), self.config.topology.kind().into());
        extra.insert("namespace".into(), self.keys.namespace().into());
        extra.insert("redis_version".into(), get("redis_version").into());
        extra.insert("role".into(), get("role").into());
        for key in [
            "uptime_in_seconds",
            "used_memory",
            "connected_clients",
            "connected_slaves",
        ] {
            if let Some(n) = num(key) {
                extra.insert(key.into(), n.into());
            }
        }
        extra.insert("used_memory_human".into(), get("used_memory_human").into());
        extra.insert(
            "redistimeseries".into(),
            self.timeseries_module_loaded().await?.into(),
        );
        // Keys of the namespace: three id indexes, the registry, the secondary indexes, one
        // item key per series / alert / agent and two sample keys per series.
        let keys = 5 + registry.len() as u64 + alerts + agent_states + 6 * series_ids.len() as u64;
        extra.insert("namespace_keys".into(), keys.into());
        extra.insert(
            "namespace_index_keys".into(),
            (registry.len() as u64 + 3).into(),
        );
        extra.insert(
            "namespace_index_members".into(),
            (index_members + alerts + agent_states + series_ids.len() as u64).into(),
        );
        Ok(DatabaseStats {
            backend: self.config.name.clone(),
            backend_type: StorageBackendType::Redis,
            version: get("redis_version"),
            uptime_seconds: num("uptime_in_seconds").unwrap_or_else(|| self.uptime_seconds()),
            series: series_ids.len() as u64,
            samples,
            alerts,
            agent_states,
            size_bytes,
            extra,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_info_reply_is_read_from_the_same_node_whatever_the_order() {
        let node = |addr: &str, uptime: u32| {
            (
                Value::SimpleString(addr.to_owned()),
                Value::VerbatimString {
                    format: redis::VerbatimFormat::Text,
                    text: format!("# Server\r\nuptime_in_seconds:{uptime}\r\n"),
                },
            )
        };
        let a = Value::Map(vec![node("127.0.0.1:7002", 5), node("127.0.0.1:7001", 9)]);
        let b = Value::Map(vec![node("127.0.0.1:7001", 9), node("127.0.0.1:7002", 5)]);
        for reply in [a, b] {
            let info = parse_info(&info_text(&reply));
            assert_eq!(info["uptime_in_seconds"], "9");
        }
    }
}
