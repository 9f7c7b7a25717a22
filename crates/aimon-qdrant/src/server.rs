//! The server mode: a Qdrant server over gRPC through `qdrant-client` 1.20 (default features
//! off: no second TLS stack). Collections are `<prefix>_<kind>`; each is created with its
//! vector size and payload indexes when missing. An existing collection must have the vector
//! size this store's embedder gives (`ConfigInvalid` otherwise), and a payload index missing
//! from it is created. Native backups are collection snapshots ([`crate::snapshot`]).
//!
//! Verified only where a server is present (`AIMON_TEST_QDRANT_URL`, a `qdrant` binary, or the
//! test fixtures' pinned container): this machine's CI has none. The request building
//! (collection config, indexes, vector-size check, filters, points, chunking) is unit-tested
//! below without a server.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use aimon_core::{Error, ErrorKind, Result};
use async_trait::async_trait;
use prost::Message;
use qdrant_client::Qdrant;
use qdrant_client::qdrant::{
    self, CollectionInfo, CountPointsBuilder, CreateCollection, CreateCollectionBuilder,
    CreateFieldIndexCollection, CreateFieldIndexCollectionBuilder, DeletePointsBuilder,
    DeleteSnapshotRequestBuilder, Distance, FieldType, GetPointsBuilder, PointId, PointStruct,
    PointsIdsList, Query, QueryPointsBuilder, ScrollPointsBuilder, SearchParamsBuilder,
    UpsertPointsBuilder, VectorParamsBuilder, point_id::PointIdOptions,
};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::config::{CollectionOptions, QdrantMode};
use crate::engine::{BackupPayloads, Collection, Engine, Hit, Point, ScrollPage, ServerInfo};
use crate::error::{client_error, client_error_kind};
use crate::filter::{Condition, FilterIr, float_bounds};
use crate::payload::{IndexKind, indexes};
use crate::snapshot::{self, Manifest, Rest};

/// A gRPC request may carry at most 32 MiB (the server's default `max_request_size_mb`);
/// upserts are split below this, with room for the request's own fields.
pub const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024 - 64 * 1024;
const SCROLL_PAGE: u32 = 1000;

/// The order a server backup snapshots the collections in. The snapshots are taken one after
/// another, not at one instant: samples before series, because writers store a series after
/// its samples, so a series written meanwhile is in the backup with its samples.
pub const SNAPSHOT_ORDER: [Collection; 4] = [
    Collection::Samples,
    Collection::Series,
    Collection::Alerts,
    Collection::AgentStates,
];

/// Drops the samples whose series is not in a server backup, with a warning: the collections
/// are snapshotted one at a time, so a retention sweep (or a writer in another process) between
/// two snapshots can leave samples of a series that is gone. The embedded mode copies every
/// shard under its writer locks and treats such samples as corruption instead.
pub fn drop_orphan_samples(collections: &mut BackupPayloads) {
    let series: std::collections::HashSet<String> = collections
        .iter()
        .filter(|(c, _)| *c == Collection::Series)
        .flat_map(|(_, payloads)| payloads.iter())
        .filter_map(|p| {
            p.get(crate::payload::field::ID)?
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    for (c, payloads) in collections.iter_mut() {
        if *c != Collection::Samples {
            continue;
        }
        let before = payloads.len();
        payloads.retain(|p| {
            p.get(crate::payload::field::SERIES_ID)
                .and_then(Value::as_str)
                .is_some_and(|id| series.contains(id))
        });
        let dropped = before - payloads.len();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "samples whose series is not in the server backup are left out (the series went between two collection snapshots)"
            );
        }
    }
}

/// The collection of `collection` under `prefix`.
pub fn collection_name(prefix: &str, collection: Collection) -> String {
    format!("{prefix}_{}", collection.name())
}

/// The request creating a collection: one unnamed dense vector, dot product (vectors are stored
/// at unit length, so it is the cosine), and the cluster layout `options` sets (what it leaves
/// unset is the server's default).
pub fn create_collection_request(
    name: &str,
    dimension: usize,
    options: &CollectionOptions,
) -> CreateCollection {
    let mut builder = CreateCollectionBuilder::new(name)
        .vectors_config(VectorParamsBuilder::new(dimension as u64, Distance::Dot));
    if let Some(n) = options.shard_number {
        builder = builder.shard_number(n);
    }
    if let Some(n) = options.replication_factor {
        builder = builder.replication_factor(n);
    }
    if let Some(n) = options.write_consistency_factor {
        builder = builder.write_consistency_factor(n);
    }
    if let Some(on_disk) = options.on_disk_payload {
        // The deprecated flag rather than `payload.memory` (1.19+): servers before 1.19 ignore
        // the new field, and newer ones map the flag to `cold` / `cached` themselves.
        builder = builder.on_disk_payload(on_disk);
    }
    builder.build()
}

/// The collection's layout as the server reports it (`CollectionInfo.config.params`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectionLayout {
    /// Shards per collection.
    pub shard_number: u32,
    /// `None` from a server too old to report it.
    pub replication_factor: Option<u32>,
    /// Replicas that must apply a write; `None` from a server too old to report it.
    pub write_consistency_factor: Option<u32>,
    /// Whether payloads live on disk: `payload.memory` where the server reports it (1.19+:
    /// `cold` is on disk, `cached` is what `on_disk_payload: false` becomes), else the
    /// deprecated flag.
    pub on_disk_payload: bool,
    /// `payload.memory` as the server names it (`Cold`, `Cached`), from 1.19 on.
    pub payload_memory: Option<&'static str>,
}

impl CollectionLayout {
    /// The layout in a collection's info; `None` when the server sent no parameters.
    pub fn of(info: &CollectionInfo) -> Option<Self> {
        let params = info.config.as_ref()?.params.as_ref()?;
        let memory = params
            .payload
            .and_then(|p| p.memory)
            .and_then(|m| qdrant::Memory::try_from(m).ok())
            .filter(|m| *m != qdrant::Memory::Unknown);
        #[allow(deprecated)] // Still reported; `payload.memory` is new in 1.19.
        let flag = params.on_disk_payload;
        let on_disk_payload = match memory {
            Some(qdrant::Memory::Cold) => true,
            Some(qdrant::Memory::Cached | qdrant::Memory::Pinned) => false,
            _ => flag,
        };
        Some(CollectionLayout {
            shard_number: params.shard_number,
            replication_factor: params.replication_factor,
            write_consistency_factor: params.write_consistency_factor,
            on_disk_payload,
            payload_memory: memory.map(|m| m.as_str_name()),
        })
    }

    /// The options `requested` sets that this collection does not have, as
    /// `option: requested (has actual)`.
    pub fn differences(&self, requested: &CollectionOptions) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |key: &str, want: Option<String>, have: Option<String>| {
            if let Some(want) = want
                && Some(&want) != have.as_ref()
            {
                let have = have.unwrap_or_else(|| "unknown".to_owned());
                out.push(format!("{key}: {want} (has {have})"));
            }
        };
        let text = |n: Option<u32>| n.map(|n| n.to_string());
        check(
            "shard_number",
            text(requested.shard_number),
            Some(self.shard_number.to_string()),
        );
        check(
            "replication_factor",
            text(requested.replication_factor),
            text(self.replication_factor),
        );
        check(
            "write_consistency_factor",
            text(requested.write_consistency_factor),
            text(self.write_consistency_factor),
        );
        check(
            "on_disk_payload",
            requested.on_disk_payload.map(|b| b.to_string()),
            Some(self.on_disk_payload.to_string()),
        );
        out
    }
}

/// The payload index requests of a collection.
pub fn index_requests(name: &str, collection: Collection) -> Vec<CreateFieldIndexCollection> {
    indexes(collection)
        .iter()
        .map(|(field, kind)| {
            let ty = match kind {
                IndexKind::Keyword => FieldType::Keyword,
                IndexKind::Integer => FieldType::Integer,
            };
            CreateFieldIndexCollectionBuilder::new(name, *field, ty)
                .wait(true)
                .build()
        })
        .collect()
}

/// The index requests of the fields `info` (an existing collection) has no index for.
pub fn missing_index_requests(
    name: &str,
    collection: Collection,
    info: &CollectionInfo,
) -> Vec<CreateFieldIndexCollection> {
    index_requests(name, collection)
        .into_iter()
        .filter(|r| !info.payload_schema.contains_key(&r.field_name))
        .collect()
}

/// Checks that an existing collection has one unnamed vector of `dimension`: a collection made
/// by a store with another embedder (or by something else) is `ConfigInvalid`, not a stream of
/// failed upserts later.
pub fn check_vector_size(name: &str, info: &CollectionInfo, dimension: usize) -> Result<()> {
    let config = info
        .config
        .as_ref()
        .and_then(|c| c.params.as_ref())
        .and_then(|p| p.vectors_config.as_ref())
        .and_then(|v| v.config.as_ref());
    match config {
        Some(qdrant::vectors_config::Config::Params(p)) if p.size == dimension as u64 => Ok(()),
        Some(qdrant::vectors_config::Config::Params(p)) => Err(Error::config(format!(
            "the Qdrant collection {name} holds vectors of size {}, this store's embedder \
             makes {dimension}: use another collection_prefix, or the embedder it was made with",
            p.size
        ))),
        _ => Err(Error::config(format!(
            "the Qdrant collection {name} does not have one unnamed vector: it was not made by \
             aimon; use another collection_prefix"
        ))),
    }
}

/// A collection's figures for `stats().extra`: its size and the layout it really has.
pub fn collection_stats(name: &str, info: &CollectionInfo) -> Value {
    let mut stats = json!({
        "name": name,
        "points": info.points_count,
        "segments": info.segments_count,
        "indexed_vectors": info.indexed_vectors_count,
        "payload_indexes": info.payload_schema.len(),
    });
    if let (Some(layout), Some(map)) = (CollectionLayout::of(info), stats.as_object_mut()) {
        map.insert("shard_number".into(), json!(layout.shard_number));
        map.insert(
            "replication_factor".into(),
            json!(layout.replication_factor),
        );
        map.insert(
            "write_consistency_factor".into(),
            json!(layout.write_consistency_factor),
        );
        map.insert("on_disk_payload".into(), json!(layout.on_disk_payload));
        if let Some(memory) = layout.payload_memory {
            map.insert("payload_memory".into(), json!(memory));
        }
    }
    stats
}

/// The version and commit of a health-check answer; `Err` says why the version is unknown
/// (the call failed, or the answer has none).
pub fn server_version(
    reply: Result<qdrant::HealthCheckReply>,
) -> (std::result::Result<String, String>, Option<String>) {
    match reply {
        Ok(reply) => {
            let commit = reply.commit.filter(|c| !c.trim().is_empty());
            let version = reply.version.trim();
            if version.is_empty() {
                (Err("the health check named no version".to_owned()), commit)
            } else {
                (Ok(version.to_owned()), commit)
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "the Qdrant server's health check failed");
            (Err(format!("health check failed: {e}")), None)
        }
    }
}

/// The client's filter for an IR; `None` for an empty one.
pub fn to_filter(ir: &FilterIr) -> Option<qdrant::Filter> {
    if ir.is_empty() {
        return None;
    }
    let must = ir
        .must
        .iter()
        .map(|c| match c {
            // Explicitly `Keyword`: the client turns a plain `String` with whitespace into a
            // full-text match, a substring scan where the embedded mode matches exactly.
            Condition::Keyword { field, any_of } => match any_of.as_slice() {
                [one] => qdrant::Condition::matches(
                    *field,
                    qdrant::r#match::MatchValue::Keyword(one.clone()),
                ),
                many => qdrant::Condition::matches(*field, many.to_vec()),
            },
            Condition::IntRange { field, gte, lt } => {
                let (gte, lte) = float_bounds(*gte, *lt);
                qdrant::Condition::range(
                    *field,
                    qdrant::Range {
                        gte,
                        lte,
                        ..Default::default()
                    },
                )
            }
        })
        .collect();
    Some(qdrant::Filter {
        must,
        ..Default::default()
    })
}

/// A point as the client sends it.
pub fn to_point(point: Point) -> Result<PointStruct> {
    let payload = qdrant_client::Payload::from(point.payload);
    Ok(PointStruct::new(
        PointId::from(point.id),
        point.vector,
        payload,
    ))
}

/// Splits points into upsert requests of at most `max_bytes` each (by protobuf encoded length,
/// which is what the server's limit counts). A single point above the limit is `InvalidInput`.
pub fn chunk_by_bytes(points: Vec<PointStruct>, max_bytes: usize) -> Result<Vec<Vec<PointStruct>>> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut size = 0usize;
    for point in points {
        // Field tag + length prefix of the repeated message: at most 1 + 10 bytes.
        let len = point.encoded_len() + 11;
        if len > max_bytes {
            return Err(Error::invalid_input(
                "point",
                format!("encodes to {len} bytes, over the {max_bytes}-byte request limit"),
            ));
        }
        if size + len > max_bytes && !current.is_empty() {
            chunks.push(std::mem::take(&mut current));
            size = 0;
        }
        size += len;
        current.push(point);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    Ok(chunks)
}

fn uuid_of(id: Option<PointId>) -> Option<Uuid> {
    match id?.point_id_options? {
        PointIdOptions::Uuid(s) => s.parse().ok(),
        PointIdOptions::Num(_) => None,
    }
}

fn json_payload(payload: HashMap<String, qdrant::Value>) -> Map<String, Value> {
    payload
        .into_iter()
        .map(|(k, v)| (k, Value::from(v)))
        .collect()
}

/// The collections of one namespace on a server.
pub struct ServerEngine {
    client: Qdrant,
    /// The same server with the snapshot timeout: making a snapshot of a large collection
    /// takes far longer than one request's timeout.
    snapshots: Qdrant,
    rest: Rest,
    endpoint: String,
    prefix: String,
    dimension: usize,
    /// Applied when a collection is created.
    collection_options: CollectionOptions,
}

impl std::fmt::Debug for ServerEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerEngine")
            .field("endpoint", &self.endpoint)
            .field("prefix", &self.prefix)
            .field("collection_options", &self.collection_options)
            .finish_non_exhaustive()
    }
}

/// Drops every collection of the server `mode` names whose name starts with `prefix`, and
/// returns their names. A store's collections are `<collection_prefix>_<kind>`, so this removes
/// a namespace (`prefix` = `"<collection_prefix>_"`), or what a test run that was killed left
/// behind (the test fixtures' namespaces all start with `t_qdrant_`).
pub async fn drop_collections_with_prefix(mode: &QdrantMode, prefix: &str) -> Result<Vec<String>> {
    let QdrantMode::Server {
        endpoint,
        api_key,
        timeout,
        ..
    } = mode
    else {
        return Err(Error::config("not a qdrant:// configuration"));
    };
    if prefix.is_empty() {
        return Err(Error::invalid_input(
            "prefix",
            "must not be empty: it would drop every collection of the server",
        ));
    }
    let client = Qdrant::from_url(endpoint)
        .api_key(api_key.as_ref().map(|k| k.expose().to_owned()))
        .timeout(*timeout)
        .skip_compatibility_check()
        .build()
        .map_err(client_error)?;
    let list = client.list_collections().await.map_err(client_error)?;
    let mut dropped = Vec::new();
    for c in list.collections {
        if c.name.starts_with(prefix) {
            client
                .delete_collection(c.name.as_str())
                .await
                .map_err(client_error)?;
            dropped.push(c.name);
        }
    }
    Ok(dropped)
}

impl ServerEngine {
    /// Connects and creates the namespace's collections and indexes where missing.
    pub async fn connect(mode: &QdrantMode, dimension: usize) -> Result<Self> {
        let QdrantMode::Server {
            endpoint,
            rest_endpoint,
            api_key,
            collection_prefix,
            timeout,
            snapshot_timeout,
            collection_options,
        } = mode
        else {
            return Err(Error::config("not a qdrant:// configuration"));
        };
        let client = |timeout: std::time::Duration| {
            Qdrant::from_url(endpoint)
                .api_key(api_key.as_ref().map(|k| k.expose().to_owned()))
                .timeout(timeout)
                // The check would block this thread on its own runtime.
                .skip_compatibility_check()
                .build()
                .map_err(client_error)
        };
        let engine = ServerEngine {
            client: client(*timeout)?,
            snapshots: client(*snapshot_timeout)?,
            rest: Rest::new(rest_endpoint, api_key.clone(), *timeout, *snapshot_timeout)?,
            endpoint: endpoint.clone(),
            prefix: collection_prefix.clone(),
            dimension,
            collection_options: *collection_options,
        };
        for c in Collection::ALL {
            engine.ensure_collection(c).await?;
        }
        Ok(engine)
    }

    /// Creates the collection when missing with the configured [`CollectionOptions`] (another
    /// process creating it at the same time is fine), checks its vector size and creates the
    /// payload indexes it lacks. An existing collection keeps its layout: a difference from
    /// the options is a warning, not an error (the data is there either way).
    async fn ensure_collection(&self, collection: Collection) -> Result<()> {
        let name = self.name(collection);
        let exists = self
            .client
            .collection_exists(name.as_str())
            .await
            .map_err(client_error)?;
        if !exists {
            let request = create_collection_request(
                &name,
                collection.dimension(self.dimension),
                &self.collection_options,
            );
            match self.client.create_collection(request).await {
                Ok(_) => {}
                Err(e) if client_error_kind(&e) == ErrorKind::Conflict => {}
                Err(e) => return Err(client_error(e)),
            }
        }
        let info = self.info(&name).await?;
        check_vector_size(&name, &info, collection.dimension(self.dimension))?;
        let differences = CollectionLayout::of(&info)
            .map(|layout| layout.differences(&self.collection_options))
            .unwrap_or_default();
        if !differences.is_empty() {
            tracing::warn!(
                collection = %name,
                differences = %differences.join(", "),
                "the Qdrant collection exists with another layout than the options ask for; it \
                 keeps its own (change replication_factor, write_consistency_factor or \
                 on_disk_payload with Qdrant's update-collection API; shard_number is fixed)"
            );
        }
        for request in missing_index_requests(&name, collection, &info) {
            self.client
                .create_field_index(request)
                .await
                .map_err(client_error)?;
        }
        Ok(())
    }

    async fn info(&self, name: &str) -> Result<CollectionInfo> {
        self.client
            .collection_info(name)
            .await
            .map_err(client_error)?
            .result
            .ok_or_else(|| Error::new(ErrorKind::Backend, format!("no info for {name}")))
    }

    /// Every point of the collection `name` that `filter` selects.
    async fn scroll_named(
        &self,
        name: &str,
        filter: &FilterIr,
    ) -> Result<Vec<(Uuid, Map<String, Value>)>> {
        let filter = to_filter(filter);
        let mut out = Vec::new();
        let mut offset = None;
        loop {
            let (page, next) = self
                .scroll_named_page(name, filter.clone(), offset, SCROLL_PAGE)
                .await?;
            out.extend(page);
            match next {
                Some(next) => offset = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// One page of [`ServerEngine::scroll_named`] from `offset`.
    async fn scroll_named_page(
        &self,
        name: &str,
        filter: Option<qdrant::Filter>,
        offset: Option<Uuid>,
        limit: u32,
    ) -> Result<ScrollPage> {
        let mut request = ScrollPointsBuilder::new(name)
            .limit(limit)
            .with_payload(true);
        if let Some(f) = filter {
            request = request.filter(f);
        }
        if let Some(o) = offset {
            request = request.offset(PointId::from(o));
        }
        let response = self.client.scroll(request).await.map_err(client_error)?;
        let page = response
            .result
            .into_iter()
            .filter_map(|p| Some((uuid_of(p.id)?, json_payload(p.payload))))
            .collect();
        Ok((page, uuid_of(response.next_page_offset)))
    }

    /// Snapshots one collection, downloads it into `dir` and deletes the server's copy.
    async fn backup_collection(
        &self,
        collection: Collection,
        dir: &Path,
    ) -> Result<snapshot::Entry> {
        let name = self.name(collection);
        let description = self
            .snapshots
            .create_snapshot(name.as_str())
            .await
            .map_err(client_error)?
            .snapshot_description
            .ok_or_else(|| Error::new(ErrorKind::Backend, format!("no snapshot made of {name}")))?;
        let file = Manifest::file_name(collection);
        let downloaded = self
            .rest
            .download(&name, &description.name, &dir.join(&file))
            .await;
        // The server's copy goes whatever happened: snapshots fill its disk otherwise.
        let deleted = self
            .client
            .delete_snapshot(DeleteSnapshotRequestBuilder::new(
                name.as_str(),
                description.name.as_str(),
            ))
            .await;
        let (bytes, sha256) = downloaded?;
        if let Err(e) = deleted {
            tracing::warn!(collection = %name, snapshot = %description.name, error = %client_error(e), "could not delete the server's snapshot after downloading it");
        }
        if let Some(expected) = description.checksum.filter(|c| !c.is_empty())
            && !expected.eq_ignore_ascii_case(&sha256)
        {
            return Err(Error::corrupted(format!(
                "the snapshot of {name} arrived with SHA-256 {sha256}, the server made \
                     {expected}"
            )));
        }
        Ok(snapshot::Entry {
            kind: collection.name().to_owned(),
            file,
            bytes,
            sha256,
        })
    }

    /// Drops this prefix's scratch collections older than [`snapshot::SCRATCH_MAX_AGE_SECS`]:
    /// left by a restore that was killed or could not drop them. Best effort.
    async fn drop_stale_scratch(&self, now_secs: u64) {
        let Ok(list) = self.client.list_collections().await else {
            return;
        };
        for c in list.collections {
            let stale = snapshot::scratch_started(&self.prefix, &c.name)
                .is_some_and(|t| now_secs.saturating_sub(t) > snapshot::SCRATCH_MAX_AGE_SECS);
            if stale && let Err(e) = self.client.delete_collection(c.name.as_str()).await {
                tracing::warn!(collection = %c.name, error = %client_error(e), "could not drop a stale scratch collection");
            }
        }
    }

    /// Uploads one collection's snapshot as a scratch collection and reads every point back.
    async fn read_snapshot(
        &self,
        dir: &Path,
        entry: &snapshot::Entry,
        scratch: &str,
    ) -> Result<Vec<Map<String, Value>>> {
        self.rest
            .upload(scratch, &dir.join(&entry.file), &entry.sha256)
            .await?;
        let points = self.scroll_named(scratch, &FilterIr::new()).await?;
        Ok(points.into_iter().map(|(_, payload)| payload).collect())
    }

    fn name(&self, collection: Collection) -> String {
        collection_name(&self.prefix, collection)
    }
}

#[async_trait]
impl Engine for ServerEngine {
    async fn upsert(&self, collection: Collection, points: Vec<Point>) -> Result<()> {
        let points = points
            .into_iter()
            .map(to_point)
            .collect::<Result<Vec<_>>>()?;
        for chunk in chunk_by_bytes(points, MAX_REQUEST_BYTES)? {
            self.client
                .upsert_points(UpsertPointsBuilder::new(self.name(collection), chunk).wait(true))
                .await
                .map_err(client_error)?;
        }
        Ok(())
    }

    async fn delete(&self, collection: Collection, ids: Vec<Uuid>) -> Result<()> {
        for chunk in ids.chunks(4096) {
            let ids = chunk.iter().map(|id| PointId::from(*id)).collect();
            self.client
                .delete_points(
                    DeletePointsBuilder::new(self.name(collection))
                        .points(PointsIdsList { ids })
                        .wait(true),
                )
                .await
                .map_err(client_error)?;
        }
        Ok(())
    }

    async fn get(
        &self,
        collection: Collection,
        ids: Vec<Uuid>,
    ) -> Result<Vec<(Uuid, Map<String, Value>)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<PointId> = ids.into_iter().map(PointId::from).collect();
        let response = self
            .client
            .get_points(GetPointsBuilder::new(self.name(collection), ids).with_payload(true))
            .await
            .map_err(client_error)?;
        Ok(response
            .result
            .into_iter()
            .filter_map(|p| Some((uuid_of(p.id)?, json_payload(p.payload))))
            .collect())
    }

    async fn scroll(
        &self,
        collection: Collection,
        filter: &FilterIr,
    ) -> Result<Vec<(Uuid, Map<String, Value>)>> {
        self.scroll_named(&self.name(collection), filter).await
    }

    async fn scroll_page(
        &self,
        collection: Collection,
        filter: &FilterIr,
        offset: Option<Uuid>,
        limit: usize,
    ) -> Result<ScrollPage> {
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        self.scroll_named_page(&self.name(collection), to_filter(filter), offset, limit)
            .await
    }

    async fn search(
        &self,
        collection: Collection,
        vector: Vec<f32>,
        filter: &FilterIr,
        limit: usize,
    ) -> Result<Vec<Hit>> {
        let mut request = QueryPointsBuilder::new(self.name(collection))
            .query(Query::new_nearest(vector))
            .params(SearchParamsBuilder::default().exact(true))
            .limit(limit as u64)
            .with_payload(true);
        if let Some(f) = to_filter(filter) {
            request = request.filter(f);
        }
        let response = self.client.query(request).await.map_err(client_error)?;
        Ok(response
            .result
            .into_iter()
            .map(|p| Hit {
                payload: json_payload(p.payload),
                score: p.score,
            })
            .collect())
    }

    async fn count(&self, collection: Collection, filter: &FilterIr) -> Result<u64> {
        let mut request = CountPointsBuilder::new(self.name(collection)).exact(true);
        if let Some(f) = to_filter(filter) {
            request = request.filter(f);
        }
        let response = self.client.count(request).await.map_err(client_error)?;
        Ok(response.result.map_or(0, |r| r.count))
    }

    async fn size_bytes(&self) -> std::result::Result<u64, String> {
        Err("a Qdrant server's collection info reports no size on disk; not measured".to_owned())
    }

    async fn extra_stats(&self) -> Result<BTreeMap<String, Value>> {
        let mut extra = BTreeMap::new();
        extra.insert(
            "mode".to_owned(),
            json!("server (qdrant-client 1.20, gRPC)"),
        );
        extra.insert("endpoint".to_owned(), json!(self.endpoint));
        for c in Collection::ALL {
            let info = self
                .client
                .collection_info(self.name(c))
                .await
                .map_err(client_error)?;
            if let Some(info) = info.result {
                extra.insert(
                    format!("{}_collection", c.name()),
                    collection_stats(&self.name(c), &info),
                );
            }
        }
        Ok(extra)
    }

    async fn server_info(&self) -> Option<ServerInfo> {
        let (health, started) =
            tokio::join!(self.client.health_check(), self.rest.server_started());
        let (version, commit) = server_version(health.map_err(client_error));
        let started = started.map_err(|e| {
            tracing::debug!(error = %e, "the Qdrant server's telemetry gave no start time");
            e.to_string()
        });
        Some(ServerInfo {
            version,
            commit,
            started,
        })
    }

    async fn native_backup(&self, dir: &Path) -> Result<u64> {
        tokio::fs::create_dir(dir).await.map_err(|e| {
            Error::new(
                ErrorKind::Backend,
                format!("cannot create {}: {e}", dir.display()),
            )
        })?;
        let mut manifest = Manifest::new(self.dimension);
        for c in SNAPSHOT_ORDER {
            match self.backup_collection(c, dir).await {
                Ok(entry) => manifest.collections.push(entry),
                Err(e) => {
                    // No half backup is left to be mistaken for a whole one.
                    let _ = tokio::fs::remove_dir_all(dir).await;
                    return Err(e);
                }
            }
        }
        if let Err(e) = manifest.write(dir) {
            let _ = tokio::fs::remove_dir_all(dir).await;
            return Err(e);
        }
        Ok(aimon_core::archive::dir_size(dir))
    }

    async fn read_native_backup(&self, dir: &Path) -> Result<BackupPayloads> {
        let manifest = Manifest::read(dir, self.dimension)?;
        manifest.verify_files(dir).await?;
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.drop_stale_scratch(started).await;
        let restore_id = Uuid::new_v4();
        let mut out = Vec::new();
        for c in Collection::ALL {
            let entry = manifest
                .entry(c)
                .expect("Manifest::read checks every collection has an entry");
            let scratch = snapshot::scratch_name(&self.prefix, started, &restore_id, c);
            let read = self.read_snapshot(dir, entry, &scratch).await;
            // The scratch collection goes whatever happened (the upload may have made it).
            if let Err(e) = self.client.delete_collection(scratch.as_str()).await {
                tracing::warn!(collection = %scratch, error = %client_error(e), "could not drop a restore's scratch collection");
            }
            out.push((c, read?));
        }
        drop_orphan_samples(&mut out);
        Ok(out)
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::field;

    fn response(code: tonic::Code, message: &str) -> qdrant_client::QdrantError {
        qdrant_client::QdrantError::from(tonic::Status::new(code, message))
    }

    #[test]
    fn collections_are_named_per_prefix_and_kind() {
        assert_eq!(collection_name("ns1", Collection::Alerts), "ns1_alerts");
        assert_eq!(
            collection_name("ns1", Collection::AgentStates),
            "ns1_agent_states"
        );
    }

    #[test]
    fn collections_have_one_dot_product_vector_of_the_dimension() {
        let request = create_collection_request("c", 384, &CollectionOptions::default());
        assert_eq!(request.collection_name, "c");
        let Some(qdrant::vectors_config::Config::Params(params)) =
            request.vectors_config.and_then(|v| v.config)
        else {
            panic!("one unnamed vector expected");
        };
        assert_eq!(params.size, 384);
        assert_eq!(params.distance, Distance::Dot as i32);
    }

    #[test]
    #[allow(deprecated)] // `on_disk_payload` is what older servers read.
    fn unset_collection_options_leave_the_servers_defaults() {
        let request = create_collection_request("c", 1, &CollectionOptions::default());
        assert_eq!(request.shard_number, None);
        assert_eq!(request.replication_factor, None);
        assert_eq!(request.write_consistency_factor, None);
        assert_eq!(request.on_disk_payload, None);
        assert_eq!(request.payload, None);
    }

    #[test]
    #[allow(deprecated)]
    fn collection_options_are_set_on_the_create_request() {
        let options = CollectionOptions {
            shard_number: Some(6),
            replication_factor: Some(3),
            write_consistency_factor: Some(2),
            on_disk_payload: Some(false),
        };
        let request = create_collection_request("ns_samples", 1, &options);
        assert_eq!(request.collection_name, "ns_samples");
        assert_eq!(request.shard_number, Some(6));
        assert_eq!(request.replication_factor, Some(3));
        assert_eq!(request.write_consistency_factor, Some(2));
        assert_eq!(request.on_disk_payload, Some(false));
        // Only the deprecated flag: a 1.19+ server maps it to `payload.memory` itself, and an
        // older one ignores the new field.
        assert_eq!(request.payload, None);
        // The vector config is the same as without options.
        let Some(qdrant::vectors_config::Config::Params(params)) =
            request.vectors_config.clone().and_then(|v| v.config)
        else {
            panic!("one unnamed vector expected");
        };
        assert_eq!((params.size, params.distance), (1, Distance::Dot as i32));
        // What goes over the wire: the encoded message decodes to the same fields.
        let decoded = CreateCollection::decode(request.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, request);

        let only_disk = CollectionOptions {
            on_disk_payload: Some(true),
            ..Default::default()
        };
        let request = create_collection_request("c", 1, &only_disk);
        assert_eq!(request.on_disk_payload, Some(true));
        assert_eq!(request.shard_number, None);
    }

    #[allow(deprecated)]
    fn info_with_layout(
        shards: u32,
        replicas: Option<u32>,
        wcf: Option<u32>,
        on_disk: bool,
    ) -> CollectionInfo {
        let mut info = info_with(384, &["status"]);
        let params = info
            .config
            .as_mut()
            .and_then(|c| c.params.as_mut())
            .unwrap();
        params.shard_number = shards;
        params.replication_factor = replicas;
        params.write_consistency_factor = wcf;
        params.on_disk_payload = on_disk;
        info.points_count = Some(42);
        info
    }

    #[test]
    fn stats_report_the_layout_each_collection_has() {
        let info = info_with_layout(6, Some(3), Some(2), true);
        let stats = collection_stats("ns_alerts", &info);
        assert_eq!(stats["name"], "ns_alerts");
        assert_eq!(stats["points"], 42);
        assert_eq!(stats["payload_indexes"], 1);
        assert_eq!(stats["shard_number"], 6);
        assert_eq!(stats["replication_factor"], 3);
        assert_eq!(stats["write_consistency_factor"], 2);
        assert_eq!(stats["on_disk_payload"], true);
        // A server too old to report the factors: null, not a made-up 1.
        let stats = collection_stats("c", &info_with_layout(1, None, None, false));
        assert!(stats["replication_factor"].is_null(), "{stats}");
        // No config at all: the sizes only.
        let stats = collection_stats("c", &CollectionInfo::default());
        assert!(stats.get("shard_number").is_none(), "{stats}");
    }

    #[test]
    fn payload_memory_decides_on_disk_payload_where_the_server_reports_it() {
        let with_memory = |flag: bool, memory: Option<qdrant::Memory>| {
            let mut info = info_with_layout(1, Some(1), Some(1), flag);
            let params = info
                .config
                .as_mut()
                .and_then(|c| c.params.as_mut())
                .unwrap();
            params.payload = Some(qdrant::PayloadStorageParams {
                memory: memory.map(|m| m as i32),
            });
            CollectionLayout::of(&info).unwrap()
        };
        // 1.19+: `on_disk_payload: false` became `cached`, the default `cold`.
        let cached = with_memory(true, Some(qdrant::Memory::Cached));
        assert!(!cached.on_disk_payload);
        assert_eq!(cached.payload_memory, Some("Cached"));
        let cold = with_memory(false, Some(qdrant::Memory::Cold));
        assert!(cold.on_disk_payload);
        // No memory (or an unknown one): the flag.
        assert!(!with_memory(false, None).on_disk_payload);
        assert!(with_memory(true, Some(qdrant::Memory::Unknown)).on_disk_payload);
        assert_eq!(with_memory(true, None).payload_memory, None);
        let stats = collection_stats("c", &{
            let mut info = info_with_layout(1, Some(1), Some(1), true);
            let params = info
                .config
                .as_mut()
                .and_then(|c| c.params.as_mut())
                .unwrap();
            params.payload = Some(qdrant::PayloadStorageParams {
                memory: Some(qdrant::Memory::Cached as i32),
            });
            info
        });
        assert_eq!(stats["on_disk_payload"], false, "{stats}");
        assert_eq!(stats["payload_memory"], "Cached", "{stats}");
    }

    #[test]
    fn an_existing_collections_other_layout_is_named() {
        let layout = CollectionLayout::of(&info_with_layout(2, Some(1), Some(1), true)).unwrap();
        assert!(layout.differences(&CollectionOptions::default()).is_empty());
        let same = CollectionOptions {
            shard_number: Some(2),
            replication_factor: Some(1),
            write_consistency_factor: Some(1),
            on_disk_payload: Some(true),
        };
        assert!(layout.differences(&same).is_empty());
        let wanted = CollectionOptions {
            shard_number: Some(6),
            replication_factor: Some(3),
            write_consistency_factor: Some(1),
            on_disk_payload: Some(false),
        };
        assert_eq!(
            layout.differences(&wanted),
            vec![
                "shard_number: 6 (has 2)".to_owned(),
                "replication_factor: 3 (has 1)".to_owned(),
                "on_disk_payload: false (has true)".to_owned(),
            ]
        );
        let old = CollectionLayout::of(&info_with_layout(1, None, None, false)).unwrap();
        assert_eq!(
            old.differences(&CollectionOptions {
                replication_factor: Some(2),
                ..Default::default()
            }),
            vec!["replication_factor: 2 (has unknown)".to_owned()]
        );
    }

    #[test]
    fn the_health_check_answer_gives_the_servers_version() {
        let reply = |version: &str, commit: Option<&str>| qdrant::HealthCheckReply {
            title: "qdrant - vector search engine".into(),
            version: version.into(),
            commit: commit.map(Into::into),
        };
        assert_eq!(
            server_version(Ok(reply("1.19.0", Some("4aac0231")))),
            (Ok("1.19.0".to_owned()), Some("4aac0231".to_owned()))
        );
        assert_eq!(
            server_version(Ok(reply(" 1.8.4 ", Some("")))),
            (Ok("1.8.4".to_owned()), None)
        );
        let (version, _) = server_version(Ok(reply("", None)));
        assert!(version.unwrap_err().contains("no version"));
        let failed = Err(client_error(response(
            tonic::Code::Unavailable,
            "connection refused",
        )));
        let (version, commit) = server_version(failed);
        let why = version.unwrap_err();
        assert!(
            why.contains("health check failed") && why.contains("connection refused"),
            "{why}"
        );
        assert_eq!(commit, None);
    }

    #[test]
    fn every_filtered_field_is_indexed() {
        let requests = index_requests("c", Collection::Alerts);
        let fields: Vec<_> = requests.iter().map(|r| r.field_name.as_str()).collect();
        for f in [
            field::STATUS,
            field::SEVERITY_RANK,
            field::SOURCE,
            field::LABEL_KV,
            field::START_US,
            field::UPDATED_US,
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        let rank = requests
            .iter()
            .find(|r| r.field_name == field::SEVERITY_RANK)
            .unwrap();
        assert_eq!(rank.field_type, Some(FieldType::Integer as i32));
        assert!(requests.iter().all(|r| r.wait == Some(true)));
    }

    fn info_with(size: u64, indexed: &[&str]) -> CollectionInfo {
        let vectors = qdrant::VectorsConfig {
            config: Some(qdrant::vectors_config::Config::Params(
                VectorParamsBuilder::new(size, Distance::Dot).build(),
            )),
        };
        CollectionInfo {
            config: Some(qdrant::CollectionConfig {
                params: Some(qdrant::CollectionParams {
                    vectors_config: Some(vectors),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            payload_schema: indexed
                .iter()
                .map(|f| ((*f).to_owned(), qdrant::PayloadSchemaInfo::default()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn an_existing_collection_must_have_the_embedders_vector_size() {
        check_vector_size("ns_alerts", &info_with(384, &[]), 384).unwrap();
        let err = check_vector_size("ns_alerts", &info_with(768, &[]), 384).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
        assert!(
            err.to_string().contains("768") && err.to_string().contains("ns_alerts"),
            "{err}"
        );
        // Named vectors (not aimon's layout) or no config at all.
        let mut named = info_with(384, &[]);
        named
            .config
            .as_mut()
            .and_then(|c| c.params.as_mut())
            .unwrap()
            .vectors_config = Some(qdrant::VectorsConfig {
            config: Some(qdrant::vectors_config::Config::ParamsMap(
                qdrant::VectorParamsMap::default(),
            )),
        });
        let err = check_vector_size("c", &named, 384).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
        let err = check_vector_size("c", &CollectionInfo::default(), 384).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConfigInvalid);
    }

    #[test]
    fn only_missing_payload_indexes_are_created() {
        let all = index_requests("c", Collection::Alerts);
        let fields: Vec<&str> = all.iter().map(|r| r.field_name.as_str()).collect();
        assert!(
            missing_index_requests("c", Collection::Alerts, &info_with(384, &fields)).is_empty()
        );
        let missing =
            missing_index_requests("c", Collection::Alerts, &info_with(384, &fields[1..]));
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].field_name, fields[0]);
        assert_eq!(
            missing_index_requests("c", Collection::Alerts, &info_with(384, &[])).len(),
            all.len()
        );
    }

    #[test]
    fn orphan_samples_are_left_out_of_a_server_restore() {
        let series = |id: &str| {
            let mut p = Map::new();
            p.insert(field::ID.into(), json!(id));
            p
        };
        let sample = |sid: &str| {
            let mut p = Map::new();
            p.insert(field::SERIES_ID.into(), json!(sid));
            p
        };
        let mut collections: BackupPayloads = vec![
            (
                Collection::Samples,
                vec![sample("a"), sample("gone"), sample("a")],
            ),
            (Collection::Series, vec![series("a")]),
            (Collection::Alerts, vec![series("gone")]),
        ];
        drop_orphan_samples(&mut collections);
        assert_eq!(collections[0].1, vec![sample("a"), sample("a")]);
        assert_eq!(collections[2].1.len(), 1);
        assert_eq!(
            SNAPSHOT_ORDER[..2],
            [Collection::Samples, Collection::Series]
        );
        assert_eq!(SNAPSHOT_ORDER.len(), Collection::ALL.len());
    }

    #[test]
    fn the_ir_becomes_must_conditions() {
        let ir = FilterIr::new()
            .keyword(field::LABEL_KV, "a.b[0]\"c\"=v")
            .keyword_any(field::SERIES_ID, vec!["x".into(), "y".into()])
            .range(field::TS_US, Some(10), Some(20));
        let filter = to_filter(&ir).unwrap();
        assert_eq!(filter.must.len(), 3);
        assert!(filter.must_not.is_empty() && filter.should.is_empty());
        let text = format!("{filter:?}");
        assert!(text.contains("a.b[0]\\\"c\\\"=v"), "{text}");
        assert!(
            text.contains("gte: Some(10.0)") && text.contains("lte: Some(20.0)"),
            "{text}"
        );
        assert!(to_filter(&FilterIr::new()).is_none());
    }

    #[test]
    fn a_value_with_spaces_is_an_exact_keyword_match() {
        for ir in [
            FilterIr::new().keyword(field::SERIES_ID, "gpu 1"),
            FilterIr::new().keyword(field::LABEL_KV, "env=prod east"),
        ] {
            let filter = to_filter(&ir).unwrap();
            let Some(qdrant::condition::ConditionOneOf::Field(condition)) =
                filter.must[0].condition_one_of.clone()
            else {
                panic!("a field condition expected: {filter:?}");
            };
            let value = condition.r#match.and_then(|m| m.match_value);
            assert!(
                matches!(value, Some(qdrant::r#match::MatchValue::Keyword(_))),
                "{value:?}"
            );
        }
    }

    #[test]
    fn points_keep_uuid_ids_and_payload() {
        let id = crate::ids::point_id("alert", "not a uuid: a/b c");
        let mut payload = Map::new();
        payload.insert("id".into(), json!("not a uuid: a/b c"));
        payload.insert("ts_us".into(), json!(1_780_000_000_000_000i64));
        let point = to_point(Point {
            id,
            vector: vec![0.6, 0.8],
            payload,
        })
        .unwrap();
        assert_eq!(uuid_of(point.id.clone()), Some(id));
        let back = json_payload(point.payload.clone());
        assert_eq!(back["ts_us"], json!(1_780_000_000_000_000i64));
        assert_eq!(back["id"], json!("not a uuid: a/b c"));
    }

    fn big_point(n: usize, bytes: usize) -> PointStruct {
        let mut payload = Map::new();
        payload.insert("doc".into(), json!("x".repeat(bytes)));
        to_point(Point {
            id: crate::ids::point_id("alert", &n.to_string()),
            vector: vec![0.0; 384],
            payload,
        })
        .unwrap()
    }

    #[test]
    fn upserts_are_chunked_under_the_request_limit() {
        // 40 points of ~1 MiB: one request would be ~40 MiB.
        let points: Vec<_> = (0..40).map(|n| big_point(n, 1 << 20)).collect();
        let chunks = chunk_by_bytes(points, MAX_REQUEST_BYTES).unwrap();
        assert!(chunks.len() >= 2, "{}", chunks.len());
        assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 40);
        for chunk in &chunks {
            let request = qdrant::UpsertPoints {
                collection_name: "c".into(),
                points: chunk.clone(),
                ..Default::default()
            };
            assert!(
                request.encoded_len() <= 32 * 1024 * 1024,
                "{}",
                request.encoded_len()
            );
        }
    }

    #[test]
    fn a_point_over_the_limit_is_invalid_input() {
        let err = chunk_by_bytes(vec![big_point(0, 2000)], 1000).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(chunk_by_bytes(Vec::new(), 1000).unwrap().is_empty());
    }
}
