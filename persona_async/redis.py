"""Rate limits shared by every process that uses one API key, kept in Redis.

A provider's limit belongs to the key, not to the process: eight web workers or four machines,
each with its own ``PersonaClient``, would each use the whole budget. Give their providers one
``RedisLimiter`` URL and they share it::

    from persona_async.redis import RedisLimiter

    limiter = RedisLimiter("redis://localhost:6379/0")
    async with PersonaClient([KieProvider(limiter=limiter)]) as client:
        ...

What is shared, per provider kind and API key (the Redis keys hold a hash of the API key, never
the key):

* **The window.** The same guarantee as the local limiter, across all processes: never more than
  ``rate_limit`` starts in any ``rate_period`` (widened by ``margin`` for network jitter). One Lua
  script keeps a sliding log of start times in a sorted set and admits or answers how long to
  wait, atomically and on **Redis's clock** (``TIME``), so clients' clocks may drift freely. A
  waiting process sleeps exactly that long; it does not poll.
* **Cooldowns and pauses.** A 429 or a 455 seen by one process is written to Redis with the time
  it ends (a key with that TTL); every process waits it out before its next start.
* **What was learned.** The limit learned from 429s (``AdaptiveLimit``'s rules, run inside Redis
  on the shared log: one decrease per congestion event, down to what the provider delivered,
  additive probing after clean windows) is one value for every process, kept for an hour.
* **The pace.** A 429 to a start granted together with others (a provider that takes no burst,
  such as nginx's ``limit_req``) makes the shared log pace every process: the ``burst``-th most
  recent start must be a paced interval old, as ``SlidingWindowLimiter`` does locally; a paced
  start refused alone at the configured rate widens every process's pace (uneven arrivals).

* **Identical requests.** The same ``create_persona`` request (same lane, same body) is sent
  by one process at a time, under a renewed lease, and the persona it made is kept for the
  client's ``remember_for``: see ``persona_async._redis_sharing``.

What is not shared: ``max_concurrency`` caps each process on its own. Every process sharing a key
should configure the same ``rate_limit`` and ``rate_period``.

When Redis is down or unreachable a request fails, unsent, with ``RedisUnavailableError`` naming
the URL with its password blanked: the lane fails closed rather than silently give up its
guarantee. Redis is tried again ``recheck`` seconds later; in between, requests fail at once.
``fallback="local"`` instead keeps the lane going on this process's own limiter during the
outage, with one ``logging`` warning per outage (``logging``, not ``warnings``: a library should
not turn an outage into an exception under ``-W error``), and goes back to Redis when it answers.

Needs ``pip install 'persona-async[redis]'`` (redis-py's asyncio client) and Redis 5 or newer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import secrets
import time
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

try:
    from redis.asyncio import Redis
    from redis.asyncio.connection import parse_url
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.commands.core import AsyncScript
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "persona_async.redis needs redis-py: pip install 'persona-async[redis]'"
    ) from exc

from ._exceptions import PersonaError, RedisUnavailableError
from ._providers import Provider
from ._ratelimit import (
    DEFAULT_WINDOW_MARGIN,
    MARGIN_HALF_LIFE,
    MAX_PACE_MARGIN,
    MAX_PATIENCE,
    PACE_MARGIN,
    PROBE_FRACTION,
    Hold,
    LaneLimiter,
    SlidingWindowLimiter,
    Start,
)
from ._redis_sharing import DEFAULT_LEASE, RedisFlights

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_PREFIX",
    "DEFAULT_RECHECK",
    "DEFAULT_TIMEOUT",
    "RedisLimiter",
    "RedisUnavailableError",
]

logger = logging.getLogger("persona_async")

#: Namespace of every key the limiter writes.
DEFAULT_PREFIX = "persona_async"
#: Seconds to connect to Redis, and to wait for one reply.
DEFAULT_TIMEOUT = 2.0
#: Seconds after a failure before Redis is tried again; until then requests fail at once (or,
#: with ``fallback="local"``, use the local limiter).
DEFAULT_RECHECK = 1.0
#: The script's hold states, as Redis returns them (bytes; str if the URL decodes replies).
_HOLDS: dict[object, Hold] = {
    b"cooling": "cooling",
    b"paused": "paused",
    "cooling": "cooling",
    "paused": "paused",
}

# KEYS: the sorted set of starts (member -> Redis time at admission), the hold, the learned
# limit (a hash), the sorted set of starts answered 429.
# ARGV: mode ("acquire", "throttled", or a hold state "cooling"/"paused"); configured limit
# (0: none); window and period in microseconds; the start's unique member (acquire, throttled)
# or the hold's length in microseconds; MAX_PATIENCE; PROBE_FRACTION; PACE_MARGIN;
# MAX_PACE_MARGIN; MARGIN_HALF_LIFE.
# Returns {1 if admitted, microseconds to wait otherwise, limit (0: none), sustained (0: none),
# microseconds since the first decrease, the hold's state if an acquire waits for one else ''}.
# The rules are AdaptiveLimit's (persona_async._ratelimit), step for step, so every process
# sharing a key runs at one learned limit. Times are integer microseconds of Redis's clock,
# formatted with %d before reaching redis.call (Lua's own conversion keeps only 14 digits).
_SCRIPT = """
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

_QUERY_PASSWORD = re.compile(r"(?i)((?:^|&)password=)([^&]*)")


def _redact(url: str) -> tuple[str, tuple[str, ...]]:
    """``url`` with its password (userinfo or ``?password=``) blanked, and the secret strings."""
    parts = urlsplit(url)
    found: list[str] = []
    netloc = parts.netloc
    if parts.password:
        userinfo, _, host = netloc.rpartition("@")
        raw = userinfo.partition(":")[2]
        found += [raw, unquote(raw)]
        netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    query = parts.query
    for match in _QUERY_PASSWORD.finditer(query):
        found += [match.group(2), unquote(match.group(2))]
    query = _QUERY_PASSWORD.sub(r"\1***", query)
    redacted = parts._replace(netloc=netloc, query=query).geturl()
    if not netloc and url.startswith(f"{parts.scheme}://"):  # unix:///path: geturl drops the //
        redacted = redacted.replace(":", "://", 1)
    return redacted, tuple(s for s in set(found) if s)


class RedisLimiter:
    """A rate limit shared through Redis by every lane with the same provider kind and API key.

    Example::

        limiter = RedisLimiter("redis://:password@redis.internal:6379/0")
        provider = CrunProvider(rate_limit=20, rate_period=10.0, limiter=limiter)

    One instance may serve any number of providers and clients; each lane opens its own
    connections, in its own event loop, and the client closes them. See the module docstring
    for what is shared and what happens when Redis is down.

    :param url: ``redis://``, ``rediss://`` (TLS) or ``unix://``; a password in it is never
        logged, printed or put in an error.
    :param prefix: Namespace of the keys written.
    :param fallback: ``None`` fails requests while Redis is unavailable; ``"local"`` uses this
        process's own limiter instead, with a warning.
    :param margin: Widens the window by this fraction of ``rate_period``, for network jitter.
    :param timeout: Seconds to connect, and to wait for a reply.
    :param recheck: Seconds after a failure before Redis is tried again.
    :param lease: Seconds a process owns an identical request's flight without renewing it
        (renewed every third of it while in flight): how long other processes wait for one
        that died mid-flight before one of them sends.
    """

    __slots__ = (
        "_secrets",
        "_url",
        "fallback",
        "lease",
        "margin",
        "prefix",
        "recheck",
        "timeout",
        "url",
    )

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        fallback: Literal["local"] | None = None,
        margin: float = DEFAULT_WINDOW_MARGIN,
        timeout: float = DEFAULT_TIMEOUT,
        recheck: float = DEFAULT_RECHECK,
        lease: float = DEFAULT_LEASE,
    ) -> None:
        if not isinstance(url, str):
            raise TypeError(f"RedisLimiter: url must be a string, got {type(url).__name__}")
        redacted, found = _redact(url)
        scheme = urlsplit(url).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"RedisLimiter: the URL must start with redis://, rediss:// or unix://, "
                f"got {scheme + '://' if scheme else 'no scheme'}"
            )
        try:
            parse_url(url)
        except ValueError:
            raise ValueError(f"RedisLimiter: not a valid Redis URL: {redacted}") from None
        if fallback not in (None, "local"):
            raise ValueError(f'RedisLimiter: fallback must be None or "local", got {fallback!r}')
        if margin < 0 or not timeout > 0 or recheck < 0:
            raise ValueError("RedisLimiter: margin and recheck must be >= 0 and timeout > 0")
        if not lease > 0:
            raise ValueError(f"RedisLimiter: lease must be > 0 seconds, got {lease!r}")
        self._url = url  # holds the password: only ever given to redis-py
        self._secrets = found
        #: The URL with any password replaced by ``***``: safe to log.
        self.url = redacted
        self.prefix = prefix
        self.fallback = fallback
        self.margin = margin
        self.timeout = timeout
        self.recheck = recheck
        self.lease = lease

    def __repr__(self) -> str:
        return f"RedisLimiter({self.url!r}, prefix={self.prefix!r}, fallback={self.fallback!r})"

    def __reduce__(self) -> Any:
        raise TypeError("RedisLimiter may hold a Redis password and is not picklable")

    def for_lane(self, provider: Provider) -> LaneLimiter:
        """The limiter of one lane (called by the client, once per lane)."""
        return _RedisLane(self, provider)

    def flights_for(self, provider: Provider, limiter: LaneLimiter) -> RedisFlights:
        """Where one lane's identical requests meet those of other processes (called by the
        client, once per lane, with the lane's ``for_lane`` limiter, whose connection and
        outage state they share): see ``persona_async._redis_sharing``."""
        assert isinstance(limiter, _RedisLane)
        return RedisFlights(self, provider, limiter.run)

    def _connect(self) -> Redis:
        return Redis.from_url(
            self._url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            # One immediate retry recovers a pooled connection that a Redis restart cut;
            # redis-py's default (ten, with backoff) would hold a request for seconds.
            retry=Retry(NoBackoff(), 1),
        )

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _describe(self, exc: BaseException) -> str:
        """Why Redis could not be used: the server (redacted) and redis-py's reason (scrubbed)."""
        reason = self._scrub(f"{type(exc).__name__}: {exc}")
        return f"the shared rate limiter's Redis at {self.url} is unavailable ({reason})"


class _RedisLane:
    """One lane's view of a ``RedisLimiter``: the ``LaneLimiter`` the lane calls."""

    __slots__ = (
        "_client",
        "_down",
        "_held",
        "_keys",
        "_limit",
        "_local",
        "_lock",
        "_owner",
        "_period_us",
        "_provider",
        "_retry_at",
        "_script",
        "_scripts",
        "_seq",
        "_settled_at",
        "_span_us",
        "_sustained",
        "_token",
        "_unused",
    )

    def __init__(self, owner: RedisLimiter, provider: Provider) -> None:
        self._owner = owner
        self._provider = provider
        # A hash tag ({...}) keeps the keys in one slot of a Redis Cluster.
        base = f"{owner.prefix}:{{{provider.kind}:{provider.key_fingerprint}}}"
        self._keys = (f"{base}:window", f"{base}:hold", f"{base}:limit", f"{base}:rejected")
        self._limit = provider.rate_limit  # the shared limit, as of the last reply
        self._sustained: int | None = None  # what the provider delivered at the last event
        self._settled_at = math.inf  # monotonic time when that is two windows old
        self._span_us = round(provider.rate_period * (1 + owner.margin) * 1e6)
        self._period_us = round(provider.rate_period * 1e6)
        self._token = secrets.token_hex(8)  # makes this lane's start entries unique
        self._seq = 0
        self._lock = asyncio.Lock()  # one waiter per process asks Redis; the rest queue FIFO
        self._client: Redis | None = None  # opened on first use, in the lane's event loop
        self._script: AsyncScript | None = None
        self._scripts: dict[str, AsyncScript] = {}  # other scripts run on this connection
        self._local: SlidingWindowLimiter | None = None  # fallback="local" during an outage
        self._down: RedisUnavailableError | None = None  # the current outage, if any
        self._retry_at = 0.0  # monotonic time when Redis may be tried again
        self._held: Hold | None = None  # the hold the last acquire was told to wait for
        self._unused: list[str] = []  # starts admitted but never sent, to take back from Redis

    @property
    def limit(self) -> int | None:
        return self._limit

    @property
    def period(self) -> float:
        return self._provider.rate_period

    @property
    def learned_period(self) -> float:
        return self._provider.rate_period

    @property
    def holding(self) -> Hold | None:
        # Fresh while it matters: a worker told to wait asks again when the hold ends.
        return self._held

    def take(self) -> Start | None:
        return None  # only Redis knows: acquire asks it

    @property
    def learned(self) -> int | None:
        sustained = self._sustained
        if sustained is None or sustained == self._provider.rate_limit:
            return None
        return sustained if time.monotonic() >= self._settled_at else None

    async def acquire(self) -> Start:
        async with self._lock:
            while True:
                if self._down is not None and time.monotonic() < self._retry_at:
                    return await self._without_redis(self._down.for_request(None, None))
                self._seq += 1
                member = f"{self._token}:{self._seq}"
                try:
                    admitted, wait_us = await self._call("acquire", member)
                except RedisUnavailableError as err:
                    return await self._without_redis(err)
                if admitted:
                    return Start(time.monotonic(), member)
                await asyncio.sleep(wait_us / 1e6)

    def accepted(self, start: Start) -> None:
        if start.member is None and self._local is not None:
            self._local.accepted(start)

    def unused(self, start: Start) -> None:
        if start.member is None:
            if self._local is not None:
                self._local.unused(start)
        else:
            self._unused.append(start.member)  # taken back from the shared log by the next call

    def sent(self, start: Start) -> None:
        # The shared log is stamped on Redis's clock at admission; moving an entry would cost
        # a round trip per request, so the window margin covers the time to send.
        if start.member is None and self._local is not None:
            self._local.sent(start)

    async def _without_redis(self, err: PersonaError) -> Start:
        """Redis is out: fail closed, or (``fallback="local"``) take a start locally."""
        if self._owner.fallback is None:
            raise err
        assert self._local is not None
        return await self._local.acquire()

    async def hold(self, state: Hold, seconds: float) -> None:
        if seconds <= 0 or (self._down is not None and time.monotonic() < self._retry_at):
            return
        # Redis down: the lane still cools itself; only the sharing is lost, and the next
        # acquire reports the outage.
        with contextlib.suppress(RedisUnavailableError):
            await self._call(state, str(round(seconds * 1e6)))

    async def throttled(self, start: Start) -> float:
        if start.member is None:  # admitted locally during an outage
            assert self._local is not None
            return await self._local.throttled(start)
        try:
            _, wait_us = await self._call("throttled", start.member)
        except RedisUnavailableError:
            return 0.0  # the next acquire reports the outage; the lane still cools on a hold
        return wait_us / 1e6

    async def aclose(self) -> None:
        client, self._client, self._script = self._client, None, None
        self._scripts.clear()
        if client is not None:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()

    async def run(self, script: str, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """Run another Lua ``script`` on this lane's connection (the flights of identical
        requests, ``_redis_sharing``), with the limiter's outage handling: while Redis is known
        to be down (until ``recheck``) it fails at once; a failure is logged once per outage.
        Raises ``RedisUnavailableError``."""
        if self._down is not None and time.monotonic() < self._retry_at:
            raise self._down.for_request(None, None)
        if self._script is None:
            self._client = self._owner._connect()
            self._script = self._client.register_script(_SCRIPT)
        registered = self._scripts.get(script)
        if registered is None:
            assert self._client is not None
            registered = self._scripts[script] = self._client.register_script(script)
        try:
            reply = await registered(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise self._outage(exc) from None
        self._answered()
        return reply

    async def _call(self, mode: str, last: str) -> tuple[bool, int]:
        """Run the script; (admitted, microseconds to wait). Raises RedisUnavailableError."""
        script = self._script
        if script is None:
            self._client = self._owner._connect()
            script = self._script = self._client.register_script(_SCRIPT)
        args = (
            mode,
            self._provider.rate_limit or 0,
            self._span_us,
            self._period_us,
            last,
            MAX_PATIENCE,
            PROBE_FRACTION,
            PACE_MARGIN,
            MAX_PACE_MARGIN,
            MARGIN_HALF_LIFE,
        )
        try:
            if self._unused:  # rare (a caller left while its start was granted): one ZREM
                unused, self._unused = self._unused, []
                assert self._client is not None
                await self._client.zrem(self._keys[0], *unused)
            reply = await script(keys=self._keys, args=args)
            admitted, wait_us, limit, sustained, since_us, held = reply
        except (RedisError, OSError) as exc:
            # `from None`: the cause's text is already in the message, scrubbed.
            self._held = None
            raise self._outage(exc) from None
        self._held = _HOLDS.get(held)
        self._limit = int(limit) or None
        self._sustained = int(sustained) or None
        period_us = 2 * self._period_us
        self._settled_at = time.monotonic() + max(0, period_us - int(since_us)) / 1e6
        self._answered()
        return bool(admitted), int(wait_us)

    def _answered(self) -> None:
        """Redis answered: an outage, if any, is over."""
        if self._down is not None:
            self._down = None
            logger.info(
                "lane %s: Redis at %s answers again; the rate limit is shared again",
                self._provider.name,
                self._owner.url,
            )

    def _outage(self, exc: BaseException) -> RedisUnavailableError:
        why = self._owner._describe(exc)
        err = RedisUnavailableError(
            f"{why}; the request was not sent",
            url=self._owner.url,
            provider=self._provider.name,
            attempts=0,
        )
        if self._down is None:
            then = (
                "falling back to this process's own limiter until it answers"
                if self._owner.fallback == "local"
                else "requests fail, unsent, until it answers"
            )
            logger.warning("lane %s: %s; %s", self._provider.name, why, then)
            if self._owner.fallback == "local" and self._local is None:
                # Kept across outages: its window remembers the starts of the last one. It
                # starts from the limit learned so far.
                self._local = SlidingWindowLimiter(
                    self._limit, self._provider.rate_period, margin=self._owner.margin
                )
        self._down = err
        self._retry_at = time.monotonic() + self._owner.recheck
        return err

    def note_earlier_sends(self, ages: Sequence[float]) -> None:
        """Nothing to add: the shared log on Redis already holds every start a process made
        through it, the dead one's included, stamped on Redis's own clock. Adding them again
        would count them twice. (A run that switches to Redis right after a crash of a run
        without it starts from Redis's window: the config changed, so did the budget.)"""
