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

import re
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

try:
    from redis.asyncio import Redis
    from redis.asyncio.connection import parse_url
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "persona_async.redis needs redis-py: pip install 'persona-async[redis]'"
    ) from exc

from ._exceptions import RedisUnavailableError
from ._limiter import DEFAULT_WINDOW_MARGIN, LaneLimiter
from ._providers import Provider
from ._redis_lane import RedisLane
from ._redis_sharing import DEFAULT_LEASE, RedisFlights

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_PREFIX",
    "DEFAULT_RECHECK",
    "DEFAULT_TIMEOUT",
    "RedisLimiter",
    "RedisUnavailableError",
]

#: Namespace of every key the limiter writes.
DEFAULT_PREFIX = "persona_async"
#: Seconds to connect to Redis, and to wait for one reply.
DEFAULT_TIMEOUT = 2.0
#: Seconds after a failure before Redis is tried again; until then requests fail at once (or,
#: with ``fallback="local"``, use the local limiter).
DEFAULT_RECHECK = 1.0

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
        return RedisLane(self, provider)

    def flights_for(self, provider: Provider, limiter: LaneLimiter) -> RedisFlights:
        """Where one lane's identical requests meet those of other processes (called by the
        client, once per lane, with the lane's ``for_lane`` limiter, whose connection and
        outage state they share): see ``persona_async._redis_sharing``."""
        assert isinstance(limiter, RedisLane)
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
