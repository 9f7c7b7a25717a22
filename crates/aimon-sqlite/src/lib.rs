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
//! public API for tools that work on the file directly (the bench prints the statements that
//! delete a run's samples).
//! - `series(id PRIMARY KEY, name, type, description, unit, metadata, created_at, updated_at)`,
//!   indexed by `name` and `updated_at`: one row per metric id. A rewrite replaces everything
//!   but `created_at`.
//! - `series_tagsets(id INTEGER PRIMARY KEY, series_id, tags, UNIQUE (series_id, tags))`,
//!   indexed by `tags`: every distinct (series, tag set) written, numbered. `tags` is the
//!   canonical JSON of [`aimon_core::model::tags_json`]; a sample never stores its tags, its
//!   chunk names the tag set by number. `tagset_pairs(key, value, tags, PRIMARY KEY (key,
//!   value, tags)) WITHOUT ROWID`, indexed by `(tags, key)`, holds the decoded pairs of every
//!   tag set. Both gain their rows in the write that first uses a tag set; `apply_retention`
//!   drops the rows no chunk uses any more.
//! - `chunks(tagset, window_start, seq, count, first_ts, last_ts, sum, sum_comp, sum_scaled,
//!   min, max, first, last, check, data, UNIQUE (tagset, window_start, seq))`, indexed by
//!   `last_ts`: the samples (see "Samples as chunks" below).
//!
//! ## Samples as chunks
//! The samples of one (series, tag set) within one epoch-aligned four-hour window are one chunk
//! ([`aimon_core::chunk`]: timestamps and values as pcodec blocks, a version byte and a
//! CRC-32), stored in `data` with its summary in columns next to it: count, the compensated
//! sum in its three parts, min, max, and the first and last samples with their timestamps,
//! plus `check`, the CRC-32 of the summary.
//! - **Writes.** A batch is one `BEGIN IMMEDIATE` transaction. Its live samples are grouped by
//!   (series, tag set), sorted, and a later write of a timestamp in the batch wins. A window
//!   older than the tag set's newest one is *closed*: the write decodes its chunk, overwrites
//!   and encodes it again (`seq` 0, one row). The newest window takes each batch as a new
//!   *fragment* (`seq` 1, 2, …), a later fragment overwriting an earlier one's samples at the
//!   same timestamp, until it holds 8 rows and is sealed into one (taking the first row's rowid,
//!   so its page's free space is reused); a write that opens a newer window seals the previous
//!   one. So only the newest window of each tag set is ever in fragments, and a rewrite of any
//!   stored (series, timestamp, tags) key overwrites it, sealed or not. A write is a handful
//!   of statements whatever its size: the tag sets are looked up together, the stored rows of
//!   the windows it touches read together and the new rows inserted together (one statement
//!   a sample, as before, made ingest 0.42× the shell's; batched, 0.7× – 1.2×).
//! - **Reads** decode the chunks of the windows a range touches (`window_start` bounds the
//!   index range), merge a window's fragments and cut at the range and the retention cutoff.
//!   `query_metrics` with a range or tag filter decides whether a series matches from the
//!   chunks' first and last timestamps where they settle it, decoding only a chunk that
//!   straddles a bound, and cuts the page after that.
//! - **History** folds into core's [`aimon_core::downsample::Downsampler`]: a window held by
//!   one chunk whose samples all fall in one bucket (and in the range) merges its summary,
//!   checked against `check`, without touching `data`; any other window is decoded and folded
//!   bucket by bucket. The answers are the reference backend's, `first`/`last` ties included.
//! - **Retention** drops a window once every one of its samples is past the cutoff; reads
//!   hide the expired samples of the window straddling it (docs/semantics.md).
//! - **Damage.** A chunk whose bytes or summary do not match their checksum is `Corrupted`,
//!   naming its series, tags and window; other series still read.
//! - **Density.** The default demo (1,036,800 samples in 120 series, with its alerts and agent
//!   states) takes 3.96 – 4.00 bytes a sample, file after checkpoint, where one row a sample
//!   took 152.6; the chunk data alone is 3.0 (the two noisy series, latency and error rate, cost
//!   ~6.6 bytes a sample each, integer counts ~1.3, regular timestamps almost nothing). The
//!   window and the page size were chosen by measuring that demo (the README's table): longer
//!   windows compress a little better (3.36 bytes of data a sample at one hour, 2.92 at a day),
//!   but rows of a few KB waste space between them in SQLite's pages; four hours in 8 KB pages
//!   (`PAGE_SIZE`, for new files) came out smallest among the windows that still let a
//!   dashboard's buckets of a few hours read summaries. `aimon bench`: ingest 0.7× – 1.2× the
//!   `sqlite3` shell's import of plain rows, `metric_history` over 1M samples 13× – 14× faster
//!   than a hand-written `GROUP BY` over plain rows in the same file.
//! - **Migration.** Migration 4 numbers the tag sets, creates `chunks` and renames the old
//!   `samples` table `legacy_samples`; when the driver opens such a file it re-encodes those
//!   rows as chunks in one transaction, drops them and runs `VACUUM` (a crash before the
//!   commit leaves the rows, and the next open starts over).
//!
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
//! A sample tag filter (`query_metrics`, `metric_history`) never decodes tags: the tag sets
//! holding every wanted pair are an `INTERSECT` of one `tagset_pairs` primary-key range a
//! pair, and only their chunks are read. Alert label filters read the JSON with `json_each`.
//! Both decode keys, so any valid key (quotes, dots, brackets, emoji) is safe; text compares
//! by bytes (`BINARY` collation). Queries are built at run time from core's fixed field lists
//! with every value in a bind parameter.
//!
//! ## Retention, backup
//! Reads hide expired data themselves; `apply_retention` sweeps it with `DELETE`s over indexed
//! columns (whole chunks for samples). `BackupFormat::Native` writes a database file with `VACUUM INTO` and restores one by
//! attaching it read-only and merging its rows with the write rules (retention applied), in one
//! transaction that first checks the file whole (its chunks decoded, or the sample rows of a
//! file from before schema version 4, into one staged table), like the portable archive: an aimon schema of
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
mod chunks;
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
