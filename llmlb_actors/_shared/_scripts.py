"""The Lua scripts behind the Redis quota store: every budget decision runs server-side.

Each script is one atomic step on one provider's keys, so balancers on any
number of machines see one budget. The arithmetic is the in-process
`ProviderBudget`'s (``.._quota._budget``), in microseconds of the server's
clock (``TIME``), so no balancer's clock matters:

================  ===========================================================================
key               what it holds (every key expires on its own)
================  ===========================================================================
``{p}:w``         the request window: a sorted set of reservation ids scored by their send
                  time; an entry counts for ``period`` µs (the caller's), is kept 2.5 s;
                  the key expires a second after that past its newest entry
``{p}:b``         token buckets, per dimension (``tokens``, ``requests``, ``input-tokens``,
                  ``output-tokens``): ``<dim>:l`` level, ``<dim>:t`` when it was computed,
                  ``<dim>:f`` when the provider said it is full again. A missing bucket is
                  full; the key expires when every bucket is full again
``{p}:h``         health and learned limits: ``hold:<reason>`` (retry-after, daily-quota,
                  circuit, disabled) until a time, ``lim:<dim>`` a limit a provider's headers
                  reported; expires an hour after the last news (or at the longest hold)
``{p}:d``         rolling 24-hour budgets in one-minute slots (``r<slot>``, ``t<slot>``,
                  totals ``rn``/``tn``, oldest slot ``lo``); expires a day after its last use
``members``       heartbeats: balancer id scored by its last beat
================  ===========================================================================

``ARGV[1]`` of every script is "now" in µs, empty for the server's clock (tests pass
their own to compare the scripts with a model). Replies are flat arrays; fractional
numbers travel as strings (Redis truncates Lua numbers to integers).

Strictly private.
"""

from __future__ import annotations

__all__ = ["HEALTH", "HEARTBEAT", "MOVE", "RECONCILE", "RESERVE"]

_PRELUDE = r"""
local EPS = 1e-6
local MINUTE = 60000000
local DAY = 86400000000
local SLOT = 60000000
local HOUR_MS = 3600000
local KEEP = 2500000  -- µs: longer than any period (1 s + guard < 1 s + round trip <= 0.25 s)
local DIMS = {'requests', 'tokens', 'input-tokens', 'output-tokens'}

local function clock(arg)
  if arg ~= nil and arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Numbers as Redis stores them: exact (tostring keeps 14 digits: µs timestamps have 16).
local function fmt(x)
  return string.format('%.17g', x)
end

local function num(v)
  if v == nil or v == false or v == '' then return nil end
  return tonumber(v)
end

-- The limits that bind each dimension: configured ones (tpm) and learned ones
-- (lim:<dim> in the health hash); the stricter wins.
local function caps(h, tpm)
  local learned = redis.call('HMGET', h, 'lim:requests', 'lim:tokens', 'lim:input-tokens',
    'lim:output-tokens')
  local out = {}
  for i, dim in ipairs(DIMS) do
    local cap = num(learned[i])
    if dim == 'tokens' and tpm ~= nil and (cap == nil or tpm < cap) then cap = tpm end
    out[dim] = cap
  end
  return out, num(learned[1]), num(learned[2])
end

-- Every bucket's state at `now` (refilled); absent dimensions are skipped. A bucket
-- with no known limit (only a remaining count was reported) has cap == nil: no refill,
-- full again at its reset.
local function load_buckets(b, capmap, now)
  local raw = redis.call('HGETALL', b)
  local fields = {}
  for i = 1, #raw, 2 do fields[raw[i]] = raw[i + 1] end
  local out = {}
  for _, dim in ipairs(DIMS) do
    local cap = capmap[dim]
    local level = num(fields[dim .. ':l'])
    local full = num(fields[dim .. ':f'])
    if level ~= nil then
      local t = num(fields[dim .. ':t']) or now
      if full ~= nil and now >= full then
        if cap == nil then level = nil else level = math.max(level, cap) end
        full = nil
      elseif cap ~= nil and now > t and level < cap then
        level = math.min(cap, level + cap / MINUTE * (now - t))
      end
      if level ~= nil and cap ~= nil and level > cap then level = cap end
    end
    if level ~= nil then
      out[dim] = {cap = cap, level = level, full = full}
    elseif cap ~= nil then
      out[dim] = {cap = cap, level = cap, full = nil}
    end
  end
  return out
end

-- When `amount` fits a bucket (math.huge: never before news; nil: never at all).
local function bucket_earliest(s, amount, now)
  if s.cap ~= nil and amount > s.cap + EPS then return nil end
  local missing = amount - s.level
  if missing <= EPS then return now end
  local at = math.huge
  if s.cap ~= nil and s.cap > 0 then at = now + missing / (s.cap / MINUTE) end
  if s.full ~= nil and s.full < at then at = math.max(now, s.full) end
  return at
end

local function save_buckets(b, states, now)
  redis.call('DEL', b)
  local ttl = 0
  for dim, s in pairs(states) do
    local full_in = nil
    if s.full ~= nil then full_in = s.full - now end
    if s.cap ~= nil and s.level < s.cap - EPS then
      local by_rate = (s.cap - s.level) / (s.cap / MINUTE)
      if full_in == nil or by_rate < full_in then full_in = by_rate end
    elseif s.cap ~= nil then
      full_in = nil  -- full: nothing to keep
    end
    if full_in ~= nil and full_in > 0 then
      redis.call('HSET', b, dim .. ':l', fmt(s.level), dim .. ':t', fmt(now))
      if s.full ~= nil then redis.call('HSET', b, dim .. ':f', fmt(s.full)) end
      if full_in > ttl then ttl = full_in end
    end
  end
  if ttl > 0 then redis.call('PEXPIRE', b, math.ceil(ttl / 1000) + 1000) end
end

local function cost_of(dim, prompt, completion)
  if dim == 'requests' then return 1 end
  if dim == 'tokens' then return prompt + completion end
  if dim == 'input-tokens' then return prompt end
  return completion
end

-- Rolling day: slots leave a day after they end.
local function day_prune(d, now)
  local lo = num(redis.call('HGET', d, 'lo'))
  if lo == nil then return end
  local bound = math.floor((now - DAY) / SLOT) - 1
  if bound - lo > 1500 then redis.call('DEL', d) return end
  local rn, tn = 0, 0
  for idx = lo, bound do
    local r = num(redis.call('HGET', d, 'r' .. idx))
    local t = num(redis.call('HGET', d, 't' .. idx))
    if r ~= nil then rn = rn + r end
    if t ~= nil then tn = tn + t end
    redis.call('HDEL', d, 'r' .. idx, 't' .. idx)
  end
  if bound >= lo then
    redis.call('HSET', d, 'lo', bound + 1)
    if rn ~= 0 then redis.call('HINCRBY', d, 'rn', -rn) end
    if tn ~= 0 then redis.call('HINCRBY', d, 'tn', -tn) end
  end
end

local function day_earliest(d, field, total, limit, amount, now)
  if amount > limit then return nil end
  local used = num(redis.call('HGET', d, total)) or 0
  local excess = used + amount - limit
  if excess <= 0 then return now end
  local lo = num(redis.call('HGET', d, 'lo'))
  local cur = math.floor(now / SLOT)
  if lo ~= nil then
    for idx = lo, cur do
      excess = excess - (num(redis.call('HGET', d, field .. idx)) or 0)
      if excess <= 0 then return math.max(now, (idx + 1) * SLOT + DAY) end
    end
  end
  return nil
end

local function day_take(d, field, total, amount, now)
  local idx = math.floor(now / SLOT)
  redis.call('HINCRBY', d, field .. idx, amount)
  redis.call('HINCRBY', d, total, amount)
  local lo = num(redis.call('HGET', d, 'lo'))
  if lo == nil or idx < lo then redis.call('HSET', d, 'lo', idx) end
  redis.call('PEXPIRE', d, math.ceil((DAY + 2 * SLOT) / 1000))
  return idx
end
"""

RESERVE = (
    _PRELUDE
    + r"""
-- KEYS: window, buckets, health, day
-- ARGV: now, member, cap (requests per window; 0: none), period µs, tpm (0: none),
--       rpd (0), tpd (0), prompt tokens, completion tokens, balancer id, booking horizon µs
-- Reply: granted, fits, wait µs (granted: when to send, 0 for now), reason, next wait µs,
--        remaining requests (-1: unknown), remaining tokens (string, '' unknown),
--        learned requests, learned tokens (-1), day slot (-1), headroom (string),
--        the buckets it took from (comma-separated)
local w, b, h, d = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now = clock(ARGV[1])
local member = ARGV[2]
local cap = tonumber(ARGV[3])
local period = tonumber(ARGV[4])
local tpm = num(ARGV[5]); if tpm == 0 then tpm = nil end
local rpd = tonumber(ARGV[6])
local tpd = tonumber(ARGV[7])
local prompt = tonumber(ARGV[8])
local completion = tonumber(ARGV[9])
local horizon = tonumber(ARGV[11]) or 0

local at, reason, fits = now, '', 1
local function bind(t, why)
  if t == nil then
    if fits == 1 then fits = 0; reason = why end
    return
  end
  if fits == 1 and t > at then at = t; reason = why end
end

-- Holds (Retry-After, an exhausted daily quota, another balancer's open circuit: a
-- balancer's own circuit is its actors' business, so its own holds do not bind it).
local raw = redis.call('HGETALL', h)
local fields = {}
for i = 1, #raw, 2 do fields[raw[i]] = raw[i + 1] end
for f, v in pairs(fields) do
  if string.sub(f, 1, 5) == 'hold:' then
    local why = string.sub(f, 6)
    local untilt = tonumber(v)
    if untilt ~= nil and untilt > now and fields['by:' .. why] ~= ARGV[10] then
      bind(untilt, why)
    end
  end
end

local hold_at = at
local capmap, learned_requests, learned_tokens = caps(h, tpm)
-- The window's cap: configured, tightened by a learned per-minute request limit.
local wcap = nil
if cap > 0 then wcap = cap end
if learned_requests ~= nil then
  local lc = math.max(1, math.ceil(learned_requests / 60 - 1e-9))
  if wcap == nil or lc < wcap then wcap = lc end
end
-- The window is kept even with no request limit: a limit learned later must count the
-- requests already sent.
-- Entries are kept for the longest period any balancer may ask about (each passes its
-- own: the guard grows with its round trips) and counted within the caller's.
redis.call('ZREMRANGEBYSCORE', w, '-inf', fmt(now - KEEP))
local since = '(' .. fmt(now - period)
local count = redis.call('ZCOUNT', w, since, '+inf')
-- When the window admits one more entry: entries only ever go after the last one (which
-- may be a booking in the future), and fewer than wcap may lie within a period before it.
local function window_next()
  local t = now
  local last = redis.call('ZRANGE', w, -1, -1, 'WITHSCORES')
  if last[2] ~= nil and tonumber(last[2]) > t then t = tonumber(last[2]) end
  if count >= wcap then
    local oldest = redis.call('ZRANGEBYSCORE', w, since, '+inf', 'WITHSCORES', 'LIMIT',
      count - wcap, 1)
    t = math.max(t, tonumber(oldest[2]) + period)
  end
  return t
end
local wnext = nil
if wcap ~= nil then wnext = window_next() end

local states = load_buckets(b, capmap, now)
for _, dim in ipairs(DIMS) do
  local s = states[dim]
  local amount = cost_of(dim, prompt, completion)
  if s ~= nil and amount > 0 then
    local why = dim
    if dim == 'tokens' and tpm ~= nil then why = 'tpm' end
    bind(bucket_earliest(s, amount, now), why)
  end
end

if rpd > 0 or tpd > 0 then day_prune(d, now) end
if rpd > 0 then bind(day_earliest(d, 'r', 'rn', rpd, 1, now), 'rpd') end
if tpd > 0 and prompt + completion > 0 then
  bind(day_earliest(d, 't', 'tn', tpd, prompt + completion, now), 'tpd')
end

local headroom = 1.0
local remaining_requests = -1
local remaining_tokens = ''
local function report()
  local req = nil
  if wcap ~= nil then
    req = wcap - count
    headroom = math.min(headroom, math.max(0, req) / wcap)
  end
  local tok = nil
  for dim, s in pairs(states) do
    if dim == 'requests' then
      if req == nil or s.level < req then req = s.level end
    elseif tok == nil or s.level < tok then tok = s.level end
    if s.cap ~= nil and s.cap > 0 then headroom = math.min(headroom, s.level / s.cap) end
  end
  if req ~= nil then remaining_requests = math.max(0, math.floor(req)) end
  if tok ~= nil then remaining_tokens = fmt(math.max(0, math.floor(tok))) end
  headroom = math.max(0, math.min(1, headroom))
end

-- Only the window binds, and its next slot is within the horizon: book that slot (the
-- caller sends then) instead of refusing; bookings go in time order, one per slot.
local book = now
if wnext ~= nil and wnext > now then
  if fits == 1 and at <= now and wnext - now <= horizon then
    book = wnext
  elseif fits == 1 and (wnext > at or (wnext == at and at > hold_at)) then
    -- The model's order: a hold wins a tie with the window, the window one with a bucket.
    at = wnext; reason = 'rpm'
  end
end

local lr, lt = learned_requests or -1, learned_tokens or -1
if fits == 0 or at > now then
  report()
  local wait = -1
  if fits == 1 and at < math.huge then wait = math.ceil(at - now) end
  return {0, fits, wait, reason, 0, remaining_requests, remaining_tokens, lr, lt, -1,
    tostring(headroom), ''}
end

-- Granted: take every budget.
local next_at = now
redis.call('ZADD', w, fmt(book), member)
count = count + 1
redis.call('PEXPIRE', w, math.ceil((book - now + KEEP) / 1000) + 1000)
if wcap ~= nil then next_at = window_next() end
local touched = false
local taken = {}
for _, dim in ipairs(DIMS) do
  local s = states[dim]
  if s ~= nil then
    local amount = cost_of(dim, prompt, completion)
    if amount > 0 then s.level = s.level - amount; touched = true end
    taken[#taken + 1] = dim
  end
end
if touched then save_buckets(b, states, now) end
local slot = -1
if rpd > 0 then slot = day_take(d, 'r', 'rn', 1, now) end
if tpd > 0 then slot = day_take(d, 't', 'tn', prompt + completion, now) end
report()
return {1, 1, math.ceil(book - now), '', math.ceil(next_at - now), remaining_requests,
  remaining_tokens, lr, lt, slot, tostring(headroom), table.concat(taken, ',')}
"""
)

RECONCILE = (
    _PRELUDE
    + r"""
-- Settle one reservation (or, with nothing reserved, just fold in an observation).
-- KEYS: buckets, health, day
-- ARGV: now, tpm (0), reserved prompt, reserved completion, used prompt, used completion,
--       day slot (-1: none), then per dimension (requests, tokens, input, output):
--       limit, remaining, reset seconds ('' when absent); then retry-after seconds,
--       exhausted-for seconds ('' when absent), the buckets the reservation took from
-- Reply: learned requests, learned tokens (-1: none)
local b, h, d = KEYS[1], KEYS[2], KEYS[3]
local now = clock(ARGV[1])
local tpm = num(ARGV[2]); if tpm == 0 then tpm = nil end
local rp, rc = tonumber(ARGV[3]), tonumber(ARGV[4])
local up, uc = tonumber(ARGV[5]), tonumber(ARGV[6])
local slot = tonumber(ARGV[7])

-- Buckets refill at their old rates up to now; then learned limits resize them.
local capmap = caps(h, tpm)
local states = load_buckets(b, capmap, now)
local touched = false
local hints = {}
local changed_health = false
for i, dim in ipairs(DIMS) do
  local base = 7 + (i - 1) * 3
  local limit, remaining, reset = num(ARGV[base + 1]), num(ARGV[base + 2]), num(ARGV[base + 3])
  if limit ~= nil or remaining ~= nil or reset ~= nil then
    hints[dim] = {remaining = remaining, reset = reset}
    if limit ~= nil then
      redis.call('HSET', h, 'lim:' .. dim, fmt(math.max(1, math.floor(limit))))
      changed_health = true
    end
  end
end
local learned_requests, learned_tokens
if changed_health then
  local newcaps
  newcaps, learned_requests, learned_tokens = caps(h, tpm)
  for _, dim in ipairs(DIMS) do
    local cap = newcaps[dim]
    local s = states[dim]
    if cap ~= nil and s == nil then
      states[dim] = {cap = cap, level = cap, full = nil}
    elseif cap ~= nil and s.cap ~= cap then
      s.cap = cap
      if s.level > cap then s.level = cap end
      touched = true
    end
  end
else
  local _
  _, learned_requests, learned_tokens = caps(h, tpm)
end
local took = {}
for dim in string.gmatch(ARGV[22] or '', '[^,]+') do took[dim] = true end
for _, dim in ipairs(DIMS) do
  local s = states[dim]
  if s ~= nil and took[dim] then
    local reserved = cost_of(dim, rp, rc)
    local used = cost_of(dim, up, uc)
    if used ~= reserved and (reserved > 0 or used > 0) then
      s.level = s.level + reserved - used
      if s.cap ~= nil and s.level > s.cap then s.level = s.cap end
      touched = true
    end
  end
end
-- The provider's own count caps ours after the refund (it includes the real usage).
for dim, hint in pairs(hints) do
  if hint.remaining ~= nil then
    local s = states[dim]
    if s == nil then
      s = {cap = nil, level = hint.remaining, full = nil}
      states[dim] = s
    elseif hint.remaining < s.level then
      s.level = hint.remaining
    end
    local reset = hint.reset or 60
    if s.cap == nil or s.level < s.cap then s.full = now + reset * 1000000 end
    touched = true
  end
end
if touched then save_buckets(b, states, now) end

if slot >= 0 then
  local delta = (up + uc) - (rp + rc)
  if delta ~= 0 and redis.call('EXISTS', d) == 1 then
    local cur = num(redis.call('HGET', d, 't' .. slot))
    if cur ~= nil then
      local new = math.max(0, cur + delta)
      redis.call('HSET', d, 't' .. slot, fmt(new))
      redis.call('HINCRBY', d, 'tn', new - cur)
    elseif delta > 0 then
      local idx = math.floor(now / SLOT)
      redis.call('HINCRBY', d, 't' .. idx, delta)
      redis.call('HINCRBY', d, 'tn', delta)
    end
  end
end

local function hold(why, seconds)
  if seconds == nil or seconds <= 0 then return end
  local untilt = now + seconds * 1000000
  local old = num(redis.call('HGET', h, 'hold:' .. why))
  if old == nil or untilt > old then redis.call('HSET', h, 'hold:' .. why, fmt(untilt)) end
  changed_health = true
end
hold('retry-after', num(ARGV[20]))
hold('daily-quota', num(ARGV[21]))
if changed_health then
  local longest = HOUR_MS
  local raw = redis.call('HGETALL', h)
  for i = 1, #raw, 2 do
    if string.sub(raw[i], 1, 5) == 'hold:' then
      local left = math.ceil((tonumber(raw[i + 1]) - now) / 1000)
      if left > longest then longest = left end
    end
  end
  redis.call('PEXPIRE', h, longest)
end
return {learned_requests or -1, learned_tokens or -1}
"""
)

HEALTH = (
    _PRELUDE
    + r"""
-- Publish (seconds > 0) or clear (seconds <= 0) a hold on a provider for every balancer.
-- KEYS: health.  ARGV: now, reason, seconds, balancer id.
-- Reply: the hold's end in µs from now.
local h = KEYS[1]
local now = clock(ARGV[1])
local why = 'hold:' .. ARGV[2]
local by = 'by:' .. ARGV[2]
local seconds = tonumber(ARGV[3])
if seconds <= 0 then redis.call('HDEL', h, why, by) return 0 end
local untilt = now + seconds * 1000000
local old = num(redis.call('HGET', h, why))
if old == nil or untilt > old then
  redis.call('HSET', h, why, fmt(untilt), by, ARGV[4])
else
  untilt = old
end
local ttl = redis.call('PTTL', h)
local need = math.ceil((untilt - now) / 1000) + 1000
if ttl < need then redis.call('PEXPIRE', h, math.max(need, HOUR_MS)) end
return math.ceil(untilt - now)
"""
)

HEARTBEAT = (
    _PRELUDE
    + r"""
-- KEYS: members.  ARGV: now, balancer id, seconds a member stays live without a beat.
-- Reply: live balancers (this one included).
local m = KEYS[1]
local now = clock(ARGV[1])
local live = tonumber(ARGV[3]) * 1000000
redis.call('ZADD', m, fmt(now), ARGV[2])
redis.call('ZREMRANGEBYSCORE', m, '-inf', fmt(now - live))
redis.call('PEXPIRE', m, math.ceil(live / 1000) + 1000)
return redis.call('ZCARD', m)
"""
)

MOVE = (
    _PRELUDE
    + r"""
-- A reserved request was sent later than admitted: its window entry counts from now
-- (only if it is still there). The second form replays entries after an outage.
-- KEYS: window.  ARGV: now, period µs, then pairs of (member, age µs: 0 for now).
local w = KEYS[1]
local now = clock(ARGV[1])
local period = tonumber(ARGV[2])
for i = 3, #ARGV, 2 do
  local age = tonumber(ARGV[i + 1])
  if age == 0 then
    redis.call('ZADD', w, 'XX', fmt(now), ARGV[i])
  elseif age < period then
    redis.call('ZADD', w, 'NX', fmt(now - age), ARGV[i])
  end
end
if redis.call('EXISTS', w) == 1 then
  redis.call('PEXPIRE', w, math.ceil(period / 1000) + 1000)
end
return 1
"""
)
