//! The Lua scripts behind every cache call that writes, and behind the
//! reads of a bounded cache: each runs alone in Redis on one cache's keys
//! (one slot: they run as they are on Redis Cluster), so a key's check,
//! write, bookkeeping and entry event are one step.
//!
//! Every script starts with [`BASE`] and [`LIB`] ([`PUT`] with [`BASE`] only): `KEYS` are the cache's keys
//! ([`Keys::cache_keys`](crate::keys::Keys::cache_keys): data, listeners,
//! meta, used, born, own), `ARGV[1..5]` the event context (channel, origin,
//! cache name, the largest value carried, flags: `a` publish every change,
//! `n` the cache has no keys beside its hash, `q` no `added`, `updated`
//! or `removed`: a move between partitions, not a change), and the script's own
//! arguments start at `ARGV[6]`. Scripts that may expire or evict answer
//! how many they did as their last two values.
//!
//! Bookkeeping only while the cache has a `meta` hash (bounds, or entries
//! with a time to live of their own): its hash `used` (score: the order of
//! use, from the server's clock in µs, never repeated), `born` (score: the
//! entry's version, the write time, for the cache's time to live) and `own`
//! (score: the entry's own deadline in ms). An unbounded cache costs one
//! lookup of `meta` and one of `listeners` per write, inside the script.

use std::sync::LazyLock;

use redis::Script;

/// The start of every cache script: its context, the version rule, and
/// how it publishes a change (entry_events.rs has the format).
pub(crate) const BASE: &str = r#"
local channel, origin, cache, vmax, flags = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local D, L, M, U, B, O = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local plain = string.find(flags, 'n', 1, true) ~= nil
local quiet = string.find(flags, 'q', 1, true) ~= nil
local listened
local function listening()
  if listened == nil then
    listened = plain or string.find(flags, 'a', 1, true) ~= nil or redis.call('EXISTS', L) == 1
  end
  return listened
end
-- Publishes one change (entry_events.rs has the format), only while someone listens.
local function tell(kind, field, version, value)
  -- A move between partitions is not a change; an eviction or expiry during one is.
  if quiet and kind ~= 'v' and kind ~= 'x' then return end
  if not listening() then return end
  local carried = value ~= nil and #value <= vmax
  redis.call('PUBLISH', channel, 'e1' .. kind .. (carried and '1' or '0') .. version
    .. string.format('%08x', #origin) .. origin .. string.format('%08x', #cache) .. cache
    .. string.format('%08x', #field) .. field .. (carried and value or ''))
end
-- The version of a write at `at` (16 hex digits) over the stored `cur`:
-- `at`, or the stored version + 1 when `at` is not greater.
local function stamp(cur, at)
  if cur and string.sub(cur, 1, 16) >= at then
    return string.format('%016x', tonumber(string.sub(cur, 1, 16), 16) + 1)
  end
  return at
end
"#;

/// The rest of every cache script but [`PUT`]: the books.
pub(crate) const LIB: &str = r#"
local function num(n) return string.format('%d', n) end
local function ver(stored) return tonumber(string.sub(stored, 1, 16), 16) end
local function size(field, stored) return #field + #stored - 16 end
local bounds
-- The cache's bounds, or false when it keeps no books.
local function bound()
  if bounds == nil then
    bounds = false
    if not plain then
      local m = redis.call('HMGET', M, 'entries', 'bytes', 'ttl', 'idle')
      if m[1] then
        bounds = {entries = tonumber(m[1]), bytes = tonumber(m[2]), ttl = tonumber(m[3]), idle = tonumber(m[4])}
      end
    end
  end
  return bounds
end
local clock
local function now()
  if not clock then
    local t = redis.call('TIME')
    clock = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return clock
end
local last
local function touch(field)
  if last == nil then last = tonumber(redis.call('HGET', M, 'last') or '0') end
  last = math.max(now() * 1000, last + 1)
  redis.call('ZADD', U, num(last), field)
end
local function finish()
  if last ~= nil then redis.call('HSET', M, 'last', num(last)) end
end
local evicted, expired = 0, 0
-- Whether the entry has expired now: past its deadline, never in the
-- deadline's own millisecond (the rule of is_past, cluster.rs).
local function dead(field, stored)
  local b = bound()
  if not b then return false end
  local own = redis.call('ZSCORE', O, field)
  if own then
    if tonumber(own) < now() then return true end
  elseif b.ttl > 0 and ver(stored) + b.ttl < now() then
    return true
  end
  if b.idle > 0 then
    local used = redis.call('ZSCORE', U, field)
    if used and math.floor(tonumber(used) / 1000) + b.idle < now() then return true end
  end
  return false
end
local function drop(field, stored)
  redis.call('HDEL', D, field)
  if bound() then
    redis.call('ZREM', U, field)
    redis.call('ZREM', B, field)
    redis.call('ZREM', O, field)
    redis.call('HINCRBY', M, 'size', -size(field, stored))
  end
end
local function expire(field, stored)
  drop(field, stored)
  tell('x', field, string.sub(stored, 1, 16), nil)
  expired = expired + 1
end
-- The entry under field, false when absent or expired (then removed).
local function live(field)
  local cur = redis.call('HGET', D, field)
  if cur and dead(field, cur) then
    expire(field, cur)
    return false
  end
  return cur
end
-- A read: as live, and a use while the order of use matters.
local function read(field)
  local cur = live(field)
  local b = bound()
  if cur and b and (b.entries > 0 or b.bytes > 0 or b.idle > 0) then touch(field) end
  return cur
end
-- The books of an entry just written (old: what it replaced); deadline: its own, in ms.
local function place(field, old, stored, deadline)
  if not bound() then return end
  redis.call('HINCRBY', M, 'size', size(field, stored) - (old and size(field, old) or 0))
  touch(field)
  if deadline then
    redis.call('ZADD', O, num(deadline), field)
    redis.call('ZREM', B, field)
  else
    redis.call('ZADD', B, num(ver(stored)), field)
    redis.call('ZREM', O, field)
  end
end
-- Evicts the least recently used entries while a size bound is exceeded.
local function evict()
  local b = bound()
  if not b or (b.entries == 0 and b.bytes == 0) then return end
  while (b.entries > 0 and redis.call('HLEN', D) > b.entries)
      or (b.bytes > 0 and tonumber(redis.call('HGET', M, 'size') or '0') > b.bytes) do
    local victim = redis.call('ZRANGE', U, 0, 0)[1]
    if not victim then break end
    local cur = redis.call('HGET', D, victim)
    if cur then
      drop(victim, cur)
      tell('v', victim, string.sub(cur, 1, 16), nil)
      evicted = evicted + 1
    else
      redis.call('ZREM', U, victim)
    end
  end
end
-- Removes up to limit expired entries from each index; true if there may
-- be more (a full batch, and something expired in it).
local function sweep(limit)
  local b = bound()
  if not b then return false end
  local seen, before = 0, expired
  local function due(key, max)
    local found = redis.call('ZRANGEBYSCORE', key, '-inf', num(max), 'LIMIT', 0, limit)
    for _, field in ipairs(found) do
      local cur = redis.call('HGET', D, field)
      if not cur then
        redis.call('ZREM', key, field)
      elseif dead(field, cur) then
        expire(field, cur)
      end
    end
    seen = seen + #found
  end
  due(O, now())
  if b.ttl > 0 then due(B, now() - b.ttl) end
  if b.idle > 0 then due(U, (now() - b.idle) * 1000) end
  return seen >= limit and expired > before
end
-- Starts the books of a cache that keeps none yet: every entry there,
-- its write time as its last use.
local function adopt()
  if plain or redis.call('EXISTS', M) == 1 then return end
  local all = redis.call('HGETALL', D)
  local total = 0
  for i = 1, #all, 2 do
    local field, stored = all[i], all[i + 1]
    total = total + size(field, stored)
    redis.call('ZADD', B, num(ver(stored)), field)
    redis.call('ZADD', U, num(ver(stored) * 1000), field)
  end
  redis.call('HSET', M, 'entries', '0', 'bytes', '0', 'ttl', '0', 'idle', '0', 'size', num(total), 'last', '0')
  bounds = nil
end
"#;

/// A script: [`BASE`], [`LIB`], then `body`.
fn script(body: &str) -> Script {
    Script::new(&format!("{BASE}{LIB}{body}"))
}

/// The common write on its own: an unconditional put, without a time to
/// live of its own, on a cache that keeps no books (no `meta` hash). It
/// checks that, reads the entry there for the version rule, sets the value
/// and publishes the change while someone listens: three or four commands
/// where [`WRITE_IF`] runs five and defines every function of [`LIB`] too.
/// Answers 1, or false without writing anything when the cache keeps
/// books (the caller runs [`WRITE_IF`] then).
///
/// ARGV from 6: field, the caller's time in 16 hex digits, the value.
pub(crate) static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{BASE}{}",
        r#"
if not plain and redis.call('EXISTS', M) == 1 then return false end
local field, value = ARGV[6], ARGV[8]
local cur = redis.call('HGET', D, field)
local version = stamp(cur, ARGV[7])
redis.call('HSET', D, field, version .. value)
tell(cur and 'u' or 'a', field, version, value)
return 1
"#
    ))
});

/// Every write of one entry: checks the condition on the live entry (an
/// expired one is removed first, and is absent), then sets the value by
/// the version rule (the caller's cluster time, or the stored version + 1
/// when that is not greater) or deletes it, keeps the books, publishes
/// the change and evicts beyond the size bounds. Answers {applied, the
/// entry after (version prefix included) or false, evicted, expired,
/// 1 if it started the cache's books}.
///
/// ARGV from 6: field, condition (`put`: none, `absent`, `value`,
/// `version`), expected (value bytes, or the version in 16 hex digits),
/// `set` or `del`, the caller's time in 16 hex digits, the value, the
/// entry's own time to live in ms (`0`: the cache's).
pub(crate) static WRITE_IF: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local field, cond, ttl = ARGV[6], ARGV[7], tonumber(ARGV[12])
local adopted = 0
if ttl > 0 and not bound() then
  adopt()
  adopted = 1
end
local cur = live(field)
local ok
if cond == 'put' then ok = true
elseif cond == 'absent' then ok = not cur
elseif not cur then ok = false
elseif cond == 'value' then ok = string.sub(cur, 17) == ARGV[8]
else ok = string.sub(cur, 1, 16) == ARGV[8] end
if not ok then
  finish()
  return {0, cur, evicted, expired, adopted}
end
if ARGV[9] == 'del' then
  if not cur then return {0, false, evicted, expired, adopted} end
  drop(field, cur)
  tell('r', field, string.sub(cur, 1, 16), nil)
  finish()
  return {1, false, evicted, expired, adopted}
end
local version = stamp(cur, ARGV[10])
local stored = version .. ARGV[11]
redis.call('HSET', D, field, stored)
place(field, cur, stored, ttl > 0 and now() + ttl or nil)
tell(cur and 'u' or 'a', field, version, ARGV[11])
evict()
finish()
-- Evicted at once only when it alone exceeds a bound.
return {1, redis.call('HGET', D, field) or false, evicted, expired, adopted}
"#,
    )
});

/// Sets many entries, each by the version rule from the caller's time
/// (ARGV[6], 16 hex digits); then field, value pairs. Answers {evicted, expired}.
pub(crate) static PUT_ALL: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
for i = 7, #ARGV, 2 do
  local cur = live(ARGV[i])
  local version = stamp(cur, ARGV[6])
  local stored = version .. ARGV[i + 1]
  redis.call('HSET', D, ARGV[i], stored)
  place(ARGV[i], cur, stored, nil)
  tell(cur and 'u' or 'a', ARGV[i], version, ARGV[i + 1])
  evict()
end
finish()
return {evicted, expired}
"#,
    )
});

/// Latest version wins: sets each field (ARGV from 6: field, stored value
/// pairs) whose stored version is older; an entry already past the
/// cache's time to live is not added. Answers {evicted, expired}.
pub(crate) static MERGE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
for i = 6, #ARGV, 2 do
  local cur = redis.call('HGET', D, ARGV[i])
  local b = bound()
  local stale = b and b.ttl > 0 and ver(ARGV[i + 1]) + b.ttl < now()
  if (not stale) and ((not cur) or ver(cur) < ver(ARGV[i + 1])) then
    redis.call('HSET', D, ARGV[i], ARGV[i + 1])
    place(ARGV[i], cur, ARGV[i + 1], nil)
    tell(cur and 'u' or 'a', ARGV[i], string.sub(ARGV[i + 1], 1, 16), string.sub(ARGV[i + 1], 17))
    evict()
  end
end
while sweep(500) do end
finish()
return {evicted, expired}
"#,
    )
});

/// A gather's removal of entries it moved from a partition (ARGV[6..]:
/// field, version pairs): each removed only if it still has the version
/// moved. Answers how many went.
pub(crate) static DROP_MOVED: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local n = 0
for i = 6, #ARGV, 2 do
  local cur = redis.call('HGET', D, ARGV[i])
  if cur and string.sub(cur, 1, 16) == ARGV[i + 1] then
    drop(ARGV[i], cur)
    n = n + 1
  end
end
finish()
return n
"#,
    )
});

/// Removes every entry of the cache, publishing each removal (when
/// someone listens; one already expired is reported expired). Answers
/// {evicted, expired}.
pub(crate) static CLEAR: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if listening() or bound() then
  local all = redis.call('HGETALL', D)
  for i = 1, #all, 2 do
    if dead(all[i], all[i + 1]) then
      tell('x', all[i], string.sub(all[i + 1], 1, 16), nil)
      expired = expired + 1
    else
      tell('r', all[i], string.sub(all[i + 1], 1, 16), nil)
    end
  end
end
redis.call('DEL', D)
if bound() then
  redis.call('DEL', U, B, O)
  redis.call('HSET', M, 'size', '0')
end
return {evicted, expired}
"#,
    )
});

/// Reads of a bounded cache: the live entry (version prefix included) of
/// each field in ARGV from 6, false for an absent or expired one (removed
/// then), each read a use. Answers {entries..., evicted, expired}.
pub(crate) static GET: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local out = {}
for i = 6, #ARGV do out[#out + 1] = read(ARGV[i]) end
finish()
out[#out + 1] = evicted
out[#out + 1] = expired
return out
"#,
    )
});

/// When each field in ARGV from 6 expires, as a look (no use, nothing
/// removed): `-1` for an absent or already expired entry, `0` for one
/// that never expires, else the deadline in ms since the epoch (the
/// sooner of its time to live, its own or the cache's, and its max idle
/// time from its last use). Answers the numbers as strings.
pub(crate) static EXPIRIES: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local out = {}
for i = 6, #ARGV do
  local field = ARGV[i]
  local cur = redis.call('HGET', D, field)
  local b = bound()
  local at = false
  if cur and b then
    local own = redis.call('ZSCORE', O, field)
    if own then
      at = tonumber(own)
    elseif b.ttl > 0 then
      at = ver(cur) + b.ttl
    end
    if b.idle > 0 then
      local used = redis.call('ZSCORE', U, field)
      if used then
        local idle = math.floor(tonumber(used) / 1000) + b.idle
        if not at or idle < at then at = idle end
      end
    end
  end
  if not cur or (at and at < now()) then
    out[#out + 1] = '-1'
  elseif at then
    out[#out + 1] = num(at)
  else
    out[#out + 1] = '0'
  end
end
return out
"#,
    )
});

/// A whole read of a bounded cache: removes every expired entry first,
/// then answers ARGV[6] (`len`: HLEN, `keys`: HKEYS, `all`: HGETALL) and
/// {evicted, expired}.
pub(crate) static SCAN: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
while sweep(500) do end
finish()
local what
if ARGV[6] == 'len' then what = redis.call('HLEN', D)
elseif ARGV[6] == 'keys' then what = redis.call('HKEYS', D)
else what = redis.call('HGETALL', D) end
return {what, evicted, expired}
"#,
    )
});

/// Removes up to ARGV[6] expired entries. Answers {1 if there may be
/// more, evicted, expired}.
pub(crate) static SWEEP: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local more = sweep(tonumber(ARGV[6]))
finish()
return {more and 1 or 0, evicted, expired}
"#,
    )
});

/// Applies bounds (ARGV from 6: max entries, max bytes, ttl ms, max idle
/// ms; 0 = none): starts the books if the cache keeps none, stores the
/// bounds, then expires and evicts down to them at once. All zero: the
/// books go, unless entries still carry a time to live of their own.
/// Answers {1 if the cache keeps books now, evicted, expired}.
pub(crate) static CONFIGURE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local e, b, t, i = ARGV[6], ARGV[7], ARGV[8], ARGV[9]
if e == '0' and b == '0' and t == '0' and i == '0' and redis.call('ZCARD', O) == 0 then
  redis.call('DEL', M, U, B, O)
  return {0, 0, 0}
end
adopt()
redis.call('HSET', M, 'entries', e, 'bytes', b, 'ttl', t, 'idle', i)
bounds = nil
while sweep(500) do end
evict()
finish()
return {1, evicted, expired}
"#,
    )
});
