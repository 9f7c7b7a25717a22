//! The Lua scripts that run next to the data. Each touches keys of one hash slot only (the
//! namespace slot or one series' slot), so each is atomic and Cluster-safe.
//!
//! Timestamps of items travel as 16-digit zero-padded microseconds, so equal-length strings
//! compare as numbers. Samples never pass through Lua one by one: the sample scripts move
//! whole head segments, chunks and summaries, and look only at window starts.

use std::sync::LazyLock;

/// Shared helpers, prepended to every script that maintains indexes.
const PRELUDE: &str = r#"
local function set_indexes(item, master, registry, id, score, new_keys)
  local old = redis.call('HGET', item, 'x')
  local keep = {}
  for _, k in ipairs(new_keys) do keep[k] = true end
  if old then
    for k in string.gmatch(old, '[^\n]+') do
      if not keep[k] then
        redis.call('ZREM', k, id)
        if redis.call('EXISTS', k) == 0 then redis.call('SREM', registry, k) end
      end
    end
  end
  redis.call('ZADD', master, score, id)
  for _, k in ipairs(new_keys) do
    -- A member already there means the key exists, and so does its registry entry.
    if redis.call('ZADD', k, score, id) == 1 then redis.call('SADD', registry, k) end
  end
  local joined = table.concat(new_keys, '\n')
  if joined ~= old then redis.call('HSET', item, 'x', joined) end
end
local function expire(key, live_until)
  if live_until then
    redis.call('PEXPIREAT', key, string.format('%.0f', math.floor(live_until / 1000) + 1))
  elseif redis.call('PTTL', key) ~= -1 then
    redis.call('PERSIST', key)
  end
end
"#;

/// Upserts an alert. KEYS: item, master index, registry, secondary indexes…
/// ARGV: id, json, live_until µs or '', channel, event.
const ALERT: &str = r#"
local lu = tonumber(ARGV[3])
local idx = {}
for i = 4, #KEYS do idx[#idx + 1] = KEYS[i] end
set_indexes(KEYS[1], KEYS[2], KEYS[3], ARGV[1], lu or '+inf', idx)
redis.call('HSET', KEYS[1], 'j', ARGV[2])
expire(KEYS[1], lu)
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"#;

/// Upserts the latest state of an agent unless the stored one has a later heartbeat.
/// KEYS: item, master index, registry, status index.
/// ARGV: agent_id, json, heartbeat (padded µs), live_until µs or '', channel, event.
/// Returns 1 when stored, 0 when superseded.
const AGENT: &str = r#"
local old = redis.call('HGET', KEYS[1], 'h')
if old and old > ARGV[3] then return 0 end
local lu = tonumber(ARGV[4])
set_indexes(KEYS[1], KEYS[2], KEYS[3], ARGV[1], lu or '+inf', {KEYS[4]})
redis.call('HSET', KEYS[1], 'j', ARGV[2], 'h', ARGV[3])
expire(KEYS[1], lu)
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
"#;

/// Upserts series metadata. KEYS: meta, master index, registry, name index, type index, then
/// one sample-tag index per tag pair of the batch's live samples.
/// ARGV: id, json, created_at, updated (padded µs), latest live sample of the batch (padded µs
/// or ''), ttl µs or '', metadata live ('1'/'0'), channel, event, then per sample-tag index the
/// instant its last sample of the batch expires (µs or '+inf'; `ZADD GT` keeps the latest).
/// Returns 1 when written, 0 when skipped (a new series with nothing live).
const SERIES: &str = r#"
local exists = redis.call('EXISTS', KEYS[1]) == 1
if not exists and ARGV[5] == '' and ARGV[7] == '0' then return 0 end
local l = redis.call('HGET', KEYS[1], 'l')
if ARGV[5] ~= '' and ((not l) or ARGV[5] > l) then l = ARGV[5] end
local last = ARGV[4]
if l and l > last then last = l end
local lu = nil
if ARGV[6] ~= '' then lu = tonumber(last) + tonumber(ARGV[6]) end
set_indexes(KEYS[1], KEYS[2], KEYS[3], ARGV[1], lu or '+inf', {KEYS[4], KEYS[5]})
for i = 6, #KEYS do
  if redis.call('ZADD', KEYS[i], 'GT', ARGV[i + 4], ARGV[1]) == 1 then
    redis.call('SADD', KEYS[3], KEYS[i])
  end
end
redis.call('HSETNX', KEYS[1], 'c', ARGV[3])
redis.call('HSET', KEYS[1], 'j', ARGV[2], 'u', ARGV[4])
if l then redis.call('HSET', KEYS[1], 'l', l) end
expire(KEYS[1], lu)
redis.call('PUBLISH', ARGV[8], ARGV[9])
return 1
"#;

/// Shared by the sample scripts. The five keys of a series are, in order: state (hash), head
/// (list), chunks (hash), summaries (hash), head windows (sorted set); see the crate docs.
/// Window starts travel as decimal µs and are exact as Lua numbers below 2^53 (year 2255).
const SAMPLES_PRELUDE: &str = r#"
local function window_of(field)
  return tonumber(string.match(field, '^(%-?%d+):'))
end
-- The sample count a summary starts with (little endian; 48 bits are plenty).
local function count_of(summary)
  local n = 0
  for i = 6, 1, -1 do n = n * 256 + string.byte(summary, i) end
  return n
end
-- Drops the chunks (data and summary) of every window that ended at or before the cutoff;
-- returns how many samples they held. 'f' in the state is the oldest chunk window, so a
-- write pays for the scan only when something is due.
local function trim_chunks(t, c, s, cutoff, window)
  local f = tonumber(redis.call('HGET', t, 'f'))
  if not f or f + window > cutoff then return 0 end
  local removed, oldest = 0, nil
  for _, field in ipairs(redis.call('HKEYS', s)) do
    local ws = window_of(field)
    if ws and ws + window <= cutoff then
      removed = removed + count_of(redis.call('HGET', s, field))
      redis.call('HDEL', s, field)
      redis.call('HDEL', c, field)
    elseif ws and (not oldest or ws < oldest) then
      oldest = ws
    end
  end
  if oldest then
    redis.call('HSET', t, 'f', string.format('%.0f', oldest))
  else
    redis.call('HDEL', t, 'f')
  end
  return removed
end
-- Every key of the series expires a TTL after the end of the newest window holding a sample
-- (the head's windows, and 'm', the newest chunk's), or never: within one window of the latest
-- sample, the granularity retention works at anyway.
local function expire_series(keys, t, w, ttl, window)
  if ttl ~= '' then
    local last = tonumber(redis.call('HGET', t, 'm'))
    for _, ws in ipairs(redis.call('ZRANGE', w, 0, -1)) do
      local v = tonumber(ws)
      if v and (not last or v > last) then last = v end
    end
    if not last then return end
    local at = string.format('%.0f', math.floor((last + window + tonumber(ttl)) / 1000) + 1)
    for _, key in ipairs(keys) do redis.call('PEXPIREAT', key, at) end
  elseif redis.call('PTTL', t) ~= -1 then
    -- A TTL configured earlier left expiries: the keys now live forever.
    for _, key in ipairs(keys) do redis.call('PERSIST', key) end
  end
end
"#;

/// Appends one batch of a series to its head, checking its tag sets (the path of a batch
/// with a tag set this process has not checked yet, or under a TTL; otherwise the client
/// sends the same writes as plain commands). KEYS: the five sample keys.
/// ARGV: segments (one list element), ttl µs or '', cutoff µs or '', window µs, default seal
/// threshold, k, then k pairs (window, samples in it), then pairs (tag-set field, tags JSON).
/// A tag-set field already holding other tags (a 64-bit hash collision) fails the call before
/// anything is written.
/// Returns 1 when the head should be sealed (more than one window in it, or the newest
/// window past the threshold 'x'), 0 otherwise.
const APPEND: &str = r#"
local t, h, c, s, w = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local k = tonumber(ARGV[6])
for i = 7 + 2 * k, #ARGV, 2 do
  local old = redis.call('HGET', t, ARGV[i])
  if not old then
    redis.call('HSET', t, ARGV[i], ARGV[i + 1])
  elseif old ~= ARGV[i + 1] then
    return redis.error_reply('ERR aimon: two tag sets of one series share the hash ' .. ARGV[i])
  end
end
redis.call('RPUSH', h, ARGV[1])
for i = 7, 6 + 2 * k, 2 do redis.call('ZINCRBY', w, ARGV[i + 1], ARGV[i]) end
if ARGV[3] ~= '' then trim_chunks(t, c, s, tonumber(ARGV[3]), tonumber(ARGV[4])) end
expire_series(KEYS, t, w, ARGV[2], tonumber(ARGV[4]))
local hw = redis.call('ZRANGE', w, 0, -1, 'WITHSCORES')
if #hw > 2 then return 1 end
local x = tonumber(redis.call('HGET', t, 'x') or ARGV[5])
if hw[2] and tonumber(hw[2]) >= x then return 1 end
return 0
"#;

/// What sealing starts from, read atomically. KEYS: state, head.
/// Returns the seal generation ('g', '0' before the first seal) and the head's elements.
const SNAPSHOT: &str = r#"
return {redis.call('HGET', KEYS[1], 'g') or '0', redis.call('LRANGE', KEYS[2], 0, -1)}
"#;

/// Commits a seal computed from a snapshot, unless another seal came first.
/// KEYS: the five sample keys. ARGV: the snapshot's generation, how many head elements it
/// read, the element to put back in front of the head (samples of windows left unsealed) or
/// '', ttl µs or '', window µs, the new seal threshold, the oldest and the newest window
/// sealed, k, then k pairs (window, change of its head count), then triples (field, chunk,
/// summary).
/// Returns 1 when committed, 0 when the generation moved (nothing written).
const SEAL: &str = r#"
local t, h, c, s, w = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
if (redis.call('HGET', t, 'g') or '0') ~= ARGV[1] then return 0 end
redis.call('LTRIM', h, tonumber(ARGV[2]), -1)
if ARGV[3] ~= '' then redis.call('LPUSH', h, ARGV[3]) end
local k = tonumber(ARGV[9])
for i = 10, 9 + 2 * k, 2 do
  if tonumber(redis.call('ZINCRBY', w, ARGV[i + 1], ARGV[i])) <= 0 then
    redis.call('ZREM', w, ARGV[i])
  end
end
for i = 10 + 2 * k, #ARGV, 3 do
  redis.call('HSET', c, ARGV[i], ARGV[i + 1])
  redis.call('HSET', s, ARGV[i], ARGV[i + 2])
end
redis.call('HINCRBY', t, 'g', 1)
redis.call('HSET', t, 'x', ARGV[6])
local f = redis.call('HGET', t, 'f')
if not f or tonumber(ARGV[7]) < tonumber(f) then redis.call('HSET', t, 'f', ARGV[7]) end
local m = redis.call('HGET', t, 'm')
if not m or tonumber(ARGV[8]) > tonumber(m) then redis.call('HSET', t, 'm', ARGV[8]) end
expire_series(KEYS, t, w, ARGV[4], tonumber(ARGV[5]))
return 1
"#;

/// Reads a series' samples over [lo, hi). KEYS: the five sample keys. ARGV: lo µs, hi µs,
/// history step µs or '' (every chunk's data), window µs.
/// Returns {state hash (flat), head elements, chunks}: per chunk whose window overlaps the
/// range, its field, summary and data; with a step, the data is left out (nil) where the
/// summary answers alone: the window lies in the range and in one bucket, and no head sample
/// falls in it.
const LOAD: &str = r#"
local lo, hi, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local step = tonumber(ARGV[3])
local in_head = {}
for _, m in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do in_head[tonumber(m)] = true end
local out, need = {}, {}
local sums = redis.call('HGETALL', KEYS[4])
for i = 1, #sums, 2 do
  local ws = window_of(sums[i])
  if ws and ws + window > lo and ws < hi then
    out[#out + 1] = sums[i]
    out[#out + 1] = sums[i + 1]
    local whole = step and ws >= lo and ws + window <= hi and ws + window < 9007199254740992
      and not in_head[ws] and math.floor(ws / step) == math.floor((ws + window - 1) / step)
    out[#out + 1] = false
    if not whole then need[#need + 1] = #out end
  end
end
for i = 1, #need, 500 do
  local last = math.min(i + 499, #need)
  local fields = {}
  for j = i, last do fields[#fields + 1] = out[need[j] - 2] end
  local data = redis.call('HMGET', KEYS[3], unpack(fields))
  for j = i, last do out[need[j]] = data[j - i + 1] end
end
return {redis.call('HGETALL', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1), out}
"#;

/// `apply_retention` for one series: drops whole chunks past the cutoff.
/// KEYS: state, chunks, summaries. ARGV: cutoff µs, window µs. Returns the samples dropped.
const TRIM: &str =
    "return trim_chunks(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[1]), tonumber(ARGV[2]))";

/// Reads every sample of the layout before chunks (for the migration).
/// KEYS: samples, values. Returns member, value, member, value…
const LEGACY_RANGE: &str = r#"
local ms = redis.call('ZRANGE', KEYS[1], 0, -1)
local out = {}
for i = 1, #ms, 1000 do
  local last = math.min(i + 999, #ms)
  local vs = redis.call('HMGET', KEYS[2], unpack(ms, i, last))
  for j = i, last do
    out[#out + 1] = ms[j]
    out[#out + 1] = vs[j - i + 1] or ''
  end
end
return out
"#;

/// Removes expired index members and empty index keys. KEYS: registry. ARGV: now µs.
/// Returns the number of members removed.
const SWEEP_INDEXES: &str = r#"
local removed = 0
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  removed = removed + redis.call('ZREMRANGEBYSCORE', k, '-inf', '(' .. ARGV[1])
  if redis.call('ZCARD', k) == 0 then
    redis.call('DEL', k)
    redis.call('SREM', KEYS[1], k)
  end
end
return removed
"#;

/// Deletes expired items of one kind. KEYS: master index. ARGV: now µs, item key prefix
/// (the item key is the prefix plus the escaped id, passed as pairs id, item key…).
/// ARGV: now µs, then id, item key pairs of the expired members. Returns how many existed.
const DROP_ITEMS: &str = r#"
local n = 0
for i = 2, #ARGV, 2 do
  local id, item = ARGV[i], ARGV[i + 1]
  local idx = redis.call('HGET', item, 'x')
  if idx then
    for k in string.gmatch(idx, '[^\n]+') do redis.call('ZREM', k, id) end
  end
  redis.call('DEL', item)
  n = n + redis.call('ZREM', KEYS[1], id)
end
return n
"#;

/// A script and its SHA1.
#[derive(Debug)]
pub(crate) struct Script {
    pub(crate) name: &'static str,
    pub(crate) code: String,
    pub(crate) sha: String,
}

impl Script {
    fn new(name: &'static str, code: String) -> Self {
        let sha = redis::Script::new(&code).get_hash().to_owned();
        Script { name, code, sha }
    }

    /// `EVALSHA sha numkeys keys… args…`.
    pub(crate) fn cmd(&self, keys: &[&str]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(keys.len()).arg(keys);
        cmd
    }
}

/// Every script of the driver.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) alert: Script,
    pub(crate) agent: Script,
    pub(crate) series: Script,
    pub(crate) append: Script,
    pub(crate) snapshot: Script,
    pub(crate) seal: Script,
    pub(crate) load: Script,
    pub(crate) trim: Script,
    pub(crate) legacy_range: Script,
    pub(crate) sweep_indexes: Script,
    pub(crate) drop_items: Script,
}

impl Scripts {
    pub(crate) fn all(&self) -> [&Script; 11] {
        [
            &self.alert,
            &self.agent,
            &self.series,
            &self.append,
            &self.snapshot,
            &self.seal,
            &self.load,
            &self.trim,
            &self.legacy_range,
            &self.sweep_indexes,
            &self.drop_items,
        ]
    }
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    alert: Script::new("alert", format!("{PRELUDE}{ALERT}")),
    agent: Script::new("agent", format!("{PRELUDE}{AGENT}")),
    series: Script::new("series", format!("{PRELUDE}{SERIES}")),
    append: Script::new("append", format!("{SAMPLES_PRELUDE}{APPEND}")),
    snapshot: Script::new("snapshot", SNAPSHOT.to_owned()),
    seal: Script::new("seal", format!("{SAMPLES_PRELUDE}{SEAL}")),
    load: Script::new("load", format!("{SAMPLES_PRELUDE}{LOAD}")),
    trim: Script::new("trim", format!("{SAMPLES_PRELUDE}{TRIM}")),
    legacy_range: Script::new("legacy_range", LEGACY_RANGE.to_owned()),
    sweep_indexes: Script::new("sweep_indexes", SWEEP_INDEXES.to_owned()),
    drop_items: Script::new("drop_items", DROP_ITEMS.to_owned()),
});
