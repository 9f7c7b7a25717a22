//! Command-line arguments.

use std::path::PathBuf;

use chrono::TimeDelta;
use clap::{Args, Parser, Subcommand};

use aimon::{AlertSeverity, AlertStatus, MetricType, QueryFilter, SortOrder};

use aimon::parse;

/// Store, query, chart and benchmark the monitoring data of AI-agent fleets.
#[derive(Debug, Parser)]
#[command(name = "aimon", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Storage URL (memory://, sqlite://./aimon.db, …); overrides the config file.
    #[arg(long, global = true, env = "AIMON_STORAGE", value_name = "URL")]
    pub storage: Option<String>,

    /// Config file with `[[storage]]` backends and `[routes]`.
    #[arg(long, global = true, env = "AIMON_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The named backend (from the config file) to use for this command.
    #[arg(long, global = true, value_name = "NAME")]
    pub backend: Option<String>,

    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    /// No progress bars.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Simulate a fleet of AI agents into the store, then show what it looks like.
    Demo(DemoArgs),
    /// Query metrics, alerts or agent states.
    #[command(subcommand)]
    Query(QueryCommand),
    /// Downsampled history of a metric (table and chart).
    History(HistoryArgs),
    /// Database statistics of the configured backends.
    Stats,
    /// Back the store up into PATH (a portable archive directory unless --native).
    Backup(TransferArgs),
    /// Restore a backup from PATH, merging into the store.
    Restore(TransferArgs),
    /// Copy everything from one backend to another through the portable archive.
    Migrate(MigrateArgs),
    /// Retention (TTL) maintenance.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Measure ingest and query throughput of a store.
    ///
    /// Without --storage, AIMON_STORAGE or --config the bench writes into a fresh SQLite file in a
    /// temporary directory, removed afterwards: it never touches the default ./aimon.db.
    ///
    /// A store given explicitly keeps the samples. They belong to the metric aimon.bench.value,
    /// in series bench-RUN/sNNNN, tagged run=RUN; the report prints the run id (also `run`
    /// in --json) so they can be found (aimon query metrics --name aimon.bench.value --tag
    /// run=RUN) and deleted (SQLite: the report prints the statements, over chunks,
    /// series_tagsets and series).
    ///
    /// With --codecs it compares chunk codecs on generated samples instead, and opens no store.
    Bench(BenchArgs),
    /// Serve the store over HTTP: a JSON API, OTLP and Prometheus remote-write ingest, live
    /// events and the server's own metrics (docs/server.md).
    ///
    /// Tokens come from the server section of the config file or AIMON_TOKENS
    /// (NAME:SCOPES:SECRET,…, scopes read, write, admin); without any, the server listens
    /// only on a loopback address and every route is open.
    Serve(ServeArgs),
    /// List the backend types and whether this build has them.
    Backends,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8428, or the config file's server listen).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,

    /// Bearer tokens, NAME:SCOPES:SECRET separated by commas (ci:read+write:s3cret); added to
    /// the config file's. Read from the environment only, so no secret shows in `ps`.
    #[arg(skip = std::env::var("AIMON_TOKENS").ok())]
    pub tokens: Option<String>,

    /// TLS certificate chain (PEM); with --tls-key, serve HTTPS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// An origin allowed to call the API from a browser (CORS); repeatable. CORS is off
    /// without one.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,

    /// Seconds to let requests in flight finish after SIGINT or SIGTERM.
    #[arg(long, default_value_t = 10)]
    pub grace_seconds: u64,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of simulated agents.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub agents: u32,

    /// Hours of history to simulate; the window ends now.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u32).range(1..=24 * 366))]
    pub hours: u32,

    /// Time between two simulated samples of an agent.
    #[arg(long, default_value = "10s", value_parser = parse::positive_duration)]
    pub interval: TimeDelta,

    /// Seed of the random generator: the same seed simulates the same fleet.
    #[arg(long, default_value_t = 3)]
    pub seed: u64,

    /// Id of this run: tagged `run=ID` on every sample, labelled on every alert, part of alert
    /// ids and kept in agent-state metadata, so the summary reads back only this run even from
    /// a store that holds earlier ones. Must be new in the store; defaults to the start time in
    /// milliseconds since the epoch.
    #[arg(long, value_name = "ID", value_parser = parse::run_id)]
    pub run: Option<String>,

    /// End of the simulated window: `now`, a duration ago or RFC 3339; rounded down to a
    /// multiple of --interval.
    #[arg(long, default_value = "now", value_name = "WHEN", value_parser = parse::time_spec)]
    pub end: String,

    /// Samples per write batch (rounded to whole ticks of the fleet).
    #[arg(long, default_value_t = 8_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batch_size: u64,
}

#[derive(Debug, Args, Clone)]
pub struct PageArgs {
    /// Maximum number of items.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub limit: u64,

    /// Items to skip.
    #[arg(long, default_value_t = 0)]
    pub offset: u64,

    /// Order: FIELD or FIELD:desc.
    #[arg(long, value_name = "FIELD[:desc]", value_parser = parse::sort)]
    pub sort: Option<(String, SortOrder)>,

    /// A filter 'FIELD OP VALUE' (OP: eq ne gt gte lt lte in not_in contains, or = != > >= < <=); repeatable.
    #[arg(long, value_name = "'FIELD OP VALUE'", value_parser = parse::filter)]
    pub filter: Vec<QueryFilter>,
}

#[derive(Debug, Args, Clone)]
pub struct RangeArgs {
    /// Start of the range: a duration ago (6h), `now` or RFC 3339.
    #[arg(long, value_name = "WHEN", value_parser = parse::time_spec)]
    pub since: Option<String>,

    /// End of the range (exclusive): a duration ago, `now` or RFC 3339.
    #[arg(long, value_name = "WHEN", value_parser = parse::time_spec)]
    pub until: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum QueryCommand {
    /// Series and their samples.
    Metrics(MetricsQueryArgs),
    /// Alerts.
    Alerts(AlertsQueryArgs),
    /// The latest state of each agent.
    Agents(AgentsQueryArgs),
}

#[derive(Debug, Args)]
pub struct MetricsQueryArgs {
    /// Metric name.
    #[arg(long)]
    pub name: Option<String>,

    /// Metric type (gauge, counter, histogram, summary, cpu, memory, disk, network, custom).
    #[arg(long = "type", value_name = "TYPE", value_parser = parse_enum::<MetricType>)]
    pub metric_type: Option<MetricType>,

    #[command(flatten)]
    pub range: RangeArgs,

    /// Only samples with this tag, KEY=VALUE; repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse::key_value)]
    pub tag: Vec<(String, String)>,

    #[command(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Args)]
pub struct AlertsQueryArgs {
    /// active, acknowledged, resolved or suppressed.
    #[arg(long, value_parser = parse_enum::<AlertStatus>)]
    pub status: Option<AlertStatus>,

    /// Exactly this severity (info, low, medium, high, critical).
    #[arg(long, value_parser = parse_enum::<AlertSeverity>)]
    pub severity: Option<AlertSeverity>,

    /// This severity or higher.
    #[arg(long, value_parser = parse_enum::<AlertSeverity>)]
    pub min_severity: Option<AlertSeverity>,

    /// The alert's source (the agent in the demo).
    #[arg(long)]
    pub source: Option<String>,

    #[command(flatten)]
    pub range: RangeArgs,

    /// Only alerts with this label, KEY=VALUE; repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse::key_value)]
    pub label: Vec<(String, String)>,

    #[command(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Args)]
pub struct AgentsQueryArgs {
    /// Only agents in this status (running, idle, degraded, failed, recovering, …).
    #[arg(long)]
    pub status: Option<String>,

    /// Only agents whose last heartbeat is at or after this time (a duration ago or RFC 3339).
    #[arg(long, value_name = "WHEN", value_parser = parse::time_spec)]
    pub since: Option<String>,

    #[command(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Metric name, e.g. llm.latency_ms.
    pub name: String,

    /// Start of the window: a duration ago, `now` or RFC 3339.
    #[arg(long, default_value = "6h", value_parser = parse::time_spec)]
    pub since: String,

    /// End of the window (exclusive); defaults to now.
    #[arg(long, value_parser = parse::time_spec)]
    pub until: Option<String>,

    /// Bucket width.
    #[arg(long, default_value = "5m", value_parser = parse::positive_duration)]
    pub step: TimeDelta,

    /// avg, sum, min, max, count, first or last.
    #[arg(long, default_value = "avg", value_parser = parse_enum::<aimon::Aggregation>)]
    pub agg: aimon::Aggregation,

    /// One series per value of this tag.
    #[arg(long, value_name = "TAG")]
    pub group_by: Option<String>,

    /// Only samples with this tag, KEY=VALUE; repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse::key_value)]
    pub tag: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct TransferArgs {
    /// Archive directory (portable) or file (native).
    pub path: PathBuf,

    /// Use the store's own backup format (SQLite VACUUM INTO, …) instead of the portable archive.
    #[arg(long)]
    pub native: bool,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Source storage URL.
    #[arg(long, value_name = "URL")]
    pub from: String,

    /// Target storage URL.
    #[arg(long, value_name = "URL")]
    pub to: String,
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Physically remove expired data now.
    Apply,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Samples to write.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub samples: u64,

    /// Samples per save_metrics call.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batch: u64,

    /// Number of series the samples are spread over.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub series: u64,

    /// Iterations of each query in the query phase.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub queries: u64,

    /// Also load the same samples with the `sqlite3` shell (CSV, `.import`, one transaction)
    /// into a fresh database with the same schema, and report aimon's rate as a ratio of it.
    /// SQLite stores only.
    #[arg(long)]
    pub compare_sqlite3: bool,

    /// Also time a hand-written `SELECT ts - ts % step, avg(value), count(*) … GROUP BY 1` over
    /// the same samples kept as plain rows `(series_id, ts, value)` in a scratch table of the
    /// store's own file (dropped afterwards), next to each `metric_history`, and report
    /// aimon's p50 as a ratio of it. SQLite file stores only.
    #[arg(long)]
    pub compare_sql: bool,

    /// Also run `redis-benchmark -P 64 -n SAMPLES -r SAMPLES -q ZADD KEY __rand_int__
    /// __rand_int__` (the one command aimon's layout needs per sample) against the same server,
    /// on a key of the store's namespace that is deleted afterwards, and report aimon's rate as
    /// a ratio of it. redis:// stores only; a password goes to redis-benchmark only through
    /// REDISCLI_AUTH, never on its command line.
    #[arg(long, conflicts_with_all = ["compare_sqlite3", "compare_psql"])]
    pub compare_redis_benchmark: bool,

    /// Also load the same samples with `psql -c "\copy … FROM file"` (CSV) into a fresh schema
    /// of the same server with aimon's schema (the same partitioned table and indexes), and
    /// report aimon's rate as a ratio of it. PostgreSQL stores given with --storage only.
    #[arg(long)]
    pub compare_psql: bool,

    /// Also post the same line-protocol batches (the lines `save_metrics` writes, gzip, the
    /// same batch size) with `curl` to `/write` of the same server, into a fresh database with
    /// the same retention policies that is dropped afterwards, in six rounds taking turns with
    /// aimon's writes, and report aimon's rate as a ratio of curl's. influxdb:// (v1) stores
    /// given with --storage only; credentials reach curl through a private config file, never
    /// its command line.
    #[arg(long, conflicts_with_all = ["compare_sqlite3", "compare_psql", "compare_redis_benchmark"])]
    pub compare_curl: bool,

    /// Similarity mode instead of samples: upsert this many generated alerts (in batches of
    /// --batch), then run --queries `find_similar_alerts` text queries (limit 10, filtered to
    /// this run) and report upserts/s and query latency (p50, p95, p99). Needs a store with the
    /// similarity_search capability.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000),
          conflicts_with_all = ["compare_sqlite3", "compare_psql", "compare_redis_benchmark", "compare_curl"])]
    pub similarity: Option<u64>,

    /// Codec mode instead of a store: encode the demo's samples (seed 3, 20 agents, 24 h at
    /// 10 s) and five value shapes (integers, fixed decimals, constant runs, full-precision
    /// noise, a counter) in chunks of 360, 2,000 and 10,000 samples with aimon's chunk codec
    /// (pcodec) and with a Gorilla-style XOR codec, and report bytes per sample and encode and
    /// decode speed. Opens no store; the other options do not apply.
    #[arg(long, conflicts_with_all = ["compare_sqlite3", "compare_psql", "compare_redis_benchmark", "compare_curl", "similarity"])]
    pub codecs: bool,

    /// Server mode: start `aimon serve` in front of the store (127.0.0.1, a free port) and
    /// compare its ingest with `save_metrics` called directly on the same store, each by
    /// --clients concurrent writers of --batch samples: through the JSON API and OTLP
    /// (protobuf); then 1,000 concurrent clients of 10 samples each (latency, and requests
    /// against backend batches). With --soak-seconds, a steady load with an event-stream client
    /// attached instead (resident memory at the start, at most and at the end).
    #[arg(long, conflicts_with_all = ["compare_sqlite3", "compare_psql", "compare_redis_benchmark", "compare_curl", "similarity", "codecs"])]
    pub serve: bool,

    /// Concurrent writers in --serve mode.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1_000))]
    pub clients: u64,

    /// --serve mode: instead of the ingest phases, a steady load of this many seconds (5,000
    /// samples a second) with an event-stream client attached, reporting resident memory.
    #[arg(long, default_value_t = 0)]
    pub soak_seconds: u64,
}

fn parse_enum<T: std::str::FromStr<Err = aimon::Error>>(s: &str) -> Result<T, String> {
    s.parse::<T>().map_err(|e| e.message().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from([
            "aimon",
            "history",
            "llm.latency_ms",
            "--json",
            "--storage",
            "memory://",
            "--step",
            "30m",
        ])
        .unwrap();
        assert!(cli.global.json);
        assert_eq!(cli.global.storage.as_deref(), Some("memory://"));
        let Command::History(h) = cli.command else {
            panic!("not history")
        };
        assert_eq!(h.step, TimeDelta::minutes(30));
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            vec!["aimon", "history", "x", "--step", "0s"],
            vec!["aimon", "history", "x", "--since", "banana"],
            vec!["aimon", "query", "metrics", "--tag", "novalue"],
            vec!["aimon", "query", "alerts", "--severity", "loud"],
            vec!["aimon", "demo", "--agents", "0"],
            vec!["aimon", "demo", "--run", ""],
            vec!["aimon", "demo", "--run", "a b"],
        ] {
            assert!(Cli::try_parse_from(&args).is_err(), "{args:?}");
        }
    }
}
