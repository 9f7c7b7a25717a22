//! # aimon-qdrant
//!
//! The Qdrant backend of aimon, in two modes behind one [`QdrantBackend`]:
//!
//! | mode | URL | feature | verified |
//! |---|---|---|---|
//! | embedded engine (`qdrant-edge` =0.7.2, in-process, no server) | `qdrant-edge:///path` | `qdrant-edge` | the whole conformance suite and the similarity checks, in CI (`integration-tests/tests/qdrant_edge.rs`) |
//! | server (`qdrant-client` 1.20, gRPC; REST for snapshots) | `qdrant://host:6334[?tls=true][&api_key=…][&rest_port=6333][&shard_number=…][&replication_factor=…][&write_consistency_factor=…][&on_disk_payload=…]` | `qdrant` (default) | compiles; request building (collections, indexes, filters, ids, chunking, snapshot manifests and REST URLs) is unit-tested here; the suites run against a server only where `AIMON_TEST_QDRANT_URL` is set or the test fixtures can start a `qdrant` binary or the pinned `qdrant/qdrant` container |
//!
//! ```no_run
//! # async fn demo() -> aimon_core::Result<()> {
//! use aimon_core::{SimilarAlertsQuery, StorageBackend, StorageConfig};
//! let config = StorageConfig::from_url("local", "qdrant-edge:///var/lib/aimon/qdrant")?
//!     .option("alert_ttl_seconds", 7 * 86_400);
//! // A driver becomes a StorageBackend behind the contract layer (the registry does this).
//! let store = aimon_core::Contract::new(aimon_qdrant::QdrantBackend::connect(&config).await?);
//! let similar = store
//!     .find_similar_alerts(&SimilarAlertsQuery::text("GPU out of memory").limit(5))
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! ## Layout
//! One collection per data kind: `series` (one point per series, its metadata), `samples` (one
//! point per sample), `alerts`, `agent_states` (the latest state per agent). Embedded, each is
//! an `EdgeShard` directory under the URL's path (`<path>/alerts`, …); on a server, each is the
//! collection `<collection_prefix>_<kind>` (option `collection_prefix`, default `aimon`). Alerts
//! and agent states carry the embedder's vector (unit length, dot product = cosine; an item
//! whose own embedding has another dimension is stored with zeros and never ranks); series and
//! samples carry a constant 1-dimensional vector. Every filtered payload field has a payload
//! index; the payload layout is in [`payload`].
//!
//! ## On a cluster
//! `shard_number`, `replication_factor`, `write_consistency_factor` and `on_disk_payload`
//! (URL parameters or options, checked when the configuration is parsed: counts at least 1,
//! `write_consistency_factor` at most `replication_factor`) are applied when aimon creates its
//! collections; an existing collection keeps its layout, with a warning when it differs.
//! `stats` reports each collection's real layout (from Qdrant 1.19 also `payload_memory`).
//! What each option costs is in [`config`](config#collection-options-a-qdrant-cluster). A
//! write that fewer replicas than `write_consistency_factor` applied fails with a retryable
//! `Unavailable` (Qdrant answers it with gRPC `Internal`; the server module recognises its
//! messages); the replicas that did apply it keep it, so retrying the batch completes it as an
//! overwrite.
//!
//! ## Ids
//! Qdrant accepts only integers and UUIDs as point ids: a point's id is the UUIDv5 of its kind
//! and key under the fixed namespace [`ids::AIMON_NAMESPACE`] (`alert\0<id>`,
//! `agent_state\0<agent_id>`, `series\0<id>`, and for a sample its series, timestamp in µs
//! and canonical tags), and the original key is kept in the payload. Any valid aimon id works;
//! re-saving an item overwrites its point.
//!
//! ## Queries and filters
//! The mapping from aimon queries to Qdrant filters is written once ([`filter`]) as a small IR
//! with a converter per mode. Labels and tags are filtered through `label_kv` / `tag_kv`
//! keyword arrays of escaped `key=value` strings, so keys with `.`, `[` or `"` (which Qdrant
//! would read as JSON-path syntax) filter exactly. The filter selects candidates; every
//! candidate is then checked with the core's predicates and paged with the core's sort, so
//! answers are exactly the reference backend's. `metric_history` uses the core's client-side
//! downsampler.
//!
//! ## Similarity
//! `find_similar_alerts` / `find_similar_agent_states` are native filtered vector searches with
//! `exact: true` (no HNSW approximation, which could change the ranking), re-ranked by the core
//! `Ranker` so scores, ties (by id) and the exclusion of a target item are identical to memory
//! and SQLite; see [`rank`].
//!
//! ## Durability and concurrency (embedded)
//! The engine is synchronous: every call runs on tokio's blocking pool. `EdgeShard::load` does
//! not replay its WAL, so every write batch is flushed before it returns; one writer lock per
//! shard keeps `flush()` from racing an update (it would panic). A directory is opened by one
//! backend at a time: a second open fails with `Unavailable`.
//!
//! ## Retention, backup, events
//! Qdrant has no TTL: reads hide expired data, `apply_retention` sweeps it (scroll the
//! candidates, check each, delete by id). `stats` counts live items with the engine's
//! filtered counts (`time field >= cutoff`), reading only the series whose metadata expired, to
//! ask each for one live sample: nothing proportional to the samples is held in memory.
//! `BackupFormat::Portable` is aimon's archive, read
//! page by page in Qdrant's own point-id order (a keyset page by id would scan the whole
//! collection: Qdrant cannot filter strings by range);
//! embedded, `BackupFormat::Native` flushes every shard under its writer lock and copies
//! the directories (sparse-aware: the engine preallocates 64 MiB of WAL per shard) with a
//! manifest, and a native restore reads a scratch copy and merges it with the write rules.
//! On a server, `BackupFormat::Native` is one collection snapshot per kind, made over gRPC,
//! downloaded from the REST port (`rest_port`, default 6333) and checked against the server's
//! SHA-256, with a manifest; a native restore uploads each snapshot into a scratch collection,
//! reads it back, drops it and merges the points with the same rules (the live collections
//! are never replaced; scratch collections a killed restore left are dropped by a later one
//! after a day). The server snapshots one collection after another (samples, then series), not
//! at one instant: samples whose series went between two snapshots are left out of a restore
//! with a warning. Making and uploading a snapshot may take `snapshot_timeout_ms` (default one
//! hour), not the per-request `timeout_ms`. See [`snapshot`]. The two modes' native backups are not
//! interchangeable: move data between them with a portable backup. Qdrant has no change feed: `subscribe` delivers the events of this process's
//! writes (`cross_process_events` is false), as the InfluxDB backend does.
//!
//! ## Stats
//! On a server, `stats` reports the **server's** version (its gRPC health check) and uptime
//! (since `result.app.startup` of `GET /telemetry` on the REST port, Qdrant 1.9 and later), with
//! `server_commit` and `server_started` in `extra`, and each collection's points, segments,
//! payload indexes and layout (`<kind>_collection`). Neither answer can fail `stats`: what the
//! server does not give is `unknown` (version) or 0 (uptime), with the reason in
//! `server_version_unknown` / `server_uptime_unknown` (a read-only API key may not read the
//! telemetry). Embedded, the engine runs in this process: aimon's version and this store's
//! uptime.
//!
//! `size_bytes`, embedded: the disk the store's directory (the URL's path, all four shards)
//! takes, as `du -s --block-size=1` counts it — the blocks allocated to it and everything in
//! it, read from the file system (every write batch ends with a `flush()`). Not the files' lengths: the engine preallocates sparse files
//! (64 MiB of WAL per shard), whose length is reported apart as `extra.apparent_bytes`. On a
//! server, `size_bytes` is `None` (`extra.size_bytes_unknown` says so): a collection's info
//! has points and segments but no size on disk, and the figures the telemetry may carry per
//! node could not be checked against a server here.
//!
//! ## Measured
//! `aimon bench --similarity 100000 --queries 20` (release, 2-core machine under load): embedded
//! Qdrant 11,124 alert upserts/s, `find_similar_alerts` p50 28 ms / p95 38 ms over 100,000
//! alerts; SQLite brute force 29,197 upserts/s, p50 2,926 ms / p95 3,413 ms. `aimon demo` on
//! `qdrant-edge://` writes its 1,036,800 samples at 15,414 samples/s (one point per sample).
//!
//! ## Known limits
//! - Embedded disk use grows with the total volume written: qdrant-edge 0.7.2 never truncates
//!   its WAL and the driver does not call `optimize()`, so deletes (retention sweeps included)
//!   do not give space back. Copy the store through a portable backup to compact it.
//! - The engine's `flush()` panics on an I/O error (a full disk): inside the blocking pool that
//!   surfaces as a `Backend` error for the call, but a backend dropped without `close()` flushes
//!   in `Drop`, on the dropping thread. Call `close()`.
//! - A similarity query whose filter passes few of the nearest items widens its search up to
//!   the core's 1,000,000-candidate bound and then answers `Unsupported`, where the brute-force
//!   backends count candidates after filtering.
//! - Server mode: the stale-state rule for agent states (rule 5) holds per process (read, then
//!   write); two processes writing the same agent can interleave.
//! - Server mode: a native backup needs the REST port reachable from the client, and a
//!   snapshot of a collection on a multi-node cluster holds that node's shards only (Qdrant's
//!   snapshots are per node); use a portable backup for a distributed cluster.
//!
//! ## Build cost
//! The server mode (`qdrant`, the `aimon` binary's default) adds qdrant-client, tonic and prost:
//! 36 crates, and a clean debug build of `aimon-cli` went from 3 min 24 s to 4 min 56 s (`-j2`
//! on a loaded 2-core machine; CPU time 2 min 59 s to 3 min 53 s); an incremental rebuild of
//! the CLI is unchanged (a few seconds), the debug binary grows from 66 to 77 MB.
//! `qdrant-edge` is a large crate (~450 crates in its tree). Its debug rlib is ~1.4 GB with
//! full debug info; the workspace builds it with `debug = false`. Enabling `qdrant` next to
//! `qdrant-edge` changes feature unification (tonic's TLS roots), so the workspace always builds
//! both together to compile the engine once.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod agent_states;
mod alerts;
pub mod backend;
mod backup;
pub mod config;
#[cfg(feature = "qdrant-edge")]
pub mod edge;
pub mod engine;
#[cfg(any(feature = "qdrant", feature = "qdrant-edge"))]
mod error;
mod export;
pub mod filter;
pub mod ids;
mod metrics;
pub mod payload;
pub mod rank;
mod retention;
#[cfg(feature = "qdrant")]
pub mod server;
#[cfg(feature = "qdrant")]
pub mod snapshot;
mod stats;

pub use backend::QdrantBackend;
pub use config::{QdrantConfig, QdrantMode};

/// What the registry needs to know of the Qdrant driver: `qdrant://` (server) and `qdrant-edge://`
/// (embedded, feature `qdrant-edge`).
pub const DRIVER: aimon_core::Descriptor = aimon_core::Descriptor {
    types: &[aimon_core::StorageBackendType::Qdrant],
    schemes: &["qdrant", "qdrant-edge"],
    feature: "qdrant",
    open: |config| aimon_core::driver::boxed(QdrantBackend::connect(config)),
};
