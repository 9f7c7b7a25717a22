//! Similarity search (DESIGN.md rule 12): embeddings, queries, and the exact brute-force
//! ranking that memory and SQLite answer with and that every other backend must reproduce.
//!
//! # Vectors
//! Every alert and agent state has a vector: its own [`Alert::embedding`] /
//! [`AgentState::embedding`] when it carries one, else the backend's [`Embedder`] applied to
//! [`alert_text`] / [`agent_state_text`]. The built-in embedder is [`HashingEmbedder`]:
//! deterministic, no model, the same vectors on every platform (its hashes and summation order
//! are fixed). Case folding and word splitting of non-ASCII text use the Unicode tables of the
//! Rust toolchain, so characters a newer Unicode version assigns may embed differently after a
//! toolchain upgrade; ASCII text never does.
//!
//! # Queries
//! [`SimilarAlertsQuery`] and [`SimilarAgentStatesQuery`] name a [`SimilarityTarget`] (a text,
//! an existing item, or a vector), a `limit`, and the filters of an ordinary [`AlertQuery`] /
//! [`AgentStateQuery`] (status, severity, source, labels, time range, `options.filters`). Only
//! items passing every filter are candidates.
//!
//! # Scores and order
//! The score is the cosine similarity of the query vector and the candidate's vector, as an
//! `f32` in `[-1, 1]` (computed in `f64`, then rounded). Results come by score descending, ties
//! broken by id ascending (by `agent_id` for agent states, the key they are stored by), so every
//! backend ranks identically. Candidates whose vector has another dimension than the query's
//! cannot be compared and are left out; a candidate whose vector is all zeros scores 0.
//!
//! # Decisions
//! - An item target ([`SimilarityTarget::Item`]) excludes the item itself from the results: the
//!   operator asks "what is like this one", and the item would always rank first with 1.0. A
//!   target item that does not exist (or has expired) is [`ErrorKind::NotFound`].
//! - `limit` is 1..=[`MAX_SIMILARITY_LIMIT`]; anything else is `InvalidInput`. The ordinary
//!   paging of the embedded query (`options.limit`, `options.offset`, `options.sort_by`) must
//!   stay at its defaults: similarity results are ordered by score, and a paging option that
//!   would be ignored is rejected instead (`InvalidInput`).
//! - A supplied vector must have the backend embedder's dimension, finite values, and not be all
//!   zeros (`InvalidInput` otherwise); so must a target item's own embedding.
//! - Brute force scores at most [`MAX_BRUTE_FORCE_CANDIDATES`] candidates (after filters) per
//!   query; beyond that the query fails with [`ErrorKind::Unsupported`] naming the limit, rather
//!   than taking unbounded time: narrow the filters, or use a backend with a vector index.
//!
//! ```
//! use aimon_core::similarity::{Embedder, HashingEmbedder, cosine};
//! let embedder = HashingEmbedder::default();
//! let a = embedder.embed("GPU out of memory on the vision worker");
//! let b = embedder.embed("CUDA out of memory while loading the vision model");
//! let c = embedder.embed("rate limit exceeded by the LLM provider (HTTP 429)");
//! assert_eq!(a.len(), 384);
//! assert!(cosine(&a, &b) > cosine(&a, &c));
//! ```

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::model::{AgentState, Alert};
use crate::query::{AgentStateQuery, AlertQuery, DEFAULT_LIMIT, ResolvedOptions};
use crate::validate;

/// The most results one similarity query may ask for.
pub const MAX_SIMILARITY_LIMIT: usize = 1000;
/// The default `limit` of a similarity query.
pub const DEFAULT_SIMILARITY_LIMIT: usize = 10;
/// The most candidates (items passing the filters) brute force scores in one query.
pub const MAX_BRUTE_FORCE_CANDIDATES: usize = 1_000_000;

/// Turns text into a fixed-dimension vector. Implementations must be deterministic: the same
/// text gives the same vector, so stored items and queries meet in one space.
pub trait Embedder: Send + Sync + fmt::Debug {
    /// A name that changes whenever the vectors would (model, version, dimension), so stores
    /// that keep vectors (Qdrant) can tell when theirs are stale.
    fn name(&self) -> &str;

    /// The length of every vector [`Embedder::embed`] returns.
    fn dimension(&self) -> usize;

    /// The vector of `text`; exactly [`Embedder::dimension`] finite values.
    fn embed(&self, text: &str) -> Vec<f32>;
}

/// The built-in embedder: signed feature hashing of lower-cased words, word bigrams and
/// character 3- to 5-grams into [`HashingEmbedder::DEFAULT_DIMENSION`] buckets, L2-normalised.
///
/// Features are hashed with 64-bit FNV-1a followed by the SplitMix64 finaliser, both fixed
/// functions of the bytes, so vectors are identical on every platform and every release (a
/// change to this algorithm must change [`Embedder::name`]). Words are maximal runs of
/// alphanumeric characters, lower-cased; a short list of English stop words is dropped from
/// the word features (character n-grams keep them out too). Character n-grams are taken per
/// word with boundary marks (`<gpu>` gives `<gp`, `gpu`, `pu>`, `<gpu`, …), so spelling
/// variants (`timeout`, `timed out`, `time-out`) still share features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashingEmbedder {
    dimension: usize,
    name: String,
}

impl Default for HashingEmbedder {
    fn default() -> Self {
        HashingEmbedder::with_dimension(Self::DEFAULT_DIMENSION)
            .expect("the default dimension is valid")
    }
}

const WORD_WEIGHT: f32 = 1.0;
const BIGRAM_WEIGHT: f32 = 0.7;
/// Spread over a word's n-grams so a long word does not outweigh its own unigram.
const CHAR_NGRAM_WEIGHT: f32 = 1.2;

const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "in", "is", "it", "its",
    "of", "on", "or", "the", "this", "to", "was", "were", "with",
];

impl HashingEmbedder {
    /// 384: what [`HashingEmbedder::default`] embeds into (name `aimon-hashing-v1-384`).
    pub const DEFAULT_DIMENSION: usize = 384;

    /// A hashing embedder into `dimension` buckets, 1..=[`validate::MAX_EMBEDDING_DIMENSION`].
    pub fn with_dimension(dimension: usize) -> Result<Self> {
        if dimension == 0 || dimension > validate::MAX_EMBEDDING_DIMENSION {
            return Err(Error::invalid_input(
                "embedding dimension",
                format!(
                    "must be 1..={}, got {dimension}",
                    validate::MAX_EMBEDDING_DIMENSION
                ),
            ));
        }
        Ok(HashingEmbedder {
            dimension,
            name: format!("aimon-hashing-v1-{dimension}"),
        })
    }

    fn add(&self, vector: &mut [f32], kind: u8, parts: &[&[u8]], weight: f32) {
        let h = mix(fnv1a_parts(kind, parts));
        let index = (h % self.dimension as u64) as usize;
        let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
        vector[index] += sign * weight;
    }
}

impl Embedder for HashingEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn embed(&self, text: &str) -> Vec<f32> {
        let mut vector = vec![0.0f32; self.dimension];
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let content: Vec<&str> = words
            .iter()
            .copied()
            .filter(|w| !STOP_WORDS.contains(w))
            .collect();
        let mut marked = String::new();
        let mut bounds: Vec<usize> = Vec::new();
        for word in &content {
            self.add(&mut vector, b'w', &[word.as_bytes()], WORD_WEIGHT);
            // Character n-grams of `<word>`, hashed straight from byte ranges at char bounds.
            marked.clear();
            marked.push('<');
            marked.push_str(word);
            marked.push('>');
            bounds.clear();
            bounds.extend(marked.char_indices().map(|(i, _)| i));
            bounds.push(marked.len());
            let chars = bounds.len() - 1;
            let grams: usize = (3..=5).map(|n| (chars + 1).saturating_sub(n)).sum();
            if grams > 0 {
                let weight = CHAR_NGRAM_WEIGHT / (grams as f32).sqrt();
                let bytes = marked.as_bytes();
                for n in 3..=5 {
                    for start in 0..(chars + 1).saturating_sub(n) {
                        let gram = &bytes[bounds[start]..bounds[start + n]];
                        self.add(&mut vector, b'c', &[gram], weight);
                    }
                }
            }
        }
        for pair in content.windows(2) {
            let parts = [pair[0].as_bytes(), b" ", pair[1].as_bytes()];
            self.add(&mut vector, b'b', &parts, BIGRAM_WEIGHT);
        }
        normalize(&mut vector);
        vector
    }
}

/// 64-bit FNV-1a of a kind byte and the feature's bytes.
#[cfg(test)]
fn fnv1a(kind: u8, bytes: &[u8]) -> u64 {
    fnv1a_parts(kind, &[bytes])
}

/// 64-bit FNV-1a of a kind byte and the concatenation of `parts` (no allocation).
fn fnv1a_parts(kind: u8, parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let step = |h: u64, b: u8| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    h = step(h, kind);
    for part in parts {
        for b in *part {
            h = step(h, *b);
        }
    }
    h
}

/// SplitMix64's finaliser: spreads FNV's weak low bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt()
}

/// Scales `v` to unit length in place; an all-zero vector stays zero.
pub fn normalize(v: &mut [f32]) {
    let n = norm(v);
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x = (f64::from(*x) / n) as f32);
    }
}

/// The cosine similarity of two vectors of equal length, computed in `f64`; 0 when either is all
/// zeros or the lengths differ.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (na, nb) = (norm(a), norm(b));
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    ((dot / (na * nb)).clamp(-1.0, 1.0)) as f32
}

/// The text of an alert that the embedder sees: name, description, source, then each label
/// as `key=value`, one per line. Severity, status and times are left out on purpose: they are
/// filters, and an alert's lifecycle must not move it in the vector space.
pub fn alert_text(alert: &Alert) -> String {
    let mut text = String::with_capacity(
        alert.name.len() + alert.description.as_ref().map_or(0, String::len) + 64,
    );
    text.push_str(&alert.name);
    text.push('\n');
    if let Some(description) = &alert.description {
        text.push_str(description);
        text.push('\n');
    }
    text.push_str(&alert.source);
    for (key, value) in &alert.labels {
        text.push('\n');
        text.push_str(key);
        text.push('=');
        text.push_str(value);
    }
    text
}

/// The text of an agent state that the embedder sees: status, `agent_id`, the names of its
/// `metrics`, then each metadata entry, as `key=value` when the value is a string, number or
/// boolean and as the bare key otherwise. Metric *values* and times are left out: they change
/// every heartbeat, while what an agent is and what state it is in do not.
pub fn agent_state_text(state: &AgentState) -> String {
    let mut text = format!("{}\n{}", state.status, state.agent_id);
    let mut metric_names: Vec<&String> = state.metrics.keys().collect();
    metric_names.sort_unstable();
    for key in metric_names {
        text.push('\n');
        text.push_str(key);
    }
    // Sorted here rather than trusting the map's order: serde_json's `preserve_order` feature,
    // if any dependency turns it on, would make it insertion order.
    let mut metadata: Vec<_> = state.metadata.iter().collect();
    metadata.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (key, value) in metadata {
        text.push('\n');
        text.push_str(key);
        match value {
            serde_json::Value::String(s) => {
                text.push('=');
                text.push_str(s);
            }
            serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
                text.push('=');
                text.push_str(&value.to_string());
            }
            _ => {}
        }
    }
    text
}

/// An item's vector: its own embedding, else the embedder's vector of its text.
pub fn alert_vector(alert: &Alert, embedder: &dyn Embedder) -> Vec<f32> {
    match &alert.embedding {
        Some(v) => v.clone(),
        None => embedder.embed(&alert_text(alert)),
    }
}

/// An agent state's vector: its own embedding, else the embedder's vector of its text.
pub fn agent_state_vector(state: &AgentState, embedder: &dyn Embedder) -> Vec<f32> {
    match &state.embedding {
        Some(v) => v.clone(),
        None => embedder.embed(&agent_state_text(state)),
    }
}

/// What a similarity query compares candidates with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimilarityTarget {
    /// Free text, embedded by the backend's embedder.
    Text(String),
    /// A stored item: an alert id, or an `agent_id` for agent states. The item is excluded from
    /// the results.
    Item(String),
    /// A vector of the backend embedder's dimension.
    Vector(Vec<f32>),
}

/// `find_similar_alerts`: alerts like a text, an alert or a vector, among those `filter`
/// selects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimilarAlertsQuery {
    /// What the results should be like.
    pub target: SimilarityTarget,
    /// 1..=[`MAX_SIMILARITY_LIMIT`]; defaults to [`DEFAULT_SIMILARITY_LIMIT`].
    #[serde(default = "default_limit")]
    pub limit: usize,
    /// Status, severity, min severity, source, labels, time range and `options.filters`; its
    /// paging options must stay at their defaults.
    #[serde(default)]
    pub filter: AlertQuery,
}

/// `find_similar_agent_states`: latest agent states like a text, an agent's state or a vector,
/// among those `filter` selects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimilarAgentStatesQuery {
    /// What the results should be like; an `Item` is an `agent_id`.
    pub target: SimilarityTarget,
    /// 1..=[`MAX_SIMILARITY_LIMIT`]; defaults to [`DEFAULT_SIMILARITY_LIMIT`].
    #[serde(default = "default_limit")]
    pub limit: usize,
    /// Status, heartbeat bound and `options.filters`; its paging options must stay at their
    /// defaults.
    #[serde(default)]
    pub filter: AgentStateQuery,
}

fn default_limit() -> usize {
    DEFAULT_SIMILARITY_LIMIT
}

impl SimilarAlertsQuery {
    /// A query for `target` with the default limit and no filter.
    pub fn new(target: SimilarityTarget) -> Self {
        SimilarAlertsQuery {
            target,
            limit: DEFAULT_SIMILARITY_LIMIT,
            filter: AlertQuery::default(),
        }
    }

    /// Alerts like a free text (non-blank; `InvalidInput` if nothing in it can be embedded).
    pub fn text(text: impl Into<String>) -> Self {
        Self::new(SimilarityTarget::Text(text.into()))
    }

    /// Alerts like the stored alert `id`, which is left out of the results; `NotFound` if missing.
    pub fn item(id: impl Into<String>) -> Self {
        Self::new(SimilarityTarget::Item(id.into()))
    }

    /// Alerts like a vector of exactly the embedder's dimension.
    pub fn vector(vector: Vec<f32>) -> Self {
        Self::new(SimilarityTarget::Vector(vector))
    }

    /// Returns at most `limit` results, 1..=[`MAX_SIMILARITY_LIMIT`].
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Only alerts this query selects; leave its paging options at their defaults.
    pub fn filter(mut self, filter: AlertQuery) -> Self {
        self.filter = filter;
        self
    }

    /// Checks the limit, the target's shape (not whether an item exists) and the filters;
    /// backends call this first.
    pub fn resolve(&self, dimension: usize) -> Result<ResolvedOptions> {
        check_common(&self.target, self.limit, &self.filter.options, dimension)?;
        self.filter.resolve()
    }
}

impl SimilarAgentStatesQuery {
    /// A query for `target` with the default limit and no filter.
    pub fn new(target: SimilarityTarget) -> Self {
        SimilarAgentStatesQuery {
            target,
            limit: DEFAULT_SIMILARITY_LIMIT,
            filter: AgentStateQuery::default(),
        }
    }

    /// States like a free text (non-blank; `InvalidInput` if nothing in it can be embedded).
    pub fn text(text: impl Into<String>) -> Self {
        Self::new(SimilarityTarget::Text(text.into()))
    }

    /// States like the latest state of `agent_id`, which is left out of the results; `NotFound` if
    /// missing.
    pub fn item(agent_id: impl Into<String>) -> Self {
        Self::new(SimilarityTarget::Item(agent_id.into()))
    }

    /// States like a vector of exactly the embedder's dimension.
    pub fn vector(vector: Vec<f32>) -> Self {
        Self::new(SimilarityTarget::Vector(vector))
    }

    /// Returns at most `limit` results, 1..=[`MAX_SIMILARITY_LIMIT`].
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Only states this query selects; leave its paging options at their defaults.
    pub fn filter(mut self, filter: AgentStateQuery) -> Self {
        self.filter = filter;
        self
    }

    /// Checks the limit, the target's shape and the filters; backends call this first.
    pub fn resolve(&self, dimension: usize) -> Result<ResolvedOptions> {
        check_common(&self.target, self.limit, &self.filter.options, dimension)?;
        self.filter.resolve()
    }
}

fn check_common(
    target: &SimilarityTarget,
    limit: usize,
    options: &crate::query::QueryOptions,
    dimension: usize,
) -> Result<()> {
    if limit == 0 || limit > MAX_SIMILARITY_LIMIT {
        return Err(Error::invalid_input(
            "limit",
            format!("must be 1..={MAX_SIMILARITY_LIMIT}, got {limit}"),
        ));
    }
    if options.limit != DEFAULT_LIMIT || options.offset != 0 || options.sort_by.is_some() {
        return Err(Error::invalid_input(
            "filter.options",
            "similarity results are ordered by score and limited by `limit`: leave \
             options.limit, offset and sort_by at their defaults",
        ));
    }
    match target {
        SimilarityTarget::Text(text) => {
            validate::text("target text", text)?;
            if text.trim().is_empty() {
                return Err(Error::invalid_input("target text", "must not be blank"));
            }
            Ok(())
        }
        SimilarityTarget::Item(id) => validate::name("target id", id),
        SimilarityTarget::Vector(v) => query_vector_shape("target vector", v, dimension),
    }
}

/// A query vector: the embedder's dimension, finite, not all zeros.
fn query_vector_shape(field: &str, v: &[f32], dimension: usize) -> Result<()> {
    if v.len() != dimension {
        return Err(Error::invalid_input(
            field,
            format!(
                "has dimension {}, the backend's embedder has {dimension}",
                v.len()
            ),
        ));
    }
    validate::embedding(field, v)
}

/// An item with its similarity score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored<T> {
    /// The alert or agent state.
    pub item: T,
    /// Cosine similarity with the query vector, in `[-1, 1]`.
    pub score: f32,
}

impl<T: Clone> Scored<&T> {
    /// The scored item, owned: backends that rank stored items by reference clone only the
    /// winners.
    pub fn cloned(self) -> Scored<T> {
        Scored {
            item: self.item.clone(),
            score: self.score,
        }
    }
}

/// The vector a query compares with: the target resolved against the backend's embedder and,
/// for [`SimilarityTarget::Item`], the stored item (which the caller looked up).
///
/// Returns the vector and the key to exclude from results (the item's, for an item target).
pub fn alert_query_vector(
    target: &SimilarityTarget,
    item: Option<&Alert>,
    embedder: &dyn Embedder,
) -> Result<(Vec<f32>, Option<String>)> {
    query_vector(target, embedder, || {
        item.map(|a| (alert_vector(a, embedder), a.id.clone()))
    })
}

/// [`alert_query_vector`] for agent states; the excluded key is the `agent_id`.
pub fn agent_state_query_vector(
    target: &SimilarityTarget,
    item: Option<&AgentState>,
    embedder: &dyn Embedder,
) -> Result<(Vec<f32>, Option<String>)> {
    query_vector(target, embedder, || {
        item.map(|s| (agent_state_vector(s, embedder), s.agent_id.clone()))
    })
}

fn query_vector(
    target: &SimilarityTarget,
    embedder: &dyn Embedder,
    item: impl FnOnce() -> Option<(Vec<f32>, String)>,
) -> Result<(Vec<f32>, Option<String>)> {
    let dimension = embedder.dimension();
    match target {
        SimilarityTarget::Vector(v) => {
            query_vector_shape("target vector", v, dimension)?;
            Ok((v.clone(), None))
        }
        SimilarityTarget::Text(text) => {
            let v = embedder.embed(text);
            if norm(&v) == 0.0 {
                return Err(Error::invalid_input(
                    "target text",
                    "has nothing the embedder can represent",
                ));
            }
            // A custom embedder's answer is checked like a supplied vector.
            query_vector_shape("the embedder's vector of the target text", &v, dimension)?;
            Ok((v, None))
        }
        SimilarityTarget::Item(id) => {
            let (v, key) = item().ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    format!("target item {id:?} does not exist"),
                )
            })?;
            if norm(&v) == 0.0 {
                return Err(Error::invalid_input(
                    "target item",
                    "has no embedding and nothing in its text the embedder can represent",
                ));
            }
            query_vector_shape("target item's embedding", &v, dimension)?;
            Ok((v, Some(key)))
        }
    }
}

/// The exact top-`limit` of a stream of candidates: the reference ranking. It keeps at most
/// `2 × max(limit, 64)` candidates at a time, so candidates can be streamed from a store.
#[derive(Debug)]
pub struct Ranker<T> {
    query: Vec<f32>,
    query_norm: f64,
    exclude: Option<String>,
    limit: usize,
    seen: usize,
    best: Vec<(Scored<T>, String)>,
}

impl<T> Ranker<T> {
    /// A ranker for `query` (checked by [`alert_query_vector`] or [`agent_state_query_vector`]),
    /// skipping the key `exclude`.
    pub fn new(query: Vec<f32>, exclude: Option<String>, limit: usize) -> Self {
        let query_norm = norm(&query);
        Ranker {
            query,
            query_norm,
            exclude,
            limit: limit.max(1),
            seen: 0,
            best: Vec::new(),
        }
    }

    /// Scores one candidate with key `key` (its id, or `agent_id`) and vector `vector`.
    /// Fails with `Unsupported` past [`MAX_BRUTE_FORCE_CANDIDATES`] candidates.
    pub fn push(&mut self, key: &str, item: T, vector: &[f32]) -> Result<()> {
        if self.exclude.as_deref() == Some(key) {
            return Ok(());
        }
        self.seen += 1;
        if self.seen > MAX_BRUTE_FORCE_CANDIDATES {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "brute-force similarity scores at most {MAX_BRUTE_FORCE_CANDIDATES} \
                     candidates per query; narrow the filters or use a backend with a vector index"
                ),
            ));
        }
        if vector.len() != self.query.len() {
            return Ok(());
        }
        let score = self.score(vector);
        if !score.is_finite() {
            // A NaN in a stored vector (written around aimon's validation) ranks nowhere.
            return Ok(());
        }
        self.best.push((Scored { item, score }, key.to_owned()));
        if self.best.len() >= 2 * self.limit.max(64) {
            self.trim();
        }
        Ok(())
    }

    fn score(&self, vector: &[f32]) -> f32 {
        let n = norm(vector);
        if n == 0.0 || self.query_norm == 0.0 {
            return 0.0;
        }
        let dot: f64 = self
            .query
            .iter()
            .zip(vector)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        // `+ 0.0` turns a -0.0 (a sum of -0.0 terms) into 0.0, so equal scores tie by key.
        ((dot / (self.query_norm * n)).clamp(-1.0, 1.0)) as f32 + 0.0
    }

    fn trim(&mut self) {
        self.best
            .sort_by(|a, b| rank_order(a.0.score, &a.1, b.0.score, &b.1));
        self.best.truncate(self.limit);
    }

    /// How many candidates were scored (the excluded item not counted).
    pub fn candidates(&self) -> usize {
        self.seen
    }

    /// The top `limit`, by score descending then key ascending.
    pub fn finish(mut self) -> Vec<Scored<T>> {
        self.trim();
        self.best.into_iter().map(|(s, _)| s).collect()
    }
}

/// The one order of similarity results: score descending, then key ascending (bytes).
pub fn rank_order(score_a: f32, key_a: &str, score_b: f32, key_b: &str) -> Ordering {
    score_b.total_cmp(&score_a).then_with(|| key_a.cmp(key_b))
}

/// The reference ranking of `candidates` (already filtered) for an alert query: what every
/// backend must return. `target_item` is the stored target of an item query.
pub fn rank_alerts(
    query: &SimilarAlertsQuery,
    target_item: Option<&Alert>,
    embedder: &dyn Embedder,
    candidates: impl IntoIterator<Item = Alert>,
) -> Result<Vec<Scored<Alert>>> {
    query.resolve(embedder.dimension())?;
    let (vector, exclude) = alert_query_vector(&query.target, target_item, embedder)?;
    let mut ranker = Ranker::new(vector, exclude, query.limit);
    for alert in candidates {
        let v = alert_vector(&alert, embedder);
        let key = alert.id.clone();
        ranker.push(&key, alert, &v)?;
    }
    Ok(ranker.finish())
}

/// [`rank_alerts`] for agent states.
pub fn rank_agent_states(
    query: &SimilarAgentStatesQuery,
    target_item: Option<&AgentState>,
    embedder: &dyn Embedder,
    candidates: impl IntoIterator<Item = AgentState>,
) -> Result<Vec<Scored<AgentState>>> {
    query.resolve(embedder.dimension())?;
    let (vector, exclude) = agent_state_query_vector(&query.target, target_item, embedder)?;
    let mut ranker = Ranker::new(vector, exclude, query.limit);
    for state in candidates {
        let v = agent_state_vector(&state, embedder);
        let key = state.agent_id.clone();
        ranker.push(&key, state, &v)?;
    }
    Ok(ranker.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AlertSeverity;

    #[test]
    fn hashing_is_fixed_across_platforms_and_releases() {
        // Pinned values: if these change, the embedder's name must change too.
        // The published FNV-1a 64 test vector for "a".
        assert_eq!(fnv1a(b'a', b""), 0xaf63_dc4c_8601_ec8c);
        let v = HashingEmbedder::default().embed("GPU out of memory");
        let nonzero: Vec<usize> = (0..v.len()).filter(|i| v[*i] != 0.0).collect();
        assert_eq!(nonzero[..4], [1, 26, 34, 38]);
        assert_eq!(v[1].to_bits(), 1_048_104_462);
        assert_eq!(v.len(), 384);
        let again = HashingEmbedder::default().embed("gpu OUT of memory");
        assert_eq!(v, again);
        assert!((norm(&v) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn related_texts_score_higher_than_unrelated_ones() {
        let e = HashingEmbedder::default();
        let oom = e.embed("CUDA out of memory on gpu 0");
        let oom2 = e.embed("GPU memory exhausted: out of memory while allocating");
        let rate = e.embed("LLM provider returned 429 rate limit exceeded");
        assert!(cosine(&oom, &oom2) > cosine(&oom, &rate));
    }

    #[test]
    fn punctuation_only_text_is_rejected_as_a_target() {
        let e = HashingEmbedder::default();
        let err =
            alert_query_vector(&SimilarityTarget::Text("!!! ???".into()), None, &e).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn bad_vectors_and_limits_are_invalid_input() {
        let dim = HashingEmbedder::DEFAULT_DIMENSION;
        let mut nan = vec![0.1; dim];
        nan[3] = f32::NAN;
        let mut inf = vec![0.1; dim];
        inf[0] = f32::INFINITY;
        for bad in [vec![0.1; dim - 1], nan, inf, vec![0.0; dim], vec![]] {
            let err = SimilarAlertsQuery::vector(bad).resolve(dim).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        }
        for limit in [0, MAX_SIMILARITY_LIMIT + 1, usize::MAX] {
            let q = SimilarAlertsQuery::text("x").limit(limit);
            assert_eq!(q.resolve(dim).unwrap_err().kind(), ErrorKind::InvalidInput);
        }
        let mut q = SimilarAlertsQuery::text("x");
        q.filter.options.offset = 5;
        assert_eq!(q.resolve(dim).unwrap_err().kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn missing_target_item_is_not_found() {
        let e = HashingEmbedder::default();
        let err = alert_query_vector(&SimilarityTarget::Item("nope".into()), None, &e).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn ranking_breaks_ties_by_id_and_excludes_the_target() {
        let e = HashingEmbedder::default();
        let mk = |id: &str, name: &str| Alert::new(id, name, AlertSeverity::High, "agent");
        let items = vec![
            mk("b", "disk full"),
            mk("a", "disk full"),
            mk("c", "rate limited"),
            mk("t", "disk full"),
        ];
        let target = items[3].clone();
        let got = rank_alerts(
            &SimilarAlertsQuery::item("t").limit(3),
            Some(&target),
            &e,
            items.clone(),
        )
        .unwrap();
        let ids: Vec<_> = got.iter().map(|s| s.item.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert!((got[0].score - 1.0).abs() < 1e-6);
        assert!(got[2].score < got[1].score);
    }

    #[test]
    fn ranker_keeps_the_exact_top_k_of_a_long_stream() {
        // Best first, worst first and interleaved, with limits below and above the point
        // where the ranker trims (2 × max(limit, 64)).
        let orders: [Box<dyn Fn(u32) -> u32>; 3] = [
            Box::new(|i| i),
            Box::new(|i| 999 - i),
            Box::new(|i| (i * 617) % 1000),
        ];
        for order in &orders {
            for limit in [3usize, 64, 200] {
                let mut ranker = Ranker::new(vec![1.0, 0.0], None, limit);
                for i in (0..1000u32).map(order) {
                    let angle = f64::from(i) / 1000.0;
                    let v = [angle.cos() as f32, angle.sin() as f32];
                    ranker.push(&format!("{i:04}"), i, &v).unwrap();
                }
                let got: Vec<u32> = ranker.finish().into_iter().map(|s| s.item).collect();
                let want: Vec<u32> = (0..limit as u32).collect();
                assert_eq!(got, want, "limit {limit}");
            }
        }
    }

    #[test]
    fn negative_zero_scores_tie_by_key_and_nan_candidates_rank_nowhere() {
        let mut ranker = Ranker::new(vec![1.0, 0.0, 0.0], None, 5);
        ranker.push("b", "b", &[0.0, 1.0, 1.0]).unwrap();
        ranker.push("a", "a", &[-0.0, -1.0, -1.0]).unwrap();
        ranker.push("c", "c", &[f32::NAN, 1.0, 0.0]).unwrap();
        let got = ranker.finish();
        let keys: Vec<&str> = got.iter().map(|s| s.item).collect();
        assert_eq!(keys, ["a", "b"]);
        assert!(got.iter().all(|s| s.score.to_bits() == 0.0f32.to_bits()));
    }

    #[test]
    fn candidates_of_another_dimension_are_left_out() {
        let mut ranker = Ranker::new(vec![1.0, 0.0], None, 5);
        ranker.push("a", 1, &[1.0, 0.0, 0.0]).unwrap();
        ranker.push("b", 2, &[0.0, 1.0]).unwrap();
        let got: Vec<i32> = ranker.finish().into_iter().map(|s| s.item).collect();
        assert_eq!(got, [2]);
    }
}
