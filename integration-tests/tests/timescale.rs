//! The conformance suite against PostgreSQL with TimescaleDB (`timescale://`, samples in a
//! hypertable), then the TimescaleDB-specific checks (module `timescaledb`): the hypertable and
//! its chunks, `metric_ttl` as a retention policy whose run drops chunks that never show again,
//! the compression policy and compressed chunks answering every query and `time_bucket` history
//! exactly as `memory://` does, and portable and `pg_dump` backups of a hypertable.
//!
//! Runs where `AIMON_TEST_TIMESCALE_URL` is set or the fixture can start a cluster that
//! preloads the extension (CI builds TimescaleDB 2.26.4 with `.ci/timescaledb.sh` and requires
//! it: `AIMON_REQUIRE=timescale`).
#![cfg(feature = "timescale")]

aimon_integration_tests::conformance_suite!(aimon_integration_tests::fixtures::timescale());

mod timescaledb {
    use aimon_core::Contract;
    use std::collections::BTreeSet;

    use aimon_integration_tests::timescale::pause_job;

    use aimon_core::{
        Aggregation, BackupFormat, HistoryQuery, Metric, MetricQuery, MetricType, MetricValue,
        QueryOptions, SortOrder, StorageBackend, StorageConfig, time,
    };
    use aimon_integration_tests::conformance::support::*;
    use aimon_integration_tests::fixtures::{self, Fixture, run_check};
    use aimon_postgres::PostgresBackend;
    use chrono::{DateTime, TimeDelta, Utc};
    use sqlx::Row;

    async fn fixture() -> Option<Fixture> {
        fixtures::timescale().await
    }

    async fn open(config: &StorageConfig) -> Contract<PostgresBackend> {
        Contract::new(PostgresBackend::connect(config).await.expect("connects"))
    }

    fn with(
        config: &StorageConfig,
        key: &str,
        value: impl Into<serde_json::Value>,
    ) -> StorageConfig {
        config.clone().option(key, value)
    }

    fn without(config: &StorageConfig, key: &str) -> StorageConfig {
        let mut config = config.clone();
        config.options.remove(key);
        config
    }

    /// `'"schema".samples'`, as TimescaleDB's functions take the hypertable.
    fn samples_table(store: &PostgresBackend) -> String {
        format!("\"{}\".samples", store.config().schema)
    }

    /// The store's chunks: `(name, range start, range end, is_compressed)`, oldest first.
    async fn chunks(store: &PostgresBackend) -> Vec<(String, DateTime<Utc>, DateTime<Utc>, bool)> {
        sqlx::query(
            "SELECT chunk_name::text, range_start, range_end, is_compressed \
             FROM timescaledb_information.chunks \
             WHERE hypertable_schema = $1 AND hypertable_name = 'samples' ORDER BY range_start",
        )
        .bind(&store.config().schema)
        .fetch_all(store.pool())
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
    }

    /// The store's TimescaleDB job of `proc_name` (`policy_retention`, `policy_compression`):
    /// its id and its config.
    async fn policy(store: &PostgresBackend, proc_name: &str) -> Option<(i32, serde_json::Value)> {
        sqlx::query(
            "SELECT job_id, config FROM timescaledb_information.jobs \
             WHERE hypertable_schema = $1 AND hypertable_name = 'samples' AND proc_name = $2",
        )
        .bind(&store.config().schema)
        .bind(proc_name)
        .fetch_optional(store.pool())
        .await
        .unwrap()
        .map(|r| (r.get(0), r.get(1)))
    }

    /// Whether the interval text `value` (a policy's `drop_after`, `compress_after`) is
    /// `seconds` long, as PostgreSQL compares intervals.
    async fn interval_is(store: &PostgresBackend, value: &serde_json::Value, seconds: i64) -> bool {
        let text = value
            .as_str()
            .unwrap_or_else(|| panic!("an interval: {value}"));
        sqlx::query_scalar("SELECT $1::interval = make_interval(secs => $2)")
            .bind(text)
            .bind(seconds as f64)
            .fetch_one(store.pool())
            .await
            .unwrap()
    }

    /// Compresses every chunk of the store with `compress_chunk`, its compression policy (if
    /// any) paused first: the policy's background runs would race with it for the same chunks.
    async fn compress_every_chunk(store: &PostgresBackend) {
        if let Some((job, _)) = policy(store, "policy_compression").await {
            pause_job(store.pool(), job).await;
        }
        let compressed: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT compress_chunk(c, if_not_compressed => TRUE)::text \
             FROM show_chunks('{}'::regclass) c",
            samples_table(store)
        )))
        .fetch_all(store.pool())
        .await
        .unwrap();
        assert!(!compressed.is_empty(), "there are chunks to compress");
        let all = chunks(store).await;
        assert!(
            all.iter().all(|c| c.3),
            "every chunk is compressed: {all:?}"
        );
    }

    #[test]
    fn the_samples_table_is_a_hypertable_with_chunks_of_the_partition_interval() {
        run_check("hypertable", async {
            let Some(fixture) = fixture().await else {
                return;
            };
            let store = open(&fixture.config(&[("partition_interval", "6h".into())])).await;
            assert!(store.is_timescale());
            let dimension: (String, bool) = sqlx::query(
                "SELECT column_name::text, time_interval = INTERVAL '6 hours' \
                 FROM timescaledb_information.dimensions \
                 WHERE hypertable_schema = $1 AND hypertable_name = 'samples'",
            )
            .bind(&store.config().schema)
            .fetch_one(store.pool())
            .await
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
            assert_eq!(dimension, ("time".to_owned(), true));

            // Two days of samples, one every 10 minutes: eight 6-hour chunks, every row in
            // them and none in the root table.
            let mut m = series("h", "hyper");
            m.values = (0..2 * 144).map(|i| sample(i * 600, i as f64)).collect();
            store.save_metric(&m).await.unwrap();
            let all = chunks(&store).await;
            assert_eq!(all.len(), 8, "{all:?}");
            for (i, (_, start, end, compressed)) in all.iter().enumerate() {
                assert_eq!(*start, at(i as i64 * 6 * 3600));
                assert_eq!(*end, at((i as i64 + 1) * 6 * 3600));
                assert!(!compressed);
            }
            let root: i64 = sqlx::query_scalar("SELECT count(*) FROM ONLY samples")
                .fetch_one(store.pool())
                .await
                .unwrap();
            let total: i64 = sqlx::query_scalar("SELECT count(*) FROM samples")
                .fetch_one(store.pool())
                .await
                .unwrap();
            assert_eq!((root, total), (0, 2 * 144));
            assert_eq!(store.get_metric("h").await.unwrap(), Some(m));
            // No TTL and no compression_after: no policy.
            assert_eq!(policy(&store, "policy_retention").await, None);
            assert_eq!(policy(&store, "policy_compression").await, None);
        });
    }

    /// `stats` counts the hypertable's chunks, compressed ones included: the samples table's
    /// own size is its empty root's.
    #[test]
    fn stats_report_the_hypertable_size_and_its_compressed_chunks() {
        run_check("hypertable stats", async {
            let Some(fixture) = fixture().await else {
                return;
            };
            // Compression enabled by hand, without a policy, whose background runs would
            // compress chunks at their own moment.
            let store = open(&fixture.config(&[("partition_interval", "6h".into())])).await;
            sqlx::raw_sql(
                "ALTER TABLE samples SET (timescaledb.compress, \
                 timescaledb.compress_segmentby = 'sid')",
            )
            .execute(store.pool())
            .await
            .unwrap();
            store.save_metrics(&three_days_of_series()).await.unwrap();
            let size = |store: &PostgresBackend| {
                let table = samples_table(store);
                let pool = store.pool().clone();
                async move {
                    sqlx::query_scalar::<_, i64>("SELECT hypertable_size($1::regclass)")
                        .bind(table)
                        .fetch_one(&pool)
                        .await
                        .unwrap()
                }
            };
            for compressed in [0, 12] {
                if compressed > 0 {
                    compress_every_chunk(&store).await;
                }
                let stats = store.stats().await.unwrap();
                let extra = &stats.extra;
                let bytes = size(&store).await;
                assert!(bytes > 100_000, "{bytes}");
                assert_eq!(extra["relation_sizes_bytes"]["samples"], bytes, "{extra:?}");
                let total: i64 = extra["relation_sizes_bytes"]
                    .as_object()
                    .unwrap()
                    .values()
                    .map(|v| v.as_i64().unwrap())
                    .sum();
                assert_eq!(extra["total_size_bytes"], total);
                assert_eq!(stats.size_bytes, Some(total as u64));
                // Counted independently of hypertable_size: the empty root, plus every chunk
                // of the hypertable and of its compressed hypertable in TimescaleDB's catalog,
                // read from the relations themselves.
                let (root, chunks): (i64, i64) = sqlx::query_as(
                    "WITH ht AS (SELECT id, compressed_hypertable_id \
                     FROM _timescaledb_catalog.hypertable \
                     WHERE schema_name = $1 AND table_name = 'samples') \
                     SELECT pg_total_relation_size($2::regclass), \
                     (SELECT coalesce(sum(pg_total_relation_size( \
                       to_regclass(format('%I.%I', c.schema_name, c.table_name)))), 0)::bigint \
                      FROM _timescaledb_catalog.chunk c, ht \
                      WHERE c.hypertable_id IN (ht.id, ht.compressed_hypertable_id))",
                )
                .bind(&store.config().schema)
                .bind(samples_table(&store))
                .fetch_one(store.pool())
                .await
                .unwrap();
                assert_eq!(bytes, root + chunks, "root {root}, chunks {chunks}");
                assert_eq!(extra["partitions"], 12, "{extra:?}");
                assert_eq!(extra["compressed_chunks"], compressed, "{extra:?}");
                assert_eq!(extra["timescaledb_version"], "2.26.4");
                assert_eq!(stats.samples, 4 * 3 * 144);
            }
        });
    }

    /// Samples every 30 minutes from five days ago to now, each 7 minutes off the half hour
    /// so that none lies within minutes of a cutoff computed a little later.
    fn five_days_until_now(now: DateTime<Utc>) -> Metric {
        let mut m = Metric::new("r", "retained", MetricType::Gauge);
        m.created_at = now;
        m.updated_at = now;
        m.values = (0..5 * 48)
            .rev()
            .map(|i| {
                MetricValue::new(now - TimeDelta::minutes(30 * i + 7), i as f64)
                    .tag("host", if i % 2 == 0 { "a" } else { "b" })
            })
            .collect();
        m
    }

    #[test]
    fn metric_ttl_becomes_a_retention_policy_whose_run_drops_chunks_that_never_show_again() {
        run_check("retention policy", async {
            let Some(fixture) = fixture().await else {
                return;
            };
            const TTL: i64 = 2 * 86_400;
            let config = fixture.config(&[
                ttl("metric_ttl_seconds", TTL as u64),
                ("compression_after", "1d".into()),
            ]);
            let store = open(&config).await;
            let (job, job_config) = policy(&store, "policy_retention")
                .await
                .expect("a retention policy");
            assert!(
                interval_is(&store, &job_config["drop_after"], TTL).await,
                "{job_config}"
            );
            // TimescaleDB runs a new job at once in the background, perhaps only once the
            // history below is written: paused, the policy runs when this check says.
            pause_job(store.pool(), job).await;

            // Five days of history, written by a store of the same schema without a TTL (the
            // TTL store counts such samples as expired and does not store them), with every
            // chunk compressed.
            let now = time::now();
            let m = five_days_until_now(now);
            let writer = open(&without(&config, "metric_ttl_seconds")).await;
            writer.save_metric(&m).await.unwrap();
            compress_every_chunk(&store).await;
            let before = chunks(&store).await;
            assert!(before.len() >= 5, "{before:?}");

            // The policy's own run (the server's background job, run now).
            sqlx::query(sqlx::AssertSqlSafe(format!("CALL run_job({job})")))
                .execute(store.pool())
                .await
                .unwrap();
            let cutoff = time::now() - TimeDelta::seconds(TTL);
            let after = chunks(&store).await;
            assert!(after.len() < before.len(), "{before:?} -> {after:?}");
            assert!(
                after.iter().all(|c| c.2 > cutoff),
                "every chunk that ended before the cutoff is gone: {after:?}"
            );
            let oldest_kept = after.first().expect("the newest chunks stay").1;

            // Nothing of the dropped chunks shows, through any read of either store: the TTL
            // store shows exactly the live samples, the store without a TTL exactly the
            // samples of the chunks left.
            let live: Vec<MetricValue> = m
                .values
                .iter()
                .filter(|v| v.timestamp >= cutoff)
                .cloned()
                .collect();
            let left: Vec<MetricValue> = m
                .values
                .iter()
                .filter(|v| v.timestamp >= oldest_kept)
                .cloned()
                .collect();
            assert!(live.len() < left.len() && left.len() < m.values.len());
            assert_eq!(store.get_metric("r").await.unwrap().unwrap().values, live);
            assert_eq!(writer.get_metric("r").await.unwrap().unwrap().values, left);
            let whole = MetricQuery::new()
                .name("retained")
                .range(now - TimeDelta::days(6), now + TimeDelta::minutes(1));
            assert_eq!(store.query_metrics(&whole).await.unwrap()[0].values, live);
            assert_eq!(writer.query_metrics(&whole).await.unwrap()[0].values, left);
            let raw_oldest: DateTime<Utc> = sqlx::query_scalar("SELECT min(time) FROM samples")
                .fetch_one(store.pool())
                .await
                .unwrap();
            assert_eq!(raw_oldest, left[0].timestamp);
            // History agrees with memory:// holding the same samples under the same TTL.
            let reference = fixtures::open_memory(&[ttl("metric_ttl_seconds", TTL as u64)]).await;
            reference.save_metric(&m).await.unwrap();
            for aggregation in [Aggregation::Count, Aggregation::Sum, Aggregation::First] {
                let query = HistoryQuery::new("retained", TimeDelta::hours(5), aggregation)
                    .group_by("host");
                assert_eq!(
                    store.metric_history(&query).await.unwrap(),
                    reference.metric_history(&query).await.unwrap(),
                    "{aggregation}"
                );
            }
            // The chunks went with the policy's run: apply_retention has none left to drop.
            assert_eq!(store.apply_retention().await.unwrap().samples_removed, 0);
        });
    }

    /// A store reopened with another `metric_ttl` or `compression_after` moves the server's
    /// policy to it: a policy left at the first opener's settings would go on dropping (or
    /// compressing) what the new settings keep. A store opened without them leaves the
    /// policies alone (a tool that opens a store only to read must not remove them).
    #[test]
    fn reopening_with_other_settings_moves_the_policies_to_them() {
        run_check("policies follow the settings", async {
            let Some(fixture) = fixture().await else {
                return;
            };
            let first = fixture.config(&[
                ttl("metric_ttl_seconds", 3600),
                ("compression_after", "1d".into()),
            ]);
            let store = open(&first).await;
            let retention = policy(&store, "policy_retention").await.unwrap().1;
            let compression = policy(&store, "policy_compression").await.unwrap().1;
            assert!(interval_is(&store, &retention["drop_after"], 3600).await);
            assert!(interval_is(&store, &compression["compress_after"], 86_400).await);

            let longer = with(
                &with(&first, "metric_ttl_seconds", 30 * 86_400),
                "compression_after",
                "7d",
            );
            let reopened = open(&longer).await;
            let retention = policy(&reopened, "policy_retention").await.unwrap().1;
            let compression = policy(&reopened, "policy_compression").await.unwrap().1;
            assert!(
                interval_is(&reopened, &retention["drop_after"], 30 * 86_400).await,
                "{retention}"
            );
            assert!(
                interval_is(&reopened, &compression["compress_after"], 7 * 86_400).await,
                "{compression}"
            );

            let plain = open(&without(
                &without(&first, "metric_ttl_seconds"),
                "compression_after",
            ))
            .await;
            let retention = policy(&plain, "policy_retention").await.unwrap().1;
            let compression = policy(&plain, "policy_compression").await.unwrap().1;
            assert!(interval_is(&plain, &retention["drop_after"], 30 * 86_400).await);
            assert!(interval_is(&plain, &compression["compress_after"], 7 * 86_400).await);

            // A store created without either gets them when first opened with them.
            let bare = fixture.config(&[]);
            open(&bare).await;
            let later = open(&with(
                &with(&bare, "metric_ttl_seconds", 7200),
                "compression_after",
                "2h",
            ))
            .await;
            let retention = policy(&later, "policy_retention").await.unwrap().1;
            let compression = policy(&later, "policy_compression").await.unwrap().1;
            assert!(interval_is(&later, &retention["drop_after"], 7200).await);
            assert!(interval_is(&later, &compression["compress_after"], 7200).await);
        });
    }

    /// Four series (three of one name) with and without tags over three days of 6-hour
    /// chunks. Values are multiples of 1/4 below 2^20, so every sum is exact and every
    /// aggregation has one right answer, bit for bit.
    fn three_days_of_series() -> Vec<Metric> {
        (0..4)
            .map(|s| {
                let name = if s < 3 { "load" } else { "other" };
                let mut m = series(&format!("s{s}"), name);
                m.values = (0..3 * 144)
                    .map(|i| {
                        let value = ((i * 7 + s * 13) % 97) as f64 * 0.25 - 10.0;
                        let v = sample(i * 600 + s, value);
                        match (i + s) % 3 {
                            0 => v.tag("host", "h1"),
                            1 => v.tag("host", "h2").tag("zone", "z"),
                            _ => v,
                        }
                    })
                    .collect();
                m
            })
            .collect()
    }

    /// Every read of `store` equals the same read of `reference`: the whole dump, each series,
    /// filtered and paged queries, and history for every aggregation over steps that do and
    /// do not line up with the chunks, grouped or not, over all time or a window.
    async fn answers_like(store: &Backend, reference: &Backend, ids: &[&str]) {
        assert_eq!(dump(store).await, dump(reference).await);
        for id in ids {
            assert_eq!(
                store.get_metric(id).await.unwrap(),
                reference.get_metric(id).await.unwrap(),
                "{id}"
            );
        }
        let queries = [
            MetricQuery::new().name("load"),
            MetricQuery::new()
                .name("load")
                .range(at(10 * 3600 + 1), at(40 * 3600))
                .tag("host", "h1"),
            MetricQuery::new()
                .tag("zone", "z")
                .range(at(5 * 3600), at(70 * 3600)),
            MetricQuery::new().options(QueryOptions {
                sort_by: Some("id".into()),
                sort_order: SortOrder::Desc,
                ..QueryOptions::default().limit(2).offset(1)
            }),
            MetricQuery::new().range(at(-3600), at(1)),
        ];
        for query in &queries {
            assert_eq!(
                store.query_metrics(query).await.unwrap(),
                reference.query_metrics(query).await.unwrap(),
                "{query:?}"
            );
        }
        for aggregation in Aggregation::ALL {
            for step in [
                TimeDelta::minutes(10),
                TimeDelta::hours(1),
                TimeDelta::hours(7),
                TimeDelta::days(1),
            ] {
                for group_by in [None, Some("host")] {
                    for window in [None, Some((at(5 * 3600 + 1800), at(50 * 3600)))] {
                        let mut query = HistoryQuery::new("load", step, aggregation);
                        if let Some(tag) = group_by {
                            query = query.group_by(tag);
                        }
                        if let Some((start, end)) = window {
                            query = query.range(start, end);
                        }
                        assert_eq!(
                            store.metric_history(&query).await.unwrap(),
                            reference.metric_history(&query).await.unwrap(),
                            "{query:?}"
                        );
                    }
                }
            }
        }
        let filtered =
            HistoryQuery::new("load", TimeDelta::hours(2), Aggregation::Avg).tag("zone", "z");
        assert_eq!(
            store.metric_history(&filtered).await.unwrap(),
            reference.metric_history(&filtered).await.unwrap()
        );
    }

    #[test]
    fn compressed_chunks_answer_every_query_and_history_exactly() {
        run_check("compressed chunks", async {
            let Some(fixture) = fixture().await else {
                return;
            };
            let config = fixture.config(&[
                ("partition_interval", "6h".into()),
                ("compression_after", "1d".into()),
            ]);
            let store = std::sync::Arc::new(open(&config).await);
            let (_, job_config) = policy(&store, "policy_compression")
                .await
                .expect("a compression policy");
            assert!(interval_is(&store, &job_config["compress_after"], 86_400).await);
            let settings: Vec<(String, Option<i16>, Option<i16>)> = sqlx::query(
                "SELECT attname::text, segmentby_column_index, orderby_column_index \
                 FROM timescaledb_information.compression_settings \
                 WHERE hypertable_schema = $1 AND hypertable_name = 'samples' \
                 ORDER BY attname",
            )
            .bind(&store.config().schema)
            .fetch_all(store.pool())
            .await
            .map(|rows| {
                rows.into_iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect()
            })
            .unwrap();
            assert_eq!(
                settings,
                [
                    ("sid".to_owned(), Some(1), None),
                    ("tags_key".to_owned(), Some(2), None),
                    ("time".to_owned(), None, Some(1)),
                ]
            );

            let data = three_days_of_series();
            let ids = ["s0", "s1", "s2", "s3", "missing"];
            let ts: Backend = store.clone();
            let reference = fixtures::open_memory(&[]).await;
            ts.save_metrics(&data).await.unwrap();
            reference.save_metrics(&data).await.unwrap();
            compress_every_chunk(&store).await;
            assert_eq!(chunks(&store).await.len(), 12);
            answers_like(&ts, &reference, &ids).await;

            // Writes into compressed chunks: overwrites of stored keys (rule 1: the new value
            // wins, no duplicate) and new samples between them.
            let mut changes: Vec<Metric> = Vec::new();
            for (s, m) in data.iter().enumerate() {
                let mut c = series(&m.id, &m.name);
                for v in m.values.iter().step_by(37) {
                    let mut v = v.clone();
                    v.value += 0.5;
                    c.values.push(v);
                }
                for i in (0..3 * 144).step_by(29) {
                    c.values
                        .push(sample(i * 600 + 300 + s as i64, i as f64 * 0.25).tag("host", "h3"));
                }
                changes.push(c);
            }
            ts.save_metrics(&changes).await.unwrap();
            reference.save_metrics(&changes).await.unwrap();
            answers_like(&ts, &reference, &ids).await;
            let stats = ts.stats().await.unwrap();
            assert_eq!(stats.samples, reference.stats().await.unwrap().samples);
        });
    }

    #[test]
    fn portable_and_pg_dump_backups_round_trip_a_compressed_hypertable() {
        run_check("hypertable backups", async {
            let Some(fixture) = fixture().await else {
                return;
            };
            let dir = tempfile::tempdir().unwrap();
            let source_config = fixture.config(&[
                ("partition_interval", "6h".into()),
                ("compression_after", "1d".into()),
            ]);
            let store = std::sync::Arc::new(open(&source_config).await);
            let source: Backend = store.clone();
            source.save_metrics(&three_days_of_series()).await.unwrap();
            populate(&source).await;
            compress_every_chunk(&store).await;
            let expected = dump(&source).await;
            let samples: u64 = expected.metrics.iter().map(|m| m.values.len() as u64).sum();

            for format in [BackupFormat::Portable, BackupFormat::Native] {
                let path = dir.path().join(format!("{format:?}"));
                let report = source.backup(&path, format).await.unwrap();
                assert_eq!(report.format, format);
                assert_eq!((report.series, report.samples), (7, samples), "{format:?}");

                let target = open(&fixture.config(&[("partition_interval", "6h".into())])).await;
                let restored = target.restore(&path, format).await.unwrap();
                assert_eq!(
                    (
                        restored.series,
                        restored.samples,
                        restored.alerts,
                        restored.agent_states
                    ),
                    (7, samples, 4, 3),
                    "{format:?}"
                );
                // The restored samples are in the target's hypertable, in its chunks.
                let root: i64 = sqlx::query_scalar("SELECT count(*) FROM ONLY samples")
                    .fetch_one(target.pool())
                    .await
                    .unwrap();
                assert_eq!(root, 0);
                let spans: BTreeSet<DateTime<Utc>> =
                    chunks(&target).await.into_iter().map(|c| c.1).collect();
                assert_eq!(spans.len(), 12, "{format:?}: {spans:?}");
                let target: Backend = std::sync::Arc::new(target);
                assert_eq!(dump(&target).await, expected, "{format:?}");
                // Restoring again merges by key: nothing changes.
                target.restore(&path, format).await.unwrap();
                assert_eq!(dump(&target).await, expected, "{format:?} twice");
            }
            // The dump restores into a natively partitioned store as well.
            // (A namespace of the fixture, so that it is dropped afterwards, opened as postgres://.)
            let registered = fixture.config(&[]);
            let native_config = StorageConfig::from_url(
                "native",
                fixtures::postgres_driver_url(&registered.connection_string),
            )
            .unwrap()
            .option("schema", registered.options["schema"].clone());
            let native: Backend = std::sync::Arc::new(open(&native_config).await);
            let restored = native
                .restore(&dir.path().join("Native"), BackupFormat::Native)
                .await
                .unwrap();
            assert_eq!((restored.series, restored.samples), (7, samples));
            assert_eq!(dump(&native).await, expected);
        });
    }

    /// `url` (`scheme://authority/database?query`) with another database.
    fn with_database(url: &str, database: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let query = path.find('?').map_or("", |i| &path[i..]);
        format!("{scheme}://{authority}/{database}{query}")
    }

    /// Stores opened at once on a database where the extension is not yet created all open:
    /// `CREATE EXTENSION IF NOT EXISTS` run by two sessions together fails the later one on
    /// the catalog's unique name, so the driver serialises it.
    #[test]
    fn stores_opened_at_once_on_a_database_without_the_extension_all_open() {
        run_check("extension race", async {
            let server = match fixtures::resolve_server(&fixtures::TIMESCALE).await {
                Ok(server) => server,
                Err(reason) => {
                    fixtures::skip("timescale", &reason);
                    return;
                }
            };
            let admin_url = fixtures::postgres_driver_url(&server.url);
            let database = fixtures::unique_namespace("tsdb");
            let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url)
                .await
                .unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "CREATE DATABASE \"{database}\""
            )))
            .execute(&mut admin)
            .await
            .unwrap();
            let url = with_database(&server.url, &database);
            let opens = (0..8).map(|i| {
                let config = StorageConfig::from_url("race", url.clone())
                    .unwrap()
                    .option("schema", format!("s{i}"));
                tokio::spawn(async move { PostgresBackend::connect(&config).await })
            });
            let results = futures::future::join_all(opens).await;
            let mut stores = Vec::new();
            for result in results {
                stores.push(result.unwrap().expect("every store opens"));
            }
            assert!(stores.iter().all(PostgresBackend::is_timescale));
            for store in stores {
                Contract::new(store).close().await.unwrap();
            }
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE \"{database}\" WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await
            .unwrap();
        });
    }
}
