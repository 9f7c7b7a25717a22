//! Parity with the reference backend: the same generated data written into
//! `aimon_core::MemoryBackend` and into a `SqliteBackend` on a temporary file must give the same
//! answers to every read.

use aimon_core::Contract;
use std::time::Duration;

use aimon_core::query::{
    AgentStateQuery, Aggregation, AlertQuery, HistoryQuery, HistorySeries, MetricQuery,
};
use aimon_core::{
    AgentState, Alert, AlertSeverity, AlertStatus, BackupFormat, ErrorKind, FilterOp,
    MemoryBackend, Metadata, Metric, MetricType, MetricValue, QueryOptions, RetentionPolicy,
    RetentionReport, SortOrder, StorageBackend, StorageConfig, Tags, time,
};
use aimon_sqlite::{SqliteBackend, SqliteConfig};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

/// A small deterministic generator (no dependency needed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const TAG_KEYS: &[&str] = &[
    "host",
    "re'gion",
    "k=v",
    "a,b",
    "back\\slash",
    "emoji🚀",
    "[0].x",
    "$.path",
    "quote\"d",
];
const TAG_VALUES: &[&str] = &[
    "a", "b", "it's", "x=1,y=2", "\"q\"", "c:\\dir", "🚀🔥", "* wild", " sp ace ", "10",
];
const IDS: &[&str] = &[
    "s'1", "s\"2", "s,3", "s=4", "s\\5", "🚀6", "s 7", "s*8", "S9", "s10", "s.11",
];
const NAMES: &[&str] = &["cpu", "mem", "cpu'x", "🚀"];

fn tags(rng: &mut Rng) -> Tags {
    let mut t = Tags::new();
    for _ in 0..rng.below(4) {
        t.insert(
            (*rng.pick(TAG_KEYS)).to_owned(),
            (*rng.pick(TAG_VALUES)).to_owned(),
        );
    }
    t
}

fn metadata(rng: &mut Rng) -> Metadata {
    let mut m = Metadata::new();
    if rng.chance(60) {
        m.insert("model".into(), json!("gpt-'x'"));
        m.insert(
            "nested".into(),
            json!({"a": [1, 2.5, null, true], "q\"k": {"deep": "v\\"}}),
        );
        m.insert("n".into(), json!(rng.below(1000)));
        m.insert("f".into(), json!(0.1 + rng.below(100) as f64 / 7.0));
    }
    m
}

/// A time `offset_micros` after `base`, with a sub-microsecond part that stores truncate.
fn at(base: i64, offset_micros: i64, nanos: u32) -> DateTime<Utc> {
    time::from_micros(base + offset_micros) + TimeDelta::nanoseconds(i64::from(nanos % 1000))
}

struct Data {
    metrics: Vec<Vec<Metric>>,
    alerts: Vec<Vec<Alert>>,
    states: Vec<Vec<AgentState>>,
}

/// Data around `base` (µs), spread over `span` µs before it.
fn generate(seed: u64, base: i64, span: i64) -> Data {
    let mut rng = Rng(seed);
    let ts = |rng: &mut Rng| {
        // Few distinct instants, so timestamps collide across series and tags.
        let slot = rng.below(40) as i64;
        at(base, -span + slot * (span / 40), rng.below(1000) as u32)
    };
    let mut metrics = Vec::new();
    for batch in 0..6 {
        let mut items = Vec::new();
        for _ in 0..5 {
            let id = *rng.pick(IDS);
            let mut m = Metric::new(id, *rng.pick(NAMES), *rng.pick(&MetricType::ALL));
            if rng.chance(60) {
                m.description = Some((*rng.pick(TAG_VALUES)).to_owned());
            }
            if rng.chance(50) {
                m.unit = Some((*rng.pick(&["ms", "%", "b'y"])).to_owned());
            }
            m.metadata = metadata(&mut rng);
            m.created_at = ts(&mut rng);
            m.updated_at = ts(&mut rng);
            for _ in 0..rng.below(60) {
                let value = (rng.below(20_000) as f64 - 10_000.0) / 8.0;
                let value = if value == 0.0 { 0.5 } else { value };
                m.values.push(MetricValue {
                    timestamp: ts(&mut rng),
                    value,
                    tags: tags(&mut rng),
                });
            }
            items.push(m);
        }
        if batch == 0 {
            // A series without samples.
            items.push(Metric::new("empty'series", "cpu", MetricType::Gauge));
        }
        metrics.push(items);
    }
    let mut alerts = Vec::new();
    for _ in 0..4 {
        let mut items = Vec::new();
        for _ in 0..8 {
            let id = format!("al{}'{}", rng.below(12), rng.pick(&["x", "\"", ",", "🚀"]));
            let mut a = Alert::new(
                id,
                *rng.pick(NAMES),
                *rng.pick(&AlertSeverity::ALL),
                *rng.pick(&["agent-1", "agent'2", "a=3"]),
            );
            a.start_time = ts(&mut rng);
            a.created_at = ts(&mut rng);
            a.updated_at = ts(&mut rng);
            a.status = *rng.pick(&AlertStatus::ALL);
            if rng.chance(50) {
                a.description = Some((*rng.pick(TAG_VALUES)).to_owned());
            }
            if rng.chance(30) {
                a.end_time = Some(ts(&mut rng));
            }
            if rng.chance(40) {
                a.acknowledged_by = Some("o'ps".into());
                a.acknowledged_at = Some(ts(&mut rng));
            }
            if rng.chance(30) {
                a.resolved_by = Some("ops\\2".into());
                a.resolved_at = Some(ts(&mut rng));
            }
            a.labels = tags(&mut rng);
            a.annotations = tags(&mut rng);
            if rng.chance(30) {
                a.annotations
                    .insert("runbook".into(), "line1\nline2\t'q'".into());
            }
            a.metadata = metadata(&mut rng);
            items.push(a);
        }
        alerts.push(items);
    }
    let mut states = Vec::new();
    for _ in 0..4 {
        let mut items = Vec::new();
        for _ in 0..8 {
            let agent = format!("agent{}{}", rng.below(6), rng.pick(&["", "'", "\"", "🚀"]));
            let mut s = AgentState::new(
                format!("st{}", rng.below(1000)),
                agent,
                *rng.pick(&["idle", "busy", "err'or"]),
            );
            // Heartbeats collide often, to exercise "equal replaces, older is superseded".
            let slot = *rng.pick(&[0_i64, 10, 20, 30, 35]);
            s.last_heartbeat = at(base, -span + slot * (span / 40), 0);
            s.created_at = ts(&mut rng);
            s.updated_at = ts(&mut rng);
            s.metrics = metadata(&mut rng);
            s.metadata = metadata(&mut rng);
            items.push(s);
        }
        states.push(items);
    }
    Data {
        metrics,
        alerts,
        states,
    }
}

struct Pair {
    mem: Contract<MemoryBackend>,
    sql: Contract<SqliteBackend>,
    _dir: tempfile::TempDir,
}

async fn pair(retention: RetentionPolicy) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let sql = Contract::new(
        SqliteBackend::open(
            SqliteConfig::file("sqlite", dir.path().join("parity.db")).with_retention(retention),
        )
        .await
        .unwrap(),
    );
    Pair {
        mem: Contract::new(MemoryBackend::new("memory", retention)),
        sql,
        _dir: dir,
    }
}

async fn load(p: &Pair, data: &Data) {
    for batch in &data.metrics {
        let a = p.mem.save_metrics(batch).await.unwrap();
        let b = p.sql.save_metrics(batch).await.unwrap();
        assert_eq!(a, b, "save_metrics report");
    }
    for batch in &data.alerts {
        let a = p.mem.save_alerts(batch).await.unwrap();
        let b = p.sql.save_alerts(batch).await.unwrap();
        assert_eq!(a, b, "save_alerts report");
    }
    for batch in &data.states {
        let a = p.mem.save_agent_states(batch).await.unwrap();
        let b = p.sql.save_agent_states(batch).await.unwrap();
        assert_eq!(a, b, "save_agent_states report");
    }
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn assert_history_eq(a: &[HistorySeries], b: &[HistorySeries], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: groups\n{a:?}\n{b:?}");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.group, y.group, "{what}");
        assert_eq!(x.buckets.len(), y.buckets.len(), "{what}: buckets");
        for (p, q) in x.buckets.iter().zip(&y.buckets) {
            assert_eq!((p.start, p.count), (q.start, q.count), "{what}");
            assert!(
                close(p.value, q.value),
                "{what}: {} vs {}",
                p.value,
                q.value
            );
        }
    }
}

fn metric_queries(base: i64, span: i64) -> Vec<MetricQuery> {
    let t = |off: i64| time::from_micros(base - span + off);
    let mut queries = vec![
        MetricQuery::new(),
        MetricQuery::new().name("cpu"),
        MetricQuery::new()
            .name("cpu'x")
            .metric_type(MetricType::Gauge),
        MetricQuery::new().name("nope"),
        MetricQuery::new().range(t(span / 4), t(span / 2)),
        MetricQuery::new().range(t(span / 4), t(span / 4)),
        MetricQuery::new().range(t(0), t(span * 2)).tag("host", "a"),
        MetricQuery::new().tag("re'gion", "it's"),
        MetricQuery::new()
            .tag("emoji🚀", "🚀🔥")
            .tag("k=v", "x=1,y=2"),
        MetricQuery::new().tag("missing", "a"),
        MetricQuery::new().range(
            at(base, -span + span / 3, 500),
            at(base, -span + span / 2, 999),
        ),
    ];
    let option_sets = vec![
        QueryOptions::default().limit(3),
        QueryOptions::default().limit(4).offset(2),
        QueryOptions::default().offset(100),
        QueryOptions::default().sort("description", SortOrder::Asc),
        QueryOptions::default().sort("description", SortOrder::Desc),
        QueryOptions::default()
            .sort("unit", SortOrder::Desc)
            .limit(5),
        QueryOptions::default().sort("created_at", SortOrder::Desc),
        QueryOptions::default()
            .sort("updated_at", SortOrder::Asc)
            .offset(1),
        QueryOptions::default().sort("name", SortOrder::Desc),
        QueryOptions::default().sort("type", SortOrder::Asc),
        QueryOptions::default().filter("description", FilterOp::Ne, "a"),
        QueryOptions::default().filter("description", FilterOp::Eq, "it's"),
        QueryOptions::default().filter("unit", FilterOp::NotIn, json!(["ms"])),
        QueryOptions::default().filter("unit", FilterOp::In, json!(["ms", "b'y"])),
        QueryOptions::default().filter("unit", FilterOp::In, json!([])),
        QueryOptions::default().filter("unit", FilterOp::NotIn, json!([])),
        QueryOptions::default().filter("id", FilterOp::Gt, "s,3"),
        QueryOptions::default().filter("id", FilterOp::Lte, "s=4"),
        QueryOptions::default().filter("id", FilterOp::Contains, "'"),
        QueryOptions::default().filter("description", FilterOp::Contains, ""),
        QueryOptions::default().filter("name", FilterOp::Contains, "🚀"),
        QueryOptions::default()
            .filter("created_at", FilterOp::Gte, time::format(t(span / 2)))
            .sort("created_at", SortOrder::Asc),
        QueryOptions::default().filter("updated_at", FilterOp::Lt, time::format(t(span / 3))),
        QueryOptions::default().filter("type", FilterOp::In, json!(["gauge", "counter"])),
    ];
    for options in option_sets {
        queries.push(MetricQuery::new().options(options.clone()));
        queries.push(
            MetricQuery::new()
                .range(t(span / 5), t(span))
                .options(options),
        );
    }
    queries
}

fn alert_queries(base: i64, span: i64) -> Vec<AlertQuery> {
    let t = |off: i64| time::from_micros(base - span + off);
    let mut queries = vec![
        AlertQuery::new(),
        AlertQuery::new().status(AlertStatus::Active),
        AlertQuery::new().severity(AlertSeverity::High),
        AlertQuery::new().min_severity(AlertSeverity::Medium),
        AlertQuery::new().source("agent'2"),
        AlertQuery::new().range(t(span / 4), t(span / 2)),
        AlertQuery::new().label("host", "a"),
        AlertQuery::new()
            .label("quote\"d", "\"q\"")
            .label("a,b", "b"),
    ];
    let option_sets = vec![
        QueryOptions::default().limit(2).offset(1),
        QueryOptions::default().sort("severity", SortOrder::Desc),
        QueryOptions::default()
            .sort("severity", SortOrder::Asc)
            .limit(5),
        QueryOptions::default().sort("end_time", SortOrder::Asc),
        QueryOptions::default().sort("end_time", SortOrder::Desc),
        QueryOptions::default().sort("acknowledged_by", SortOrder::Asc),
        QueryOptions::default().sort("resolved_at", SortOrder::Desc),
        QueryOptions::default().sort("start_time", SortOrder::Asc),
        QueryOptions::default().sort("status", SortOrder::Desc),
        QueryOptions::default().sort("source", SortOrder::Asc),
        QueryOptions::default().filter("severity", FilterOp::Gte, "HIGH"),
        QueryOptions::default().filter("severity", FilterOp::In, json!(["info", "critical"])),
        QueryOptions::default().filter("labels.host", FilterOp::Eq, "a"),
        QueryOptions::default().filter("labels.host", FilterOp::Ne, "a"),
        QueryOptions::default().filter("labels.re'gion", FilterOp::NotIn, json!(["it's", "b"])),
        QueryOptions::default().filter("labels.emoji🚀", FilterOp::In, json!(["🚀🔥", "10"])),
        QueryOptions::default().filter("labels.[0].x", FilterOp::Gt, "b"),
        QueryOptions::default().filter("labels.$.path", FilterOp::Contains, "i"),
        QueryOptions::default().filter("labels.back\\slash", FilterOp::Lte, "a"),
        QueryOptions::default().filter("end_time", FilterOp::Ne, time::format(t(0))),
        QueryOptions::default().filter("end_time", FilterOp::Gte, time::format(t(span / 2))),
        QueryOptions::default().filter("acknowledged_by", FilterOp::Eq, "o'ps"),
        QueryOptions::default().filter("resolved_by", FilterOp::NotIn, json!(["ops\\2"])),
        QueryOptions::default().filter("description", FilterOp::Contains, "'"),
        QueryOptions::default().filter("status", FilterOp::NotIn, json!(["resolved"])),
        QueryOptions::default().filter("id", FilterOp::Gt, "al5"),
    ];
    for options in option_sets {
        queries.push(AlertQuery::new().options(options.clone()));
        queries.push(
            AlertQuery::new()
                .min_severity(AlertSeverity::Low)
                .options(options),
        );
    }
    queries
}

fn state_queries(base: i64, span: i64) -> Vec<AgentStateQuery> {
    let t = |off: i64| time::from_micros(base - span + off);
    vec![
        AgentStateQuery::new(),
        AgentStateQuery::new().status("err'or"),
        AgentStateQuery::new().heartbeat_after(t(span / 2)),
        AgentStateQuery::new().options(QueryOptions::default().limit(2).offset(1)),
        AgentStateQuery::new().options(QueryOptions::default().sort("id", SortOrder::Desc)),
        AgentStateQuery::new()
            .options(QueryOptions::default().sort("last_heartbeat", SortOrder::Desc)),
        AgentStateQuery::new().options(QueryOptions::default().sort("status", SortOrder::Asc)),
        AgentStateQuery::new().options(
            QueryOptions::default()
                .filter("status", FilterOp::In, json!(["idle", "busy"]))
                .sort("created_at", SortOrder::Asc),
        ),
        AgentStateQuery::new().options(QueryOptions::default().filter(
            "agent_id",
            FilterOp::Contains,
            "'",
        )),
        AgentStateQuery::new().options(QueryOptions::default().filter(
            "last_heartbeat",
            FilterOp::Lt,
            time::format(t(span / 2)),
        )),
    ]
}

fn history_queries(base: i64, span: i64) -> Vec<HistoryQuery> {
    let t = |off: i64| time::from_micros(base - span + off);
    let mut queries = Vec::new();
    for aggregation in Aggregation::ALL {
        for name in ["cpu", "mem", "cpu'x", "🚀", "none"] {
            for group in [
                None,
                Some("host"),
                Some("re'gion"),
                Some("emoji🚀"),
                Some("zz"),
            ] {
                for step in [
                    TimeDelta::milliseconds(1),
                    TimeDelta::seconds(7),
                    TimeDelta::minutes(5),
                    TimeDelta::hours(1),
                    TimeDelta::days(3),
                ] {
                    let mut q = HistoryQuery::new(name, step, aggregation);
                    q.group_by = group.map(str::to_owned);
                    queries.push(q.clone());
                    if step == TimeDelta::minutes(5) {
                        queries.push(q.clone().range(t(span / 5), t(span * 4 / 5)));
                        queries.push(q.clone().tag("host", "a"));
                        queries.push(q.tag("k=v", "x=1,y=2").tag("a,b", "b"));
                    }
                }
            }
        }
    }
    queries
}

async fn compare_reads(p: &Pair, base: i64, span: i64) {
    let mut ids: Vec<String> = IDS.iter().map(|s| (*s).to_owned()).collect();
    ids.push("empty'series".into());
    ids.push("missing".into());
    for id in &ids {
        let a = p.mem.get_metric(id).await.unwrap();
        let b = p.sql.get_metric(id).await.unwrap();
        assert_eq!(a, b, "get_metric({id:?})");
    }
    for (i, q) in metric_queries(base, span).iter().enumerate() {
        let a = p.mem.query_metrics(q).await.unwrap();
        let b = p.sql.query_metrics(q).await.unwrap();
        let ids = |v: &[Metric]| v.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b), "query_metrics #{i} ids: {q:?}");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                x.values.len(),
                y.values.len(),
                "query_metrics #{i} {}: {q:?}",
                x.id
            );
            assert_eq!(x, y, "query_metrics #{i}: {q:?}");
        }
    }
    for q in history_queries(base, span) {
        let a = p.mem.metric_history(&q).await.unwrap();
        let b = p.sql.metric_history(&q).await.unwrap();
        assert_history_eq(&a, &b, &format!("{q:?}"));
    }
    let all_alerts = p.mem.query_alerts(&AlertQuery::new()).await.unwrap();
    for alert in &all_alerts {
        let b = p.sql.get_alert(&alert.id).await.unwrap();
        assert_eq!(Some(alert), b.as_ref(), "get_alert");
    }
    assert_eq!(p.sql.get_alert("missing").await.unwrap(), None);
    for (i, q) in alert_queries(base, span).iter().enumerate() {
        let a = p.mem.query_alerts(q).await.unwrap();
        let b = p.sql.query_alerts(q).await.unwrap();
        assert_eq!(a, b, "query_alerts #{i}: {q:?}");
    }
    let all_states = p
        .mem
        .get_agent_states(&AgentStateQuery::new())
        .await
        .unwrap();
    for state in &all_states {
        let b = p.sql.get_agent_state(&state.agent_id).await.unwrap();
        assert_eq!(Some(state), b.as_ref(), "get_agent_state");
    }
    for (i, q) in state_queries(base, span).iter().enumerate() {
        let a = p.mem.get_agent_states(q).await.unwrap();
        let b = p.sql.get_agent_states(q).await.unwrap();
        assert_eq!(a, b, "get_agent_states #{i}: {q:?}");
    }
    let a = p.mem.stats().await.unwrap();
    let b = p.sql.stats().await.unwrap();
    assert_eq!(
        (a.series, a.samples, a.alerts, a.agent_states),
        (b.series, b.samples, b.alerts, b.agent_states),
        "stats counts"
    );
}

const BASE_2024: i64 = 1_704_067_200_000_000;
const HOUR: i64 = 3_600_000_000;

#[tokio::test(flavor = "multi_thread")]
async fn parity_without_retention() {
    let p = pair(RetentionPolicy::default()).await;
    let data = generate(0x5eed_1234_abcd_0001, BASE_2024, 3 * HOUR);
    load(&p, &data).await;
    compare_reads(&p, BASE_2024, 3 * HOUR).await;
    let a = p.mem.apply_retention().await.unwrap();
    let b = p.sql.apply_retention().await.unwrap();
    assert_eq!(a, b);
}

#[tokio::test(flavor = "multi_thread")]
async fn parity_with_retention() {
    let ttl = Some(Duration::from_secs(3600));
    let retention = RetentionPolicy {
        metric_ttl: ttl,
        alert_ttl: ttl,
        agent_state_ttl: ttl,
    };
    let p = pair(retention).await;
    // Instants fall on slots 6 minutes apart over 4 hours, so no read races the cutoff, except
    // slot 30, which sits 1.5 s inside the 1-hour TTL at write time and expires during the
    // sleep below: data that expires after it was written, for the sweep.
    let span = 4 * HOUR;
    let base = time::to_micros(time::now()) + 1_500_000;
    let data = generate(0xfeed_5eed_0002, base, span);
    load(&p, &data).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    compare_reads(&p, base, span).await;
    let a = p.mem.apply_retention().await.unwrap();
    let b = p.sql.apply_retention().await.unwrap();
    // Samples go by whole chunks (one hour of one series and tag set): those of the chunk
    // straddling the cutoff stay, hidden from reads (docs/semantics.md, "Retention").
    assert_eq!(
        RetentionReport {
            samples_removed: 0,
            ..a
        },
        RetentionReport {
            samples_removed: 0,
            ..b
        },
        "apply_retention"
    );
    assert!(b.samples_removed <= a.samples_removed, "{a:?} {b:?}");
    assert!(
        b.samples_removed > 0 && b.alerts_removed > 0 && b.agent_states_removed > 0,
        "{b:?}"
    );
    compare_reads(&p, base, span).await;
    assert_eq!(
        p.sql.apply_retention().await.unwrap(),
        RetentionReport::default()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn backups_round_trip_like_memory() {
    let p = pair(RetentionPolicy::default()).await;
    let data = generate(42, BASE_2024, 3 * HOUR);
    load(&p, &data).await;
    let dir = tempfile::tempdir().unwrap();

    // Portable: SQLite → archive → fresh memory; same answers as the original memory store.
    let archive = dir.path().join("portable");
    let report = p
        .sql
        .backup(&archive, BackupFormat::Portable)
        .await
        .unwrap();
    let restored = Pair {
        mem: Contract::new(MemoryBackend::new("m", RetentionPolicy::default())),
        sql: Contract::new(
            SqliteBackend::open(SqliteConfig::memory("s"))
                .await
                .unwrap(),
        ),
        _dir: tempfile::tempdir().unwrap(),
    };
    restored
        .mem
        .restore(&archive, BackupFormat::Portable)
        .await
        .unwrap();
    let r2 = restored
        .sql
        .restore(&archive, BackupFormat::Portable)
        .await
        .unwrap();
    assert_eq!(report.samples, r2.samples);
    compare_reads(&restored, BASE_2024, 3 * HOUR).await;
    compare_reads(
        &Pair {
            mem: Contract::new(MemoryBackend::new("m", RetentionPolicy::default())),
            sql: Contract::new(
                SqliteBackend::open(SqliteConfig::memory("s"))
                    .await
                    .unwrap(),
            ),
            _dir: tempfile::tempdir().unwrap(),
        },
        BASE_2024,
        3 * HOUR,
    )
    .await;

    // Native: VACUUM INTO, then merge into a fresh file database.
    let file = dir.path().join("native.db");
    let native = p.sql.backup(&file, BackupFormat::Native).await.unwrap();
    assert_eq!(native.samples, report.samples);
    let again = p.sql.backup(&file, BackupFormat::Native).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Conflict);
    let target = pair(RetentionPolicy::default()).await;
    target
        .mem
        .restore(&archive, BackupFormat::Portable)
        .await
        .unwrap();
    let back = target
        .sql
        .restore(&file, BackupFormat::Native)
        .await
        .unwrap();
    assert_eq!(back.samples, native.samples);
    compare_reads(&target, BASE_2024, 3 * HOUR).await;
    // Restoring twice merges by key: nothing changes.
    target
        .sql
        .restore(&file, BackupFormat::Native)
        .await
        .unwrap();
    compare_reads(&target, BASE_2024, 3 * HOUR).await;

    // Damaged or missing native backups are refused.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"this is not a database, not even close......").unwrap();
    let err = target
        .sql
        .restore(&junk, BackupFormat::Native)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
    let err = target
        .sql
        .restore(&dir.path().join("absent.db"), BackupFormat::Native)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    // The store still works after a failed restore.
    compare_reads(&target, BASE_2024, 3 * HOUR).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_urls_persist_and_close_makes_calls_unavailable() {
    let config = StorageConfig::from_url("mem", "sqlite::memory:").unwrap();
    let store = Contract::new(SqliteBackend::connect(&config).await.unwrap());
    let m = Metric::new("m", "cpu", MetricType::Gauge)
        .with_value(MetricValue::new(time::now(), 1.5).tag("k", "v"));
    store.save_metric(&m).await.unwrap();
    assert_eq!(
        store.get_metric("m").await.unwrap().unwrap().values,
        m.values
    );
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.series, stats.samples), (1, 1));
    assert!(stats.version.starts_with('3'), "{}", stats.version);
    assert_eq!(
        store.subscribe().await.err().map(|e| e.kind()),
        Some(ErrorKind::Unsupported)
    );
    store.close().await.unwrap();
    let err = store.get_metric("m").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.is_retryable());
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_input_is_rejected_before_writing() {
    let p = pair(RetentionPolicy::default()).await;
    let good =
        Metric::new("ok", "cpu", MetricType::Gauge).with_value(MetricValue::new(time::now(), 1.0));
    let bad = Metric::new("bad", "cpu", MetricType::Gauge)
        .with_value(MetricValue::new(time::now(), f64::NAN));
    let err = p.sql.save_metrics(&[good, bad]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(err.operation(), Some("save_metrics"));
    assert_eq!(err.backend(), Some("sqlite"));
    assert_eq!(p.sql.get_metric("ok").await.unwrap(), None);
    let err = p
        .sql
        .query_alerts(&AlertQuery::new().options(QueryOptions::default().filter(
            "colour",
            FilterOp::Eq,
            "red",
        )))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test(flavor = "multi_thread")]
async fn large_batches_span_several_insert_chunks() {
    let p = pair(RetentionPolicy::default()).await;
    let mut m = Metric::new("big", "load", MetricType::Gauge);
    for i in 0..1234 {
        m.values.push(
            MetricValue::new(time::from_micros(BASE_2024 + i * 1000), i as f64)
                .tag("i", (i % 3).to_string()),
        );
    }
    // Rewrites of the same keys inside one batch: the last one wins.
    let mut twice = m.clone();
    twice.values.extend(m.values.iter().map(|v| MetricValue {
        value: v.value * 2.0,
        ..v.clone()
    }));
    let a = p
        .mem
        .save_metrics(std::slice::from_ref(&twice))
        .await
        .unwrap();
    let b = p
        .sql
        .save_metrics(std::slice::from_ref(&twice))
        .await
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(
        p.mem.get_metric("big").await.unwrap(),
        p.sql.get_metric("big").await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn long_filter_lists_and_extreme_values() {
    let p = pair(RetentionPolicy::default()).await;
    let values = [
        -0.0,
        f64::MAX,
        f64::MIN,
        f64::MIN_POSITIVE,
        5e-324,
        1e300,
        -1e300,
        0.1 + 0.2,
    ];
    let mut metrics = Vec::new();
    for i in 0..50 {
        let mut m = Metric::new(format!("x{i:03}"), "extreme", MetricType::Gauge);
        for (j, v) in values.iter().enumerate() {
            m.values.push(MetricValue::new(
                time::from_micros(BASE_2024 + j as i64 * 1_000_000),
                *v,
            ));
        }
        metrics.push(m);
    }
    p.mem.save_metrics(&metrics).await.unwrap();
    p.sql.save_metrics(&metrics).await.unwrap();
    let back = p.sql.get_metric("x000").await.unwrap().unwrap();
    for (got, want) in back.values.iter().zip(values) {
        assert_eq!(got.value.to_bits(), want.to_bits(), "{want:e}");
    }
    // A list longer than any inline parameter list.
    let ids: Vec<String> = (0..40_000).map(|i| format!("x{i:03}")).collect();
    for op in [FilterOp::In, FilterOp::NotIn] {
        let q = MetricQuery::new().options(
            QueryOptions::default()
                .filter("id", op, json!(ids[5..].to_vec()))
                .limit(1000),
        );
        assert_eq!(
            p.mem.query_metrics(&q).await.unwrap(),
            p.sql.query_metrics(&q).await.unwrap()
        );
    }
    for aggregation in Aggregation::ALL {
        let q = HistoryQuery::new("extreme", TimeDelta::seconds(2), aggregation);
        let a = p.mem.metric_history(&q).await.unwrap();
        let b = p.sql.metric_history(&q).await.unwrap();
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            for (p, q) in x.buckets.iter().zip(&y.buckets) {
                assert_eq!((p.start, p.count), (q.start, q.count));
                assert!(
                    close(p.value, q.value) || (p.value.is_infinite() && p.value == q.value),
                    "{aggregation}: {} vs {}",
                    p.value,
                    q.value
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_writers_and_readers_do_not_fail() {
    let p = pair(RetentionPolicy::default()).await;
    let store = std::sync::Arc::new(p.sql);
    let mut tasks = Vec::new();
    for w in 0..16_i64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0..10_i64 {
                let m = Metric::new(format!("w{w}"), "conc", MetricType::Counter).with_value(
                    MetricValue::new(time::from_micros(BASE_2024 + b * 1000), b as f64),
                );
                store.save_metric(&m).await?;
                let mut s = AgentState::new("s", format!("agent{}", w % 4), "busy");
                s.last_heartbeat = time::from_micros(BASE_2024 + b);
                store.save_agent_state(&s).await?;
                store
                    .query_metrics(&MetricQuery::new().name("conc"))
                    .await?;
            }
            Ok::<_, aimon_core::Error>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.series, stats.samples, stats.agent_states),
        (16, 160, 4)
    );
}

/// The tag-set index rows, sorted: (series_id, tags) of `series_tagsets` and
/// (key, value, tags) of `tagset_pairs`.
type IndexRows = (Vec<(String, String)>, Vec<(String, String, String)>);

async fn index_rows(store: &SqliteBackend) -> IndexRows {
    let series = sqlx::query_as("SELECT series_id, tags FROM series_tagsets ORDER BY 1, 2")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let pairs =
        sqlx::query_as("SELECT \"key\", \"value\", tags FROM tagset_pairs ORDER BY 1, 2, 3")
            .fetch_all(store.pool())
            .await
            .unwrap();
    (series, pairs)
}

/// What the registry must hold for the samples stored now: exactly the distinct (series, tag
/// set)s that have chunks, and the decoded pairs of those tag sets.
async fn assert_index_exact(store: &SqliteBackend) {
    let series = sqlx::query_as(
        "SELECT DISTINCT t.series_id, t.tags FROM chunks c \
         JOIN series_tagsets t ON t.id = c.tagset ORDER BY 1, 2",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let pairs = sqlx::query_as(
        "SELECT j.key, j.value, t.tags FROM (SELECT DISTINCT t.tags FROM chunks c \
         JOIN series_tagsets t ON t.id = c.tagset) AS t, json_each(t.tags) AS j ORDER BY 1, 2, 3",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(index_rows(store).await, (series, pairs));
}

#[tokio::test(flavor = "multi_thread")]
async fn tag_index_holds_exactly_the_distinct_tag_sets() {
    let p = pair(RetentionPolicy::default()).await;
    let data = generate(0x7a65_0003, BASE_2024, 3 * HOUR);
    load(&p, &data).await;
    assert_index_exact(&p.sql).await;

    // One batch with more distinct tag sets and pairs than an index INSERT holds.
    let mut m = Metric::new("wide", "cpu", MetricType::Gauge);
    for i in 0..450_i64 {
        m.values.push(
            MetricValue::new(time::from_micros(BASE_2024 + i), i as f64)
                .tag("i", i.to_string())
                .tag("host", "a")
                .tag("q\"k", format!("v{}", i % 7)),
        );
    }
    let other = Metric::new("other", "cpu", MetricType::Gauge).with_value(
        MetricValue::new(time::from_micros(BASE_2024 - HOUR * 100), 1.0).tag("host", "a"),
    );
    for store in [&p.mem as &dyn StorageBackend, &p.sql] {
        store
            .save_metrics(&[m.clone(), other.clone()])
            .await
            .unwrap();
        // Rewrites change nothing in the index.
        store
            .save_metrics(&[m.clone(), other.clone()])
            .await
            .unwrap();
    }
    assert_index_exact(&p.sql).await;
    compare_reads(&p, BASE_2024, 3 * HOUR).await;
    let q = MetricQuery::new().tag("host", "a").tag("q\"k", "v3");
    let a = p.mem.query_metrics(&q).await.unwrap();
    let b = p.sql.query_metrics(&q).await.unwrap();
    assert_eq!(a, b);
    assert!(b.iter().any(|m| m.id == "wide" && m.values.len() == 64));
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_prunes_the_tag_index_of_removed_series() {
    let ttl = Some(Duration::from_secs(2));
    let retention = RetentionPolicy {
        metric_ttl: ttl,
        ..RetentionPolicy::default()
    };
    let p = pair(retention).await;
    let now = time::now();
    let mut gone = Metric::new("gone", "cpu", MetricType::Gauge).with_value(
        MetricValue::new(now - TimeDelta::milliseconds(500), 1.0)
            .tag("a", "1")
            .tag("only", "gone"),
    );
    gone.updated_at = now - TimeDelta::milliseconds(500);
    let kept = Metric::new("kept", "cpu", MetricType::Gauge)
        .with_value(MetricValue::new(now + TimeDelta::hours(1), 2.0).tag("a", "1"));
    for store in [&p.mem as &dyn StorageBackend, &p.sql] {
        store
            .save_metrics(&[gone.clone(), kept.clone()])
            .await
            .unwrap();
    }
    let (series, pairs) = index_rows(&p.sql).await;
    assert_eq!(series.len(), 2);
    assert_eq!(pairs.len(), 3);
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let a = p.mem.apply_retention().await.unwrap();
    let b = p.sql.apply_retention().await.unwrap();
    assert_eq!(a, b);
    assert_eq!((b.series_removed, b.samples_removed), (1, 1));
    let kept_tags = r#"{"a":"1"}"#.to_owned();
    assert_eq!(
        index_rows(&p.sql).await,
        (
            vec![("kept".to_owned(), kept_tags.clone())],
            vec![("a".to_owned(), "1".to_owned(), kept_tags)]
        )
    );
    assert_index_exact(&p.sql).await;
    let q = MetricQuery::new().tag("a", "1");
    assert_eq!(
        p.mem.query_metrics(&q).await.unwrap(),
        p.sql.query_metrics(&q).await.unwrap()
    );
}

/// A database of schema version 1 (before the tag index, one row a sample): the migrations
/// build the index and re-encode the samples as chunks, and it reads as the version-3 file
/// it was made from does.
#[tokio::test(flavor = "multi_thread")]
async fn databases_written_before_the_tag_index_are_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v3.db");
    let (v1, v3) = (dir.path().join("v1.db"), dir.path().join("v3.db"));
    std::fs::copy(&fixture, &v1).unwrap();
    std::fs::copy(&fixture, &v3).unwrap();
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", v1.display()))
        .await
        .unwrap();
    for statement in [
        "DROP TABLE series_tagsets",
        "DROP TABLE tagset_pairs",
        "ALTER TABLE alerts DROP COLUMN embedding",
        "ALTER TABLE agent_states DROP COLUMN embedding",
        "DELETE FROM _sqlx_migrations WHERE version >= 2",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    pool.close().await;
    let open = |path: std::path::PathBuf| async move {
        Contract::new(
            SqliteBackend::open(SqliteConfig::file("sqlite", &path))
                .await
                .unwrap(),
        )
    };
    let (old, new) = (open(v1).await, open(v3).await);
    assert_index_exact(&old).await;
    let all = MetricQuery::new().options(QueryOptions::default().limit(1000));
    let a = old.query_metrics(&all).await.unwrap();
    assert_eq!(a, new.query_metrics(&all).await.unwrap());
    assert_eq!(a.iter().map(|m| m.values.len()).sum::<usize>(), 440);
    for tag in ["small", "large"] {
        let q = MetricQuery::new().tag("model", tag);
        assert_eq!(
            old.query_metrics(&q).await.unwrap(),
            new.query_metrics(&q).await.unwrap()
        );
    }
}
