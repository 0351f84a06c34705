"""Admission by rate: never more than ``limit`` starts in any sliding window of ``period``.

Providers count requests per window and reject the excess (kie: 20 per 10 s, then 429). A leaky
bucket such as ``aiolimiter.AsyncLimiter(N, T)`` starts empty and can let about 2N through in one
window, so the guarantee is kept here with a log of the last ``limit`` start times instead: a
start is allowed when the ``limit``-th most recent one is older than the window. That is exact,
lets a burst of ``limit`` through at once (a web handler does not wait for nothing), and sustains
the full rate when work is waiting.

On a 429 the *effective* limit is halved and then grows back by a tenth of the configured limit
per quiet window (AIMD), so a provider whose real limit is lower than configured is not hammered.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from ._providers import Provider

__all__ = ["DEFAULT_WINDOW_MARGIN", "LaneLimiter", "SharedLimiter", "SlidingWindowLimiter"]


class LaneLimiter(Protocol):
    """What a lane needs from its rate limiter; ``SlidingWindowLimiter`` is the local one.

    ``acquire`` may raise a ``PersonaError`` (a shared limiter whose store is down): the
    request then fails without being sent.
    """

    @property
    def effective_rate(self) -> float: ...

    async def acquire(self) -> float | None:
        """Wait for a start; return a stamp to hand to ``sent`` (or None)."""
        ...

    def sent(self, stamp: float | None) -> None:
        """The request admitted with ``stamp`` has just been written to the socket."""
        ...

    def throttled(self) -> None: ...

    def succeeded(self) -> None: ...

    async def hold(self, state: Literal["cooling", "paused"], seconds: float) -> None:
        """The lane saw a 429 (cooling) or a 455 (paused): tell whoever shares the budget."""
        ...

    async def aclose(self) -> None:
        """The client is closing: release what ``acquire`` opened (a shared store's connections)."""
        ...

    def note_earlier_sends(self, ages: Sequence[float]) -> None:
        """Count starts made ``ages`` seconds ago by someone else (a process that died)."""
        ...


class SharedLimiter(Protocol):
    """A limiter shared across processes (``Provider(limiter=...)``): one per lane."""

    def for_lane(self, provider: Provider) -> LaneLimiter: ...

#: The window is widened by this fraction of the period: requests reach the provider a little
#: after they start here, and network jitter must not make two windows overlap at its end.
DEFAULT_WINDOW_MARGIN = 0.02
_DECREASE_FACTOR = 0.5
_INCREASE_FRACTION = 0.1


class SlidingWindowLimiter:
    """At most ``limit`` acquisitions in any ``period`` seconds; waiters are served FIFO.

    Example::

        limiter = SlidingWindowLimiter(20, 10.0)
        await limiter.acquire()   # returns at once for the first 20, then paces
        ...                       # start the request right away

    ``clock`` and ``sleep`` can be replaced to run on virtual time in tests.
    """

    __slots__ = (
        "_clock",
        "_effective",
        "_last_change",
        "_lock",
        "_sleep",
        "_span",
        "_starts",
        "limit",
        "period",
    )

    def __init__(
        self,
        limit: int,
        period: float,
        *,
        margin: float = DEFAULT_WINDOW_MARGIN,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if limit < 1 or not period > 0 or margin < 0:
            raise ValueError("limit must be >= 1, period > 0 and margin >= 0")
        self.limit = limit
        self.period = period
        self._span = period * (1 + margin)  # the window actually enforced
        self._effective = limit  # lowered by throttled(), raised back by succeeded()
        self._starts: list[float] = []  # the most recent start times, sorted, at most `limit`
        self._last_change = -math.inf  # clock time of the last change to _effective
        self._lock = asyncio.Lock()  # FIFO: one waiter at a time looks at the clock
        self._clock = clock
        self._sleep = sleep

    @property
    def effective_limit(self) -> int:
        """Starts allowed per window right now (below ``limit`` after a 429)."""
        return self._effective

    @property
    def effective_rate(self) -> float:
        """Starts per second allowed right now."""
        return self._effective / self.period

    def delay(self) -> float:
        """Seconds until one more start is allowed (0.0 when it is allowed now)."""
        if len(self._starts) < self._effective:
            return 0.0
        return max(0.0, self._starts[-self._effective] + self._span - self._clock())

    async def acquire(self) -> float:
        """Wait for a start in the window, record it and return its stamp; start at once."""
        async with self._lock:
            while (wait := self.delay()) > 0:
                await self._sleep(wait)
            stamp = self._clock()
            self._record(stamp)
            return stamp

    def sent(self, stamp: float | None) -> None:
        """Move the start admitted at ``stamp`` to now, when the request really left.

        A request that first has to open a connection (a TLS handshake to a distant host) leaves
        later than it was admitted; the provider counts it from its arrival. Counting it from
        when it was written keeps two windows from overlapping at the provider, whatever the
        connection setup cost; the window margin is then left for network jitter alone.
        """
        if stamp is None:
            return
        index = bisect.bisect_left(self._starts, stamp)
        if index < len(self._starts) and self._starts[index] == stamp:
            del self._starts[index]
        self._record(self._clock())

    def _record(self, stamp: float) -> None:
        bisect.insort(self._starts, stamp)
        if len(self._starts) > self.limit:
            del self._starts[0]

    async def hold(self, state: Literal["cooling", "paused"], seconds: float) -> None:
        """Nothing to share: the lane that owns this limiter already knows."""

    async def aclose(self) -> None:
        """Nothing to release."""

    def throttled(self) -> None:
        """The provider said 429: halve the effective limit (at most once per window)."""
        now = self._clock()
        if now - self._last_change >= self.period or self._effective == self.limit:
            self._effective = max(1, int(self._effective * _DECREASE_FACTOR))
            self._last_change = now

    def succeeded(self) -> None:
        """A request went through: after a quiet window, win back a tenth of the limit."""
        if self._effective < self.limit:
            now = self._clock()
            if now - self._last_change >= self.period:
                step = max(1, round(self.limit * _INCREASE_FRACTION))
                self._effective = min(self.limit, self._effective + step)
                self._last_change = now

    def note_earlier_sends(self, ages: Sequence[float]) -> None:
        """Count starts made ``ages`` seconds before now (by a process that died) in the window.

        A resumed batch calls this before it sends anything, so a restart right after a crash
        does not open a fresh window the provider never granted. Ages older than the window
        change nothing; negative ages (a clock that stepped back) count as now.
        """
        now = self._clock()
        for age in ages:
            if age < self._span:
                self._record(now - max(age, 0.0))
