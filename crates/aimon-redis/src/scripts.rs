//! The Lua scripts that run next to the data. Each touches keys of one hash slot only (the
//! namespace slot or one series' slot), so each is atomic and Cluster-safe.
//!
//! Timestamps travel as 16-digit zero-padded microseconds, so equal-length strings compare
//! as numbers; sorted-set scores are the same microseconds as doubles (exact up to 2^53 µs,
//! year 2255; later samples are still ordered by their member, which starts with the padded
//! timestamp, and filtered exactly by the client).

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
    redis.call('ZADD', k, score, id)
    redis.call('SADD', registry, k)
  end
  redis.call('HSET', item, 'x', table.concat(new_keys, '\n'))
end
local function expire(key, live_until)
  if live_until then
    redis.call('PEXPIREAT', key, string.format('%.0f', math.floor(live_until / 1000) + 1))
  else
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
  redis.call('ZADD', KEYS[i], 'GT', ARGV[i + 4], ARGV[1])
  redis.call('SADD', KEYS[3], KEYS[i])
end
redis.call('HSETNX', KEYS[1], 'c', ARGV[3])
redis.call('HSET', KEYS[1], 'j', ARGV[2], 'u', ARGV[4])
if l then redis.call('HSET', KEYS[1], 'l', l) end
expire(KEYS[1], lu)
redis.call('PUBLISH', ARGV[8], ARGV[9])
return 1
"#;

/// Trims samples older than the cutoff. KEYS: samples, values. ARGV: cutoff µs.
/// Returns the number of samples removed.
const TRIM_BODY: &str = r#"
local function trim(z, v, cutoff)
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', '(' .. cutoff)
  for i = 1, #old, 1000 do
    redis.call('HDEL', v, unpack(old, i, math.min(i + 999, #old)))
  end
  if #old > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', '(' .. cutoff) end
  return #old
end
"#;

/// After a write to a series with a TTL: trims samples older than the cutoff and sets both
/// keys to expire when the latest sample does. KEYS: samples, values. ARGV: ttl µs, cutoff µs.
/// (The samples themselves are written by plain `HSET` and `ZADD`: no per-sample Lua.)
const RETAIN: &str = r#"
local z, v = KEYS[1], KEYS[2]
trim(z, v, ARGV[2])
local top = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
if top[2] then
  local at = string.format('%.0f', math.floor((tonumber(top[2]) + tonumber(ARGV[1])) / 1000) + 1)
  redis.call('PEXPIREAT', z, at)
  redis.call('PEXPIREAT', v, at)
end
return 1
"#;

/// `apply_retention` for one series: KEYS: samples, values. ARGV: cutoff µs.
const TRIM: &str = "return trim(KEYS[1], KEYS[2], ARGV[1])";

/// Reads samples with scores in [min, max] whose tags include the given pairs.
/// KEYS: samples, values. ARGV: min, max, then tag key, value pairs.
/// Returns member, value, member, value…
const RANGE: &str = r#"
local ms = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[2])
if #ARGV > 2 then
  local decoded, kept = {}, {}
  for _, m in ipairs(ms) do
    local tj = string.sub(m, 17)
    local ok = decoded[tj]
    if ok == nil then
      local tags = cjson.decode(tj)
      ok = true
      for i = 3, #ARGV, 2 do
        if tags[ARGV[i]] ~= ARGV[i + 1] then ok = false; break end
      end
      decoded[tj] = ok
    end
    if ok then kept[#kept + 1] = m end
  end
  ms = kept
end
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

/// Downsamples one series in the server. KEYS: samples, values.
/// ARGV: min score, max score (inclusive), start µs, end µs (exclusive), step µs, group_by tag
/// or '', then tag filter key, value pairs.
/// Returns, per (group, bucket) in order of appearance: has_group ('1'/'0'), group, bucket
/// start, count, sum and its Neumaier compensation (%.17g), min, max, first member, first
/// value, last member, last value, and whether the sum and compensation are in units of 2^64
/// ('1' once a running sum overflowed, '0' otherwise). Samples at or after 2^53 µs (year 2255), where doubles
/// lose microseconds, come back one record each with bucket '' for the client to place.
const HISTORY: &str = r#"
local ms = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[2])
local HUGE, SCALE = math.huge, 2 ^ -64
local step = tonumber(ARGV[5])
local group_by = ARGV[6]
local filters = {}
for i = 7, #ARGV, 2 do filters[#filters + 1] = {ARGV[i], ARGV[i + 1]} end
-- Per tags JSON: whether it passes the filters, its group, and the accumulator of the last
-- bucket it fed (samples come in time order, so most samples hit that one).
local sets = {}
local accs, order = {}, {}
for i = 1, #ms, 1000 do
  local last = math.min(i + 999, #ms)
  local vs = redis.call('HMGET', KEYS[2], unpack(ms, i, last))
  for j = i, last do
    local m = ms[j]
    local vstr = vs[j - i + 1]
    local ts_text = string.sub(m, 1, 16)
    local ts = tonumber(ts_text)
    if vstr and ts_text >= ARGV[3] and ts_text < ARGV[4] then
      local tj = string.sub(m, 17)
      local set = sets[tj]
      if not set then
        local tags = cjson.decode(tj)
        set = {ok = true}
        for _, f in ipairs(filters) do
          if tags[f[1]] ~= f[2] then set.ok = false; break end
        end
        if group_by ~= '' then set.g = tags[group_by] end
        sets[tj] = set
      end
      if set.ok then
        local g = set.g
        local value = tonumber(vstr)
        local acc, q
        if ts < 9007199254740992 then
          q = math.floor(ts / step)
          local r = ts - q * step
          if r < 0 then q = q - 1 elseif r >= step then q = q + 1 end
          if set.q == q then acc = set.acc end
        end
        if not acc then
          local bucket, key
          if q then
            bucket = string.format('%.0f', q * step)
            key = (g and ('1' .. g) or '0') .. '\n' .. bucket
          else
            bucket = ''
            key = 'raw\n' .. m
          end
          acc = accs[key]
          if not acc then
            acc = {g = g, bucket = bucket, count = 0, sum = 0, c = 0, min = value, minv = vstr,
                   max = value, maxv = vstr, fm = m, fv = vstr}
            accs[key] = acc
            order[#order + 1] = key
          end
          if q then set.q = q; set.acc = acc end
        end
        acc.count = acc.count + 1
        local v = value
        if acc.scaled then v = v * SCALE end
        local t = acc.sum + v
        if t == HUGE or t == -HUGE then
          -- An intermediate overflow: go on in units of 2^64 (exact scaling), where no
          -- sum of finite values overflows.
          acc.scaled = true
          acc.sum = acc.sum * SCALE
          acc.c = acc.c * SCALE
          v = v * SCALE
          t = acc.sum + v
        end
        if math.abs(acc.sum) >= math.abs(v) then
          acc.c = acc.c + ((acc.sum - t) + v)
        else
          acc.c = acc.c + ((v - t) + acc.sum)
        end
        acc.sum = t
        if value < acc.min then acc.min = value; acc.minv = vstr end
        if value > acc.max then acc.max = value; acc.maxv = vstr end
        acc.lm = m
        acc.lv = vstr
      end
    end
  end
end
local out = {}
for _, key in ipairs(order) do
  local a = accs[key]
  out[#out + 1] = a.g and '1' or '0'
  out[#out + 1] = a.g or ''
  out[#out + 1] = a.bucket
  out[#out + 1] = tostring(a.count)
  out[#out + 1] = string.format('%.17g', a.sum)
  out[#out + 1] = string.format('%.17g', a.c)
  out[#out + 1] = a.minv
  out[#out + 1] = a.maxv
  out[#out + 1] = a.fm
  out[#out + 1] = a.fv
  out[#out + 1] = a.lm
  out[#out + 1] = a.lv
  out[#out + 1] = a.scaled and '1' or '0'
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
    pub(crate) retain: Script,
    pub(crate) trim: Script,
    pub(crate) range: Script,
    pub(crate) history: Script,
    pub(crate) sweep_indexes: Script,
    pub(crate) drop_items: Script,
}

impl Scripts {
    pub(crate) fn all(&self) -> [&Script; 9] {
        [
            &self.alert,
            &self.agent,
            &self.series,
            &self.retain,
            &self.trim,
            &self.range,
            &self.history,
            &self.sweep_indexes,
            &self.drop_items,
        ]
    }
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    alert: Script::new("alert", format!("{PRELUDE}{ALERT}")),
    agent: Script::new("agent", format!("{PRELUDE}{AGENT}")),
    series: Script::new("series", format!("{PRELUDE}{SERIES}")),
    retain: Script::new("retain", format!("{TRIM_BODY}{RETAIN}")),
    trim: Script::new("trim", format!("{TRIM_BODY}{TRIM}")),
    range: Script::new("range", RANGE.to_owned()),
    history: Script::new("history", HISTORY.to_owned()),
    sweep_indexes: Script::new("sweep_indexes", SWEEP_INDEXES.to_owned()),
    drop_items: Script::new("drop_items", DROP_ITEMS.to_owned()),
});
