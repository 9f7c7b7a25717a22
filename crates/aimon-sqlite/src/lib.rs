//! # aimon-sqlite
//!
//! The embedded SQLite backend of aimon (through sqlx), aimon's default store. It follows the
//! shared semantics of `DESIGN.md` and `docs/semantics.md` and answers every call exactly as
//! the reference [`aimon_core::MemoryBackend`] does.
//!
//! ```no_run
//! # async fn demo() -> aimon_core::Result<()> {
//! use aimon_core::{StorageBackend, StorageConfig};
//! let config = StorageConfig::from_url("local", "sqlite://data/aimon.db")?
//!     .option("metric_ttl_seconds", 86_400);
//! // A driver becomes a StorageBackend behind the contract layer (the registry does this).
//! let store = aimon_core::Contract::new(aimon_sqlite::SqliteBackend::connect(&config).await?);
//! println!("{:?}", store.stats().await?);
//! # Ok(()) }
//! ```
//!
//! ## URLs
//! | URL | database |
//! |---|---|
//! | `sqlite://data/aimon.db`, `sqlite:data/aimon.db` | the relative path `data/aimon.db` |
//! | `sqlite:///var/lib/aimon.db` | the absolute path `/var/lib/aimon.db` |
//! | `sqlite::memory:`, `sqlite://:memory:` | a private in-memory database, alive as long as the backend |
//!
//! The file and its schema are created on first use (embedded sqlx migrations in
//! `migrations/`). Files use the WAL journal, `synchronous=NORMAL` (option `synchronous`) and a busy timeout; an
//! in-memory database uses one shared connection so that its data persists across calls.
//!
//! ## Options
//! | option | meaning | default |
//! |---|---|---|
//! | `metric_ttl_seconds`, `alert_ttl_seconds`, `agent_state_ttl_seconds` | retention (DESIGN.md rule 6) | keep forever |
//! | `max_connections` | pool size (always 1 in memory) | 8 |
//! | `busy_timeout_ms` | how long a statement waits for another connection's lock | 5000 |
//! | `synchronous` | `off`, `normal`, `full` or `extra`: when a commit waits for the disk (below) | `normal` |
//!
//! Any other option is a `ConfigInvalid` error that names it.
//!
//! ## Durability
//! A write that returned `Ok` is committed. With the default `synchronous=normal` in WAL mode it
//! survives the process being killed at any point (the fault suite, `faults_sqlite.rs`, kills
//! a writer mid-batch and checks exactly that); an OS crash or power loss may lose the last
//! commits (never corrupt the file) until the next checkpoint. `synchronous=full` makes every
//! commit fsync the WAL, so it survives power loss too, at the cost of one fsync per batch;
//! `off` skips even checkpoint fsyncs, and power loss may corrupt the file.
//!
//! ## Schema
//! Timestamps are `INTEGER` microseconds since the Unix epoch; JSON is `TEXT`. The layout is
//! public API for tools that work on the file directly: the `aimon bench --compare-sqlite3`
//! baseline `.import`s CSV rows `(series_id, ts, tags, value)` into `samples` of a file aimon
//! created, and the bench names `samples` and `series` in the command it prints to delete a
//! run's samples.
//! - `series(id PRIMARY KEY, name, type, description, unit, metadata, created_at, updated_at)`,
//!   indexed by `name` and `updated_at`: one row per metric id. A rewrite replaces everything
//!   but `created_at`.
//! - `samples(series_id, ts, tags, value, PRIMARY KEY (series_id, ts, tags)) WITHOUT ROWID`:
//!   `tags` is the canonical JSON of [`aimon_core::model::tags_json`], so a rewritten (series,
//!   timestamp, tags) key overwrites and samples sharing a timestamp order by tags. `value`
//!   holds doubles in a column without declared type, so every `f64` (even `-0.0`) round-trips
//!   bit for bit.
//! - `series_tagsets(series_id, tags, last_ts, PRIMARY KEY (series_id, tags)) WITHOUT ROWID`,
//!   indexed by `tags`, and `tagset_pairs(key, value, tags, PRIMARY KEY (key, value, tags))
//!   WITHOUT ROWID`, indexed by `(tags, key)` (migration 2): the tag-set index. The first holds
//!   every distinct (series, tag set) written, with an upper bound of its newest sample's
//!   timestamp (rounded up past the next whole hour, so a series writing in order rewrites its
//!   row once an hour); the second the decoded pairs of every distinct tag set. A write adds
//!   its batch's few distinct rows in the same transaction (collected in Rust, not per
//!   sample); the migration backfills them from older databases' samples and a native restore
//!   from the merged samples. Rows are candidates, never answers, and may outlive their
//!   samples: `apply_retention` drops the rows of removed series and those whose bound
//!   expired, then the pairs of tag sets no row uses.
//! - `alerts(id PRIMARY KEY, …, severity INTEGER, labels, annotations, metadata, …)`: the
//!   severity is its rank (`info` 0 … `critical` 4) so it orders; indexed by status, severity,
//!   start time, source and `updated_at`.
//! - `agent_states(agent_id PRIMARY KEY, id, status, metrics, last_heartbeat, …)`: the latest
//!   state per agent; an upsert replaces the stored state only when its heartbeat is not older.
//! - Both `alerts` and `agent_states` have an `embedding BLOB` (migration 3): the item's own
//!   embedding as little-endian `f32`s, `NULL` without one. A native restore of an older file
//!   reads its items as having none.
//!
//! ## Similarity search
//! `find_similar_alerts` / `find_similar_agent_states` are exact brute force
//! (`capabilities().similarity_search` is true): the filters run in SQL as in `query_alerts` /
//! `get_agent_states`, rows stream into the core [`aimon_core::similarity::Ranker`] (which keeps
//! only the best), and each candidate without an embedding of its own is embedded with the
//! backend's embedder ([`aimon_core::HashingEmbedder`] unless
//! [`SqliteBackend::with_embedder`] set another) at query time. At most 1,000,000 candidates per
//! query; the ranking is the reference one, identical to the memory backend's.
//!
//! A sample tag filter (`query_metrics`, `metric_history`) never decodes sample rows: the tag
//! sets holding every wanted pair are an `INTERSECT` of one `tagset_pairs` primary-key range
//! a pair; the series to visit are those with such a tag set in `series_tagsets` (so SQLite
//! reads only their `(series_id, ts)` ranges of `samples`), and a sample passes when its
//! `tags` is one of those tag sets. `metric_history` skips even that check for a series whose
//! every indexed tag set matches, and reads its `group_by` value from `tagset_pairs` (by
//! `(tags, key)`); without `group_by` it groups by bucket alone. Alert label filters read the
//! JSON with `json_each`. Both decode keys, so any valid key (quotes, dots, brackets, emoji)
//! is safe; text compares by bytes (`BINARY` collation).
//!
//! Queries are built at run time from core's fixed field lists with every value in a bind
//! parameter. `metric_history` runs in SQL: buckets are `ts - ts % step`, `avg`/`sum`/`min`/
//! `max`/`count` are SQL aggregates, `first`/`last` a `ROW_NUMBER()` window ordered by
//! (timestamp, series id, tags).
//!
//! ## Bulk inserts
//! A batch of metrics is one `BEGIN IMMEDIATE` transaction, validated whole first. Samples go
//! in with multi-row `INSERT … VALUES (…), (…) … ON CONFLICT DO UPDATE` statements of
//! 500 rows each (a fixed size, so the prepared statement is cached), plus one statement for
//! the remainder: per-row statements would pay a round trip to sqlx's worker thread per sample.
//! The batch's distinct (series, tag set) rows and tag-set pairs follow the same way (200 rows
//! a statement), a handful per batch.
//!
//! ## Retention, backup
//! Reads hide expired data themselves; `apply_retention` sweeps it with `DELETE`s over indexed
//! columns. `BackupFormat::Native` writes a database file with `VACUUM INTO` and restores one by
//! attaching it read-only and merging its rows with the write rules (retention applied), in one
//! transaction that first checks the file whole, like the portable archive: an aimon schema of
//! a known version (a newer one is `Unsupported`), and every row decoded and validated as a
//! write would be (samples in SQL, plus each distinct tag set), streaming. Anything else, a
//! foreign or non-SQLite file included, is `Corrupted` and writes nothing;
//! `BackupFormat::Portable` is aimon's archive. `subscribe` is unsupported (no cross-process
//! notifications in SQLite).
//!
//! ## Stats
//! `size_bytes` is `PRAGMA page_count` × `PRAGMA page_size`: the pages of the database as the
//! reading connection sees it, tables, indexes and free pages alike. In WAL mode committed
//! pages that are still only in the `-wal` file are counted (the page count comes from the
//! newest committed state, not from the main file's length), so the figure needs no
//! checkpoint and does not jump when one runs; the `-wal` and `-shm` files themselves, whose
//! length is the log's high-water mark rather than data, are not. `extra.file_size_bytes` is
//! the main file's length on disk, which lags behind until a checkpoint copies the WAL back.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod agent_states;
mod alerts;
pub mod backend;
mod backup;
pub mod config;
mod error;
mod metrics;
mod retention;
mod sql;
mod stats;

pub use backend::SqliteBackend;
pub use config::{SqliteConfig, SqliteLocation, Synchronous};

/// What the registry needs to know of the SQLite driver: `sqlite://`.
pub const DRIVER: aimon_core::Descriptor = aimon_core::Descriptor {
    types: &[aimon_core::StorageBackendType::Sqlite],
    schemes: &["sqlite"],
    feature: "sqlite",
    open: |config| aimon_core::driver::boxed(SqliteBackend::connect(config)),
};
