//! # aimon-postgres
//!
//! The PostgreSQL backend of aimon (sqlx 0.9): native declarative time partitions, partition-drop
//! retention, bulk ingest in one statement per batch, `metric_history` in SQL (`date_bin`),
//! `LISTEN`/`NOTIFY` live updates, and a TimescaleDB mode. It follows the shared semantics of
//! `DESIGN.md` and `docs/semantics.md` and passes the whole conformance suite.
//!
//! ```no_run
//! # async fn demo() -> aimon_core::Result<()> {
//! use aimon_core::{StorageBackend, StorageConfig};
//! let config = StorageConfig::from_url("history", "postgres://aimon:secret@db:5432/aimon?sslmode=require")?
//!     .option("schema", "fleet_a")
//!     .option("metric_ttl_seconds", 30 * 86_400);
//! let store = aimon_postgres::PostgresBackend::connect(&config).await?;
//! println!("{:?}", store.stats().await?);
//! # Ok(()) }
//! ```
//!
//! ## URLs and options
//! `postgres://` and `postgresql://` open native mode; `timescale://` (or `backend_type =
//! "timescale"`) requires the `timescaledb` extension and is a `ConfigInvalid` error on a
//! server without it. A `postgres://` URL never switches to TimescaleDB by itself, even where
//! the extension exists: the mode is what the URL says. libpq parameters (`sslmode`,
//! `sslrootcert`, `application_name`…) go to sqlx, which speaks TLS through rustls with the
//! *ring* provider and the system's root certificates. aimon's options (`schema`,
//! `max_connections`, `partition_interval`, `partitions_ahead`, `compression_after`, `ingest`,
//! the TTLs) are [`StorageConfig`](aimon_core::StorageConfig) options or URL query parameters;
//! see [`config`]. Credentials never reach logs, errors or `Debug` output.
//!
//! ## Layout: one schema per store
//! Every object lives in the configured schema (default `aimon`; an identifier, always
//! quoted). Each pooled connection runs `SET search_path TO "schema"` when it opens, so the
//! SQL is written unqualified. The schema is created and migrated by aimon's own embedded,
//! versioned migrations (`migrations/`) with a per-schema `schema_migrations` table under a
//! schema-keyed advisory lock: sqlx's migrator keeps one `_sqlx_migrations` table wherever the
//! search path points, so two stores in one database would share one history.
//!
//! | table | holds | keys and indexes |
//! |---|---|---|
//! | `series` | one row per metric id; `sid` is the compact key samples carry | `sid` identity PK, `id` unique, `name`, `updated_at` |
//! | `samples` | `(sid, time, tags, value)`, `PARTITION BY RANGE (time)` | PK `(sid, time, tags_key)`: the sample key of rule 1 (`tags_key` is the SHA-256 of the tags JSON, a generated column: a btree entry holds ~2.7 KB and a tag value may be 16 KiB that does not compress) and the path of every read by series and time |
//! | `samples_pYYYYMMDD_HHMMSS` | one partition per `partition_interval` | listed in `sample_partitions` with their bounds |
//! | `series_tagsets` | each distinct (series, tag set): tags as `jsonb`, an hour-rounded bound of the newest sample | PK `(sid, tags_key)` (`tags_key` = SHA-256 of the tags, generated), GIN on the tags, `last_bound` |
//! | `alerts` | alerts by id; severity as its rank; labels `jsonb` | `(status, start_time)`, `(severity, start_time)`, `start_time`, `source`, `updated_at`, GIN on labels |
//! | `agent_states` | the latest state per agent | PK `agent_id`, `last_heartbeat`, `(status, last_heartbeat)` |
//!
//! Text columns are `COLLATE "C"`, so comparisons and order are by bytes as the semantics want;
//! times are `timestamptz` (microseconds, like aimon). A sample's tags are stored as their
//! canonical JSON text ([`aimon_core::model::tags_json`]), which makes them part of the key and
//! orders samples sharing a timestamp. Metadata and annotations are JSON text, kept exactly
//! (`jsonb` would turn `-0.0` into `0`). A test runs `EXPLAIN` on the main queries over loaded,
//! analyzed tables and fails on a sequential scan.
//!
//! ## Partitions and retention
//! Partitions are created ahead of the data: on a write, for every interval the batch touches
//! that no known partition covers (before the write's transaction, under the schema's advisory
//! lock, clipped so they never overlap partitions made with another interval); and on connect
//! and `apply_retention`, the current one plus `partitions_ahead`. `apply_retention` drops
//! every partition that ends at or before `now - metric_ttl` (counting its rows first), removes
//! series past their life, and sweeps alerts and agent states with indexed `DELETE`s. The
//! partition that straddles the cutoff keeps its expired rows until it is wholly expired;
//! every read filters them out meanwhile, so expired data is never returned. pg_partman is not
//! needed.
//!
//! ## Bulk ingest
//! A `save_metrics` batch is one transaction: the series upsert, the samples, the tag-set
//! rows, the events. Samples go in as four arrays in one statement, `INSERT … SELECT FROM
//! UNNEST($1::bigint[], $2::timestamptz[], $3::text[], $4::float8[])` (batches above 100,000
//! samples are split), sorted by key with only the last write of a key kept (one statement
//! cannot update a row twice; sorted keys make concurrent writers lock in one order). The
//! plain insert runs first under a savepoint, as most batches carry only new keys; a batch
//! that rewrites a stored key (a retry, an overwrite) runs again as `ON CONFLICT DO UPDATE`
//! (rule 1: the rewrite overwrites).
//!
//! **UNNEST against COPY, measured** (`aimon bench --samples 1000000 --compare-psql`, 2-core
//! machine, release build). First versions, both with `ON CONFLICT DO UPDATE` on every batch:
//! UNNEST 93,250 samples/s, `COPY` into a temporary staging table then `INSERT … ON
//! CONFLICT` from it 62,680 (batches of 5,000). Both then got the optimistic path (a plain
//! insert under a savepoint; the upsert only when a stored key is rewritten), COPY going
//! straight into the partitioned `samples`: batches of 5,000, UNNEST 117,600 and COPY 111,400
//! samples/s; batches of 50,000, UNNEST 239,400 and COPY 223,100 (same runs, one each). The
//! two are within the noise of this machine; UNNEST is the default (one statement with typed
//! arrays, no text encoding), and `ingest=copy` stays as an option. Against `psql \copy` of the
//! same rows into the same partitioned table in the same run: 0.40×–0.62× with batches of
//! 5,000 (the per-batch series upsert, tag-set rows and events weigh on small batches), 0.81×–
//! 0.98× with batches of 50,000. Since the keys hash the tags (`tags_key`, so a 16 KiB tag
//! value fits a btree entry), one run each: 85,200 against 185,900 rows/s (0.46×) with
//! batches of 5,000 and 151,400 against 178,300 (0.85×) with 50,000; with
//! `synchronous_commit = off` the 5,000 case gained only 16%. A server-log profile of 200,000
//! samples in batches of 5,000: 4.8 µs a row in the sample `INSERT`, about 4 ms a batch in
//! the series and tag-set upserts, `NOTIFY` and `COMMIT`, and ~4.5 µs a sample on the client
//! (preparing and encoding the arrays): the per-row path is where the gap is.
//!
//! ## History
//! `metric_history` runs in SQL: buckets are `date_bin(step, time, '1970-01-01')` (TimescaleDB:
//! `time_bucket` with the same origin); tag filters and `group_by` read the decoded tags of the
//! sample's `series_tagsets` row instead of parsing each sample's JSON; `first`/`last` are a
//! `row_number()` window ordered by (time, series id, tags). PostgreSQL adds `float8` naively,
//! while aimon's semantics want a compensated sum: the query also returns `sum(abs(value))`,
//! and where the float sum's error bound `(n-1)·2⁻⁵³·Σ|v|` could exceed 1e-10 of the sum
//! (cancelling values), it runs again with an exact decimal sum (`sum(value::text::numeric)`,
//! each double through its shortest exact text), rounded once. Averages are that sum over
//! the count.
//!
//! ## Live updates, errors, backup
//! Writers `NOTIFY` on the channel named like the schema inside their transaction (one small
//! JSON payload per stored item: ids and counts), so other processes' `subscribe` streams get
//! them exactly when the write commits; `PgListener` reconnects and listens again by itself.
//! SQLSTATEs map to error kinds: a terminated backend (`57P01`), a lost connection or an
//! exhausted server is `Unavailable` (retryable); a batch cut off mid-transaction leaves
//! nothing behind, and its retry does not duplicate. `BackupFormat::Portable` is aimon's
//! archive; `BackupFormat::Native` (where `pg_dump` and `psql` are on `PATH`, native mode) is a
//! directory with a plain `pg_dump --schema` of the store and a manifest, restored by loading
//! it into a scratch schema with `psql` and merging from there with the write rules (see
//! `backup.rs`). `stats` reports the server version, its uptime
//! (`pg_postmaster_start_time`), live counts, relation sizes and the partition count.
//!
//! ## TimescaleDB (not verified in this project's CI)
//! With `timescale://`, `samples` is a hypertable (`create_hypertable`, chunks of
//! `partition_interval`), `metric_ttl` becomes `add_retention_policy`, `compression_after`
//! a compression policy (segmented by series), and history uses `time_bucket`. The CI machine
//! has no TimescaleDB: this SQL is unit-tested as text only, and only the detection (a clear
//! `ConfigInvalid` without the extension) runs against the real server.
#![deny(unsafe_code)]

mod agent_states;
mod alerts;
pub mod backend;
mod backup;
pub mod config;
mod error;
mod events;
mod metrics;
mod retention;
mod schema;
mod sql;
mod stats;
mod timescale;

pub use backend::PostgresBackend;
pub use config::PostgresConfig;

/// The URL schemes this backend opens.
pub const SCHEMES: &[&str] = &["postgres", "postgresql", "timescale"];

/// Opens the store a `postgres` or `timescale` configuration describes; the same as
/// [`PostgresBackend::connect`].
pub async fn connect(config: &aimon_core::StorageConfig) -> aimon_core::Result<PostgresBackend> {
    PostgresBackend::connect(config).await
}
