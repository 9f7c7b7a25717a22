//! `save_metrics`: a batch merged and sorted by key, then the series, samples (`COPY` or
//! `UNNEST`) and tag sets upserted in one transaction per group of partitions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use aimon_core::{
    Metric, Result, RetentionPolicy, StorageEvent, Tags, WriteReport, model::tags_json, time,
};
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgConnection;

use crate::backend::{DbResult, PostgresBackend};
use crate::config::IngestMethod;
use crate::error::{from_sqlx, sqlstate};

use super::chunks::{self, NO_PARTITION, TagsetName, TagsetWrite, WriteFailure};

/// Samples per `COPY` (or `INSERT … SELECT FROM UNNEST(…)` statement): larger batches are
/// split, so that no single message, and no fallback upsert's arrays, grow without bound.
pub(crate) const INSERT_CHUNK: usize = 100_000;

/// Upserts a batch of series (one row per id, sorted by id so that concurrent writers lock
/// rows in the same order): everything but `created_at` is overwritten.
const UPSERT_SERIES: &str = "INSERT INTO series \
    (id, name, \"type\", description, unit, metadata, created_at, updated_at) \
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
    $6::text[], $7::timestamptz[], $8::timestamptz[]) \
    ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, \"type\" = EXCLUDED.\"type\", \
    description = EXCLUDED.description, unit = EXCLUDED.unit, metadata = EXCLUDED.metadata, \
    updated_at = EXCLUDED.updated_at \
    RETURNING id, sid";

/// Updates the metadata of series that exist, for metrics that carry nothing live (an expired
/// series must not be created by them, DESIGN.md rule 6).
const UPDATE_SERIES: &str = "UPDATE series AS s SET name = u.name, \"type\" = u.t, \
    description = u.d, unit = u.un, metadata = u.m, updated_at = u.ua \
    FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
    $7::timestamptz[]) AS u(id, name, t, d, un, m, ua) WHERE s.id = u.id RETURNING s.id";

/// The bulk sample insert: the batch's columns as four arrays, one statement; a rewritten key
/// overwrites the value (DESIGN.md rule 1).
pub(crate) const INSERT_SAMPLES: &str = "INSERT INTO samples (sid, time, tags, value) \
    SELECT * FROM UNNEST($1::bigint[], $2::timestamptz[], $3::text[], $4::float8[]) \
    ON CONFLICT (sid, time, tags_key) DO UPDATE SET value = EXCLUDED.value";

/// Records the batch's distinct (series, tag set) pairs, keeping the greatest time bound.
pub(crate) const UPSERT_TAGSETS: &str = "INSERT INTO series_tagsets (sid, tags, tags_jsonb, last_bound) \
    SELECT u.sid, u.tags, u.tags::jsonb, u.b \
    FROM UNNEST($1::bigint[], $2::text[], $3::timestamptz[]) AS u(sid, tags, b) \
    ON CONFLICT (sid, tags_key) DO UPDATE SET last_bound = EXCLUDED.last_bound \
    WHERE series_tagsets.last_bound < EXCLUDED.last_bound";

/// The granularity of `series_tagsets.last_bound`: one hour.
const BOUND_STEP: i64 = 3_600_000_000;

/// The `series_tagsets.last_bound` written for a sample at `ts`: `ts` rounded up past the next
/// whole hour. Any upper bound keeps retention's pruning exact; a coarse one means a series
/// writing in order rewrites its row once an hour, not in every batch.
pub(crate) fn last_bound(ts: i64) -> i64 {
    ts.div_euclid(BOUND_STEP)
        .saturating_add(1)
        .saturating_mul(BOUND_STEP)
        .min(time::MAX_TIMESTAMP_MICROS)
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds the columns both series statements start with ([`UPSERT_SERIES`], [`UPDATE_SERIES`]):
/// `$1`–`$6`, the ids, names, types, descriptions, units and metadata JSON of `rows`.
fn bind_series_columns<'q>(query: PgQuery<'q>, rows: &[&SeriesRow<'q>]) -> Result<PgQuery<'q>> {
    let metadata = rows
        .iter()
        .map(|s| serde_json::to_string(&s.metric.metadata))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(query
        .bind(
            rows.iter()
                .map(|s| s.metric.id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|s| s.metric.name.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|s| s.metric.metric_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|s| s.metric.description.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|s| s.metric.unit.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(metadata))
}

/// The optimistic half of [`insert_samples`]: a plain insert, for batches of new keys.
const INSERT_NEW_SAMPLES: &str = "INSERT INTO samples (sid, time, tags, value) \
    SELECT * FROM UNNEST($1::bigint[], $2::timestamptz[], $3::text[], $4::float8[])";

/// The SQLSTATE of a unique violation.
const UNIQUE_VIOLATION: &str = "23505";

/// [`IngestMethod::Unnest`]: the batch as four arrays in one statement. Most batches carry only
/// new keys, and a plain `INSERT` is a third cheaper than `ON CONFLICT DO UPDATE`'s speculative
/// insertion; so the plain insert runs first under a savepoint, and only a batch that rewrites
/// a stored key (a retry, an overwrite) runs again as the upsert.
async fn insert_samples(
    conn: &mut PgConnection,
    sids: Vec<i64>,
    times: Vec<DateTime<Utc>>,
    tags: Vec<&str>,
    values: Vec<f64>,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::raw_sql("SAVEPOINT aimon_samples")
        .execute(&mut *conn)
        .await?;
    let plain = sqlx::query(INSERT_NEW_SAMPLES)
        .bind(&sids)
        .bind(&times)
        .bind(&tags)
        .bind(&values)
        .execute(&mut *conn)
        .await;
    upsert_unless_done(conn, plain.map(drop), sids, times, tags, values).await
}

/// [`IngestMethod::Copy`]: the rows in `COPY`'s binary format straight into `samples` (routed
/// to the partitions by the server) under a savepoint; a batch that rewrites a stored key fails
/// the unique check and runs again as the `UNNEST … ON CONFLICT DO UPDATE` upsert.
async fn copy_samples(
    conn: &mut PgConnection,
    sids: Vec<i64>,
    times: Vec<DateTime<Utc>>,
    tags: Vec<&str>,
    values: Vec<f64>,
) -> std::result::Result<(), sqlx::Error> {
    let data = binary_copy_rows(&sids, &times, &tags, &values);
    sqlx::raw_sql("SAVEPOINT aimon_samples")
        .execute(&mut *conn)
        .await?;
    let copied = async {
        let mut copy = conn
            .copy_in_raw("COPY samples (sid, time, tags, value) FROM STDIN (FORMAT binary)")
            .await?;
        copy.send(data).await?;
        copy.finish().await
    }
    .await;
    upsert_unless_done(conn, copied.map(drop), sids, times, tags, values).await
}

/// Microseconds from the Unix epoch to PostgreSQL's, 2000-01-01T00:00:00Z.
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// `(sid, time, tags, value)` rows in `COPY`'s binary format: the signature, flags and header
/// extension length, then per row the field count and each field as a length and its network
/// order bytes (`timestamptz` as microseconds since 2000), then the `-1` trailer. The server
/// parses none of it as text, as it would `COPY`'s text or CSV format.
fn binary_copy_rows(
    sids: &[i64],
    times: &[DateTime<Utc>],
    tags: &[&str],
    values: &[f64],
) -> Vec<u8> {
    let tag_bytes: usize = tags.iter().map(|t| t.len()).sum();
    let mut out = Vec::with_capacity(21 + sids.len() * 42 + tag_bytes);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    for (((sid, time), tags), value) in sids.iter().zip(times).zip(tags).zip(values) {
        out.extend_from_slice(&4i16.to_be_bytes());
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&sid.to_be_bytes());
        out.extend_from_slice(&8i32.to_be_bytes());
        let micros = time::to_micros(*time) - POSTGRES_EPOCH_MICROS;
        out.extend_from_slice(&micros.to_be_bytes());
        // Validated tag sets are far below COPY's 1 GiB field limit.
        let len = i32::try_from(tags.len()).unwrap_or(i32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(tags.as_bytes());
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&value.to_bits().to_be_bytes());
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

/// Ends the `aimon_samples` savepoint of an optimistic write of new keys: released when
/// `attempt` succeeded; when it hit a stored key (a retry, an overwrite), rolled back and the
/// batch written again as the `ON CONFLICT DO UPDATE` upsert.
async fn upsert_unless_done(
    conn: &mut PgConnection,
    attempt: std::result::Result<(), sqlx::Error>,
    sids: Vec<i64>,
    times: Vec<DateTime<Utc>>,
    tags: Vec<&str>,
    values: Vec<f64>,
) -> std::result::Result<(), sqlx::Error> {
    match attempt {
        Ok(()) => {
            sqlx::raw_sql("RELEASE SAVEPOINT aimon_samples")
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
        Err(e) if sqlstate(&e).as_deref() == Some(UNIQUE_VIOLATION) => {
            sqlx::raw_sql("ROLLBACK TO SAVEPOINT aimon_samples")
                .execute(&mut *conn)
                .await?;
            sqlx::query(INSERT_SAMPLES)
                .bind(sids)
                .bind(times)
                .bind(tags)
                .bind(values)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// One series of a write, after merging the batch's metrics with the same id.
struct SeriesRow<'a> {
    metric: &'a Metric,
    created_at: DateTime<Utc>,
    /// Whether some metric of the batch with this id carries a live sample or live metadata.
    live: bool,
}

/// One sample row waiting to be inserted.
#[derive(Clone)]
struct SampleRow {
    /// Index into the batch's sorted series.
    series: usize,
    ts: i64,
    tags: Arc<str>,
    value: f64,
}

/// A validated write, ready to run (and to run again after a partition refresh).
struct PreparedWrite<'a> {
    series: Vec<SeriesRow<'a>>,
    samples: Vec<SampleRow>,
    /// One event per stored metric of the batch, in order: (series index, live samples).
    events: Vec<(usize, u64)>,
    report: WriteReport,
}

fn prepare(metrics: &[Metric], cutoff: Option<i64>) -> PreparedWrite<'_> {
    let mut by_id: BTreeMap<&str, SeriesRow<'_>> = BTreeMap::new();
    let mut report = WriteReport::default();
    for metric in metrics {
        let live = metric
            .values
            .iter()
            .filter(|v| RetentionPolicy::is_live(cutoff, v.timestamp))
            .count();
        report.expired += (metric.values.len() - live) as u64;
        report.written += live as u64;
        let is_live = live > 0 || RetentionPolicy::is_live(cutoff, metric.updated_at);
        match by_id.get_mut(metric.id.as_str()) {
            Some(row) => {
                if is_live && !row.live {
                    row.created_at = metric.created_at;
                }
                row.live |= is_live;
                row.metric = metric;
            }
            None => {
                by_id.insert(
                    &metric.id,
                    SeriesRow {
                        metric,
                        created_at: metric.created_at,
                        live: is_live,
                    },
                );
            }
        }
    }
    let index: HashMap<&str, usize> = by_id.keys().enumerate().map(|(i, k)| (*k, i)).collect();
    let series: Vec<SeriesRow<'_>> = by_id.into_values().collect();
    let mut samples = Vec::with_capacity(report.written as usize);
    let mut events = Vec::with_capacity(metrics.len());
    for metric in metrics {
        let i = index[metric.id.as_str()];
        let mut live = 0u64;
        // Consecutive samples usually share their tags: build each run's JSON once.
        let mut run: Option<(&Tags, Arc<str>)> = None;
        for sample in &metric.values {
            if !RetentionPolicy::is_live(cutoff, sample.timestamp) {
                continue;
            }
            live += 1;
            let tags = match &run {
                Some((map, json)) if **map == sample.tags => Arc::clone(json),
                _ => {
                    let json: Arc<str> = tags_json(&sample.tags).into();
                    run = Some((&sample.tags, Arc::clone(&json)));
                    json
                }
            };
            samples.push(SampleRow {
                series: i,
                ts: time::to_micros(sample.timestamp),
                tags,
                value: sample.value,
            });
        }
        events.push((i, live));
    }
    // Sorted by key (stable: later writes of a key stay after earlier ones), then only the
    // last write of each key kept: one statement cannot update a row twice, and sorted keys
    // make concurrent writers lock rows in the same order.
    if !samples.is_sorted_by(|a, b| (a.series, a.ts, &*a.tags) <= (b.series, b.ts, &*b.tags)) {
        samples.sort_by(|a, b| (a.series, a.ts, &*a.tags).cmp(&(b.series, b.ts, &*b.tags)));
    }
    let mut deduped: Vec<SampleRow> = Vec::with_capacity(samples.len());
    for row in samples {
        match deduped.last_mut() {
            Some(last)
                if last.series == row.series && last.ts == row.ts && last.tags == row.tags =>
            {
                *last = row;
            }
            _ => deduped.push(row),
        }
    }
    PreparedWrite {
        series,
        samples: deduped,
        events,
        report,
    }
}

impl PostgresBackend {
    pub(crate) async fn write_metrics(&self, metrics: &[Metric]) -> Result<WriteReport> {
        let cutoff = self.config.retention.metric_cutoff(time::now());
        let prepared = prepare(metrics, cutoff);
        // Every timestamp, not one per interval: partitions made with another
        // `partition_interval` (or clipped by their neighbours) need not line up with ours,
        // so one interval may need two partitions. ensure_partitions skips covered ones.
        let mut times: BTreeSet<i64> = prepared.samples.iter().map(|row| row.ts).collect();
        if !self.timescale {
            // The chunks' partitions are found by their windows' starts.
            let windows: Vec<i64> = times
                .iter()
                .map(|&t| aimon_core::chunk::window_start(t, chunks::WINDOW))
                .collect();
            times.extend(windows);
        }
        self.ensure_partitions(&times).await?;
        match self.write_batch(&prepared, &times).await {
            Ok(()) => {}
            Err(WriteFailure::NoPartition) => {
                // Another process dropped a partition this process still knew of.
                self.reload_partitions().await?;
                self.ensure_partitions(&times).await?;
                match self.write_batch(&prepared, &times).await {
                    Ok(()) => {}
                    Err(WriteFailure::NoPartition) => {
                        return Err(aimon_core::Error::new(
                            aimon_core::ErrorKind::Backend,
                            "no partition covers some samples, even after creating them",
                        ));
                    }
                    Err(WriteFailure::Other(e)) => return Err(e),
                }
            }
            Err(WriteFailure::Other(e)) => return Err(e),
        }
        Ok(prepared.report)
    }

    /// Writes a prepared batch: in one transaction where its samples lie in at most
    /// [`LockBudget::partitions_per_write`](crate::schema::LockBudget) partitions (the usual
    /// case), else in one transaction per group of that many partitions, in time order, the
    /// events with the last. Inserting into a partition locks it and its index until commit,
    /// and a transaction over thousands of them would exhaust the server's lock table. A
    /// failure midway leaves the groups before it committed; the retry of the batch rewrites
    /// them (the sample key makes that an overwrite) and completes the rest.
    async fn write_batch(
        &self,
        prepared: &PreparedWrite<'_>,
        times: &BTreeSet<i64>,
    ) -> std::result::Result<(), WriteFailure> {
        let Some(groups) = self.partition_groups(&prepared.samples, times) else {
            return self.write_prepared(prepared, &prepared.samples, true).await;
        };
        tracing::debug!(backend = %self.config.name, transactions = groups.len(), "a batch over many partitions, written in groups");
        let last = groups.len().saturating_sub(1);
        for (i, rows) in groups.iter().enumerate() {
            self.write_prepared(prepared, rows, i == last).await?;
        }
        Ok(())
    }

    /// `samples` in groups that each lie in at most the lock budget's partitions, each group
    /// sorted by key; `None` when all of them do (nothing is copied then). Native partitions
    /// are found in the cache ([`ensure_partitions`](Self::ensure_partitions) has just made
    /// it cover the batch); TimescaleDB's chunks are the `partition_interval` slots, and since
    /// TimescaleDB creates a missing chunk inside the inserting transaction (about eight locks
    /// each, as a native partition's creation), its groups hold the DDL budget of them.
    fn partition_groups(
        &self,
        samples: &[SampleRow],
        times: &BTreeSet<i64>,
    ) -> Option<Vec<Vec<SampleRow>>> {
        let interval = self.config.partition_micros();
        let guard;
        let (limit, cache): (usize, &[(i64, i64)]) = if self.timescale {
            (self.lock_budget.partitions_per_ddl, &[])
        } else {
            guard = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
            (self.lock_budget.partitions_per_write, &guard)
        };
        // Monotonic in `ts`: the partition (or chunk slot) holding it. A timestamp no known
        // partition covers shares its predecessor's key; its insert fails and is retried.
        let key = |ts: i64| -> i64 {
            if self.timescale {
                ts.div_euclid(interval)
            } else {
                cache.partition_point(|&(start, _)| start <= ts) as i64
            }
        };
        let mut spanned = 0;
        let mut previous = None;
        for &ts in times {
            let k = key(ts);
            if previous != Some(k) {
                spanned += 1;
                previous = Some(k);
            }
        }
        if spanned <= limit {
            return None;
        }
        let mut keyed: Vec<(i64, &SampleRow)> = samples.iter().map(|r| (key(r.ts), r)).collect();
        // Stable: within a partition the rows keep their (series, time, tags) order.
        keyed.sort_by_key(|(k, _)| *k);
        let mut groups: Vec<Vec<SampleRow>> = Vec::new();
        let mut in_group = 0;
        let mut previous = None;
        for (k, row) in keyed {
            if previous != Some(k) {
                previous = Some(k);
                if in_group == limit || groups.is_empty() {
                    groups.push(Vec::new());
                    in_group = 0;
                }
                in_group += 1;
            }
            if let Some(group) = groups.last_mut() {
                group.push(row.clone());
            }
        }
        Some(groups)
    }

    /// Native mode: the tag sets of `rows` upserted (and their rows locked, in key order, so
    /// that two writers of one tag set take turns), then the samples stored as head rows and
    /// chunks ([`chunks::store`]).
    async fn store_native(
        &self,
        tx: &mut PgConnection,
        rows: &[SampleRow],
        sids: &[Option<i64>],
        series_ids: &[&str],
    ) -> std::result::Result<u64, WriteFailure> {
        // Per (series, tag set): the samples in time order (rows are sorted by series, time).
        let mut groups: SampleGroups<'_> = BTreeMap::new();
        for row in rows {
            if let Some(sid) = sids[row.series] {
                groups
                    .entry((sid, &row.tags))
                    .or_insert_with(|| (series_ids[row.series], Vec::new()))
                    .1
                    .push((row.ts, row.value));
            }
        }
        store_groups(tx, groups).await
    }
}

/// Samples grouped by (series key, canonical tags JSON), each group with its series id and
/// its (timestamp µs, value) pairs in time order.
pub(crate) type SampleGroups<'a> = BTreeMap<(i64, &'a str), (&'a str, Vec<(i64, f64)>)>;

/// Stores samples grouped by (series key, tags JSON), with each group's series id: the tag
/// sets upserted and locked, then [`chunks::store`].
pub(crate) async fn store_groups(
    tx: &mut PgConnection,
    groups: SampleGroups<'_>,
) -> std::result::Result<u64, WriteFailure> {
    if groups.is_empty() {
        return Ok(0);
    }
    let bounds: Vec<DateTime<Utc>> = groups
        .values()
        .map(|(_, s)| time::from_micros(last_bound(s.iter().map(|p| p.0).max().unwrap_or(0))))
        .collect();
    let key_sids: Vec<i64> = groups.keys().map(|k| k.0).collect();
    let key_tags: Vec<&str> = groups.keys().map(|k| k.1).collect();
    sqlx::query(UPSERT_TAGSETS)
        .bind(&key_sids)
        .bind(&key_tags)
        .bind(bounds)
        .execute(&mut *tx)
        .await
        .db()?;
    let found = sqlx::query(
        "SELECT t.sid, t.tags, t.tsid, t.head_window FROM series_tagsets t \
             JOIN UNNEST($1::bigint[], $2::text[]) AS u(sid, tags) \
             ON t.sid = u.sid AND t.tags_key = tags_key(u.tags)",
    )
    .bind(&key_sids)
    .bind(&key_tags)
    .fetch_all(&mut *tx)
    .await
    .db()?;
    let mut tagsets: HashMap<(i64, String), (i64, Option<i64>)> = HashMap::new();
    for row in found {
        let head: Option<DateTime<Utc>> = row.try_get(3).db()?;
        tagsets.insert(
            (row.try_get(0).db()?, row.try_get(1).db()?),
            (row.try_get(2).db()?, head.map(time::to_micros)),
        );
    }
    let mut writes = Vec::with_capacity(groups.len());
    for ((sid, tags), (series_id, samples)) in groups {
        let Some(&(tsid, head_window)) = tagsets.get(&(sid, tags.to_owned())) else {
            return Err(WriteFailure::Other(aimon_core::Error::new(
                aimon_core::ErrorKind::Backend,
                "a tag set just written is missing",
            )));
        };
        writes.push(TagsetWrite {
            tsid,
            head_window,
            name: TagsetName { series_id, tags },
            samples: aimon_core::chunk::Samples::from_unsorted(samples),
        });
    }
    let open = aimon_core::chunk::window_start(time::to_micros(time::now()), chunks::WINDOW);
    chunks::store(tx, &writes, open).await
}

impl PostgresBackend {
    /// One transaction: series upserts, the samples `rows` (all of the batch's, or one group
    /// of them), their tag sets and, with `notify`, the batch's events.
    async fn write_prepared(
        &self,
        prepared: &PreparedWrite<'_>,
        rows: &[SampleRow],
        notify: bool,
    ) -> std::result::Result<(), WriteFailure> {
        let mut tx = self.pool.begin().await.db()?;
        let mut sids: Vec<Option<i64>> = vec![None; prepared.series.len()];
        let position: HashMap<&str, usize> = prepared
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| (s.metric.id.as_str(), i))
            .collect();
        let (live, dead): (Vec<&SeriesRow<'_>>, Vec<&SeriesRow<'_>>) =
            prepared.series.iter().partition(|s| s.live);
        if !live.is_empty() {
            let rows = bind_series_columns(sqlx::query(UPSERT_SERIES), &live)?
                .bind(live.iter().map(|s| s.created_at).collect::<Vec<_>>())
                .bind(live.iter().map(|s| s.metric.updated_at).collect::<Vec<_>>())
                .fetch_all(&mut *tx)
                .await
                .db()?;
            for row in rows {
                let id: String = row.try_get(0).db()?;
                let sid: i64 = row.try_get(1).db()?;
                if let Some(&i) = position.get(id.as_str()) {
                    sids[i] = Some(sid);
                }
            }
        }
        let mut stored_dead: BTreeSet<usize> = BTreeSet::new();
        if !dead.is_empty() {
            let rows = bind_series_columns(sqlx::query(UPDATE_SERIES), &dead)?
                .bind(dead.iter().map(|s| s.metric.updated_at).collect::<Vec<_>>())
                .fetch_all(&mut *tx)
                .await
                .db()?;
            for row in rows {
                let id: String = row.try_get(0).db()?;
                if let Some(&i) = position.get(id.as_str()) {
                    stored_dead.insert(i);
                }
            }
        }
        if !self.timescale {
            let series_ids: Vec<&str> = prepared
                .series
                .iter()
                .map(|s| s.metric.id.as_str())
                .collect();
            let rewritten = self.store_native(&mut tx, rows, &sids, &series_ids).await?;
            // One row a batch for the series upsert's dead version.
            self.rewritten
                .fetch_add(rewritten + 1, std::sync::atomic::Ordering::Relaxed);
        }
        for chunk in rows.chunks(INSERT_CHUNK).filter(|_| self.timescale) {
            let mut sid_col = Vec::with_capacity(chunk.len());
            let mut time_col = Vec::with_capacity(chunk.len());
            let mut tags_col: Vec<&str> = Vec::with_capacity(chunk.len());
            let mut value_col = Vec::with_capacity(chunk.len());
            for row in chunk {
                let Some(sid) = sids[row.series] else {
                    continue;
                };
                sid_col.push(sid);
                time_col.push(time::from_micros(row.ts));
                tags_col.push(&row.tags);
                value_col.push(row.value);
            }
            let done = match self.config.ingest {
                IngestMethod::Unnest => {
                    insert_samples(&mut tx, sid_col, time_col, tags_col, value_col).await
                }
                IngestMethod::Copy => {
                    copy_samples(&mut tx, sid_col, time_col, tags_col, value_col).await
                }
            };
            if let Err(e) = done {
                return Err(if sqlstate(&e).as_deref() == Some(NO_PARTITION) {
                    WriteFailure::NoPartition
                } else {
                    WriteFailure::Other(from_sqlx(e))
                });
            }
        }
        let mut tagsets: BTreeMap<(i64, &str), i64> = BTreeMap::new();
        for row in rows.iter().filter(|_| self.timescale) {
            if let Some(sid) = sids[row.series] {
                let bound = last_bound(row.ts);
                let entry = tagsets.entry((sid, &row.tags)).or_insert(bound);
                *entry = (*entry).max(bound);
            }
        }
        if !tagsets.is_empty() {
            sqlx::query(UPSERT_TAGSETS)
                .bind(tagsets.keys().map(|(sid, _)| *sid).collect::<Vec<_>>())
                .bind(tagsets.keys().map(|(_, tags)| *tags).collect::<Vec<_>>())
                .bind(
                    tagsets
                        .values()
                        .map(|b| time::from_micros(*b))
                        .collect::<Vec<_>>(),
                )
                .execute(&mut *tx)
                .await
                .db()?;
        }
        let events: Vec<String> = prepared
            .events
            .iter()
            .filter(|_| notify)
            .filter(|(i, _)| sids[*i].is_some() || stored_dead.contains(i))
            .map(|(i, samples)| {
                serde_json::to_string(&StorageEvent::MetricWritten {
                    backend: self.config.name.clone(),
                    metric_id: prepared.series[*i].metric.id.clone(),
                    samples: *samples,
                })
            })
            .collect::<std::result::Result<_, _>>()
            .map_err(aimon_core::Error::from)?;
        self.notify(&mut tx, events).await?;
        tx.commit().await.db()?;
        self.vacuum_if_rewritten().await;
        Ok(())
    }

    /// Vacuums the tables of samples and series once writes have left
    /// [`chunks::VACUUM_AFTER`] dead row versions behind (native mode): their space is then
    /// reused by later writes instead of growing the tables. The batch is committed already:
    /// a vacuum that fails is logged, not the batch's error.
    async fn vacuum_if_rewritten(&self) {
        use std::sync::atomic::Ordering;
        if self.timescale || self.rewritten.load(Ordering::Relaxed) < chunks::VACUUM_AFTER {
            return;
        }
        self.rewritten.store(0, Ordering::Relaxed);
        if let Err(e) =
            sqlx::raw_sql("VACUUM (SKIP_LOCKED) chunks, samples, series, series_tagsets")
                .execute(&self.pool)
                .await
        {
            tracing::warn!(backend = %self.config.name, error = %e, "vacuum after rewrites failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aimon_core::{MetricType, MetricValue};

    fn metric(id: &str, samples: &[(i64, f64)]) -> Metric {
        let mut m = Metric::new(id, "n", MetricType::Gauge);
        m.values = samples
            .iter()
            .map(|(t, v)| MetricValue::new(time::from_micros(*t), *v))
            .collect();
        m
    }

    #[test]
    fn a_batch_keeps_the_last_write_of_each_key_sorted() {
        let a = metric("b", &[(5, 1.0), (1, 2.0), (5, 3.0)]);
        let b = metric("a", &[(7, 4.0)]);
        let c = metric("b", &[(1, 5.0)]);
        let batch = [a, b, c];
        let prepared = prepare(&batch, None);
        let ids: Vec<&str> = prepared
            .series
            .iter()
            .map(|s| s.metric.id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        let rows: Vec<(usize, i64, f64)> = prepared
            .samples
            .iter()
            .map(|r| (r.series, r.ts, r.value))
            .collect();
        assert_eq!(rows, [(0, 7, 4.0), (1, 1, 5.0), (1, 5, 3.0)]);
        assert_eq!(prepared.report.written, 5);
        assert_eq!(prepared.events, [(1, 3), (0, 1), (1, 1)]);
    }

    #[test]
    fn merged_series_keep_the_first_created_at() {
        let mut first = metric("x", &[]);
        first.created_at = time::from_micros(1);
        let mut second = metric("x", &[]);
        second.created_at = time::from_micros(2);
        second.description = Some("later".into());
        let batch = [first, second];
        let prepared = prepare(&batch, None);
        assert_eq!(prepared.series.len(), 1);
        assert_eq!(prepared.series[0].created_at, time::from_micros(1));
        assert_eq!(
            prepared.series[0].metric.description.as_deref(),
            Some("later")
        );
    }
}

#[cfg(test)]
mod bound_tests {
    use super::*;

    #[test]
    fn tagset_bounds_are_upper_bounds_on_whole_hours() {
        for ts in [0, 1, BOUND_STEP - 1, BOUND_STEP, 1_704_067_200_123_456] {
            let bound = last_bound(ts);
            assert!(bound > ts, "{ts}");
            assert_eq!(bound.rem_euclid(BOUND_STEP), 0, "{ts}");
            assert!(bound - ts <= BOUND_STEP, "{ts}");
        }
        assert_eq!(
            last_bound(time::MAX_TIMESTAMP_MICROS - 1),
            time::MAX_TIMESTAMP_MICROS
        );
    }
}
