"""Admission by rate: what a lane lets out, and when.

Providers count requests per window and reject the excess (kie: 20 per 10 s, then 429). A leaky
bucket such as ``aiolimiter.AsyncLimiter(N, T)`` starts empty and can let about 2N through in one
window, so the guarantee is kept here with a log of start times instead: a start is allowed when
the ``limit``-th most recent one is older than the window. That is exact, lets a burst of
``limit`` through at once (a web handler does not wait for nothing), and sustains the full rate
when work is waiting.

Against a provider that takes no bursts (a leaky bucket: nginx's ``limit_req``), the same log
paces: with ``burst`` starts allowed at once, the ``burst``-th most recent start must be older
than ``burst`` paced intervals, so ``burst = 1`` spaces every start ``period / limit`` apart (a
virtual scheduling time, as GCRA keeps one, read off the log). Both checks hold at once: the
configured window stays exact whatever the pacing.

What the limit and the burst are is learned (``_learning``); a lane with no configured limit
first measures its provider's window (``_discovery``). A rejected request stays in the log: it
was sent, and some providers count it. A start that was admitted but never sent (its caller left
while it waited) is taken back (``unused``): it costs the provider nothing, so it costs the lane
nothing.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from array import array
from collections.abc import Awaitable, Callable, Sequence

from ._discovery import Discovery
from ._learning import MIN_COUNT, AdaptiveLimit
from ._limiter import DEFAULT_WINDOW_MARGIN, Hold, Start

__all__ = ["SlidingWindowLimiter"]

#: Periods a measured window's limit is advised in: the first that holds MIN_COUNT starts.
ROUND_PERIODS = (1.0, 10.0, 60.0, 600.0)


class SlidingWindowLimiter:
    """At most ``limit`` starts in any ``period`` seconds; waiters are served FIFO.

    Example::

        limiter = SlidingWindowLimiter(20, 10.0)
        start = await limiter.acquire()   # returns at once for the first 20, then paces
        ...                               # send the request right away

    ``limit=None`` admits everything until the provider's first 429, then paces at what got
    through per ``period``; with ``measure=True`` it measures the provider's window instead
    (``period`` then only bounds how far back it looks). ``clock`` and ``sleep`` can be
    replaced to run on virtual time in tests.
    """

    __slots__ = (
        "_adaptive",
        "_clock",
        "_discovery",
        "_last",
        "_lock",
        "_log",
        "_margin",
        "_measure",
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
        measure: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if (limit is not None and limit < 1) or not period > 0 or margin < 0:
            raise ValueError("limit must be >= 1 or None, period > 0 and margin >= 0")
        if measure and limit is not None:
            raise ValueError("only a limiter with no limit measures its provider's window")
        self._measure = measure  # no limit, no window: measure the window on the first 429
        self._margin = margin
        self._span = period * (1 + margin)  # the window actually enforced
        self._slack = period * margin / 10  # a start this close to its send is not moved
        self._adaptive = AdaptiveLimit(limit, period)
        self._discovery: Discovery | None = None  # measuring an unconfigured lane's window
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
    def period(self) -> float:
        """The window the limit counts over: the configured one, or the one discovered."""
        return self._adaptive.period

    @property
    def burst(self) -> int | None:
        """Starts allowed at once; None: the whole ``limit`` (the provider takes bursts)."""
        adaptive = self._adaptive
        burst, current = adaptive.burst, adaptive.current
        return None if burst is None or current is None or burst >= current else burst

    @property
    def learned(self) -> int | None:
        adaptive = self._adaptive
        learned = adaptive.learned(self._clock())
        if learned is None or not adaptive.measured:
            return learned
        # A measured window is short: a token bucket's stored tokens can carry a level through
        # one of them that it cannot sustain, so only what the last 429's window delivered
        # counts. It is no round number either: said per a round period, as starts really let
        # out (the margins included), rounded down: advice is never above what the provider held.
        sustained = adaptive.sustained or learned
        return max(1, math.floor(self._held_rate(sustained) * self.learned_period))

    @property
    def learned_period(self) -> float:
        """The period ``learned`` counts over: ``period``, or a round one for a measured window."""
        adaptive = self._adaptive
        if not adaptive.measured or adaptive.current is None:
            return adaptive.period
        rate = self._held_rate(adaptive.current)
        return next((p for p in ROUND_PERIODS if rate * p >= MIN_COUNT), ROUND_PERIODS[-1])

    def _held_rate(self, count: int) -> float:
        """Starts per second that ``count`` per ``period`` really lets out."""
        adaptive = self._adaptive
        paced = adaptive.burst is not None and adaptive.burst < count
        margin = adaptive.pace_margin(self._clock()) if paced else 0.0
        return count / (self._span * (1 + margin))

    @property
    def holding(self) -> Hold | None:
        return None  # nothing shares it: its lane's own state says why it waits

    def watch_holds(self, on_hold: Callable[[Hold, float], None]) -> None:
        """Nothing shares it: no hold comes from elsewhere."""

    def take(self) -> Start | None:
        """A start now if the window has room and nobody waits for it, else None."""
        adaptive = self._adaptive
        current = adaptive.current
        log = self._log
        if (current is not None and len(log) >= current) or self._waiting:
            return None
        if adaptive.burst is not None or self._discovery is not None:
            return None  # pacing, or probing: acquire's path looks at the clock
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
        now = self._clock()
        if self._discovery is not None:
            return self._discovery.wait(now)
        adaptive = self._adaptive
        current = adaptive.current
        log = self._log
        if current is None:
            return 0.0
        burst = adaptive.burst
        if burst is None or burst >= current:
            return max(0.0, log[-current] + self._span - now) if len(log) >= current else 0.0
        # Paced: the pace keeps the learned limit; the window only the configured ceiling (the
        # starts of a burst the provider refused must not hold the pace up for a window).
        wait = 0.0
        ceiling = adaptive.configured
        if ceiling is not None and len(log) >= ceiling:
            wait = log[-ceiling] + adaptive.period * (1 + self._margin) - now
        if len(log) >= burst:
            paced = burst * self._span / current * (1 + adaptive.pace_margin(now))
            wait = max(wait, log[-burst] + paced - now)
        return max(0.0, wait)

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
                    adaptive.grow(self._clock(), self._held)
                    if (wait := self.delay()) <= 0:
                        break
                    adaptive.saturated = True
                    await self._sleep(wait)
                start = Start(self._stamp())
                self._record(start.at)
                if self._discovery is not None:
                    self._discovery.sent(start.at)
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
        self._forget(start.at)
        start.at = self._stamp()
        self._record(start.at)

    def unused(self, start: Start) -> None:
        """Take back a start whose request was never sent: the window has room for another."""
        self._forget(start.at)

    def accepted(self, start: Start) -> None:
        """An accepted probe ends an unconfigured lane's discovery: its window is measured."""
        discovery = self._discovery
        if discovery is None:
            return
        window = discovery.found(start.at)
        if window is None:
            return
        self._discovery = None
        first_probe = discovery.first_probe
        assert first_probe is not None
        # What the provider took of the burst: its starts before the first probe, less the 429s.
        lo, log, rejected = discovery.origin, self._log, self._rejected
        count = (bisect.bisect_left(log, first_probe) - bisect.bisect_left(log, lo)) - (
            bisect.bisect_left(rejected, first_probe) - bisect.bisect_left(rejected, lo)
        )
        self._adaptive.discovered(count, window, self._clock())
        self._span = self._adaptive.period * (1 + self._margin)
        self._slack = self._adaptive.period * self._margin / 10

    def _held(self) -> int:
        """The most starts the provider accepted in any ``period`` of the last two windows.

        Counted in the provider's own window length, not the widened one: a provider allowing
        20 per 10 s never accepts 21 in any 10 s, so a level held is never above its limit.
        """
        log, rejected = self._log, self._rejected
        lo = self._clock() - 2 * self._span
        refused = set(rejected[bisect.bisect_left(rejected, lo) :])
        times = [t for t in log[bisect.bisect_left(log, lo) :] if t not in refused]
        return _most_in_any(times, self._adaptive.period)

    def _forget(self, at: float) -> None:
        log = self._log
        index = bisect.bisect_left(log, at)
        if index < len(log) and log[index] == at:
            del log[index]

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
        # Starts older than two spans before ``at`` can no longer matter, unless they are the
        # burst a discovery measures from (a Retry-After may hold the probes for longer).
        horizon = at - 2 * self._span
        if self._discovery is not None and self._discovery.origin < horizon:
            horizon = self._discovery.origin
        log = self._log
        del log[: bisect.bisect_left(log, horizon)]
        rejected = self._rejected
        if rejected and rejected[0] < horizon:
            del rejected[: bisect.bisect_left(rejected, horizon)]

    async def throttled(self, start: Start) -> float:
        """A 429 to ``start``: stop bursting, or decrease to what got through, once per event;
        an unconfigured lane's first 429 starts measuring the provider's window. The cooldown."""
        s = start.at
        bisect.insort(self._rejected, s)
        adaptive = self._adaptive
        now = self._clock()
        if adaptive.current is None and self._measure:
            if self._discovery is None:
                log = self._log
                origin = log[bisect.bisect_left(log, s - self._span)] if log else s
                self._discovery = Discovery(origin=min(origin, s), now=now)
            return self.delay()
        if self._discovery is not None:
            return self.delay()  # a probe refused: the next goes at its time
        if self._in_burst(s) and s >= adaptive.decreased:
            adaptive.bursting(now)
            return self.delay()
        if self._jitter(s) and adaptive.jittered(now):
            return self.delay()
        # The window is taken a margin wide: a start right on its edge may still count there.
        lo, log, rejected = s - self._span, self._log, self._rejected
        delivered = (bisect.bisect_left(log, s) - bisect.bisect_left(log, lo)) - (
            bisect.bisect_left(rejected, s) - bisect.bisect_left(rejected, lo)
        )
        news = adaptive.congested(sent_at=s, now=now, delivered=delivered)
        self._span = adaptive.period * (1 + self._margin)  # a discovered window may rescale
        if news and not delivered:
            return max(0.0, s + self._span - now)
        return self.delay()

    def _jitter(self, s: float) -> bool:
        """Was the paced start ``s`` refused at its configured rate only for arriving early?

        So it is when the provider took every other start of the 429's window that left since
        the lane last reacted: a rate too high is refused again and again, a request that
        arrived a little early (sends delayed unevenly by a busy event loop, a network) once.
        Below the configured rate, what a lane learned is tested by the usual rules instead.
        """
        adaptive = self._adaptive
        since = adaptive.decreased
        if adaptive.burst != 1 or adaptive.current != adaptive.configured or s < since:
            return False
        rejected = self._rejected
        lo = max(s - self._span, since)
        return bisect.bisect_left(rejected, s) == bisect.bisect_left(rejected, lo)

    def _in_burst(self, s: float) -> bool:
        """Did ``s`` leave within half a paced interval of another start (a burst)?"""
        adaptive = self._adaptive
        current = adaptive.current
        if current is None or (adaptive.burst is not None and adaptive.burst <= 1):
            return False  # already paced: nothing to give up
        near = self._span / current / 2
        log = self._log
        index = bisect.bisect_left(log, s)
        before = log[index - 1] if index > 0 else -math.inf
        after_index = index + 1 if index < len(log) and log[index] == s else index
        after = log[after_index] if after_index < len(log) else math.inf
        return s - before < near or after - s < near

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


def _most_in_any(times: Sequence[float], period: float) -> int:
    """The most of the sorted ``times`` inside any ``period`` seconds."""
    most = first = 0
    for last, t in enumerate(times):
        while t - times[first] >= period:
            first += 1
        most = max(most, last - first + 1)
    return most
