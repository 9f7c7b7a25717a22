//! Backups: the portable archive (through [`aimon_core::archive`]), and PostgreSQL's own
//! format, a `pg_dump` of the store's schema.
//!
//! A native backup is a directory: `manifest.json` (format, version, the dumped schema, the
//! store's mode, the `pg_dump` version) and `dump.sql`, a plain-format `pg_dump --schema` taken
//! in one snapshot. In TimescaleDB mode the hypertable's rows, which live in chunks outside the
//! schema, are copied out in that same snapshot and spliced into the dump's `COPY` of `samples`
//! (`dump_with_hypertable_rows`), so the dump restores like any other.
//! A native restore merges, like every restore: `psql` loads the dump into a scratch schema
//! (the dump's schema name rewritten on its SQL lines, never inside `COPY` data), the rows are
//! merged into this store with the write rules (rule 1, 4, 5 keys; retention applied), in one
//! transaction, and the scratch schema is dropped. A path that is not such a directory is
//! `Corrupted`; a missing one `NotFound`; either leaves the store untouched.
//! The credentials reach `pg_dump`/`psql` through `PGPASSWORD`, never their command line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use aimon_core::archive::find_on_path;
use aimon_core::{BackupFormat, Error, ErrorKind, Result, TransferReport, time};
use sqlx::{AssertSqlSafe, Row};

use crate::backend::{DbResult, PostgresBackend};
use crate::config::quote_ident;
use crate::error::count;
use crate::schema::MIGRATIONS;

/// The manifest's `format`.
const FORMAT: &str = "aimon-postgres-pg_dump";
/// The manifest's `version`.
const VERSION: u64 = 1;

/// `pg_dump` and `psql` on `PATH`, looked up once.
fn tools() -> Option<&'static (PathBuf, PathBuf)> {
    static TOOLS: OnceLock<Option<(PathBuf, PathBuf)>> = OnceLock::new();
    TOOLS
        .get_or_init(|| Some((find_on_path("pg_dump")?, find_on_path("psql")?)))
        .as_ref()
}

/// Whether the native format is offered: `pg_dump` and `psql` are on `PATH`.
pub(crate) fn native_available() -> bool {
    tools().is_some()
}

/// Whether `line` (outside `COPY` data) starts the `COPY` of the `samples` table in a plain
/// dump of one schema: `COPY <schema>.samples (sid, "time", tags, value) FROM stdin;`.
fn is_samples_copy(line: &str) -> bool {
    line.starts_with("COPY ")
        && line.contains(".samples (sid, ")
        && line.trim_end().ends_with("FROM stdin;")
}

/// Copies the plain dump `dump` to `out`, with the `COPY` block of `samples` (empty in a dump
/// of a TimescaleDB store: the hypertable's rows live in chunks outside its schema) filled
/// with `rows`, `COPY`'s text format. Fails when the dump has no such block or it is not empty.
fn splice_samples(dump: &Path, rows: &Path, out: &Path) -> std::result::Result<(), std::io::Error> {
    use std::io::{BufRead, BufReader, BufWriter, Write};
    let missing =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut reader = BufReader::new(std::fs::File::open(dump)?);
    let mut writer = BufWriter::new(std::fs::File::create(out)?);
    let mut line = String::new();
    let mut in_copy = false;
    let mut spliced = false;
    while reader.read_line(&mut line)? > 0 {
        if in_copy {
            if line.trim_end_matches(['\n', '\r']) == "\\." {
                in_copy = false;
            }
        } else if line.starts_with("COPY ") && line.trim_end().ends_with("FROM stdin;") {
            in_copy = true;
            if is_samples_copy(&line) && !spliced {
                writer.write_all(line.as_bytes())?;
                line.clear();
                reader.read_line(&mut line)?;
                if line.trim_end_matches(['\n', '\r']) != "\\." {
                    return Err(missing(
                        "pg_dump wrote rows into the hypertable's root table",
                    ));
                }
                std::io::copy(&mut std::fs::File::open(rows)?, &mut writer)?;
                spliced = true;
                in_copy = false;
            }
        }
        writer.write_all(line.as_bytes())?;
        line.clear();
    }
    if !spliced {
        return Err(missing("pg_dump wrote no COPY block for samples"));
    }
    writer.flush()
}

/// Rewrites the schema name `from` to `to` on the SQL lines of a plain dump, leaving the data
/// lines of `COPY … FROM stdin` blocks untouched.
pub(crate) fn rewrite_schema(dump: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(dump.len() + 1024);
    let mut in_copy = false;
    for line in dump.split_inclusive('\n') {
        if in_copy {
            if line.trim_end_matches(['\n', '\r']) == "\\." {
                in_copy = false;
            }
            out.push_str(line);
            continue;
        }
        if line.starts_with("COPY ") && line.trim_end().ends_with("FROM stdin;") {
            in_copy = true;
        }
        out.push_str(&replace_word(line, from, to));
    }
    out
}

/// Replaces the schema name `from` where it names the schema: qualifying an object
/// (`from.name`) or after `SCHEMA ` (`CREATE SCHEMA`, `ALTER SCHEMA`), as a whole identifier.
/// A table or column that happens to share the schema's name (a schema called `samples`) is
/// left alone.
fn replace_word(line: &str, from: &str, to: &str) -> String {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find(from) {
        let before_ok = rest[..i].chars().next_back().is_none_or(|c| !is_ident(c));
        let after = &rest[i + from.len()..];
        let names_schema = after.starts_with('.') || rest[..i].ends_with("SCHEMA ");
        out.push_str(&rest[..i]);
        out.push_str(if before_ok && names_schema { to } else { from });
        rest = after;
    }
    out.push_str(rest);
    out
}

async fn run_tool(mut command: tokio::process::Command, what: &str) -> Result<()> {
    let out = command
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| Error::new(ErrorKind::Backend, format!("cannot run {what}")).with_source(e))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
        Err(Error::new(
            ErrorKind::Backend,
            format!("{what} failed: {last}"),
        ))
    }
}

impl PostgresBackend {
    fn tool(&self, program: &Path) -> tokio::process::Command {
        let (url, password) = self.config.libpq_url_and_password();
        let mut command = tokio::process::Command::new(program);
        command.arg("-d").arg(url);
        if let Some(password) = password {
            command.env("PGPASSWORD", password.expose());
        }
        command
    }

    pub(crate) async fn native_backup(&self, path: &Path) -> Result<TransferReport> {
        let Some((pg_dump, _)) = tools() else {
            return Err(Error::unsupported(
                "the native backup format (pg_dump and psql on PATH)",
            ));
        };
        if path.exists() && std::fs::read_dir(path)?.next().is_some() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("{} exists and is not empty", path.display()),
            ));
        }
        std::fs::create_dir_all(path)?;
        let dump = path.join("dump.sql");
        let mut command = self.tool(pg_dump);
        command
            .args([
                "--format=plain",
                "--no-owner",
                "--no-privileges",
                "--schema",
            ])
            .arg(quote_ident(&self.config.schema));
        if self.timescale {
            self.dump_with_hypertable_rows(command, path, &dump).await?;
        } else {
            command.arg("-f").arg(&dump);
            run_tool(command, "pg_dump").await?;
        }
        let version = std::process::Command::new(pg_dump)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let stats = self.database_stats().await?;
        let manifest = serde_json::json!({
            "format": FORMAT,
            "version": VERSION,
            "schema": self.config.schema,
            "mode": if self.timescale { "timescaledb" } else { "native_partitions" },
            "pg_dump": version,
            "created_at": time::format(time::now()),
        });
        std::fs::write(
            path.join("manifest.json"),
            serde_json::to_vec_pretty(&manifest)?,
        )?;
        Ok(TransferReport {
            format: BackupFormat::Native,
            series: stats.series,
            samples: stats.samples,
            alerts: stats.alerts,
            agent_states: stats.agent_states,
            expired: 0,
            bytes: std::fs::metadata(&dump)?.len(),
        })
    }

    /// TimescaleDB mode: `pg_dump` of the schema holds the hypertable's definition but none of
    /// its rows (they live in chunks in TimescaleDB's own schemas, with the catalog that makes
    /// them a hypertable, which a dump of one schema cannot carry). So the dump runs in a
    /// snapshot this store exports (`pg_dump --snapshot`), a read-only repeatable-read
    /// transaction that meanwhile copies the hypertable's rows (decompressed) out with
    /// `COPY … TO STDOUT`, and they are spliced into the dump's `COPY` block of `samples`. The
    /// result is a plain dump whose `samples` table holds every row, in one snapshot with the
    /// other tables, and which restores like a native-mode dump (into either mode).
    async fn dump_with_hypertable_rows(
        &self,
        mut command: tokio::process::Command,
        dir: &Path,
        dump: &Path,
    ) -> Result<()> {
        use futures::StreamExt as _;
        use tokio::io::AsyncWriteExt as _;

        let raw = dir.join("dump.sql.part");
        let rows = dir.join("samples.copy.part");
        let mut tx = self.read_tx().await?;
        let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
            .fetch_one(&mut *tx)
            .await
            .db()?;
        command.arg(format!("--snapshot={snapshot}"));
        command.arg("-f").arg(&raw);
        let copied = async {
            let mut file = tokio::fs::File::create(&rows).await?;
            let mut stream = tx
                .copy_out_raw("COPY (SELECT sid, time, tags, value FROM samples) TO STDOUT")
                .await
                .db()?;
            while let Some(chunk) = stream.next().await {
                file.write_all(&chunk.db()?).await?;
            }
            file.flush().await?;
            Ok::<(), Error>(())
        };
        // The exporting transaction stays open until pg_dump has taken its snapshot: both run
        // together, and the transaction ends after both.
        let (dumped, copied) = tokio::join!(run_tool(command, "pg_dump"), copied);
        let ended = tx.commit().await.db();
        let spliced = match (dumped, copied, ended) {
            (Ok(()), Ok(()), Ok(())) => {
                let (raw, rows, dump) = (raw.clone(), rows.clone(), dump.to_path_buf());
                tokio::task::spawn_blocking(move || splice_samples(&raw, &rows, &dump))
                    .await
                    .map_err(|e| {
                        Error::new(ErrorKind::Backend, format!("the dump splice failed: {e}"))
                    })?
                    .map_err(|e| {
                        Error::new(
                            ErrorKind::Backend,
                            "cannot add the hypertable's rows to the dump",
                        )
                        .with_source(e)
                    })
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
        };
        let _ = std::fs::remove_file(&raw);
        let _ = std::fs::remove_file(&rows);
        spliced
    }

    pub(crate) async fn native_restore(&self, path: &Path) -> Result<TransferReport> {
        let Some((_, psql)) = tools() else {
            return Err(Error::unsupported(
                "the native backup format (pg_dump and psql on PATH)",
            ));
        };
        if !path.exists() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no backup at {}", path.display()),
            ));
        }
        let not_ours =
            || Error::corrupted(format!("{} is not an aimon pg_dump backup", path.display()));
        if !path.is_dir() {
            return Err(not_ours());
        }
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(path.join("manifest.json")).map_err(|_| not_ours())?,
        )
        .map_err(|_| not_ours())?;
        if manifest["format"] != FORMAT {
            return Err(not_ours());
        }
        if manifest["version"].as_u64() != Some(VERSION) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "native backup version {} is not {VERSION}",
                    manifest["version"]
                ),
            ));
        }
        let source = manifest["schema"]
            .as_str()
            .filter(|s| crate::config::check_schema(s).is_ok())
            .ok_or_else(not_ours)?
            .to_owned();
        let dump = std::fs::read_to_string(path.join("dump.sql")).map_err(|_| not_ours())?;
        if !dump.starts_with("--\n-- PostgreSQL database dump") {
            return Err(not_ours());
        }
        let scratch = format!(
            "aimon_restore_{}_{}",
            std::process::id(),
            time::to_micros(time::now())
        );
        let dir = tempfile_dir(path)?;
        let rewritten = dir.join(format!("{scratch}.sql"));
        std::fs::write(&rewritten, rewrite_schema(&dump, &source, &scratch))?;
        let mut command = self.tool(psql);
        command
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "--single-transaction",
                "-f",
            ])
            .arg(&rewritten);
        let loaded = run_tool(command, "psql").await;
        let _ = std::fs::remove_file(&rewritten);
        let merged = match loaded {
            Ok(()) => self.merge_schema(&scratch).await,
            Err(e) => Err(Error::corrupted("the dump does not load").with_source(e)),
        };
        // Audited: a name built here from digits, quoted.
        let _ = sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote_ident(&scratch)
        )))
        .execute(&self.pool)
        .await;
        let mut report = merged?;
        report.bytes = dump.len() as u64;
        Ok(report)
    }

    /// Merges the aimon tables of schema `from` into this store, in one transaction.
    async fn merge_schema(&self, from: &str) -> Result<TransferReport> {
        let s = quote_ident(from);
        let now = time::now();
        let retention = self.config.retention;
        let at = |c: Option<i64>| time::from_micros(c.unwrap_or(time::MIN_TIMESTAMP_MICROS));
        let (metric_cutoff, alert_cutoff, state_cutoff) = (
            at(retention.metric_cutoff(now)),
            at(retention.alert_cutoff(now)),
            at(retention.agent_state_cutoff(now)),
        );
        // The dump's schema must be an aimon schema of a version this code knows.
        let version: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT max(version) FROM {s}.schema_migrations"
        )))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| Error::corrupted("the dump holds no aimon schema").with_source(e))?;
        let newest = MIGRATIONS.last().map_or(0, |m| m.version);
        match version {
            Some(v) if v <= newest => {}
            Some(v) => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("the dump's schema is at version {v}, newer than {newest}"),
                ));
            }
            None => return Err(Error::corrupted("the dump's schema has no migrations")),
        }
        // A dump of schema version 4 or later in native mode holds chunks: its samples are
        // decoded and written through this store's write path, as are all samples of a native
        // store (after the transaction of the other kinds).
        let chunked: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("{s}.chunks"))
            .fetch_one(&self.pool)
            .await
            .db()?;
        let samples_by_sql = self.timescale && !chunked;
        let mut tx = self.pool.begin().await.db()?;
        let mut report = TransferReport {
            format: BackupFormat::Native,
            ..TransferReport::default()
        };
        let live_series = if chunked {
            format!(
                "SELECT x.* FROM {s}.series x WHERE x.updated_at >= $1 OR EXISTS \
                 (SELECT 1 FROM {s}.series_tagsets t WHERE t.sid = x.sid AND (EXISTS \
                 (SELECT 1 FROM {s}.samples y WHERE y.tsid = t.tsid AND y.time >= $1) OR EXISTS \
                 (SELECT 1 FROM {s}.chunks c WHERE c.tsid = t.tsid AND c.last_time >= $1)))"
            )
        } else {
            format!(
                "SELECT x.* FROM {s}.series x WHERE x.updated_at >= $1 OR EXISTS \
                 (SELECT 1 FROM {s}.samples y WHERE y.sid = x.sid AND y.time >= $1)"
            )
        };
        report.series = tx_exec(
            &mut tx,
            format!(
                "INSERT INTO series (id, name, \"type\", description, unit, metadata, created_at, \
                 updated_at) SELECT id, name, \"type\", description, unit, metadata, created_at, \
                 updated_at FROM ({live_series}) l ORDER BY id \
                 ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, \"type\" = EXCLUDED.\"type\", \
                 description = EXCLUDED.description, unit = EXCLUDED.unit, \
                 metadata = EXCLUDED.metadata, updated_at = EXCLUDED.updated_at"
            ),
            metric_cutoff,
        )
        .await?;
        if samples_by_sql {
            report.samples = tx_exec(
                &mut tx,
                format!(
                    "INSERT INTO samples (sid, time, tags, value) \
                 SELECT t.sid, x.time, x.tags, x.value FROM {s}.samples x \
                 JOIN {s}.series o ON o.sid = x.sid JOIN series t ON t.id = o.id \
                 WHERE x.time >= $1 ORDER BY t.sid, x.time, x.tags \
                 ON CONFLICT (sid, time, tags_key) DO UPDATE SET value = EXCLUDED.value"
                ),
                metric_cutoff,
            )
            .await?;
            tx_exec(
            &mut tx,
            format!(
                "INSERT INTO series_tagsets (sid, tags, tags_jsonb, last_bound) \
                 SELECT t.sid, x.tags, x.tags::jsonb, \
                 date_bin(INTERVAL '1 hour', max(x.time), TIMESTAMPTZ '1970-01-01') + INTERVAL '1 hour' \
                 FROM {s}.samples x JOIN {s}.series o ON o.sid = x.sid JOIN series t ON t.id = o.id \
                 WHERE x.time >= $1 GROUP BY t.sid, x.tags ORDER BY 1, 2 \
                 ON CONFLICT (sid, tags_key) DO UPDATE SET last_bound = EXCLUDED.last_bound \
                 WHERE series_tagsets.last_bound < EXCLUDED.last_bound"
            ),
            metric_cutoff,
        )
        .await?;
        }
        report.alerts = tx_exec(
            &mut tx,
            format!(
                "INSERT INTO alerts SELECT * FROM {s}.alerts WHERE updated_at >= $1 ORDER BY id \
                 ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, \
                 description = EXCLUDED.description, severity = EXCLUDED.severity, \
                 source = EXCLUDED.source, status = EXCLUDED.status, \
                 start_time = EXCLUDED.start_time, end_time = EXCLUDED.end_time, \
                 acknowledged_by = EXCLUDED.acknowledged_by, acknowledged_at = EXCLUDED.acknowledged_at, \
                 resolved_by = EXCLUDED.resolved_by, resolved_at = EXCLUDED.resolved_at, \
                 labels = EXCLUDED.labels, annotations = EXCLUDED.annotations, \
                 metadata = EXCLUDED.metadata, created_at = EXCLUDED.created_at, \
                 updated_at = EXCLUDED.updated_at, embedding = EXCLUDED.embedding"
            ),
            alert_cutoff,
        )
        .await?;
        report.agent_states = tx_exec(
            &mut tx,
            format!(
                "INSERT INTO agent_states AS a SELECT * FROM {s}.agent_states \
                 WHERE last_heartbeat >= $1 ORDER BY agent_id \
                 ON CONFLICT (agent_id) DO UPDATE SET id = EXCLUDED.id, status = EXCLUDED.status, \
                 metrics = EXCLUDED.metrics, last_heartbeat = EXCLUDED.last_heartbeat, \
                 metadata = EXCLUDED.metadata, created_at = EXCLUDED.created_at, \
                 updated_at = EXCLUDED.updated_at, embedding = EXCLUDED.embedding \
                 WHERE EXCLUDED.last_heartbeat >= a.last_heartbeat"
            ),
            state_cutoff,
        )
        .await?;
        let expired_samples = if samples_by_sql {
            format!("(SELECT count(*) FROM {s}.samples WHERE time < $1)")
        } else {
            "(SELECT 0::bigint WHERE $1::timestamptz IS NOT NULL OR TRUE)".to_owned()
        };
        let expired: i64 = sqlx::query(AssertSqlSafe(format!(
            "SELECT {expired_samples} \
             + (SELECT count(*) FROM {s}.alerts WHERE updated_at < $2) \
             + (SELECT count(*) FROM {s}.agent_states WHERE last_heartbeat < $3)"
        )))
        .bind(metric_cutoff)
        .bind(alert_cutoff)
        .bind(state_cutoff)
        .fetch_one(&mut *tx)
        .await
        .db()?
        .try_get(0)
        .db()?;
        report.expired = count(expired);
        tx.commit().await.db()?;
        if !samples_by_sql {
            let (stored, expired) = self
                .merge_samples(&s, chunked, time::to_micros(metric_cutoff))
                .await?;
            report.samples = stored;
            report.expired += expired;
        }
        Ok(report)
    }

    /// Merges the samples of the restored schema `s` (quoted) through this store's write
    /// rules: read whole (decoded where the dump holds chunks), the expired ones counted, the
    /// rest stored as chunks and head rows (native) or rows (TimescaleDB). Returns the samples
    /// stored and those expired.
    async fn merge_samples(&self, s: &str, chunked: bool, cutoff: i64) -> Result<(u64, u64)> {
        use std::collections::{BTreeMap, HashMap};

        use crate::metrics::chunks;

        // (series id, tags JSON) → samples, from the dump.
        let mut source: BTreeMap<(String, String), Vec<(i64, f64)>> = BTreeMap::new();
        let mut tx = self.pool.begin().await.db()?;
        if chunked {
            let tagsets: Vec<(i64, String, String)> = sqlx::query_as(AssertSqlSafe(format!(
                "SELECT t.tsid, o.id, t.tags FROM {s}.series_tagsets t \
                 JOIN {s}.series o ON o.sid = t.sid"
            )))
            .fetch_all(&mut *tx)
            .await
            .db()?;
            let list: Vec<chunks::Tagset> = tagsets
                .iter()
                .map(|(tsid, id, tags)| chunks::Tagset {
                    tsid: *tsid,
                    series_id: id.clone(),
                    tags: tags.clone(),
                    group: None,
                })
                .collect();
            // Audited: the scratch schema's quoted name.
            sqlx::raw_sql(AssertSqlSafe(format!("SET LOCAL search_path TO {s}")))
                .execute(&mut *tx)
                .await
                .db()?;
            let found = chunks::read(
                &mut tx,
                &list,
                time::MIN_TIMESTAMP_MICROS,
                time::MAX_TIMESTAMP_MICROS,
            )
            .await?;
            for t in list {
                if let Some(samples) = found.get(&t.tsid) {
                    source.insert(
                        (t.series_id, t.tags),
                        samples
                            .timestamps
                            .iter()
                            .copied()
                            .zip(samples.values.iter().copied())
                            .collect(),
                    );
                }
            }
        } else {
            let rows: Vec<(String, String, chrono::DateTime<chrono::Utc>, f64)> =
                sqlx::query_as(AssertSqlSafe(format!(
                    "SELECT o.id, x.tags, x.time, x.value FROM {s}.samples x \
                     JOIN {s}.series o ON o.sid = x.sid ORDER BY 1, 2, 3"
                )))
                .fetch_all(&mut *tx)
                .await
                .db()?;
            for (id, tags, t, v) in rows {
                source
                    .entry((id, tags))
                    .or_default()
                    .push((time::to_micros(t), v));
            }
        }
        tx.commit().await.db()?;
        let ours: HashMap<String, i64> = sqlx::query_as("SELECT id, sid FROM series")
            .fetch_all(&self.pool)
            .await
            .db()?
            .into_iter()
            .collect();
        let mut expired = 0u64;
        let mut stored = 0u64;
        let mut groups: crate::metrics::write::SampleGroups<'_> = BTreeMap::new();
        let mut times = BTreeSet::new();
        for ((id, tags), samples) in &source {
            let Some(&sid) = ours.get(id) else {
                expired += samples.len() as u64;
                continue;
            };
            let live: Vec<(i64, f64)> = samples.iter().copied().filter(|p| p.0 >= cutoff).collect();
            expired += (samples.len() - live.len()) as u64;
            stored += live.len() as u64;
            for p in &live {
                times.insert(p.0);
                times.insert(aimon_core::chunk::window_start(p.0, chunks::WINDOW));
            }
            if !live.is_empty() {
                groups.insert((sid, tags.as_str()), (id.as_str(), live));
            }
        }
        if groups.is_empty() {
            return Ok((stored, expired));
        }
        if !self.timescale {
            self.ensure_partitions(&times).await?;
        }
        let mut tx = self.pool.begin().await.db()?;
        if self.timescale {
            let (mut sids, mut ts, mut tags, mut values) = (vec![], vec![], vec![], vec![]);
            let (mut t_sids, mut t_tags, mut t_bounds) = (vec![], vec![], vec![]);
            for ((sid, tag), (_, samples)) in &groups {
                for &(t, v) in samples {
                    sids.push(*sid);
                    ts.push(time::from_micros(t));
                    tags.push(*tag);
                    values.push(v);
                }
                t_sids.push(*sid);
                t_tags.push(*tag);
                let newest = samples.iter().map(|p| p.0).max().unwrap_or(0);
                t_bounds.push(time::from_micros(crate::metrics::last_bound(newest)));
            }
            sqlx::query(crate::metrics::INSERT_SAMPLES)
                .bind(sids)
                .bind(ts)
                .bind(tags)
                .bind(values)
                .execute(&mut *tx)
                .await
                .db()?;
            sqlx::query(crate::metrics::UPSERT_TAGSETS)
                .bind(t_sids)
                .bind(t_tags)
                .bind(t_bounds)
                .execute(&mut *tx)
                .await
                .db()?;
        } else {
            match crate::metrics::write::store_groups(&mut tx, groups).await {
                Ok(_) => {}
                Err(chunks::WriteFailure::Other(e)) => return Err(e),
                Err(chunks::WriteFailure::NoPartition) => {
                    return Err(Error::new(
                        ErrorKind::Backend,
                        "no partition covers some restored samples",
                    ));
                }
            }
        }
        tx.commit().await.db()?;
        Ok((stored, expired))
    }
}

/// Runs one merge statement with the cutoff as `$1`; returns the rows it wrote.
async fn tx_exec(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    sql: String,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> Result<u64> {
    // Audited: table names come from a checked or generated identifier, quoted; the cutoff
    // is bound.
    Ok(sqlx::query(AssertSqlSafe(sql))
        .bind(cutoff)
        .execute(&mut **tx)
        .await
        .db()?
        .rows_affected())
}

/// A directory for the rewritten dump: the system's temporary directory (the backup itself
/// may be read-only).
fn tempfile_dir(_backup: &Path) -> Result<PathBuf> {
    Ok(std::env::temp_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypertable_rows_fill_the_samples_copy_block_only() {
        let dir = tempfile::tempdir().unwrap();
        let (raw, rows, out) = (
            dir.path().join("raw"),
            dir.path().join("rows"),
            dir.path().join("out"),
        );
        // A data line that looks like a COPY line must not be taken for one.
        let dump = "--\n-- PostgreSQL database dump\n\
                    COPY fleet.alerts (id) FROM stdin;\n\
                    COPY x.samples (sid, \"time\", tags, value) FROM stdin;\n\\.\n\
                    COPY fleet.samples (sid, \"time\", tags, value) FROM stdin;\n\\.\n\
                    COPY fleet.series (sid) FROM stdin;\n1\n\\.\n";
        std::fs::write(&raw, dump).unwrap();
        std::fs::write(&rows, "1\t2024-01-01 00:00:00+00\t{}\t1.5\n").unwrap();
        splice_samples(&raw, &rows, &out).unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "--\n-- PostgreSQL database dump\n\
             COPY fleet.alerts (id) FROM stdin;\n\
             COPY x.samples (sid, \"time\", tags, value) FROM stdin;\n\\.\n\
             COPY fleet.samples (sid, \"time\", tags, value) FROM stdin;\n\
             1\t2024-01-01 00:00:00+00\t{}\t1.5\n\\.\n\
             COPY fleet.series (sid) FROM stdin;\n1\n\\.\n"
        );
        // A dump without the block (not a store's schema) is an error, not a silent loss.
        std::fs::write(&raw, "COPY fleet.series (sid) FROM stdin;\n\\.\n").unwrap();
        assert!(splice_samples(&raw, &rows, &out).is_err());
    }

    #[test]
    fn schema_names_are_rewritten_outside_copy_data_only() {
        let dump = "--\n-- PostgreSQL database dump\nCREATE SCHEMA fleet;\n\
                    CREATE TABLE fleet.series (id text);\n\
                    COPY fleet.series (id) FROM stdin;\nfleet.series\tfleet\n\\.\n\
                    SELECT pg_catalog.setval('fleet.series_sid_seq', 3, true);\n\
                    CREATE TABLE fleet2.x ();\n";
        let out = rewrite_schema(dump, "fleet", "scratch");
        assert!(out.contains("CREATE SCHEMA scratch;"));
        assert!(out.contains("CREATE TABLE scratch.series"));
        assert!(out.contains("COPY scratch.series (id) FROM stdin;"));
        assert!(
            out.contains("\nfleet.series\tfleet\n"),
            "data untouched: {out}"
        );
        assert!(out.contains("setval('scratch.series_sid_seq'"));
        assert!(out.contains("fleet2.x"), "other identifiers untouched");
        // A schema named like one of its tables: only the schema is renamed.
        let dump = "CREATE SCHEMA samples;\nALTER SCHEMA samples OWNER TO me;\n\
                    CREATE TABLE samples.samples (sid bigint);\n\
                    ALTER TABLE ONLY samples.samples ATTACH PARTITION samples.samples_p1 FOR VALUES;\n";
        let out = rewrite_schema(dump, "samples", "scratch");
        assert!(
            out.contains("CREATE SCHEMA scratch;\nALTER SCHEMA scratch OWNER"),
            "{out}"
        );
        assert!(
            out.contains("CREATE TABLE scratch.samples (sid bigint)"),
            "{out}"
        );
        assert!(
            out.contains("ONLY scratch.samples ATTACH PARTITION scratch.samples_p1"),
            "{out}"
        );
    }
}
