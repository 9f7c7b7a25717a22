//! Samples as chunks (native mode): storing a batch (the open window's samples as rows of the
//! head, `COPY`; closed windows as chunk rows), reading them back, and the summaries and
//! decoded edges `metric_history` folds. The layout and its reasoning are in the crate docs
//! ("Samples as chunks").

use std::collections::{BTreeMap, HashMap};

use aimon_core::chunk::{self, Samples, Summary, window_start};
use aimon_core::downsample::{CompensatedSum, Downsampler, bucket_start};
use aimon_core::query::Aggregation;
use aimon_core::{Error, Result, time};
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgConnection;

use crate::backend::DbResult;
use crate::error::{from_sqlx, sqlstate};

/// The length of a chunk's window: ten minutes, epoch-aligned (60 samples at the demo's 10 s
/// interval). It divides every accepted `partition_interval` (whole multiples of it), so a
/// window never straddles two partitions. The crate docs ("Samples as chunks") give the
/// measurements behind it. Changing it needs a migration that rewrites every chunk.
pub(crate) const WINDOW: i64 = 10 * 60 * 1_000_000;

/// The rows a closed window may hold before a write merges them into one: samples written into
/// a closed window become a new fragment (`seq` one past the greatest), so a stream of small
/// batches into closed windows re-encodes each window every few batches, not every time.
const MAX_FRAGMENTS: i64 = 8;

/// A closed window holding fewer samples than this with the new ones is merged into one row
/// at once rather than given a fragment: re-encoding so few costs little, and a window written
/// in two batches (a writer's batch rarely ends where a window does) stays one row, whose
/// summary history can use, instead of two that cost a row's overhead more and must be decoded.
const MERGE_BELOW: i64 = 256;

/// A batch that brings at least this many samples of one tag set at or after the open window
/// **cuts** that tag set's head: its head rows and these samples are written as chunk
/// fragments of their windows (the open one included), as a TSDB cuts a head chunk, instead of
/// adding rows. A fast series written in sizable batches then keeps no rows at all (rows cost
/// about 65 bytes each and are read one by one by history), while a trickle of single samples
/// (an agent's heartbeat metrics) still goes to the head and is sealed when its window closes.
pub(crate) const CUT_AT: usize = 32;

/// Rows a store's writes may delete (sealed head rows, merged chunk rows) before it vacuums the
/// tables they left dead versions in, so that their space is reused by the next writes rather
/// than added to: autovacuum's default naptime is a minute, in which a backfill rewrites
/// thousands of windows.
pub(crate) const VACUUM_AFTER: u64 = 1_024;

/// Chunk rows per `INSERT … FROM UNNEST` statement.
const CHUNKS_PER_INSERT: usize = 5_000;

/// The SQLSTATE of a unique violation.
const UNIQUE_VIOLATION: &str = "23505";

/// The SQLSTATE of an insert into a range no partition covers.
pub(crate) const NO_PARTITION: &str = "23514";

/// Why storing samples failed: a missing partition is retried once after a refresh.
pub(crate) enum WriteFailure {
    NoPartition,
    Other(Error),
}

impl From<Error> for WriteFailure {
    fn from(e: Error) -> Self {
        WriteFailure::Other(e)
    }
}

impl From<sqlx::Error> for WriteFailure {
    fn from(e: sqlx::Error) -> Self {
        if sqlstate(&e).as_deref() == Some(NO_PARTITION) {
            WriteFailure::NoPartition
        } else {
            WriteFailure::Other(from_sqlx(e))
        }
    }
}

/// Who a tag set is, for the `Corrupted` error of one of its chunks.
#[derive(Debug, Clone)]
pub(crate) struct TagsetName<'a> {
    pub series_id: &'a str,
    /// Canonical tags JSON.
    pub tags: &'a str,
}

impl TagsetName<'_> {
    /// The `Corrupted` error of this tag set's chunk of the window starting at `window`.
    pub(crate) fn damaged(&self, window: i64, why: impl std::fmt::Display) -> Error {
        Error::corrupted(format!(
            "the chunk of series {:?} tags {} for the window starting {} is damaged: {why}",
            self.series_id,
            self.tags,
            time::from_micros(window).to_rfc3339()
        ))
    }
}

/// The samples of one tag set to store, in time order, one per timestamp.
pub(crate) struct TagsetWrite<'a> {
    pub tsid: i64,
    /// `series_tagsets.head_window`, read under the row's lock.
    pub head_window: Option<i64>,
    pub name: TagsetName<'a>,
    pub samples: Samples,
}

/// A stored fragment of a window: its `seq` and bytes.
type Fragment = (i16, Vec<u8>);

/// A chunk row to insert.
struct NewChunk {
    tsid: i64,
    window: i64,
    seq: i16,
    samples: Samples,
}

fn micros(t: DateTime<Utc>) -> i64 {
    time::to_micros(t)
}

fn at(micros: i64) -> DateTime<Utc> {
    time::from_micros(micros)
}

/// Splits samples in time order into their windows.
fn by_window(samples: &Samples) -> Vec<(i64, Samples)> {
    let mut out: Vec<(i64, Samples)> = Vec::new();
    for (&ts, &v) in samples.timestamps.iter().zip(&samples.values) {
        let w = window_start(ts, WINDOW);
        match out.last_mut() {
            Some((last, part)) if *last == w => {
                part.timestamps.push(ts);
                part.values.push(v);
            }
            _ => out.push((
                w,
                Samples {
                    timestamps: vec![ts],
                    values: vec![v],
                },
            )),
        }
    }
    out
}

/// Stores a batch inside the caller's transaction, whose `series_tagsets` rows of `writes` it
/// has locked. Samples of the open window (at or after `open`, the start of the window holding
/// now) go to the head by `COPY`; samples of closed windows go to chunks. A tag set whose head
/// holds rows of windows that have closed since has them sealed first: deleted from the head,
/// merged with this batch's samples of their window (the batch wins) and written as chunks.
/// A tag set with at least [`CUT_AT`] samples in the open window (or later) has its head cut
/// instead: all of its head rows sealed and all of its samples written as chunks, so that it
/// keeps no head rows (head rows overwrite chunks, so none may stay behind a newer chunk).
pub(crate) async fn store(
    conn: &mut PgConnection,
    writes: &[TagsetWrite<'_>],
    open: i64,
) -> std::result::Result<u64, WriteFailure> {
    // Whether each write cuts its tag set's head (see [`CUT_AT`]): then all of its samples
    // go to chunks, and so do all of its head rows.
    let cuts: Vec<bool> = writes
        .iter()
        .map(|w| w.samples.len() - w.samples.timestamps.partition_point(|&t| t < open) >= CUT_AT)
        .collect();
    // Head rows sealed now: those of closed windows, and every one of a cut head. The upper
    // bound of a cut is past every valid timestamp.
    let sealing: Vec<(i64, i64, i64)> = writes
        .iter()
        .zip(&cuts)
        .filter_map(|(w, &cut)| {
            let h = w.head_window?;
            if cut {
                Some((w.tsid, h, time::MAX_TIMESTAMP_MICROS))
            } else {
                (h < open).then_some((w.tsid, h, open))
            }
        })
        .collect();
    let mut sealed: HashMap<i64, Vec<(i64, f64)>> = HashMap::new();
    let mut rewritten = 0u64;
    if !sealing.is_empty() {
        let rows = sqlx::query(
            "DELETE FROM samples s \
             USING UNNEST($1::bigint[], $2::timestamptz[], $3::timestamptz[]) AS u(tsid, lo, hi) \
             WHERE s.tsid = u.tsid AND s.time >= u.lo AND s.time <= u.hi \
             RETURNING s.tsid, s.time, s.value",
        )
        .bind(sealing.iter().map(|s| s.0).collect::<Vec<_>>())
        .bind(sealing.iter().map(|s| at(s.1)).collect::<Vec<_>>())
        .bind(sealing.iter().map(|s| at(s.2 - 1)).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?;
        rewritten += rows.len() as u64;
        for row in rows {
            let tsid: i64 = row.try_get(0)?;
            let t: DateTime<Utc> = row.try_get(1)?;
            sealed
                .entry(tsid)
                .or_default()
                .push((micros(t), row.try_get(2)?));
        }
    }

    // The pieces of closed windows: sealed head rows overwritten by the batch.
    let mut pieces: BTreeMap<(i64, i64), Samples> = BTreeMap::new();
    let mut names: HashMap<i64, &TagsetName<'_>> = HashMap::new();
    let (mut head_tsid, mut head_time, mut head_value) = (Vec::new(), Vec::new(), Vec::new());
    let mut new_heads: Vec<(i64, Option<i64>)> = Vec::new();
    for (w, &cut) in writes.iter().zip(&cuts) {
        names.insert(w.tsid, &w.name);
        if let Some(rows) = sealed.remove(&w.tsid) {
            for (window, part) in by_window(&Samples::from_unsorted(rows)) {
                pieces.insert((w.tsid, window), part);
            }
        }
        if cut {
            for (window, part) in by_window(&w.samples) {
                let piece = pieces.remove(&(w.tsid, window)).unwrap_or_default();
                pieces.insert((w.tsid, window), piece.overwrite(&part));
            }
            if w.head_window.is_some() {
                new_heads.push((w.tsid, None));
            }
            continue;
        }
        let split = w.samples.timestamps.partition_point(|&t| t < open);
        let closed = Samples {
            timestamps: w.samples.timestamps[..split].to_vec(),
            values: w.samples.values[..split].to_vec(),
        };
        for (window, part) in by_window(&closed) {
            let piece = pieces.remove(&(w.tsid, window)).unwrap_or_default();
            pieces.insert((w.tsid, window), piece.overwrite(&part));
        }
        for i in split..w.samples.len() {
            head_tsid.push(w.tsid);
            head_time.push(at(w.samples.timestamps[i]));
            head_value.push(w.samples.values[i]);
        }
        // A lower bound of the windows of the tag set's head rows: after a seal every row left
        // is at or after `open`.
        let lowest_new = w
            .samples
            .timestamps
            .get(split)
            .map(|&t| window_start(t, WINDOW));
        let new_head = match w.head_window {
            Some(h) if h < open => Some(open),
            Some(h) => Some(lowest_new.map_or(h, |n| n.min(h))),
            None => lowest_new,
        };
        if new_head != w.head_window {
            new_heads.push((w.tsid, new_head));
        }
    }

    // A later seal: fragmented windows this batch has moved past (from the window before its
    // first sample up to, not including, its newest) are merged into one row now, so that a
    // writer filling closed windows batch by batch leaves whole windows behind it.
    let spans: Vec<(i64, i64, i64)> = writes
        .iter()
        .filter_map(|w| {
            let first = *w.samples.timestamps.first()?;
            let last = *w.samples.timestamps.last()?;
            Some((
                w.tsid,
                window_start(first, WINDOW).saturating_sub(WINDOW),
                window_start(last, WINDOW).min(open),
            ))
        })
        .filter(|s| s.1 < s.2)
        .collect();
    let mut seal: std::collections::HashSet<(i64, i64)> = std::collections::HashSet::new();
    if !spans.is_empty() {
        let lo = spans.iter().map(|s| s.1).min().unwrap_or(0);
        let hi = spans.iter().map(|s| s.2).max().unwrap_or(0);
        let rows = sqlx::query(
            "SELECT c.tsid, c.window_start FROM chunks c \
             JOIN UNNEST($1::bigint[], $2::timestamptz[], $3::timestamptz[]) AS u(tsid, lo, hi) \
             ON c.tsid = u.tsid AND c.window_start >= u.lo AND c.window_start < u.hi \
             WHERE c.window_start >= $4 AND c.window_start < $5 \
             GROUP BY 1, 2 HAVING count(*) > 1",
        )
        .bind(spans.iter().map(|s| s.0).collect::<Vec<_>>())
        .bind(spans.iter().map(|s| at(s.1)).collect::<Vec<_>>())
        .bind(spans.iter().map(|s| at(s.2)).collect::<Vec<_>>())
        .bind(at(lo))
        .bind(at(hi))
        .fetch_all(&mut *conn)
        .await?;
        for row in rows {
            let t: DateTime<Utc> = row.try_get(1)?;
            let key = (row.try_get(0)?, micros(t));
            pieces.entry(key).or_default();
            seal.insert(key);
        }
    }
    if !pieces.is_empty() {
        rewritten += write_closed(conn, pieces, &names, &seal).await?;
    }
    if !head_tsid.is_empty() {
        copy_head(conn, head_tsid, head_time, head_value).await?;
    }
    if !new_heads.is_empty() {
        sqlx::query(
            "UPDATE series_tagsets t SET head_window = u.h \
             FROM UNNEST($1::bigint[], $2::timestamptz[]) AS u(tsid, h) WHERE t.tsid = u.tsid",
        )
        .bind(new_heads.iter().map(|h| h.0).collect::<Vec<_>>())
        .bind(new_heads.iter().map(|h| h.1.map(at)).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    Ok(rewritten)
}

/// Writes the pieces of closed windows: a new chunk where the window has none; all of its rows
/// and the piece merged into one where it would hold more than [`MAX_FRAGMENTS`] rows or fewer
/// than [`MERGE_BELOW`] samples; else a fragment.
async fn write_closed(
    conn: &mut PgConnection,
    pieces: BTreeMap<(i64, i64), Samples>,
    names: &HashMap<i64, &TagsetName<'_>>,
    seal: &std::collections::HashSet<(i64, i64)>,
) -> std::result::Result<u64, WriteFailure> {
    let keys: Vec<(i64, i64)> = pieces.keys().copied().collect();
    let existing = sqlx::query(
        "SELECT c.tsid, c.window_start, count(*), max(c.seq), sum(c.count)::bigint FROM chunks c \
         JOIN UNNEST($1::bigint[], $2::timestamptz[]) AS u(tsid, w) \
         ON c.tsid = u.tsid AND c.window_start = u.w \
         WHERE c.window_start >= $3 AND c.window_start <= $4 GROUP BY 1, 2",
    )
    .bind(keys.iter().map(|k| k.0).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| at(k.1)).collect::<Vec<_>>())
    .bind(at(keys.iter().map(|k| k.1).min().unwrap_or(0)))
    .bind(at(keys.iter().map(|k| k.1).max().unwrap_or(0)))
    .fetch_all(&mut *conn)
    .await?;
    let mut stored: HashMap<(i64, i64), (i64, i16, i64)> = HashMap::new();
    for row in existing {
        let t: DateTime<Utc> = row.try_get(1)?;
        stored.insert(
            (row.try_get(0)?, micros(t)),
            (row.try_get(2)?, row.try_get(3)?, row.try_get(4)?),
        );
    }
    let mut new_rows = Vec::with_capacity(pieces.len());
    let mut rewritten = 0u64;
    let mut merging: BTreeMap<(i64, i64), Samples> = BTreeMap::new();
    for (key, samples) in pieces {
        match stored.get(&key) {
            None if samples.is_empty() => {}
            None => new_rows.push(NewChunk {
                tsid: key.0,
                window: key.1,
                seq: 0,
                samples,
            }),
            Some(&(rows, max_seq, count))
                if !seal.contains(&key)
                    && rows < MAX_FRAGMENTS
                    && max_seq < i16::MAX
                    && count + samples.len() as i64 >= MERGE_BELOW =>
            {
                new_rows.push(NewChunk {
                    tsid: key.0,
                    window: key.1,
                    seq: max_seq + 1,
                    samples,
                })
            }
            Some(_) => {
                merging.insert(key, samples);
            }
        }
    }
    if !merging.is_empty() {
        let keys: Vec<(i64, i64)> = merging.keys().copied().collect();
        let rows = sqlx::query(
            "DELETE FROM chunks c USING UNNEST($1::bigint[], $2::timestamptz[]) AS u(tsid, w) \
             WHERE c.tsid = u.tsid AND c.window_start = u.w \
             RETURNING c.tsid, c.window_start, c.seq, c.data",
        )
        .bind(keys.iter().map(|k| k.0).collect::<Vec<_>>())
        .bind(keys.iter().map(|k| at(k.1)).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?;
        rewritten += rows.len() as u64;
        let mut fragments: BTreeMap<(i64, i64), Vec<Fragment>> = BTreeMap::new();
        for row in rows {
            let t: DateTime<Utc> = row.try_get(1)?;
            fragments
                .entry((row.try_get(0)?, micros(t)))
                .or_default()
                .push((row.try_get(2)?, row.try_get(3)?));
        }
        for (key, newer) in merging {
            let mut parts = Vec::new();
            for (seq, data) in fragments.remove(&key).unwrap_or_default() {
                let part = chunk::decode(&data).map_err(|e| match names.get(&key.0) {
                    Some(name) => name.damaged(key.1, e),
                    None => Error::corrupted(format!("a chunk is damaged: {e}")),
                })?;
                parts.push((seq, part));
            }
            let merged = merge_fragments(parts);
            new_rows.push(NewChunk {
                tsid: key.0,
                window: key.1,
                seq: 0,
                samples: merged.overwrite(&newer),
            });
        }
    }
    insert_chunks(conn, &new_rows).await?;
    Ok(rewritten)
}

/// Inserts chunk rows: the summary in columns, the samples encoded.
async fn insert_chunks(
    conn: &mut PgConnection,
    rows: &[NewChunk],
) -> std::result::Result<(), WriteFailure> {
    for piece in rows.chunks(CHUNKS_PER_INSERT) {
        let n = piece.len();
        let mut cols = ChunkColumns::with_capacity(n);
        for row in piece {
            let Some(summary) = row.samples.summary() else {
                continue;
            };
            cols.push(
                row.tsid,
                row.window,
                row.seq,
                &summary,
                chunk::encode(&row.samples),
            );
        }
        cols.insert(conn).await?;
    }
    Ok(())
}

/// The columns of chunk rows, as arrays for one `INSERT … FROM UNNEST`.
#[derive(Default)]
struct ChunkColumns {
    tsid: Vec<i64>,
    window: Vec<DateTime<Utc>>,
    first_time: Vec<DateTime<Utc>>,
    last_time: Vec<DateTime<Utc>>,
    sum: Vec<f64>,
    sum_comp: Vec<f64>,
    min: Vec<f64>,
    max: Vec<f64>,
    first: Vec<f64>,
    last: Vec<f64>,
    count: Vec<i32>,
    check: Vec<i32>,
    seq: Vec<i16>,
    sum_scaled: Vec<bool>,
    data: Vec<Vec<u8>>,
}

impl ChunkColumns {
    fn with_capacity(n: usize) -> Self {
        ChunkColumns {
            tsid: Vec::with_capacity(n),
            data: Vec::with_capacity(n),
            ..ChunkColumns::default()
        }
    }

    fn push(&mut self, tsid: i64, window: i64, seq: i16, summary: &Summary, data: Vec<u8>) {
        let (sum, comp, scaled) = summary.sum.parts();
        self.tsid.push(tsid);
        self.window.push(at(window));
        self.first_time.push(at(summary.first.0));
        self.last_time.push(at(summary.last.0));
        self.sum.push(sum);
        self.sum_comp.push(comp);
        self.min.push(summary.min);
        self.max.push(summary.max);
        self.first.push(summary.first.1);
        self.last.push(summary.last.1);
        // A window holds at most one sample a microsecond: 600 million, within i32.
        self.count
            .push(i32::try_from(summary.count).unwrap_or(i32::MAX));
        self.check.push(summary.checksum() as i32);
        self.seq.push(seq);
        self.sum_scaled.push(scaled);
        self.data.push(data);
    }

    async fn insert(self, conn: &mut PgConnection) -> std::result::Result<(), sqlx::Error> {
        if self.tsid.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO chunks (tsid, window_start, first_time, last_time, sum, sum_comp, \
             min, max, first, last, count, \"check\", seq, sum_scaled, data) \
             SELECT * FROM UNNEST($1::bigint[], $2::timestamptz[], $3::timestamptz[], \
             $4::timestamptz[], $5::float8[], $6::float8[], $7::float8[], $8::float8[], \
             $9::float8[], $10::float8[], $11::int4[], $12::int4[], $13::int2[], $14::bool[], \
             $15::bytea[])",
        )
        .bind(self.tsid)
        .bind(self.window)
        .bind(self.first_time)
        .bind(self.last_time)
        .bind(self.sum)
        .bind(self.sum_comp)
        .bind(self.min)
        .bind(self.max)
        .bind(self.first)
        .bind(self.last)
        .bind(self.count)
        .bind(self.check)
        .bind(self.seq)
        .bind(self.sum_scaled)
        .bind(self.data)
        .execute(conn)
        .await
        .map(drop)
    }
}

/// Microseconds from the Unix epoch to PostgreSQL's, 2000-01-01T00:00:00Z.
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// `(tsid, time, value)` rows in `COPY`'s binary format.
fn binary_head_rows(tsids: &[i64], times: &[DateTime<Utc>], values: &[f64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(21 + tsids.len() * 38);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    for ((tsid, t), value) in tsids.iter().zip(times).zip(values) {
        out.extend_from_slice(&3i16.to_be_bytes());
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&tsid.to_be_bytes());
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&(micros(*t) - POSTGRES_EPOCH_MICROS).to_be_bytes());
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&value.to_bits().to_be_bytes());
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

/// The head rows by binary `COPY` under a savepoint; a batch that rewrites a stored key fails
/// the unique check and runs again as an `UNNEST … ON CONFLICT DO UPDATE` upsert.
async fn copy_head(
    conn: &mut PgConnection,
    tsids: Vec<i64>,
    times: Vec<DateTime<Utc>>,
    values: Vec<f64>,
) -> std::result::Result<(), sqlx::Error> {
    for ((tsids, times), values) in tsids
        .chunks(super::write::INSERT_CHUNK)
        .zip(times.chunks(super::write::INSERT_CHUNK))
        .zip(values.chunks(super::write::INSERT_CHUNK))
    {
        let data = binary_head_rows(tsids, times, values);
        sqlx::raw_sql("SAVEPOINT aimon_head")
            .execute(&mut *conn)
            .await?;
        let copied = async {
            let mut copy = conn
                .copy_in_raw("COPY samples (tsid, time, value) FROM STDIN (FORMAT binary)")
                .await?;
            copy.send(data).await?;
            copy.finish().await
        }
        .await;
        match copied {
            Ok(_) => {
                sqlx::raw_sql("RELEASE SAVEPOINT aimon_head")
                    .execute(&mut *conn)
                    .await?;
            }
            Err(e) if sqlstate(&e).as_deref() == Some(UNIQUE_VIOLATION) => {
                sqlx::raw_sql("ROLLBACK TO SAVEPOINT aimon_head")
                    .execute(&mut *conn)
                    .await?;
                sqlx::query(
                    "INSERT INTO samples (tsid, time, value) \
                     SELECT * FROM UNNEST($1::bigint[], $2::timestamptz[], $3::float8[]) \
                     ON CONFLICT (tsid, time) DO UPDATE SET value = EXCLUDED.value",
                )
                .bind(tsids)
                .bind(times)
                .bind(values)
                .execute(&mut *conn)
                .await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A tag set to read: its number, series id and canonical tags JSON.
#[derive(Debug, Clone)]
pub(crate) struct Tagset {
    pub tsid: i64,
    pub series_id: String,
    pub tags: String,
    /// The value of a history query's `group_by` tag.
    pub group: Option<String>,
}

impl Tagset {
    pub(crate) fn name(&self) -> TagsetName<'_> {
        TagsetName {
            series_id: &self.series_id,
            tags: &self.tags,
        }
    }

    /// Folds this tag set's `samples` in `[low, high)` into `downsampler`, per bucket of
    /// `step` ([`chunk::fold_buckets`]).
    pub(crate) fn fold(
        &self,
        samples: &Samples,
        low: i64,
        high: i64,
        step: i64,
        downsampler: &mut Downsampler,
    ) {
        chunk::fold_buckets(
            samples,
            low,
            high,
            step,
            self.group.as_deref(),
            &self.series_id,
            &self.tags,
            downsampler,
        );
    }
}

/// Every stored sample of `tagsets` in `[low, high)`, per tag set in time order: the chunks of
/// each window merged (later `seq` overwriting earlier), then the head's rows over them.
pub(crate) async fn read(
    conn: &mut PgConnection,
    tagsets: &[Tagset],
    low: i64,
    high: i64,
) -> Result<HashMap<i64, Samples>> {
    let mut out: HashMap<i64, Samples> = HashMap::new();
    if tagsets.is_empty() || low >= high {
        return Ok(out);
    }
    let tsids: Vec<i64> = tagsets.iter().map(|t| t.tsid).collect();
    let index: HashMap<i64, &Tagset> = tagsets.iter().map(|t| (t.tsid, t)).collect();
    let rows = sqlx::query(
        "SELECT tsid, window_start, data FROM chunks WHERE tsid = ANY($1) \
         AND window_start >= $2 AND window_start < $3 AND last_time >= $4 AND first_time < $3 \
         ORDER BY tsid, window_start, seq",
    )
    .bind(&tsids)
    .bind(at(window_start(low, WINDOW)))
    .bind(at(high))
    .bind(at(low))
    .fetch_all(&mut *conn)
    .await
    .db()?;
    let mut current: Option<(i64, i64, Samples)> = None;
    let flush = |out: &mut HashMap<i64, Samples>, done: Option<(i64, i64, Samples)>| {
        if let Some((tsid, _, samples)) = done {
            let all = out.entry(tsid).or_default();
            let taken = std::mem::take(all);
            *all = taken.overwrite(&samples);
        }
    };
    for row in rows {
        let tsid: i64 = row.try_get(0).db()?;
        let w = micros(row.try_get(1).db()?);
        let data: &[u8] = row.try_get(2).db()?;
        let part = chunk::decode(data).map_err(|e| match index.get(&tsid) {
            Some(t) => t.name().damaged(w, e),
            None => Error::corrupted(format!("a chunk is damaged: {e}")),
        })?;
        match &mut current {
            Some((t, cw, samples)) if *t == tsid && *cw == w => {
                *samples = std::mem::take(samples).overwrite(&part);
            }
            _ => {
                let done = current.replace((tsid, w, part));
                flush(&mut out, done);
            }
        }
    }
    flush(&mut out, current.take());
    let head = head_rows(conn, &tsids, low, high).await?;
    for (tsid, rows) in head {
        let newer = Samples::from_unsorted(rows);
        let all = out.entry(tsid).or_default();
        let taken = std::mem::take(all);
        *all = taken.overwrite(&newer);
    }
    for samples in out.values_mut() {
        let r = samples.range(low, high);
        if r.start > 0 || r.end < samples.len() {
            samples.timestamps = samples.timestamps[r.clone()].to_vec();
            samples.values = samples.values[r].to_vec();
        }
    }
    out.retain(|_, s| !s.is_empty());
    Ok(out)
}

/// The head's rows of `tsids` in `[low, high)`, per tag set.
async fn head_rows(
    conn: &mut PgConnection,
    tsids: &[i64],
    low: i64,
    high: i64,
) -> Result<HashMap<i64, Vec<(i64, f64)>>> {
    let rows = sqlx::query(
        "SELECT tsid, time, value FROM samples WHERE tsid = ANY($1) AND time >= $2 AND time < $3",
    )
    .bind(tsids)
    .bind(at(low))
    .bind(at(high))
    .fetch_all(&mut *conn)
    .await
    .db()?;
    rows_by_tagset(rows)
}

/// Folds the samples of `tagsets` in `[low, high)` into `downsampler`: the summary of every
/// window that is the only chunk row of its window, lies wholly inside the range and inside one
/// bucket, and has no head row; the decoded samples of the others (the windows a bucket or the
/// range splits, fragments) and the head's rows, per bucket.
///
/// With `head_by_server`, head rows are aggregated by the server where that may be exact, and
/// the error bounds of those float sums are added to `bounds`, for the caller to check against
/// the final buckets (a part's sum may cancel against another's); without it, they are read.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn history(
    conn: &mut PgConnection,
    tagsets: &[Tagset],
    low: i64,
    high: i64,
    step: i64,
    aggregation: Aggregation,
    head_by_server: bool,
    bounds: &mut ErrorBounds,
    downsampler: &mut Downsampler,
) -> Result<()> {
    if tagsets.is_empty() || low >= high {
        return Ok(());
    }
    let tsids: Vec<i64> = tagsets.iter().map(|t| t.tsid).collect();
    let index: HashMap<i64, &Tagset> = tagsets.iter().map(|t| (t.tsid, t)).collect();
    // Summaries where they can answer; the data of the windows a bucket or the range splits.
    // No order and no window function: the server only filters index ranges.
    let rows = sqlx::query(
        "SELECT tsid, window_start, count AS n, first_time AS t1, last_time AS t2, sum AS s, \
         sum_comp AS comp, sum_scaled AS scaled, min AS lo, max AS hi, first AS f, last AS l, \
         \"check\" AS chk, \
         CASE WHEN window_start >= $4 AND window_start + $6::interval <= $3 \
              AND date_bin($5::bigint * INTERVAL '1 microsecond', window_start, TIMESTAMPTZ 'epoch') \
                = date_bin($5::bigint * INTERVAL '1 microsecond', \
                           window_start + $6::interval - INTERVAL '1 microsecond', TIMESTAMPTZ 'epoch') \
              THEN NULL ELSE data END, seq \
         FROM chunks WHERE tsid = ANY($1) AND window_start >= $2 AND window_start < $3 \
         AND last_time >= $4 AND first_time < $3",
    )
    .bind(&tsids)
    .bind(at(window_start(low, WINDOW)))
    .bind(at(high))
    .bind(at(low))
    .bind(step)
    .bind(chrono::TimeDelta::microseconds(WINDOW))
    .fetch_all(&mut *conn)
    .await
    .db()?;
    let mut keys = Vec::with_capacity(rows.len());
    let mut pieces: HashMap<(i64, i64), u32> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let key = (row.try_get::<i64, _>(0).db()?, micros(row.try_get(1).db()?));
        *pieces.entry(key).or_default() += 1;
        keys.push(key);
    }
    // The head rows per window, to merge over the chunks of their window (or, for
    // aggregations other than first and last, aggregated by the server where no chunk shares
    // their window and the float sum is as exact as a compensated one).
    let mut head_windows: HashMap<(i64, i64), Samples> = HashMap::new();
    let by_server =
        head_by_server && !matches!(aggregation, Aggregation::First | Aggregation::Last);
    let head = if by_server {
        let wanted = head_aggregates(
            conn,
            &tsids,
            low,
            high,
            step,
            &pieces,
            &index,
            bounds,
            downsampler,
        )
        .await?;
        head_rows_of_windows(conn, &wanted).await?
    } else {
        head_rows(conn, &tsids, low, high).await?
    };
    for (tsid, rows) in head {
        for (w, part) in by_window(&Samples::from_unsorted(rows)) {
            head_windows.insert((tsid, w), part);
        }
    }
    // Decoded fragments per window, with their seq.
    let mut parts: BTreeMap<(i64, i64), Vec<(i16, Samples)>> = BTreeMap::new();
    let mut refetch: Vec<(i64, i64)> = Vec::new();
    for (row, &(tsid, w)) in rows.iter().zip(&keys) {
        let Some(tagset) = index.get(&tsid) else {
            continue;
        };
        let data: Option<&[u8]> = row.try_get(13).db()?;
        match data {
            Some(data) => {
                let part = chunk::decode(data).map_err(|e| tagset.name().damaged(w, e))?;
                parts
                    .entry((tsid, w))
                    .or_default()
                    .push((row.try_get(14).db()?, part));
            }
            None if pieces[&(tsid, w)] > 1 || head_windows.contains_key(&(tsid, w)) => {
                // Fragments or head rows over a whole window: decoded after all (once).
                if parts.insert((tsid, w), Vec::new()).is_none() {
                    refetch.push((tsid, w));
                }
            }
            None => {
                let summary = summary_from_row(row).map_err(|e| tagset.name().damaged(w, e))?;
                downsampler.merge(
                    tagset.group.clone(),
                    bucket_start(w, step),
                    summary.aggregate(&tagset.series_id, &tagset.tags),
                );
            }
        }
    }
    if !refetch.is_empty() {
        let rows = sqlx::query(
            "SELECT c.tsid, c.window_start, c.data, c.seq FROM chunks c \
             JOIN UNNEST($1::bigint[], $2::timestamptz[]) AS u(tsid, w) \
             ON c.tsid = u.tsid AND c.window_start = u.w",
        )
        .bind(refetch.iter().map(|r| r.0).collect::<Vec<_>>())
        .bind(refetch.iter().map(|r| at(r.1)).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await
        .db()?;
        for row in rows {
            let tsid: i64 = row.try_get(0).db()?;
            let w = micros(row.try_get(1).db()?);
            let data: &[u8] = row.try_get(2).db()?;
            let Some(tagset) = index.get(&tsid) else {
                continue;
            };
            let part = chunk::decode(data).map_err(|e| tagset.name().damaged(w, e))?;
            parts
                .entry((tsid, w))
                .or_default()
                .push((row.try_get(3).db()?, part));
        }
    }
    let mut decoded: BTreeMap<(i64, i64), Samples> = BTreeMap::new();
    for (key, fragments) in parts {
        decoded.insert(key, merge_fragments(fragments));
    }
    for (key, newer) in head_windows {
        let merged = decoded.entry(key).or_default();
        *merged = std::mem::take(merged).overwrite(&newer);
    }
    for ((tsid, _), samples) in decoded {
        let Some(tagset) = index.get(&tsid) else {
            continue;
        };
        tagset.fold(&samples, low, high, step, downsampler);
    }
    Ok(())
}

/// The head's rows of `tsids` in `[low, high)` aggregated by the server per tag set, window and
/// bucket, merged into `downsampler` where no chunk row shares the window (head rows overwrite
/// chunks, see [`read`]) and the float sum is finite; the float sum's error bound
/// `(n-1)·2⁻⁵³·Σ|v|` goes to `bounds`, which the caller checks against the final bucket (the
/// shared semantics want it within 1e-10 of the sum; else the rows are read after all).
/// Returns the windows whose rows must be read instead. `first` and `last` are not computed
/// here.
#[allow(clippy::too_many_arguments)]
async fn head_aggregates(
    conn: &mut PgConnection,
    tsids: &[i64],
    low: i64,
    high: i64,
    step: i64,
    chunked: &HashMap<(i64, i64), u32>,
    index: &HashMap<i64, &Tagset>,
    bounds: &mut ErrorBounds,
    downsampler: &mut Downsampler,
) -> Result<Vec<(i64, i64)>> {
    let rows = sqlx::query(
        "SELECT tsid, date_bin($4::interval, time, TIMESTAMPTZ 'epoch'), min(time), count(*), \
         sum(value), sum(abs(value)), min(value), max(value) FROM samples \
         WHERE tsid = ANY($1) AND time >= $2 AND time < $3 \
         GROUP BY 1, 2, date_bin($5::bigint * INTERVAL '1 microsecond', time, TIMESTAMPTZ 'epoch')",
    )
    .bind(tsids)
    .bind(at(low))
    .bind(at(high))
    .bind(chrono::TimeDelta::microseconds(WINDOW))
    .bind(step)
    .fetch_all(&mut *conn)
    .await
    .db()?;
    // First the windows whose rows must be read (a window is read whole: none of its buckets
    // may be merged here then), then the aggregates of the others.
    let mut wanted: std::collections::BTreeSet<(i64, i64)> = std::collections::BTreeSet::new();
    let mut groups = Vec::with_capacity(rows.len());
    for row in &rows {
        let tsid: i64 = row.try_get(0).db()?;
        let w = micros(row.try_get(1).db()?);
        let count: i64 = row.try_get(3).db()?;
        let sum: f64 = row.try_get(4).db()?;
        let abs_sum: f64 = row.try_get(5).db()?;
        let bound = (count.saturating_sub(1)) as f64 * f64::EPSILON / 2.0 * abs_sum;
        if chunked.contains_key(&(tsid, w)) || !sum.is_finite() {
            wanted.insert((tsid, w));
        }
        groups.push((tsid, w, count, sum, bound));
    }
    for (row, (tsid, w, count, sum, bound)) in rows.iter().zip(groups) {
        if wanted.contains(&(tsid, w)) {
            continue;
        }
        let Some(tagset) = index.get(&tsid) else {
            continue;
        };
        let first = micros(row.try_get(2).db()?);
        let key = || (first, tagset.series_id.clone(), tagset.tags.clone());
        bounds.add(&tagset.group, bucket_start(first, step), bound);
        downsampler.merge(
            tagset.group.clone(),
            bucket_start(first, step),
            aimon_core::downsample::BucketAggregate {
                count: u64::try_from(count).map_err(|_| {
                    Error::corrupted("the server counted a negative number of rows")
                })?,
                sum: CompensatedSum::from_parts(sum, 0.0, false),
                min: row.try_get(6).db()?,
                max: row.try_get(7).db()?,
                // Not read: the aggregation is neither first nor last.
                first: (key(), f64::NAN),
                last: (key(), f64::NAN),
            },
        );
    }
    Ok(wanted.into_iter().collect())
}

/// The head's rows of the windows `wanted` (tag set, window start).
async fn head_rows_of_windows(
    conn: &mut PgConnection,
    wanted: &[(i64, i64)],
) -> Result<HashMap<i64, Vec<(i64, f64)>>> {
    if wanted.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query(
        "SELECT s.tsid, s.time, s.value FROM samples s \
         JOIN UNNEST($1::bigint[], $2::timestamptz[]) AS u(tsid, w) \
         ON s.tsid = u.tsid AND s.time >= u.w AND s.time < u.w + $3::interval",
    )
    .bind(wanted.iter().map(|w| w.0).collect::<Vec<_>>())
    .bind(wanted.iter().map(|w| at(w.1)).collect::<Vec<_>>())
    .bind(chrono::TimeDelta::microseconds(WINDOW))
    .fetch_all(&mut *conn)
    .await
    .db()?;
    rows_by_tagset(rows)
}

/// Head rows `(tsid, time, value)` grouped by tag set, in the order read.
fn rows_by_tagset(rows: Vec<sqlx::postgres::PgRow>) -> Result<HashMap<i64, Vec<(i64, f64)>>> {
    let mut out: HashMap<i64, Vec<(i64, f64)>> = HashMap::new();
    for row in rows {
        let tsid: i64 = row.try_get(0).db()?;
        let t: DateTime<Utc> = row.try_get(1).db()?;
        out.entry(tsid)
            .or_default()
            .push((micros(t), row.try_get(2).db()?));
    }
    Ok(out)
}

/// The summary in a row of a history query, checked against its CRC: the columns `n` (count,
/// an `int4` or `int8`), `s`, `comp`, `scaled`, `lo`, `hi`, `t1`, `f`, `t2`, `l` and `chk`.
pub(crate) fn summary_from_row(
    row: &sqlx::postgres::PgRow,
) -> std::result::Result<Summary, String> {
    let get = |e: sqlx::Error| e.to_string();
    let count: i64 = match row.try_get::<i32, _>("n") {
        Ok(n) => n.into(),
        Err(_) => row.try_get("n").map_err(get)?,
    };
    let first_time: DateTime<Utc> = row.try_get("t1").map_err(get)?;
    let last_time: DateTime<Utc> = row.try_get("t2").map_err(get)?;
    let summary = Summary {
        count: u64::try_from(count).map_err(|_| "a negative count".to_owned())?,
        sum: CompensatedSum::from_parts(
            row.try_get("s").map_err(get)?,
            row.try_get("comp").map_err(get)?,
            row.try_get("scaled").map_err(get)?,
        ),
        min: row.try_get("lo").map_err(get)?,
        max: row.try_get("hi").map_err(get)?,
        first: (micros(first_time), row.try_get("f").map_err(get)?),
        last: (micros(last_time), row.try_get("l").map_err(get)?),
    };
    let check: i32 = row.try_get("chk").map_err(get)?;
    if summary.checksum() as i32 != check {
        return Err("its summary does not match its checksum".to_owned());
    }
    Ok(summary)
}

/// A window's fragments merged: later `seq` overwriting earlier at equal timestamps.
pub(crate) fn merge_fragments(mut parts: Vec<(i16, Samples)>) -> Samples {
    parts.sort_by_key(|p| p.0);
    parts.iter().fold(Samples::default(), |merged, (_, part)| {
        merged.overwrite(part)
    })
}

/// The summed error bounds of the float sums merged into each (group, bucket start): the
/// server's sums are plain `float8` additions, which the shared semantics accept where their
/// worst-case error is within 1e-10 of the bucket's sum. A part's bound is checked against the
/// whole bucket, not against the part: parts of one bucket may cancel each other.
#[derive(Default)]
pub(crate) struct ErrorBounds(HashMap<(Option<String>, i64), f64>);

impl ErrorBounds {
    pub(crate) fn add(&mut self, group: &Option<String>, bucket: i64, bound: f64) {
        *self.0.entry((group.clone(), bucket)).or_default() += bound;
    }

    /// Whether every bucket's bound is within 1e-10 of its sum (an average's sum is its value
    /// times its count).
    pub(crate) fn hold(
        &self,
        series: &[aimon_core::query::HistorySeries],
        aggregation: Aggregation,
    ) -> bool {
        if self.0.is_empty() || !matches!(aggregation, Aggregation::Sum | Aggregation::Avg) {
            return true;
        }
        series.iter().all(|s| {
            s.buckets.iter().all(|b| {
                let Some(bound) = self.0.get(&(s.group.clone(), micros(b.start))) else {
                    return true;
                };
                let sum = match aggregation {
                    Aggregation::Avg => b.value * b.count as f64,
                    _ => b.value,
                };
                *bound <= 1e-10 * sum.abs()
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_split_into_epoch_aligned_windows() {
        let s = Samples {
            timestamps: vec![0, WINDOW - 1, WINDOW, 3 * WINDOW + 5],
            values: vec![1.0, 2.0, 3.0, 4.0],
        };
        let parts = by_window(&s);
        let starts: Vec<i64> = parts.iter().map(|p| p.0).collect();
        assert_eq!(starts, [0, WINDOW, 3 * WINDOW]);
        assert_eq!(parts[0].1.values, [1.0, 2.0]);
    }

    #[test]
    fn the_window_divides_every_whole_minute_multiple_of_ten() {
        // partition_interval must be a multiple of the window: 10 min, 1 h, 6 h, 1 d, 1 w do.
        for minutes in [10, 60, 360, 1440, 10_080] {
            assert_eq!((minutes * 60_000_000) % WINDOW, 0);
        }
    }

    #[test]
    fn head_rows_in_binary_copy_format() {
        let rows = binary_head_rows(&[7], &[at(POSTGRES_EPOCH_MICROS + 1)], &[-0.0]);
        assert_eq!(&rows[..11], b"PGCOPY\n\xff\r\n\0");
        // Header (19 bytes), then field count 3 and the tsid.
        assert_eq!(&rows[19..21], &3i16.to_be_bytes());
        assert_eq!(&rows[25..33], &7i64.to_be_bytes());
        assert_eq!(&rows[37..45], &1i64.to_be_bytes());
        assert_eq!(&rows[49..57], &(-0.0f64).to_bits().to_be_bytes());
        assert_eq!(&rows[57..], &(-1i16).to_be_bytes());
    }
}
