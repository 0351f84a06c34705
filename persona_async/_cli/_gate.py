"""The batch's admission gate: each lane's rate limiter, with a switch that stops all sending.

Every lane of a batch gets its limiter from one ``Gate``. Closing the gate (Ctrl-C, a journal
that stopped accepting records) makes every ``acquire()`` fail at once, including those already
waiting for the window, so a lane finishes its queued requests unsent (the path a shared
limiter whose store is down takes) and only requests on the wire are left to wait for.

The gate also carries a dead run's last sends into the new run's windows:
``count_earlier_sends`` takes the wall-clock times of the ``pending`` records of the journal's
last moments, and each lane's limiter counts those of the last ``rate_period`` before it admits
anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import anyio

from .._exceptions import PersonaError
from .._limiter import Hold, LaneLimiter, SharedLimiter, Start
from .._providers import Provider
from .._ratelimit import SlidingWindowLimiter

__all__ = ["Gate", "Interrupted", "RESTART_SLACK"]

#: A journal's ``sent_at`` is taken a little before the request leaves (the record is synced
#: first). A restart counts each earlier send this much later than its stamp, so the new
#: window never ends before the provider's does.
RESTART_SLACK = 0.25


class Interrupted(PersonaError):
    """The run was stopped before this request was sent (again)."""


class Gate:
    """A ``SharedLimiter`` that keeps each lane's own sliding window and can stop admission.

    ``shared``: lane name -> a limiter shared across processes (Redis).
    """

    def __init__(self, shared: Mapping[str, SharedLimiter] | None = None) -> None:
        self.closed = False
        self._shared = dict(shared or {})
        self._earlier: dict[str, Sequence[float]] = {}
        self._waiting: set[anyio.CancelScope] = set()  # acquires in progress

    def count_earlier_sends(self, sent: Mapping[str, Sequence[float]]) -> None:
        """Lane name -> wall-clock times (``time.time()``) of sends an earlier run made: each
        lane's limiter, once built, counts those of its last window."""
        self._earlier = dict(sent)

    def close(self) -> None:
        """Admit nothing more; acquires in progress fail now."""
        self.closed = True
        for scope in self._waiting:
            scope.cancel()

    def for_lane(self, provider: Provider) -> LaneLimiter:
        inner: LaneLimiter
        if provider.name in self._shared:
            inner = self._shared[provider.name].for_lane(provider)
        else:
            inner = SlidingWindowLimiter(
                provider.rate_limit, provider.rate_period, measure=provider.measures_window
            )
        sent = self._earlier.get(provider.name)
        if sent:
            now = time.time()
            inner.note_earlier_sends([now - stamp - RESTART_SLACK for stamp in sent])
        return _GatedLimiter(self, inner, provider.name)


class _GatedLimiter:
    __slots__ = ("_gate", "_inner", "_lane")

    def __init__(self, gate: Gate, inner: LaneLimiter, lane: str) -> None:
        self._gate = gate
        self._inner = inner
        self._lane = lane

    @property
    def limit(self) -> int | None:
        return self._inner.limit

    @property
    def learned(self) -> int | None:
        return self._inner.learned

    @property
    def period(self) -> float:
        return self._inner.period

    @property
    def learned_period(self) -> float:
        return self._inner.learned_period

    @property
    def holding(self) -> Hold | None:
        return self._inner.holding

    def watch_holds(self, on_hold: Callable[[Hold, float], None]) -> None:
        self._inner.watch_holds(on_hold)

    def take(self) -> Start | None:
        return None if self._gate.closed else self._inner.take()

    async def acquire(self) -> Start:
        self._check()
        start = None
        with anyio.CancelScope() as scope:  # close() cancels it: no wait for the window
            self._gate._waiting.add(scope)
            try:
                start = await self._inner.acquire()
            finally:
                self._gate._waiting.discard(scope)
        if self._gate.closed:  # stopped during the wait (only close() cancels it)
            if start is not None:
                self._inner.unused(start)
            raise self._stopped()
        assert start is not None
        return start

    def sent(self, start: Start) -> None:
        self._inner.sent(start)

    def accepted(self, start: Start) -> None:
        self._inner.accepted(start)

    def unused(self, start: Start) -> None:
        self._inner.unused(start)

    def _check(self) -> None:
        if self._gate.closed:
            raise self._stopped()

    def _stopped(self) -> Interrupted:
        return Interrupted(
            "not sent: the run was stopped; running the same command again sends it",
            provider=self._lane,
            retryable=True,
        )

    async def throttled(self, start: Start) -> float:
        return await self._inner.throttled(start)

    async def hold(self, state: Hold, seconds: float) -> None:
        await self._inner.hold(state, seconds)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def note_earlier_sends(self, ages: Sequence[float]) -> None:
        self._inner.note_earlier_sends(ages)
