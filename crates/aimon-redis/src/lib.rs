//! # aimon-redis
//!
//! The Redis backend of aimon, on redis-rs 1.8: a standalone server, a Sentinel-managed
//! master, or a Redis Cluster. It follows the shared semantics of `DESIGN.md` and
//! `docs/semantics.md` and answers every call as the reference [`aimon_core::MemoryBackend`]
//! does.
//!
//! ```no_run
//! # async fn demo() -> aimon_core::Result<()> {
//! use aimon_core::{StorageBackend, StorageConfig};
//! let config = StorageConfig::from_url("cache", "redis://:secret@127.0.0.1:6379/0")?
//!     .option("namespace", "fleet_a")
//!     .option("metric_ttl_seconds", 86_400);
//! // A driver becomes a StorageBackend behind the contract layer (the registry does this).
//! let store = aimon_core::Contract::new(aimon_redis::RedisBackend::connect(&config).await?);
//! println!("{:?}", store.stats().await?);
//! # Ok(()) }
//! ```
//!
//! ## URLs
//! | URL | topology |
//! |---|---|
//! | `redis://[user:password@]host[:port][/db]` | one server |
//! | `rediss://[user:password@]host[:port][/db]` | one server over TLS (rustls with the *ring* provider) |
//! | `redis+sentinel://[user:password@]host:port[,host:port…]/MASTER[/db]` | the master the Sentinels call `MASTER` (the credentials are the data nodes') |
//! | `redis+cluster://[user:password@]host:port[,host:port…]` | a Redis Cluster, from any seed nodes |
//!
//! URL query parameters are refused: settings are options. Credentials never appear in logs,
//! errors or `Debug` output ([`aimon_core::redact_url`]).
//!
//! ## Options
//! | option | meaning | default |
//! |---|---|---|
//! | `namespace` | key prefix: 1–64 bytes of `[A-Za-z0-9_.-]` | `aimon` |
//! | `max_connections` | multiplexed, reconnecting connections used round-robin | 4 |
//! | `connect_timeout_ms` | opening a connection | 5000 |
//! | `response_timeout_ms` | one command or pipeline (redis-rs alone gives up after 500 ms) | 30000 |
//! | `wait_replicas`, `wait_timeout_ms` | after each write, `WAIT` for that many replicas (0: no `WAIT`) | 0, 1000 |
//! | `min_durability` | `none`, `aof` or `fsync`: refuse (`ConfigInvalid`) to connect to a server whose persistence is weaker (`CONFIG GET appendonly`/`appendfsync`; see "Durability") | `none` |
//! | `tls_ca_file` | `rediss://` only: PEM file of the CA to trust instead of the system's roots | system roots |
//! | `tls_cert_file`, `tls_key_file` | `rediss://` only: a client certificate and its key (PEM), together | none |
//! | `metric_ttl_seconds`, `alert_ttl_seconds`, `agent_state_ttl_seconds` | retention (DESIGN.md rule 6) | keep forever |
//!
//! Any other option is a `ConfigInvalid` error that names it.
//!
//! ## Connections
//! Standalone and Sentinel use redis-rs `ConnectionManager`s, which reconnect by themselves
//! after a dropped connection: the call that saw the drop fails with a retryable
//! `Unavailable`, the next one works. On Sentinel a connection failure or a `READONLY` reply
//! makes the backend ask the Sentinels for the master again (redis-rs does not follow a
//! failover) and reconnect there. A Cluster uses redis-rs's async cluster connection, which
//! follows `MOVED`/`ASK` and slot changes.
//!
//! ## Key layout
//! `NS` is the namespace; user text (ids, names, statuses, sources, tag keys and values) is
//! percent-encoded in key names (every byte outside `[A-Za-z0-9._/-]` becomes `%XX`), so glob
//! characters, braces, `:`, spaces and newlines can never change which keys a call touches,
//! and no two ids share a key. No query uses `KEYS` or `SCAN`: every read starts from an index.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{NS|id}:t` | hash | the series' tag sets (`#` + 16 hex digits of the xxh3 hash of the tags JSON → the JSON) and its chunk state: seal generation `g`, oldest and newest chunk windows `f` and `m`, seal threshold `x` |
//! | `{NS|id}:h` | list | the head: one element per written batch, binary segments (tag-set hash, count, timestamps, values) |
//! | `{NS|id}:w` | sorted set | the windows with samples in the head, scored by how many |
//! | `{NS|id}:c` | hash | `window:tagset` → the chunk (aimon's pcodec chunk format, `aimon_core::chunk`) |
//! | `{NS|id}:s` | hash | `window:tagset` → the chunk's 77-byte summary (count, compensated sum, min, max, first, last, CRC-32) |
//! | `{NS}:m:meta:id` | hash | series metadata JSON (`j`), first `created_at` (`c`), `updated_at` (`u`), latest sample (`l`), its index keys (`x`) |
//! | `{NS}:a:item:id` | hash | alert JSON (`j`) and its index keys (`x`) |
//! | `{NS}:s:item:agent_id` | hash | latest agent state JSON (`j`), heartbeat (`h`), index keys (`x`) |
//! | `{NS}:m:idx`, `{NS}:a:idx`, `{NS}:s:idx` | sorted sets | every series / alert / agent, scored by the instant it expires (`+inf` without TTL) |
//! | `{NS}:m:name:…`, `{NS}:m:type:…`, `{NS}:a:status:…`, `{NS}:a:sev:N`, `{NS}:a:source:…`, `{NS}:a:label:k:v`, `{NS}:s:status:…` | sorted sets | secondary indexes, scored the same way |
//! | `{NS}:m:tag:k:v` | sorted sets | series with a sample tagged `k=v`, scored by when the last such sample expires (`ZADD GT`); a metric query with tag filters reads only the series in all of its tag indexes |
//! | `{NS}:idx` | set | the names of the secondary index keys (so retention finds them without scanning) |
//! | `{NS}:layout` | string | `2` once every series is in the chunk layout (see "Samples") |
//! | channel `{NS}:events` | pub/sub | write events (JSON [`aimon_core::StorageEvent`]) |
//!
//! Why: the samples, by far the bulk of the data, live in one slot **per series** (`{NS|id}`),
//! so a Cluster spreads them over its masters; a series' five sample keys share that slot, so
//! every sample script is atomic there.
//! Everything small (series metadata, alerts, agent
//! states, indexes) lives in the **namespace slot** (`{NS}`), so an item and all its index
//! entries change in one atomic script, also on a Cluster. Index scores are expiry instants, so "live entries" is the range
//! `[now, +inf]` and expired entries are one `ZREMRANGEBYSCORE` away.
//!
//! ## Samples
//! Samples are stored as **chunks**: the samples of one series under one tag set within one
//! epoch-aligned **hour**, encoded by core's chunk codec (pcodec; `aimon_core::chunk`), with
//! a 77-byte summary next to it that answers `metric_history` without decoding.
//!
//! - **A write appends.** Per series, one `EVALSHA` of the append script `RPUSH`es the batch
//!   to the head list as one element of binary segments (per tag set: its hash, the count, the
//!   timestamps, the values: 16 bytes a sample), adds the tag sets new to the series to `:t`,
//!   and counts the batch's samples per window in `:w`. No per-sample Lua, no per-sample
//!   command: the server's cost of a sample is copying 16 bytes.
//! - **Sealing.** The script answers 1 when the head holds more than one window, or its one
//!   window passed the threshold `x` (4,096 samples, then the size of the newest chunk, so a
//!   dense window re-encodes O(log n) times). The client then reads the head and the
//!   generation `g` atomically (a script), merges each closed window into its chunk (the
//!   head's samples overwrite the chunk's at equal timestamps), and commits with the seal
//!   script: only if `g` is unchanged does it replace the chunks and summaries, trim the
//!   consumed head elements (`LTRIM`), push back what stays (the newest window) in front, and
//!   bump `g`. Another writer's seal in between makes the commit a no-op, and the next write
//!   seals again. A sample is therefore always in exactly one place a reader merges: the head
//!   or a chunk, never neither.
//! - **Tag sets** are interned per series by the 64-bit xxh3 hash of their canonical JSON.
//!   The append script checks each hash it registers: a second tag set with the same hash in
//!   the same series (a chance of about 1 in 10¹⁵ for a series with 200 tag sets) fails the
//!   write with an error instead of mixing two tag sets. Once a process has checked a
//!   series' tag sets, its later batches with only those and no TTL skip the script: plain
//!   `RPUSH`, `ZINCRBY`, `HSETNX` (which restores a tag set lost with a deleted series),
//!   `ZRANGE` and `HGET x` for the seal decision.
//! - The series metadata with its indexes is written by the series script, also per series
//!   in the same pipeline, which `PUBLISH`es the write's event after the samples. Once this
//!   process has written a series through it, later batches with the same name, type and tag
//!   pairs and no TTL, whose indexes the script would leave as they are, send a plain
//!   `HSET` of the metadata and the `PUBLISH`; if that `HSET` finds the series gone (removed
//!   by another process's retention), the script runs after all and restores its indexes.
//!   What a process has checked this way is forgotten every five seconds, so a change made by
//!   another process (a rename) is honoured within that time.
//!
//! A batch is **one pipelined round trip** (per node on a Cluster), wrapped in `MULTI`/`EXEC`
//! on a standalone or Sentinel master so it applies whole; seals follow, up to eight series at a
//! time, for the series whose append asked for one. A retried batch appends its samples again; a
//! reader (and the next seal) keeps the last write of each (timestamp, tags), so a retry
//! never shows as a duplicate.
//!
//! **Memory.** A sealed sample costs its share of the chunk (about 3.4 bytes a sample for the
//! demo's agents, where a chunk holds 360 samples) plus the chunk's two hash entries (field,
//! 77-byte summary, chunk string header: about 200 bytes a chunk, 0.6 byte a sample). The
//! head holds at most the newest hour of each series at 16 bytes a sample plus 12 bytes a
//! segment. Measured figures are under "Performance".
//!
//! **Migration.** `connect` moves series from the layout before chunks (a sorted set of
//! members and a hash of values per series) into chunks, one series at a time, deleting the
//! old keys of each once its chunks are committed, then sets `{NS}:layout`. A migration cut
//! midway is redone for the series left by the next `connect`; a native backup of an older
//! release is migrated the same way when restored.
//!
//! ## Durability
//! aimon cannot set a server's persistence; what an acknowledged write survives is the
//! server's `appendonly` / `appendfsync`. With `appendonly no` (and RDB snapshots at most),
//! writes since the last snapshot are lost when the server dies. With `appendonly yes` every
//! write is appended to the AOF before Redis replies, so an acknowledged write survives the
//! server process being killed (`faults_redis.rs` kills a server started with it mid-batch and
//! checks every acknowledged batch after the restart); `appendfsync everysec` (Redis's default)
//! may still lose about a second of writes to an OS crash or power loss, `appendfsync always`
//! loses none, at one fsync per write on the server. `min_durability = "aof"` or `"fsync"` makes
//! `connect` check the server's settings and refuse a weaker server; where `CONFIG` is
//! disabled (some managed services) such a check fails rather than pass unverified.
//!
//! ## Retention
//! Keys get `PEXPIREAT` at the moment their data becomes stale (a series' sample keys
//! `metric_ttl` after its latest sample; series metadata `metric_ttl` after the later of
//! `updated_at` and its latest sample; alerts after `updated_at`; agent states after the
//! heartbeat). Within a live series, retention drops **whole chunks**: a chunk whose window
//! ended before the cutoff is deleted (data and summary) by the next write to the series and
//! by `apply_retention`, which reports the samples it held. Every read filters by the exact
//! cutoff inside a chunk, so expired data is never returned. Index entries pointing at expired data are removed lazily by the reads that use
//! the index, and by `apply_retention` (which also drops empty index keys), so indexes never
//! grow without bound ([`RedisBackend::orphan_index_members`] counts what is left; the tests
//! assert zero after `apply_retention`). The capability is
//! [`aimon_core::RetentionMechanism::KeyExpiry`]: `apply_retention` reports what Redis had not
//! already expired by itself.
//!
//! ## Queries and history
//! Candidates come from the most selective index (`name`, `type`, `status`, `severity`,
//! `source`, a label, or the id index), then items are fetched in pipelines and filtered and
//! ordered exactly as core's [`aimon_core::filter`] says. The samples of a series are read by
//! one script per series (pipelined, 64 series a round trip) that returns the tag sets, the
//! head and the chunks whose window meets the range; the client decodes and merges them.
//!
//! `metric_history` decides **next to the data** which chunks it needs: the load script,
//! given the step, leaves out the data of every chunk whose window lies in the range and in
//! one bucket and has no head sample, and returns only its summary; the client checks the
//! summary (CRC-32, and that its first and last timestamps are in one bucket and in range)
//! and merges it with core's [`aimon_core::downsample::Downsampler::merge`], and decodes only
//! the chunks a bucket boundary or the range splits (with core's `chunk::fold_buckets`, so
//! every store aggregates alike). The alternative, shipping every chunk and deciding in the
//! client, is what the script does with buckets narrower than a window; both are measured
//! under "Performance". A damaged chunk, summary or head element is `Corrupted`, naming the
//! series and the window.
//!
//! **RedisTimeSeries is detected, not used.** [`RedisBackend::timeseries_module_loaded`] asks
//! `TS.INFO` and stats report it (`extra.redistimeseries`), but history stays on the Lua
//! script even where the module is loaded, for three reasons: a `TS.*` key holds one value
//! per timestamp, while an aimon sample is keyed by (timestamp, tags), so the module would need
//! one key per tag set and a second copy of every sample; `TS.MRANGE`
//! aggregates each key apart and cannot give the exact cross-series `first`/`last` order and
//! compensated sums the conformance suite pins; and on a Cluster `TS.MRANGE` only sees its own
//! shard. No Debian package ships the module, so a `TS.*` path could not be verified here
//! either; the chunk path is verified on all three topologies.
//!
//! ## Backups
//! `BackupFormat::Portable` is aimon's archive. `BackupFormat::Native` writes a directory with
//! `namespace.dump` — every key of the namespace as `DUMP` (Redis's own serialization) with
//! its TTL — and, on standalone and Sentinel, `server.rdb`, an RDB snapshot of the whole server
//! taken with `BGSAVE` / `LASTSAVE` and streamed over the replication protocol as
//! `redis-cli --rdb` does ([`RedisBackend::server_snapshot`]). Restoring a native backup
//! `RESTORE`s `namespace.dump` into a temporary namespace and merges from there by the write
//! rules (so it merges into a non-empty namespace and applies retention); `server.rdb` is for
//! restoring a whole server by hand (place it as the server's `dump.rdb`).
//!
//! ## Stats
//! Counts come from the id indexes (`ZCOUNT` of live entries, `ZCOUNT` of each series' live
//! samples). `size_bytes` is the memory of **this namespace's keys**, not the server's
//! `used_memory` (which `extra` still shows, with other namespaces and Redis's own overhead
//! in it): every key of the namespace is listed through its indexes — the same list a native
//! backup dumps, so no `SCAN` of the server's keyspace is needed — and `MEMORY USAGE key
//! SAMPLES 0` is summed over them, pipelined 500 keys a round trip, each command sent to the
//! master that owns the key's slot (every master holding part of the namespace on a Cluster,
//! the current master on Sentinel). `SAMPLES 0` makes Redis walk every element of every key
//! instead of estimating from five, so the figure is exact, and the cost is the server's:
//! one pass over every sample and index entry of the namespace, on top of the counting
//! `stats` already does (after `aimon demo`, 1,036,800 samples in 587 keys: 237 ms of server
//! time for the `MEMORY USAGE` calls by `INFO commandstats`, 0.28 s for the whole `aimon
//! stats`, Redis 7.0.15). Call `stats` for a report, not in a loop. Where `MEMORY` is refused (an ACL, a managed
//! service), `size_bytes` is `None` and `extra.size_bytes_unknown` says why.
//!
//! ## Performance
//! Measured on a 2-core machine against a local Redis 7.0.15, release build, while another
//! build ran (the ratios, measured in the same run, are what to compare):
//!
//! - **Memory**: the default demo (`aimon --storage redis://… demo`: 1,036,800 samples in 120
//!   series, 24 h at 10 s) takes **4.78 – 5.20 bytes per sample** of `MEMORY USAGE` over the
//!   namespace's keys, alerts and agent states included (the layout before chunks: 388.8).
//!   The chunks hold about 3.4 bytes a sample, their summaries and hash entries about 0.6, and
//!   the head, the newest half hour of each series on average, about 0.3.
//! - **Ingest**: `aimon bench --storage redis://… --samples 1000000 --batch 5000
//!   --compare-redis-benchmark` wrote 732,400 – 739,100 samples/s, **2.93× – 2.95×** the
//!   baseline's rate (`redis-benchmark -P 64 -n 1000000 -r 1000000 -q ZADD …`, 248,000 –
//!   252,100 requests/s); at `--batch 1000`, 273,600 – 328,600 samples/s, **1.32× – 1.39×**.
//!   The baseline stays the per-sample `ZADD` of the layout before chunks: the chunk layout has
//!   no per-sample command, and its per-batch writes (`RPUSH` of a segment, `ZINCRBY`,
//!   `HSETNX`, `HSET` of the metadata, `PUBLISH`) are not one command `redis-benchmark` can
//!   repeat; a bare `RPUSH` of a 10-sample segment runs at 1.1 million requests/s, which
//!   measures a list append, not a batch. Before the plain paths above, the two scripts a
//!   series ran per batch held batches of 1,000 to 0.64×.
//! - **History**: `metric_history`, 60 buckets over those 1M samples (one-minute buckets, so
//!   every chunk is split and decoded), **29 – 52 ms** p50 over seven runs (before chunks: 1.7 s,
//!   a Lua script per series). `examples/history_plans.rs` on the demo's `llm.prompt_tokens`
//!   (20 series): with hour-long buckets over a day, the summaries answer in 2.9 ms where
//!   shipping and decoding every chunk takes 13.7 ms; with three-minute buckets (every chunk
//!   split) both take 3.3 – 3.4 ms.
//! - `query_metrics` of one series by name, range and tags: 13 – 20 ms p50 (was 30 – 32).
//!
//! ## Verified topologies
//! The conformance suite of `integration-tests` runs against a standalone server
//! (`tests/redis.rs`), a 3-master Cluster (`tests/redis_cluster.rs`) and a master + replica +
//! Sentinel set (`tests/redis_sentinel.rs`), each started by the fixtures from `redis-server`
//! on free ports when no `AIMON_TEST_REDIS*_URL` is set.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod agent_states;
mod alerts;
pub mod backend;
mod backup;
mod chunks;
pub mod config;
mod conn;
mod error;
mod events;
mod keys;
mod metrics;
mod retention;
mod scripts;
mod stats;

pub use backend::RedisBackend;
pub use backup::{NAMESPACE_DUMP, SERVER_RDB};
pub use config::{MinDurability, RedisConfig, Topology};
pub use keys::namespace_key;
pub use metrics::HistoryPlan;

/// What the registry needs to know of the Redis driver: standalone, Sentinel and Cluster.
pub const DRIVER: aimon_core::Descriptor = aimon_core::Descriptor {
    types: &[aimon_core::StorageBackendType::Redis],
    schemes: &["redis", "rediss", "redis+sentinel", "redis+cluster"],
    feature: "redis",
    open: |config| aimon_core::driver::boxed(RedisBackend::connect(config)),
};
