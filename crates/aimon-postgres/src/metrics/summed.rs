//! `metric_history` in one statement (native mode): for sums, averages, counts, minima and
//! maxima at a step that is a whole number of chunk windows, the server aggregates the summary
//! columns of the windows that lie wholly inside the range and before the earliest head window
//! of the matching tag sets, as hand-written SQL over them would; the same statement returns
//! what aimon folds itself: the chunks at the range's start and from that head window on (their
//! data only where their summary cannot answer), the tag sets, and each tag set's head rows as
//! two arrays. One round trip and one snapshot, no transaction. Where the answer would not be
//! exact (a fragmented or scaled window among the aggregated ones, a whole window sent without
//! its data that has fragments, a float sum that overflows, float sums whose error bounds are
//! not within 1e-10 of their bucket's sum), it returns `None` and the caller takes the general
//! path ([`chunks::history`](super::chunks::history)). The crate docs ("History") say why the
//! branches are index ranges through `tsid = ANY(…)` rather than joins.
//!
//! The aggregated windows cost the server one aggregate each per chunk row, so the statement
//! computes no more of them than hand-written SQL would: the count, and the sum, minimum or
//! maximum asked for. Whether those windows have fragments, sums scaled against overflow or
//! negative values is a look into the partial index `chunks_irregular`
//! ([`CHUNKS_IRREGULAR_INDEX`](crate::schema::CHUNKS_IRREGULAR_INDEX)), which holds only such
//! chunks. The float sums' error bound needs the sum of the windows' absolute sums: where no
//! aggregated window has a negative value, that is their total (each window's sum is at least
//! 0), and only where one has does the statement run again with `sum(abs(sum))`. Measured on
//! the demo's store (`examples/history_vs_sql.rs`, the two variants alternating, two runs):
//! with the two aggregates this replaced, a flag and `sum(abs(sum))` over every chunk, the
//! whole call took 1.07× – 1.10× its time without them.
//!
//! The chunks at the range's start are the statement's first branch, and aimon reads its rows
//! as a stream, decoding each chunk as it arrives: the server sends its output 8 KB at a time,
//! so with a few dozen tag sets most of those chunks reach aimon, and are decoded, while the
//! server is still aggregating the windows after them, instead of after the last row. The
//! other chunks are decoded only where their summary cannot answer: a window whose one chunk
//! has every sample in the range and no head row at or between its first and last times (the
//! open window once a batch has cut its head into a chunk and newer rows came after it) is its
//! summary plus its head rows.
//!
//! It runs on connections of their own whose planner does not sort (`enable_sort = off`): the
//! generic plan of a prepared statement estimates a handful of chunk rows behind
//! `tsid = ANY(ARRAY(…))` and a range of parameters, and so groups them into buckets by
//! sorting; thousands of rows come, and hashing them into tens of buckets is faster. Measured
//! on the demo's store (`examples/history_vs_sql.rs`, three runs each, alternating): 2.33 –
//! 2.34 ms p50 with hashing, 2.57 – 2.97 ms with sorting. Nothing in the statement needs an
//! order, so the setting changes no answer.
//!
//! The summaries aggregated by the server are not checked against their `check` column (the
//! ones aimon reads are): PostgreSQL 15 has no CRC function, and checking each summary in SQL
//! costs several times the query (docs/semantics.md, "Damaged storage").

use std::collections::{BTreeMap, HashMap};

use aimon_core::chunk::{self, Samples};
use aimon_core::downsample::{BucketAggregate, CompensatedSum, Downsampler, bucket_start};
use aimon_core::query::{Aggregation, HistoryQuery, HistorySeries};
use aimon_core::{Error, Result, time};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::backend::{DbResult, PostgresBackend};
use crate::error::sqlstate;
use crate::sql::Run;

use super::chunks::{ErrorBounds, Tagset, WINDOW, merge_fragments, summary_from_row};

/// The SQLSTATE of a float8 sum that overflowed.
const OUT_OF_RANGE: &str = "22003";

/// What a row of the statement is (its first column).
const BUCKETS: i32 = 0;
const CHUNK: i32 = 1;
const TAGSET: i32 = 2;
const HEAD: i32 = 3;
const IRREGULAR: i32 = 4;

/// The columns of the statement's rows, by position (every branch has all of them).
mod col {
    pub const KIND: usize = 0;
    pub const TSID: usize = 1;
    pub const GRP: usize = 2;
    pub const T: usize = 3;
    pub const N: usize = 4;
    pub const S: usize = 5;
    pub const A: usize = 6;
    pub const LO: usize = 7;
    pub const HI: usize = 8;
    pub const FLAG: usize = 9;
    pub const T1: usize = 10;
    pub const T2: usize = 11;
    pub const DATA: usize = 17;
    pub const SEQ: usize = 18;
    pub const SID: usize = 19;
    pub const TAGS: usize = 20;
    pub const TIMES: usize = 21;
    pub const VALS: usize = 22;
}

/// What one run of the statement found.
enum Pass {
    /// The answer, or `None` where the general path must answer.
    Done(Option<Vec<HistorySeries>>),
    /// A sum or average over windows with a negative value, run without the error bounds'
    /// `sum(abs(sum))`: run it again with them.
    NeedsAbsoluteSums,
}

/// Whether the one-statement plan applies to `query`.
pub(crate) fn applies(query: &HistoryQuery) -> bool {
    !matches!(query.aggregation, Aggregation::First | Aggregation::Last)
        && query.step_micros() % WINDOW == 0
}

impl PostgresBackend {
    /// The history of `query` over `[low, high)` in one statement, or `None` where the general
    /// path must answer (module docs).
    pub(crate) async fn summed_history(
        &self,
        query: &HistoryQuery,
        low: i64,
        high: i64,
    ) -> Result<Option<Vec<HistorySeries>>> {
        match self.summed_pass(query, low, high, false).await? {
            Pass::Done(out) => Ok(out),
            Pass::NeedsAbsoluteSums => {
                self.absolute_sum_reruns
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match self.summed_pass(query, low, high, true).await? {
                    Pass::Done(out) => Ok(out),
                    Pass::NeedsAbsoluteSums => Ok(None),
                }
            }
        }
    }

    /// One run of the statement; `absolute` adds `sum(abs(sum))` to the aggregated windows
    /// (module docs).
    async fn summed_pass(
        &self,
        query: &HistoryQuery,
        low: i64,
        high: i64,
        absolute: bool,
    ) -> Result<Pass> {
        let step = query.step_micros();
        let mut sql = super::history::tagsets_sql(query);
        sql.text.insert_str(0, "WITH ts AS MATERIALIZED (");
        let low_at = time::from_micros(low);
        let high_at = time::from_micros(high);
        let first_window = time::from_micros(chunk::window_start(low, WINDOW));
        // The last window start whose window ends by `high`.
        let last_whole = time::from_micros(high - WINDOW);
        let window = format!("INTERVAL '{WINDOW} microseconds'");
        // The earliest head window of the tag sets (past every timestamp where none has head
        // rows): the server aggregates the windows before it.
        let earliest_head = "(SELECT min(coalesce(head_window, 'infinity'::timestamptz)) FROM ts)";
        // Only the aggregates the answer needs: each costs the server about a tenth of the
        // scan. `sum(abs(sum))`, the float sums' error bound, only where a window in range
        // has a negative value (`absolute`): else every window's sum is at least 0 and their
        // total bounds itself.
        let sums = matches!(query.aggregation, Aggregation::Sum | Aggregation::Avg);
        let pick = |wanted: bool, aggregate: &'static str| {
            if wanted { aggregate } else { "NULL::float8" }
        };
        // The chunks at the range's start come first: partial windows, sent with their data,
        // which aimon decodes as their rows arrive while the server aggregates the rest (the
        // server sends its output 8 KB at a time, so a few dozen chunks leave before the
        // aggregation ends). The first branch names and types the columns.
        sql.push(&format!(
            ") SELECT {CHUNK}::int4 AS kind, c.tsid AS tsid, NULL::text AS grp, \
             c.window_start AS t, c.count::int8 AS n, c.sum AS s, NULL::float8 AS a, \
             c.min AS lo, c.max AS hi, NULL::int8 AS flag, c.first_time AS t1, \
             c.last_time AS t2, c.sum_comp AS comp, c.sum_scaled AS scaled, c.first AS f, \
             c.last AS l, c.\"check\" AS chk, c.data AS data, c.seq AS seq, NULL::text AS sid, \
             NULL::text AS tags, NULL::timestamptz[] AS times, NULL::float8[] AS vals \
             FROM chunks c WHERE c.tsid = ANY(ARRAY(SELECT tsid FROM ts)) AND c.last_time >= "
        ));
        sql.bind(low_at)
            .push(" AND c.window_start >= ")
            .bind(first_window)
            .push(" AND c.window_start < ")
            .bind(low_at);
        // The aggregated windows.
        sql.push(&format!(
            " UNION ALL SELECT {BUCKETS}, {}, NULL, date_bin(",
            // Typed: a grouped-by untyped NULL would become text.
            if query.group_by.is_some() {
                "c.tsid"
            } else {
                "NULL::bigint"
            }
        ));
        sql.bind(step).push(&format!(
            "::bigint * INTERVAL '1 microsecond', c.window_start, TIMESTAMPTZ 'epoch'), \
             sum(c.count), {}, {}, {}, {}, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
             NULL, NULL, NULL, NULL, NULL \
             FROM chunks c WHERE c.tsid = ANY(ARRAY(SELECT tsid FROM ts)) \
             AND c.window_start >= ",
            pick(sums, "sum(c.sum + c.sum_comp)"),
            pick(sums && absolute, "sum(abs(c.sum))"),
            pick(query.aggregation == Aggregation::Min, "min(c.min)"),
            pick(query.aggregation == Aggregation::Max, "max(c.max)"),
        ));
        sql.bind(low_at)
            .push(" AND c.window_start <= least(")
            .bind(last_whole)
            .push(&format!(", {earliest_head} - {window}) GROUP BY 2, 4"));
        // Whether those windows have fragments (`n`), sums scaled against overflow (`n`, for
        // sums) or negative values (`flag`): a look into the small `chunks_irregular` index
        // (its predicate, repeated here, lets the planner use it) rather than an aggregate
        // over every chunk.
        sql.push(&format!(
            " UNION ALL SELECT {IRREGULAR}, NULL, NULL, NULL, \
             count(*) FILTER (WHERE c.seq > 0{}), NULL, NULL, NULL, NULL, \
             count(*) FILTER (WHERE c.min < 0), NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
             NULL, NULL, NULL, NULL, NULL, NULL FROM chunks c \
             WHERE c.tsid = ANY(ARRAY(SELECT tsid FROM ts)) \
             AND (c.seq > 0 OR c.sum_scaled OR c.min < 0) AND c.window_start >= ",
            if sums { " OR c.sum_scaled" } else { "" }
        ));
        sql.bind(low_at)
            .push(" AND c.window_start <= least(")
            .bind(last_whole)
            .push(&format!(", {earliest_head} - {window})"));
        // The chunks from the earliest head window (or the range's end) on, with their data
        // only where their summary cannot answer: the window sticks out of the range (its
        // first and last times, which its checksum covers, say so) or lies at or after its
        // own tag set's head window (head rows overwrite it). A whole window sent without its
        // data that turns out to have fragments sends the query to the general path.
        sql.push(&format!(
            " UNION ALL SELECT {CHUNK}, c.tsid, NULL, c.window_start, c.count, c.sum, NULL, \
             c.min, c.max, NULL, c.first_time, c.last_time, c.sum_comp, c.sum_scaled, c.first, \
             c.last, c.\"check\", "
        ))
        .push("CASE WHEN c.first_time >= ")
        .bind(low_at)
        .push(" AND c.last_time < ")
        .bind(high_at)
        .push(&format!(
            " AND c.window_start + {window} <= coalesce((SELECT ts.head_window FROM ts \
                 WHERE ts.tsid = c.tsid), 'infinity'::timestamptz) \
                 THEN NULL ELSE c.data END, \
                 c.seq, NULL, NULL, NULL, NULL FROM chunks c \
                 WHERE c.tsid = ANY(ARRAY(SELECT tsid FROM ts)) AND c.last_time >= "
        ))
        .bind(low_at)
        .push(" AND c.first_time < ")
        .bind(high_at)
        .push(" AND c.window_start >= ")
        .bind(low_at)
        .push(" AND c.window_start < ")
        .bind(high_at)
        .push(" AND c.window_start > least(")
        .bind(last_whole)
        .push(&format!(", {earliest_head} - {window})"));
        // The tag sets.
        sql.push(&format!(
            " UNION ALL SELECT {TAGSET}, ts.tsid, ts.grp, NULL, NULL, NULL, NULL, NULL, NULL, \
             NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, ts.id, ts.tags, NULL, \
             NULL FROM ts"
        ));
        // The head's rows, two arrays a tag set (in the same order: the two aggregates see the
        // same rows; aimon sorts them): aimon folds them, compensated, over the chunks of
        // their window. Every head row is at or after its tag set's head window.
        sql.push(&format!(
            " UNION ALL SELECT {HEAD}, x.tsid, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
             NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
             array_agg(x.time), array_agg(x.value) \
             FROM samples x WHERE x.tsid = ANY(ARRAY(SELECT tsid FROM ts)) \
             AND x.time >= greatest({earliest_head}, "
        ));
        sql.bind(low_at)
            .push(") AND x.time < ")
            .bind(high_at)
            .push(" GROUP BY x.tsid");
        // Rows as they arrive, each chunk's data decoded then (the damage, if any, is reported
        // once its tag set's name is known).
        let mut rows = Vec::new();
        let mut decoded = Vec::new();
        let mut stream = sql.query().fetch(&self.hashing_pool);
        loop {
            let row = match stream.try_next().await {
                Ok(Some(row)) => row,
                Ok(None) => break,
                Err(e) if sqlstate(&e).as_deref() == Some(OUT_OF_RANGE) => {
                    return Ok(Pass::Done(None));
                }
                Err(e) => return Err(crate::error::from_sqlx(e)),
            };
            // The range's partial first window: always decoded. The others only if need be.
            let partial = row.try_get::<i32, _>(col::KIND).db()? == CHUNK
                && micros(row.try_get(col::T).db()?) < low;
            decoded.push(if partial {
                row.try_get::<Option<&[u8]>, _>(col::DATA)
                    .db()?
                    .map(chunk::decode)
            } else {
                None
            });
            rows.push(row);
        }
        drop(stream);
        fold(&rows, decoded, query, low, high, absolute)
    }
}

/// What the statement returned of one tag set's window that aimon folds itself: its chunk
/// rows (by index) and head rows.
#[derive(Default)]
struct Window {
    chunks: Vec<usize>,
    head: Samples,
}

/// Folds the statement's rows into the answer (or finds it must run again, or cannot answer).
/// `decoded` holds, for each row, its chunk's decoded data if it was sent.
fn fold(
    rows: &[PgRow],
    mut decoded: Vec<Option<std::result::Result<Samples, chunk::ChunkError>>>,
    query: &HistoryQuery,
    low: i64,
    high: i64,
    absolute: bool,
) -> Result<Pass> {
    let step = query.step_micros();
    let sums = matches!(query.aggregation, Aggregation::Sum | Aggregation::Avg);
    let mut tagsets: HashMap<i64, Tagset> = HashMap::new();
    let mut kinds = Vec::with_capacity(rows.len());
    for row in rows {
        let kind: i32 = row.try_get(col::KIND).db()?;
        kinds.push(kind);
        match kind {
            TAGSET => {
                let tsid = row.try_get(col::TSID).db()?;
                tagsets.insert(
                    tsid,
                    Tagset {
                        tsid,
                        group: row.try_get(col::GRP).db()?,
                        series_id: row.try_get(col::SID).db()?,
                        tags: row.try_get(col::TAGS).db()?,
                    },
                );
            }
            IRREGULAR => {
                // Fragments or scaled sums among the aggregated windows: the general path.
                if row.try_get::<i64, _>(col::N).db()? > 0 {
                    return Ok(Pass::Done(None));
                }
                if sums && !absolute && row.try_get::<i64, _>(col::FLAG).db()? > 0 {
                    return Ok(Pass::NeedsAbsoluteSums);
                }
            }
            _ => {}
        }
    }
    let mut downsampler = Downsampler::new(query);
    let mut bounds = ErrorBounds::default();
    let mut windows: BTreeMap<(i64, i64), Window> = BTreeMap::new();
    for (index, (row, &kind)) in rows.iter().zip(&kinds).enumerate() {
        match kind {
            BUCKETS => {
                // `s` and `a` are there for sums and averages (`a` only if `absolute`), `lo`
                // for minima, `hi` for maxima.
                let n: i64 = row.try_get(col::N).db()?;
                let sum = row.try_get::<Option<f64>, _>(col::S).db()?.unwrap_or(0.0);
                if sums && !sum.is_finite() {
                    return Ok(Pass::Done(None));
                }
                // Without `absolute`, no aggregated window has a negative value: each window's
                // sum is at least 0, and their total, give or take the compensations (far
                // below a millionth of it), is the sum of their absolute values.
                let abs = match row.try_get::<Option<f64>, _>(col::A).db()? {
                    Some(abs) => abs,
                    None => sum.abs() * (1.0 + 1e-6),
                };
                // Per tag set (with `group_by`): its group; else the one group, `None`.
                let group = match row.try_get::<Option<i64>, _>(col::TSID).db()? {
                    Some(tsid) => tagsets.get(&tsid).and_then(|t| t.group.clone()),
                    None => None,
                };
                let bucket = micros(row.try_get(col::T).db()?);
                // Each term is a window's compensated sum plus its compensation, both added in
                // float8: 2n·2⁻⁵³·Σ|v| bounds the error of both roundings (n ≥ terms).
                if sums {
                    bounds.add(&group, bucket, n as f64 * f64::EPSILON * abs);
                }
                let key = || (0, String::new(), String::new());
                downsampler.merge(
                    group,
                    bucket,
                    BucketAggregate {
                        count: u64::try_from(n).map_err(|_| negative())?,
                        sum: CompensatedSum::from_parts(sum, 0.0, false),
                        min: row
                            .try_get::<Option<f64>, _>(col::LO)
                            .db()?
                            .unwrap_or(f64::NAN),
                        max: row
                            .try_get::<Option<f64>, _>(col::HI)
                            .db()?
                            .unwrap_or(f64::NAN),
                        // Not read: the aggregation is neither first nor last.
                        first: (key(), f64::NAN),
                        last: (key(), f64::NAN),
                    },
                );
            }
            CHUNK => {
                let key = (
                    row.try_get(col::TSID).db()?,
                    micros(row.try_get(col::T).db()?),
                );
                windows.entry(key).or_default().chunks.push(index);
            }
            HEAD => {
                let tsid: i64 = row.try_get(col::TSID).db()?;
                let times: Vec<DateTime<Utc>> = row.try_get(col::TIMES).db()?;
                let values: Vec<f64> = row.try_get(col::VALS).db()?;
                let head =
                    Samples::from_unsorted(times.into_iter().map(micros).zip(values).collect());
                let (ts, vs) = (&head.timestamps, &head.values);
                let mut start = 0;
                while start < ts.len() {
                    let w = chunk::window_start(ts[start], WINDOW);
                    let end = ts[start..].partition_point(|&t| t < w + WINDOW) + start;
                    windows.entry((tsid, w)).or_default().head = Samples {
                        timestamps: ts[start..end].to_vec(),
                        values: vs[start..end].to_vec(),
                    };
                    start = end;
                }
            }
            _ => {}
        }
    }
    for ((tsid, w), window) in windows {
        let Some(tagset) = tagsets.get(&tsid) else {
            continue;
        };
        let name = tagset.name();
        // One row, every sample in the range, and no head row at or between its first and
        // last times (those times say so; the checksum below covers them): its summary
        // answers for its samples, and the head rows, none of which overwrites one, are
        // added to it. The usual open window: a chunk cut from the head, newer rows after it.
        if let [only] = window.chunks[..] {
            let row = &rows[only];
            let first = micros(row.try_get(col::T1).db()?);
            let last = micros(row.try_get(col::T2).db()?);
            let head = &window.head.timestamps;
            let over = head.partition_point(|&t| t <= last) - head.partition_point(|&t| t < first);
            if first >= low && last < high && over == 0 {
                let summary = summary_from_row(row).map_err(|e| name.damaged(w, e))?;
                downsampler.merge(
                    tagset.group.clone(),
                    bucket_start(w, step),
                    summary.aggregate(&tagset.series_id, &tagset.tags),
                );
                if !head.is_empty() {
                    tagset.fold(&window.head, low, high, step, &mut downsampler);
                }
                continue;
            }
        }
        // Else its samples: fragments in `seq` order, the head's rows over them.
        let mut parts = Vec::with_capacity(window.chunks.len());
        for index in window.chunks {
            let part = match decoded[index].take() {
                Some(part) => part,
                None => match rows[index].try_get::<Option<&[u8]>, _>(col::DATA).db()? {
                    Some(data) => chunk::decode(data),
                    // A whole window with fragments or head rows: its data was not sent.
                    None => return Ok(Pass::Done(None)),
                },
            };
            let part = part.map_err(|e| name.damaged(w, e))?;
            parts.push((rows[index].try_get::<i16, _>(col::SEQ).db()?, part));
        }
        let merged = merge_fragments(parts).overwrite(&window.head);
        tagset.fold(&merged, low, high, step, &mut downsampler);
    }
    let out = downsampler.finish();
    Ok(Pass::Done(
        bounds.hold(&out, query.aggregation).then_some(out),
    ))
}

fn micros(t: DateTime<Utc>) -> i64 {
    time::to_micros(t)
}

fn negative() -> Error {
    Error::corrupted("the server counted a negative number of samples")
}
