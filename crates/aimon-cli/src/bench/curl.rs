//! The `--compare-curl` baseline: `curl` posting the same line protocol to InfluxDB's `/write`,
//! in rounds that take turns with aimon's writes.

use std::time::Instant;

use super::{ToolRun, Workload, round_batches};
use crate::error::{CliError, Result};

/// How many interleaved rounds `--compare-curl` takes turns in (even; fewer if there are
/// fewer batches).
pub(super) const CURL_ROUNDS: u64 = 6;

/// `--compare-curl`: one `curl -K` per round posting that round's batches (the lines
/// `save_metrics` writes, gzip) to `/write` of the same server, into a fresh database with the
/// same retention policies, dropped at the end. The files are written before any timing.
pub(super) struct CurlBaseline {
    store: aimon::Contract<aimon::influxdb::InfluxBackend>,
    dir: tempfile::TempDir,
    /// One curl config per round.
    configs: Vec<std::path::PathBuf>,
    tool: String,
    command: String,
    samples: u64,
}

impl CurlBaseline {
    pub(super) async fn prepare(
        url: &str,
        run: &str,
        workload: &Workload,
        batch: u64,
    ) -> Result<Self> {
        use aimon::influxdb::InfluxBackend;
        let version = std::process::Command::new("curl")
            .arg("--version")
            .output()
            .map_err(curl_error)?;
        let tool = String::from_utf8_lossy(&version.stdout)
            .lines()
            .next()
            .unwrap_or("curl")
            .split(" (")
            .next()
            .unwrap_or("curl")
            .to_owned();
        let database = format!("aimon_curl_baseline_{run}");
        let mut parsed = url::Url::parse(url)
            .map_err(|e| CliError::new(format!("--compare-curl: not a URL: {e}")))?;
        parsed.set_path(&format!("/{database}"));
        let config = aimon::StorageConfig::from_url("curl-baseline", parsed.as_str())?;
        let store = aimon::Contract::new(InfluxBackend::connect(&config).await?);
        match Self::write_files(&store, workload, batch) {
            Ok((dir, configs, command)) => Ok(CurlBaseline {
                store,
                dir,
                configs,
                tool,
                command,
                samples: workload.samples,
            }),
            Err(e) => {
                drop_baseline_database(&store).await;
                Err(e)
            }
        }
    }

    /// The gzip batch files and one curl config per round; returns them with the command
    /// as reported.
    fn write_files(
        store: &aimon::influxdb::InfluxBackend,
        workload: &Workload,
        batch: u64,
    ) -> Result<(tempfile::TempDir, Vec<std::path::PathBuf>, String)> {
        use std::io::Write;
        let aimon::influxdb::ApiSettings::V1 {
            retention_policy,
            username,
            password,
            ..
        } = &store.config().api
        else {
            return Err(CliError::new(
                "--compare-curl needs an influxdb:// (v1) store",
            ));
        };
        // The store's database is the baseline's own (`prepare` opened it so).
        let write_url = store.config().samples_write_url().ok_or_else(|| {
            CliError::new("--compare-curl: cannot build the write URL of the store")
        })?;
        let dir = tempfile::tempdir()?;
        let batches = workload.samples.div_ceil(batch);
        // An even number of rounds (one when there is a single batch), so each tool goes
        // first as often as the other.
        let rounds = match CURL_ROUNDS.min(batches) {
            0 | 1 => 1,
            n => n - n % 2,
        };
        let mut configs = Vec::new();
        for round in 0..rounds {
            let mut conf = String::new();
            for n in round_batches(batches, rounds, round) {
                let (start, end) = (n * batch, ((n + 1) * batch).min(workload.samples));
                let lines = aimon::influxdb::sample_lines(&workload.batch(start..end))?;
                let file = dir.path().join(format!("batch{n:06}.lp.gz"));
                let mut gz = flate2::write::GzEncoder::new(
                    std::fs::File::create(&file)?,
                    flate2::Compression::fast(),
                );
                gz.write_all(lines.as_bytes())?;
                gz.finish()?;
                if !conf.is_empty() {
                    conf.push_str("next\n");
                }
                conf.push_str(&format!(
                    "url = \"{write_url}\"\ndata-binary = \"@{}\"\nheader = \"Content-Encoding: gzip\"\nsilent\nshow-error\nfail\nfail-early\n",
                    file.display()
                ));
                if let Some(user) = username {
                    let secret = password.as_ref().map(|p| p.expose()).unwrap_or("");
                    conf.push_str(&format!(
                        "user = \"{}:{}\"\n",
                        curl_config_quoted(user),
                        curl_config_quoted(secret)
                    ));
                }
            }
            // The config file holds the credentials: readable by this user only.
            let path = dir.path().join(format!("curl{round}.conf"));
            let mut f = std::fs::OpenOptions::new();
            f.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut f, 0o600);
            f.open(&path)?.write_all(conf.as_bytes())?;
            configs.push(path);
        }
        let command = format!(
            "curl -K curlR.conf  # round R of {rounds}, taking turns with aimon's; {batches} × (url = \"{}/write?db=DB&rp={retention_policy}&precision=u\", data-binary = \"@batchN.lp.gz\", header = \"Content-Encoding: gzip\", next)",
            store.config().base_url.as_str().trim_end_matches('/')
        );
        Ok((dir, configs, command))
    }

    pub(super) fn rounds(&self) -> u64 {
        self.configs.len() as u64
    }

    /// Posts round `round`'s batches; returns its seconds.
    pub(super) fn round(&self, round: u64) -> Result<f64> {
        let config = &self.configs[round as usize];
        let started = Instant::now();
        let finished = std::process::Command::new("curl")
            .arg("-K")
            .arg(config)
            .current_dir(self.dir.path())
            .output()
            .map_err(curl_error)?;
        let seconds = started.elapsed().as_secs_f64();
        if !finished.status.success() {
            return Err(CliError::new(format!(
                "curl failed: {}",
                String::from_utf8_lossy(&finished.stderr).trim()
            )));
        }
        Ok(seconds)
    }

    /// Checks that every sample arrived and drops the database; returns the run (its
    /// seconds the sum of the rounds) and each round's seconds.
    pub(super) async fn finish(self, rounds_seconds: Vec<f64>) -> Result<(ToolRun, Vec<f64>)> {
        use aimon::StorageBackend;
        // The baseline database measured as aimon's store is (its shards' diskBytes).
        let checked = match self.store.stats().await {
            Ok(stats) if stats.samples == self.samples => Ok(stats.bytes_per_sample()),
            Ok(stats) => Err(CliError::new(format!(
                "curl loaded {} points, expected {}",
                stats.samples, self.samples
            ))),
            Err(e) => Err(e.into()),
        };
        self.store.drop_database().await?;
        let bytes_per_sample = checked?;
        let seconds: f64 = rounds_seconds.iter().sum();
        Ok((
            ToolRun {
                tool: self.tool,
                command: self.command,
                seconds,
                samples_per_second: self.samples as f64 / seconds.max(1e-9),
                bytes_per_sample,
            },
            rounds_seconds,
        ))
    }

    /// Drops the database after a failed run.
    pub(super) async fn discard(self) {
        drop_baseline_database(&self.store).await;
    }
}

/// Drops the curl baseline's database; a failure is logged, not returned, as it comes after
/// the error or result that matters.
async fn drop_baseline_database(store: &aimon::influxdb::InfluxBackend) {
    if let Err(e) = store.drop_database().await {
        tracing::warn!(error = %e, "cannot drop the curl baseline's database");
    }
}

/// `s` escaped for a double-quoted value of a curl config file: backslash, quote and the
/// characters that would end or bend the line.
fn curl_config_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c => out.push(c),
        }
    }
    out
}

fn curl_error(e: std::io::Error) -> CliError {
    CliError::new(format!("cannot run curl for --compare-curl: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curl_config_values_cannot_break_their_line() {
        assert_eq!(curl_config_quoted("plain"), "plain");
        assert_eq!(
            curl_config_quoted("a\"b\\c\nd\re\tf\x0bg"),
            "a\\\"b\\\\c\\nd\\re\\tf\\vg"
        );
        assert!(!curl_config_quoted("x\ny\rz").contains(['\n', '\r']));
    }
}
