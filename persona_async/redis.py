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
* **The effective limit.** A 429 halves it for everyone, and it grows back by a tenth of the limit
  per quiet window, as in the local limiter.

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
    _DECREASE_FACTOR,
    _INCREASE_FRACTION,
    DEFAULT_WINDOW_MARGIN,
    LaneLimiter,
    SlidingWindowLimiter,
)

__all__ = [
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

# KEYS: the sorted set of start times, the hold, the effective limit (a hash).
# ARGV: "acquire" or a hold state; limit (0: none); window and period in microseconds; 1 if the
# process saw a 429 since its last call; decrease factor; increase step; then the start's unique
# member (acquire) or the hold's length in microseconds.
# Returns {1 if admitted, microseconds to wait otherwise, effective limit}.
# Times are integer microseconds of Redis's clock. They are formatted with %d before reaching
# redis.call, because Lua's default number-to-string conversion keeps only 14 digits.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function int(n) return string.format('%d', n) end
local limit, span, period = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local eff = limit
if limit > 0 then
  local state = redis.call('HMGET', KEYS[3], 'eff', 'changed')
  eff = math.min(limit, tonumber(state[1]) or limit)
  local changed = tonumber(state[2]) or 0
  local before = eff
  if ARGV[5] == '1' then
    if now - changed >= period or eff == limit then
      eff = math.max(1, math.floor(eff * tonumber(ARGV[6])))
    end
  elseif eff < limit and now - changed >= period then
    eff = math.min(limit, eff + tonumber(ARGV[7]))
  end
  if eff ~= before then
    redis.call('HSET', KEYS[3], 'eff', eff, 'changed', int(now))
    -- from 1 back to the limit takes at most ten quiet windows: forget it after eleven
    redis.call('PEXPIRE', KEYS[3], math.ceil(period * 11 / 1000))
  end
end
local hold = redis.call('GET', KEYS[2])
local hold_until = hold and tonumber(string.match(hold, ' (%d+)$')) or 0
if ARGV[1] ~= 'acquire' then
  local length = tonumber(ARGV[8])
  if now + length > hold_until then
    redis.call('SET', KEYS[2], ARGV[1] .. ' ' .. int(now + length),
               'PX', math.max(1, math.ceil(length / 1000)))
  end
  return {0, 0, eff}
end
if hold_until > now then
  return {0, hold_until - now, eff}
end
if limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', int(now - span))
  local count = redis.call('ZCARD', KEYS[1])
  if count >= eff then
    local oldest = redis.call('ZRANGE', KEYS[1], count - eff, count - eff, 'WITHSCORES')
    return {0, tonumber(oldest[2]) + span - now, eff}
  end
  redis.call('ZADD', KEYS[1], int(now), ARGV[8])
  redis.call('PEXPIRE', KEYS[1], math.ceil(span / 1000) + 1)
end
return {1, 0, eff}
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
    """

    __slots__ = ("_secrets", "_url", "fallback", "margin", "prefix", "recheck", "timeout", "url")

    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        fallback: Literal["local"] | None = None,
        margin: float = DEFAULT_WINDOW_MARGIN,
        timeout: float = DEFAULT_TIMEOUT,
        recheck: float = DEFAULT_RECHECK,
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
        self._url = url  # holds the password: only ever given to redis-py
        self._secrets = found
        #: The URL with any password replaced by ``***``: safe to log.
        self.url = redacted
        self.prefix = prefix
        self.fallback = fallback
        self.margin = margin
        self.timeout = timeout
        self.recheck = recheck

    def __repr__(self) -> str:
        return f"RedisLimiter({self.url!r}, prefix={self.prefix!r}, fallback={self.fallback!r})"

    def __reduce__(self) -> Any:
        raise TypeError("RedisLimiter may hold a Redis password and is not picklable")

    def for_lane(self, provider: Provider) -> LaneLimiter:
        """The limiter of one lane (called by the client, once per lane)."""
        return _RedisLane(self, provider)

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
        "_eff",
        "_keys",
        "_local",
        "_lock",
        "_owner",
        "_period_us",
        "_provider",
        "_retry_at",
        "_script",
        "_seq",
        "_span_us",
        "_step",
        "_throttle",
        "_token",
    )

    def __init__(self, owner: RedisLimiter, provider: Provider) -> None:
        self._owner = owner
        self._provider = provider
        # A hash tag ({...}) keeps the three keys in one slot of a Redis Cluster.
        base = f"{owner.prefix}:{{{provider.kind}:{provider.key_fingerprint}}}"
        self._keys = (f"{base}:window", f"{base}:hold", f"{base}:limit")
        limit = provider.rate_limit or 0  # 0: no window, only the shared holds
        self._eff = limit  # the shared effective limit, as of the last reply
        self._step = max(1, round(limit * _INCREASE_FRACTION))
        self._span_us = round(provider.rate_period * (1 + owner.margin) * 1e6)
        self._period_us = round(provider.rate_period * 1e6)
        self._throttle = False  # a 429 not yet reported to Redis
        self._token = secrets.token_hex(8)  # makes this lane's start entries unique
        self._seq = 0
        self._lock = asyncio.Lock()  # one waiter per process asks Redis; the rest queue FIFO
        self._client: Redis | None = None  # opened on first use, in the lane's event loop
        self._script: AsyncScript | None = None
        self._local: SlidingWindowLimiter | None = None  # fallback="local" during an outage
        self._down: RedisUnavailableError | None = None  # the current outage, if any
        self._retry_at = 0.0  # monotonic time when Redis may be tried again

    @property
    def effective_rate(self) -> float:
        limit = self._provider.rate_limit
        if not limit:
            return float("inf")
        return self._eff / self._provider.rate_period

    async def acquire(self) -> float | None:
        async with self._lock:
            while True:
                if self._down is not None and time.monotonic() < self._retry_at:
                    return await self._without_redis(self._down.for_request(None, None))
                self._seq += 1
                try:
                    admitted, wait_us = await self._call("acquire", f"{self._token}:{self._seq}")
                except RedisUnavailableError as err:
                    return await self._without_redis(err)
                if admitted:
                    return None
                await asyncio.sleep(wait_us / 1e6)

    def sent(self, stamp: float | None) -> None:
        # The shared log is stamped on Redis's clock at admission; moving an entry would cost
        # a round trip per request, so the window margin covers the time to send.
        if stamp is not None and self._local is not None:
            self._local.sent(stamp)

    async def _without_redis(self, err: PersonaError) -> float | None:
        """Redis is out: fail closed, or (``fallback="local"``) take a start locally."""
        if self._owner.fallback is None:
            raise err
        if self._local is not None:
            return await self._local.acquire()
        return None

    async def hold(self, state: Literal["cooling", "paused"], seconds: float) -> None:
        if seconds <= 0 or (self._down is not None and time.monotonic() < self._retry_at):
            return
        # Redis down: the lane still cools itself; only the sharing is lost, and the next
        # acquire reports the outage.
        with contextlib.suppress(RedisUnavailableError):
            await self._call(state, str(round(seconds * 1e6)))

    def throttled(self) -> None:
        # Sent with the next call to Redis (hold() comes right after); shown at once.
        self._throttle = True
        self._eff = max(1, int(self._eff * _DECREASE_FACTOR))
        if self._local is not None:
            self._local.throttled()

    def succeeded(self) -> None:
        # Growing back happens in Redis, after a quiet window, when the next start is taken.
        if self._local is not None:
            self._local.succeeded()

    async def aclose(self) -> None:
        client, self._client, self._script = self._client, None, None
        if client is not None:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()

    async def _call(self, mode: str, last: str) -> tuple[bool, int]:
        """Run the script; (admitted, microseconds to wait). Raises RedisUnavailableError."""
        script = self._script
        if script is None:
            self._client = self._owner._connect()
            script = self._script = self._client.register_script(_SCRIPT)
        throttle, self._throttle = self._throttle, False
        args = (
            mode,
            self._provider.rate_limit or 0,
            self._span_us,
            self._period_us,
            int(throttle),
            _DECREASE_FACTOR,
            self._step,
            last,
        )
        try:
            admitted, wait_us, eff = await script(keys=self._keys, args=args)
        except (RedisError, OSError) as exc:
            self._throttle |= throttle
            # `from None`: the cause's text is already in the message, scrubbed.
            raise self._outage(exc) from None
        self._eff = int(eff)
        if self._down is not None:
            self._down = None
            logger.info(
                "lane %s: Redis at %s answers again; the rate limit is shared again",
                self._provider.name,
                self._owner.url,
            )
        return bool(admitted), int(wait_us)

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
            limit = self._provider.rate_limit
            if self._owner.fallback == "local" and self._local is None and limit:
                # Kept across outages: its window remembers the starts of the last one.
                self._local = SlidingWindowLimiter(
                    limit, self._provider.rate_period, margin=self._owner.margin
                )
        self._down = err
        self._retry_at = time.monotonic() + self._owner.recheck
        return err

    def note_earlier_sends(self, ages: Sequence[float]) -> None:
        """Nothing to add: the shared log on Redis already holds every start a process made
        through it, the dead one's included, stamped on Redis's own clock. Adding them again
        would count them twice. (A run that switches to Redis right after a crash of a run
        without it starts from Redis's window: the config changed, so did the budget.)"""
