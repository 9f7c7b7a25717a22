//! PostgreSQL's samples as chunks (schema version 4), beyond the conformance suite: a store
//! written by the release before chunks migrated in place (every sample compared), damaged
//! chunk bytes and summaries reported as `Corrupted` naming series and window, and the
//! writer's backend terminated at random moments while windows seal, with every acknowledged
//! sample counted afterwards.
#![cfg(feature = "postgres")]

use std::collections::BTreeMap;
use std::time::Duration;

use aimon_core::{
    Aggregation, Contract, ErrorKind, HistoryQuery, Metric, MetricQuery, MetricType, MetricValue,
    StorageBackend, StorageConfig, time,
};
use aimon_integration_tests::fixtures::{self, Fixture, run_check};
use aimon_postgres::PostgresBackend;
use aimon_postgres::config::PostgresConfig;
use chrono::TimeDelta;

async fn fixture() -> Option<Fixture> {
    fixtures::postgres().await
}

async fn open(config: &StorageConfig) -> Contract<PostgresBackend> {
    Contract::new(PostgresBackend::connect(config).await.expect("connects"))
}

/// 2024-01-01T00:00:00Z.
const BASE: i64 = 1_704_067_200_000_000;

/// The fixture's dump (`crates/aimon-postgres/tests/fixtures/README.md`).
const V3_DUMP: &str = include_str!("../../crates/aimon-postgres/tests/fixtures/v3.sql");
/// Its samples as the release that wrote it read them back: `id micros value-bits tags`.
const V3_EXPECTED: &str =
    include_str!("../../crates/aimon-postgres/tests/fixtures/v3_expected.txt");

/// Loads the version-3 dump into the schema of `config` with `psql` (the dump is `pg_dump`'s
/// plain format: `COPY` blocks keep every float bit, `-0` included).
async fn load_v3(config: &StorageConfig) {
    let parsed = PostgresConfig::from_storage_config(config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("v3.sql");
    std::fs::write(&file, V3_DUMP.replace("aimon_v3_fixture", &parsed.schema)).unwrap();
    let (url, password) = parsed.libpq_url_and_password();
    let mut psql = std::process::Command::new("psql");
    psql.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(url)
        .arg("-f")
        .arg(&file);
    if let Some(password) = password {
        psql.env("PGPASSWORD", password.expose());
    }
    let out = psql.output().expect("psql runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn listing(metric: &Metric) -> Vec<String> {
    metric
        .values
        .iter()
        .map(|v| {
            format!(
                "{} {} {} {}",
                metric.id,
                time::to_micros(v.timestamp),
                v.value.to_bits(),
                aimon_core::model::tags_json(&v.tags)
            )
        })
        .collect()
}

#[test]
fn a_store_of_the_release_before_chunks_migrates_in_place_keeping_every_sample() {
    run_check("v3 migration", async {
        let Some(fixture) = fixture().await else {
            return;
        };
        let config = fixture.config(&[]);
        load_v3(&config).await;
        let store = open(&config).await;
        let expected: Vec<&str> = V3_EXPECTED.lines().collect();
        let mut found = Vec::new();
        for id in ["empty", "m1", "m2", "edge"] {
            let metric = store.get_metric(id).await.unwrap().expect(id);
            found.extend(listing(&metric));
        }
        assert_eq!(found.len(), expected.len());
        for (found, expected) in found.iter().zip(&expected) {
            assert_eq!(found, expected);
        }
        assert_eq!(store.stats().await.unwrap().samples, expected.len() as u64);
        // The old rows are gone, the chunks hold them, the schema is at version 4.
        let pool = store.pool();
        let legacy: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('legacy_samples')::text")
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(legacy, None);
        let version: i64 = sqlx::query_scalar("SELECT max(version) FROM schema_migrations")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(version, 5);
        let chunked: i64 = sqlx::query_scalar("SELECT coalesce(sum(count), 0) FROM chunks")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(chunked as usize, expected.len());
        // History over the migrated chunks (whole windows from summaries) counts them all, and
        // agrees with the decoded samples bucket by bucket.
        let end = time::from_micros(BASE) + TimeDelta::days(4);
        let start = time::from_micros(BASE);
        for step in [TimeDelta::hours(1), TimeDelta::minutes(7)] {
            let history = store
                .metric_history(
                    &HistoryQuery::new("latency", step, Aggregation::Sum).range(start, end),
                )
                .await
                .unwrap();
            let edge = store.get_metric("edge").await.unwrap().unwrap();
            let mut reference = aimon_core::downsample::Downsampler::new(
                &HistoryQuery::new("latency", step, Aggregation::Sum).range(start, end),
            );
            for v in &edge.values {
                let tags = aimon_core::model::tags_json(&v.tags);
                reference.push(aimon_core::downsample::SampleRef {
                    series_id: "edge",
                    tags_json: &tags,
                    group: None,
                    timestamp_micros: time::to_micros(v.timestamp),
                    value: v.value,
                });
            }
            let reference = reference.finish();
            assert_eq!(history.len(), 1);
            assert_eq!(history[0].buckets.len(), reference[0].buckets.len());
            for (a, b) in history[0].buckets.iter().zip(&reference[0].buckets) {
                assert_eq!((a.start, a.count), (b.start, b.count));
                // Sums of ±1e308 and subnormals, merged per window rather than per sample:
                // equal to rounding, or both beyond f64.
                assert!(
                    a.value == b.value
                        || (a.value - b.value).abs() <= 1e-12 * b.value.abs()
                        || (!a.value.is_finite() && !b.value.is_finite()),
                    "{step}: {a:?} vs {b:?}"
                );
            }
        }
        // The alert and the sample-less series came along; opening again changes nothing.
        assert!(store.get_alert("a1").await.unwrap().is_some());
        let again = open(&config).await;
        assert_eq!(again.stats().await.unwrap().samples, expected.len() as u64);
    });
}

/// A series of `n` samples ten seconds apart from `BASE` (closed windows: stored as chunks).
#[test]
fn a_version_4_store_gains_the_index_of_irregular_chunks_and_history_uses_it() {
    run_check("v4 to v5", async {
        let Some(fixture) = fixture().await else {
            return;
        };
        let config = fixture.config(&[]);
        let store = open(&config).await;
        // Three hours of closed windows: a sample a minute, values 0, 1, 2, …
        let now = time::to_micros(time::now());
        let start = now - now.rem_euclid(600_000_000) - 18 * 600_000_000;
        let mut m = Metric::new("v5/a", "v5", MetricType::Gauge);
        m.values = (0..180)
            .map(|i| MetricValue::new(time::from_micros(start + i * 60_000_000), i as f64))
            .collect();
        store.save_metrics(std::slice::from_ref(&m)).await.unwrap();
        // Back to version 4: no index, no record of migration 5.
        let pool = store.pool();
        sqlx::raw_sql(
            "DROP INDEX chunks_irregular; DELETE FROM schema_migrations WHERE version = 5",
        )
        .execute(pool)
        .await
        .unwrap();
        drop(store);

        let store = open(&config).await;
        let version: i64 = sqlx::query_scalar("SELECT max(version) FROM schema_migrations")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(version, 5);
        // On the parent and on every chunks partition.
        let missing: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent \
             WHERE p.relname = 'chunks' AND p.relnamespace = current_schema()::regnamespace \
             AND NOT EXISTS (SELECT 1 FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid \
             WHERE x.indrelid = i.inhrelid AND pg_get_expr(x.indpred, x.indrelid) IS NOT NULL)",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(missing, 0);
        let parent: bool = sqlx::query_scalar("SELECT to_regclass('chunks_irregular') IS NOT NULL")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert!(parent);
        // History over whole windows answers from the summaries in one statement.
        let before = store.one_statement_histories();
        let q = HistoryQuery::new("v5", TimeDelta::minutes(60), Aggregation::Sum).range(
            time::from_micros(start),
            time::from_micros(start + 18 * 600_000_000),
        );
        let out = store.metric_history(&q).await.unwrap();
        assert_eq!(store.one_statement_histories(), before + 1);
        let sums: Vec<f64> = out[0].buckets.iter().map(|b| b.value).collect();
        let expected: Vec<f64> = (0..3)
            .map(|h| (h * 60..(h + 1) * 60).map(f64::from).sum())
            .collect();
        // The buckets are hours of the epoch; the range starts on a window, maybe mid-hour.
        assert_eq!(sums.iter().sum::<f64>(), expected.iter().sum::<f64>());
        assert_eq!(out[0].buckets.iter().map(|b| b.count).sum::<u64>(), 180);
    });
}

fn old_series(id: &str, n: i64) -> Metric {
    let mut m = Metric::new(id, "dmg", MetricType::Gauge);
    m.values = (0..n)
        .map(|i| MetricValue::new(time::from_micros(BASE + i * 10_000_000), i as f64).tag("k", "v"))
        .collect();
    m
}

#[test]
fn a_damaged_chunk_is_corrupted_naming_its_series_and_window() {
    run_check("damaged chunk", async {
        let Some(fixture) = fixture().await else {
            return;
        };
        let store = open(&fixture.config(&[])).await;
        store.save_metric(&old_series("dmg-1", 120)).await.unwrap();
        let pool = store.pool();
        // One byte of the second window's data flipped.
        sqlx::query(
            "UPDATE chunks SET data = set_byte(data, 7, get_byte(data, 7) # 255) \
             WHERE window_start = $1",
        )
        .bind(time::from_micros(BASE + 600_000_000))
        .execute(pool)
        .await
        .unwrap();
        let err = store.get_metric("dmg-1").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
        let text = err.to_string();
        assert!(text.contains("dmg-1"), "{text}");
        assert!(text.contains("2024-01-01T00:10:00"), "{text}");
        let err = store
            .query_metrics(&MetricQuery::new().name("dmg"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
        // History that needs the samples (a bucket splits the window) fails the same way;
        // history over whole windows reads the (intact) summary and stays right.
        let range = (
            time::from_micros(BASE),
            time::from_micros(BASE + 1_200_000_000),
        );
        let split = store
            .metric_history(
                &HistoryQuery::new("dmg", TimeDelta::minutes(5), Aggregation::Count)
                    .range(range.0, range.1),
            )
            .await
            .unwrap_err();
        assert_eq!(split.kind(), ErrorKind::Corrupted, "{split}");
        let whole = store
            .metric_history(
                &HistoryQuery::new("dmg", TimeDelta::minutes(10), Aggregation::Sum)
                    .range(range.0, range.1),
            )
            .await
            .unwrap();
        let sums: Vec<f64> = whole[0].buckets.iter().map(|b| b.value).collect();
        assert_eq!(
            sums,
            [(0..60).sum::<i64>() as f64, (60..120).sum::<i64>() as f64]
        );
        // A summary that does not match its check is not trusted where aimon reads it: first
        // and last, which fold each window's summary in the client. Sums, averages, counts,
        // minima and maxima of windows a bucket holds whole are aggregated by the server from
        // the columns as stored, as hand-written SQL over them would (docs/semantics.md,
        // "Damaged storage").
        store.save_metric(&old_series("dmg-2", 60)).await.unwrap();
        sqlx::query(
            "UPDATE chunks c SET max = max + 1, first = first + 1 FROM series_tagsets t \
             JOIN series s ON s.sid = t.sid WHERE t.tsid = c.tsid AND s.id = 'dmg-2'",
        )
        .execute(pool)
        .await
        .unwrap();
        let err = store
            .metric_history(
                &HistoryQuery::new("dmg", TimeDelta::minutes(10), Aggregation::First)
                    .range(range.0, range.1),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
        assert!(err.to_string().contains("dmg-2"), "{err}");
        let max = store
            .metric_history(
                &HistoryQuery::new("dmg", TimeDelta::minutes(10), Aggregation::Max)
                    .range(range.0, range.1)
                    .tag("k", "v"),
            )
            .await
            .unwrap();
        let maxima: Vec<f64> = max[0].buckets.iter().map(|b| b.value).collect();
        assert_eq!(
            maxima,
            [60.0, 119.0],
            "the stored columns, as SQL reads them"
        );
        // A truncated chunk too.
        sqlx::query("UPDATE chunks SET data = substring(data FROM 1 FOR 3)")
            .execute(pool)
            .await
            .unwrap();
        let err = store.get_metric("dmg-2").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
    });
}

/// Samples of `id` at `now + i` seconds for each `i` of `offsets`, all of value `value`.
fn recent(id: &str, now: i64, offsets: std::ops::Range<i64>, value: f64) -> Metric {
    let mut m = Metric::new(id, "cut", MetricType::Gauge);
    m.values = offsets
        .map(|i| MetricValue::new(time::from_micros(now + i * 1_000_000), value))
        .collect();
    m
}

/// The rows of the head and the chunk rows of the series `id`.
async fn rows_of(pool: &sqlx::PgPool, id: &str) -> (i64, i64) {
    let head: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM samples h JOIN series_tagsets t ON t.tsid = h.tsid \
         JOIN series s ON s.sid = t.sid WHERE s.id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap();
    let chunks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM chunks c JOIN series_tagsets t ON t.tsid = c.tsid \
         JOIN series s ON s.sid = t.sid WHERE s.id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap();
    (head, chunks)
}

#[test]
fn a_sizable_batch_cuts_the_head_and_the_newest_write_still_wins() {
    run_check("head cut", async {
        let Some(fixture) = fixture().await else {
            return;
        };
        let store = open(&fixture.config(&[])).await;
        let pool = store.pool();
        // A window two ahead of the open one: every sample below stays at or after the open
        // window even if the clock crosses a window's end meanwhile.
        let window = 600_000_000;
        let now = time::to_micros(time::now());
        let open = now - now.rem_euclid(window) + 2 * window;
        // A trickle: a few samples stay rows of the head.
        store
            .save_metric(&recent("cut-1", open, 0..3, 1.0))
            .await
            .unwrap();
        assert_eq!(rows_of(pool, "cut-1").await, (3, 0));
        // A sizable batch (40 samples, two of them rewriting head rows) cuts the head: no row
        // is left, its samples and the head's are chunks.
        store
            .save_metric(&recent("cut-1", open, 1..41, 2.0))
            .await
            .unwrap();
        let (head, chunks) = rows_of(pool, "cut-1").await;
        assert_eq!(head, 0);
        assert!(chunks >= 1);
        // A trickle over the chunk goes to the head again and wins over the chunk.
        store
            .save_metric(&recent("cut-1", open, 3..6, 3.0))
            .await
            .unwrap();
        assert_eq!(rows_of(pool, "cut-1").await.0, 3);
        let stored = store.get_metric("cut-1").await.unwrap().expect("stored");
        let values: Vec<f64> = stored.values.iter().map(|v| v.value).collect();
        let mut expected = vec![1.0];
        expected.extend(std::iter::repeat_n(2.0, 40));
        expected[3..6].fill(3.0);
        assert_eq!(values, expected);
        // Another cut seals those rows with the batch over them: the batch wins where it
        // writes (5), the sealed rows where it does not (3, 4).
        store
            .save_metric(&recent("cut-1", open, 5..45, 4.0))
            .await
            .unwrap();
        assert_eq!(rows_of(pool, "cut-1").await.0, 0);
        let stored = store.get_metric("cut-1").await.unwrap().expect("stored");
        let values: Vec<f64> = stored.values.iter().map(|v| v.value).collect();
        let mut expected = vec![1.0, 2.0, 2.0, 3.0, 3.0];
        expected.extend(std::iter::repeat_n(4.0, 40));
        assert_eq!(values, expected);
        // History over the open window agrees with the samples.
        let history = store
            .metric_history(
                &HistoryQuery::new("cut", TimeDelta::seconds(7), Aggregation::Sum).range(
                    time::from_micros(open),
                    time::from_micros(open + 60_000_000),
                ),
            )
            .await
            .unwrap();
        let total: f64 = history[0].buckets.iter().map(|b| b.value).sum();
        assert_eq!(total, expected.iter().sum::<f64>());
    });
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

#[test]
fn history_over_fragments_heads_and_groups_matches_the_reference() {
    run_check("history parity", async {
        let Some(fixture) = fixture().await else {
            return;
        };
        let store = open(&fixture.config(&[])).await;
        let reference = Contract::new(aimon_core::MemoryBackend::new(
            "reference",
            aimon_core::RetentionPolicy::default(),
        ));
        let mut rng = Lcg(7);
        let now = time::to_micros(time::now());
        let window = 600_000_000;
        // Three hours of closed windows, then the open one.
        let start = now - now.rem_euclid(window) - 18 * window;
        let open_window = start + 18 * window;
        // Three metrics, three tag sets each, two per group:
        // - "par": closed windows of a few dozen samples (one row each), trickles into the open
        //   window (head rows) and, every third round, 40 samples into it (a cut), so that the
        //   open window holds a chunk and head rows over it;
        // - "par-frag": closed windows filled by batches of 80 past 256 samples (fragments);
        // - "par-big": like "par", with ±1e16 values that cancel across the tag sets of a group;
        // - "par-pos": like "par", with no negative value (the server's float sums bound their
        //   own error; "par" has negative values, so its sums run again with `sum(abs(…))`);
        // - "par-tail": like "par-pos", but the open window gets 40 samples in its first 40
        //   seconds in the first round (a cut) and one sample a round after them, so that its
        //   chunk's summary answers and the head rows are added to it.
        for (name, fragmented, big, positive, tail) in [
            ("par", false, false, false, false),
            ("par-frag", true, false, false, false),
            ("par-big", false, true, false, false),
            ("par-pos", false, false, true, false),
            ("par-tail", false, false, true, true),
        ] {
            for round in 0..12 {
                let mut batch = Vec::new();
                for (i, id) in ["p-a", "p-b", "p-c"].iter().enumerate() {
                    let mut m = Metric::new(format!("{name}/{id}"), name, MetricType::Gauge);
                    let mut times = Vec::new();
                    if fragmented {
                        // 80 samples into each of three neighbouring closed windows.
                        let first = rng.next(16) as i64;
                        for w in first..first + 3 {
                            for _ in 0..80 {
                                times.push(start + w * window + rng.next(600_000_000) as i64);
                            }
                        }
                    } else {
                        for _ in 0..6 {
                            times.push(start + rng.next(18 * 600_000_000) as i64);
                        }
                        if tail && round == 0 {
                            times.extend((0..40).map(|s| open_window + s * 1_000_000));
                        } else if tail {
                            times.push(open_window + (60 + round as i64) * 1_000_000);
                        } else {
                            let open = if round % 3 == 0 { 40 } else { 1 + rng.next(4) };
                            for _ in 0..open {
                                times.push(open_window + rng.next(600_000_000) as i64);
                            }
                        }
                    }
                    for t in times {
                        let v = match rng.next(10) {
                            0 if big => 1e16,
                            1 if big => -1e16,
                            _ if positive => rng.next(10_000) as f64 / 8.0,
                            _ => rng.next(10_000) as f64 / 8.0 - 500.0,
                        };
                        let region = ["eu", "us"][(i + round as usize) % 2];
                        m.values.push(
                            MetricValue::new(time::from_micros(t), v)
                                .tag("region", region)
                                .tag("k", "v"),
                        );
                    }
                    batch.push(m);
                }
                store.save_metrics(&batch).await.unwrap();
                reference.save_metrics(&batch).await.unwrap();
            }
        }
        // The closed windows' samples lie in the first 36 minutes (the generator's 31 bits of
        // microseconds). The first range starts in the data (a partial first window) and ends
        // past the open window; the second ends in the middle of a window with samples on both
        // sides of its end; the third starts just after the first window's start and ends
        // after the last sample of a window that ends later, so both edge windows have every
        // sample in the range and their summaries answer.
        let ranges = [
            (start + window / 3 + 7, open_window + 2 * window),
            (start + window / 3 + 7, start + 2 * window + window / 2),
            (start + 7, start + 3 * window + 7 * window / 10),
        ];
        for (range, name) in ranges
            .iter()
            .map(|&(a, b)| (time::from_micros(a), time::from_micros(b)))
            .flat_map(|range| {
                ["par", "par-frag", "par-big", "par-pos", "par-tail"].map(|name| (range, name))
            })
        {
            for minutes in [10, 30, 60, 7] {
                for aggregation in [
                    Aggregation::Sum,
                    Aggregation::Avg,
                    Aggregation::Min,
                    Aggregation::Max,
                    Aggregation::Count,
                    Aggregation::First,
                    Aggregation::Last,
                ] {
                    for grouped in [false, true] {
                        let mut q =
                            HistoryQuery::new(name, TimeDelta::minutes(minutes), aggregation)
                                .range(range.0, range.1)
                                .tag("k", "v");
                        if grouped {
                            q = q.group_by("region");
                        }
                        let before = store.one_statement_histories();
                        let reruns = store.absolute_sum_reruns();
                        let ours = store.metric_history(&q).await.unwrap();
                        let one_statement = store.one_statement_histories() > before;
                        let rerun = store.absolute_sum_reruns() > reruns;
                        let theirs = reference.metric_history(&q).await.unwrap();
                        let what = format!(
                            "{name} {aggregation:?} {minutes} min grouped {grouped} \
                             over {range:?} (one statement: {one_statement})"
                        );
                        // Clean data at whole-window steps takes the one-statement path.
                        let expected = matches!(name, "par" | "par-pos" | "par-tail")
                            && minutes % 10 == 0
                            && !matches!(aggregation, Aggregation::First | Aggregation::Last);
                        if expected {
                            assert!(one_statement, "{what}");
                            // Sums over negative values need `sum(abs(…))`; others do not.
                            let sums = matches!(aggregation, Aggregation::Sum | Aggregation::Avg);
                            assert_eq!(rerun, sums && name == "par", "{what}");
                        }
                        if minutes % 10 != 0
                            || matches!(aggregation, Aggregation::First | Aggregation::Last)
                        {
                            assert!(!one_statement, "{what}");
                        }
                        assert_eq!(ours.len(), theirs.len(), "{what}");
                        for (a, b) in ours.iter().zip(&theirs) {
                            assert_eq!(a.group, b.group, "{what}");
                            assert_eq!(a.buckets.len(), b.buckets.len(), "{what}");
                            for (x, y) in a.buckets.iter().zip(&b.buckets) {
                                assert_eq!((x.start, x.count), (y.start, y.count), "{what}");
                                assert!(
                                    close(x.value, y.value),
                                    "{what}: {} vs {}",
                                    x.value,
                                    y.value
                                );
                            }
                        }
                    }
                }
            }
        }
        // The data has what the paths must handle: fragments, head rows next to a chunk of
        // their window.
        let fragments: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks WHERE seq > 0")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert!(fragments > 0);
        let shared: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM samples x WHERE EXISTS (SELECT 1 FROM chunks c \
             WHERE c.tsid = x.tsid AND c.window_start = date_bin('10 minutes', x.time, \
             TIMESTAMPTZ 'epoch'))",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert!(shared > 0);
        // "par-tail"'s open window: a chunk of each id, and head rows of its tag set, all
        // after the chunk's last sample.
        let (cut, apart): (i64, bool) = sqlx::query_as(
            "SELECT count(*), bool_and(EXISTS (SELECT 1 FROM samples x WHERE x.tsid = c.tsid) \
             AND NOT EXISTS (SELECT 1 FROM samples x WHERE x.tsid = c.tsid \
             AND x.time <= c.last_time)) FROM chunks c \
             JOIN series_tagsets t ON t.tsid = c.tsid JOIN series s ON s.sid = t.sid \
             WHERE s.name = 'par-tail' AND c.window_start = $1",
        )
        .bind(time::from_micros(open_window))
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!((cut, apart), (3, true));
    });
}

/// A small deterministic generator (no dependency): the moments the killer strikes.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

#[test]
fn killing_the_writer_while_windows_seal_loses_and_duplicates_no_acknowledged_sample() {
    run_check("kill while sealing", async {
        let Some(fixture) = fixture().await else {
            return;
        };
        let app = format!("aimon-seal-kill-{}", std::process::id());
        let mut config = fixture.config(&[]);
        let separator = if config.connection_string.contains('?') {
            '&'
        } else {
            '?'
        };
        config.connection_string = format!(
            "{}{separator}application_name={app}",
            config.connection_string
        );
        let store = open(&config).await;
        let killer_pool = open(&fixture.config(&[])).await.pool().clone();
        // The model: every acknowledged sample of series "k" by (timestamp, tags).
        let mut model: BTreeMap<(i64, String), f64> = BTreeMap::new();
        let mut rng = Lcg(20);
        let now = time::to_micros(time::now());
        let (mut kills, mut failures) = (0, 0);
        for round in 0..30i64 {
            // A head that was written while its window was open and has closed since: its
            // rows and the tag set's head_window, as a write of that time left them.
            let stale = BASE + round * 600_000_000;
            if round > 0 {
                let tsid: i64 = sqlx::query_scalar(
                    "SELECT t.tsid FROM series_tagsets t JOIN series s ON s.sid = t.sid \
                     WHERE s.id = 'k' AND t.tags = '{\"t\":\"a\"}'",
                )
                .fetch_one(store.pool())
                .await
                .unwrap();
                let rows: Vec<i64> = (0..30).map(|i| stale + i * 20_000_000).collect();
                sqlx::query(
                    "INSERT INTO samples (tsid, time, value) SELECT $1, t, 0.5 \
                     FROM UNNEST($2::timestamptz[]) AS t",
                )
                .bind(tsid)
                .bind(
                    rows.iter()
                        .map(|&t| time::from_micros(t))
                        .collect::<Vec<_>>(),
                )
                .execute(store.pool())
                .await
                .unwrap();
                sqlx::query("UPDATE series_tagsets SET head_window = $1 WHERE tsid = $2")
                    .bind(time::from_micros(stale))
                    .bind(tsid)
                    .execute(store.pool())
                    .await
                    .unwrap();
                for t in rows {
                    model.insert((t, "{\"t\":\"a\"}".to_owned()), 0.5);
                }
            }
            // The batch: overwrites into the stale head's window (sealed with it), more samples
            // into the first windows (fragments, merged every few rounds), and the open window.
            let mut m = Metric::new("k", "kill", MetricType::Gauge);
            for i in 0..40i64 {
                let value = (round * 1000 + i) as f64;
                m.values.push(
                    MetricValue::new(time::from_micros(stale + i * 15_000_000), value)
                        .tag("t", "a"),
                );
                m.values.push(
                    MetricValue::new(time::from_micros(BASE + (i * 7 + round) * 1_000_000), value)
                        .tag("t", "b"),
                );
                m.values.push(
                    MetricValue::new(time::from_micros(now - i * 1_000 - round * 50_000), value)
                        .tag("t", "c"),
                );
            }
            let delay = rng.next(40);
            let killer = {
                let pool = killer_pool.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    let killed: Vec<bool> = sqlx::query_scalar(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE application_name = $1",
                    )
                    .bind(app)
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                    killed.len()
                })
            };
            let first = store.save_metric(&m).await;
            kills += killer.await.unwrap();
            if let Err(e) = &first {
                failures += 1;
                assert!(e.is_retryable(), "{e}");
            }
            // Retried until acknowledged (a lost connection is retryable).
            let mut attempts = 0;
            while first.is_err() {
                attempts += 1;
                match store.save_metric(&m).await {
                    Ok(_) => break,
                    Err(e) if e.is_retryable() && attempts < 20 => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("round {round}: {e}"),
                }
            }
            for v in &m.values {
                model.insert(
                    (
                        time::to_micros(v.timestamp),
                        aimon_core::model::tags_json(&v.tags),
                    ),
                    v.value,
                );
            }
            // Everything acknowledged is there, once.
            let back = store.get_metric("k").await.unwrap().unwrap();
            let found: Vec<((i64, String), f64)> = back
                .values
                .iter()
                .map(|v| {
                    (
                        (
                            time::to_micros(v.timestamp),
                            aimon_core::model::tags_json(&v.tags),
                        ),
                        v.value,
                    )
                })
                .collect();
            let expected: Vec<((i64, String), f64)> =
                model.iter().map(|(k, v)| (k.clone(), *v)).collect();
            let mut sorted = found.clone();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(sorted, expected, "round {round}");
            assert_eq!(
                store.stats().await.unwrap().samples,
                model.len() as u64,
                "round {round}"
            );
        }
        // The loop did what it claims: backends were terminated and writes failed.
        assert!(
            kills > 0 && failures > 0,
            "kills {kills}, failures {failures}"
        );
        // Every stale head was sealed: tag set "a" has no head row left in 2024.
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM samples x JOIN series_tagsets t ON t.tsid = x.tsid \
             WHERE t.tags = '{\"t\":\"a\"}' AND x.time < $1",
        )
        .bind(time::from_micros(BASE) + TimeDelta::days(1))
        .fetch_one(store.pool())
        .await
        .unwrap();
        assert_eq!(left, 0, "head rows of closed windows left unsealed");
    });
}
