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
    /// The configured name of the backend that wrote the archive.
    pub backend: String,
    /// Its driver.
    pub backend_type: StorageBackendType,
}

/// How many items each file holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveCounts {
    /// Series in `metrics.ndjson.gz`.
    pub series: u64,
    /// Samples in `metrics.ndjson.gz`.
    pub samples: u64,
    /// Alerts in `alerts.ndjson.gz`.
    pub alerts: u64,
    /// Agent states in `agent_states.ndjson.gz`.
    pub agent_states: u64,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`]; anything else is `Corrupted` on restore.
    pub format: String,
    /// The archive version, from 1; 0 is `Corrupted`, one newer than [`VERSION`] `Unsupported`.
    pub version: u32,
    /// When the backup started.
    pub created_at: DateTime<Utc>,
    /// The store the archive was taken from.
    pub source: ArchiveSource,
    /// What each file holds; restore checks the files against it (`Corrupted` if they differ).
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
    /// The page's items, in cursor order.
    pub items: Vec<T>,
    /// The cursor of the next page; `None` after the last one.
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
    /// Alerts (a page of `limit` alerts).
    async fn alerts(&self, cursor: Option<String>, limit: usize) -> Result<ExportPage<Alert>>;
    /// The latest agent states (a page of `limit` states).
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

/// Opens a file of an archive, which must be a regular file: a symbolic link could point out of
/// the archive, a FIFO would block the restore forever and a directory is no data. `missing`
/// is the kind of error for a file that is not there.
fn open_archive_file(file: &Path, missing: ErrorKind) -> Result<File> {
    let what = match std::fs::symlink_metadata(file) {
        Ok(meta) if meta.file_type().is_file() => None,
        Ok(meta) if meta.file_type().is_symlink() => Some("a symbolic link"),
        Ok(meta) if meta.file_type().is_dir() => Some("a directory"),
        Ok(_) => Some("a special file"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::new(
                missing,
                format!("{} is missing from the archive", file.display()),
            )
            .with_source(e));
        }
        Err(e) => {
            return Err(Error::new(
                ErrorKind::Backend,
                format!("cannot read {}", file.display()),
            )
            .with_source(e));
        }
    };
    if let Some(what) = what {
        return Err(Error::corrupted(format!(
            "{} is {what}; an archive holds regular files only",
            file.display()
        )));
    }
    File::open(file).map_err(|e| {
        Error::new(
            ErrorKind::Backend,
            format!("cannot read {}", file.display()),
        )
        .with_source(e)
    })
}

/// Reads and checks `manifest.json`.
pub fn read_manifest(path: &Path) -> Result<Manifest> {
    let manifest_path = path.join(MANIFEST);
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut open_archive_file(&manifest_path, ErrorKind::NotFound).map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                Error::new(
                    ErrorKind::NotFound,
                    format!("no archive manifest at {}", manifest_path.display()),
                )
            } else {
                e
            }
        })?,
        &mut bytes,
    )
    .map_err(|e| {
        Error::new(
            ErrorKind::Backend,
            format!("cannot read {}", manifest_path.display()),
        )
        .with_source(e)
    })?;
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
        Error::corrupted(format!(
            "{} is not an aimon manifest",
            manifest_path.display()
        ))
        .with_source(e)
    })?;
    if manifest.format != FORMAT {
        return Err(Error::corrupted(format!(
            "{} has format {:?}, expected {FORMAT:?}",
            manifest_path.display(),
            manifest.format
        )));
    }
    if manifest.version == 0 {
        return Err(Error::corrupted(format!(
            "{} has version 0; archive versions start at 1",
            manifest_path.display()
        )));
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
    let name = manifest
        .files
        .get(&kind)
        .ok_or_else(|| Error::corrupted(format!("the manifest lists no {kind} file")))?;
    // The manifest may be hostile: a name must stay inside the archive directory.
    if Path::new(name).components().count() != 1 || name.contains(['/', '\\']) || name == ".." {
        return Err(Error::corrupted(format!(
            "the manifest names {name:?}, outside the archive"
        )));
    }
    Ok(path.join(name))
}

/// Reads one NDJSON.gz file line by line, handing each parsed item to `each`.
fn read_lines<T: DeserializeOwned>(
    file: &Path,
    mut each: impl FnMut(T, usize) -> Result<()>,
) -> Result<()> {
    let opened = open_archive_file(file, ErrorKind::Corrupted)?;
    let reader = BufReader::new(MultiGzDecoder::new(BufReader::new(opened)));
    for (index, line) in reader.lines().enumerate() {
        let line_no = index + 1;
        let corrupted =
            |what: &str| Error::corrupted(format!("{}:{line_no}: {what}", file.display()));
        let line = line.map_err(|e| corrupted("unreadable").with_source(e))?;
        // Blank lines (JSON whitespace only, as an editor may leave them) hold no item.
        if line.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
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

enum Items {
    Metrics(Vec<Metric>),
    Alerts(Vec<Alert>),
    AgentStates(Vec<AgentState>),
}

/// A batch of a restore and where it came from: its file and first and last line.
struct Batch {
    items: Items,
    file: PathBuf,
    lines: (usize, usize),
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
        return Err(Error::corrupted(format!(
            "{} holds {counts:?} but its manifest promises {:?}; the archive is incomplete",
            path.display(),
            manifest.counts
        )));
    }
    Ok(counts)
}

/// Collects the items of one archive file into batches and sends them, with their lines.
fn produce_file<T: DeserializeOwned>(
    file: PathBuf,
    tx: &mpsc::Sender<Batch>,
    wrap: fn(Vec<T>) -> Items,
    weight: fn(&T) -> usize,
    batch_weight: usize,
) -> Result<()> {
    let closed = || Error::new(ErrorKind::Backend, "restore stopped");
    let mut items = Vec::new();
    let mut weighed = 0;
    let mut first_line = 0;
    let mut last_line = 0;
    let send = |items: Vec<T>, lines| {
        tx.blocking_send(Batch {
            items: wrap(items),
            file: file.clone(),
            lines,
        })
        .map_err(|_| closed())
    };
    read_lines::<T>(&file, |item, line| {
        if items.is_empty() {
            first_line = line;
        }
        last_line = line;
        weighed += weight(&item);
        items.push(item);
        if weighed >= batch_weight {
            weighed = 0;
            send(std::mem::take(&mut items), (first_line, line))?;
        }
        Ok(())
    })?;
    if !items.is_empty() {
        send(items, (first_line, last_line))?;
    }
    Ok(())
}

fn produce(path: &Path, manifest: &Manifest, tx: mpsc::Sender<Batch>) -> Result<()> {
    produce_file::<Metric>(
        archive_file(path, manifest, DataKind::Metrics)?,
        &tx,
        Items::Metrics,
        |m| m.values.len().max(1),
        RESTORE_BATCH_SAMPLES,
    )?;
    produce_file::<Alert>(
        archive_file(path, manifest, DataKind::Alerts)?,
        &tx,
        Items::Alerts,
        |_| 1,
        RESTORE_BATCH_ITEMS,
    )?;
    produce_file::<AgentState>(
        archive_file(path, manifest, DataKind::AgentStates)?,
        &tx,
        Items::AgentStates,
        |_| 1,
        RESTORE_BATCH_ITEMS,
    )
}

/// Checks the archive at `path`, then merges it into `backend`.
///
/// A restore that fails part-way (the store went away, a server refused a batch) returns an
/// error of the failing write's kind that says what was stored before it and which lines of
/// which file failed; items merge by key, so restoring the same archive again completes it.
pub async fn restore(backend: &dyn StorageBackend, path: &Path) -> Result<TransferReport> {
    restore_into(path, |items| async move {
        match items {
            Items::Metrics(items) => backend.save_metrics(&items).await,
            Items::Alerts(items) => backend.save_alerts(&items).await,
            Items::AgentStates(items) => backend.save_agent_states(&items).await,
        }
    })
    .await
}

/// [`restore`], writing each batch through `save`.
async fn restore_into<Fut>(
    path: &Path,
    mut save: impl FnMut(Items) -> Fut,
) -> Result<TransferReport>
where
    Fut: Future<Output = Result<crate::backend::WriteReport>>,
{
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
    // What the restore has stored so far: what an error part-way reports.
    let mut stored = ArchiveCounts::default();
    let mut last_series: Option<String> = None;
    let mut saved = Ok(());
    while let Some(Batch { items, file, lines }) = rx.recv().await {
        // What this batch adds once stored (a series split over lines counts once).
        let mut adds = ArchiveCounts::default();
        match &items {
            Items::Metrics(metrics) => {
                for m in metrics {
                    if last_series.as_deref() != Some(m.id.as_str()) {
                        adds.series += 1;
                        last_series = Some(m.id.clone());
                    }
                    adds.samples += m.values.len() as u64;
                }
            }
            Items::Alerts(alerts) => adds.alerts = alerts.len() as u64,
            Items::AgentStates(states) => adds.agent_states = states.len() as u64,
        }
        match save(items).await {
            Ok(report) => {
                expired += report.expired;
                stored.series += adds.series;
                stored.samples += adds.samples;
                stored.alerts += adds.alerts;
                stored.agent_states += adds.agent_states;
            }
            Err(e) => {
                saved = Err(partial_restore_error(e, stored, &file, lines));
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

/// The error of a restore that stopped part-way: the write's kind (so a lost connection stays
/// retryable), what was stored before it, and the lines that failed.
fn partial_restore_error(
    cause: Error,
    stored: ArchiveCounts,
    file: &Path,
    (first, last): (usize, usize),
) -> Error {
    let lines = if first == last {
        format!("line {first}")
    } else {
        format!("lines {first}-{last}")
    };
    let name = file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Error::new(
        cause.kind(),
        format!(
            "the restore stopped part-way at {name} {lines}, after storing {} series with {} \
             samples, {} alerts and {} agent states; items merge by key, so restoring the same \
             archive again completes it",
            stored.series, stored.samples, stored.alerts, stored.agent_states
        ),
    )
    .with_source(cause)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryBackend;
    use crate::model::{AlertSeverity, MetricType, MetricValue};
    use crate::retention::RetentionPolicy;

    type Memory = crate::contract::Contract<MemoryBackend>;

    fn memory() -> Memory {
        crate::contract::Contract::new(MemoryBackend::new("mem", RetentionPolicy::default()))
    }

    /// A store of 6 series × 2,000 samples, 700 alerts and 3 agent states, and its archive.
    async fn archived() -> (Memory, tempfile::TempDir) {
        archived_of(6, 2_000, 700).await
    }

    /// A store of `series` × `samples`, `alerts` alerts and 3 agent states, and its archive.
    async fn archived_of(
        series: usize,
        samples: i64,
        alerts: usize,
    ) -> (Memory, tempfile::TempDir) {
        let source = memory();
        let t0 = time::now();
        let metrics: Vec<Metric> = (0..series)
            .map(|s| {
                let mut m = Metric::new(format!("s{s}"), "cpu", MetricType::Gauge);
                m.values = (0..samples)
                    .map(|i| MetricValue::new(t0 - chrono::TimeDelta::seconds(i), i as f64))
                    .collect();
                m
            })
            .collect();
        source.save_metrics(&metrics).await.unwrap();
        let alerts: Vec<Alert> = (0..alerts)
            .map(|i| Alert::new(format!("a{i:03}"), "n", AlertSeverity::Info, "src"))
            .collect();
        source.save_alerts(&alerts).await.unwrap();
        let states: Vec<AgentState> = (0..3)
            .map(|i| AgentState::new(format!("st{i}"), format!("agent{i}"), "ok"))
            .collect();
        source.save_agent_states(&states).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        write(&source, &dir.path().join("b")).await.unwrap();
        (source, dir)
    }

    async fn counts(store: &Memory) -> (u64, u64, u64, u64) {
        let s = store.stats().await.unwrap();
        (s.series, s.samples, s.alerts, s.agent_states)
    }

    /// A store that goes away after two batches: the error keeps the write's kind, says what
    /// was stored and which lines failed, and restoring again completes the store.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_restore_stopped_part_way_says_what_it_stored_and_a_second_run_completes_it() {
        let (source, dir) = archived().await;
        let archive = dir.path().join("b");
        let target = memory();
        let mut calls = 0;
        let err = restore_into(&archive, |items| {
            calls += 1;
            let fail = calls == 4;
            let target = &target;
            async move {
                if fail {
                    return Err(Error::new(ErrorKind::Unavailable, "connection reset"));
                }
                match items {
                    Items::Metrics(m) => target.save_metrics(&m).await,
                    Items::Alerts(a) => target.save_alerts(&a).await,
                    Items::AgentStates(s) => target.save_agent_states(&s).await,
                }
            }
        })
        .await
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(err.is_retryable());
        // Metrics in batches of at least 5,000 samples (lines 1-3 and 4-6), alerts in batches
        // of 500: the store went away at the second batch of alerts.
        assert_eq!(counts(&target).await, (6, 12_000, 500, 0));
        let text = err.to_string();
        assert!(text.contains("at alerts.ndjson.gz lines 501-700"), "{text}");
        assert!(
            text.contains(
                "after storing 6 series with 12000 samples, 500 alerts and 0 agent states"
            ),
            "{text}"
        );
        assert!(text.contains("connection reset"), "{text}");
        restore(&target, &archive).await.unwrap();
        assert_eq!(counts(&target).await, counts(&source).await);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn hostile_archive_files_are_corrupted_not_followed_or_waited_on() {
        let (_, dir) = archived().await;
        let archive = dir.path().join("b");
        let target = memory();
        let outside = dir.path().join("outside.ndjson.gz");
        std::fs::copy(archive.join("alerts.ndjson.gz"), &outside).unwrap();
        let corrupt = |err: Error, what: &str| {
            assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
            assert!(err.to_string().contains(what), "{err}");
        };

        // A data file that is a symbolic link out of the archive.
        std::fs::remove_file(archive.join("alerts.ndjson.gz")).unwrap();
        std::os::unix::fs::symlink(&outside, archive.join("alerts.ndjson.gz")).unwrap();
        corrupt(
            restore(&target, &archive).await.unwrap_err(),
            "a symbolic link",
        );
        // A FIFO: opening it would block until a writer came.
        std::fs::remove_file(archive.join("alerts.ndjson.gz")).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(archive.join("alerts.ndjson.gz"))
            .status()
            .unwrap();
        assert!(made.success());
        corrupt(
            restore(&target, &archive).await.unwrap_err(),
            "a special file",
        );
        std::fs::remove_file(archive.join("alerts.ndjson.gz")).unwrap();
        std::fs::create_dir(archive.join("alerts.ndjson.gz")).unwrap();
        corrupt(restore(&target, &archive).await.unwrap_err(), "a directory");
        assert_eq!(counts(&target).await, (0, 0, 0, 0));

        // manifest.json a directory, then a version 0 manifest.
        let manifest = std::fs::read(archive.join(MANIFEST)).unwrap();
        std::fs::remove_file(archive.join(MANIFEST)).unwrap();
        std::fs::create_dir(archive.join(MANIFEST)).unwrap();
        corrupt(read_manifest(&archive).unwrap_err(), "a directory");
        std::fs::remove_dir(archive.join(MANIFEST)).unwrap();
        let mut zero: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        zero["version"] = 0.into();
        std::fs::write(archive.join(MANIFEST), zero.to_string()).unwrap();
        corrupt(read_manifest(&archive).unwrap_err(), "version 0");
        std::fs::remove_file(archive.join(MANIFEST)).unwrap();
        assert_eq!(
            read_manifest(&archive).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }

    /// The lines of a gzipped NDJSON file.
    fn read_all_lines(file: &Path) -> Vec<String> {
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut MultiGzDecoder::new(File::open(file).unwrap()),
            &mut text,
        )
        .unwrap();
        text.lines().map(str::to_owned).collect()
    }

    /// Writes a gzipped NDJSON file of `lines`.
    fn write_lines(file: &Path, lines: &[String]) {
        let mut encoder = GzEncoder::new(File::create(file).unwrap(), Compression::fast());
        for line in lines {
            encoder.write_all(line.as_bytes()).unwrap();
            encoder.write_all(b"\n").unwrap();
        }
        encoder.finish().unwrap();
    }

    /// A hostile line of an archive file: garbage, JSON of the wrong shape, or an item with a
    /// field that validation refuses.
    fn hostile_line() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            "\\PC{0,40}",
            Just("{}".to_owned()),
            Just("[]".to_owned()),
            Just("null".to_owned()),
            Just(r#"{"id":"","name":"n","metric_type":"gauge"}"#.to_owned()),
            Just(
                r#"{"id":"m","name":"n","metric_type":"gauge","values":[{"timestamp":"2024-01-01T00:00:00Z","value":1e999}]}"#
                    .to_owned()
            ),
            Just(
                r#"{"id":"m","name":"n\u0007","metric_type":"gauge","values":[]}"#.to_owned()
            ),
            "[ \t\r]{0,4}",
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(150))]

        /// Any manifest bytes: a restore answers, or fails with `Corrupted` or `Unsupported`
        /// and writes nothing.
        #[test]
        fn any_manifest_is_read_or_refused_and_nothing_is_written(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            json_version in proptest::prelude::any::<i64>(),
            name in "\\PC{0,20}|\\.\\./[a-z]{1,8}|/etc/[a-z]{1,8}",
            as_json in proptest::prelude::any::<bool>(),
        ) {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let (_, dir) = archived_of(4, 3, 3).await;
                let archive = dir.path().join("b");
                let manifest = if as_json {
                    let mut m: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(archive.join(MANIFEST)).unwrap())
                            .unwrap();
                    m["version"] = json_version.into();
                    m["files"]["alerts"] = name.clone().into();
                    m.to_string().into_bytes()
                } else {
                    bytes.clone()
                };
                std::fs::write(archive.join(MANIFEST), manifest).unwrap();
                let target = memory();
                match restore(&target, &archive).await {
                    Ok(_) => assert!(as_json, "raw bytes made a manifest: {bytes:?}"),
                    Err(e) => {
                        assert!(
                            matches!(e.kind(), ErrorKind::Corrupted | ErrorKind::Unsupported),
                            "{e}"
                        );
                        assert_eq!(counts(&target).await, (0, 0, 0, 0), "{e}");
                    }
                }
            });
        }

        /// Hostile lines among valid ones: the restore is refused as `Corrupted` naming the
        /// file and line, before anything is written.
        #[test]
        fn hostile_records_are_corrupted_and_nothing_is_written(
            hostile in proptest::collection::vec(hostile_line(), 1..4),
            at in 0usize..7,
        ) {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let (_, dir) = archived_of(4, 3, 3).await;
                let archive = dir.path().join("b");
                let file = archive.join("metrics.ndjson.gz");
                let mut lines = read_all_lines(&file);
                let at = at.min(lines.len());
                let blank_only = hostile
                    .iter()
                    .all(|l| l.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\r')));
                for (i, line) in hostile.into_iter().enumerate() {
                    lines.insert(at + i, line);
                }
                write_lines(&file, &lines);
                let target = memory();
                match restore(&target, &archive).await {
                    Ok(_) => assert!(blank_only, "a hostile line was accepted"),
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::Corrupted, "{e}");
                        assert!(e.to_string().contains("metrics.ndjson.gz:"), "{e}");
                        assert_eq!(counts(&target).await, (0, 0, 0, 0), "{e}");
                    }
                }
            });
        }
    }

    /// An archive holding an item over today's limits (written by a build without them, or by
    /// hand), such as a sample with 10 tags of 10 KiB, is refused whole naming the archive file
    /// and line, before any batch is written: never a partial restore.
    #[tokio::test(flavor = "multi_thread")]
    async fn an_item_over_the_limits_is_refused_by_archive_line_before_any_write() {
        let (_, dir) = archived_of(3, 10, 2).await;
        let archive = dir.path().join("b");
        let file = archive.join("metrics.ndjson.gz");
        let mut lines = read_all_lines(&file);
        let mut wide = MetricValue::new(time::now(), 1.0);
        for k in 0..10 {
            wide = wide.tag(format!("k{k}"), "x".repeat(10 * 1024));
        }
        let over = Metric::new("zz-wide", "cpu", MetricType::Gauge).with_value(wide);
        lines.push(serde_json::to_string(&over).unwrap());
        write_lines(&file, &lines);
        let target = memory();
        let err = restore(&target, &archive).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupted, "{err}");
        assert!(err.to_string().contains("metrics.ndjson.gz:4: "), "{err}");
        assert!(err.to_string().contains("values[0].tags"), "{err}");
        assert_eq!(counts(&target).await, (0, 0, 0, 0));
    }

    /// Lines of JSON whitespace are skipped like empty ones.
    #[tokio::test(flavor = "multi_thread")]
    async fn blank_lines_are_skipped() {
        let (source, dir) = archived().await;
        let archive = dir.path().join("b");
        let file = archive.join("agent_states.ndjson.gz");
        let spaced: Vec<String> = read_all_lines(&file)
            .into_iter()
            .flat_map(|line| [line, "  \t \r".to_owned(), String::new()])
            .collect();
        write_lines(&file, &spaced);
        let target = memory();
        restore(&target, &archive).await.unwrap();
        assert_eq!(counts(&target).await, counts(&source).await);
    }

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
