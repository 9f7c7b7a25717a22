//! # aimon-influxdb
//!
//! The InfluxDB backend of aimon: one driver for InfluxDB 1.x (v1 API: `/write`, InfluxQL on
//! `/query`, databases and retention policies) and for the v2 write API of 2.x and 3.x
//! (`/api/v2/write` with org, bucket and token; reads through their v1-compatibility
//! `/query`). It speaks HTTP through `reqwest` (rustls, ring) and writes line protocol itself.
//!
//! ```no_run
//! # async fn demo() -> aimon_core::Result<()> {
//! use aimon_core::{StorageBackend, StorageConfig};
//! let config = StorageConfig::from_url("fleet", "influxdb://127.0.0.1:8086/aimon")?
//!     .option("metric_ttl_seconds", 7 * 86_400);
//! // A driver becomes a StorageBackend behind the contract layer (the registry does this).
//! let store = aimon_core::Contract::new(aimon_influxdb::InfluxBackend::connect(&config).await?);
//! println!("{:?}", store.stats().await?);
//! # Ok(()) }
//! ```
//!
//! See [`config`] for the URLs and options.
//!
//! ## One driver, settings per API generation
//! [`ApiSettings`] holds either the v1 settings (database, retention policies, optional user
//! and password sent as HTTP basic auth) or the v2 ones (org, bucket, metadata bucket, token
//! sent as `Authorization: Token`), behind one [`client`]: Vector's InfluxDB sink is the model.
//! On connect the driver asks `/ping` for the server's version (`X-Influxdb-Version`, reported
//! by `stats`); a v1 store then creates its database and retention policies.
//!
//! ## Data layout, and why
//! | measurement | retention policy (v1) | tags | fields | time |
//! |---|---|---|---|---|
//! | `samples` | `rp` (default `aimon`), the database's `DEFAULT`, duration = `metric_ttl` + one shard duration (see Retention) | `sid` = the series id, `t.<key>` = each sample tag | `v` (float) | the sample's, µs |
//! | `series` | `meta_rp` (`aimon_meta`), infinite | `id` | `name` (string), `doc` (the metric without samples, JSON) | 0 |
//! | `alerts` | `meta_rp` | `id` | `doc` (the alert, JSON), `updated_at` (µs, integer) | 0 |
//! | `agent_states` | `meta_rp` | `agent_id` | `doc` (the state, JSON) | its `last_heartbeat`, µs |
//!
//! **Cardinality.** An InfluxDB series is (measurement, tag set); the in-memory (1.x) or TSI
//! index holds one entry per series, so only bounded values may be tags. Samples are tagged by
//! series id and their own tags: one InfluxDB series per (aimon series, distinct tag set),
//! exactly the sample key of DESIGN.md rule 1 without the time, and a point is keyed by
//! (series, time) — so writing the same (series id, timestamp, tags) again overwrites the
//! value, and a retried batch never duplicates. Sample tags therefore must be low-cardinality
//! (model, host, region — not request ids), as InfluxDB's own advice says. InfluxDB 1.x
//! enforces it: past `max-values-per-tag` (default 100,000 values of one tag key) or
//! `max-series-per-database` (default 1,000,000 series) the server drops the new points and
//! answers "partial write: … limit exceeded", which aimon returns as `Conflict` naming the tag;
//! the rest of that request was stored, and a retry is idempotent once the limit is raised. The metric name is
//! not a tag: a renamed series would otherwise keep old points under its old name and a
//! rewrite would duplicate them; `metric_history` finds a name's series ids in `series` and
//! filters `sid` instead. User tag keys live under the prefix `t.`, so no tag can collide with
//! `sid` or shadow the field `v`. Alerts and series metadata are one point each (time 0, keyed
//! by id): an upsert overwrites all fields at once, because the whole item is one JSON field
//! and an absent optional value cannot linger from an older write (rule 4). Agent states are
//! one point per heartbeat keyed by `agent_id`; reads take `last("doc")` per agent, so the
//! latest state wins even when writers race, a stale write can never hide a newer one and an
//! equal heartbeat overwrites (rule 5); before writing, the driver reads the agents' latest
//! heartbeats to count and skip superseded states. The points behind each agent's latest are
//! never read: `apply_retention` deletes them (InfluxDB 1.x, with or without an
//! `agent_state_ttl`; best effort, after the TTL's deletes), so a store that is swept keeps
//! about one point per agent however often agents report; until a sweep, every heartbeat is a
//! point. On 2.x/3.x (`apply_retention` is `Unsupported`) they are never pruned. Metadata, alerts and agent states are few
//! and unindexed JSON, so their queries read all of them and filter, sort and page in aimon
//! with the core [`aimon_core::filter`] (exact semantics, cost linear in their number).
//!
//! **Escaping.** See [`line`](mod@line): tags are percent-encoded in `%` and `\` only (InfluxDB 1.x
//! cannot store a tag ending in a backslash), then escaped; string fields and InfluxQL literals
//! and identifiers are escaped and quoted, never spliced raw. Property tests parse every line
//! aimon writes back with an independent line-protocol parser.
//!
//! ## Writes
//! A `save_metrics` batch is validated whole, then the series documents go to `meta_rp` and the
//! samples to `rp` as line protocol with microsecond precision, gzip-compressed, at most
//! `batch_lines` (5,000) lines or `batch_bytes` (4 MiB) per request. `created_at` of a series
//! is kept from its first save: the driver reads it for series it has not seen (one query per
//! batch, none once cached). A connection refused or cut mid-batch, a 5xx or a 429 is
//! `Unavailable` (retryable); the retry rewrites the same keys, so nothing is duplicated
//! (tested by killing `influxd` in the middle of a 400,000-sample batch). A field type
//! conflict or "points beyond retention policy" answer is `Conflict`.
//!
//! **Measured** (`aimon bench --samples 1000000 --batch 5000 --queries 1 --compare-curl`,
//! 2-core machine, release build, InfluxDB 1.6.7, a fresh `influxd` per run): aimon's rate
//! against one `curl` posting the same gzip batches to the same server, in six rounds taking
//! turns with aimon's writes (the bench's docs say why): **0.78×–0.92×, median 0.854×** over
//! twenty runs on 2026-11-28 (the issue's target is 0.85×; twelve runs reach it). The build
//! before, alternating run for run: 0.76×–0.87×, median 0.817×. What the client does about it:
//! - Validation reports each metric's runs of equal tags ([`aimon_core::validate::metric_runs`]),
//!   and the encoder writes one series key per run from them: every sample's tags are walked
//!   once, not once to check and again to find the runs.
//! - Every check of a batch (validation, then each run's series key against InfluxDB's limit)
//!   comes before anything is sent. When every series of the batch is already known (after a
//!   series' first batch), the series documents' request then goes first, and the sample lines
//!   are encoded and compressed while the server stores the documents on its other core. New
//!   series still get their documents written before any of their samples are sent.
//!
//! The samples request itself takes about curl's whole time per batch: `influxd` reads a whole
//! body before parsing it, so the client's work on a batch (3.7 ms of 27 ms in one timed run,
//! before the two changes above) can overlap only the documents' request. What did not help,
//! measured:
//! - Leaving the series documents' request out entirely (an experiment): median 0.85× over
//!   four runs against 0.83×, within the noise.
//! - The client work split over both cores (encoding in parts, deflate in parts joined as one
//!   stream) saved 0.25 ms per batch, and rayon's spinning workers slowed `influxd`.
//! - Earlier sessions cut the client's instructions per batch by a third (18.6 M → 12.4 M,
//!   callgrind on the ignored test `metrics::write::tests::bench_workload_client_cpu`: floats
//!   through zmij, one reused deflate stream, a buffer sized once, word-at-a-time validation)
//!   without a visible change end to end.
//!
//! ## Durability
//! What an acknowledged write survives is the server's: InfluxDB 1.x appends every write to
//! its WAL and, with `[data] wal-fsync-delay = "0s"` (its default), fsyncs it before the `204`,
//! so an acknowledged batch survives `influxd` being killed or the machine losing power (the
//! fault suite kills a private `influxd` mid-batch and checks every acknowledged batch after
//! the restart on the same WAL). A non-zero delay batches fsyncs and may lose that much to power
//! loss. aimon has no option for it: it is a server setting, not a request parameter. A write
//! that times out (`timeout_seconds`) or loses its connection is `Timeout` / `Unavailable`;
//! retrying it rewrites the same points, which InfluxDB stores once.
//!
//! ## History
//! `avg`, `sum`, `min`, `max` and `count` run in InfluxQL: `SELECT count, sum, min, max …
//! GROUP BY time(<step>u)[, "t.<group_by>"] fill(none)` with explicit time bounds, so buckets
//! are aligned to the epoch and empty ones omitted. InfluxDB sums floats naively, while the
//! semantics want a compensated sum: where the naive sum's error bound
//! `(n-1)·2⁻⁵³·Σ|v|` (Σ|v| bounded from count, min and max) could exceed 1e-10 of the sum —
//! values of both signs that cancel, or about a million samples in one bucket — that bucket
//! is summed again in aimon from its samples with the core compensated sum. A sum that
//! overflows cannot travel in InfluxDB's JSON (the server sends an error text in place of the
//! whole answer), so only sums and averages ask for it, and when that happens the history
//! takes count/min/max, sums in aimon the buckets whose `count·max|v|` could overflow and asks
//! InfluxDB again for the sums between them. `first` and
//! `last` are not computed in the server: InfluxQL's selectors report the bucket start rather
//! than the sample's time under `GROUP BY time()` and break timestamp ties by value, not by
//! (series id, tags) as aimon's rule says, so their samples stream through the core
//! [`aimon_core::downsample::Downsampler`] (exact, linear in the samples of the range).
//!
//! ## Retention
//! `metric_ttl_seconds` becomes the samples' retention policy (`CREATE`/`ALTER RETENTION
//! POLICY … DURATION … SHARD DURATION … DEFAULT`): InfluxDB drops whole shard groups once
//! they are entirely older than the duration. The duration is the TTL (at least InfluxDB's
//! minimum, an hour) plus one shard duration: the server refuses "points beyond retention
//! policy" by its own clock when a batch arrives, so with the bare TTL a sample aimon had just
//! judged live, or a retried batch, could be refused after the rest of its batch was stored.
//! A shard group lives until its *end* passes the duration.
//! Every read therefore also filters by the exact TTL (rule 6), and `apply_retention` deletes
//! what has expired (`DELETE … WHERE time < cutoff`, series, alerts and agent states past
//! their TTL). Alert and agent-state TTLs have no native mechanism here (their items live in
//! the infinite `meta_rp`): reads filter, `apply_retention` deletes. Alerts are points at
//! time 0 with their `updated_at` in a field, and InfluxQL's `DELETE` takes only tags and time,
//! so the sweep reads the expired alerts and then deletes them by id: an expired alert that
//! another writer upserts between the two is deleted with them (a known limit; the other
//! kinds' deletes name a time, which a newer write is past). A connect whose TTL gives
//! the policy it already has sends no `ALTER` (which needs admin rights). On 2.x/3.x the
//! bucket's retention is InfluxDB's setting and `apply_retention` is `Unsupported` (InfluxQL
//! `DELETE` is 1.x only); aimon filters reads by the TTLs all the same. The
//! metadata bucket (`meta_bucket`, default `<bucket>_meta`) must keep data forever: series
//! documents and alerts are points at time 0, which a bucket with a retention period refuses.
//!
//! ## Backup, stats, events
//! `BackupFormat::Portable` is aimon's archive. `BackupFormat::Native` (a v1 store with the
//! `backup_address` option and `influxd` on `PATH`) runs `influxd backup -portable` and
//! restores with `influxd restore -portable` into a scratch database that is merged into the
//! store by the write rules (see `backup.rs`). `stats` reports the version from `/ping`, the
//! uptime from `SHOW DIAGNOSTICS`, exact live counts, and InfluxDB's series cardinality and
//! points written (`SHOW SERIES CARDINALITY`, `SHOW STATS`). InfluxDB has no pub/sub: events
//! are delivered to subscribers of this process only (`cross_process_events` is false).
//!
//! `size_bytes` (v1) is the `diskBytes` of `SHOW STATS FOR 'shard'` summed over the shards
//! tagged with the store's database, of every retention policy (the samples' and the
//! metadata's): InfluxDB 1.x computes it per shard as its TSM files plus its WAL segments
//! (on 1.6.7 it equals `tsm1_filestore.diskBytes` + `tsm1_wal.currentSegmentDiskBytes` +
//! `oldSegmentsDiskBytes`), so samples count from the moment they are written, before a
//! snapshot moves them into TSM files. Not counted, because `SHOW STATS` does not report
//! them: the database's series file (`_series`, preallocated in 4 MiB segments) and TSI
//! index files. aimon reports InfluxDB's figure as it is, with one quirk seen on 1.6.7: after
//! `influxd` restarted, the WAL segment it reopened was counted in both
//! `currentSegmentDiskBytes` and `oldSegmentsDiskBytes` (a shard holding a 4.7 MB TSM file
//! and a 9.0 MB segment reported 22.8 MB), so the size reads high by that segment while it
//! stays; the statistics alone cannot tell that case from real old segments. `SHOW STATS` needs admin rights where authentication is on; without them,
//! and on the v2 API (2.x and 3.x have no `SHOW STATS` and no other per-bucket size this
//! driver could verify), `size_bytes` is `None` and `extra.size_bytes_unknown` says why.
//!
//! ## Where InfluxDB differs, and what aimon does
//! - One aimon store per database: `DELETE` and `DROP SERIES` act on every retention policy of
//!   a database, so two stores sharing one would delete each other's data.
//! - Sums and averages are exact as above; counts, min and max are InfluxDB's.
//! - Strings are stored whole: 1 MiB descriptions and annotations round-trip on 1.6 (tested).
//! - v2/v3: writes use `/api/v2/write` (tested against VictoriaMetrics); reads and `stats`
//!   use the v1-compatibility `/query` with the bucket as database, which
//!   2.x answers only with a DBRP mapping. These, token checks and bucket retention are not
//!   verified on this project's machines (no 2.x/3.x server): see the README.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod agent_states;
mod alerts;
pub mod backend;
mod backup;
pub mod client;
pub mod config;
mod error;
pub mod line;
mod metrics;
mod retention;
mod schema;
mod stats;

pub use backend::InfluxBackend;
pub use client::ServerInfo;
pub use config::{ApiSettings, InfluxConfig};
pub use metrics::sample_lines;

/// What the registry needs to know of the InfluxDB driver: v1 and v2 APIs.
pub const DRIVER: aimon_core::Descriptor = aimon_core::Descriptor {
    types: &[aimon_core::StorageBackendType::Influxdb],
    schemes: &["influxdb", "influxdb+https", "influxdb2"],
    feature: "influxdb",
    open: |config| aimon_core::driver::boxed(InfluxBackend::connect(config)),
};
