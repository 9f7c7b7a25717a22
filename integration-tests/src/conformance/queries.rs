//! Rule 2: `query_metrics`, filters, order and paging; semantics.md "Queries" and "Time".

use aimon_core::{
    AgentStateQuery, AlertQuery, ErrorKind, FilterOp, MetricQuery, MetricType, QueryFilter,
    QueryOptions, SortOrder,
};
use chrono::{TimeDelta, TimeZone, Utc};
use serde_json::json;

use super::support::*;
use crate::fixtures::Fixture;

async fn three_samples(store: &Backend) {
    let m = series("s", "n")
        .with_value(sample(0, 0.0))
        .with_value(sample(10, 10.0))
        .with_value(sample(20, 20.0));
    store.save_metric(&m).await.unwrap();
}

fn values(found: &[aimon_core::Metric]) -> Vec<f64> {
    found
        .iter()
        .flat_map(|m| m.values.iter().map(|v| v.value))
        .collect()
}

/// `[start, end)`: a sample at `start` is in, one at `end` is out.
pub async fn time_ranges_are_half_open(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    three_samples(&store).await;
    let found = store
        .query_metrics(&MetricQuery::new().range(at(0), at(20)))
        .await
        .unwrap();
    assert_eq!(values(&found), [0.0, 10.0]);
    let found = store
        .query_metrics(&MetricQuery::new().range(at(10), at(21)))
        .await
        .unwrap();
    assert_eq!(values(&found), [10.0, 20.0]);
    let open_start = MetricQuery {
        end: Some(at(10)),
        ..MetricQuery::new()
    };
    assert_eq!(
        values(&store.query_metrics(&open_start).await.unwrap()),
        [0.0]
    );
    let open_end = MetricQuery {
        start: Some(at(10)),
        ..MetricQuery::new()
    };
    assert_eq!(
        values(&store.query_metrics(&open_end).await.unwrap()),
        [10.0, 20.0]
    );
}

/// Sub-microsecond bounds round up, so `[start, end)` stays exact for microsecond data.
pub async fn sub_microsecond_bounds_round_up(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let m = series("s", "n")
        .with_value(aimon_core::MetricValue::new(at_micros(5), 5.0))
        .with_value(aimon_core::MetricValue::new(at_micros(6), 6.0))
        .with_value(aimon_core::MetricValue::new(at_micros(7), 7.0));
    store.save_metric(&m).await.unwrap();
    let half = TimeDelta::nanoseconds(500);
    // start 5.5 µs -> 6 µs (5 out); end 6.5 µs -> 7 µs (6 in, 7 out).
    let found = store
        .query_metrics(&MetricQuery::new().range(at_micros(5) + half, at_micros(6) + half))
        .await
        .unwrap();
    assert_eq!(values(&found), [6.0]);
    // start 4.999 µs -> 5 µs (5 in); end 7.001 µs -> 8 µs (7 in).
    let found = store
        .query_metrics(&MetricQuery::new().range(
            at_micros(5) - TimeDelta::nanoseconds(1),
            at_micros(7) + TimeDelta::nanoseconds(1),
        ))
        .await
        .unwrap();
    assert_eq!(values(&found), [5.0, 6.0, 7.0]);
}

/// `start == end` is an empty range; `start > end` is `InvalidInput`.
pub async fn empty_and_reversed_ranges(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    three_samples(&store).await;
    let found = store
        .query_metrics(&MetricQuery::new().range(at(10), at(10)))
        .await
        .unwrap();
    assert!(found.is_empty(), "{found:?}");
    expect_err(
        store
            .query_metrics(&MetricQuery::new().range(at(20), at(10)))
            .await,
        ErrorKind::InvalidInput,
        Some("start"),
    );
    expect_err(
        store
            .query_alerts(&AlertQuery::new().range(at(20), at(10)))
            .await,
        ErrorKind::InvalidInput,
        Some("start"),
    );
}

/// A tag filter matches samples whose tags include every given pair.
pub async fn tag_filter_matches_a_subset_of_tags(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let m = series("s", "n")
        .with_value(sample(0, 1.0).tag("host", "a").tag("region", "eu"))
        .with_value(sample(1, 2.0).tag("host", "a"))
        .with_value(sample(2, 3.0).tag("host", "b").tag("region", "eu"))
        .with_value(sample(3, 4.0));
    store.save_metric(&m).await.unwrap();
    let q = |pairs: &[(&str, &str)]| MetricQuery {
        tags: tags(pairs),
        ..MetricQuery::new()
    };
    let found = store.query_metrics(&q(&[("host", "a")])).await.unwrap();
    assert_eq!(values(&found), [1.0, 2.0]);
    let found = store
        .query_metrics(&q(&[("host", "a"), ("region", "eu")]))
        .await
        .unwrap();
    assert_eq!(values(&found), [1.0]);
    let found = store.query_metrics(&q(&[("region", "eu")])).await.unwrap();
    assert_eq!(values(&found), [1.0, 3.0]);
    let found = store.query_metrics(&q(&[("host", "A")])).await.unwrap();
    assert!(found.is_empty(), "tag values compare case-sensitively");
    let found = store.query_metrics(&q(&[])).await.unwrap();
    assert_eq!(values(&found), [1.0, 2.0, 3.0, 4.0]);
}

/// A series with no sample left after a time or tag filter is omitted; without such filters a
/// series with no samples is listed.
pub async fn series_left_without_samples_are_omitted(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    store
        .save_metrics(&[
            series("a", "n").with_value(sample(0, 1.0).tag("k", "x")),
            series("b", "n").with_value(sample(100, 2.0).tag("k", "y")),
            series("c", "n"),
        ])
        .await
        .unwrap();
    let all = store.query_metrics(&MetricQuery::new()).await.unwrap();
    assert_eq!(metric_ids(&all), ["a", "b", "c"]);
    assert!(all[2].values.is_empty());
    let ranged = store
        .query_metrics(&MetricQuery::new().range(at(0), at(50)))
        .await
        .unwrap();
    assert_eq!(metric_ids(&ranged), ["a"]);
    let tagged = store
        .query_metrics(&MetricQuery::new().tag("k", "y"))
        .await
        .unwrap();
    assert_eq!(metric_ids(&tagged), ["b"]);
    let none = store
        .query_metrics(&MetricQuery::new().tag("k", "z"))
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// `series_only` finds exactly the series the same query finds, in the same order and pages,
/// each without samples.
pub async fn series_only_finds_the_same_series_without_samples(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    store
        .save_metrics(&[
            series("a", "n").with_value(sample(0, 1.0).tag("k", "x")),
            series("b", "n").with_value(sample(100, 2.0).tag("k", "y")),
            series("c", "n"),
            series("d", "other").with_value(sample(10, 3.0).tag("k", "x")),
        ])
        .await
        .unwrap();
    let queries = [
        MetricQuery::new(),
        MetricQuery::new().range(at(0), at(50)),
        MetricQuery::new().tag("k", "x"),
        MetricQuery::new().name("n"),
        MetricQuery::new().tag("k", "z"),
        MetricQuery {
            options: QueryOptions {
                limit: 1,
                offset: 1,
                ..QueryOptions::default()
            },
            ..MetricQuery::new().range(at(0), at(200))
        },
    ];
    for query in queries {
        let full = store.query_metrics(&query).await.unwrap();
        let only = store
            .query_metrics(&query.clone().series_only())
            .await
            .unwrap();
        assert_eq!(metric_ids(&only), metric_ids(&full), "{query:?}");
        assert!(only.iter().all(|m| m.values.is_empty()), "{query:?}");
        for (o, f) in only.iter().zip(&full) {
            assert_eq!(
                (&o.name, o.metric_type, &o.unit),
                (&f.name, f.metric_type, &f.unit)
            );
        }
    }
}

/// `name` and `type` select series; the returned series carry their matching samples.
pub async fn query_by_name_and_type(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let mut counter = series("c1", "requests");
    counter.metric_type = MetricType::Counter;
    store
        .save_metrics(&[
            series("g1", "requests").with_value(sample(0, 1.0)),
            counter.with_value(sample(0, 2.0)),
            series("g2", "latency").with_value(sample(0, 3.0)),
        ])
        .await
        .unwrap();
    let by_name = store
        .query_metrics(&MetricQuery::new().name("requests"))
        .await
        .unwrap();
    assert_eq!(metric_ids(&by_name), ["c1", "g1"]);
    let by_both = store
        .query_metrics(
            &MetricQuery::new()
                .name("requests")
                .metric_type(MetricType::Gauge),
        )
        .await
        .unwrap();
    assert_eq!(metric_ids(&by_both), ["g1"]);
    assert_eq!(by_both[0].values, vec![sample(0, 1.0)]);
    let none = store
        .query_metrics(&MetricQuery::new().name("Requests"))
        .await
        .unwrap();
    assert!(none.is_empty(), "names compare case-sensitively");
}

async fn metric_filter(
    store: &Backend,
    field: &str,
    op: FilterOp,
    value: serde_json::Value,
) -> Vec<String> {
    store
        .query_metrics(
            &MetricQuery::new().options(QueryOptions::default().filter(field, op, value)),
        )
        .await
        .unwrap_or_else(|e| panic!("filter {field} {op:?}: {e}"))
        .into_iter()
        .map(|m| m.id)
        .collect()
}

/// Every operator on text fields (`id`, `name`, `type`), compared by UTF-8 bytes.
pub async fn every_operator_on_text_fields(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let mut b = series("b", "beta");
    b.metric_type = MetricType::Counter;
    store
        .save_metrics(&[
            series("a", "alpha"),
            b,
            series("c", "Gamma"),
            series("é", "épsilon"),
        ])
        .await
        .unwrap();
    use FilterOp::*;
    let cases: &[(&str, FilterOp, serde_json::Value, &[&str])] = &[
        ("id", Eq, json!("b"), &["b"]),
        ("id", Ne, json!("b"), &["a", "c", "é"]),
        ("id", Gt, json!("b"), &["c", "é"]),
        ("id", Gte, json!("b"), &["b", "c", "é"]),
        ("id", Lt, json!("b"), &["a"]),
        ("id", Lte, json!("b"), &["a", "b"]),
        ("id", In, json!(["a", "c", "zz"]), &["a", "c"]),
        ("id", NotIn, json!(["a", "c"]), &["b", "é"]),
        ("id", In, json!([]), &[]),
        ("id", NotIn, json!([]), &["a", "b", "c", "é"]),
        // Byte order: "G" (0x47) < "a" < "é" (0xC3 0xA9).
        ("name", Lt, json!("alpha"), &["c"]),
        ("name", Gt, json!("gamma"), &["é"]),
        ("name", Contains, json!("ta"), &["b"]),
        ("name", Contains, json!("amm"), &["c"]),
        ("name", Contains, json!("AMM"), &[]),
        ("name", Contains, json!("psi"), &["é"]),
        ("type", Eq, json!("counter"), &["b"]),
        ("type", Ne, json!("gauge"), &["b"]),
        ("type", In, json!(["gauge"]), &["a", "c", "é"]),
    ];
    for (field, op, value, expected) in cases {
        let got = metric_filter(&store, field, *op, value.clone()).await;
        assert_eq!(got, *expected, "{field} {op:?} {value}");
    }
}

/// `contains` is a literal substring test: `%`, `_`, `*`, `\` and quotes are not wildcards.
pub async fn contains_treats_wildcards_literally(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    store
        .save_metrics(&[
            series("1", "100%_done"),
            series("2", "100x_done"),
            series("3", "a*b"),
            series("4", "axxb"),
            series("5", "back\\slash"),
            series("6", "it's"),
        ])
        .await
        .unwrap();
    let cases: &[(&str, &[&str])] = &[
        ("%", &["1"]),
        ("0%_", &["1"]),
        ("_", &["1", "2"]),
        ("*", &["3"]),
        ("\\", &["5"]),
        ("'", &["6"]),
        ("", &["1", "2", "3", "4", "5", "6"]),
    ];
    for (needle, expected) in cases {
        let got = metric_filter(&store, "name", FilterOp::Contains, json!(needle)).await;
        assert_eq!(got, *expected, "contains {needle:?}");
    }
}

/// Every operator on time fields (`created_at`, `updated_at`), RFC 3339 values compared in time.
pub async fn every_operator_on_time_fields(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let mut items = Vec::new();
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        let mut m = series(id, "n");
        m.created_at = at(i as i64 * 10);
        m.updated_at = at(100 + i as i64);
        items.push(m);
    }
    store.save_metrics(&items).await.unwrap();
    use FilterOp::*;
    let t = |secs| json!(rfc(at(secs)));
    let cases: &[(&str, FilterOp, serde_json::Value, &[&str])] = &[
        ("created_at", Eq, t(10), &["b"]),
        ("created_at", Ne, t(10), &["a", "c"]),
        ("created_at", Gt, t(10), &["c"]),
        ("created_at", Gte, t(10), &["b", "c"]),
        ("created_at", Lt, t(10), &["a"]),
        ("created_at", Lte, t(10), &["a", "b"]),
        (
            "created_at",
            In,
            json!([rfc(at(0)), rfc(at(20))]),
            &["a", "c"],
        ),
        ("created_at", NotIn, json!([rfc(at(0))]), &["b", "c"]),
        // Another offset, same instant.
        ("created_at", Eq, json!("2024-01-01T01:00:10+01:00"), &["b"]),
        // Sub-microsecond values round up: > 9.9999995 s means >= 10 s.
        (
            "created_at",
            Gte,
            json!("2024-01-01T00:00:09.9999995Z"),
            &["b", "c"],
        ),
        ("updated_at", Gte, t(101), &["b", "c"]),
    ];
    for (field, op, value, expected) in cases {
        let got = metric_filter(&store, field, *op, value.clone()).await;
        assert_eq!(got, *expected, "{field} {op:?} {value}");
    }
}

/// An absent value (a `null` description or unit) matches only `ne` and `not_in`.
pub async fn absent_values_match_only_ne_and_not_in(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let mut with = series("with", "n");
    with.description = Some("x".into());
    let without = series("without", "n");
    store.save_metrics(&[with, without]).await.unwrap();
    use FilterOp::*;
    let cases: &[(FilterOp, serde_json::Value, &[&str])] = &[
        (Eq, json!("x"), &["with"]),
        (Ne, json!("x"), &["without"]),
        (Ne, json!("y"), &["with", "without"]),
        (Gt, json!(""), &["with"]),
        (Gte, json!(""), &["with"]),
        (Lt, json!("zzz"), &["with"]),
        (Lte, json!("zzz"), &["with"]),
        (In, json!(["x", "y"]), &["with"]),
        (NotIn, json!(["x"]), &["without"]),
        (NotIn, json!(["y"]), &["with", "without"]),
        (Contains, json!(""), &["with"]),
    ];
    for (op, value, expected) in cases {
        let got = metric_filter(&store, "description", *op, value.clone()).await;
        assert_eq!(got, *expected, "description {op:?} {value}");
    }
    let got = metric_filter(&store, "unit", Ne, json!("ms")).await;
    assert_eq!(got, ["with", "without"]);
}

/// An unknown field (on every kind) or a label field outside alerts is `InvalidInput`.
pub async fn unknown_filter_fields_are_invalid_input(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    populate(&store).await;
    let bad = || QueryOptions::default().filter("colour", FilterOp::Eq, "red");
    expect_err(
        store
            .query_metrics(&MetricQuery::new().options(bad()))
            .await,
        ErrorKind::InvalidInput,
        Some("colour"),
    );
    expect_err(
        store.query_alerts(&AlertQuery::new().options(bad())).await,
        ErrorKind::InvalidInput,
        Some("colour"),
    );
    expect_err(
        store
            .get_agent_states(&AgentStateQuery::new().options(bad()))
            .await,
        ErrorKind::InvalidInput,
        Some("colour"),
    );
    let label = QueryOptions::default().filter("labels.env", FilterOp::Eq, "prod");
    expect_err(
        store
            .query_metrics(&MetricQuery::new().options(label))
            .await,
        ErrorKind::InvalidInput,
        Some("labels.env"),
    );
    // Fields of another kind are unknown too.
    let other = QueryOptions::default().filter("severity", FilterOp::Eq, "high");
    expect_err(
        store
            .query_metrics(&MetricQuery::new().options(other))
            .await,
        ErrorKind::InvalidInput,
        Some("severity"),
    );
    let sort = QueryOptions::default().sort("colour", SortOrder::Asc);
    expect_err(
        store.query_metrics(&MetricQuery::new().options(sort)).await,
        ErrorKind::InvalidInput,
        Some("colour"),
    );
}

/// An unknown operator cannot be expressed: it fails to parse, as `InvalidInput`. Operators and
/// values of the wrong type for a field are `InvalidInput` from the backend.
pub async fn unknown_operators_and_mistyped_values_are_invalid_input(fixture: &Fixture) {
    let err = "like".parse::<FilterOp>().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        serde_json::from_value::<QueryFilter>(
            json!({"field": "id", "operator": "like", "value": "x"})
        )
        .is_err()
    );
    let store = fixture.open(&[]).await;
    populate(&store).await;
    let cases = [
        ("created_at", FilterOp::Contains, json!("2024")),
        ("id", FilterOp::In, json!("not-an-array")),
        ("id", FilterOp::Eq, json!(42)),
        ("created_at", FilterOp::Gt, json!("yesterday")),
        ("created_at", FilterOp::Gt, json!("1600-01-01T00:00:00Z")),
        ("name", FilterOp::In, json!(["ok", 1])),
    ];
    for (field, op, value) in cases {
        let q =
            MetricQuery::new().options(QueryOptions::default().filter(field, op, value.clone()));
        expect_err(
            store.query_metrics(&q).await,
            ErrorKind::InvalidInput,
            Some(field),
        );
    }
    let q = AlertQuery::new().options(QueryOptions::default().filter(
        "severity",
        FilterOp::Contains,
        "hi",
    ));
    expect_err(
        store.query_alerts(&q).await,
        ErrorKind::InvalidInput,
        Some("severity"),
    );
    let q =
        AlertQuery::new().options(QueryOptions::default().filter("severity", FilterOp::Eq, "loud"));
    expect_err(
        store.query_alerts(&q).await,
        ErrorKind::InvalidInput,
        Some("loud"),
    );
}

/// Ascending and descending order, absent values first ascending and last descending, ties by
/// `id` (ascending in both directions).
pub async fn sorting_orders_nulls_and_breaks_ties_by_id(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let with = |id: &str, d: Option<&str>| {
        let mut m = series(id, "n");
        m.description = d.map(str::to_owned);
        m
    };
    store
        .save_metrics(&[
            with("e", Some("b")),
            with("d", None),
            with("c", Some("a")),
            with("b", Some("b")),
            with("a", None),
        ])
        .await
        .unwrap();
    let sorted = |order| {
        let store = store.clone();
        async move {
            let q = MetricQuery::new().options(QueryOptions::default().sort("description", order));
            let found = store.query_metrics(&q).await.unwrap();
            found.into_iter().map(|m| m.id).collect::<Vec<_>>()
        }
    };
    assert_eq!(sorted(SortOrder::Asc).await, ["a", "d", "c", "b", "e"]);
    assert_eq!(sorted(SortOrder::Desc).await, ["b", "e", "c", "a", "d"]);
    let by_id_desc = store
        .query_metrics(
            &MetricQuery::new().options(QueryOptions::default().sort("id", SortOrder::Desc)),
        )
        .await
        .unwrap();
    assert_eq!(metric_ids(&by_id_desc), ["e", "d", "c", "b", "a"]);
    let default = store.query_metrics(&MetricQuery::new()).await.unwrap();
    assert_eq!(
        metric_ids(&default),
        ["a", "b", "c", "d", "e"],
        "default order is by id"
    );
}

/// `limit`/`offset` pages cover the whole ordered result without overlap or gap.
pub async fn paging_covers_everything_without_overlap(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let items: Vec<_> = (0..23)
        .map(|i| {
            let mut m = series(&format!("s{i:02}"), "n");
            m.unit = Some(["a", "b", "c"][i % 3].to_owned());
            m
        })
        .collect();
    store.save_metrics(&items).await.unwrap();
    for order in [SortOrder::Asc, SortOrder::Desc] {
        let all = store
            .query_metrics(&MetricQuery::new().options(QueryOptions::default().sort("unit", order)))
            .await
            .unwrap();
        assert_eq!(all.len(), 23);
        let mut paged = Vec::new();
        for page in 0..5 {
            let q = MetricQuery::new().options(
                QueryOptions::default()
                    .sort("unit", order)
                    .limit(5)
                    .offset(page * 5),
            );
            let found = store.query_metrics(&q).await.unwrap();
            assert_eq!(found.len(), if page < 4 { 5 } else { 3 });
            paged.extend(found);
        }
        assert_eq!(metric_ids(&paged), metric_ids(&all), "{order:?}");
        let beyond = store
            .query_metrics(&MetricQuery::new().options(QueryOptions::default().offset(100)))
            .await
            .unwrap();
        assert!(beyond.is_empty());
    }
}

/// `limit` 0 is `InvalidInput` on every query; the default limit is 100.
pub async fn limit_zero_is_rejected_and_default_is_100(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let zero = || QueryOptions::default().limit(0);
    expect_err(
        store
            .query_metrics(&MetricQuery::new().options(zero()))
            .await,
        ErrorKind::InvalidInput,
        Some("limit"),
    );
    expect_err(
        store.query_alerts(&AlertQuery::new().options(zero())).await,
        ErrorKind::InvalidInput,
        Some("limit"),
    );
    expect_err(
        store
            .get_agent_states(&AgentStateQuery::new().options(zero()))
            .await,
        ErrorKind::InvalidInput,
        Some("limit"),
    );
    let items: Vec<_> = (0..105).map(|i| series(&format!("s{i:03}"), "n")).collect();
    store.save_metrics(&items).await.unwrap();
    let found = store.query_metrics(&MetricQuery::new()).await.unwrap();
    assert_eq!(found.len(), 100);
    assert_eq!(found[99].id, "s099");
}

/// Query bounds and filter times outside 1970..2262 are `InvalidInput`.
pub async fn query_bounds_outside_the_range_are_rejected(fixture: &Fixture) {
    let store = fixture.open(&[]).await;
    let early = Utc.with_ymd_and_hms(1600, 1, 1, 0, 0, 0).unwrap();
    let late = Utc.with_ymd_and_hms(2300, 1, 1, 0, 0, 0).unwrap();
    expect_err(
        store
            .query_metrics(&MetricQuery::new().range(early, at(0)))
            .await,
        ErrorKind::InvalidInput,
        Some("start"),
    );
    expect_err(
        store
            .query_metrics(&MetricQuery::new().range(at(0), late))
            .await,
        ErrorKind::InvalidInput,
        Some("end"),
    );
    expect_err(
        store
            .get_agent_states(&AgentStateQuery::new().heartbeat_after(late))
            .await,
        ErrorKind::InvalidInput,
        Some("last_heartbeat_after"),
    );
}
