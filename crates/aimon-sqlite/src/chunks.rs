//! Samples as chunks: the tag-set registry, appending samples, reading them back and the
//! summaries `metric_history` merges. The layout and its reasoning are in the crate docs
//! ("Samples as chunks").

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aimon_core::chunk::{self, Samples, Summary, window_start};
use aimon_core::downsample::{CompensatedSum, Downsampler, bucket_start};
use aimon_core::{Error, Result, Tags};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqliteRow};

use crate::backend::DbResult;
use crate::metrics::sample_value;

/// The length of a chunk's window: four hours, epoch-aligned (1,440 samples at the demo's
/// 10 s interval). The crate docs ("Samples as chunks") give the measurements behind it.
/// Changing it needs a migration that rewrites every chunk (windows of two lengths would
/// overlap).
pub(crate) const WINDOW: i64 = 4 * 3_600_000_000;

/// The rows a window may hold before a write seals them into one: the newest window of a tag
/// set collects one fragment a batch, so a steady writer re-encodes it every few batches and a
/// read decodes at most this many.
const MAX_FRAGMENTS: usize = 8;

/// One (series, tag set) of the registry, `series_tagsets`.
#[derive(Debug, Clone)]
pub(crate) struct Tagset {
    pub id: i64,
    pub series_id: Arc<str>,
    /// Canonical tags JSON ([`aimon_core::model::tags_json`]).
    pub tags: Arc<str>,
}

impl Tagset {
    /// The `Corrupted` error of a chunk of this tag set that does not decode.
    fn damaged(&self, window: i64, why: impl std::fmt::Display) -> Error {
        Error::corrupted(format!(
            "the chunk of series {:?} tags {} for the window starting {} is damaged: {why}",
            self.series_id,
            self.tags,
            aimon_core::time::from_micros(window).to_rfc3339()
        ))
    }
}

/// Samples of one (series, tag set) to write: [`write`] takes a batch of them.
pub(crate) struct Write<'a> {
    pub series_id: &'a str,
    /// Canonical tags JSON ([`aimon_core::model::tags_json`]).
    pub tags_json: Arc<str>,
    pub tags: Cow<'a, Tags>,
    /// In time order, one per timestamp (a later write of a timestamp already won).
    pub samples: Samples,
}

/// Registers a new (series, tag set) and its pairs; returns its id.
async fn register(conn: &mut SqliteConnection, w: &Write<'_>) -> Result<i64> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO series_tagsets (series_id, tags) VALUES (?, ?) RETURNING id",
    )
    .bind(w.series_id)
    .bind(&*w.tags_json)
    .fetch_one(&mut *conn)
    .await
    .db()?;
    for (key, value) in w.tags.iter() {
        sqlx::query(
            "INSERT OR IGNORE INTO tagset_pairs (\"key\", \"value\", tags) VALUES (?, ?, ?)",
        )
        .bind(key.as_str())
        .bind(value.as_str())
        .bind(&*w.tags_json)
        .execute(&mut *conn)
        .await
        .db()?;
    }
    Ok(id)
}

/// The columns of a chunk row as [`insert_chunks`] writes them.
const CHUNK_COLUMNS: usize = 16;

/// Chunk rows per `INSERT` (16 parameters a row).
const CHUNKS_PER_INSERT: usize = 100;

/// A chunk row to insert: (tag set, window, seq, samples), and the rowid it takes over from a
/// row it replaces (`None`: a new one).
type NewChunk = (i64, i64, i64, Samples, Option<i64>);

async fn insert_chunks(conn: &mut SqliteConnection, rows: &mut [NewChunk]) -> Result<()> {
    // Rows taking over a rowid first: a new row's rowid is one past the greatest, which may be
    // a rowid the seal removed and is about to give back.
    rows.sort_by_key(|row| row.4.is_none());
    for piece in rows.chunks(CHUNKS_PER_INSERT) {
        let mut sql = String::from(
            "INSERT INTO chunks (tagset, window_start, seq, count, first_ts, last_ts, sum, \
             sum_comp, sum_scaled, \"min\", \"max\", first, last, \"check\", data, rowid) \
             VALUES ",
        );
        for i in 0..piece.len() {
            sql.push_str(if i == 0 { "(" } else { ", (" });
            sql.push_str(&vec!["?"; CHUNK_COLUMNS].join(", "));
            sql.push(')');
        }
        // Audited: fixed text and placeholders.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (tagset, window, seq, samples, rowid) in piece {
            let summary = samples.summary().expect("chunks are never empty");
            let (sum, comp, scaled) = summary.sum.parts();
            query = query
                .bind(*tagset)
                .bind(*window)
                .bind(*seq)
                .bind(summary.count as i64)
                .bind(summary.first.0)
                .bind(summary.last.0)
                .bind(sum)
                .bind(comp)
                .bind(scaled)
                .bind(summary.min)
                .bind(summary.max)
                .bind(summary.first.1)
                .bind(summary.last.1)
                .bind(i64::from(summary.checksum()))
                .bind(chunk::encode(samples))
                .bind(*rowid);
        }
        query.execute(&mut *conn).await.db()?;
    }
    Ok(())
}

/// Decodes the rows of one window and merges them, later `seq` overwriting earlier.
async fn read_window(conn: &mut SqliteConnection, tagset: &Tagset, window: i64) -> Result<Samples> {
    let rows: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT data FROM chunks WHERE tagset = ? AND window_start = ? ORDER BY seq",
    )
    .bind(tagset.id)
    .bind(window)
    .fetch_all(&mut *conn)
    .await
    .db()?;
    let mut merged = Samples::default();
    for data in &rows {
        let part = chunk::decode(data).map_err(|e| tagset.damaged(window, e))?;
        merged = merged.overwrite(&part);
    }
    Ok(merged)
}

/// A window to seal: its rows' ids in `seq` order, and samples that overwrite them.
struct Seal {
    tagset: Tagset,
    window: i64,
    rowids: Vec<i64>,
    newer: Option<Samples>,
}

/// Writes a batch of samples, each [`Write`] of a distinct (series, tag set), overwriting
/// stored samples at the same timestamps, in a handful of statements whatever the batch's
/// size: tag sets are looked up together, the stored windows they touch read together, and the
/// new rows inserted together.
///
/// A window older than the tag set's newest one is closed: the write decodes its rows,
/// overwrites and seals them into one chunk. The newest window takes the samples as a new
/// fragment, until it holds [`MAX_FRAGMENTS`] rows and is sealed. A write that opens a newer
/// window seals the previous one, so only the newest window of a tag set is ever in fragments.
pub(crate) async fn write(conn: &mut SqliteConnection, writes: Vec<Write<'_>>) -> Result<()> {
    let writes: Vec<Write<'_>> = writes
        .into_iter()
        .filter(|w| !w.samples.is_empty())
        .collect();
    if writes.is_empty() {
        return Ok(());
    }
    // The tag sets' ids, registering the new ones.
    let keys: Vec<(&str, &str)> = writes
        .iter()
        .map(|w| (w.series_id, &*w.tags_json))
        .collect();
    let mut ids: Vec<Option<i64>> = vec![None; writes.len()];
    let found: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT j.key, t.id FROM json_each(?) AS j JOIN series_tagsets t \
         ON t.series_id = j.value ->> 0 AND t.tags = j.value ->> 1",
    )
    .bind(serde_json::to_string(&keys)?)
    .fetch_all(&mut *conn)
    .await
    .db()?;
    for (i, id) in found {
        if let Some(slot) = usize::try_from(i).ok().and_then(|i| ids.get_mut(i)) {
            *slot = Some(id);
        }
    }
    let mut tagsets = Vec::with_capacity(writes.len());
    for (w, id) in writes.iter().zip(ids) {
        let id = match id {
            Some(id) => id,
            None => register(conn, w).await?,
        };
        tagsets.push(Tagset {
            id,
            series_id: Arc::from(w.series_id),
            tags: Arc::clone(&w.tags_json),
        });
    }

    // The stored rows of every window from the earlier of the write's first window and the
    // tag set's newest one: (tag set, window) → (seq, rowid) in `seq` order.
    let probes: Vec<(i64, i64)> = writes
        .iter()
        .zip(&tagsets)
        .map(|(w, t)| (t.id, window_start(w.samples.timestamps[0], WINDOW)))
        .collect();
    let stored: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT c.tagset, c.window_start, c.seq, c.rowid FROM json_each(?) AS j \
         JOIN chunks c ON c.tagset = j.value ->> 0 AND c.window_start >= min(j.value ->> 1, \
         coalesce((SELECT max(x.window_start) FROM chunks x WHERE x.tagset = j.value ->> 0), \
         j.value ->> 1)) ORDER BY c.tagset, c.window_start, c.seq",
    )
    .bind(serde_json::to_string(&probes)?)
    .fetch_all(&mut *conn)
    .await
    .db()?;
    let mut windows: HashMap<i64, BTreeMap<i64, Vec<(i64, i64)>>> = HashMap::new();
    for (tagset, window, seq, rowid) in stored {
        windows
            .entry(tagset)
            .or_default()
            .entry(window)
            .or_default()
            .push((seq, rowid));
    }

    let mut inserts: Vec<NewChunk> = Vec::new();
    let mut seals: Vec<Seal> = Vec::new();
    let empty = BTreeMap::new();
    for (w, tagset) in writes.into_iter().zip(tagsets) {
        let stored = windows.get(&tagset.id).unwrap_or(&empty);
        let last = *w.samples.timestamps.last().expect("not empty");
        let stored_newest = stored.keys().next_back().copied();
        let newest = stored_newest.map_or(window_start(last, WINDOW), |n| {
            n.max(window_start(last, WINDOW))
        });
        let mut start = 0;
        let samples = &w.samples;
        let mut sealed_previous = false;
        while start < samples.len() {
            let window = window_start(samples.timestamps[start], WINDOW);
            let end = samples.timestamps[start..]
                .partition_point(|&t| t < window.saturating_add(WINDOW))
                + start;
            let part = Samples {
                timestamps: samples.timestamps[start..end].to_vec(),
                values: samples.values[start..end].to_vec(),
            };
            if stored_newest == Some(window) && window < newest {
                sealed_previous = true;
            }
            match stored.get(&window) {
                None => inserts.push((tagset.id, window, 0, part, None)),
                Some(rows) if window == newest && rows.len() < MAX_FRAGMENTS => {
                    let seq = rows.last().map_or(0, |&(seq, _)| seq + 1);
                    inserts.push((tagset.id, window, seq, part, None));
                }
                Some(rows) => seals.push(Seal {
                    tagset: tagset.clone(),
                    window,
                    rowids: rows.iter().map(|&(_, rowid)| rowid).collect(),
                    newer: Some(part),
                }),
            }
            start = end;
        }
        // The previous newest window, now closed, when the write left it untouched.
        if let Some(previous) = stored_newest.filter(|&p| p < newest && !sealed_previous)
            && let Some(rows) = stored.get(&previous).filter(|rows| rows.len() > 1)
        {
            seals.push(Seal {
                tagset: tagset.clone(),
                window: previous,
                rowids: rows.iter().map(|&(_, rowid)| rowid).collect(),
                newer: None,
            });
        }
    }

    if !seals.is_empty() {
        let rowids: Vec<i64> = seals
            .iter()
            .flat_map(|s| s.rowids.iter().copied())
            .collect();
        let rowids = serde_json::to_string(&rowids)?;
        let blobs: HashMap<i64, Vec<u8>> = sqlx::query_as(
            "SELECT rowid, data FROM chunks WHERE rowid IN (SELECT value FROM json_each(?))",
        )
        .bind(&rowids)
        .fetch_all(&mut *conn)
        .await
        .db()?
        .into_iter()
        .collect();
        for seal in seals {
            let mut merged = Samples::default();
            for rowid in &seal.rowids {
                let data = blobs
                    .get(rowid)
                    .ok_or_else(|| seal.tagset.damaged(seal.window, "a row went missing"))?;
                let part = chunk::decode(data).map_err(|e| seal.tagset.damaged(seal.window, e))?;
                merged = merged.overwrite(&part);
            }
            if let Some(newer) = &seal.newer {
                merged = merged.overwrite(newer);
            }
            // The sealed row takes the place of the window's first row: its page has room from
            // the rows the seal removes more often than the table's end, and the file stays
            // dense (measured: 17% of the chunk pages were holes with a fresh rowid).
            inserts.push((
                seal.tagset.id,
                seal.window,
                0,
                merged,
                seal.rowids.first().copied(),
            ));
        }
        sqlx::query("DELETE FROM chunks WHERE rowid IN (SELECT value FROM json_each(?))")
            .bind(&rowids)
            .execute(&mut *conn)
            .await
            .db()?;
    }
    insert_chunks(conn, &mut inserts).await
}

/// The ids of `tagsets` as a JSON array, for `json_each`.
fn ids_json(tagsets: &[Tagset]) -> Result<String> {
    Ok(serde_json::to_string(
        &tagsets.iter().map(|t| t.id).collect::<Vec<_>>(),
    )?)
}

/// The samples of `tagsets` in `[lo, hi)`, each tag set's in time order (tag sets without any
/// are left out), in one statement.
pub(crate) async fn load(
    conn: &mut SqliteConnection,
    tagsets: &[Tagset],
    lo: i64,
    hi: i64,
) -> Result<Vec<(Tagset, Samples)>> {
    let mut out = Vec::new();
    if lo >= hi || tagsets.is_empty() {
        return Ok(out);
    }
    let rows = sqlx::query(
        "SELECT c.tagset, c.window_start, c.data FROM json_each(?1) AS j \
         JOIN chunks c ON c.tagset = j.value AND c.window_start > ?2 AND c.window_start < ?3 \
         ORDER BY c.tagset, c.window_start, c.seq",
    )
    .bind(ids_json(tagsets)?)
    .bind(lo.saturating_sub(WINDOW))
    .bind(hi)
    .fetch_all(&mut *conn)
    .await
    .db()?;
    let by_id: HashMap<i64, &Tagset> = tagsets.iter().map(|t| (t.id, t)).collect();
    let mut current: Option<(i64, i64)> = None;
    let mut all = Samples::default();
    let mut window = Samples::default();
    for row in &rows {
        let key: (i64, i64) = (row.try_get(0).db()?, row.try_get(1).db()?);
        let tagset = by_id[&key.0];
        let data: Vec<u8> = row.try_get(2).db()?;
        let part = chunk::decode(&data).map_err(|e| tagset.damaged(key.1, e))?;
        if current != Some(key) {
            append_range(&mut all, &window, lo, hi);
            window = Samples::default();
            if let Some((previous, _)) = current.filter(|&(id, _)| id != key.0)
                && !all.is_empty()
            {
                out.push(((*by_id[&previous]).clone(), std::mem::take(&mut all)));
            }
            current = Some(key);
        }
        window = window.overwrite(&part);
    }
    append_range(&mut all, &window, lo, hi);
    if let Some((id, _)) = current
        && !all.is_empty()
    {
        out.push(((*by_id[&id]).clone(), all));
    }
    Ok(out)
}

fn append_range(all: &mut Samples, window: &Samples, lo: i64, hi: i64) {
    let range = window.range(lo, hi);
    all.timestamps
        .extend_from_slice(&window.timestamps[range.clone()]);
    all.values.extend_from_slice(&window.values[range]);
}

/// The ids of the tag sets holding a sample in `[lo, hi)`: from the chunks' first and last
/// timestamps where they decide it, decoding only chunks that straddle a bound.
pub(crate) async fn with_sample_in(
    conn: &mut SqliteConnection,
    tagsets: &[Tagset],
    lo: i64,
    hi: i64,
) -> Result<std::collections::HashSet<i64>> {
    let mut found = std::collections::HashSet::new();
    if lo >= hi || tagsets.is_empty() {
        return Ok(found);
    }
    // A chunk whose samples all lie in the range settles it; one straddling a bound needs its
    // data, read only where no chunk of its tag set settled it (`CASE`).
    let rows = sqlx::query(
        "SELECT c.tagset, c.window_start, c.first_ts >= ?2 AND c.last_ts < ?3, \
         CASE WHEN c.first_ts >= ?2 AND c.last_ts < ?3 THEN NULL ELSE c.data END \
         FROM json_each(?1) AS j JOIN chunks c ON c.tagset = j.value \
         AND c.window_start > ?4 AND c.window_start < ?3 AND c.last_ts >= ?2 AND c.first_ts < ?3",
    )
    .bind(ids_json(tagsets)?)
    .bind(lo)
    .bind(hi)
    .bind(lo.saturating_sub(WINDOW))
    .fetch_all(&mut *conn)
    .await
    .db()?;
    let by_id: HashMap<i64, &Tagset> = tagsets.iter().map(|t| (t.id, t)).collect();
    let mut straddling = Vec::new();
    for row in &rows {
        let id: i64 = row.try_get(0).db()?;
        if row.try_get::<bool, _>(2).db()? {
            found.insert(id);
        } else {
            straddling.push(row);
        }
    }
    for row in straddling {
        let (id, window): (i64, i64) = (row.try_get(0).db()?, row.try_get(1).db()?);
        if found.contains(&id) {
            continue;
        }
        let data: Vec<u8> = row.try_get(3).db()?;
        let samples = chunk::decode(&data).map_err(|e| by_id[&id].damaged(window, e))?;
        if !samples.range(lo, hi).is_empty() {
            found.insert(id);
        }
    }
    Ok(found)
}

/// A chunk row's summary, checked against its `check` column.
fn summary_from_row(row: &SqliteRow, tagset: &Tagset, window: i64) -> Result<Summary> {
    let scaled: i64 = row.try_get(8).db()?;
    let summary = Summary {
        count: u64::try_from(row.try_get::<i64, _>(3).db()?).unwrap_or(0),
        sum: CompensatedSum::from_parts(sample_value(row, 6)?, sample_value(row, 7)?, scaled != 0),
        min: sample_value(row, 9)?,
        max: sample_value(row, 10)?,
        first: (row.try_get(4).db()?, sample_value(row, 11)?),
        last: (row.try_get(5).db()?, sample_value(row, 12)?),
    };
    let check: i64 = row.try_get(13).db()?;
    if i64::from(summary.checksum()) != check {
        return Err(tagset.damaged(window, "its summary does not match its checksum"));
    }
    Ok(summary)
}

/// What a history query asks of the chunks.
pub(crate) struct HistoryScan<'a> {
    /// `[lo, hi)`: the query's range, cut at the retention cutoff.
    pub lo: i64,
    pub hi: i64,
    pub step: i64,
    /// The `group_by` tag, if any.
    pub group_by: Option<&'a str>,
}

/// Folds the samples of `tagsets` in `[lo, hi)` into `downsampler`: a window held by one
/// chunk whose samples all fall in one bucket (and in the range) merges its summary, never
/// decoding; the others are decoded and folded bucket by bucket.
pub(crate) async fn fold_history(
    conn: &mut SqliteConnection,
    tagsets: &[Tagset],
    scan: &HistoryScan<'_>,
    downsampler: &mut Downsampler,
) -> Result<()> {
    if scan.lo >= scan.hi || tagsets.is_empty() {
        return Ok(());
    }
    let mut groups: HashMap<i64, Option<String>> = HashMap::new();
    for tagset in tagsets {
        let group = match scan.group_by {
            Some(key) => {
                let tags: Tags = serde_json::from_str(&tagset.tags)
                    .map_err(|_| Error::malformed("sample tags"))?;
                tags.get(key).cloned()
            }
            None => None,
        };
        groups.insert(tagset.id, group);
    }
    let by_id: HashMap<i64, &Tagset> = tagsets.iter().map(|t| (t.id, t)).collect();
    // `data` only where the summary alone does not look enough: a chunk outside the range
    // or across a bucket boundary (`%` truncates where `bucket_start` floors, so for negative
    // timestamps the `CASE` may guess wrong; a missing `data` is then read by rowid).
    let rows = sqlx::query(
        "SELECT c.window_start, c.seq, c.rowid, c.count, c.first_ts, c.last_ts, c.sum, \
         c.sum_comp, c.sum_scaled, c.\"min\", c.\"max\", c.first, c.last, c.\"check\", \
         CASE WHEN c.first_ts >= ?1 AND c.last_ts < ?2 AND c.first_ts - c.first_ts % ?3 = \
         c.last_ts - c.last_ts % ?3 THEN NULL ELSE c.data END, c.tagset \
         FROM json_each(?4) AS j JOIN chunks c ON c.tagset = j.value \
         AND c.window_start > ?5 AND c.window_start < ?2 \
         ORDER BY c.tagset, c.window_start, c.seq",
    )
    .bind(scan.lo)
    .bind(scan.hi)
    .bind(scan.step)
    .bind(ids_json(tagsets)?)
    .bind(scan.lo.saturating_sub(WINDOW))
    .fetch_all(&mut *conn)
    .await
    .db()?;
    let key = |row: &SqliteRow| -> Result<(i64, i64)> {
        Ok((row.try_get(15).db()?, row.try_get(0).db()?))
    };
    let mut i = 0;
    while i < rows.len() {
        let (id, window) = key(&rows[i])?;
        let tagset = by_id[&id];
        let group = &groups[&id];
        let mut j = i + 1;
        while j < rows.len() && key(&rows[j])? == (id, window) {
            j += 1;
        }
        let whole = if j == i + 1 {
            let first: i64 = rows[i].try_get(4).db()?;
            let last: i64 = rows[i].try_get(5).db()?;
            (first >= scan.lo
                && last < scan.hi
                && bucket_start(first, scan.step) == bucket_start(last, scan.step))
            .then_some(first)
        } else {
            None
        };
        if let Some(first) = whole {
            let summary = summary_from_row(&rows[i], tagset, window)?;
            downsampler.merge(
                group.clone(),
                bucket_start(first, scan.step),
                summary.aggregate(&tagset.series_id, &tagset.tags),
            );
        } else {
            let mut merged = Samples::default();
            for row in &rows[i..j] {
                let data: Vec<u8> = match row.try_get::<Option<Vec<u8>>, _>(14).db()? {
                    Some(data) => data,
                    None => sqlx::query_scalar("SELECT data FROM chunks WHERE rowid = ?")
                        .bind(row.try_get::<i64, _>(2).db()?)
                        .fetch_one(&mut *conn)
                        .await
                        .db()?,
                };
                let part = chunk::decode(&data).map_err(|e| tagset.damaged(window, e))?;
                merged = merged.overwrite(&part);
            }
            chunk::fold_buckets(
                &merged,
                scan.lo,
                scan.hi,
                scan.step,
                group.as_deref(),
                &tagset.series_id,
                &tagset.tags,
                downsampler,
            );
        }
        i = j;
    }
    Ok(())
}

/// The registry rows of the series with these ids whose tags hold every `wanted` pair.
pub(crate) async fn tagsets_of(
    conn: &mut SqliteConnection,
    series_ids: &[&str],
    wanted: &Tags,
) -> Result<Vec<Tagset>> {
    let mut sql = crate::sql::Sql::new(
        "SELECT t.id, t.series_id, t.tags FROM series_tagsets t \
         WHERE t.series_id IN (SELECT j.value FROM json_each(",
    );
    sql.bind(serde_json::to_string(series_ids)?).push(") AS j)");
    crate::sql::push_tags_match(&mut sql, "t.tags", wanted);
    sql.push(" ORDER BY t.series_id, t.tags");
    use crate::sql::Run;
    let rows = sql.query().fetch_all(&mut *conn).await.db()?;
    rows.iter()
        .map(|row| {
            Ok(Tagset {
                id: row.try_get(0).db()?,
                series_id: Arc::from(row.try_get::<String, _>(1).db()?),
                tags: Arc::from(row.try_get::<String, _>(2).db()?),
            })
        })
        .collect()
}

/// The samples at or after `cutoff` (all of them without one): a window held by one chunk
/// whose samples are all live counts from its summary; the others are decoded.
pub(crate) async fn count_live(tx: &mut SqliteConnection, cutoff: Option<i64>) -> Result<u64> {
    let cutoff = cutoff.unwrap_or(i64::MIN);
    let single = "NOT EXISTS (SELECT 1 FROM chunks d WHERE d.tagset = c.tagset \
        AND d.window_start = c.window_start AND d.seq > 0)";
    let plain: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT coalesce(sum(c.count), 0) FROM chunks c \
         WHERE c.seq = 0 AND c.first_ts >= ? AND {single}"
    )))
    .bind(cutoff)
    .fetch_one(&mut *tx)
    .await
    .db()?;
    let rest = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT t.id, t.series_id, t.tags, c.window_start FROM chunks c \
         JOIN series_tagsets t ON t.id = c.tagset \
         WHERE c.seq = 0 AND c.window_start > ? AND NOT (c.first_ts >= ? AND {single})"
    )))
    .bind(cutoff.saturating_sub(WINDOW))
    .bind(cutoff)
    .fetch_all(&mut *tx)
    .await
    .db()?;
    let mut total = u64::try_from(plain).unwrap_or(0);
    for row in &rest {
        let tagset = Tagset {
            id: row.try_get(0).db()?,
            series_id: Arc::from(row.try_get::<String, _>(1).db()?),
            tags: Arc::from(row.try_get::<String, _>(2).db()?),
        };
        let window: i64 = row.try_get(3).db()?;
        let samples = read_window(tx, &tagset, window).await?;
        total += samples.range(cutoff, i64::MAX).len() as u64;
    }
    Ok(total)
}

/// Rows read a piece at a time by [`ingest_rows`].
const PIECE: i64 = 500_000;

/// Re-encodes the plain sample rows `(series_id, ts, tags, value)` of `source` (a fixed table
/// or view name) into chunks, over what is stored (a stored sample at the same key is
/// overwritten). Only the rows of series listed in `series_source` (a fixed table name), at or
/// after `cutoff`; a series at a time, in pieces of [`PIECE`] rows.
pub(crate) async fn ingest_rows(
    conn: &mut SqliteConnection,
    source: &str,
    series_source: &str,
    cutoff: Option<i64>,
) -> Result<()> {
    let cutoff = cutoff.unwrap_or(i64::MIN);
    // Audited: `source` and `series_source` are fixed names chosen by this crate.
    let series: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT series_id FROM {source} \
         WHERE series_id IN (SELECT id FROM {series_source}) ORDER BY series_id"
    )))
    .fetch_all(&mut *conn)
    .await
    .db()?;
    let first_piece = format!(
        "SELECT ts, tags, value FROM {source} WHERE series_id = ?1 AND ts >= ?2 \
         ORDER BY ts, tags LIMIT {PIECE}"
    );
    let next_piece = format!(
        "SELECT ts, tags, value FROM {source} WHERE series_id = ?1 AND ts >= ?2 \
         AND (ts, tags) > (?3, ?4) ORDER BY ts, tags LIMIT {PIECE}"
    );
    for series_id in &series {
        let mut after: Option<(i64, String)> = None;
        loop {
            let sql = if after.is_some() {
                &next_piece
            } else {
                &first_piece
            };
            let (ts, tags) = after.clone().unwrap_or_default();
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(series_id.as_str())
                .bind(cutoff)
                .bind(ts)
                .bind(tags)
                .fetch_all(&mut *conn)
                .await
                .db()?;
            let mut runs: Vec<(String, Vec<(i64, f64)>)> = Vec::new();
            for row in &rows {
                let ts: i64 = row.try_get(0).db()?;
                let tags: String = row.try_get(1).db()?;
                let value = sample_value(row, 2)?;
                match runs.iter_mut().find(|(t, _)| *t == tags) {
                    Some((_, pairs)) => pairs.push((ts, value)),
                    None => runs.push((tags, vec![(ts, value)])),
                }
            }
            if let Some(last) = rows.last() {
                after = Some((last.try_get(0).db()?, last.try_get(1).db()?));
            }
            let mut writes = Vec::with_capacity(runs.len());
            for (json, pairs) in runs {
                writes.push(Write {
                    series_id,
                    tags: Cow::Owned(crate::metrics::parse_tags(&json)?),
                    tags_json: Arc::from(json),
                    samples: Samples::from_unsorted(pairs),
                });
            }
            write(conn, writes).await?;
            if (rows.len() as i64) < PIECE {
                break;
            }
        }
    }
    Ok(())
}

/// Decodes the chunks of the attached schema `schema` (a fixed name; schema version 4 or
/// later) into the plain rows of `temp.restore_samples`, for a native restore to check and
/// merge. A damaged chunk is `Corrupted`, naming its series and window.
pub(crate) async fn stage_chunks(conn: &mut SqliteConnection, schema: &str) -> Result<()> {
    sqlx::query(
        "CREATE TEMP TABLE restore_samples (series_id, ts, tags, value, \
         PRIMARY KEY (series_id, ts, tags)) WITHOUT ROWID",
    )
    .execute(&mut *conn)
    .await
    .db()?;
    // Audited: `schema` is a fixed name chosen by this crate.
    let windows: Vec<(i64, String, String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT t.id, t.series_id, t.tags, c.window_start FROM {schema}.chunks c \
         JOIN {schema}.series_tagsets t ON t.id = c.tagset ORDER BY t.id, c.window_start"
    )))
    .fetch_all(&mut *conn)
    .await
    .db()?;
    let read = format!(
        "SELECT data FROM {schema}.chunks WHERE tagset = ? AND window_start = ? ORDER BY seq"
    );
    for (id, series_id, tags, window) in windows {
        let tagset = Tagset {
            id,
            series_id: Arc::from(series_id),
            tags: Arc::from(tags),
        };
        let parts: Vec<Vec<u8>> = sqlx::query_scalar(sqlx::AssertSqlSafe(read.clone()))
            .bind(id)
            .bind(window)
            .fetch_all(&mut *conn)
            .await
            .db()?;
        let mut merged = Samples::default();
        for data in &parts {
            let part = chunk::decode(data).map_err(|e| tagset.damaged(window, e))?;
            merged = merged.overwrite(&part);
        }
        for (ts, values) in merged.timestamps.chunks(200).zip(merged.values.chunks(200)) {
            let mut sql = String::from(
                "INSERT OR REPLACE INTO temp.restore_samples (series_id, ts, tags, value) VALUES ",
            );
            for i in 0..ts.len() {
                sql.push_str(if i == 0 {
                    "(?, ?, ?, ?)"
                } else {
                    ", (?, ?, ?, ?)"
                });
            }
            // Audited: fixed text and placeholders.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (&t, &v) in ts.iter().zip(values) {
                query = query
                    .bind(&*tagset.series_id)
                    .bind(t)
                    .bind(&*tagset.tags)
                    .bind(v);
            }
            query.execute(&mut *conn).await.db()?;
        }
    }
    Ok(())
}

/// Re-encodes the sample rows of a database written before schema version 4 (renamed
/// `legacy_samples` by migration 4) as chunks, in one transaction, then drops them and
/// vacuums the file to give their pages back. Nothing is lost: every row is kept, expired or
/// not (reads hide expired samples as before). A crash in between leaves the rows in place,
/// and the next open starts over.
pub(crate) async fn migrate_legacy_samples(pool: &sqlx::SqlitePool) -> Result<()> {
    let exists: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'legacy_samples'",
    )
    .fetch_optional(pool)
    .await
    .db()?;
    if exists.is_none() {
        return Ok(());
    }
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.db()?;
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM (SELECT 1 FROM legacy_samples LIMIT 1)")
            .fetch_one(&mut *tx)
            .await
            .db()?;
    if rows > 0 {
        tracing::info!("re-encoding the samples of an older aimon database as chunks");
        ingest_rows(&mut tx, "main.legacy_samples", "main.series", None).await?;
    }
    sqlx::query("DROP TABLE legacy_samples")
        .execute(&mut *tx)
        .await
        .db()?;
    tx.commit().await.db()?;
    if rows > 0 {
        sqlx::query("VACUUM").execute(pool).await.db()?;
    }
    Ok(())
}

/// Drops the windows whose samples are all older than `cutoff` (every row of the window, by
/// `chunks_last_ts`) and returns how many distinct samples went: a sealed chunk's count, or
/// the decoded samples of a window still in fragments (where a later fragment may overwrite
/// an earlier one's).
pub(crate) async fn drop_expired(conn: &mut SqliteConnection, cutoff: i64) -> Result<u64> {
    let windows: Vec<(i64, String, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT t.id, t.series_id, t.tags, c.window_start, count(*), sum(c.count) \
         FROM chunks c JOIN series_tagsets t ON t.id = c.tagset \
         WHERE c.last_ts < ?1 GROUP BY c.tagset, c.window_start \
         HAVING NOT EXISTS (SELECT 1 FROM chunks d WHERE d.tagset = c.tagset \
         AND d.window_start = c.window_start AND d.last_ts >= ?1)",
    )
    .bind(cutoff)
    .fetch_all(&mut *conn)
    .await
    .db()?;
    let mut removed = 0u64;
    for (id, series_id, tags, window, rows, count) in windows {
        removed += if rows == 1 {
            u64::try_from(count).unwrap_or(0)
        } else {
            let tagset = Tagset {
                id,
                series_id: Arc::from(series_id),
                tags: Arc::from(tags),
            };
            read_window(conn, &tagset, window).await?.len() as u64
        };
        sqlx::query("DELETE FROM chunks WHERE tagset = ? AND window_start = ?")
            .bind(id)
            .bind(window)
            .execute(&mut *conn)
            .await
            .db()?;
    }
    Ok(removed)
}
