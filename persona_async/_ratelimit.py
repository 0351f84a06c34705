"""Admission by rate, and what a lane learns about its provider's real limit.

Providers count requests per window and reject the excess (kie: 20 per 10 s, then 429). A leaky
bucket such as ``aiolimiter.AsyncLimiter(N, T)`` starts empty and can let about 2N through in one
window, so the guarantee is kept here with a log of start times instead: a start is allowed when
the ``limit``-th most recent one is older than the window. That is exact, lets a burst of
``limit`` through at once (a web handler does not wait for nothing), and sustains the full rate
when work is waiting.

Most providers publish no limit, so the configured one is often wrong. :class:`AdaptiveLimit`
learns the real one from the provider's 429s, the way TCP learns a path's capacity, but from a
better signal than a halving:

* **one congestion event per window**: 429s to requests sent before the last decrease are the
  same event (they were already on their way) and change nothing;
* **decrease to what the provider delivered**: the requests accepted in the window that ended
  in the 429 are the best estimate of its limit (but at most by half per event, so a lone 429
  from a hiccup cannot pin a lane to the few requests it had sent when it came; each further
  429 of the same burst confirms the estimate and moves the limit halfway on towards it). A
  window in which nothing got through says nothing about the rate: the lane only waits for it
  to pass;
* **probe upward additively**, after a full window with no 429 in which the lane wanted more than
  it was allowed; at the level that failed last, only after ``patience`` such windows, doubled
  by every probe that fails (up to :data:`MAX_PATIENCE`), so a steady state costs about one 429
  per :data:`MAX_PATIENCE` windows. A provider whose 429s carry a ``Retry-After`` longer than the
  window makes each failed probe cost that long instead of a window, so patience is counted in
  those: the share of time lost to probing stays what it is without one;
* **never above the configured limit**, and a lane configured with none (``rate_limit=None``)
  sends freely until its first 429, then paces at what it observed.

A rejected request stays in the log: it was sent, and some providers count it. The cooldown after
a new event is simply the time until the log allows the next start at the decreased limit, that
is when the window that produced the 429 has passed.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from array import array
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Literal, Protocol

import msgspec

if TYPE_CHECKING:
    from ._providers import Provider

__all__ = [
    "DEFAULT_WINDOW_MARGIN",
    "MAX_PATIENCE",
    "AdaptiveLimit",
    "Hold",
    "LaneLimiter",
    "SentHook",
    "SharedLimiter",
    "SlidingWindowLimiter",
    "Start",
    "advice",
]

#: Why a lane holds every start: a 429 with a Retry-After ("cooling") or a 455 ("paused").
Hold = Literal["cooling", "paused"]

#: The window is widened by this fraction of the period: requests reach the provider a little
#: after they start here, and network jitter must not make two windows overlap at its end.
DEFAULT_WINDOW_MARGIN = 0.02
#: Most clean windows to wait before probing again at a level where the provider said 429.
MAX_PATIENCE = 16
#: An upward probe adds this fraction of the current limit (at least one request).
PROBE_FRACTION = 0.05


class Start(msgspec.Struct, gc=False):
    """One admitted request: when it left (moved to the real send by ``sent``).

    A msgspec Struct without garbage-collector tracking: it holds no references, and one is
    made per request.
    """

    at: float  # the lane's clock
    member: str | None = None  # its entry in a shared log (Redis), if any


class SentHook:
    """A lane worker's ``on_sent``: moves its current start to the moment the request leaves.

    One per worker, reused for every request it sends: nothing is allocated per request.
    """

    __slots__ = ("_sent", "start")

    def __init__(self, limiter: LaneLimiter) -> None:
        self._sent = limiter.sent  # bound once
        self.start: Start | None = None  # the request on its way, if any

    def __call__(self) -> None:
        start = self.start
        if start is not None:
            self._sent(start)


class LaneLimiter(Protocol):
    """What a lane needs from its rate limiter; ``SlidingWindowLimiter`` is the local one.

    ``acquire`` may raise a ``PersonaError`` (a shared limiter whose store is down): the
    request then fails without being sent.
    """

    @property
    def limit(self) -> int | None:
        """Starts allowed per ``rate_period`` right now; None: no limit known yet."""
        ...

    @property
    def learned(self) -> int | None:
        """The provider's sustained limit once settled below the configured one, else None."""
        ...

    @property
    def holding(self) -> Hold | None:
        """Why ``acquire`` waits right now, when a process sharing this limiter said to."""
        ...

    def take(self) -> Start | None:
        """A start now, without waiting, or None: then ``acquire`` (None when unsure)."""
        ...

    async def acquire(self) -> Start:
        """Wait for a start; return it, to hand to ``sent`` and then to the outcome."""
        ...

    def sent(self, start: Start) -> None:
        """The request admitted as ``start`` has just been written to the socket."""
        ...

    async def throttled(self, start: Start) -> float:
        """The provider said 429 to ``start``: learn from it; seconds until the next start."""
        ...

    async def hold(self, state: Hold, seconds: float) -> None:
        """The lane was told to wait (Retry-After, a 455): tell whoever shares the budget."""
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


class AdaptiveLimit:
    """The limit a lane runs at, learned from 429s; pure bookkeeping on a caller's clock.

    Example::

        limit = AdaptiveLimit(40, 1.0)      # configured 40 per second
        limit.congested(sent_at=0.01, now=0.05, delivered=10)   # a 429; 10 got through
        assert limit.current == 10
        limit.saturated = True               # the lane wanted more than 10
        limit.grow(now=1.1)                  # a clean window later: probe one higher
        assert limit.current == 11

    ``RedisLimiter`` applies the same rules inside Redis, so processes share one limit.
    """

    __slots__ = (
        "ceiling",
        "changed",
        "configured",
        "current",
        "decreased",
        "discovered",
        "evidence",
        "grown",
        "patience",
        "period",
        "proven",
        "saturated",
        "stall",
        "sustained",
    )

    def __init__(self, configured: int | None, period: float) -> None:
        self.configured = configured  # never exceeded; None: no limit until a 429
        self.period = period
        self.current = configured  # what the lane runs at
        self.changed = -math.inf  # when `current` last changed
        self.decreased = -math.inf  # when it last went down: older 429s are that same event
        self.grown = -math.inf  # when it last went up: a 429 soon after is a failed probe
        self.discovered = -math.inf  # when a 429 first taught it something
        self.ceiling: int | None = None  # the limit at which the last congestion event came
        self.patience = 1  # clean windows to wait before probing at `ceiling` again
        self.saturated = False  # the lane wanted more starts than `current` since the change
        self.sustained: int | None = None  # what the provider delivered at the last event
        self.evidence: int | None = None  # accepted in the window of the last event's 429
        self.stall = 0.0  # the last 429's Retry-After: what a failed probe costs, if > period
        self.proven: int | None = None  # held through a clean window since the last drop

    def congested(self, *, sent_at: float, now: float, delivered: int) -> bool:
        """A 429 to a request sent at ``sent_at``; ``delivered`` were accepted in its window.

        Returns True if this is a new congestion event (and the limit went down).
        """
        if sent_at < self.decreased:
            # Sent before we reacted to the last 429: the same event. It confirms that event's
            # estimate, so a decrease that was held at half moves halfway on toward it.
            evidence = self.evidence
            if evidence is not None and self.current is not None and self.current > evidence:
                self.current = self.sustained = max(evidence, (self.current + evidence) // 2)
            return False
        if not delivered:
            # Nothing got through in that window (someone else filled it, or a run before
            # this one did): no estimate of the rate; wait for the window to pass.
            self.decreased, self.evidence = now, None
            return True
        before = self.current
        if now - self.grown < 2 * self.period:
            self.patience = min(self.patience * 2, MAX_PATIENCE)  # a probe upward failed
        else:
            self.proven = None  # not a probe that failed: the provider lowered its limit
        aftermath = self.decreased > self.grown and now - self.decreased < 2 * self.period
        if aftermath and self.ceiling is not None and before is not None:
            self.ceiling = max(self.ceiling, before)  # it failed higher up, moments ago
        else:
            self.ceiling = before
        lowered = self.evidence = max(1, delivered)
        if before is not None:
            # At most half per event: a lone 429 early in a run (a gateway's hiccup) would
            # otherwise pin the lane to the two or three requests it had sent so far.
            lowered = max(1, min(max(lowered, before // 2), before - 1))
        self.current = self.sustained = lowered
        self.decreased = self.changed = now
        if self.discovered == -math.inf:
            self.discovered = now
        self.saturated = False
        return True

    def grow(self, now: float) -> None:
        """Probe one step upward if a clean, saturated window (or ``patience`` of them) passed."""
        current = self.current
        if current is None or not self.saturated:
            return
        if current == self.configured:
            if now - self.changed >= self.period:
                self.proven = current  # the configured limit holds: nothing to advise
            return
        at_ceiling = self.ceiling is not None and current + 1 >= self.ceiling
        wait = self.patience * max(self.period, self.stall) if at_ceiling else self.period
        if now - self.changed < wait:
            return
        if self.ceiling is not None and current >= self.ceiling:
            self.ceiling, self.patience = None, 1  # it held where it failed before: forget that
        self.proven = current  # a clean window in which the lane wanted more: it holds
        step = max(1, int(current * PROBE_FRACTION + 0.5))  # as Redis's Lua rounds
        self.current = current + step
        if self.configured is not None:
            self.current = min(self.current, self.configured)
        self.changed = self.grown = now
        self.saturated = False

    def cooling(self, seconds: float) -> None:
        """A 429 said ``Retry-After: seconds``: a probe that fails will cost that long."""
        self.stall = seconds

    def learned(self, now: float) -> int | None:
        """What the provider sustained, once two windows have passed since the first 429."""
        sustained = self.sustained
        if sustained is not None and self.proven is not None and self.proven > sustained:
            # A probe above a level held cleanly failed, and the 429's window showed fewer
            # than that level (requests on the window's edge): the level held is what it takes.
            sustained = self.proven
        settled = sustained is not None and now - self.discovered >= 2 * self.period
        if not settled or (self.configured is not None and sustained == self.configured):
            return None
        return sustained


def advice(name: str, configured: int | None, learned: int, period: float) -> str:
    """The sentence a user can act on when a lane settled below its configured limit."""
    was = f"configured {configured} per {period:g} s" if configured else "no rate_limit configured"
    return (
        f"{name}: {was}, provider sustained about {learned} per {period:g} s: "
        f"set rate_limit = {learned}"
    )


class SlidingWindowLimiter:
    """At most ``limit`` starts in any ``period`` seconds; waiters are served FIFO.

    Example::

        limiter = SlidingWindowLimiter(20, 10.0)
        start = await limiter.acquire()   # returns at once for the first 20, then paces
        ...                               # send the request right away

    ``limit=None`` admits everything until the provider's first 429, then paces at what it
    learned. ``clock`` and ``sleep`` can be replaced to run on virtual time in tests.
    """

    __slots__ = (
        "_adaptive",
        "_clock",
        "_last",
        "_lock",
        "_log",
        "_rejected",
        "_slack",
        "_sleep",
        "_span",
        "_waiting",
    )

    def __init__(
        self,
        limit: int | None,
        period: float,
        *,
        margin: float = DEFAULT_WINDOW_MARGIN,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if (limit is not None and limit < 1) or not period > 0 or margin < 0:
            raise ValueError("limit must be >= 1 or None, period > 0 and margin >= 0")
        self._span = period * (1 + margin)  # the window actually enforced
        self._slack = period * margin / 10  # a start this close to its send is not moved
        self._adaptive = AdaptiveLimit(limit, period)
        # Times of recent starts, sorted, and of those answered 429; kept two spans so a late
        # 429 still finds its window. C doubles, each one distinct (a time names its start):
        # 8 bytes a start and nothing for the garbage collector, so an unlimited lane at
        # 10,000 starts a second holds about 1.6 MB here, not the 8 MB of float objects.
        self._log = array("d")
        self._rejected = array("d")
        self._last = -math.inf  # the latest time handed out
        self._lock = asyncio.Lock()  # FIFO: one waiter at a time looks at the clock
        self._waiting = 0  # acquires in line for the lock or the window: take() must not jump
        self._clock = clock
        self._sleep = sleep

    @property
    def configured(self) -> int | None:
        return self._adaptive.configured

    @property
    def limit(self) -> int | None:
        return self._adaptive.current

    @property
    def learned(self) -> int | None:
        return self._adaptive.learned(self._clock())

    @property
    def holding(self) -> Hold | None:
        return None  # nothing shares it: its lane's own state says why it waits

    def take(self) -> Start | None:
        """A start now if the window has room and nobody waits for it, else None."""
        current = self._adaptive.current
        log = self._log
        if (current is not None and len(log) >= current) or self._waiting:
            return None
        # Room in the window and nobody waiting: no lock, no clock games. (Growth only
        # matters to a lane that had to wait, which takes acquire's path.) A start is later
        # than every time in the log, so it goes at the end.
        now = self._clock()
        at = self._last = now if now > self._last else self._last + 1e-9
        log.append(at)
        if log[0] < at - 2 * self._span:
            self._trim(at)
        return Start(at)

    def delay(self) -> float:
        """Seconds until one more start is allowed (0.0 when it is allowed now)."""
        current = self._adaptive.current
        if current is None or len(self._log) < current:
            return 0.0
        return max(0.0, self._log[-current] + self._span - self._clock())

    async def acquire(self) -> Start:
        """Wait for a start in the window, record it and return it; start at once."""
        start = self.take()
        if start is not None:
            return start
        adaptive = self._adaptive
        self._waiting += 1
        try:
            async with self._lock:
                while True:
                    adaptive.grow(self._clock())
                    if (wait := self.delay()) <= 0:
                        break
                    adaptive.saturated = True
                    await self._sleep(wait)
                start = Start(self._stamp())
                self._record(start.at)
                return start
        finally:
            self._waiting -= 1

    def sent(self, start: Start) -> None:
        """Move ``start`` to now, when the request really left.

        A request that first has to open a connection (a TLS handshake to a distant host) leaves
        later than it was admitted; the provider counts it from its arrival. Counting it from
        when it was written keeps two windows from overlapping at the provider, whatever the
        connection setup cost; the window margin is then left for network jitter alone.
        """
        if self._clock() - start.at < self._slack:
            return  # it left as it was admitted: well inside the window's margin
        log = self._log
        index = bisect.bisect_left(log, start.at)
        if index < len(log) and log[index] == start.at:
            del log[index]
        start.at = self._stamp()
        self._record(start.at)

    def _stamp(self) -> float:
        # Now, or just after the last time handed out: no two starts share a time.
        now = self._clock()
        self._last = now if now > self._last else self._last + 1e-9
        return self._last

    def _record(self, at: float) -> None:
        log = self._log
        if log and log[-1] > at:
            bisect.insort(log, at)
        else:
            log.append(at)
        if log[0] < at - 2 * self._span:
            self._trim(at)

    def _trim(self, at: float) -> None:
        # Starts older than two spans before ``at`` can no longer matter.
        horizon = at - 2 * self._span
        log = self._log
        del log[: bisect.bisect_left(log, horizon)]
        rejected = self._rejected
        if rejected and rejected[0] < horizon:
            del rejected[: bisect.bisect_left(rejected, horizon)]

    async def throttled(self, start: Start) -> float:
        """A 429 to ``start``: decrease to what got through, once per event; the cooldown."""
        s = start.at
        bisect.insort(self._rejected, s)
        # The window is taken a margin wide: a start right on its edge may still count there.
        lo, log, rejected = s - self._span, self._log, self._rejected
        delivered = (bisect.bisect_left(log, s) - bisect.bisect_left(log, lo)) - (
            bisect.bisect_left(rejected, s) - bisect.bisect_left(rejected, lo)
        )
        now = self._clock()
        news = self._adaptive.congested(sent_at=s, now=now, delivered=delivered)
        if news and not delivered:
            return max(0.0, s + self._span - now)
        return self.delay()

    async def hold(self, state: Hold, seconds: float) -> None:
        """Nothing to share (the lane that owns this limiter knows); a cooldown's length is
        what a failed probe costs (``AdaptiveLimit.cooling``)."""
        if state == "cooling":
            self._adaptive.cooling(seconds)

    async def aclose(self) -> None:
        """Nothing to release."""

    def note_earlier_sends(self, ages: Sequence[float]) -> None:
        """Count starts made ``ages`` seconds before now (by a process that died) in the window.

        A resumed batch calls this before it sends anything, so a restart right after a crash
        does not open a fresh window the provider never granted. Ages older than the window
        change nothing; negative ages (a clock that stepped back) count as now.
        """
        now = self._clock()
        for age in ages:
            if age < self._span:
                at = now - max(age, 0.0)
                while at in self._log:  # distinct times, as _stamp keeps them
                    at -= 1e-9
                self._record(at)
