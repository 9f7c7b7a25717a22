//! The embedded mode: the Qdrant engine in-process through `qdrant-edge` (=0.7.2).
//!
//! One `EdgeShard` (a directory) per [`Collection`] under the root directory of the URL. The
//! engine is synchronous and does disk I/O, so every call runs on tokio's blocking pool. Two
//! rules of the engine shape this file (see `docs/qdrant-spike.md`):
//! - `EdgeShard::load` does not replay the WAL, so un-flushed writes are lost on reopen: every
//!   write batch ends with `flush()` before it returns.
//! - `flush()` panics if it races an `update()` on another thread: each shard has one writer
//!   lock held around `update` + `flush` (reads take no lock).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use aimon_core::{Error, ErrorKind, Result};
use async_trait::async_trait;
use qdrant_edge::external::ordered_float::OrderedFloat;
use qdrant_edge::{
    Condition as EdgeCondition, CountRequest, CreateIndex, Distance, EdgeConfigBuilder, EdgeShard,
    EdgeVectorParamsBuilder, FieldCondition, FieldIndexOperations, Filter, JsonPath, Match,
    PayloadFieldSchema, PayloadSchemaType, PointId, PointInsertOperations, PointOperations,
    PointStruct, PointStructPersisted, QueryEnum, Range, ScrollRequest, SearchParams,
    SearchRequest, UpdateOperation, WithPayloadInterface, WithVector,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::engine::{BackupPayloads, Collection, Engine, Hit, Point, ScrollPage};
use crate::error::{engine_error, io_error, join_error};
use crate::filter::{Condition, FilterIr, float_bounds};
use crate::payload::{IndexKind, indexes};

/// Points per `update()` call: one WAL record each; the batch is flushed once at its end.
const UPSERT_CHUNK: usize = 512;
/// Points per scroll page.
const SCROLL_PAGE: usize = 1000;
/// The file a native backup starts with.
pub const BACKUP_MANIFEST: &str = "aimon-qdrant-edge.json";
const BACKUP_FORMAT: &str = "aimon-qdrant-edge";
const BACKUP_VERSION: u64 = 1;

fn json_path(field: &str) -> Result<JsonPath> {
    field.parse().map_err(|()| {
        Error::new(
            ErrorKind::Backend,
            format!("{field:?} is not a valid Qdrant payload path"),
        )
    })
}

/// The engine's filter for an IR; `None` for an empty one.
pub fn to_filter(ir: &FilterIr) -> Result<Option<Filter>> {
    if ir.is_empty() {
        return Ok(None);
    }
    let mut must = Vec::with_capacity(ir.must.len());
    for condition in &ir.must {
        must.push(match condition {
            Condition::Keyword { field, any_of } => {
                let m = match any_of.as_slice() {
                    [one] => Match::from(one.clone()),
                    many => Match::from(many.to_vec()),
                };
                EdgeCondition::Field(FieldCondition::new_match(json_path(field)?, m))
            }
            Condition::IntRange { field, gte, lt } => {
                let (lower, upper) = float_bounds(*gte, *lt);
                EdgeCondition::Field(FieldCondition::new_range(
                    json_path(field)?,
                    Range {
                        gte: lower.map(OrderedFloat),
                        lte: upper.map(OrderedFloat),
                        gt: None,
                        lt: None,
                    },
                ))
            }
        });
    }
    Ok(Some(Filter {
        must: Some(must),
        ..Default::default()
    }))
}

struct Shard {
    shard: EdgeShard,
    /// Held around `update` + `flush`.
    writer: Mutex<()>,
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere leaves nothing half-written to recover.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `ops` and flushes, under the writer lock.
    fn write(&self, ops: Vec<UpdateOperation>) -> Result<()> {
        let _guard = self.lock();
        let mut result = Ok(());
        for op in ops {
            if let Err(e) = self.shard.update(op) {
                result = Err(engine_error(e));
                break;
            }
        }
        // Flushed even after a failure: earlier operations of the batch were applied.
        self.shard.flush();
        result
    }

    fn scroll(&self, filter: Option<Filter>) -> Result<Vec<(Uuid, Map<String, Value>)>> {
        let mut out = Vec::new();
        let mut offset = None;
        loop {
            let (page, next) = self.scroll_page(filter.clone(), offset, SCROLL_PAGE)?;
            out.extend(page);
            match next {
                Some(n) => offset = Some(n),
                None => return Ok(out),
            }
        }
    }

    fn scroll_page(
        &self,
        filter: Option<Filter>,
        offset: Option<Uuid>,
        limit: usize,
    ) -> Result<ScrollPage> {
        let (records, next) = self
            .shard
            .scroll(ScrollRequest {
                offset: offset.map(PointId::Uuid),
                limit: Some(limit),
                filter,
                with_payload: Some(WithPayloadInterface::Bool(true)),
                with_vector: WithVector::Bool(false),
                order_by: None,
            })
            .map_err(engine_error)?;
        let page = records
            .into_iter()
            .filter_map(|r| match (r.id, r.payload) {
                (PointId::Uuid(id), Some(payload)) => Some((id, payload.0)),
                _ => None,
            })
            .collect();
        let next = match next {
            Some(PointId::Uuid(id)) => Some(id),
            _ => None,
        };
        Ok((page, next))
    }
}

struct Shards {
    shards: Vec<(Collection, Shard)>,
}

impl Shards {
    fn get(&self, collection: Collection) -> &Shard {
        // Every collection is opened by `open`; the list is indexed by `Collection::ALL` order.
        &self.shards[Collection::ALL
            .iter()
            .position(|c| *c == collection)
            .unwrap_or_default()]
        .1
    }
}

/// The shards of one embedded store.
pub struct EdgeEngine {
    root: PathBuf,
    dimension: usize,
    shards: RwLock<Option<Arc<Shards>>>,
}

impl std::fmt::Debug for EdgeEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeEngine")
            .field("root", &self.root)
            .field("dimension", &self.dimension)
            .finish_non_exhaustive()
    }
}

fn open_shard(dir: &Path, collection: Collection, dimension: usize) -> Result<Shard> {
    let dim = collection.dimension(dimension);
    if dir.join("edge_config.json").exists() {
        let shard = EdgeShard::load(dir, None).map_err(engine_error)?;
        let stored = shard.config().vectors.get("").map(|v| v.size);
        if stored != Some(dim) {
            return Err(Error::config(format!(
                "the Qdrant edge collection {} has vectors of dimension {stored:?}, the \
                 embedder has {dim}",
                dir.display()
            )));
        }
        return Ok(Shard {
            shard,
            writer: Mutex::new(()),
        });
    }
    fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, e))?;
    let config = EdgeConfigBuilder::new()
        .vector("", EdgeVectorParamsBuilder::new(dim, Distance::Dot).build())
        .build();
    let shard = EdgeShard::new(dir, config).map_err(engine_error)?;
    let shard = Shard {
        shard,
        writer: Mutex::new(()),
    };
    let mut ops = Vec::new();
    for (field, kind) in indexes(collection) {
        let schema = match kind {
            IndexKind::Keyword => PayloadSchemaType::Keyword,
            IndexKind::Integer => PayloadSchemaType::Integer,
        };
        ops.push(UpdateOperation::FieldIndexOperation(
            FieldIndexOperations::CreateIndex(CreateIndex {
                field_name: json_path(field)?,
                field_schema: Some(PayloadFieldSchema::FieldType(schema)),
            }),
        ));
    }
    shard.write(ops)?;
    Ok(shard)
}

impl EdgeEngine {
    /// Opens (creating if needed) the store under `root`, with vectors of `dimension` for
    /// alerts and agent states.
    pub async fn open(root: PathBuf, dimension: usize) -> Result<Self> {
        let dir = root.clone();
        let shards = tokio::task::spawn_blocking(move || -> Result<Shards> {
            fs::create_dir_all(&dir).map_err(|e| io_error("cannot create", &dir, e))?;
            let mut shards = Vec::new();
            for c in Collection::ALL {
                shards.push((c, open_shard(&dir.join(c.name()), c, dimension)?));
            }
            Ok(Shards { shards })
        })
        .await
        .map_err(join_error)??;
        Ok(EdgeEngine {
            root,
            dimension,
            shards: RwLock::new(Some(Arc::new(shards))),
        })
    }

    fn shards(&self) -> Result<Arc<Shards>> {
        self.shards
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| Error::new(ErrorKind::Unavailable, "the backend is closed"))
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Shards) -> Result<T> + Send + 'static,
    {
        let shards = self.shards()?;
        tokio::task::spawn_blocking(move || f(&shards))
            .await
            .map_err(join_error)?
    }
}

fn persisted(p: Point) -> PointStructPersisted {
    let payload = Value::Object(p.payload);
    PointStruct::new(PointId::Uuid(p.id), p.vector, payload).into()
}

/// The disk `path` takes, as `du` counts it: the blocks allocated to it and to everything
/// under it (symbolic links not followed), so a sparse file counts what is written, not its
/// length. Where the platform has no block count, file lengths.
fn allocated_bytes(path: &Path) -> std::io::Result<u64> {
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        let mut total = own_bytes(&meta);
        for entry in fs::read_dir(path)? {
            match allocated_bytes(&entry?.path()) {
                Ok(bytes) => total += bytes,
                // A file the engine removed (a merged segment) between listing and reading.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        return Ok(total);
    }
    Ok(own_bytes(&meta))
}

/// The blocks allocated to one file or directory, not what it contains.
fn own_bytes(meta: &fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // `st_blocks` is in 512-byte units whatever the file system's block size.
        meta.blocks() * 512
    }
    #[cfg(not(unix))]
    {
        if meta.is_dir() { 0 } else { meta.len() }
    }
}

#[async_trait]
impl Engine for EdgeEngine {
    async fn upsert(&self, collection: Collection, points: Vec<Point>) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        self.blocking(move |s| {
            let mut ops = Vec::new();
            let mut points = points.into_iter().peekable();
            while points.peek().is_some() {
                let chunk: Vec<_> = points.by_ref().take(UPSERT_CHUNK).map(persisted).collect();
                ops.push(UpdateOperation::PointOperation(
                    PointOperations::UpsertPoints(PointInsertOperations::PointsList(chunk)),
                ));
            }
            s.get(collection).write(ops)
        })
        .await
    }

    async fn delete(&self, collection: Collection, ids: Vec<Uuid>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.blocking(move |s| {
            let ops = ids
                .chunks(UPSERT_CHUNK * 8)
                .map(|chunk| {
                    UpdateOperation::PointOperation(PointOperations::DeletePoints {
                        ids: chunk.iter().map(|id| PointId::Uuid(*id)).collect(),
                    })
                })
                .collect();
            s.get(collection).write(ops)
        })
        .await
    }

    async fn get(
        &self,
        collection: Collection,
        ids: Vec<Uuid>,
    ) -> Result<Vec<(Uuid, Map<String, Value>)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.blocking(move |s| {
            let ids: Vec<PointId> = ids.into_iter().map(PointId::Uuid).collect();
            let records = s
                .get(collection)
                .shard
                .retrieve(
                    &ids,
                    Some(WithPayloadInterface::Bool(true)),
                    Some(WithVector::Bool(false)),
                )
                .map_err(engine_error)?;
            Ok(records
                .into_iter()
                .filter_map(|r| match (r.id, r.payload) {
                    (PointId::Uuid(id), Some(p)) => Some((id, p.0)),
                    _ => None,
                })
                .collect())
        })
        .await
    }

    async fn scroll(
        &self,
        collection: Collection,
        filter: &FilterIr,
    ) -> Result<Vec<(Uuid, Map<String, Value>)>> {
        let filter = to_filter(filter)?;
        self.blocking(move |s| s.get(collection).scroll(filter))
            .await
    }

    async fn scroll_page(
        &self,
        collection: Collection,
        filter: &FilterIr,
        offset: Option<Uuid>,
        limit: usize,
    ) -> Result<ScrollPage> {
        let filter = to_filter(filter)?;
        self.blocking(move |s| s.get(collection).scroll_page(filter, offset, limit))
            .await
    }

    async fn search(
        &self,
        collection: Collection,
        vector: Vec<f32>,
        filter: &FilterIr,
        limit: usize,
    ) -> Result<Vec<Hit>> {
        let filter = to_filter(filter)?;
        self.blocking(move |s| {
            let points = s
                .get(collection)
                .shard
                .search(SearchRequest {
                    query: QueryEnum::from(vector),
                    filter,
                    // Exact: HNSW (built only past the indexing threshold) could miss a
                    // neighbour and change the ranking the other backends give.
                    params: Some(SearchParams {
                        exact: true,
                        ..Default::default()
                    }),
                    limit,
                    offset: 0,
                    with_payload: Some(WithPayloadInterface::Bool(true)),
                    with_vector: None,
                    score_threshold: None,
                })
                .map_err(engine_error)?;
            Ok(points
                .into_iter()
                .filter_map(|p| {
                    p.payload.map(|payload| Hit {
                        payload: payload.0,
                        score: p.score,
                    })
                })
                .collect())
        })
        .await
    }

    async fn count(&self, collection: Collection, filter: &FilterIr) -> Result<u64> {
        let filter = to_filter(filter)?;
        self.blocking(move |s| {
            s.get(collection)
                .shard
                .count(CountRequest {
                    filter,
                    exact: true,
                })
                .map(|n| n as u64)
                .map_err(engine_error)
        })
        .await
    }

    async fn size_bytes(&self) -> std::result::Result<u64, String> {
        let root = self.root.clone();
        // Blocks, not lengths: the engine preallocates sparse files (see `apparent_bytes`).
        tokio::task::spawn_blocking(move || allocated_bytes(&root))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot measure {}: {e}", self.root.display()))
    }

    async fn extra_stats(&self) -> Result<BTreeMap<String, Value>> {
        let root = self.root.clone();
        self.blocking(move |s| {
            let mut extra = BTreeMap::new();
            extra.insert("mode".to_owned(), json!("embedded (qdrant-edge 0.7.2)"));
            extra.insert("path".to_owned(), json!(root.display().to_string()));
            for (c, shard) in &s.shards {
                let info = shard.shard.info();
                extra.insert(
                    format!("{}_collection", c.name()),
                    json!({
                        "points": info.points_count,
                        "segments": info.segments_count,
                        "indexed_vectors": info.indexed_vectors_count,
                        "payload_indexes": info.payload_schema.len(),
                    }),
                );
            }
            // Apparent size: the engine preallocates sparse files (64 MiB of WAL per shard).
            extra.insert(
                "apparent_bytes".to_owned(),
                json!(aimon_core::archive::dir_size(&root)),
            );
            Ok(extra)
        })
        .await
    }

    async fn native_backup(&self, dir: &Path) -> Result<u64> {
        let dir = dir.to_path_buf();
        let dimension = self.dimension;
        self.blocking(move |s| {
            fs::create_dir(&dir).map_err(|e| io_error("cannot create", &dir, e))?;
            // Every writer lock at once, in a fixed order: the copy is one consistent state.
            let guards: Vec<_> = s.shards.iter().map(|(_, shard)| shard.lock()).collect();
            for (c, shard) in &s.shards {
                shard.shard.flush();
                copy_dir_sparse(shard.shard.path(), &dir.join(c.name()))?;
            }
            drop(guards);
            let manifest = json!({
                "format": BACKUP_FORMAT,
                "version": BACKUP_VERSION,
                "dimension": dimension,
                "collections": Collection::ALL.map(Collection::name),
            });
            let path = dir.join(BACKUP_MANIFEST);
            fs::write(&path, manifest.to_string())
                .map_err(|e| io_error("cannot write", &path, e))?;
            Ok(aimon_core::archive::dir_size(&dir))
        })
        .await
    }

    async fn read_native_backup(&self, dir: &Path) -> Result<BackupPayloads> {
        let dir = dir.to_path_buf();
        let dimension = self.dimension;
        tokio::task::spawn_blocking(move || read_backup(&dir, dimension))
            .await
            .map_err(join_error)?
    }

    async fn close(&self) -> Result<()> {
        let taken = self
            .shards
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(shards) = taken {
            tokio::task::spawn_blocking(move || {
                for (_, shard) in &shards.shards {
                    let _guard = shard.lock();
                    shard.shard.flush();
                }
            })
            .await
            .map_err(join_error)?;
        }
        Ok(())
    }
}

fn corrupted(dir: &Path, problem: impl std::fmt::Display) -> Error {
    Error::corrupted(format!(
        "{} is not a native Qdrant edge backup of aimon: {problem}",
        dir.display()
    ))
}

/// Reads a native backup: checks its manifest, opens a scratch copy of each shard (loading
/// takes a lock and writes), and returns every payload.
fn read_backup(dir: &Path, dimension: usize) -> Result<BackupPayloads> {
    let meta = fs::metadata(dir).map_err(|e| io_error("cannot read", dir, e))?;
    if !meta.is_dir() {
        return Err(corrupted(dir, "not a directory"));
    }
    let manifest_path = dir.join(BACKUP_MANIFEST);
    let text = fs::read_to_string(&manifest_path)
        .map_err(|e| corrupted(dir, format!("no readable {BACKUP_MANIFEST}: {e}")))?;
    let manifest: Value =
        serde_json::from_str(&text).map_err(|e| corrupted(dir, format!("bad manifest: {e}")))?;
    if manifest["format"] != json!(BACKUP_FORMAT) {
        return Err(corrupted(dir, "unknown format"));
    }
    match manifest["version"].as_u64() {
        Some(BACKUP_VERSION) => {}
        Some(v) if v > BACKUP_VERSION => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("native backup version {v} is newer than this aimon ({BACKUP_VERSION})"),
            ));
        }
        _ => return Err(corrupted(dir, "bad version")),
    }
    if manifest["dimension"].as_u64() != Some(dimension as u64) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "the backup's vectors have dimension {}, this store's embedder has {dimension}",
                manifest["dimension"]
            ),
        ));
    }
    let scratch = tempfile::Builder::new()
        .prefix("aimon-qdrant-restore-")
        .tempdir()
        .map_err(|e| {
            Error::new(ErrorKind::Backend, "cannot create a scratch directory").with_source(e)
        })?;
    let mut out = Vec::new();
    for c in Collection::ALL {
        let src = dir.join(c.name());
        if !src.join("edge_config.json").is_file() {
            return Err(corrupted(dir, format!("no {} collection", c.name())));
        }
        let copy = scratch.path().join(c.name());
        copy_dir_sparse(&src, &copy)?;
        let shard = EdgeShard::load(&copy, None)
            .map_err(|e| corrupted(dir, format!("collection {}: {e}", c.name())))?;
        let shard = Shard {
            shard,
            writer: Mutex::new(()),
        };
        let payloads = shard.scroll(None)?.into_iter().map(|(_, p)| p).collect();
        out.push((c, payloads));
    }
    Ok(out)
}

/// Copies a directory tree, leaving holes where the source has blocks of zeros: the engine
/// preallocates its WAL and segment files sparsely (64 MiB apparent per shard), and a plain
/// copy would write every zero.
fn copy_dir_sparse(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).map_err(|e| io_error("cannot create", to, e))?;
    let entries = fs::read_dir(from).map_err(|e| io_error("cannot read", from, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_error("cannot read", from, e))?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .map_err(|e| io_error("cannot read", &src, e))?;
        if kind.is_dir() {
            copy_dir_sparse(&src, &dst)?;
        } else if kind.is_file() {
            copy_file_sparse(&src, &dst).map_err(|e| io_error("cannot copy", &src, e))?;
        }
    }
    Ok(())
}

fn copy_file_sparse(from: &Path, to: &Path) -> std::io::Result<()> {
    const BLOCK: usize = 64 * 1024;
    let mut input = fs::File::open(from)?;
    let len = input.metadata()?.len();
    let mut output = fs::File::create(to)?;
    let mut buf = vec![0u8; BLOCK];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|b| *b == 0) {
            output.seek(SeekFrom::Current(n as i64))?;
        } else {
            output.write_all(&buf[..n])?;
        }
    }
    output.set_len(len)?;
    output.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A preallocated sparse file counts what was written into it, as the engine's WAL does;
    /// a written file counts at least its length; subdirectories are walked.
    #[test]
    fn the_size_on_disk_counts_blocks_not_lengths() {
        let dir = tempfile::tempdir().unwrap();
        let sparse = fs::File::create(dir.path().join("wal")).unwrap();
        sparse.set_len(64 << 20).unwrap();
        fs::create_dir(dir.path().join("segment")).unwrap();
        fs::write(dir.path().join("segment/data"), vec![7u8; 100_000]).unwrap();
        let bytes = allocated_bytes(dir.path()).unwrap();
        assert!(bytes >= 100_000, "{bytes}");
        assert!(
            bytes < 4 << 20,
            "{bytes}: the sparse file's length was counted"
        );
    }

    #[test]
    fn the_ir_becomes_a_must_filter() {
        let ir = FilterIr::new()
            .keyword("status", "active")
            .range("ts_us", Some(10), Some(20));
        let filter = to_filter(&ir).unwrap().unwrap();
        let must = filter.must.unwrap();
        assert_eq!(must.len(), 2);
        let text = serde_json::to_string(&must).unwrap();
        assert!(text.contains("\"status\""), "{text}");
        assert!(
            text.contains("\"gte\":10.0") && text.contains("\"lte\":20.0"),
            "{text}"
        );
        assert!(to_filter(&FilterIr::new()).unwrap().is_none());
    }

    #[test]
    fn sparse_copies_keep_content_and_length() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a");
        let mut data = vec![0u8; 300_000];
        data[5] = 7;
        data[200_001] = 9;
        fs::write(&src, &data).unwrap();
        let dst = dir.path().join("b");
        copy_file_sparse(&src, &dst).unwrap();
        assert_eq!(fs::read(&dst).unwrap(), data);
    }
}
