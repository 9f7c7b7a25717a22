//! The `--compare-psql` baseline: `psql \copy` of the same samples into a schema aimon made.

use std::time::Instant;

use chrono::TimeDelta;

use aimon::{Metric, MetricType};

use super::{METRIC_NAME, ToolRun, Workload};
use crate::error::{CliError, Result};

/// Loads the workload's samples with `psql -c "\copy … FROM file"` (CSV) into a fresh schema
/// of the same server that aimon created (the same partitioned table, partitions and indexes),
/// and compares its rate with aimon's. The schema is dropped afterwards.
pub(super) async fn psql_baseline(url: &str, run: &str, workload: &Workload) -> Result<ToolRun> {
    use std::io::Write;
    use std::process::Command;

    use aimon::StorageBackend;
    use aimon::postgres::PostgresBackend;

    let tool_error =
        |e: std::io::Error| CliError::new(format!("cannot run psql for --compare-psql: {e}"));
    let version = Command::new("psql")
        .arg("--version")
        .output()
        .map_err(tool_error)?;
    let tool = String::from_utf8_lossy(&version.stdout).trim().to_owned();
    let schema = format!("aimon_psql_baseline_{run}");
    let config =
        aimon::StorageConfig::from_url("psql-baseline", url)?.option("schema", schema.as_str());
    let store = aimon::Contract::new(PostgresBackend::connect(&config).await?);
    let result = async {
        // The series rows (and their keys) as aimon would have them; then the partitions.
        let series: Vec<Metric> = workload
            .ids
            .iter()
            .map(|id| Metric::new(id.clone(), METRIC_NAME, MetricType::Gauge))
            .collect();
        store.save_metrics(&series).await?;
        let end = workload.start
            + TimeDelta::microseconds(
                workload.spacing_us * workload.samples.div_ceil(workload.series) as i64,
            );
        store.prepare_partitions(workload.start, end).await?;
        let sids: std::collections::HashMap<String, i64> =
            store.series_keys().await?.into_iter().collect();
        // Native mode: rows of the head (tag set number, time, value), the tag sets
        // registered first; TimescaleDB: rows of the hypertable (series key, time, tags, value).
        let native = !store.is_timescale();
        let tsids = if native {
            let tagsets: Vec<(String, String)> = workload
                .ids
                .iter()
                .cloned()
                .zip(workload.tags_json())
                .collect();
            store.register_tagsets(&tagsets).await?
        } else {
            Vec::new()
        };

        let dir = tempfile::tempdir()?;
        let csv = dir.path().join("samples.csv");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&csv)?);
        let tags = workload.csv_tags();
        for i in 0..workload.samples {
            let (s, timestamp, value) = workload.sample(i);
            if native {
                writeln!(out, "{},{},{value}", tsids[s], aimon::time::format(timestamp))?;
            } else {
                writeln!(
                    out,
                    "{},{},{},{value}",
                    sids[&workload.ids[s]],
                    aimon::time::format(timestamp),
                    tags[s]
                )?;
            }
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;

        let command = format!(
            "\\copy {} FROM '{}' WITH (FORMAT csv)",
            store.samples_copy_target(),
            csv.display()
        );
        // The password reaches psql through PGPASSWORD, never its command line.
        let (libpq_url, password) = store.config().libpq_url_and_password();
        let mut psql = Command::new("psql");
        psql.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(libpq_url)
            .arg("-c")
            .arg(&command)
            .env_remove("PGPASSWORD");
        if let Some(password) = password {
            psql.env("PGPASSWORD", password.expose());
        }
        let started = Instant::now();
        let finished = psql.output().map_err(tool_error)?;
        let seconds = started.elapsed().as_secs_f64();
        if !finished.status.success() {
            return Err(CliError::new(format!(
                "psql \\copy failed: {}",
                String::from_utf8_lossy(&finished.stderr).trim()
            )));
        }
        let stats = store.stats().await?;
        if stats.samples != workload.samples {
            return Err(CliError::new(format!(
                "psql loaded {} rows, expected {}",
                stats.samples, workload.samples
            )));
        }
        let samples_per_second = workload.samples as f64 / seconds.max(1e-9);
        Ok(ToolRun {
            tool,
            command: if native {
                "psql -c \"\\copy SCHEMA.samples (tsid, time, value) FROM 'samples.csv' WITH (FORMAT csv)\""
            } else {
                "psql -c \"\\copy SCHEMA.samples (sid, time, tags, value) FROM 'samples.csv' WITH (FORMAT csv)\""
            }
            .to_owned(),
            seconds,
            samples_per_second,
            // The baseline schema measured as aimon's store is: its relations' sizes.
            bytes_per_sample: stats.bytes_per_sample(),
        })
    }
    .await;
    store.drop_schema().await?;
    result
}
