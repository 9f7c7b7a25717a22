//! Native restore checks the backup file completely before it writes anything: a tampered or
//! foreign file is `Corrupted` (a newer schema `Unsupported`) and the target store is left
//! exactly as it was (DESIGN.md rule 7 holds for restored data too).

use aimon_core::Contract;
use std::path::{Path, PathBuf};

use aimon_core::query::{AgentStateQuery, AlertQuery, MetricQuery};
use aimon_core::{
    AgentState, Alert, AlertSeverity, BackupFormat, ErrorKind, Metric, MetricType, MetricValue,
    QueryOptions, StorageBackend, time,
};
use aimon_sqlite::{SqliteBackend, SqliteConfig};
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode};
use sqlx::{ConnectOptions, Connection};

/// 2024-01-01T00:00:00Z.
const BASE: i64 = 1_704_067_200_000_000;

fn at(seconds: i64) -> DateTime<Utc> {
    time::from_micros(BASE + seconds * 1_000_000)
}

async fn open(path: &Path) -> Contract<SqliteBackend> {
    Contract::new(
        SqliteBackend::open(SqliteConfig::file("sqlite", path))
            .await
            .unwrap(),
    )
}

/// Everything a store holds, through the trait.
#[derive(Debug, PartialEq)]
struct Dump {
    metrics: Vec<Metric>,
    alerts: Vec<Alert>,
    agent_states: Vec<AgentState>,
}

async fn dump(store: &Contract<SqliteBackend>) -> Dump {
    let all = || QueryOptions::default().limit(10_000);
    Dump {
        metrics: store
            .query_metrics(&MetricQuery::new().options(all()))
            .await
            .unwrap(),
        alerts: store
            .query_alerts(&AlertQuery::new().options(all()))
            .await
            .unwrap(),
        agent_states: store
            .get_agent_states(&AgentStateQuery::new().options(all()))
            .await
            .unwrap(),
    }
}

/// A native backup of a small store: two series with tagged samples, two alerts, one agent.
async fn native_backup(dir: &Path) -> PathBuf {
    let store = open(&dir.join("source.db")).await;
    let mut cpu = Metric::new("m1", "cpu", MetricType::Gauge);
    let mut mem = Metric::new("m2", "mem", MetricType::Counter);
    for i in 0..20 {
        cpu.values
            .push(MetricValue::new(at(i), i as f64 * 0.5).tag("host", "h1"));
        mem.values
            .push(MetricValue::new(at(i), -(i as f64)).tag("host", "h2"));
    }
    store.save_metrics(&[cpu, mem]).await.unwrap();
    let mut a1 = Alert::new("a1", "disk full", AlertSeverity::High, "monitor");
    a1.labels.insert("team".into(), "ops".into());
    let a2 = Alert::new("a2", "cpu hot", AlertSeverity::Low, "monitor");
    store.save_alerts(&[a1, a2]).await.unwrap();
    store
        .save_agent_states(&[AgentState::new("s1", "agent-1", "running")])
        .await
        .unwrap();
    let path = dir.join("backup.db");
    store.backup(&path, BackupFormat::Native).await.unwrap();
    store.close().await.unwrap();
    path
}

/// A copy of `backup` with `statements` run on it through a plain connection.
async fn tampered(backup: &Path, name: &str, statements: &[&str]) -> PathBuf {
    let path = backup.with_file_name(format!("{name}.db"));
    std::fs::copy(backup, &path).unwrap();
    let mut conn: SqliteConnection = SqliteConnectOptions::new()
        .filename(&path)
        .journal_mode(SqliteJournalMode::Delete)
        .connect()
        .await
        .unwrap();
    for statement in statements {
        // Audited: fixed test statements.
        sqlx::query(sqlx::AssertSqlSafe(*statement))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    conn.close().await.unwrap();
    path
}

/// A populated target store; restoring `path` into it fails with `kind` (the message naming
/// `mentions`) and leaves it unchanged.
async fn assert_rejected(dir: &Path, case: &str, path: &Path, kind: ErrorKind, mentions: &str) {
    let target = open(&dir.join(format!("target-{case}.db"))).await;
    let mut pre = Metric::new("m1", "cpu", MetricType::Gauge);
    pre.values
        .push(MetricValue::new(at(100), 42.0).tag("host", "local"));
    target
        .save_metrics(&[pre, Metric::new("local", "n", MetricType::Gauge)])
        .await
        .unwrap();
    target
        .save_alerts(&[Alert::new("a1", "local", AlertSeverity::Info, "here")])
        .await
        .unwrap();
    target
        .save_agent_states(&[AgentState::new("s0", "agent-1", "local")])
        .await
        .unwrap();
    let before = dump(&target).await;
    match target.restore(path, BackupFormat::Native).await {
        Ok(report) => panic!("{case}: the restore succeeded: {report:?}"),
        Err(e) => {
            assert_eq!(e.kind(), kind, "{case}: {e}");
            assert!(e.to_string().contains(mentions), "{case}: {e}");
        }
    }
    assert_eq!(dump(&target).await, before, "{case}: the store changed");
    // The connection is usable afterwards: nothing stays attached or locked.
    target
        .save_alerts(&[Alert::new("after", "n", AlertSeverity::Info, "here")])
        .await
        .unwrap();
    target.close().await.unwrap();
}

/// The database file aimon wrote before samples became chunks (schema version 3, one row a
/// sample); `fixtures/README.md` says how it was made. Its sample rows are what the cases
/// that tamper with samples of an older backup change.
fn v3_fixture(dir: &Path) -> PathBuf {
    let path = dir.join("v3.db");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v3.db"),
        &path,
    )
    .unwrap();
    path
}

/// One sample row of series `m1`.
const ONE_SAMPLE: &str = "(series_id, ts, tags) = \
    (SELECT series_id, ts, tags FROM samples WHERE series_id = 'm1' ORDER BY ts LIMIT 1)";

#[tokio::test(flavor = "multi_thread")]
async fn tampered_native_backups_are_corrupted_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let backup = native_backup(dir.path()).await;

    // The untouched backup restores: the cases below fail for their tampering alone.
    let fresh = open(&dir.path().join("fresh.db")).await;
    fresh.restore(&backup, BackupFormat::Native).await.unwrap();
    let source = open(&dir.path().join("source.db")).await;
    assert_eq!(dump(&fresh).await, dump(&source).await);

    let v3 = v3_fixture(dir.path());
    let fresh = open(&dir.path().join("fresh-v3.db")).await;
    fresh.restore(&v3, BackupFormat::Native).await.unwrap();
    let sample = |set: &str| format!("UPDATE samples SET {set} WHERE {ONE_SAMPLE}");
    // (case, statements, on the v3 fixture rather than a new backup, what the error names)
    let sample_cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "text-sample-value",
            vec![sample("value = 'not a number'")],
            "not a number",
        ),
        (
            "infinite-sample-value",
            vec![sample("value = 9e999")],
            "not finite",
        ),
        (
            "sample-after-2262",
            vec![sample("ts = 9300000000000000")],
            "ts is outside",
        ),
        (
            "invalid-tags-json",
            vec![sample("tags = '{\"host\": '")],
            "samples tag set",
        ),
        (
            "non-canonical-tags",
            vec![sample("tags = '{ \"host\" : \"h1\" }'")],
            "canonical",
        ),
        (
            "control-char-in-tag",
            vec![sample("tags = '{\"host\":\"a\\nb\"}'")],
            "samples tag set",
        ),
    ];
    for (case, statements, mentions) in &sample_cases {
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        let path = tampered(&v3, case, &statements).await;
        assert_rejected(dir.path(), case, &path, ErrorKind::Corrupted, mentions).await;
    }

    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        (
            "damaged-chunk",
            vec![
                "UPDATE chunks SET data = CAST(substr(data, 1, 8) || CASE WHEN \
                 substr(data, 9, 1) = x'ff' THEN x'00' ELSE x'ff' END || substr(data, 10) \
                 AS BLOB) WHERE rowid = (SELECT min(rowid) FROM chunks)"
                    .into(),
            ],
            "is damaged",
        ),
        (
            "truncated-chunk",
            vec![
                "UPDATE chunks SET data = x'01' WHERE rowid = (SELECT max(rowid) FROM chunks)"
                    .into(),
            ],
            "is damaged",
        ),
        (
            "chunk-of-no-tag-set",
            vec!["DROP TABLE series_tagsets".into()],
            "series_tagsets is missing",
        ),
        (
            "control-char-in-alert-name",
            vec!["UPDATE alerts SET name = 'bad' || char(10) || 'name' WHERE id = 'a1'".into()],
            "alerts row",
        ),
        (
            "start-time-1969",
            vec!["UPDATE alerts SET start_time = -86400000000 WHERE id = 'a2'".into()],
            "start_time",
        ),
        (
            "severity-99",
            vec!["UPDATE alerts SET severity = 99 WHERE id = 'a1'".into()],
            "severity",
        ),
        (
            "unknown-status",
            vec!["UPDATE alerts SET status = 'bogus' WHERE id = 'a1'".into()],
            "status",
        ),
        (
            "invalid-series-metadata",
            vec!["UPDATE series SET metadata = '[1' WHERE id = 'm2'".into()],
            "series row",
        ),
        (
            "agent-heartbeat-as-text",
            vec!["UPDATE agent_states SET last_heartbeat = 'yesterday'".into()],
            "agent_states row",
        ),
        (
            "missing-table",
            vec!["DROP TABLE agent_states".into()],
            "agent_states is missing",
        ),
        (
            "no-schema-version",
            vec!["DROP TABLE _sqlx_migrations".into()],
            "schema version",
        ),
        (
            "unkeyed-table",
            vec![
                "DROP TABLE alerts".into(),
                format!(
                    "CREATE TABLE alerts ({})",
                    "id, name, description, severity, source, status, start_time, end_time, \
                     acknowledged_by, acknowledged_at, resolved_by, resolved_at, labels, \
                     annotations, metadata, created_at, updated_at"
                ),
            ],
            "not keyed",
        ),
    ];
    for (case, statements, mentions) in &cases {
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        let path = tampered(&backup, case, &statements).await;
        assert_rejected(dir.path(), case, &path, ErrorKind::Corrupted, mentions).await;
    }

    // A SQLite database that is not aimon's.
    let foreign = dir.path().join("foreign.db");
    let mut conn: SqliteConnection = SqliteConnectOptions::new()
        .filename(&foreign)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Delete)
        .connect()
        .await
        .unwrap();
    sqlx::query("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO notes (body) VALUES ('hello')")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    assert_rejected(
        dir.path(),
        "foreign",
        &foreign,
        ErrorKind::Corrupted,
        "not a valid aimon SQLite backup",
    )
    .await;

    // Files that are not SQLite at all, and an empty one.
    let garbage = dir.path().join("garbage.db");
    let bytes: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&garbage, &bytes).unwrap();
    assert_rejected(
        dir.path(),
        "garbage",
        &garbage,
        ErrorKind::Corrupted,
        "not a readable SQLite",
    )
    .await;
    let text = dir.path().join("text.db");
    std::fs::write(&text, "this is not a database\n".repeat(500)).unwrap();
    assert_rejected(
        dir.path(),
        "text",
        &text,
        ErrorKind::Corrupted,
        "not a readable SQLite",
    )
    .await;
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    assert_rejected(dir.path(), "empty", &empty, ErrorKind::Corrupted, "").await;
    // A damaged page: the header survives, the rest is overwritten.
    let truncated = dir.path().join("damaged.db");
    let mut bytes = std::fs::read(&backup).unwrap();
    let len = bytes.len();
    for (i, b) in bytes[100..len].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31);
    }
    std::fs::write(&truncated, &bytes).unwrap();
    assert_rejected(dir.path(), "damaged", &truncated, ErrorKind::Corrupted, "").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newer_schema_version_is_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let backup = native_backup(dir.path()).await;
    let path = tampered(
        &backup,
        "newer",
        &[
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
           execution_time) VALUES (9999, 'future', 1, x'00', 0)",
        ],
    )
    .await;
    assert_rejected(
        dir.path(),
        "newer",
        &path,
        ErrorKind::Unsupported,
        "schema version 9999",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_from_schema_version_1_restores() {
    let dir = tempfile::tempdir().unwrap();
    let backup = v3_fixture(dir.path());
    let path = tampered(
        &backup,
        "v1",
        &[
            "DROP TABLE series_tagsets",
            "DROP TABLE tagset_pairs",
            "ALTER TABLE alerts DROP COLUMN embedding",
            "ALTER TABLE agent_states DROP COLUMN embedding",
            "DELETE FROM _sqlx_migrations WHERE version >= 2",
        ],
    )
    .await;
    let target = open(&dir.path().join("target.db")).await;
    target.restore(&path, BackupFormat::Native).await.unwrap();
    // The same file opened (and migrated) in place holds the same samples.
    let source = open(&backup).await;
    assert_eq!(dump(&target).await.metrics, dump(&source).await.metrics);
    let tagged = target
        .query_metrics(&MetricQuery::new().tag("host", "h2"))
        .await
        .unwrap();
    assert_eq!(tagged.len(), 1);
}

/// Embeddings survive a native backup bit for bit, and a store restored from it answers
/// similarity queries with them.
#[tokio::test(flavor = "multi_thread")]
async fn embeddings_survive_a_native_backup() {
    let dir = tempfile::tempdir().unwrap();
    let source = open(&dir.path().join("source.db")).await;
    let mut a = Alert::new("a1", "disk full", AlertSeverity::High, "monitor");
    a.embedding = Some(vec![0.1, -2.5e-30, f32::MAX, f32::MIN_POSITIVE]);
    let mut s = AgentState::new("s1", "agent-1", "running");
    s.embedding = Some(vec![1.0, -0.0, 3.25]);
    source.save_alerts(&[a]).await.unwrap();
    source.save_agent_states(&[s]).await.unwrap();
    let path = dir.path().join("backup.db");
    source.backup(&path, BackupFormat::Native).await.unwrap();
    let target = open(&dir.path().join("target.db")).await;
    target.restore(&path, BackupFormat::Native).await.unwrap();
    assert_eq!(dump(&target).await, dump(&source).await);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let back = target.get_alert("a1").await.unwrap().unwrap();
    assert_eq!(
        bits(back.embedding.as_deref().unwrap()),
        bits(&[0.1, -2.5e-30, f32::MAX, f32::MIN_POSITIVE])
    );
    let state = target.get_agent_state("agent-1").await.unwrap().unwrap();
    assert_eq!(
        bits(state.embedding.as_deref().unwrap()),
        bits(&[1.0, -0.0, 3.25])
    );
}
