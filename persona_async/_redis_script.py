"""The Lua script that keeps a ``RedisLimiter`` lane's shared window, holds and learned limit.

One script, run atomically on Redis's clock, so every process sharing a key admits starts,
records holds and learns the limit the same way; ``persona_async.redis`` describes what is
shared and ``persona_async._redis_lane`` runs it.
"""

from __future__ import annotations

__all__ = ["SCRIPT"]

# KEYS: the sorted set of starts (member -> Redis time at admission), the hold, the learned
# limit (a hash), the sorted set of starts answered 429.
# ARGV: mode ("acquire", "throttled", or a hold state "cooling"/"paused"); configured limit
# (0: none); window and period in microseconds; the start's unique member (acquire, throttled)
# or the hold's length in microseconds; MAX_PATIENCE; PROBE_FRACTION; PACE_MARGIN;
# MAX_PACE_MARGIN; MARGIN_HALF_LIFE.
# Returns {1 if admitted, microseconds to wait otherwise, limit (0: none), sustained (0: none),
# microseconds since the first decrease, the hold's state if an acquire waits for one else ''}.
# The rules are AdaptiveLimit's (persona_async._learning), step for step, so every process
# sharing a key runs at one learned limit. Times are integer microseconds of Redis's clock,
# formatted with %d before reaching redis.call (Lua's own conversion keeps only 14 digits).
SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function int(n) return string.format('%d', n) end
local mode, configured = ARGV[1], tonumber(ARGV[2])
local span, period = tonumber(ARGV[3]), tonumber(ARGV[4])
local max_patience, fraction = tonumber(ARGV[6]), tonumber(ARGV[7])
local st = redis.call('HMGET', KEYS[3], 'cur', 'changed', 'decreased', 'ceiling', 'patience',
                      'sat', 'sustained', 'grown', 'evidence', 'discovered', 'stall', 'proven',
                      'burst', 'margin', 'jittered')
local cur = tonumber(st[1]) or configured
if configured > 0 and (cur == 0 or cur > configured) then cur = configured end
local changed, decreased = tonumber(st[2]) or 0, tonumber(st[3]) or 0
local ceiling, patience = tonumber(st[4]) or 0, tonumber(st[5]) or 1
local sat, sustained, grown = st[6] == '1', tonumber(st[7]) or 0, tonumber(st[8]) or 0
local evidence, discovered = tonumber(st[9]) or 0, tonumber(st[10]) or 0
local stall, proven = tonumber(st[11]) or 0, tonumber(st[12]) or 0
local burst, pace = tonumber(st[13]) or 0, tonumber(ARGV[8])
local max_margin, half_life = tonumber(ARGV[9]), tonumber(ARGV[10])
local margin, jittered = tonumber(st[14]) or pace, tonumber(st[15]) or 0
local dirty = false
local function save()
  redis.call('HSET', KEYS[3], 'cur', cur, 'changed', int(changed), 'decreased', int(decreased),
             'ceiling', ceiling, 'patience', patience, 'sat', sat and 1 or 0,
             'sustained', sustained, 'grown', int(grown), 'evidence', evidence,
             'discovered', int(discovered), 'proven', proven, 'burst', burst,
             'margin', margin, 'jittered', int(jittered))
  redis.call('PEXPIRE', KEYS[3], 3600000)
end
local function reply(admitted, wait, held)
  if dirty then save() end
  local learned = (sustained > 0 and proven > sustained) and proven or sustained
  return {admitted, wait, cur, learned, now - discovered, held or ''}
end
local function after(n, length)  -- until the n-th most recent start is `length` old
  local nth = redis.call('ZREVRANGE', KEYS[1], n - 1, n - 1, 'WITHSCORES')
  if nth[2] and tonumber(nth[2]) + length > now then return tonumber(nth[2]) + length - now end
  return 0
end
local function most_accepted()  -- in any `period` of the last two windows, 429s left out
  local lo = int(now - 2 * span)
  local refused = {}
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], lo, '+inf')) do refused[m] = true end
  local starts, times = redis.call('ZRANGEBYSCORE', KEYS[1], lo, '+inf', 'WITHSCORES'), {}
  for i = 1, #starts, 2 do
    if not refused[starts[i]] then times[#times + 1] = tonumber(starts[i + 1]) end
  end
  local most, first = 0, 1
  for last = 1, #times do
    while times[last] - times[first] >= period do first = first + 1 end
    most = math.max(most, last - first + 1)
  end
  return most
end
local function pace_margin()  -- widened by jitter, halving back every `half_life` periods
  if margin <= pace then return pace end
  local halvings = math.min(60, math.floor((now - jittered) / (half_life * period)))
  return math.max(pace, margin / 2 ^ halvings)
end
local function delay()
  if cur == 0 then return 0 end
  if burst == 0 or burst >= cur then return after(cur, span) end
  -- Paced: the pace keeps the learned limit, the window only the configured ceiling.
  local wait = configured > 0 and after(configured, span) or 0
  return math.max(wait, after(burst, math.floor(burst * span / cur * (1 + pace_margin()))))
end
if mode == 'throttled' then
  local s = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[5])) or now
  redis.call('ZADD', KEYS[4], int(s), ARGV[5])
  redis.call('PEXPIRE', KEYS[4], math.ceil(2 * span / 1000) + 1)
  if cur > 0 and burst ~= 1 and s >= decreased then
    -- Sent together with another start: a burst the provider would not take. Pace; keep the rate.
    local near = math.floor(span / cur / 2)
    if redis.call('ZCOUNT', KEYS[1], int(s - near), int(s + near)) > 1 then
      burst, decreased, evidence, dirty = 1, now, 0, true
      return reply(0, delay())
    end
  end
  if burst == 1 and configured > 0 and cur == configured and s >= decreased
      and redis.call('ZCOUNT', KEYS[4], int(math.max(s - span, decreased)), '(' .. int(s)) == 0
      and pace_margin() < max_margin then
    -- Paced at the configured rate, and nothing else refused since the last reaction: the
    -- request arrived early (uneven send delays), not too fast. Space wider; keep the rate.
    margin, jittered, decreased, evidence, dirty = math.min(2 * pace_margin(), max_margin), now,
      now, 0, true
    return reply(0, delay())
  end
  if s < decreased then
    if evidence > 0 and cur > evidence then
      cur = math.max(evidence, math.floor((cur + evidence) / 2))
      sustained, dirty = cur, true
    end
  else
    local lo, hi = int(s - span), '(' .. int(s)
    local delivered = redis.call('ZCOUNT', KEYS[1], lo, hi) - redis.call('ZCOUNT', KEYS[4], lo, hi)
    if delivered <= 0 then
      decreased = now
      redis.call('HSET', KEYS[3], 'decreased', int(decreased), 'evidence', 0)
      return reply(0, math.max(0, s + span - now))
    end
    if now - grown < 2 * period then patience = math.min(patience * 2, max_patience)
    else proven = 0 end
    if decreased > grown and now - decreased < 2 * period and ceiling > 0 and cur > 0 then
      ceiling = math.max(ceiling, cur)
    else
      ceiling = cur
    end
    local lowered = math.max(1, delivered)
    evidence = lowered
    if cur > 0 then
      lowered = math.max(1, math.min(math.max(lowered, math.floor(cur / 2)), cur - 1))
    end
    cur, sustained, decreased, changed, sat, dirty = lowered, lowered, now, now, false, true
    margin = pace  -- the rate was too high, not the arrivals uneven
    if discovered == 0 then discovered = now end
  end
  return reply(0, delay())
end
local hold = redis.call('GET', KEYS[2])
local hold_until = hold and tonumber(string.match(hold, ' (%d+)$')) or 0
if mode ~= 'acquire' then
  local length = tonumber(ARGV[5])
  if mode == 'cooling' then  -- a Retry-After: what a failed probe will cost
    redis.call('HSET', KEYS[3], 'stall', int(length))
    redis.call('PEXPIRE', KEYS[3], 3600000)
  end
  if now + length > hold_until then
    redis.call('SET', KEYS[2], mode .. ' ' .. int(now + length),
               'PX', math.max(1, math.ceil(length / 1000)))
  end
  return reply(0, 0)
end
if hold_until > now then return reply(0, hold_until - now, string.match(hold, '^(%a+)')) end
if cur > 0 and sat and cur == configured and proven ~= cur and now - changed >= period then
  proven, dirty = cur, true
end
if cur > 0 and sat and cur ~= configured then
  local at_ceiling = ceiling > 0 and cur + 1 >= ceiling
  if now - changed >= (at_ceiling and patience * math.max(period, stall) or period) then
    local held = most_accepted()  -- a level never sent in full proves nothing
    if held >= cur - 1 then  -- (one short: a paced start on the window's edge)
      if ceiling > 0 and cur >= ceiling then ceiling, patience = 0, 1 end
      proven = math.min(cur, held)
      cur = cur + math.max(1, math.floor(cur * fraction + 0.5))
      if configured > 0 and cur > configured then cur = configured end
      changed, grown, sat, dirty = now, now, false, true
    end
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(now - 2 * span))
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', int(now - 2 * span))
local wait = delay()
if wait > 0 then
  if not sat then sat, dirty = true, true end
  return reply(0, wait)
end
redis.call('ZADD', KEYS[1], int(now), ARGV[5])
redis.call('PEXPIRE', KEYS[1], math.ceil(2 * span / 1000) + 1)
return reply(1, 0)
"""
