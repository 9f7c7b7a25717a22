//! The few primitive operations the backend needs from Qdrant, implemented by the embedded
//! engine (`edge.rs`) and the server client (`server.rs`). Everything above them (validation,
//! retention, ranking, paging) is written once in the backend.

use std::collections::BTreeMap;
use std::path::Path;

use aimon_core::Result;
use async_trait::async_trait;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::filter::FilterIr;

/// One collection per data kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Collection {
    /// Series documents (metadata).
    Series,
    /// One point per sample.
    Samples,
    /// Alerts, with their embedding as the vector.
    Alerts,
    /// The latest state per agent.
    AgentStates,
}

impl Collection {
    /// The four collections, in the order they are created and backed up.
    pub const ALL: [Collection; 4] = [
        Collection::Series,
        Collection::Samples,
        Collection::Alerts,
        Collection::AgentStates,
    ];

    /// The directory (embedded) or collection-name suffix (server).
    pub fn name(self) -> &'static str {
        match self {
            Collection::Series => "series",
            Collection::Samples => "samples",
            Collection::Alerts => "alerts",
            Collection::AgentStates => "agent_states",
        }
    }

    /// The dimension of the collection's vectors: the embedder's for alerts and agent states,
    /// 1 (a constant) for the others.
    pub fn dimension(self, embedding_dimension: usize) -> usize {
        match self {
            Collection::Alerts | Collection::AgentStates => embedding_dimension,
            Collection::Series | Collection::Samples => 1,
        }
    }
}

/// A point to upsert.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Derived from the item's key (see [`crate::ids`]), so a rewrite replaces the point.
    pub id: Uuid,
    /// The embedding for alerts and agent states; a constant unit vector elsewhere.
    pub vector: Vec<f32>,
    /// Indexed fields and the item itself (see [`crate::payload`]).
    pub payload: Map<String, Value>,
}

/// A search hit: the payload and Qdrant's score.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The point's payload.
    pub payload: Map<String, Value>,
    /// The engine's `f32` score; [`crate::rank`] re-scores hits in `f64` for the reference order.
    pub score: f32,
}

/// A page of points (ids and payloads) and the offset of the next page.
pub type ScrollPage = (Vec<(Uuid, Map<String, Value>)>, Option<Uuid>);

/// What a Qdrant server says about itself, for `stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// The server's version (its health check's answer); `Err` says why it is unknown.
    pub version: std::result::Result<String, String>,
    /// The server's git commit, where it reports one.
    pub commit: Option<String>,
    /// When the server started (its telemetry's `app.startup`); `Err` says why it is unknown.
    pub started: std::result::Result<chrono::DateTime<chrono::Utc>, String>,
}

/// Every point payload of a native backup, per collection.
pub type BackupPayloads = Vec<(Collection, Vec<Map<String, Value>>)>;

/// The operations of one Qdrant store (a directory of shards, or a server's collections).
#[async_trait]
pub trait Engine: Send + Sync + std::fmt::Debug + 'static {
    /// Upserts points; durable when this returns.
    async fn upsert(&self, collection: Collection, points: Vec<Point>) -> Result<()>;

    /// Deletes points by id; durable when this returns.
    async fn delete(&self, collection: Collection, ids: Vec<Uuid>) -> Result<()>;

    /// The payloads of the points that exist among `ids`.
    async fn get(
        &self,
        collection: Collection,
        ids: Vec<Uuid>,
    ) -> Result<Vec<(Uuid, Map<String, Value>)>>;

    /// The ids and payloads of every point `filter` selects, in no particular order.
    async fn scroll(
        &self,
        collection: Collection,
        filter: &FilterIr,
    ) -> Result<Vec<(Uuid, Map<String, Value>)>>;

    /// One page of at most `limit` points `filter` selects, in point-id order from `offset`
    /// (`None`: the start), and the offset of the next page (`None` after the last).
    async fn scroll_page(
        &self,
        collection: Collection,
        filter: &FilterIr,
        offset: Option<Uuid>,
        limit: usize,
    ) -> Result<ScrollPage>;

    /// The `limit` points nearest to `vector` among those `filter` selects, by exact (not HNSW)
    /// search, best first.
    async fn search(
        &self,
        collection: Collection,
        vector: Vec<f32>,
        filter: &FilterIr,
        limit: usize,
    ) -> Result<Vec<Hit>>;

    /// The exact number of points `filter` selects.
    async fn count(&self, collection: Collection, filter: &FilterIr) -> Result<u64>;

    /// Engine figures for `stats().extra`.
    async fn extra_stats(&self) -> Result<BTreeMap<String, Value>>;

    /// `stats().size_bytes`: the bytes the store's data takes, or why it cannot be told.
    async fn size_bytes(&self) -> std::result::Result<u64, String>;

    /// The server's version and start time; `None` for the embedded engine (this process is
    /// the server). Never fails: what the server does not answer is reported unknown.
    async fn server_info(&self) -> Option<ServerInfo> {
        None
    }

    /// Writes the engine's own backup into the new directory `dir`; returns its size in bytes.
    async fn native_backup(&self, dir: &Path) -> Result<u64>;

    /// Reads every point payload of a native backup at `dir`, per collection.
    async fn read_native_backup(&self, dir: &Path) -> Result<BackupPayloads>;

    /// Flushes and releases the store; later calls fail with `Unavailable`.
    async fn close(&self) -> Result<()>;
}
