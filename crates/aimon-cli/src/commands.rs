//! The commands besides `demo` and `bench`: query, history, stats, backup, restore, migrate,
//! retention and backends.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;

use aimon::{
    AgentStateQuery, AlertQuery, BackupFormat, HistoryQuery, MetricQuery, QueryOptions,
    StorageBackend, TransferReport,
};

use crate::chart;
use crate::cli::{
    AgentsQueryArgs, AlertsQueryArgs, Global, HistoryArgs, MetricsQueryArgs, MigrateArgs, PageArgs,
    QueryCommand, RangeArgs, TransferArgs,
};
use crate::config::Storage;
use crate::demo::alerts_table;
use crate::error::{CliError, Result};
use crate::footprint;
use crate::output::{self, number, thousands};
use aimon::parse;

fn when(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    parse::time_at(text, now).map_err(CliError::new)
}

/// `--since` and `--until`, resolved.
type TimeRange = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

fn options(page: &PageArgs) -> QueryOptions {
    let mut options = QueryOptions::default()
        .limit(usize::try_from(page.limit).unwrap_or(usize::MAX))
        .offset(usize::try_from(page.offset).unwrap_or(usize::MAX));
    options.filters = page.filter.clone();
    if let Some((field, order)) = &page.sort {
        options = options.sort(field.clone(), *order);
    }
    options
}

fn range(range: &RangeArgs, now: DateTime<Utc>) -> Result<TimeRange> {
    let since = range.since.as_deref().map(|s| when(s, now)).transpose()?;
    let until = range.until.as_deref().map(|s| when(s, now)).transpose()?;
    Ok((since, until))
}

pub async fn query(storage: &Storage, global: &Global, command: &QueryCommand) -> Result<()> {
    match command {
        QueryCommand::Metrics(args) => query_metrics(storage, global, args).await,
        QueryCommand::Alerts(args) => query_alerts(storage, global, args).await,
        QueryCommand::Agents(args) => query_agents(storage, global, args).await,
    }
}

async fn query_metrics(storage: &Storage, global: &Global, args: &MetricsQueryArgs) -> Result<()> {
    let now = aimon::time::now();
    let (start, end) = range(&args.range, now)?;
    let query = MetricQuery {
        name: args.name.clone(),
        metric_type: args.metric_type,
        start,
        end,
        tags: parse::tag_set(args.tag.iter().cloned()).map_err(CliError::new)?,
        options: options(&args.page),
        series_only: false,
    };
    let metrics = storage
        .manager
        .query_metrics(&query, storage.name())
        .await?;
    if global.json {
        return output::json(&metrics);
    }
    let mut table = output::table(
        &[
            "id",
            "name",
            "type",
            "unit",
            "samples",
            "first",
            "last",
            "last value",
            "tags",
        ],
        &["samples", "last value"],
    );
    for m in &metrics {
        let last = m.values.last();
        table.add_row(vec![
            m.id.clone(),
            m.name.clone(),
            m.metric_type.to_string(),
            m.unit.clone().unwrap_or_default(),
            thousands(m.values.len() as u64),
            output::opt_time(m.values.first().map(|v| v.timestamp)),
            output::opt_time(last.map(|v| v.timestamp)),
            last.map_or_else(|| "-".to_owned(), |v| number(v.value)),
            last.map(|v| output::tags(&v.tags)).unwrap_or_default(),
        ]);
    }
    output::line(table);
    output::line(format!("{} series", metrics.len()));
    Ok(())
}

async fn query_alerts(storage: &Storage, global: &Global, args: &AlertsQueryArgs) -> Result<()> {
    let now = aimon::time::now();
    let (start, end) = range(&args.range, now)?;
    let query = AlertQuery {
        status: args.status,
        severity: args.severity,
        min_severity: args.min_severity,
        source: args.source.clone(),
        start,
        end,
        labels: parse::tag_set(args.label.iter().cloned()).map_err(CliError::new)?,
        options: options(&args.page),
    };
    let alerts = storage.manager.query_alerts(&query, storage.name()).await?;
    if global.json {
        return output::json(&alerts);
    }
    output::line(alerts_table(&alerts, now));
    output::line(format!("{} alerts", alerts.len()));
    Ok(())
}

async fn query_agents(storage: &Storage, global: &Global, args: &AgentsQueryArgs) -> Result<()> {
    let now = aimon::time::now();
    let query = AgentStateQuery {
        status: args.status.clone(),
        last_heartbeat_after: args.since.as_deref().map(|s| when(s, now)).transpose()?,
        options: options(&args.page),
    };
    let states = storage
        .manager
        .get_agent_states(&query, storage.name())
        .await?;
    if global.json {
        return output::json(&states);
    }
    let mut table = output::table(&["agent", "status", "last heartbeat", "", "metrics"], &[]);
    for s in &states {
        let metrics = s
            .metrics
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ");
        table.add_row(vec![
            s.agent_id.clone(),
            s.status.clone(),
            output::time(s.last_heartbeat),
            output::ago(s.last_heartbeat, now),
            metrics,
        ]);
    }
    output::line(table);
    output::line(format!("{} agents", states.len()));
    Ok(())
}

pub async fn history(storage: &Storage, global: &Global, args: &HistoryArgs) -> Result<()> {
    let now = aimon::time::now();
    let start = when(&args.since, now)?;
    let end = args.until.as_deref().map_or(Ok(now), |s| when(s, now))?;
    let query = HistoryQuery {
        name: args.name.clone(),
        start: Some(start),
        end: Some(end),
        step: args.step,
        aggregation: args.agg,
        tags: parse::tag_set(args.tag.iter().cloned()).map_err(CliError::new)?,
        group_by: args.group_by.clone(),
    };
    let series = storage
        .manager
        .get_metric_history(&query, storage.name())
        .await?;
    if global.json {
        return output::json(&series);
    }
    if series.iter().all(|s| s.buckets.is_empty()) {
        output::line(format!(
            "No samples of {} between {} and {}.",
            args.name,
            output::time(start),
            output::time(end)
        ));
        return Ok(());
    }
    let group_name = |g: &Option<String>| g.clone().unwrap_or_else(|| "(none)".to_owned());
    if args.group_by.is_none() {
        let mut table = output::table(
            &["bucket", args.agg.as_str(), "count"],
            &[args.agg.as_str(), "count"],
        );
        for b in series.iter().flat_map(|s| &s.buckets) {
            table.add_row(vec![
                output::time(b.start),
                number(b.value),
                thousands(b.count),
            ]);
        }
        output::line(table);
    } else {
        // One column per group, one row per bucket.
        let groups: Vec<String> = series.iter().map(|s| group_name(&s.group)).collect();
        let mut rows: BTreeMap<DateTime<Utc>, Vec<String>> = BTreeMap::new();
        for (i, s) in series.iter().enumerate() {
            for b in &s.buckets {
                rows.entry(b.start)
                    .or_insert_with(|| vec![String::new(); groups.len()])[i] = number(b.value);
            }
        }
        let mut header = vec!["bucket".to_owned()];
        header.extend(groups.iter().cloned());
        let right: Vec<&str> = groups.iter().map(String::as_str).collect();
        let mut table = output::table(&header, &right);
        for (start, values) in rows {
            let mut row = vec![output::time(start)];
            row.extend(values);
            table.add_row(row);
        }
        output::line(table);
    }
    const CHARTED: usize = 4;
    for s in series.iter().take(CHARTED) {
        let points: Vec<_> = s.buckets.iter().map(|b| (b.start, b.value)).collect();
        let title = match &args.group_by {
            Some(tag) => format!(
                "{} {} per {}s, {tag}={}",
                args.name,
                args.agg,
                args.step.as_seconds_f64(),
                group_name(&s.group)
            ),
            None => format!(
                "{} {} per {}s",
                args.name,
                args.agg,
                args.step.as_seconds_f64()
            ),
        };
        output::line(chart::render(&title, &points, 64, 8));
    }
    if series.len() > CHARTED {
        output::line(format!(
            "({} more groups not charted)",
            series.len() - CHARTED
        ));
    }
    Ok(())
}

pub async fn stats(storage: &Storage, global: &Global) -> Result<()> {
    let names = match storage.name() {
        Some(name) => vec![name.to_owned()],
        None => storage.manager.backend_names(),
    };
    let mut all = Vec::new();
    for name in &names {
        all.push(storage.manager.get_database_stats(Some(name)).await?);
    }
    if global.json {
        let rows: Vec<StatsJson<'_>> = all
            .iter()
            .map(|stats| StatsJson {
                stats,
                bytes_per_sample: stats.bytes_per_sample(),
            })
            .collect();
        return output::json(&rows);
    }
    for table in stats_tables(&all, None) {
        output::line(table);
    }
    Ok(())
}

/// One backend's `stats` as `aimon stats --json` prints it: the backend's answer as it gives
/// it (`size_bytes` included, `null` where unknown), plus `bytes_per_sample`.
#[derive(Debug, Serialize)]
struct StatsJson<'a> {
    #[serde(flatten)]
    stats: &'a aimon::DatabaseStats,
    bytes_per_sample: Option<f64>,
}

/// The widest a stats table is drawn when the output is not a terminal (a pipe, a file, a
/// test): wide enough for the common figures, narrow enough to read.
const STATS_WIDTH: u16 = 120;

/// `aimon stats` as tables: one row per backend with the figures every backend has, then, if
/// any backend has backend-specific figures (`extra`), one row per figure (backend, key,
/// value), nested objects as dotted keys (`alerts_collection.points`). Both fit the terminal,
/// or [`STATS_WIDTH`] columns off a terminal (or `width`, if given): a long value wraps in its
/// cell rather than making every line hundreds of characters wide.
fn stats_tables(all: &[aimon::DatabaseStats], width: Option<u16>) -> Vec<comfy_table::Table> {
    let fit = |table: &mut comfy_table::Table| {
        let width = width.or(table.width()).unwrap_or(STATS_WIDTH);
        table.set_width(width);
    };
    let mut figures = output::table(
        &[
            "backend",
            "type",
            "version",
            "uptime s",
            "series",
            "samples",
            "alerts",
            "agent states",
            "size",
            "bytes/sample",
        ],
        &[
            "uptime s",
            "series",
            "samples",
            "alerts",
            "agent states",
            "size",
            "bytes/sample",
        ],
    );
    fit(&mut figures);
    let mut extra = output::table(&["backend", "key", "value"], &[]);
    fit(&mut extra);
    for s in all {
        figures.add_row(vec![
            s.backend.clone(),
            s.backend_type.to_string(),
            s.version.clone(),
            s.uptime_seconds.to_string(),
            thousands(s.series),
            thousands(s.samples),
            thousands(s.alerts),
            thousands(s.agent_states),
            s.size_bytes
                .map(footprint::bytes)
                .unwrap_or_else(|| "unknown".to_owned()),
            s.bytes_per_sample()
                .map(footprint::per_sample)
                .unwrap_or_else(|| "-".to_owned()),
        ]);
        let mut rows = Vec::new();
        for (key, value) in &s.extra {
            flatten_extra(key, value, &mut rows);
        }
        for (key, value) in rows {
            extra.add_row(vec![s.backend.clone(), key, value]);
        }
    }
    if extra.row_count() == 0 {
        vec![figures]
    } else {
        vec![figures, extra]
    }
}

/// One `(key, value)` per leaf of an extra figure: an object's members become `key.member`
/// (recursively), a string is shown without quotes, anything else as compact JSON.
fn flatten_extra(key: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(members) if !members.is_empty() => {
            for (member, value) in members {
                flatten_extra(&format!("{key}.{member}"), value, out);
            }
        }
        serde_json::Value::String(text) => out.push((key.to_owned(), text.clone())),
        other => out.push((key.to_owned(), other.to_string())),
    }
}

#[derive(Debug, Serialize)]
struct Transfer<'a> {
    operation: &'static str,
    path: String,
    elapsed_seconds: f64,
    #[serde(flatten)]
    report: &'a TransferReport,
}

fn format(native: bool) -> BackupFormat {
    if native {
        BackupFormat::Native
    } else {
        BackupFormat::Portable
    }
}

fn transfer_table(rows: &[Transfer<'_>]) -> comfy_table::Table {
    let mut table = output::table(
        &[
            "operation",
            "format",
            "series",
            "samples",
            "alerts",
            "agent states",
            "expired",
            "bytes",
            "seconds",
        ],
        &[
            "series",
            "samples",
            "alerts",
            "agent states",
            "expired",
            "bytes",
            "seconds",
        ],
    );
    for t in rows {
        let format = match t.report.format {
            BackupFormat::Portable => "portable",
            BackupFormat::Native => "native",
        };
        table.add_row(vec![
            t.operation.to_owned(),
            format.to_owned(),
            thousands(t.report.series),
            thousands(t.report.samples),
            thousands(t.report.alerts),
            thousands(t.report.agent_states),
            thousands(t.report.expired),
            thousands(t.report.bytes),
            format!("{:.2}", t.elapsed_seconds),
        ]);
    }
    table
}

fn print_transfers(global: &Global, rows: &[Transfer<'_>]) -> Result<()> {
    if global.json {
        return if let [one] = rows {
            output::json(one)
        } else {
            output::json(rows)
        };
    }
    output::line(transfer_table(rows));
    Ok(())
}

pub async fn backup(storage: &Storage, global: &Global, args: &TransferArgs) -> Result<()> {
    let started = Instant::now();
    let report = storage
        .manager
        .backup_database(&args.path, format(args.native), storage.name())
        .await?;
    print_transfers(
        global,
        &[Transfer {
            operation: "backup",
            path: args.path.display().to_string(),
            elapsed_seconds: started.elapsed().as_secs_f64(),
            report: &report,
        }],
    )
}

fn require_existing(path: &Path) -> Result<()> {
    if path.exists() {
        Ok(())
    } else {
        Err(CliError::new(format!(
            "backup {} does not exist",
            path.display()
        )))
    }
}

pub async fn restore(storage: &Storage, global: &Global, args: &TransferArgs) -> Result<()> {
    require_existing(&args.path)?;
    let started = Instant::now();
    let report = storage
        .manager
        .restore_database(&args.path, format(args.native), storage.name())
        .await?;
    print_transfers(
        global,
        &[Transfer {
            operation: "restore",
            path: args.path.display().to_string(),
            elapsed_seconds: started.elapsed().as_secs_f64(),
            report: &report,
        }],
    )
}

pub async fn migrate(global: &Global, args: &MigrateArgs) -> Result<()> {
    let source = aimon::open_url("source", &args.from).await?;
    let target = match aimon::open_url("target", &args.to).await {
        Ok(target) => target,
        Err(e) => {
            let _ = source.close().await;
            return Err(e.into());
        }
    };
    let result = copy(source.as_ref(), target.as_ref()).await;
    let closed = (source.close().await, target.close().await);
    let (backed_up, restored, backup_s, restore_s) = result?;
    closed.0?;
    closed.1?;
    let from = aimon::redact_url(&args.from);
    let to = aimon::redact_url(&args.to);
    let rows = [
        Transfer {
            operation: "backup",
            path: from.clone(),
            elapsed_seconds: backup_s,
            report: &backed_up,
        },
        Transfer {
            operation: "restore",
            path: to.clone(),
            elapsed_seconds: restore_s,
            report: &restored,
        },
    ];
    if global.json {
        return output::json(&serde_json::json!({
            "from": from,
            "to": to,
            "backup": rows[0],
            "restore": rows[1],
        }));
    }
    output::line(format!("Migrated {from} -> {to}"));
    output::line(transfer_table(&rows));
    Ok(())
}

/// Streams everything from `source` into `target` through a portable archive in a temporary
/// directory.
async fn copy(
    source: &dyn StorageBackend,
    target: &dyn StorageBackend,
) -> Result<(TransferReport, TransferReport, f64, f64)> {
    let dir = tempfile::tempdir()?;
    let archive = dir.path().join("archive");
    let started = Instant::now();
    let backed_up = source.backup(&archive, BackupFormat::Portable).await?;
    let backup_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let restored = target.restore(&archive, BackupFormat::Portable).await?;
    Ok((
        backed_up,
        restored,
        backup_s,
        started.elapsed().as_secs_f64(),
    ))
}

pub async fn retention_apply(storage: &Storage, global: &Global) -> Result<()> {
    let report = storage.manager.apply_retention(storage.name()).await?;
    if global.json {
        return output::json(&report);
    }
    let mut table = output::table(&["removed", "count"], &["count"]);
    for (what, n) in [
        ("samples", report.samples_removed),
        ("series", report.series_removed),
        ("alerts", report.alerts_removed),
        ("agent states", report.agent_states_removed),
    ] {
        table.add_row(vec![what.to_owned(), thousands(n)]);
    }
    output::line(table);
    Ok(())
}

#[derive(Debug, Serialize)]
struct BackendRow {
    backend_type: String,
    schemes: Vec<&'static str>,
    feature: &'static str,
    available: bool,
}

pub fn backends(global: &Global) -> Result<()> {
    let rows: Vec<BackendRow> = aimon::descriptors()
        .into_iter()
        .map(|d| BackendRow {
            backend_type: d.backend_type.to_string(),
            schemes: d.backend_type.schemes().to_vec(),
            feature: d.feature,
            available: d.available,
        })
        .collect();
    if global.json {
        return output::json(&rows);
    }
    let mut table = output::table(
        &["backend", "URL schemes", "cargo feature", "available"],
        &[],
    );
    for r in &rows {
        table.add_row(vec![
            r.backend_type.clone(),
            r.schemes.join(", "),
            r.feature.to_owned(),
            if r.available { "yes" } else { "no" }.to_owned(),
        ]);
    }
    output::line(table);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stats(name: &str, extra: serde_json::Value) -> aimon::DatabaseStats {
        aimon::DatabaseStats {
            backend: name.to_owned(),
            backend_type: aimon::StorageBackendType::Qdrant,
            version: "1.19.0".to_owned(),
            uptime_seconds: 86_400,
            series: 12,
            samples: 1_036_800,
            alerts: 200,
            agent_states: 24,
            size_bytes: Some(50_593_792),
            extra: serde_json::from_value(extra).unwrap(),
        }
    }

    fn rendered(all: &[aimon::DatabaseStats]) -> Vec<String> {
        stats_tables(all, Some(STATS_WIDTH))
            .into_iter()
            .map(|t| t.to_string())
            .collect()
    }

    /// `cargo build -p aimon-cli` (no dev-dependencies, so no feature the integration tests
    /// turn on) opens `qdrant://` servers: `qdrant` is one of the crate's default features.
    #[test]
    // A failed test, not a build error: `cargo test --no-default-features` must still build.
    #[allow(clippy::assertions_on_constants)]
    fn the_default_features_have_the_qdrant_server_mode() {
        assert!(cfg!(feature = "qdrant"), "qdrant is not a default feature");
    }

    #[test]
    fn extra_figures_are_rows_of_their_own_table() {
        let all = [stats(
            "cluster",
            json!({
                "endpoint": "http://node-1:6334",
                "alerts_collection": {"points": 200, "replication_factor": 2, "on_disk_payload": true},
                "empty": {},
                "list": [1, 2],
            }),
        )];
        let tables = rendered(&all);
        assert_eq!(tables.len(), 2, "{tables:?}");
        assert!(!tables[0].contains("endpoint"), "{}", tables[0]);
        assert!(tables[0].contains("1,036,800"), "{}", tables[0]);
        for row in [
            "endpoint",
            "http://node-1:6334",
            "alerts_collection.points",
            "alerts_collection.replication_factor",
            "alerts_collection.on_disk_payload",
            "[1,2]",
            "{}",
        ] {
            assert!(tables[1].contains(row), "{row} missing: {}", tables[1]);
        }
        // A string is shown as itself, not as JSON with quotes.
        assert!(!tables[1].contains("\"http"), "{}", tables[1]);
    }

    #[test]
    fn the_size_and_bytes_per_sample_are_columns_of_the_figures() {
        let mut unknown = stats("hot", json!({}));
        unknown.size_bytes = None;
        let tables = rendered(&[stats("cold", json!({})), unknown]);
        assert!(tables[0].contains("bytes/sample"), "{}", tables[0]);
        // 50,593,792 bytes over 1,036,800 samples.
        assert!(tables[0].contains("48.2 MiB"), "{}", tables[0]);
        assert!(tables[0].contains("48.8"), "{}", tables[0]);
        let hot = tables[0].lines().find(|l| l.contains("hot")).unwrap();
        assert!(hot.contains("unknown"), "{hot}");
    }

    #[test]
    fn stats_json_adds_bytes_per_sample_to_the_backends_answer() {
        let stats = stats("cold", json!({"path": "/x"}));
        let row = serde_json::to_value(StatsJson {
            stats: &stats,
            bytes_per_sample: stats.bytes_per_sample(),
        })
        .unwrap();
        assert_eq!(row["size_bytes"], 50_593_792);
        assert_eq!(row["bytes_per_sample"], 50_593_792.0 / 1_036_800.0);
        assert_eq!(row["samples"], 1_036_800);
        assert_eq!(row["extra"]["path"], "/x");
    }

    #[test]
    fn no_extra_figures_no_second_table() {
        let tables = rendered(&[stats("m", json!({}))]);
        assert_eq!(tables.len(), 1);
    }

    #[test]
    fn long_values_wrap_within_the_width() {
        let long = "x".repeat(600);
        let mut wide = stats(
            "a-backend-with-a-rather-long-configured-name",
            json!({
                "path": format!("/var/lib/{}/aimon.db", "deep/".repeat(60)),
                "server_uptime_unknown": format!("qdrant REST /telemetry 403 Forbidden: {long}"),
                "samples_collection": {"name": "aimon_samples", "points": 1_036_800u64},
            }),
        );
        wide.version =
            "PostgreSQL 15.14 (Debian 15.14-0+deb12u1) on x86_64-pc-linux-gnu, compiled by gcc"
                .to_owned();
        let tables = rendered(&[wide, stats("second", json!({"mode": "embedded"}))]);
        for table in &tables {
            for line in table.lines() {
                assert!(
                    line.chars().count() <= usize::from(STATS_WIDTH),
                    "{} columns: {line}",
                    line.chars().count()
                );
            }
        }
        // Nothing is cut: the long value is all there, over several lines.
        let xs: usize = tables[1].matches('x').count();
        assert!(xs >= 600, "{xs}");
    }
}
