//! Native similarity search with the reference ranking.
//!
//! Qdrant scores in `f32` with SIMD; the core [`Ranker`] scores in `f64`. To return exactly what
//! memory and SQLite return (score descending, ties by key, the target item excluded), the
//! engine only *selects* candidates: an exact (`SearchParams { exact: true }`, no HNSW) filtered
//! search for the best `n` points, which are then decoded, checked with the core's predicates
//! and ranked by the core [`Ranker`] from the items' own vectors. Stored vectors are unit
//! length, so Qdrant's dot product is the cosine up to rounding (well under [`SCORE_SLACK`]).
//!
//! `n` starts at `limit + 16` and grows fourfold until either the engine returned fewer than
//! `n` points (every candidate was seen) or the last point's engine score is more than
//! [`SCORE_SLACK`] below the `limit`-th reference score (no unseen point can reach or tie it).

use aimon_core::similarity::{MAX_BRUTE_FORCE_CANDIDATES, Ranker, Scored, normalize};
use aimon_core::{Error, ErrorKind, Result};
use serde_json::{Map, Value};

use crate::backend::QdrantBackend;
use crate::engine::Collection;
use crate::filter::FilterIr;

/// How far the engine's `f32` score may be from the reference score.
pub const SCORE_SLACK: f64 = 1e-3;

/// A decoded candidate: its ranking key, the item and its vector.
pub(crate) type Candidate<T> = (String, T, Vec<f32>);

pub(crate) async fn search<T>(
    backend: &QdrantBackend,
    collection: Collection,
    query: Vec<f32>,
    exclude: Option<String>,
    limit: usize,
    filter: &FilterIr,
    decode: impl Fn(&Map<String, Value>) -> Result<Option<Candidate<T>>>,
) -> Result<Vec<Scored<T>>> {
    let mut unit = query.clone();
    normalize(&mut unit);
    let mut want = limit + 16 + usize::from(exclude.is_some());
    loop {
        let hits = backend
            .engine
            .search(collection, unit.clone(), filter, want)
            .await?;
        let exhausted = hits.len() < want;
        let last = hits.last().map(|h| f64::from(h.score));
        let mut items = Vec::with_capacity(hits.len());
        let mut ranker = Ranker::new(query.clone(), exclude.clone(), limit);
        for hit in &hits {
            if let Some((key, item, vector)) = decode(&hit.payload)? {
                ranker.push(&key, items.len(), &vector)?;
                items.push(Some(item));
            }
        }
        let ranked = ranker.finish();
        let settled = ranked.len() >= limit
            && last.is_some_and(|s| s < f64::from(ranked[limit - 1].score) - SCORE_SLACK);
        if exhausted || settled {
            return Ok(ranked
                .into_iter()
                .filter_map(|s| {
                    items[s.item].take().map(|item| Scored {
                        item,
                        score: s.score,
                    })
                })
                .collect());
        }
        if want >= MAX_BRUTE_FORCE_CANDIDATES {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "more than {MAX_BRUTE_FORCE_CANDIDATES} candidates score within \
                     {SCORE_SLACK} of the last result; narrow the filters"
                ),
            ));
        }
        want = want.saturating_mul(4).min(MAX_BRUTE_FORCE_CANDIDATES);
    }
}
