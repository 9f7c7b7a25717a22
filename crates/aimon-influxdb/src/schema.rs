//! The database and retention policies of a v1 store, created or adjusted on connect.

use std::time::Duration;

use aimon_core::Result;

use crate::backend::InfluxBackend;
use crate::config::ApiSettings;
use crate::line::ident;

/// InfluxDB refuses retention policies shorter than an hour.
pub const MIN_RP_DURATION: Duration = Duration::from_secs(3_600);

/// The `DURATION` of the samples' retention policy for a `metric_ttl`: the TTL rounded up to
/// whole seconds (at least [`MIN_RP_DURATION`]) plus one [`shard_duration`], or `INF`.
///
/// The margin is there because the server, not aimon, decides at arrival whether a point is
/// "beyond retention policy", by its own clock and up to a batch's latency later: with the
/// exact TTL, a sample aimon judged live a moment ago (or a retried batch) could be refused
/// after the rest of its batch was stored. Influx drops whole shard groups anyway, and every
/// read filters by the exact TTL (DESIGN.md rule 6), so the margin never shows in results.
pub fn rp_duration(metric_ttl: Option<Duration>) -> String {
    match rp_duration_seconds(metric_ttl) {
        None => "INF".to_owned(),
        Some(secs) => format!("{secs}s"),
    }
}

/// [`rp_duration`] in seconds; `None` for INF.
fn rp_duration_seconds(metric_ttl: Option<Duration>) -> Option<u64> {
    metric_ttl.map(|ttl| {
        let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        secs.max(MIN_RP_DURATION.as_secs()) + shard_seconds(Some(ttl))
    })
}

/// A duration as `SHOW RETENTION POLICIES` prints it (Go's `time.Duration`): `2h0m0s`,
/// `59m0s`, `30s`; INF is `0s`.
fn go_duration(seconds: Option<u64>) -> String {
    match seconds.unwrap_or(0) {
        s if s >= 3_600 => format!("{}h{}m{}s", s / 3_600, s % 3_600 / 60, s % 60),
        s if s >= 60 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// The `SHARD DURATION` InfluxDB would pick for a retention policy of the TTL's length: an hour
/// under two days, a day up to six months, a week beyond (and for `INF`). Given explicitly, so
/// that `ALTER` to a shorter duration is never refused for a longer shard duration.
pub fn shard_duration(metric_ttl: Option<Duration>) -> &'static str {
    match shard_seconds(metric_ttl) {
        3_600 => "1h",
        86_400 => "1d",
        _ => "7d",
    }
}

/// [`shard_duration`] in seconds.
fn shard_seconds(metric_ttl: Option<Duration>) -> u64 {
    const DAY: u64 = 86_400;
    match metric_ttl.map(|t| t.as_secs().max(MIN_RP_DURATION.as_secs())) {
        Some(secs) if secs < 2 * DAY => 3_600,
        Some(secs) if secs <= 180 * DAY => DAY,
        _ => 7 * DAY,
    }
}

impl InfluxBackend {
    /// v1: `CREATE DATABASE` (idempotent), the samples' retention policy as the database's
    /// `DEFAULT` with the TTL's duration (`CREATE` or `ALTER`), and the infinite metadata policy.
    /// v2/v3 (either API against a 2.x/3.x server, told by `/ping`'s version): the buckets and
    /// DBRP mappings must exist; their retention is set in InfluxDB (see the crate docs).
    pub(crate) async fn prepare_schema(&self) -> Result<()> {
        let ApiSettings::V1 {
            database,
            retention_policy,
            meta_retention_policy,
            ..
        } = &self.config.api
        else {
            // Buckets and their retention are managed in InfluxDB 2.x/3.x, and reads go
            // through their v1-compatibility `/query`; nothing to create here. (Servers that only
            // accept writes, such as VictoriaMetrics, open too: reads then fail when asked.)
            return Ok(());
        };
        if self.server.major().is_some_and(|major| major >= 2) {
            // The v1-compatibility API of 2.x/3.x: the "database" and "retention policies" are
            // buckets and DBRP mappings managed in InfluxDB (`influx v1 dbrp create`), which
            // refuses these statements. Not verified on this project's machines.
            tracing::debug!(backend = %self.config.name, version = %self.server.version, "influxdb 2+: not creating databases or retention policies");
            return Ok(());
        }
        let db = ident(database);
        self.client.query(&format!("CREATE DATABASE {db}")).await?;
        let existing = self
            .client
            .query_one(&format!("SHOW RETENTION POLICIES ON {db}"))
            .await?;
        // Each policy as (name, duration, shard group duration, default), as the server shows
        // them (Go durations: `2h0m0s`; `0s` for INF).
        let policies: Vec<(String, String, String, bool)> = existing
            .iter()
            .flat_map(|s| {
                let column = |name: &str| s.column(name);
                let (n, d, g, def) = (
                    column("name"),
                    column("duration"),
                    column("shardGroupDuration"),
                    column("default"),
                );
                s.values.iter().filter_map(move |row| {
                    let text = |i: Option<usize>| {
                        i.and_then(|i| row.get(i))
                            .and_then(|v| v.as_str())
                            .map(str::to_owned)
                    };
                    let default = def.and_then(|i| row.get(i)).and_then(|v| v.as_bool());
                    Some((text(n)?, text(d)?, text(g)?, default.unwrap_or(false)))
                })
            })
            .collect();
        let duration = rp_duration(self.config.retention.metric_ttl);
        let shard = shard_duration(self.config.retention.metric_ttl);
        let samples_rp = ident(retention_policy);
        let wanted = (
            go_duration(rp_duration_seconds(self.config.retention.metric_ttl)),
            go_duration(Some(shard_seconds(self.config.retention.metric_ttl))),
        );
        match policies.iter().find(|p| &p.0 == retention_policy) {
            // Already as wanted: no `ALTER`, which needs admin rights and would be a write to
            // the server's metadata on every connect.
            Some((_, d, g, true)) if (d, g) == (&wanted.0, &wanted.1) => {}
            Some(_) => {
                self.client
                    .query(&format!(
                        "ALTER RETENTION POLICY {samples_rp} ON {db} DURATION {duration} SHARD DURATION {shard} DEFAULT"
                    ))
                    .await?;
            }
            None => {
                self.client
                    .query(&format!(
                        "CREATE RETENTION POLICY {samples_rp} ON {db} DURATION {duration} REPLICATION 1 SHARD DURATION {shard} DEFAULT"
                    ))
                    .await?;
            }
        }
        if !policies.iter().any(|p| &p.0 == meta_retention_policy) {
            self.client
                .query(&format!(
                    "CREATE RETENTION POLICY {} ON {db} DURATION INF REPLICATION 1",
                    ident(meta_retention_policy)
                ))
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_policy_durations() {
        assert_eq!(rp_duration(None), "INF");
        // The TTL (at least an hour) plus one shard duration of margin.
        assert_eq!(rp_duration(Some(Duration::from_secs(2))), "7200s");
        assert_eq!(rp_duration(Some(Duration::from_secs(86_400))), "90000s");
        assert_eq!(
            rp_duration(Some(Duration::from_millis(7_200_500))),
            "10801s"
        );
        assert_eq!(
            rp_duration(Some(Duration::from_secs(2 * 86_400))),
            "259200s"
        );
        assert_eq!(shard_duration(Some(Duration::from_secs(2))), "1h");
        assert_eq!(shard_duration(Some(Duration::from_secs(2 * 86_400))), "1d");
        assert_eq!(
            shard_duration(Some(Duration::from_secs(365 * 86_400))),
            "7d"
        );
        assert_eq!(shard_duration(None), "7d");
    }

    #[test]
    fn durations_read_as_the_server_prints_them() {
        assert_eq!(go_duration(None), "0s");
        assert_eq!(go_duration(Some(7_200)), "2h0m0s");
        assert_eq!(go_duration(Some(10_801)), "3h0m1s");
        assert_eq!(go_duration(Some(604_800)), "168h0m0s");
        assert_eq!(go_duration(Some(59 * 60)), "59m0s");
        assert_eq!(go_duration(Some(30)), "30s");
    }
}
