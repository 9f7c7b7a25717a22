//! Rule 3: `metric_history`; semantics.md "History".

use aimon_core::{Aggregation, ErrorKind, HistoryQuery, HistorySeries, MetricValue};
use chrono::TimeDelta;

use super::support::*;
use crate::fixtures::Fixture;

/// Two buckets of a 60 s step with an empty minute between them:
/// `[t0, t0+60)`: 3.0 @10, 1.0 @20, 2.0 @30 (written out of order);
/// `[t0+120, t0+180)`: 10.0 @125, 20.0 @170.
async fn history_store(fixture: &Fixture) -> Backend {
    let store = fixture.open(&[]).await;
    let m = series("h", "hist")
        .with_value(sample(20, 1.0))
        .with_value(sample(170, 20.0))
        .with_value(sample(10, 3.0))
        .with_value(sample(125, 10.0))
        .with_value(sample(30, 2.0));
    store.save_metric(&m).await.unwrap();
    // Another name is never mixed in.
    store
        .save_metric(&series("other", "hist.other").with_value(sample(15, 1000.0)))
        .await
        .unwrap();
    store
}

async fn check_aggregation(fixture: &Fixture, aggregation: Aggregation, expected: [f64; 2]) {
    let store = history_store(fixture).await;
    let out = store
        .metric_history(&HistoryQuery::new(
            "hist",
            TimeDelta::seconds(60),
            aggregation,
        ))
        .await
        .unwrap();
    assert_eq!(out.len(), 1, "{aggregation}: one series without group_by");
    assert_eq!(out[0].group, None);
    let buckets = &out[0].buckets;
    assert_eq!(
        buckets.len(),
        2,
        "{aggregation}: the empty minute is omitted: {buckets:?}"
    );
    assert_eq!(buckets[0].start, at(0));
    assert_eq!(buckets[1].start, at(120));
    assert_eq!((buckets[0].count, buckets[1].count), (3, 2));
    for (bucket, want) in buckets.iter().zip(expected) {
        assert_close(bucket.value, want, aggregation.as_str());
    }
}

pub async fn history_avg(fixture: &Fixture) {
    check_aggregation(fixture, Aggregation::Avg, [2.0, 15.0]).await;
}

pub async fn history_sum(fixture: &Fixture) {
    check_aggregation(fixture, Aggregation::Sum, [6.0, 30.0]).await;
}

/// `sum` and `avg` are compensated (docs/semantics.md): a small term between two cancelling
/// ones survives, exactly, on every backend.
pub async fn history_sum_keeps_small_terms_between_cancelling_values(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let m = series("c", "cancel")
        .with_value(sample(10, 1e16))
        .with_value(sample(20, 1.0))
        .with_value(sample(30, -1e16));
    store.save_metric(&m).await.unwrap();
    for (aggregation, want) in [(Aggregation::Sum, 1.0), (Aggregation::Avg, 1.0 / 3.0)] {
        let out = store
            .metric_history(&HistoryQuery::new(
                "cancel",
                TimeDelta::seconds(60),
                aggregation,
            ))
            .await
            .unwrap();
        assert_eq!(out[0].buckets[0].value, want, "{aggregation}");
    }
}

/// Large values (docs/semantics.md "History"): an intermediate overflow never matters. A sum
/// is finite whenever the exact sum of its bucket is within the f64 range, and infinite (JSON
/// `null`) with the exact sum's sign only beyond ±f64::MAX; an average is always finite; and
/// count, min, max, first and last are computed as for any other values, never failing.
pub async fn history_large_values_overflow_only_where_the_exact_sum_does(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    // One bucket a minute, the samples in time order so naive running sums overflow.
    let buckets: [&[f64]; 5] = [
        &[1e308, 1e308],
        &[1e308, 1e308, -1e308],
        &[1e308, -1e308, 1.0],
        &[-1e308, -1e308],
        &[1.0, 2.0],
    ];
    let mut m = series("big", "big");
    for (b, values) in buckets.iter().enumerate() {
        for (i, &v) in values.iter().enumerate() {
            m.values.push(sample(60 * b as i64 + 10 * i as i64, v));
        }
    }
    store.save_metric(&m).await.unwrap();
    let sums = [f64::INFINITY, 1e308, 1.0, f64::NEG_INFINITY, 3.0];
    let avgs = [1e308, 1e308 / 3.0, 1.0 / 3.0, -1e308, 1.5];
    for aggregation in Aggregation::ALL {
        let out = store
            .metric_history(&HistoryQuery::new(
                "big",
                TimeDelta::seconds(60),
                aggregation,
            ))
            .await
            .unwrap_or_else(|e| panic!("{aggregation}: {e}"));
        assert_eq!(out.len(), 1, "{aggregation}");
        let got = &out[0].buckets;
        assert_eq!(got.len(), buckets.len(), "{aggregation}: {got:?}");
        for (b, (bucket, values)) in got.iter().zip(buckets).enumerate() {
            let what = format!("{aggregation} of bucket {b} {values:?}");
            assert_eq!(bucket.start, at(60 * b as i64), "{what}");
            assert_eq!(bucket.count, values.len() as u64, "{what}");
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            match aggregation {
                Aggregation::Sum => assert_eq!(bucket.value, sums[b], "{what}"),
                Aggregation::Avg => {
                    assert!(bucket.value.is_finite(), "{what}: {}", bucket.value);
                    assert_close(bucket.value, avgs[b], &what);
                }
                Aggregation::Count => assert_eq!(bucket.value, values.len() as f64, "{what}"),
                Aggregation::Min => assert_eq!(bucket.value, min, "{what}"),
                Aggregation::Max => assert_eq!(bucket.value, max, "{what}"),
                Aggregation::First => assert_eq!(bucket.value, values[0], "{what}"),
                Aggregation::Last => {
                    assert_eq!(bucket.value, values[values.len() - 1], "{what}")
                }
            }
        }
    }
}

pub async fn history_min(fixture: &Fixture) {
    check_aggregation(fixture, Aggregation::Min, [1.0, 10.0]).await;
}

pub async fn history_max(fixture: &Fixture) {
    check_aggregation(fixture, Aggregation::Max, [3.0, 20.0]).await;
}

/// `count` returns the count as the value too.
pub async fn history_count(fixture: &Fixture) {
    check_aggregation(fixture, Aggregation::Count, [3.0, 2.0]).await;
}

/// `first`: the value of the earliest sample of the bucket, not the first written.
pub async fn history_first(fixture: &Fixture) {
    check_aggregation(fixture, Aggregation::First, [3.0, 10.0]).await;
}

/// `last`: the value of the latest sample of the bucket, not the last written.
pub async fn history_last(fixture: &Fixture) {
    check_aggregation(fixture, Aggregation::Last, [2.0, 20.0]).await;
}

/// Buckets start at multiples of `step` since the Unix epoch, not at the query's start.
pub async fn history_buckets_are_epoch_aligned(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    // t0 = 1_704_067_200 s = 4_057_302 * 420 + 360: with a 7-minute step, t0 lies 360 s into
    // its bucket.
    let m = series("h", "hist")
        .with_value(sample(0, 1.0))
        .with_value(sample(59, 2.0))
        .with_value(sample(60, 4.0))
        .with_value(sample(500, 8.0));
    store.save_metric(&m).await.unwrap();
    let q =
        HistoryQuery::new("hist", TimeDelta::minutes(7), Aggregation::Sum).range(at(-1), at(600));
    let out = store.metric_history(&q).await.unwrap();
    let starts: Vec<_> = out[0]
        .buckets
        .iter()
        .map(|b| (b.start, b.value, b.count))
        .collect();
    assert_eq!(
        starts,
        [(at(-360), 3.0, 2), (at(60), 4.0, 1), (at(480), 8.0, 1)],
        "buckets [t0-360, t0+60), [t0+60, t0+480), [t0+480, t0+900)"
    );
    for b in &out[0].buckets {
        assert_eq!(b.start.timestamp_micros() % 420_000_000, 0);
    }
    // A millisecond step over microsecond data.
    let fine = series("f", "fine")
        .with_value(MetricValue::new(at_micros(1_999), 1.0))
        .with_value(MetricValue::new(at_micros(2_000), 2.0))
        .with_value(MetricValue::new(at_micros(2_999), 3.0));
    store.save_metric(&fine).await.unwrap();
    let out = store
        .metric_history(&HistoryQuery::new(
            "fine",
            TimeDelta::milliseconds(1),
            Aggregation::Count,
        ))
        .await
        .unwrap();
    let got: Vec<_> = out[0].buckets.iter().map(|b| (b.start, b.count)).collect();
    assert_eq!(got, [(at_micros(1_000), 1), (at_micros(2_000), 2)]);
}

/// The history's time range is half-open like every range, and empty buckets never appear.
pub async fn history_range_is_half_open_and_skips_empty_buckets(fixture: &Fixture) {
    let store = history_store(fixture).await;
    let q = HistoryQuery::new("hist", TimeDelta::seconds(10), Aggregation::Count)
        .range(at(20), at(125));
    let out = store.metric_history(&q).await.unwrap();
    let got: Vec<_> = out[0].buckets.iter().map(|b| (b.start, b.count)).collect();
    assert_eq!(
        got,
        [(at(20), 1), (at(30), 1)],
        "125 is excluded, 40..120 are empty"
    );
    let empty = store
        .metric_history(
            &HistoryQuery::new("hist", TimeDelta::seconds(10), Aggregation::Count)
                .range(at(40), at(120)),
        )
        .await
        .unwrap();
    assert!(
        empty.iter().all(|s| s.buckets.is_empty()),
        "no bucket without samples: {empty:?}"
    );
    let unknown = store
        .metric_history(&HistoryQuery::new(
            "no.such.metric",
            TimeDelta::seconds(10),
            Aggregation::Avg,
        ))
        .await
        .unwrap();
    assert!(unknown.iter().all(|s| s.buckets.is_empty()), "{unknown:?}");
}

/// Tag filters select samples by subset match.
pub async fn history_filters_by_tags(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let m = series("h", "hist")
        .with_value(sample(0, 1.0).tag("host", "a").tag("dc", "x"))
        .with_value(sample(1, 2.0).tag("host", "b").tag("dc", "x"))
        .with_value(sample(2, 4.0).tag("host", "a"))
        .with_value(sample(3, 8.0));
    store.save_metric(&m).await.unwrap();
    let sum = |q: HistoryQuery| {
        let store = store.clone();
        async move {
            let out = store.metric_history(&q).await.unwrap();
            out.iter()
                .flat_map(|s| &s.buckets)
                .map(|b| (b.value, b.count))
                .collect::<Vec<_>>()
        }
    };
    let base = || HistoryQuery::new("hist", TimeDelta::hours(1), Aggregation::Sum);
    assert_eq!(sum(base().tag("host", "a")).await, [(5.0, 2)]);
    assert_eq!(sum(base().tag("dc", "x")).await, [(3.0, 2)]);
    assert_eq!(
        sum(base().tag("host", "a").tag("dc", "x")).await,
        [(1.0, 1)]
    );
    assert_eq!(sum(base()).await, [(15.0, 4)]);
    assert!(sum(base().tag("host", "zzz")).await.is_empty());
}

/// `group_by`: one series per tag value, ordered by value, samples lacking the tag in the group
/// `None`, listed first.
pub async fn history_group_by_puts_missing_tag_first(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let m = series("h", "hist")
        .with_value(sample(0, 1.0).tag("region", "us"))
        .with_value(sample(1, 2.0).tag("region", "eu"))
        .with_value(sample(2, 4.0))
        .with_value(sample(3, 8.0).tag("region", "eu"))
        .with_value(sample(4, 16.0).tag("other", "x"))
        .with_value(sample(5, 32.0).tag("region", "EU"));
    store.save_metric(&m).await.unwrap();
    let q = HistoryQuery::new("hist", TimeDelta::hours(1), Aggregation::Sum).group_by("region");
    let out: Vec<HistorySeries> = store.metric_history(&q).await.unwrap();
    let got: Vec<_> = out
        .iter()
        .map(|s| {
            (
                s.group.clone(),
                s.buckets
                    .iter()
                    .map(|b| (b.value, b.count))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (None, vec![(20.0, 2)]),
            (Some("EU".to_owned()), vec![(32.0, 1)]),
            (Some("eu".to_owned()), vec![(10.0, 2)]),
            (Some("us".to_owned()), vec![(1.0, 1)]),
        ]
    );
}

/// Several series with the same name merge into one history.
pub async fn history_merges_series_with_the_same_name(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    store
        .save_metrics(&[
            series("agent-1/lat", "latency")
                .with_value(sample(0, 1.0))
                .with_value(sample(70, 5.0)),
            series("agent-2/lat", "latency")
                .with_value(sample(0, 3.0))
                .with_value(sample(10, 5.0)),
            series("agent-3/lat", "latency").with_value(sample(65, 7.0)),
        ])
        .await
        .unwrap();
    let out = store
        .metric_history(&HistoryQuery::new(
            "latency",
            TimeDelta::seconds(60),
            Aggregation::Avg,
        ))
        .await
        .unwrap();
    assert_eq!(out.len(), 1);
    let got: Vec<_> = out[0].buckets.iter().map(|b| (b.start, b.count)).collect();
    assert_eq!(got, [(at(0), 3), (at(60), 2)]);
    assert_close(out[0].buckets[0].value, 3.0, "avg of 1, 3, 5");
    assert_close(out[0].buckets[1].value, 6.0, "avg of 5, 7");
}

/// `first`/`last` ties at the same microsecond: series id, then the tags' canonical JSON —
/// smallest for `first`, largest for `last`.
pub async fn history_first_and_last_break_ties(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    store
        .save_metrics(&[
            series("b", "tie").with_value(sample(0, 2.0)),
            series("a", "tie").with_value(sample(0, 1.0)),
            series("c", "tie").with_value(sample(0, 3.0)),
            series("x", "tags")
                .with_value(sample(0, 20.0).tag("k", "y"))
                .with_value(sample(0, 10.0).tag("k", "x"))
                .with_value(sample(0, 30.0).tag("k", "z")),
        ])
        .await
        .unwrap();
    let value = |name: &'static str, aggregation| {
        let store = store.clone();
        async move {
            let out = store
                .metric_history(&HistoryQuery::new(
                    name,
                    TimeDelta::seconds(60),
                    aggregation,
                ))
                .await
                .unwrap();
            assert_eq!(out[0].buckets.len(), 1);
            out[0].buckets[0].value
        }
    };
    assert_eq!(
        value("tie", Aggregation::First).await,
        1.0,
        "smallest series id"
    );
    assert_eq!(
        value("tie", Aggregation::Last).await,
        3.0,
        "largest series id"
    );
    assert_eq!(
        value("tags", Aggregation::First).await,
        10.0,
        "smallest tags JSON"
    );
    assert_eq!(
        value("tags", Aggregation::Last).await,
        30.0,
        "largest tags JSON"
    );
}

/// `step` below 1 ms, an empty name, a reversed range: `InvalidInput`.
pub async fn history_rejects_bad_queries(fixture: &Fixture) {
    let store = history_store(fixture).await;
    for step in [
        TimeDelta::microseconds(999),
        TimeDelta::zero(),
        TimeDelta::seconds(-60),
    ] {
        expect_err(
            store
                .metric_history(&HistoryQuery::new("hist", step, Aggregation::Avg))
                .await,
            ErrorKind::InvalidInput,
            Some("step"),
        );
    }
    expect_err(
        store
            .metric_history(&HistoryQuery::new(
                "",
                TimeDelta::seconds(1),
                Aggregation::Avg,
            ))
            .await,
        ErrorKind::InvalidInput,
        Some("name"),
    );
    expect_err(
        store
            .metric_history(
                &HistoryQuery::new("hist", TimeDelta::seconds(1), Aggregation::Avg)
                    .range(at(10), at(0)),
            )
            .await,
        ErrorKind::InvalidInput,
        Some("start"),
    );
    let ok = store
        .metric_history(&HistoryQuery::new(
            "hist",
            TimeDelta::milliseconds(1),
            Aggregation::Avg,
        ))
        .await
        .unwrap();
    assert_eq!(ok[0].buckets.len(), 5, "1 ms is the smallest step");
}

/// Aggregates are exact enough over many samples and large magnitudes (within 1e-9 relative).
pub async fn history_aggregates_many_samples(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let mut m = series("h", "many");
    for i in 0..3_000i64 {
        m.values.push(sample(i, 1e6 + i as f64 * 0.001));
    }
    store.save_metric(&m).await.unwrap();
    let run = |aggregation| {
        let store = store.clone();
        async move {
            let out = store
                .metric_history(&HistoryQuery::new("many", TimeDelta::hours(2), aggregation))
                .await
                .unwrap();
            assert_eq!(out[0].buckets.len(), 1);
            assert_eq!(out[0].buckets[0].count, 3_000);
            out[0].buckets[0].value
        }
    };
    let sum: f64 = (0..3_000).map(|i| 1e6 + i as f64 * 0.001).sum();
    assert_close(run(Aggregation::Sum).await, sum, "sum");
    assert_close(run(Aggregation::Avg).await, sum / 3_000.0, "avg");
    assert_eq!(run(Aggregation::Min).await, 1e6);
    assert_eq!(run(Aggregation::Max).await, 1e6 + 2_999.0 * 0.001);
    assert_eq!(run(Aggregation::Count).await, 3_000.0);
}
