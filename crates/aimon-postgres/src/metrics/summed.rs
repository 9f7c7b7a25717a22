//! `metric_history` in one statement (native mode): for sums, averages, counts, minima and
//! maxima at a step that is a whole number of chunk windows, the server aggregates the summary
//! columns of the windows wholly inside the range and before the earliest head window of the
//! matching tag sets, as hand-written SQL over them would, and the same statement returns what
//! aimon folds itself: the chunks at the range's edges and from that head window on, the tag
//! sets, and
//! the head's rows aggregated per tag set and window. One round trip and one snapshot, no
//! transaction. Where that answer would not be exact (a fragmented or scaled window among the
//! aggregated ones, float sums whose error bounds are not within 1e-10 of their bucket's sum,
//! a head window that
//! shares its window with a chunk, a float sum that overflows), it returns `None` and the
//! caller takes the general path ([`chunks::history`](super::chunks::history)).
//!
//! The summaries aggregated by the server are not checked against their `check` column (the
//! ones aimon reads are): PostgreSQL 15 has no CRC function, and checking each summary in SQL
//! costs several times the query (docs/semantics.md, "Damaged storage").

use std::collections::{BTreeMap, HashMap};

use aimon_core::chunk::{self, Samples, Summary};
use aimon_core::downsample::{BucketAggregate, CompensatedSum, Downsampler, bucket_start};
use aimon_core::query::{Aggregation, HistoryQuery, HistorySeries};
use aimon_core::{Result, model::tags_json, time};
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::backend::{DbResult, PostgresBackend};
use crate::error::sqlstate;
use crate::sql::{Run, Sql};

use super::chunks::{TagsetName, WINDOW};

/// The SQLSTATE of a float8 sum that overflowed.
const OUT_OF_RANGE: &str = "22003";

/// What a row of the statement is (its first column).
const BUCKETS: i32 = 0;
const CHUNK: i32 = 1;
const TAGSET: i32 = 2;
const HEAD: i32 = 3;

fn micros(t: DateTime<Utc>) -> i64 {
    time::to_micros(t)
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
        let step = query.step_micros();
        let mut sql = Sql::new("WITH ts AS MATERIALIZED (SELECT t.tsid, s.id, t.tags, ");
        match &query.group_by {
            Some(tag) => {
                sql.push("t.tags_jsonb ->> ").bind(tag.as_str());
            }
            None => {
                sql.push("NULL::text");
            }
        }
        sql.push(
            " AS grp, coalesce(t.head_window, 'infinity'::timestamptz) AS head \
             FROM series_tagsets t JOIN series s ON s.sid = t.sid WHERE s.name = ",
        )
        .bind(query.name.as_str());
        if !query.tags.is_empty() {
            sql.push(" AND t.tags_jsonb @> ")
                .bind(tags_json(&query.tags))
                .push("::jsonb");
        }
        let low_at = time::from_micros(low);
        let high_at = time::from_micros(high);
        let first_window = time::from_micros(chunk::window_start(low, WINDOW));
        // The last window start whose window ends by `high`.
        let last_whole = time::from_micros(high - WINDOW);
        let window = format!("INTERVAL '{} microseconds'", WINDOW);
        // The summaries the server aggregates: windows wholly in range and before the head of
        // every tag set. No join: the tag sets as one array and the earliest head as a bound
        // (`tsid = ANY(…)` and a range on the primary key), so the plan stays an index scan
        // whatever the planner estimates. With `group_by`, per tag set (the client knows each
        // one's group); else per bucket alone.
        let per_tagset = query.group_by.is_some();
        sql.push(&format!(
            ") SELECT {BUCKETS}::int4 AS kind, {} AS tsid, NULL::text AS grp, date_bin(",
            if per_tagset { "c.tsid" } else { "NULL::bigint" }
        ));
        // Only the aggregates the answer needs: each costs the server as much as the scan.
        let sums = matches!(query.aggregation, Aggregation::Sum | Aggregation::Avg);
        let min = query.aggregation == Aggregation::Min;
        let max = query.aggregation == Aggregation::Max;
        sql.bind(step).push(&format!(
            "::bigint * INTERVAL '1 microsecond', c.window_start, TIMESTAMPTZ 'epoch') AS t, \
             sum(c.count) AS n, {} AS s, {} AS a, {} AS lo, {} AS hi, \
             max(CASE WHEN c.sum_scaled THEN 1 ELSE c.seq END) AS flag, NULL::timestamptz AS t1,",
            if sums {
                "sum(c.sum + c.sum_comp)"
            } else {
                "NULL::float8"
            },
            if sums {
                "sum(abs(c.sum))"
            } else {
                "NULL::float8"
            },
            if min { "min(c.min)" } else { "NULL::float8" },
            if max { "max(c.max)" } else { "NULL::float8" },
        ));
        sql.push(
            " NULL::timestamptz AS t2, NULL::float8 AS comp, \
             NULL::bool AS scaled, NULL::float8 AS f, NULL::float8 AS l, NULL::int4 AS chk, \
             NULL::bytea AS data, NULL::text AS sid, NULL::text AS tags \
             FROM chunks c WHERE c.tsid = ANY(ARRAY(SELECT tsid FROM ts)) \
             AND c.window_start >= ",
        );
        sql.bind(low_at)
            .push(" AND c.window_start <= least(")
            .bind(last_whole)
            .push(&format!(
                ", (SELECT min(head) FROM ts) - {window}) GROUP BY 2, 4"
            ));
        // The chunks aimon folds: those at the range's start and from the head (or the range's
        // end) on, each one whole.
        let chunk_columns = format!(
            " UNION ALL SELECT {CHUNK}, c.tsid, NULL, c.window_start, c.count, c.sum, NULL, \
             c.min, c.max, c.seq, c.first_time, c.last_time, c.sum_comp, c.sum_scaled, c.first, \
             c.last, c.\"check\", c.data, NULL, NULL FROM chunks c \
             WHERE c.tsid = ANY(ARRAY(SELECT tsid FROM ts)) AND c.last_time >= "
        );
        sql.push(&chunk_columns)
            .bind(low_at)
            .push(" AND c.first_time < ")
            .bind(high_at)
            .push(" AND c.window_start >= ")
            .bind(first_window)
            .push(" AND c.window_start < ")
            .bind(low_at);
        sql.push(&chunk_columns)
            .bind(low_at)
            .push(" AND c.first_time < ")
            .bind(high_at)
            .push(" AND c.window_start >= ")
            .bind(low_at)
            .push(" AND c.window_start < ")
            .bind(high_at)
            .push(" AND c.window_start > least(")
            .bind(last_whole)
            .push(&format!(", (SELECT min(head) FROM ts) - {window})"));
        // The tag sets.
        sql.push(&format!(
            " UNION ALL SELECT {TAGSET}, ts.tsid, ts.grp, NULL, NULL, NULL, NULL, NULL, NULL, \
             NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, ts.id, ts.tags FROM ts"
        ));
        // The head's rows per tag set and window, aggregated (a window lies in one bucket: the
        // step is a whole number of windows; reading the rows costs the client more than the
        // server's aggregate). Every head row is at or after its tag set's head window.
        sql.push(&format!(
            " UNION ALL SELECT {HEAD}, x.tsid, NULL, date_bin({window}, x.time, \
             TIMESTAMPTZ 'epoch'), count(*), sum(x.value), sum(abs(x.value)), min(x.value), \
             max(x.value), NULL, min(x.time), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
             NULL FROM samples x WHERE x.tsid = ANY(ARRAY(SELECT tsid FROM ts)) \
             AND x.time >= greatest((SELECT min(head) FROM ts), "
        ));
        sql.bind(low_at)
            .push(") AND x.time < ")
            .bind(high_at)
            .push(" GROUP BY x.tsid, 4");
        let rows = match sql.query().fetch_all(&self.pool).await {
            Ok(rows) => rows,
            Err(e) if sqlstate(&e).as_deref() == Some(OUT_OF_RANGE) => return Ok(None),
            Err(e) => return Err(crate::error::from_sqlx(e)),
        };
        fold(&rows, query, low, high, step)
    }
}

/// A tag set as the statement lists it.
struct Tagset {
    group: Option<String>,
    series_id: String,
    tags: String,
}

/// Folds the statement's rows into the answer, or `None` where it would not be exact.
fn fold(
    rows: &[PgRow],
    query: &HistoryQuery,
    low: i64,
    high: i64,
    step: i64,
) -> Result<Option<Vec<HistorySeries>>> {
    let sums = matches!(query.aggregation, Aggregation::Sum | Aggregation::Avg);
    // The error bounds of the float sums merged into each (group, bucket), checked against the
    // bucket's final sum: parts of one bucket may cancel each other, so a part's bound must be
    // small against the whole, not against the part.
    let mut bounds = ErrorBounds::default();
    let mut tagsets: HashMap<i64, Tagset> = HashMap::new();
    for row in rows.iter().filter(|r| kind(r) == TAGSET) {
        tagsets.insert(
            row.try_get("tsid").db()?,
            Tagset {
                group: row.try_get("grp").db()?,
                series_id: row.try_get("sid").db()?,
                tags: row.try_get("tags").db()?,
            },
        );
    }
    let mut downsampler = Downsampler::new(query);
    // Chunk rows per (tag set, window), with their seq, summary and data.
    let mut windows: BTreeMap<(i64, i64), Vec<&PgRow>> = BTreeMap::new();
    // The head's aggregate per (tag set, window).
    let mut heads: BTreeMap<(i64, i64), &PgRow> = BTreeMap::new();
    for row in rows {
        match kind(row) {
            BUCKETS => {
                // `s` and `a` are there for sums and averages, `lo` for minima, `hi` for maxima.
                let n: i64 = row.try_get("n").db()?;
                let sum: f64 = row.try_get::<Option<f64>, _>("s").db()?.unwrap_or(0.0);
                let abs: f64 = row.try_get::<Option<f64>, _>("a").db()?.unwrap_or(0.0);
                let flag: i32 = row.try_get("flag").db()?;
                if flag > 0 || (sums && !sum.is_finite()) {
                    return Ok(None);
                }
                let key = || (0, String::new(), String::new());
                // Per tag set (with `group_by`): its group; else the one group, `None`.
                let tsid: Option<i64> = row.try_get("tsid").db()?;
                let group = match tsid {
                    Some(tsid) => tagsets.get(&tsid).and_then(|t| t.group.clone()),
                    None => None,
                };
                let bucket = micros(row.try_get("t").db()?);
                // Each term is a window's compensated sum plus its compensation, both added in
                // float8: 2n·2⁻⁵³·Σ|v| bounds the error of both roundings (n ≥ terms).
                bounds.add(&group, bucket, n as f64 * f64::EPSILON * abs);
                downsampler.merge(
                    group,
                    bucket,
                    BucketAggregate {
                        count: u64::try_from(n).unwrap_or(0),
                        sum: CompensatedSum::from_parts(sum, 0.0, false),
                        min: row
                            .try_get::<Option<f64>, _>("lo")
                            .db()?
                            .unwrap_or(f64::NAN),
                        max: row
                            .try_get::<Option<f64>, _>("hi")
                            .db()?
                            .unwrap_or(f64::NAN),
                        // Not read: the aggregation is neither first nor last.
                        first: (key(), f64::NAN),
                        last: (key(), f64::NAN),
                    },
                );
            }
            CHUNK => {
                let key = (row.try_get("tsid").db()?, micros(row.try_get("t").db()?));
                windows.entry(key).or_default().push(row);
            }
            HEAD => {
                let key = (row.try_get("tsid").db()?, micros(row.try_get("t").db()?));
                heads.insert(key, row);
            }
            _ => {}
        }
    }
    // Head rows overwrite the chunks of their window: aggregated apart, they would not.
    if heads.keys().any(|k| windows.contains_key(k)) {
        return Ok(None);
    }
    for ((tsid, w), row) in heads {
        let Some(tagset) = tagsets.get(&tsid) else {
            continue;
        };
        let bucket = bucket_start(w, step);
        let n: i64 = row.try_get("n").db()?;
        let sum: f64 = row.try_get("s").db()?;
        let abs: f64 = row.try_get("a").db()?;
        if sums && !sum.is_finite() {
            return Ok(None);
        }
        bounds.add(
            &tagset.group,
            bucket,
            (n.saturating_sub(1)) as f64 * f64::EPSILON / 2.0 * abs,
        );
        let first = micros(row.try_get("t1").db()?);
        let key = || (first, tagset.series_id.clone(), tagset.tags.clone());
        downsampler.merge(
            tagset.group.clone(),
            bucket,
            BucketAggregate {
                count: u64::try_from(n).unwrap_or(0),
                sum: CompensatedSum::from_parts(sum, 0.0, false),
                min: row.try_get("lo").db()?,
                max: row.try_get("hi").db()?,
                // Not read: the aggregation is neither first nor last.
                first: (key(), f64::NAN),
                last: (key(), f64::NAN),
            },
        );
    }
    for ((tsid, w), mut parts) in windows {
        let Some(tagset) = tagsets.get(&tsid) else {
            continue;
        };
        let name = TagsetName {
            series_id: &tagset.series_id,
            tags: &tagset.tags,
        };
        if parts.len() == 1 && w >= low && w + WINDOW <= high {
            let summary = summary_of(parts[0]).map_err(|e| name.damaged(w, e))?;
            downsampler.merge(
                tagset.group.clone(),
                bucket_start(w, step),
                summary.aggregate(&tagset.series_id, &tagset.tags),
            );
            continue;
        }
        // Fragments in `seq` order, later ones overwriting.
        parts.sort_by_key(|r| r.try_get::<i32, _>("flag").unwrap_or(0));
        let mut merged = Samples::default();
        for row in parts {
            let data: &[u8] = row.try_get("data").db()?;
            let part = chunk::decode(data).map_err(|e| name.damaged(w, e))?;
            merged = merged.overwrite(&part);
        }
        chunk::fold_buckets(
            &merged,
            low,
            high,
            step,
            tagset.group.as_deref(),
            &tagset.series_id,
            &tagset.tags,
            &mut downsampler,
        );
    }
    let out = downsampler.finish();
    Ok((!sums || bounds.hold(&out, query.aggregation)).then_some(out))
}

/// The summed error bounds of the float sums merged into each (group, bucket start).
#[derive(Default)]
pub(crate) struct ErrorBounds(HashMap<(Option<String>, i64), f64>);

impl ErrorBounds {
    pub(crate) fn add(&mut self, group: &Option<String>, bucket: i64, bound: f64) {
        *self.0.entry((group.clone(), bucket)).or_default() += bound;
    }

    /// Whether every bucket's bound is within 1e-10 of its sum (an average's sum is its value
    /// times its count), as the shared semantics ask of a sum that is not compensated.
    pub(crate) fn hold(&self, series: &[HistorySeries], aggregation: Aggregation) -> bool {
        if self.0.is_empty() {
            return true;
        }
        series.iter().all(|s| {
            s.buckets.iter().all(|b| {
                let Some(bound) = self.0.get(&(s.group.clone(), time::to_micros(b.start))) else {
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

fn kind(row: &PgRow) -> i32 {
    row.try_get("kind").unwrap_or(-1)
}

/// The summary of a chunk row, checked against its CRC.
fn summary_of(row: &PgRow) -> std::result::Result<Summary, String> {
    let get = |e: sqlx::Error| e.to_string();
    let count: i64 = row.try_get("n").map_err(get)?;
    let summary = Summary {
        count: u64::try_from(count).map_err(|_| "a negative count".to_owned())?,
        sum: CompensatedSum::from_parts(
            row.try_get("s").map_err(get)?,
            row.try_get("comp").map_err(get)?,
            row.try_get("scaled").map_err(get)?,
        ),
        min: row.try_get("lo").map_err(get)?,
        max: row.try_get("hi").map_err(get)?,
        first: (
            micros(row.try_get("t1").map_err(get)?),
            row.try_get("f").map_err(get)?,
        ),
        last: (
            micros(row.try_get("t2").map_err(get)?),
            row.try_get("l").map_err(get)?,
        ),
    };
    let check: i32 = row.try_get("chk").map_err(get)?;
    if summary.checksum() as i32 != check {
        return Err("its summary does not match its checksum".to_owned());
    }
    Ok(summary)
}
