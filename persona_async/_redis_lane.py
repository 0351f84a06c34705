"""One lane's view of a ``RedisLimiter``: the ``LaneLimiter`` that runs the shared script.

It opens the lane's own connection in the lane's event loop, asks the script for each start,
writes holds, takes back starts never sent, and handles an outage (fail closed, or the local
fallback); ``persona_async.redis`` describes what is shared and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from ._exceptions import PersonaError, RedisUnavailableError
from ._learning import (
    MARGIN_HALF_LIFE,
    MAX_PACE_MARGIN,
    MAX_PATIENCE,
    PACE_MARGIN,
    PROBE_FRACTION,
)
from ._limiter import Hold, Start
from ._providers import Provider
from ._ratelimit import SlidingWindowLimiter
from ._redis_script import SCRIPT

__all__ = ["RedisLane", "RedisOwner"]

logger = logging.getLogger("persona_async")

#: The script's hold states, as Redis returns them (bytes; str if the URL decodes replies).
_HOLDS: dict[object, Hold] = {
    b"cooling": "cooling",
    b"paused": "paused",
    "cooling": "cooling",
    "paused": "paused",
}


class RedisOwner(Protocol):
    """What a lane reads of the ``RedisLimiter`` that made it (a protocol, so that this module
    need not import ``persona_async.redis``, which imports it)."""

    prefix: str
    fallback: Literal["local"] | None
    margin: float
    recheck: float
    url: str

    def _connect(self) -> Redis: ...

    def _describe(self, exc: BaseException) -> str: ...


class RedisLane:
    """One lane's view of a ``RedisLimiter``: the ``LaneLimiter`` the lane calls."""

    __slots__ = (
        "_client",
        "_down",
        "_held",
        "_keys",
        "_limit",
        "_local",
        "_lock",
        "_on_hold",
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

    def __init__(self, owner: RedisOwner, provider: Provider) -> None:
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
        self._on_hold: Callable[[Hold, float], None] | None = None  # the lane's, told of holds
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

    def watch_holds(self, on_hold: Callable[[Hold, float], None]) -> None:
        self._on_hold = on_hold

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
                if self._held is not None and self._on_hold is not None:
                    self._on_hold(self._held, wait_us / 1e6)
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
            self._script = self._client.register_script(SCRIPT)
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
            script = self._script = self._client.register_script(SCRIPT)
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
