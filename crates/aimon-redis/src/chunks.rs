//! Samples as chunks: the head a write appends to, sealing closed windows into chunks with
//! their summaries, reading both back, and the migration from the layout before chunks. The
//! layout and its arithmetic are in the crate docs ("Samples").

use std::collections::{BTreeMap, HashMap};

use aimon_core::chunk::{self, Samples, Summary};
use aimon_core::downsample::bucket_start;
use aimon_core::{Error, Result, time};
use redis::Value;

use crate::backend::{RedisBackend, bytes, items, text, ttl_arg};
use crate::keys::SampleKeys;
use crate::scripts::SCRIPTS;

/// The width of a chunk's window: one hour, epoch-aligned (a chunk of a series sampled every
/// 10 s holds 360 samples, where pcodec is within a few percent of its best).
pub(crate) const WINDOW: i64 = 3_600_000_000;

/// Head samples of the newest window that make a write seal it early (a dense series would
/// otherwise hold a whole hour as 16-byte records). After a seal the threshold becomes the
/// size of the newest chunk, so a window sealed repeatedly costs O(n log n), not O(n²).
pub(crate) const SEAL_AT: u64 = 4096;

/// How many checked (series, tag set) pairs [`RedisBackend::known`] holds before it starts
/// over (8 bytes each).
const KNOWN_LIMIT: usize = 1 << 20;

/// How long this process trusts what it checked (see [`RedisBackend::all_known`]).
const KNOWN_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// Where a series' append is in a write pipeline (see [`RedisBackend::push_append`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Append {
    /// The append script's reply: 1 to seal.
    Script(usize),
    /// The plain path's `ZRANGE w 0 -1 WITHSCORES`, then `HGET t x`.
    Plain(usize),
}

/// Bytes of a segment header: tag-set hash (u64) and sample count (u32).
const SEGMENT_HEADER: usize = 12;

/// The 64-bit xxh3 hash of a tag set's canonical JSON: how chunks and head records name it.
pub(crate) fn tagset_hash(tags_json: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(tags_json.as_bytes())
}

/// The field of a tag set in the state hash.
fn tagset_field(hash: u64) -> String {
    format!("#{hash:016x}")
}

/// The field of a chunk and its summary: window start µs and tag-set hash.
fn chunk_field(window: i64, hash: u64) -> String {
    format!("{window}:{hash:016x}")
}

fn parse_chunk_field(field: &[u8]) -> Option<(i64, u64)> {
    let field = std::str::from_utf8(field).ok()?;
    let (window, hash) = field.split_once(':')?;
    Some((window.parse().ok()?, u64::from_str_radix(hash, 16).ok()?))
}

/// Appends one segment: `hash` (u64 LE), the count (u32 LE), the timestamps (i64 LE), then
/// the values (f64 LE, bit for bit).
fn push_segment(out: &mut Vec<u8>, hash: u64, samples: &[(i64, f64)]) {
    for part in samples.chunks(u32::MAX as usize) {
        out.extend_from_slice(&hash.to_le_bytes());
        out.extend_from_slice(&(part.len() as u32).to_le_bytes());
        for (ts, _) in part {
            out.extend_from_slice(&ts.to_le_bytes());
        }
        for (_, v) in part {
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
    }
}

/// Calls `each(hash, ts, value)` for every record of a head element, in order. A damaged
/// element is an error (nothing of it is trusted), never a panic.
fn parse_segments(
    mut element: &[u8],
    mut each: impl FnMut(u64, i64, f64),
) -> std::result::Result<(), String> {
    let word = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let mut records = Vec::new();
    while !element.is_empty() {
        if element.len() < SEGMENT_HEADER {
            return Err(format!("a segment header of {} bytes", element.len()));
        }
        let hash = word(&element[..8]);
        let n = u32::from_le_bytes(element[8..12].try_into().expect("4 bytes")) as usize;
        let body = n
            .checked_mul(16)
            .filter(|&b| b <= element.len() - SEGMENT_HEADER);
        let Some(body) = body else {
            return Err(format!(
                "a segment of {n} samples in {} bytes",
                element.len()
            ));
        };
        let (ts, values) = element[SEGMENT_HEADER..SEGMENT_HEADER + body].split_at(n * 8);
        for (t, v) in ts.chunks_exact(8).zip(values.chunks_exact(8)) {
            records.push((hash, word(t) as i64, f64::from_bits(word(v))));
        }
        element = &element[SEGMENT_HEADER + body..];
    }
    for (hash, ts, v) in records {
        each(hash, ts, v);
    }
    Ok(())
}

/// One series' part of a write: its samples grouped by tag set, as the append script takes
/// them.
#[derive(Debug, Default)]
pub(crate) struct HeadBatch {
    payload: Vec<u8>,
    count: u64,
    windows: BTreeMap<i64, u64>,
    /// (hash, field, tags JSON) of each tag set.
    tagsets: Vec<(u64, String, String)>,
}

impl HeadBatch {
    /// Adds the samples of one tag set (in the order written: a later one wins).
    pub(crate) fn add(&mut self, tags_json: &str, samples: &[(i64, f64)]) {
        if samples.is_empty() {
            return;
        }
        let hash = tagset_hash(tags_json);
        push_segment(&mut self.payload, hash, samples);
        self.count += samples.len() as u64;
        for (ts, _) in samples {
            *self
                .windows
                .entry(chunk::window_start(*ts, WINDOW))
                .or_default() += 1;
        }
        self.tagsets
            .push((hash, tagset_field(hash), tags_json.to_owned()));
    }
}

/// A series' samples over a range, as [`RedisBackend::load`] reads them.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// Per tag set (its JSON): the samples decoded from chunks and the head, time-ordered,
    /// the head's overriding the chunks' at equal timestamps.
    pub(crate) samples: BTreeMap<String, Samples>,
    /// Summaries of whole chunks (history and counting only), with their tags JSON.
    pub(crate) summaries: Vec<(String, Summary)>,
}

impl Loaded {
    /// How many samples in `[lo, hi)` (summaries are whole chunks in the range).
    pub(crate) fn count(&self, lo: i64, hi: i64) -> u64 {
        let decoded: usize = self.samples.values().map(|s| s.range(lo, hi).len()).sum();
        decoded as u64 + self.summaries.iter().map(|(_, s)| s.count).sum::<u64>()
    }
}

impl RedisBackend {
    fn damaged(&self, id: &str, window: Option<i64>, why: impl std::fmt::Display) -> Error {
        let at = match window {
            Some(w) => format!(
                "the chunk of window {} ({w} µs)",
                time::format(time::from_micros(w))
            ),
            None => "its head".to_owned(),
        };
        Error::corrupted(format!("series {id:?}: {at} is damaged: {why}"))
            .with_backend(&self.config.name)
    }

    /// The key under which [`RedisBackend::known`] remembers a checked tag set of a series.
    fn known_key(id: &str, hash: u64) -> u64 {
        xxhash_rust::xxh3::xxh3_64_with_seed(id.as_bytes(), hash)
    }

    /// What a series script write leaves true while nothing else changes: the series' name
    /// and type are indexed, and so is each of its tag pairs (as [`RedisBackend::known`]
    /// keys).
    pub(crate) fn series_markers<'t>(
        &self,
        metric: &aimon_core::Metric,
        pairs: impl Iterator<Item = &'t (&'t str, &'t str)>,
    ) -> Vec<u64> {
        let id = metric.id.as_str();
        let mut markers = vec![Self::known_key(
            id,
            xxhash_rust::xxh3::xxh3_64(
                format!("\0meta\0{}\0{}", metric.name, metric.metric_type.as_str()).as_bytes(),
            ),
        )];
        markers.extend(pairs.map(|(k, v)| {
            Self::known_key(
                id,
                xxhash_rust::xxh3::xxh3_64(format!("\0tag\0{k}\0{v}").as_bytes()),
            )
        }));
        markers
    }

    /// Whether every marker is known. What this process knows is forgotten every
    /// [`KNOWN_FOR`], so a change made by another process (a rename, a series removed by its
    /// retention) is taken into account within that time.
    pub(crate) fn all_known(&self, markers: &[u64]) -> bool {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.0.elapsed() > KNOWN_FOR {
            *known = (std::time::Instant::now(), Default::default());
            return false;
        }
        markers.iter().all(|m| known.1.contains(m))
    }

    /// Remembers markers as known.
    pub(crate) fn remember(&self, markers: &[u64]) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.1.len() > KNOWN_LIMIT {
            known.1.clear();
        }
        known.1.extend(markers.iter().copied());
    }

    /// Forgets markers (their series was found removed).
    pub(crate) fn forget(&self, markers: &[u64]) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        for m in markers {
            known.1.remove(m);
        }
    }

    /// Adds one series' batch to `pipe`, and says where the reply deciding whether to seal
    /// is.
    ///
    /// Without a TTL, a batch whose tag sets this process has already checked in this series
    /// is written with plain commands (`RPUSH`, `ZINCRBY` per window, `HSETNX` of its tag sets,
    /// which restores one lost with a deleted series); everything else goes through the
    /// append script, which checks tag sets against hash collisions and applies retention.
    pub(crate) fn push_append(
        &self,
        pipe: &mut redis::Pipeline,
        id: &str,
        batch: &HeadBatch,
    ) -> Append {
        let keys = self.keys.series_samples(id);
        let retention = self.config.retention;
        let known = retention.metric_ttl.is_none() && {
            let markers: Vec<u64> = batch
                .tagsets
                .iter()
                .map(|(hash, _, _)| Self::known_key(id, *hash))
                .collect();
            self.all_known(&markers)
        };
        if known {
            pipe.cmd("RPUSH").arg(&keys.head).arg(&batch.payload);
            for (window, n) in &batch.windows {
                pipe.cmd("ZINCRBY")
                    .arg(&keys.head_windows)
                    .arg(n)
                    .arg(window);
            }
            for (_, field, json) in &batch.tagsets {
                pipe.cmd("HSETNX").arg(&keys.state).arg(field).arg(json);
            }
            let at = pipe.len();
            pipe.cmd("ZRANGE")
                .arg(&keys.head_windows)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES");
            pipe.cmd("HGET").arg(&keys.state).arg("x");
            return Append::Plain(at);
        }
        let cutoff = retention.metric_cutoff(time::now());
        let mut cmd = SCRIPTS.append.cmd(&keys.all());
        cmd.arg(&batch.payload)
            .arg(ttl_arg(retention.metric_ttl))
            .arg(cutoff.map(|c| c.to_string()).unwrap_or_default())
            .arg(WINDOW)
            .arg(SEAL_AT)
            .arg(batch.windows.len());
        for (window, n) in &batch.windows {
            cmd.arg(window).arg(n);
        }
        for (_, field, json) in &batch.tagsets {
            cmd.arg(field).arg(json);
        }
        let at = pipe.len();
        pipe.add_command(cmd);
        Append::Script(at)
    }

    /// After a successful write: remembers the batch's tag sets as checked, and says whether
    /// the series should be sealed (more than one window in the head, or the newest past the
    /// threshold `x`).
    pub(crate) fn appended(
        &self,
        id: &str,
        batch: &HeadBatch,
        append: Append,
        replies: &[Value],
    ) -> bool {
        match append {
            Append::Script(at) => {
                let markers: Vec<u64> = batch
                    .tagsets
                    .iter()
                    .map(|(hash, _, _)| Self::known_key(id, *hash))
                    .collect();
                self.remember(&markers);
                replies.get(at).map(crate::backend::int) == Some(1)
            }
            Append::Plain(at) => {
                // (window, samples) pairs, whichever protocol version shaped them.
                let windows: Vec<(String, f64)> = replies
                    .get(at)
                    .and_then(|v| redis::from_redis_value(v.clone()).ok())
                    .unwrap_or_default();
                let threshold = replies
                    .get(at + 1)
                    .and_then(text)
                    .and_then(|n| n.parse::<f64>().ok())
                    .unwrap_or(SEAL_AT as f64);
                windows.len() > 1 || windows.first().is_some_and(|(_, n)| *n >= threshold)
            }
        }
    }

    /// Seals the head of series `id`: every window but the newest, the newest too when `all`,
    /// when its window has closed or when it passed [`SEAL_AT`] samples, is merged into its
    /// chunks (head samples overwrite chunk samples at equal timestamps). Computed from an
    /// atomic snapshot and committed by a script only if no other seal came in between (the
    /// generation `g`), so concurrent writers and sealers never lose or double a sample;
    /// after three lost races it leaves the work to the next write.
    pub(crate) async fn seal(&self, id: &str, all: bool) -> Result<()> {
        let keys = self.keys.series_samples(id);
        for _ in 0..3 {
            let snapshot: Value = self
                .pool
                .query(&SCRIPTS.snapshot.cmd(&[&keys.state, &keys.head]))
                .await?;
            let [generation, elements] = items(&snapshot) else {
                return Err(Error::malformed("seal snapshot"));
            };
            let generation = text(generation).unwrap_or("0").to_owned();
            let elements = items(elements);
            // (window, hash) → records in head order; window → records consumed.
            let mut head: BTreeMap<(i64, u64), Vec<(i64, f64)>> = BTreeMap::new();
            let mut consumed: BTreeMap<i64, i64> = BTreeMap::new();
            for element in elements {
                let element = bytes(element).unwrap_or_default();
                parse_segments(element, |hash, ts, v| {
                    let window = chunk::window_start(ts, WINDOW);
                    head.entry((window, hash)).or_default().push((ts, v));
                    *consumed.entry(window).or_default() += 1;
                })
                .map_err(|why| self.damaged(id, None, why))?;
            }
            let Some(&newest) = consumed.keys().next_back() else {
                return Ok(());
            };
            let closed = newest.saturating_add(WINDOW) <= time::to_micros(time::now());
            let seal_newest = all || closed || consumed[&newest] >= SEAL_AT as i64;
            let sealed = |window: i64| window != newest || seal_newest;
            let targets: Vec<(i64, u64)> =
                head.keys().copied().filter(|(w, _)| sealed(*w)).collect();
            if targets.is_empty() {
                return Ok(());
            }
            let fields: Vec<String> = targets.iter().map(|(w, h)| chunk_field(*w, *h)).collect();
            let mut get = redis::cmd("HMGET");
            get.arg(&keys.chunks).arg(&fields);
            let stored: Vec<Option<Vec<u8>>> = self.pool.query(&get).await?;
            let mut triples = Vec::with_capacity(targets.len());
            let mut threshold = SEAL_AT;
            for (((window, hash), field), old) in targets.iter().zip(&fields).zip(stored) {
                let fresh =
                    Samples::from_unsorted(head.remove(&(*window, *hash)).unwrap_or_default());
                let merged = match old {
                    Some(old) => chunk::decode(&old)
                        .map_err(|e| self.damaged(id, Some(*window), e))?
                        .overwrite(&fresh),
                    None => fresh,
                };
                let summary = merged.summary().expect("a sealed window has samples");
                if *window == newest {
                    threshold = threshold.max(merged.len() as u64);
                }
                triples.push((field, chunk::encode(&merged), summary.to_bytes()));
            }
            // What stays in the head goes back in front as one element, one segment per tag
            // set (deduplicated: the last write of a timestamp wins, as reads would decide).
            let mut kept = Vec::new();
            let mut deltas: BTreeMap<i64, i64> = BTreeMap::new();
            for (window, n) in &consumed {
                deltas.insert(*window, -n);
            }
            for ((window, hash), records) in head {
                let samples = Samples::from_unsorted(records);
                let pairs: Vec<(i64, f64)> = samples
                    .timestamps
                    .iter()
                    .copied()
                    .zip(samples.values.iter().copied())
                    .collect();
                push_segment(&mut kept, hash, &pairs);
                *deltas.entry(window).or_default() += pairs.len() as i64;
            }
            let mut cmd = SCRIPTS.seal.cmd(&keys.all());
            cmd.arg(&generation)
                .arg(elements.len())
                .arg(&kept)
                .arg(ttl_arg(self.config.retention.metric_ttl))
                .arg(WINDOW)
                .arg(threshold)
                .arg(targets.iter().map(|(w, _)| *w).min().unwrap_or_default())
                .arg(targets.iter().map(|(w, _)| *w).max().unwrap_or_default())
                .arg(deltas.len());
            for (window, delta) in &deltas {
                cmd.arg(window).arg(delta);
            }
            for (field, data, summary) in &triples {
                cmd.arg(*field).arg(data.as_slice()).arg(summary.as_slice());
            }
            if self.pool.query::<i64>(&cmd).await? == 1 {
                return Ok(());
            }
        }
        tracing::debug!(backend = %self.config.name, series = id, "seal lost three races; the next write seals");
        Ok(())
    }

    /// The load script call of one series over `[lo, hi)`; with `step`, chunks the summaries
    /// answer alone come without their data.
    fn load_cmd(&self, keys: &SampleKeys, lo: i64, hi: i64, step: Option<i64>) -> redis::Cmd {
        let mut cmd = SCRIPTS.load.cmd(&keys.all());
        cmd.arg(lo)
            .arg(hi)
            .arg(step.map(|s| s.to_string()).unwrap_or_default())
            .arg(WINDOW);
        cmd
    }

    /// Reads the samples of each series in `ids` over `[lo, hi)`, in one pipelined round
    /// trip (plus one per series whose summaries the script trusted and this side does not,
    /// which the timestamps in the summaries decide exactly). `tags` keeps only the tag sets
    /// it accepts (by their JSON). With `step`, whole chunks in one bucket come as summaries.
    pub(crate) async fn load(
        &self,
        ids: &[&str],
        lo: i64,
        hi: i64,
        step: Option<i64>,
        wanted: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Vec<Loaded>> {
        let mut out = Vec::with_capacity(ids.len());
        for part in ids.chunks(64) {
            let mut pipe = redis::pipe();
            let keys: Vec<SampleKeys> =
                part.iter().map(|id| self.keys.series_samples(id)).collect();
            for k in &keys {
                pipe.add_command(self.load_cmd(k, lo, hi, step));
            }
            let replies = self.pool.pipeline(&pipe).await?;
            for ((id, k), reply) in part.iter().zip(&keys).zip(&replies) {
                out.push(self.parse_load(id, k, reply, lo, hi, step, wanted).await?);
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    async fn parse_load(
        &self,
        id: &str,
        keys: &SampleKeys,
        reply: &Value,
        lo: i64,
        hi: i64,
        step: Option<i64>,
        wanted: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Loaded> {
        let [state, head, chunks] = items(reply) else {
            return Err(Error::malformed("sample load reply"));
        };
        let mut tags: HashMap<u64, String> = HashMap::new();
        for pair in items(state).chunks(2) {
            let [field, json] = pair else { continue };
            let Some(hash) = text(field)
                .and_then(|f| f.strip_prefix('#'))
                .and_then(|h| u64::from_str_radix(h, 16).ok())
            else {
                continue;
            };
            let json = text(json).ok_or_else(|| self.damaged(id, None, "tags are not UTF-8"))?;
            tags.insert(hash, json.to_owned());
        }
        let tags_of = |hash: u64, window: Option<i64>| -> Result<&String> {
            tags.get(&hash)
                .ok_or_else(|| self.damaged(id, window, format!("tag set {hash:016x} is unknown")))
        };
        let mut decoded: BTreeMap<u64, Vec<(i64, Samples)>> = BTreeMap::new();
        let mut loaded = Loaded::default();
        for triple in items(chunks).chunks(3) {
            let [field, summary, data] = triple else {
                return Err(Error::malformed("sample load reply"));
            };
            let (window, hash) = bytes(field)
                .and_then(parse_chunk_field)
                .ok_or_else(|| self.damaged(id, None, "a chunk field is malformed"))?;
            if !wanted(tags_of(hash, Some(window))?) {
                continue;
            }
            let summary = Summary::from_bytes(bytes(summary).unwrap_or_default())
                .map_err(|e| self.damaged(id, Some(window), format!("its summary: {e}")))?;
            let data =
                match bytes(data) {
                    Some(data) => Some(data.to_vec()),
                    None => {
                        let whole = step.is_some_and(|step| {
                            summary.first.0 >= lo
                                && summary.last.0 < hi
                                && bucket_start(summary.first.0, step)
                                    == bucket_start(summary.last.0, step)
                        });
                        if whole {
                            loaded
                                .summaries
                                .push((tags_of(hash, Some(window))?.clone(), summary));
                            None
                        } else {
                            let mut get = redis::cmd("HGET");
                            get.arg(&keys.chunks).arg(chunk_field(window, hash));
                            Some(self.pool.query::<Option<Vec<u8>>>(&get).await?.ok_or_else(
                                || self.damaged(id, Some(window), "its data is missing"),
                            )?)
                        }
                    }
                };
            if let Some(data) = data {
                let samples =
                    chunk::decode(&data).map_err(|e| self.damaged(id, Some(window), e))?;
                decoded.entry(hash).or_default().push((window, samples));
            }
        }
        let mut head_records: BTreeMap<u64, Vec<(i64, f64)>> = BTreeMap::new();
        for element in items(head) {
            parse_segments(bytes(element).unwrap_or_default(), |hash, ts, v| {
                head_records.entry(hash).or_default().push((ts, v));
            })
            .map_err(|why| self.damaged(id, None, why))?;
        }
        let hashes: std::collections::BTreeSet<u64> =
            decoded.keys().chain(head_records.keys()).copied().collect();
        for hash in hashes {
            let json = tags_of(hash, None)?;
            if !wanted(json) {
                continue;
            }
            let mut all = Samples::default();
            let mut windows = decoded.remove(&hash).unwrap_or_default();
            windows.sort_by_key(|(w, _)| *w);
            for (_, part) in windows {
                let range = part.range(lo, hi);
                all.timestamps
                    .extend_from_slice(&part.timestamps[range.clone()]);
                all.values.extend_from_slice(&part.values[range]);
            }
            if let Some(records) = head_records.remove(&hash) {
                let fresh = Samples::from_unsorted(
                    records
                        .into_iter()
                        .filter(|(ts, _)| *ts >= lo && *ts < hi)
                        .collect(),
                );
                all = all.overwrite(&fresh);
            }
            if !all.is_empty() {
                loaded.samples.insert(json.clone(), all);
            }
        }
        Ok(loaded)
    }

    /// Moves every series still in the layout before chunks (a sorted set of members and a
    /// hash of values per series) into chunks, then deletes the old keys; marks the namespace
    /// done so later connects skip the check. Idempotent: a migration cut midway leaves the
    /// old keys of the series not yet done, and the next connect redoes those (rewriting a
    /// sample is harmless: the last write wins).
    pub(crate) async fn migrate_layout(&self) -> Result<()> {
        let marker: Option<String> = self
            .pool
            .query(redis::cmd("GET").arg(self.keys.layout()))
            .await?;
        if marker.as_deref() == Some("2") {
            return Ok(());
        }
        let ids: Vec<String> = self
            .pool
            .query(
                redis::cmd("ZRANGE")
                    .arg(self.keys.series_index())
                    .arg(0)
                    .arg(-1),
            )
            .await?;
        let mut migrated = 0usize;
        for id in &ids {
            let (z, v) = (self.keys.legacy_samples(id), self.keys.legacy_values(id));
            let reply: Value = self
                .pool
                .query(&SCRIPTS.legacy_range.cmd(&[&z, &v]))
                .await?;
            let flat = items(&reply);
            if flat.is_empty() {
                continue;
            }
            let mut by_tags: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
            for pair in flat.chunks(2) {
                let [member, value] = pair else { continue };
                let member = text(member).ok_or_else(|| Error::malformed("sample key"))?;
                let Some(value) = text(value).filter(|v| !v.is_empty()) else {
                    continue;
                };
                let value: f64 = value
                    .parse()
                    .map_err(|_| Error::malformed("sample value"))?;
                if member.len() < 16 || !member.is_char_boundary(16) {
                    return Err(Error::malformed("sample key"));
                }
                let ts: i64 = member[..16]
                    .parse()
                    .map_err(|_| Error::malformed("sample timestamp"))?;
                by_tags
                    .entry(member[16..].to_owned())
                    .or_default()
                    .push((ts, value));
            }
            let mut batch = HeadBatch::default();
            for (json, samples) in &by_tags {
                batch.add(json, samples);
            }
            if batch.count > 0 {
                let mut pipe = redis::pipe();
                let append = self.push_append(&mut pipe, id, &batch);
                let replies = self.pool.pipeline(&pipe).await?;
                self.appended(id, &batch, append, &replies);
                self.seal(id, true).await?;
            }
            let mut del = redis::cmd("DEL");
            del.arg(&z).arg(&v);
            self.pool.query::<i64>(&del).await?;
            migrated += 1;
        }
        let mut mark = redis::cmd("SET");
        mark.arg(self.keys.layout()).arg("2");
        self.pool.query::<Value>(&mark).await?;
        if migrated > 0 {
            tracing::info!(backend = %self.config.name, series = migrated, "moved series into chunks");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_round_trip_bit_for_bit() {
        let samples = [(-5, -0.0), (0, 5e-324), (1 << 60, f64::MAX), (7, f64::NAN)];
        let mut out = Vec::new();
        push_segment(&mut out, 42, &samples[..2]);
        push_segment(&mut out, u64::MAX, &samples[2..]);
        let mut back = Vec::new();
        parse_segments(&out, |h, t, v| back.push((h, t, v.to_bits()))).unwrap();
        let want: Vec<_> = samples
            .iter()
            .enumerate()
            .map(|(i, (t, v))| (if i < 2 { 42 } else { u64::MAX }, *t, v.to_bits()))
            .collect();
        assert_eq!(back, want);
    }

    #[test]
    fn a_damaged_head_element_is_an_error_never_a_panic() {
        let mut out = Vec::new();
        push_segment(&mut out, 1, &[(1, 1.0), (2, 2.0)]);
        for len in 1..out.len() {
            let mut calls = 0;
            let result = parse_segments(&out[..len], |_, _, _| calls += 1);
            assert!(result.is_err(), "{len} bytes");
            assert_eq!(calls, 0, "nothing of a damaged element is used");
        }
        // A count that overflows the length.
        let mut huge = out.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_segments(&huge, |_, _, _| ()).is_err());
        assert!(parse_segments(&[], |_, _, _| panic!("no records")).is_ok());
    }

    #[test]
    fn chunk_fields_round_trip() {
        for (w, h) in [(0, 0), (WINDOW * 500_000, u64::MAX), (-WINDOW, 17)] {
            assert_eq!(
                parse_chunk_field(chunk_field(w, h).as_bytes()),
                Some((w, h))
            );
        }
        for bad in ["", "12", "x:1", "1:zz", "1:", ":1"] {
            assert_eq!(parse_chunk_field(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn a_batch_counts_its_windows() {
        let mut batch = HeadBatch::default();
        batch.add("{}", &[(WINDOW - 1, 1.0), (WINDOW, 2.0), (WINDOW + 5, 3.0)]);
        batch.add("{\"a\":\"b\"}", &[(3, 1.0)]);
        assert_eq!(batch.count, 4);
        assert_eq!(batch.windows, BTreeMap::from([(0, 2), (WINDOW, 2)]));
        assert_eq!(batch.tagsets.len(), 2);
    }
}
