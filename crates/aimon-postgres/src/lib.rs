//! # aimon-postgres
//!
//! The PostgreSQL backend of aimon (sqlx 0.9): native declarative time partitions, partition-drop
//! retention, bulk ingest by binary `COPY`, `metric_history` in SQL (`date_bin`),
//! `LISTEN`/`NOTIFY` live updates, and a TimescaleDB mode. It follows the shared semantics of
//! `DESIGN.md` and `docs/semantics.md` and passes the whole conformance suite.
//!
//! ```no_run
//! # async fn demo() -> aimon_core::Result<()> {
//! use aimon_core::{StorageBackend, StorageConfig};
//! let config = StorageConfig::from_url("history", "postgres://aimon:secret@db:5432/aimon?sslmode=require")?
//!     .option("schema", "fleet_a")
//!     .option("metric_ttl_seconds", 30 * 86_400);
//! // A driver becomes a StorageBackend behind the contract layer (the registry does this).
//! let store = aimon_core::Contract::new(aimon_postgres::PostgresBackend::connect(&config).await?);
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
//! ## Durability
//! A batch that returned `Ok` is committed. With the server's `synchronous_commit = on`
//! (PostgreSQL's default) a commit returns only once its WAL is flushed, so it survives the
//! server being killed or the machine losing power (the fault suite kills a private server
//! mid-batch and checks every acknowledged batch after the restart). aimon's sessions can
//! choose otherwise with the URL parameter `options[synchronous_commit]=off` (or `local`,
//! `remote_write`, `remote_apply`), a libpq-style server option every pooled connection starts
//! with: `off` saves the flush wait per batch, but a server crash may lose up to three times
//! `wal_writer_delay` (600 ms by default) of acknowledged batches (never corrupting anything).
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
//! | `series_tagsets` | each distinct (series, tag set), numbered (`tsid`): tags as canonical JSON text and as `jsonb`, an hour-rounded bound of the newest sample, `head_window` (a lower bound of the windows of its head rows) | PK `(sid, tags_key)` (`tags_key` = SHA-256 of the tags, generated: a btree entry holds ~2.7 KB and a tag value may be 16 KiB that does not compress), `tsid` unique, GIN on the tags, `last_bound` |
//! | `chunks` | native mode: one row per closed ten-minute window of a tag set (or a few fragments): `(tsid, window_start, seq)`, the summary in columns (`count`, `first_time`, `last_time`, `sum`, `sum_comp`, `sum_scaled`, `min`, `max`, `first`, `last`, `check` = its CRC-32), `data` = the encoded samples; `PARTITION BY RANGE (window_start)` | PK `(tsid, window_start, seq)`; `chunks_irregular`, a partial index on `(tsid, window_start)` of the rare chunks whose summary history cannot sum as it stands (fragments, scaled sums, negative values; schema version 5) |
//! | `samples` | native mode: the head, one row per sample of the open window, `(tsid, time, value)`; `PARTITION BY RANGE (time)`. TimescaleDB mode: the hypertable of every sample, `(sid, time, tags, value)` | native: PK `(tsid, time)`, the sample key of rule 1 (a tag set belongs to one series); TimescaleDB: PK `(sid, time, tags_key)` |
//! | `samples_pYYYYMMDD_HHMMSS`, `chunks_pYYYYMMDD_HHMMSS` | one partition of each per `partition_interval` (native mode), over the same range | listed (by the head's name) in `sample_partitions` with their bounds |
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
//! ## Samples as chunks (native mode)
//! Samples are time series, and one row a sample cost 322 bytes each on the demo (the row's
//! header, the tags' text and their hash, the key's index). Since schema version 4 the native
//! mode keeps the samples of a closed window as **chunks**, as the SQLite driver does
//! (`DESIGN.md`, "Storage density"): the samples of one (series, tag set) within one
//! epoch-aligned ten-minute window, encoded together by `aimon_core::chunk` (pcodec; exact to
//! the bit, with a CRC-32) in `chunks.data`, with their summary in columns next to it, so SQL
//! can select and aggregate windows without decoding them.
//!
//! - **The head.** Samples of the open window (the window holding now, and any later one) stay
//!   rows of `samples`, written by binary `COPY` (below), slim: the tag set's number, the time,
//!   the value. A write of a tag set whose head holds rows of windows that have closed since
//!   (`series_tagsets.head_window` says from which window on) first **seals** them: deletes
//!   them (`DELETE … RETURNING`), merges the batch's samples of their windows over them and
//!   writes each window as a chunk, in the batch's transaction.
//! - **Cutting the head.** A batch that brings 32 or more samples of one tag set at or after
//!   the open window (`chunks::CUT_AT`) cuts that tag set's head, as a TSDB cuts a head chunk:
//!   its head rows are sealed and the batch's samples of every window, the open one included,
//!   are written as chunks (fragments of the open window, below). A fast series written in
//!   sizable batches so keeps no rows at all, while a trickle (an agent's few samples a batch)
//!   stays rows until its window closes. Head rows always overwrite chunks, so a cut seals
//!   every head row of the tag set: none may stay behind a newer chunk. On the bench (100
//!   series, 50 samples each a batch) this took `metric_history` from 48 – 104 ms, depending
//!   on how far the clock was into the open window (the head held up to 141,800 rows, which
//!   the server aggregated in about 50 ms), to 21 – 34 ms, and the store after the writes from
//!   14.1 to 1.4 – 1.9 bytes a sample.
//! - **Closed windows.** A batch's samples of closed windows go straight to chunks: a new row
//!   where the window has none; else, where the window would hold fewer than 256 samples, its
//!   rows are merged with them into one (a window written by two batches stays one row); else
//!   a fragment (`seq` one past the greatest), until the window has 8 rows and the next write
//!   merges them, or until a write of that tag set moves past the window (a later seal: the
//!   fragmented windows from the one before a batch's first sample up to its newest are
//!   merged). A later `seq` overwrites an earlier one's samples at equal timestamps, and
//!   head rows overwrite chunks (they are always newer). So a stream of batches into closed
//!   windows re-encodes each window every few batches, never every time.
//! - **Dead rows.** Sealing and merging delete rows, and autovacuum (a minute's naptime)
//!   lets a backfill grow the tables by their dead versions meanwhile; so a backend vacuums
//!   `chunks`, `samples`, `series` and `series_tagsets` (`VACUUM (SKIP_LOCKED)`, after the
//!   batch's commit) once its writes have left 1,024 dead row versions, and the space is reused
//!   by the next writes. On the demo this took the chunks from 14.9 MB to 9.7 MB.
//! - **Concurrency.** A write upserts its tag sets first (`INSERT … ON CONFLICT`), which locks
//!   their rows until commit in key order: two writers of one tag set take turns, and the
//!   second sees the first's head and chunks.
//! - **Reads** take the chunks of the windows overlapping the range (index on `(tsid,
//!   window_start)`, and the summary's first and last times to skip windows without a sample
//!   in range) and the head's rows, merge them per window, and cut the range inside a chunk.
//!   `query_metrics` with a time or tag filter checks the series it finds against the samples
//!   read (a chunk enclosing the range may hold none inside it) and pages after that check.
//! - **History** (below) uses the summaries of windows stored in one row, with no head row,
//!   wholly in the range and inside one bucket; decodes the others; and folds everything with
//!   core's `Downsampler`, so every aggregation (the compensated sum, first and last with their
//!   tie-breaks) is the reference backend's.
//! - **Damage.** A chunk whose bytes fail their CRC or do not decode, or whose summary does not
//!   match its `check`, makes the read that needs it fail with `Corrupted` naming the series,
//!   its tags and the window; it is never a panic or a wrong number.
//! - **Retention** is unchanged in spirit: a chunk's window lies in one partition (the
//!   window divides every accepted `partition_interval`, which must be a whole multiple of ten
//!   minutes), and a dropped partition takes its head's and its chunks' partitions.
//! - **Migration.** Version 4 renames a version-3 store's `samples` (partitions, indexes) to
//!   `legacy_samples…` and empties the partition registry; the first open then re-encodes
//!   them through the write path, one transaction per legacy partition, oldest first,
//!   dropping each when done (a process killed midway resumes at the next open). Expired rows
//!   are dropped, not stored. `integration-tests/tests/postgres_chunks.rs` migrates a schema
//!   dumped from the previous release (`tests/fixtures/v3.sql`) and compares every sample.
//!
//! **Why ten minutes.** The window must divide the partition interval (so retention by
//! partition stays exact) and balances two costs. A chunk row costs about 150 bytes besides
//! its data (the tuple header and line pointer, 15 columns, the primary key's index entry), so
//! at the demo's 10 s interval a ten-minute window (60 samples) pays about 2.5 bytes a sample
//! of overhead, and a one-minute window (6 samples) 25. On the other side the open window's
//! samples are rows (about 65 bytes each with their index entry) and history decodes or reads
//! them one by one: the longer the window, the larger the head (a quarter of the bench's hour
//! of samples at fifteen minutes). Measured figures are in the README ("Performance").
//!
//! **Disk arithmetic**, measured on the demo (120 tag sets, a sample every 10 s, 24 h; 17,280
//! chunk rows): the data of a 60-sample chunk is 323 bytes (5.4 bytes a sample: pcodec's two
//! blocks carry a few dozen bytes of headers, which a short window does not amortize), a row
//! 442 bytes with its header and columns, so 7.4 bytes a sample in the heap and 1.5 in the
//! primary key; with the dead space the writes leave between vacuums the `chunks` partitions
//! take 9.6 – 9.9 MB (9.3 – 9.5 bytes a sample); the head (the open window, up to 72,000 rows
//! at ~80 bytes with its index) 0.5; the series, tag-set, alert and agent-state tables the
//! rest: **10.5 – 11.3 bytes a sample** in all (322 with one row a sample). A wider window
//! would shrink the chunks (fewer pcodec headers and rows) but grow the head, which every
//! history over the last window reads row by row. The chunk data alone cannot go below
//! pcodec's ~3.4 bytes a sample of hour-long chunks; VictoriaMetrics' 3.3 is not reached.
//!
//! ## Partitions and retention
//! Partitions are created ahead of the data: on a write, for every interval the batch touches
//! that no known partition covers (before the write's transaction, under the schema's advisory
//! lock, clipped so they never overlap partitions made with another interval); and on connect
//! and `apply_retention`, the current one plus `partitions_ahead`.
//!
//! ## Partitions and the lock table
//! PostgreSQL's lock table is shared by all sessions and sized for `max_locks_per_transaction`
//! (default 64) locks per connection on average; a transaction that holds far more fills it,
//! and then it and everyone else asking for a lock fail with `out of shared memory`. Creating
//! a partition takes about eight locks until commit (the table and its TOAST table in two
//! modes, the TOAST index, the primary key) and writing into one takes one to three, so a batch
//! spanning 5,000 daily partitions once failed that way. No transaction of the driver now
//! takes more than its share: at connect it reads `max_locks_per_transaction` and derives a
//! budget (at the default, 2 partitions per DDL transaction and 8 per write transaction).
//! Missing partitions are created a few per short transaction, each committed before the
//! next (which also keeps the exclusive lock on `samples` that `CREATE TABLE … PARTITION OF`
//! takes short). A batch whose samples lie in at most 8 partitions — every ordinary batch —
//! is written in one transaction, as below; a larger one is written in one transaction per
//! group of 8 partitions, in time order, the series and tag-set rows with each group and the
//! events with the last. **A failure midway** (a lost connection, say) leaves the groups
//! before it committed and the rest unwritten, and the partitions created so far (empty ones
//! are harmless); the error says why, as for any write, and retrying the batch completes it:
//! the groups already stored are rewritten in place (the sample key makes that an overwrite,
//! never a duplicate). Readers may see such a batch partly stored meanwhile. Reads are not
//! split: a read takes one or two locks per partition it scans (`get_metric` of a series with
//! ten thousand days of samples scans all of them), which a server with the default settings
//! holds for several thousand partitions, not for tens of thousands. `apply_retention` drops
//! every partition that ends at or before `now - metric_ttl` (counting its rows first), a few
//! per transaction as they are created (a sweep cut short keeps what it committed), removes
//! series past their life, and sweeps alerts and agent states with indexed `DELETE`s. The
//! partition that straddles the cutoff keeps its expired rows until it is wholly expired;
//! every read filters them out meanwhile, so expired data is never returned. pg_partman is not
//! needed.
//!
//! ## Bulk ingest
//! A `save_metrics` batch is one transaction (unless it spans more partitions than the lock
//! budget, above): the series upsert, the samples, the tag-set rows, the events. Samples are sorted by key with only the last write of a key kept (one
//! statement cannot update a row twice; sorted keys make concurrent writers lock in one order)
//! and go in by `COPY samples (sid, time, tags, value) FROM STDIN (FORMAT binary)` (native
//! mode: the open window's samples only, as `(tsid, time, value)`; see "Samples as chunks") (batches
//! above 100,000 samples are split): the server routes the rows to the partitions and buffers
//! them into multi-row inserts, and parses nothing as text. Most batches carry only new keys,
//! so the `COPY` runs under a savepoint; a batch that rewrites a stored key (a retry, an
//! overwrite) fails the unique check, rolls back to the savepoint and runs again as `INSERT …
//! SELECT FROM UNNEST($1::bigint[], $2::timestamptz[], $3::text[], $4::float8[]) ON CONFLICT
//! DO UPDATE` (rule 1: the rewrite overwrites). `ingest=unnest` writes every batch through
//! `UNNEST` (the plain insert first, the upsert on conflict).
//!
//! **COPY against UNNEST, measured** (`aimon bench --samples 1000000 --batch 5000
//! --compare-psql`, 2-core machine, release build, five runs on 2026-11-27): binary `COPY`
//! reached **0.83×–1.18× (median 1.03×)** the rate of `psql \copy` loading the same rows from
//! CSV into the same partitioned table with the same indexes, in the same run; `UNNEST`
//! 0.67×–0.77× in runs alternating with them. With batches of 50,000, `COPY` 1.24×. What
//! closed the gap (it was 0.46× with `UNNEST` on an earlier day), found with `perf record` on
//! the server and per-stage timings of a batch: 85% of a batch is the sample write itself;
//! the text form of `COPY` spends a fifth of its time parsing timestamps (the binary form
//! does not); and version 1's `tags_key` called `convert_to`, which is only `STABLE`, so the
//! planner could not inline it and every row ran it through the SQL-function executor, a fifth
//! of the server's time (migration 2 gives it an `IMMUTABLE` body, with the same bytes). The
//! rest of a batch of 5,000 is about 12 ms: the series upsert (4 ms), tag sets (2 ms), `NOTIFY`
//! (0.5 ms), `COMMIT`'s WAL flush (5.5 ms). Writing the whole batch as one autocommit statement
//! of data-modifying CTEs (one round trip instead of eight) was tried and measured slower.
//!
//! **Chunks, measured** (the same bench, seven runs on 2026-12-06): **0.77× – 0.86×** of `psql
//! \copy` of the same samples as rows of the slim head table, 427,000 – 476,000 samples/s, the
//! store 1.4 – 1.9 bytes a sample after the writes. The driver needs sqlx 0.9.1 or later: 0.9.0 left Nagle's algorithm
//! on, so every statement whose message spans several TCP segments (the chunk insert binds a
//! few kilobytes of arrays) waited for the server's delayed ACK, 40 ms a statement; with it the
//! same bench reached 0.17×.
//!
//! ## History
//! Native mode, for `sum`, `avg`, `count`, `min` and `max` at a step that is a whole number of
//! ten-minute windows (a dashboard's 10 min, 30 min, 1 h, 1 d): **one statement**
//! (`metrics/summed.rs`), one round trip and one snapshot, no transaction. A `MATERIALIZED` CTE
//! lists the matching tag sets (name, tag filter, the `group_by` tag's value, `head_window`).
//! The server aggregates per bucket (per tag set with `group_by`) the summary columns of the
//! windows that lie wholly inside the range and before the earliest head window of those tag
//! sets, only the aggregates the answer needs (no more than hand-written SQL would: whether
//! those windows have fragments, scaled sums or negative values is a look into the partial
//! index `chunks_irregular`, and only a sum over windows with a negative value runs again with
//! `sum(abs(sum))` for its error bound); the same statement returns the chunk rows at the
//! range's start and from that head window on (their data only where the summary cannot
//! answer: a sample of the window lies outside the range, by its first and last times, or the
//! window lies at or after its own tag set's head window), and each tag set's head rows as two
//! arrays. The chunk and head branches are index
//! ranges through `tsid = ANY(ARRAY(SELECT tsid FROM ts))`, so the plan does not hang on the
//! planner's estimates (a plain join with the tag sets became a hash join over every chunk of
//! the range once the tables had statistics: 12 ms instead of 2). It runs on two connections of
//! its own whose planner does not sort (`enable_sort = off`, opened on first use): the generic
//! plan estimates a handful of chunk rows and would sort thousands into buckets, where hashing
//! them is 0.3 – 0.6 ms faster on the demo's store. aimon folds the rest
//! exactly: single-row windows whose samples all lie in the range from their CRC-checked
//! summaries (the checksum covers the first and last times that decide it), the others decoded,
//! fragments in `seq` order and head rows over them. It gives up, and the general path below
//! answers, where that would not be exact: a window among the aggregated ones has fragments or
//! a scaled sum, a whole window sent without its data has fragments, a float sum overflows, or
//! the float sums' error bounds `2n·2⁻⁵³·Σ|sum|`, summed over every part of a bucket, are not
//! within 1e-10 of the bucket's final sum (parts of a bucket can cancel, so a part's bound is
//! checked against the whole). The summaries the server aggregates are not checked against
//! their `check` column (docs/semantics.md, "Damaged storage"). Measured in the README
//! ("PostgreSQL on chunks: `metric_history` over whole windows"): 1.07× – 1.25× the time of
//! hand-written SQL over the summary columns, median 1.15× (1.46× – 1.59× before it hashed,
//! 1.32× – 1.44× before it matched that SQL's aggregates), where the general path took 3.5×. A tag set that
//! stopped writing with head rows left keeps the earliest head window early: the windows after
//! it are then folded by aimon from their summaries, as the general path would.
//!
//! The general path (any aggregation and step): one query lists the matching tag sets; one
//! query returns, for every chunk of theirs overlapping the range, its summary columns, and its
//! `data` only where the summary cannot answer (the window has fragments, sticks out of the
//! range, or a bucket boundary splits it: `date_bin` of its first and last microsecond
//! differ); one reads the head's rows in range. Summaries are checked against their CRC and
//! merged into their bucket as a whole; decoded windows (with head rows over them) are cut into
//! runs per bucket and each run summarized. The head's rows are aggregated by the server per
//! tag set, window and bucket (count, float sum, its `sum(abs(value))` error bound, min, max)
//! where no chunk shares their window, and the whole history runs again with the rows read
//! where a bucket's summed bounds are not within 1e-10 of its sum (and for `first`/`last`
//! they are read). Core's `Downsampler` merges it all, so the answer is exactly the reference
//! backend's, sums compensated. The bench's 60 one-minute buckets over 1M samples of the last
//! hour (every window split by buckets, so decoded) take 20.7 – 34 ms, against 560 ms with one
//! row a sample. `integration-tests/tests/postgres_chunks.rs` compares both paths with the
//! reference backend over fragments, head rows, groups and cancelling sums.
//!
//! TimescaleDB mode: `metric_history` runs in SQL: buckets are `date_bin(step, time, '1970-01-01')` (TimescaleDB:
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
//! SQLSTATEs map to error kinds: a terminated backend (`57P01`), a lost connection or a
//! server at `max_connections` (`53300`) is `Unavailable` (retryable); the rest of class 53
//! (insufficient resources: out of memory or shared memory, disk full, a configured limit) is
//! `Backend` and not retryable, since the same call would ask for the same resources again. A
//! batch cut off mid-transaction leaves nothing of that transaction behind, and its retry does
//! not duplicate. `BackupFormat::Portable` is aimon's
//! archive; `BackupFormat::Native` (where `pg_dump` and `psql` are on `PATH`, either mode) is a
//! directory with a plain `pg_dump --schema` of the store and a manifest, restored by loading
//! it into a scratch schema with `psql` and merging from there with the write rules (see
//! `backup.rs`). `stats` reports the server version, its uptime
//! (`pg_postmaster_start_time`), live counts, relation sizes and the partition count.
//!
//! ## Stats: the store's size
//! `size_bytes` is what the schema's relations take on disk, read in one snapshot:
//! `pg_total_relation_size` (heap, free space and visibility maps, every index, the TOAST
//! table and its index) of each table of the schema — the sample partitions are tables of
//! the same schema, each counted once under `samples` — plus its sequences (the series ids')
//! and materialized views, if any. `extra.relation_sizes_bytes` lists the parts and
//! `extra.total_size_bytes` repeats the sum. In TimescaleDB mode the hypertable's root in the
//! schema is empty and its rows live in chunks in `_timescaledb_internal`: the `samples` part
//! is `hypertable_size`, which TimescaleDB 2.26 computes as the root's size plus each chunk's
//! (heap, indexes, TOAST) plus, for a compressed chunk, its compressed chunk's, all read from
//! the relations (`_timescaledb_functions.relation_size`), not from compression statistics.
//! The compressed hypertable's own empty root (in `_timescaledb_internal`) and the
//! TimescaleDB catalog rows are not counted: they are the extension's, not the samples'.
//! Dead rows that `VACUUM` has not reclaimed are counted, as they take the disk.
//!
//! ## TimescaleDB
//! With `timescale://`, `samples` is a hypertable (`create_hypertable`, chunks of
//! `partition_interval`), `metric_ttl` becomes `add_retention_policy`, `compression_after`
//! TimescaleDB's own compression (aimon's chunk codec is not used there) segmented by series
//! and tag set (`compress_segmentby = 'sid, tags_key'`) and ordered by time, so each
//! compressed segment is one time series, with its policy; history uses `time_bucket`, over
//! compressed chunks too. Stores whose compression was enabled by an earlier release keep its
//! settings (segmented by series, ordered by time and tags): TimescaleDB does not change the
//! settings of chunks already compressed, and aimon does not rewrite them. The extension is created in `public` when a store first needs it, under
//! a database-wide advisory lock (two stores opened at once would otherwise race on
//! `CREATE EXTENSION IF NOT EXISTS`). A store reopened with another `metric_ttl` or
//! `compression_after` moves the server's policy to it (enabling compression where needed); a
//! store opened without them leaves the policies alone, so a tool that opens a store to read
//! never removes them (`remove_retention_policy` does that). TimescaleDB runs a new policy at
//! once in the background, then on its schedule.
//! `apply_retention` drops the expired chunks at once rather than at the policy's next run, a
//! lock budget's worth per transaction (one `drop_chunks` over thousands of chunks exhausts the
//! lock table), and reports the samples of the chunks it dropped, counted just before each
//! drop, not every expired sample: the chunk that straddles the cutoff keeps its expired rows,
//! hidden from reads, until it is wholly expired, so a second `apply_retention` right after
//! reports nothing. A batch over more chunks than the DDL lock budget is written a group of
//! chunks per transaction, since TimescaleDB creates missing chunks inside the inserting
//! transaction. Native backups work in this mode too (see `backup.rs`: the hypertable's rows
//! are copied out in the dump's snapshot and spliced into it), and `stats` reports the
//! hypertable's size with its chunks (`hypertable_size`), the compressed chunk count and the
//! extension's version.
//!
//! **Verified in CI** against TimescaleDB 2.26.4 (the last line for PostgreSQL 15), built from
//! its source release by `.ci/timescaledb.sh` and loaded by the fixture's own cluster
//! (`docs/testing.md`): the whole conformance suite, and the checks of
//! `integration-tests/tests/timescale.rs` (the hypertable and its chunks; the retention policy,
//! run, dropping compressed chunks that never show again; the policies following a reopened
//! store's settings; compressed chunks, written into after compression, answering every query
//! and `time_bucket` history exactly as `memory://`; portable and `pg_dump` backups of a
//! compressed hypertable restored into either mode; stats; stores opened at once on a fresh
//! database), the TimescaleDB checks of `tests/postgres_native.rs` (4,000 daily chunks written
//! and dropped) and the CLI's demo. Not verified: a multi-node or managed (Timescale Cloud)
//! service, and versions other than 2.26.4.
//!
//! Known on this machine's PostgreSQL 15.20 with TimescaleDB 2.26.4: every background job
//! (retention, compression, TimescaleDB's own) logs `cannot drop portal "" while it is being
//! set up` when it ends and is recorded as failed, then retried with backoff. The error comes
//! after the job's work committed (expired chunks are dropped, chunks compressed); the
//! foreground `CALL run_job(id)` ends cleanly. The error is raised where TimescaleDB's job
//! runner drops the portal it created for the job (`PortalDrop` in `tsl/src/bgw_policy/job.c`,
//! after the job's transaction committed): TimescaleDB's code against this PostgreSQL minor
//! release, not aimon's SQL.
#![deny(unsafe_code)]
#![warn(missing_docs)]

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

/// What the registry needs to know of the PostgreSQL driver: `postgres://`.
pub const DRIVER: aimon_core::Descriptor = aimon_core::Descriptor {
    types: &[aimon_core::StorageBackendType::Postgres],
    schemes: &["postgres", "postgresql"],
    feature: "postgres",
    open: |config| aimon_core::driver::boxed(PostgresBackend::connect(config)),
};

/// The same driver in its TimescaleDB mode (`timescale://`, hypertables), behind the feature
/// `timescale` of `aimon` and `aimon-registry`.
pub const TIMESCALE_DRIVER: aimon_core::Descriptor = aimon_core::Descriptor {
    types: &[aimon_core::StorageBackendType::Timescale],
    schemes: &["timescale"],
    feature: "timescale",
    open: |config| aimon_core::driver::boxed(PostgresBackend::connect(config)),
};
