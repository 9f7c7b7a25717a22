//! The portable backup archive (DESIGN.md rule 11): a directory any backend can restore.
//!
//! ```text
//! PATH/
//!   manifest.json            format, version, source backend, counts, file names
//!   metrics.ndjson.gz        one `Metric` per line (a long series spans several lines)
//!   alerts.ndjson.gz         one `Alert` per line
//!   agent_states.ndjson.gz   one `AgentState` per line
//! ```
//!
//! Writing streams: items are read from the backend page by page through an [`Exporter`] (by
//! default the public query API with keyset pagination on `id`; a backend may page natively) and compressed on a blocking thread, so memory holds one page —
//! 1,000 alerts or agent states, or 16 series with their samples — never the store. The manifest is written last; an archive without one is incomplete.
//!
//! Restoring reads the archive twice: the first pass checks every line (JSON, validation, counts
//! against the manifest) without writing anything, the second merges the items in batches by
//! the keys of DESIGN.md rules 1, 4 and 5. A damaged archive is therefore rejected whole with
//! [`crate::ErrorKind::Corrupted`] and the store is left untouched.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::backend::{BackupFormat, StorageBackend, TransferReport};
use crate::config::StorageBackendType;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{AgentState, Alert, DataKind, Metric};
use crate::query::{AgentStateQuery, AlertQuery, FilterOp, MetricQuery, QueryOptions, SortOrder};
use crate::{time, validate};

/// The `format` field of every manifest.
pub const FORMAT: &str = "aimon-archive";
/// The archive version this build writes and the newest it reads.
pub const VERSION: u32 = 1;
/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// Samples per archived line; longer series are split over several lines.
pub const SAMPLES_PER_LINE: usize = 10_000;

const SERIES_PAGE: usize = 16;
const ITEM_PAGE: usize = 1_000;
const RESTORE_BATCH_SAMPLES: usize = 5_000;
const RESTORE_BATCH_ITEMS: usize = 500;

/// Where the archive came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveSource {
    pub backend: String,
    pub backend_type: StorageBackendType,
}

/// How many items each file holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveCounts {
    pub series: u64,
    pub samples: u64,
    pub alerts: u64,
    pub agent_states: u64,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub created_at: DateTime<Utc>,
    pub source: ArchiveSource,
    pub counts: ArchiveCounts,
    /// File name per data kind, relative to the archive directory.
    pub files: std::collections::BTreeMap<DataKind, String>,
}

fn file_name(kind: DataKind) -> String {
    format!("{kind}.ndjson.gz")
}

enum Item {
    Metric(Metric),
    Alert(Alert),
    AgentState(AgentState),
}

/// A compressed NDJSON file. The buffer sits *in front of* the encoder: serde_json writes many
/// tiny pieces, and flate2 pays for every write call (it clears its output buffer each time), so
/// unbuffered encoding spent most of a backup in `memset`.
type ArchiveWriter = BufWriter<GzEncoder<File>>;

struct Writers {
    metrics: ArchiveWriter,
    alerts: ArchiveWriter,
    agent_states: ArchiveWriter,
    counts: ArchiveCounts,
}

impl Writers {
    fn create(dir: &Path) -> Result<Self> {
        let open = |kind| -> Result<ArchiveWriter> {
            let file = File::create(dir.join(file_name(kind)))?;
            Ok(BufWriter::with_capacity(
                1 << 16,
                GzEncoder::new(file, Compression::fast()),
            ))
        };
        Ok(Writers {
            metrics: open(DataKind::Metrics)?,
            alerts: open(DataKind::Alerts)?,
            agent_states: open(DataKind::AgentStates)?,
            counts: ArchiveCounts::default(),
        })
    }

    fn line<T: Serialize>(out: &mut ArchiveWriter, item: &T) -> Result<()> {
        serde_json::to_writer(&mut *out, item)
            .map_err(|e| Error::new(ErrorKind::Backend, "cannot encode").with_source(e))?;
        out.write_all(b"\n")?;
        Ok(())
    }

    fn write(&mut self, item: Item) -> Result<()> {
        match item {
            Item::Metric(metric) => {
                self.counts.series += 1;
                self.counts.samples += metric.values.len() as u64;
                if metric.values.len() <= SAMPLES_PER_LINE {
                    return Self::line(&mut self.metrics, &metric);
                }
                let mut part = Metric {
                    values: Vec::new(),
                    ..metric.clone()
                };
                for chunk in metric.values.chunks(SAMPLES_PER_LINE) {
                    part.values = chunk.to_vec();
                    Self::line(&mut self.metrics, &part)?;
                }
                Ok(())
            }
            Item::Alert(alert) => {
                self.counts.alerts += 1;
                Self::line(&mut self.alerts, &alert)
            }
            Item::AgentState(state) => {
                self.counts.agent_states += 1;
                Self::line(&mut self.agent_states, &state)
            }
        }
    }

    fn finish(self) -> Result<ArchiveCounts> {
        for writer in [self.metrics, self.alerts, self.agent_states] {
            let encoder = writer
                .into_inner()
                .map_err(|e| Error::from(e.into_error()))?;
            encoder.finish()?.sync_all()?;
        }
        Ok(self.counts)
    }
}

fn prepare_dir(path: &Path) -> Result<()> {
    match std::fs::read_dir(path) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "{} exists and is not empty; choose a new backup path",
                        path.display()
                    ),
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(std::fs::create_dir_all(path)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "{} exists and is a file; choose a new backup path",
                path.display()
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

/// The first file named `name` in a directory of `PATH`: how drivers find the server tools of
/// their native backups (`pg_dump`, `influxd`).
pub fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// The bytes of the files under `path`, subdirectories included (symbolic links are not
/// followed; what cannot be read counts 0): a backup's size, for this archive and for drivers'
/// native backups alike.
pub fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| Some((e.path(), e.file_type().ok()?, e.metadata().ok()?)))
        .map(|(path, kind, meta)| {
            if kind.is_dir() {
                dir_size(&path)
            } else {
                meta.len()
            }
        })
        .sum()
}

async fn send(tx: &mpsc::Sender<Item>, item: Item) -> Result<()> {
    tx.send(item)
        .await
        .map_err(|_| Error::new(ErrorKind::Backend, "the archive writer stopped"))
}

/// One page of a store's items for a portable archive, and where the next page starts (`None`
/// after the last page).
#[derive(Debug, Clone, PartialEq)]
pub struct ExportPage<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Where [`write_with`] reads a store's live items, page by page. The cursor is the exporter's
/// own (opaque to the archive): `None` asks for the first page. [`QueryExporter`] pages through
/// the public query API; a backend whose queries cannot seek by id cheaply (Qdrant cannot
/// filter strings by range, so each keyset page would scan the whole collection) pages
/// natively instead. Pages may hold fewer than `limit` items, even none, before the end.
#[async_trait::async_trait]
pub trait Exporter: Send + Sync {
    /// Series with their samples (a page of `limit` series).
    async fn metrics(&self, cursor: Option<String>, limit: usize) -> Result<ExportPage<Metric>>;
    async fn alerts(&self, cursor: Option<String>, limit: usize) -> Result<ExportPage<Alert>>;
    async fn agent_states(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<ExportPage<AgentState>>;
}

/// The default [`Exporter`]: keyset pages through `query_metrics`, `query_alerts` and
/// `get_agent_states`, sorted by id (agent id), each page asking for keys after the last one
/// seen (the cursor).
pub struct QueryExporter<'a>(pub &'a dyn StorageBackend);

/// Query options for the keyset page after `cursor` on the text field `key_field`.
fn keyset(key_field: &'static str, cursor: Option<String>, limit: usize) -> QueryOptions {
    let options = QueryOptions::default()
        .limit(limit)
        .sort(key_field, SortOrder::Asc);
    match cursor {
        Some(last) => options.filter(key_field, FilterOp::Gt, last),
        None => options,
    }
}

/// A keyset page: the next cursor is the last key of a full page.
fn keyset_page<T>(items: Vec<T>, limit: usize, key: fn(&T) -> &str) -> ExportPage<T> {
    let next = (items.len() >= limit)
        .then(|| items.last().map(|item| key(item).to_owned()))
        .flatten();
    ExportPage { items, next }
}

#[async_trait::async_trait]
impl Exporter for QueryExporter<'_> {
    async fn metrics(&self, cursor: Option<String>, limit: usize) -> Result<ExportPage<Metric>> {
        let options = keyset("id", cursor, limit);
        let items = self
            .0
            .query_metrics(&MetricQuery::new().options(options))
            .await?;
        Ok(keyset_page(items, limit, |m| &m.id))
    }

    async fn alerts(&self, cursor: Option<String>, limit: usize) -> Result<ExportPage<Alert>> {
        let options = keyset("id", cursor, limit);
        let items = self
            .0
            .query_alerts(&AlertQuery::new().options(options))
            .await?;
        Ok(keyset_page(items, limit, |a| &a.id))
    }

    async fn agent_states(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<ExportPage<AgentState>> {
        let options = keyset("agent_id", cursor, limit);
        let items = self
            .0
            .get_agent_states(&AgentStateQuery::new().options(options))
            .await?;
        Ok(keyset_page(items, limit, |s| &s.agent_id))
    }
}

/// Sends every item of every page `fetch` returns, following the cursors.
async fn export_pages<T, Fut>(
    tx: &mpsc::Sender<Item>,
    wrap: fn(T) -> Item,
    fetch: impl Fn(Option<String>) -> Fut,
) -> Result<()>
where
    Fut: Future<Output = Result<ExportPage<T>>>,
{
    let mut cursor = None;
    loop {
        let page = fetch(cursor.take()).await?;
        for item in page.items {
            send(tx, wrap(item)).await?;
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(()),
        }
    }
}

async fn export(exporter: &dyn Exporter, tx: mpsc::Sender<Item>) -> Result<()> {
    export_pages(&tx, Item::Metric, |c| exporter.metrics(c, SERIES_PAGE)).await?;
    export_pages(&tx, Item::Alert, |c| exporter.alerts(c, ITEM_PAGE)).await?;
    export_pages(&tx, Item::AgentState, |c| {
        exporter.agent_states(c, ITEM_PAGE)
    })
    .await
}

/// Writes the portable archive of `backend` into the new or empty directory `path`, reading
/// through the public query API ([`QueryExporter`]).
pub async fn write(backend: &dyn StorageBackend, path: &Path) -> Result<TransferReport> {
    write_with(backend, &QueryExporter(backend), path).await
}

/// Writes the portable archive of `backend` into the new or empty directory `path`, reading
/// its items through `exporter`.
pub async fn write_with(
    backend: &dyn StorageBackend,
    exporter: &dyn Exporter,
    path: &Path,
) -> Result<TransferReport> {
    let dir = path.to_path_buf();
    prepare_dir(&dir)?;
    let (tx, mut rx) = mpsc::channel::<Item>(64);
    let writer_dir = dir.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<ArchiveCounts> {
        let mut writers = Writers::create(&writer_dir)?;
        while let Some(item) = rx.blocking_recv() {
            writers.write(item)?;
        }
        writers.finish()
    });
    let exported = export(exporter, tx).await;
    let written = writer.await.map_err(|e| {
        Error::new(ErrorKind::Backend, "the archive writer panicked").with_source(e)
    })?;
    // An error from the writer explains a failed export (the channel closed), so report it first.
    let counts = written?;
    exported?;
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        version: VERSION,
        created_at: time::now(),
        source: ArchiveSource {
            backend: backend.name().to_owned(),
            backend_type: backend.backend_type(),
        },
        counts,
        files: DataKind::ALL
            .into_iter()
            .map(|k| (k, file_name(k)))
            .collect(),
    };
    let manifest_path = dir.join(MANIFEST);
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest)?)?;
    Ok(TransferReport {
        format: BackupFormat::Portable,
        series: counts.series,
        samples: counts.samples,
        alerts: counts.alerts,
        agent_states: counts.agent_states,
        expired: 0,
        bytes: dir_size(&dir),
    })
}

/// Reads and checks `manifest.json`.
pub fn read_manifest(path: &Path) -> Result<Manifest> {
    let manifest_path = path.join(MANIFEST);
    let bytes = std::fs::read(&manifest_path).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::NotFound
        } else {
            ErrorKind::Backend
        };
        Error::new(
            kind,
            format!(
                "no readable archive manifest at {}",
                manifest_path.display()
            ),
        )
        .with_source(e)
    })?;
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
        Error::new(
            ErrorKind::Corrupted,
            format!("{} is not an aimon manifest", manifest_path.display()),
        )
        .with_source(e)
    })?;
    if manifest.format != FORMAT {
        return Err(Error::new(
            ErrorKind::Corrupted,
            format!(
                "{} has format {:?}, expected {FORMAT:?}",
                manifest_path.display(),
                manifest.format
            ),
        ));
    }
    if manifest.version > VERSION {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "archive version {} is newer than this build reads ({VERSION})",
                manifest.version
            ),
        ));
    }
    Ok(manifest)
}

fn archive_file(path: &Path, manifest: &Manifest, kind: DataKind) -> Result<PathBuf> {
    let name = manifest.files.get(&kind).ok_or_else(|| {
        Error::new(
            ErrorKind::Corrupted,
            format!("the manifest lists no {kind} file"),
        )
    })?;
    // The manifest may be hostile: a name must stay inside the archive directory.
    if Path::new(name).components().count() != 1 || name.contains(['/', '\\']) || name == ".." {
        return Err(Error::new(
            ErrorKind::Corrupted,
            format!("the manifest names {name:?}, outside the archive"),
        ));
    }
    Ok(path.join(name))
}

/// Reads one NDJSON.gz file line by line, handing each parsed item to `each`.
fn read_lines<T: DeserializeOwned>(
    file: &Path,
    mut each: impl FnMut(T, usize) -> Result<()>,
) -> Result<()> {
    let opened = File::open(file).map_err(|e| {
        Error::new(
            ErrorKind::Corrupted,
            format!("{} is missing from the archive", file.display()),
        )
        .with_source(e)
    })?;
    let reader = BufReader::new(MultiGzDecoder::new(BufReader::new(opened)));
    for (index, line) in reader.lines().enumerate() {
        let line_no = index + 1;
        let corrupted = |what: &str| {
            Error::new(
                ErrorKind::Corrupted,
                format!("{}:{line_no}: {what}", file.display()),
            )
        };
        let line = line.map_err(|e| corrupted("unreadable").with_source(e))?;
        if line.is_empty() {
            continue;
        }
        let item: T =
            serde_json::from_str(&line).map_err(|e| corrupted("malformed item").with_source(e))?;
        each(item, line_no).map_err(|e| {
            if e.kind() == ErrorKind::InvalidInput {
                corrupted(&e.to_string())
            } else {
                e
            }
        })?;
    }
    Ok(())
}

enum Batch {
    Metrics(Vec<Metric>),
    Alerts(Vec<Alert>),
    AgentStates(Vec<AgentState>),
}

/// Checks every line; returns what the archive holds.
fn verify(path: &Path, manifest: &Manifest) -> Result<ArchiveCounts> {
    let mut counts = ArchiveCounts::default();
    let mut last_series: Option<String> = None;
    read_lines::<Metric>(&archive_file(path, manifest, DataKind::Metrics)?, |m, _| {
        validate::metric(&m)?;
        if last_series.as_deref() != Some(m.id.as_str()) {
            counts.series += 1;
            last_series = Some(m.id.clone());
        }
        counts.samples += m.values.len() as u64;
        Ok(())
    })?;
    read_lines::<Alert>(&archive_file(path, manifest, DataKind::Alerts)?, |a, _| {
        validate::alert(&a)?;
        counts.alerts += 1;
        Ok(())
    })?;
    read_lines::<AgentState>(
        &archive_file(path, manifest, DataKind::AgentStates)?,
        |s, _| {
            validate::agent_state(&s)?;
            counts.agent_states += 1;
            Ok(())
        },
    )?;
    if counts != manifest.counts {
        return Err(Error::new(
            ErrorKind::Corrupted,
            format!(
                "{} holds {counts:?} but its manifest promises {:?}; the archive is incomplete",
                path.display(),
                manifest.counts
            ),
        ));
    }
    Ok(counts)
}

fn produce(path: &Path, manifest: &Manifest, tx: mpsc::Sender<Batch>) -> Result<()> {
    let closed = || Error::new(ErrorKind::Backend, "restore stopped");
    let mut metrics = Vec::new();
    let mut samples = 0;
    read_lines::<Metric>(&archive_file(path, manifest, DataKind::Metrics)?, |m, _| {
        samples += m.values.len().max(1);
        metrics.push(m);
        if samples >= RESTORE_BATCH_SAMPLES {
            samples = 0;
            tx.blocking_send(Batch::Metrics(std::mem::take(&mut metrics)))
                .map_err(|_| closed())?;
        }
        Ok(())
    })?;
    if !metrics.is_empty() {
        tx.blocking_send(Batch::Metrics(metrics))
            .map_err(|_| closed())?;
    }
    let mut alerts = Vec::new();
    read_lines::<Alert>(&archive_file(path, manifest, DataKind::Alerts)?, |a, _| {
        alerts.push(a);
        if alerts.len() >= RESTORE_BATCH_ITEMS {
            tx.blocking_send(Batch::Alerts(std::mem::take(&mut alerts)))
                .map_err(|_| closed())?;
        }
        Ok(())
    })?;
    if !alerts.is_empty() {
        tx.blocking_send(Batch::Alerts(alerts))
            .map_err(|_| closed())?;
    }
    let mut states = Vec::new();
    read_lines::<AgentState>(
        &archive_file(path, manifest, DataKind::AgentStates)?,
        |s, _| {
            states.push(s);
            if states.len() >= RESTORE_BATCH_ITEMS {
                tx.blocking_send(Batch::AgentStates(std::mem::take(&mut states)))
                    .map_err(|_| closed())?;
            }
            Ok(())
        },
    )?;
    if !states.is_empty() {
        tx.blocking_send(Batch::AgentStates(states))
            .map_err(|_| closed())?;
    }
    Ok(())
}

/// Checks the archive at `path`, then merges it into `backend`.
pub async fn restore(backend: &dyn StorageBackend, path: &Path) -> Result<TransferReport> {
    let dir = path.to_path_buf();
    let (manifest, counts) = tokio::task::spawn_blocking(move || -> Result<_> {
        let manifest = read_manifest(&dir)?;
        let counts = verify(&dir, &manifest)?;
        Ok((manifest, counts))
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Backend, "the archive reader panicked").with_source(e))??;

    let (tx, mut rx) = mpsc::channel::<Batch>(4);
    let dir = path.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || produce(&dir, &manifest, tx));
    let mut expired = 0;
    let mut saved = Ok(());
    while let Some(batch) = rx.recv().await {
        let report = match batch {
            Batch::Metrics(items) => backend.save_metrics(&items).await,
            Batch::Alerts(items) => backend.save_alerts(&items).await,
            Batch::AgentStates(items) => backend.save_agent_states(&items).await,
        };
        match report {
            Ok(report) => expired += report.expired,
            Err(e) => {
                saved = Err(e);
                break;
            }
        }
    }
    drop(rx);
    saved?;
    reader.await.map_err(|e| {
        Error::new(ErrorKind::Backend, "the archive reader panicked").with_source(e)
    })??;
    Ok(TransferReport {
        format: BackupFormat::Portable,
        series: counts.series,
        samples: counts.samples,
        alerts: counts.alerts,
        agent_states: counts.agent_states,
        expired,
        bytes: dir_size(path),
    })
}

#[cfg(test)]
mod tests {
    use super::dir_size;

    #[test]
    fn dir_size_counts_files_in_subdirectories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), [0u8; 10]).unwrap();
        std::fs::create_dir_all(dir.path().join("shard/segments")).unwrap();
        std::fs::write(dir.path().join("shard/segments/b"), [0u8; 32]).unwrap();
        assert_eq!(dir_size(dir.path()), 42);
        assert_eq!(dir_size(&dir.path().join("missing")), 0);
    }
}
