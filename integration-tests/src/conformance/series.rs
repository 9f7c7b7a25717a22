//! Rule 1: series and samples; semantics.md "Series".

use aimon_core::{MetricType, MetricValue};
use serde_json::json;

use super::support::*;
use crate::fixtures::Fixture;

/// A metric round-trips exactly: every field, metadata JSON, float bits.
pub async fn metric_round_trips_exactly(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let mut m = series("rt", "round.trip");
    m.metric_type = MetricType::Histogram;
    m.description = Some("multi\nline\tdescription".into());
    m.unit = Some("ms".into());
    m.metadata.insert(
        "nested".into(),
        json!({"a": [1, -2, 3.25, "x", null, false], "b": {"c": "d"}, "big": 9007199254740991i64}),
    );
    m.created_at = at(-3600);
    m.updated_at = at(7);
    let values = [
        0.1,
        -0.0,
        1e-300,
        5e-324,
        f64::MAX,
        f64::MIN,
        f64::MIN_POSITIVE,
        123_456_789.123_456_79,
        -2.5,
        1.0 / 3.0,
    ];
    for (i, v) in values.iter().enumerate() {
        m.values.push(sample(i as i64, *v).tag("i", i.to_string()));
    }
    let report = store.save_metric(&m).await.unwrap();
    assert_eq!(report.written, values.len() as u64);
    let back = store.get_metric("rt").await.unwrap().expect("saved");
    assert_eq!(back, m);
    for (got, want) in back.values.iter().zip(&m.values) {
        // -0.0 == 0.0 is all the model promises for the sign of zero; everything else keeps its bits.
        if want.value != 0.0 {
            assert_eq!(
                got.value.to_bits(),
                want.value.to_bits(),
                "bits of {}",
                want.value
            );
        }
    }
}

/// Saving a series again upserts its metadata and adds the new samples to the old ones.
pub async fn saving_a_series_again_adds_samples(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let first = series("s", "n")
        .with_value(sample(0, 1.0))
        .with_value(sample(10, 2.0));
    store.save_metric(&first).await.unwrap();
    let second = series("s", "n").with_value(sample(20, 3.0));
    store.save_metric(&second).await.unwrap();
    let back = store.get_metric("s").await.unwrap().unwrap();
    let values: Vec<f64> = back.values.iter().map(|v| v.value).collect();
    assert_eq!(values, [1.0, 2.0, 3.0]);
}

/// A sample keyed by (series, timestamp, tags) written again overwrites the value.
pub async fn rewriting_a_sample_key_overwrites_the_value(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    store
        .save_metric(&series("s", "n").with_value(sample(0, 1.0).tag("k", "v")))
        .await
        .unwrap();
    let report = store
        .save_metric(&series("s", "n").with_value(sample(0, 42.0).tag("k", "v")))
        .await
        .unwrap();
    assert_eq!(report.written, 1, "an overwrite counts as written");
    let back = store.get_metric("s").await.unwrap().unwrap();
    assert_eq!(back.values, vec![sample(0, 42.0).tag("k", "v")]);
    assert_eq!(store.stats().await.unwrap().samples, 1);
}

/// Retrying a whole batch leaves exactly the data of one write.
pub async fn retried_batch_does_not_duplicate(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let batch: Vec<_> = (0..5)
        .map(|s| {
            let mut m = series(&format!("s{s}"), "retry");
            for i in 0..10 {
                m.values
                    .push(sample(i, (s * 10 + i) as f64).tag("shard", s.to_string()));
            }
            m
        })
        .collect();
    store.save_metrics(&batch).await.unwrap();
    let once = dump(&store).await;
    for _ in 0..3 {
        store.save_metrics(&batch).await.unwrap();
    }
    assert_eq!(dump(&store).await, once);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.series, stats.samples), (5, 50));
}

/// Samples with the same timestamp but different tags are distinct samples, ordered by the
/// canonical JSON of their tags.
pub async fn samples_at_one_timestamp_are_ordered_by_tags(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let m = series("s", "n")
        .with_value(sample(0, 3.0).tag("k", "z"))
        .with_value(sample(0, 1.0))
        .with_value(sample(0, 2.0).tag("k", "a"))
        .with_value(sample(0, 4.0).tag("a", "z"));
    store.save_metric(&m).await.unwrap();
    let back = store.get_metric("s").await.unwrap().unwrap();
    let mut expected = m.values.clone();
    expected.sort_by_key(|v| aimon_core::model::tags_json(&v.tags));
    assert_eq!(back.values, expected);
    assert_eq!(back.values.len(), 4);
}

/// `get_metric` returns the samples sorted by timestamp, whatever the write order.
pub async fn samples_are_sorted_by_timestamp(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let order = [7, 3, 9, 0, 5, 1, 8, 2, 6, 4];
    let mut m = series("s", "n");
    for i in order {
        m.values.push(sample(i * 1000, i as f64));
    }
    store.save_metric(&m).await.unwrap();
    // A second write interleaves with the first.
    let later = series("s", "n")
        .with_value(sample(2500, 2.5))
        .with_value(sample(-10, -1.0));
    store.save_metric(&later).await.unwrap();
    let back = store.get_metric("s").await.unwrap().unwrap();
    let got: Vec<f64> = back.values.iter().map(|v| v.value).collect();
    assert_eq!(
        got,
        [-1.0, 0.0, 1.0, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    );
    assert!(
        back.values
            .windows(2)
            .all(|w| w[0].timestamp <= w[1].timestamp)
    );
}

/// Saving again overwrites name, type, description, unit, metadata and `updated_at` but keeps
/// the `created_at` of the first save.
pub async fn metadata_is_overwritten_but_created_at_kept(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let mut first = series("s", "old.name");
    first.description = Some("old".into());
    first.unit = Some("s".into());
    first.metadata.insert("v".into(), json!(1));
    first.created_at = at(0);
    first.updated_at = at(0);
    store
        .save_metric(&first.clone().with_value(sample(0, 1.0)))
        .await
        .unwrap();

    let mut second = series("s", "new.name");
    second.metric_type = MetricType::Counter;
    second.description = None;
    second.unit = Some("ms".into());
    second.metadata.insert("w".into(), json!("two"));
    second.created_at = at(500);
    second.updated_at = at(600);
    store.save_metric(&second).await.unwrap();

    let back = store.get_metric("s").await.unwrap().unwrap();
    assert_eq!(
        back.created_at,
        at(0),
        "created_at of the first save is kept"
    );
    assert_eq!(back.updated_at, at(600));
    assert_eq!(back.name, "new.name");
    assert_eq!(back.metric_type, MetricType::Counter);
    assert_eq!(back.description, None);
    assert_eq!(back.unit.as_deref(), Some("ms"));
    assert_eq!(back.metadata, second.metadata);
    assert_eq!(back.values, vec![sample(0, 1.0)], "samples are kept");
}

/// A series saved without samples exists, with no samples.
pub async fn series_without_samples_is_stored(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let report = store.save_metric(&series("bare", "n")).await.unwrap();
    assert_eq!(report.written, 0);
    let back = store.get_metric("bare").await.unwrap().expect("stored");
    assert_eq!(back, series("bare", "n"));
    assert_eq!(store.stats().await.unwrap().series, 1);
}

/// One batch may carry the same series twice; its samples merge.
pub async fn one_batch_with_a_series_twice_merges(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let a = series("s", "n")
        .with_value(sample(0, 1.0))
        .with_value(sample(1, 1.0));
    let b = series("s", "n")
        .with_value(sample(1, 2.0))
        .with_value(sample(2, 3.0));
    store.save_metrics(&[a, b]).await.unwrap();
    let back = store.get_metric("s").await.unwrap().unwrap();
    assert_eq!(
        back.values,
        vec![sample(0, 1.0), sample(1, 2.0), sample(2, 3.0)],
        "the later item of the batch wins"
    );
}

/// Many samples (beyond any page or batch size a driver might use) all come back.
pub async fn large_series_round_trips(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let mut m = series("big", "n");
    m.values = (0..12_000)
        .map(|i| MetricValue::new(at_micros(i * 1_001), i as f64 * 0.5))
        .collect();
    let report = store.save_metric(&m).await.unwrap();
    assert_eq!(report.written, 12_000);
    let back = store.get_metric("big").await.unwrap().unwrap();
    assert_eq!(back, m);
}
