"""A request's deadline: fixed when the request is submitted, it bounds the whole call.

Queueing, the rate limiter, a cooldown after 429, a maintenance wait and every retry all count.
The deadline is kept by not *starting* an attempt that could not finish: an attempt starts only
while a fair share of time is left (``min_attempt_time``), and nothing on the wire is cancelled
because a deadline passed. A request still unsent at its last start time fails then, with the
error that explains it (``give_up_error``): the provider's last answer, never a bare timeout.

The defaults fit the two ways the client is used: a web handler answers its user in seconds,
while a bulk stream would rather wait out a maintenance window than fail a thousand items.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._exceptions import (
    THROTTLES,
    MaintenanceError,
    OverloadedError,
    PersonaError,
    ProviderTimeoutError,
    RateLimitError,
)
from ._limiter import Hold

if TYPE_CHECKING:
    from ._job import _Job

__all__ = [
    "DEFAULT_DEADLINE",
    "Deadlines",
    "DEFAULT_STREAM_DEADLINE",
    "cannot_start_error",
    "check_deadline",
    "give_up_error",
    "held_elsewhere_error",
    "maintenance_error",
    "min_attempt_time",
]

#: Seconds one ``create_persona`` call may take, from submission: a web handler's budget.
DEFAULT_DEADLINE = 30.0
#: Seconds each ``create_many`` request may take, from the moment it is pulled: long enough to
#: wait out a maintenance window (``max_maintenance_wait``, 600 s) and a read-ahead's queue.
DEFAULT_STREAM_DEADLINE = 3600.0


def check_deadline(value: float | None, name: str = "deadline") -> float | None:
    """``value`` if it is a valid deadline in seconds (``math.inf``: none) or None, else raise."""
    if value is not None and (isinstance(value, bool) or not value > 0):
        raise ValueError(f"{name} must be > 0 seconds (math.inf for none), got {value!r}")
    return None if value is None else float(value)


def min_attempt_time(provider_timeout: float, deadline: float) -> float:
    """The least time left with which an attempt may start.

    A retry squeezed in just before the deadline would time out after the provider got it,
    creating the very ambiguity retries must avoid: give it a fair chance or none.
    """
    return (provider_timeout if provider_timeout < deadline else deadline) / 4  # min(), per request


def give_up_error(
    *,
    lane: str,
    waited: float,
    last_error: PersonaError | None,
    last_429: RateLimitError | OverloadedError | None,
    last_455: MaintenanceError | None,
    cooling: bool,
    paused: bool,
    held: Hold | None = None,
) -> PersonaError:
    """Why a request that ran out of time was not (or no longer) sent.

    In a paused lane, the provider's maintenance answer; in a cooling lane, its 429 (with its
    ``Retry-After``); in a lane held by a process sharing its limiter (``held``), what that
    process was answered; else the request's own last failure; else a timeout saying it was
    queued.
    """
    said: PersonaError | None = None
    if paused and last_455 is not None:
        said = last_455
    elif cooling and last_429 is not None:
        limited = isinstance(last_error, THROTTLES)
        said = last_error if limited else last_429
    elif held is not None:
        return _held_error(held, lane, waited)
    elif last_error is not None:
        return last_error
    if said is not None:
        # The lane's error is shared by every request it turned away: each gets its own copy.
        clone = said.for_request(None, None)
        clone.message = f"{said.message}; the request's deadline passed after {waited:.3g}s"
        clone.args = (clone.message,)
        return clone
    return ProviderTimeoutError(
        f"the request's deadline passed after {waited:.3g}s waiting in the lane's queue "
        "(rate limit, concurrency cap or retries): it was never sent",
        sent=False,
        retryable=True,
        provider=lane,
    )


def cannot_start_error(
    said: RateLimitError | OverloadedError | MaintenanceError,
    resumes_in: float,
    left: float,
    lane: str,
) -> PersonaError:
    """A request the lane cannot send before its last start time, failed at once.

    ``said`` is what made the lane cool (429, 503) or pause (455); the lane sends nothing for
    ``resumes_in`` seconds, and the request must start within ``left``. A cooling lane's error
    carries ``retry_after``: the whole seconds until the lane sends again.
    """
    clone = said.for_request(None, None)
    if isinstance(clone, (RateLimitError, OverloadedError)):
        clone.retry_after = float(math.ceil(resumes_in))  # whole seconds, as in a header
        why = f"the lane sends nothing for another {resumes_in:.3g}s (cooling down)"
    else:
        why = f"the lane is paused for maintenance; its next probe is in {resumes_in:.3g}s"
    clone.message = (
        f"{said.message}; {why}, after the request's last start in {left:.3g}s: "
        "it was not sent, and failed at once"
    )
    clone.args = (clone.message,)
    clone.provider = lane
    return clone


def held_elsewhere_error(held: Hold, resumes_in: float, left: float, lane: str) -> PersonaError:
    """A request that cannot start before a hold a process sharing the limiter set, failed at
    once (as ``cannot_start_error`` fails one in a lane that saw the 429 or 455 itself)."""
    said, kind = _HELD[held]
    seen = kind(f"{said} (seen by a process sharing this lane's limiter)", provider=lane)
    assert isinstance(seen, (RateLimitError, OverloadedError, MaintenanceError))
    return cannot_start_error(seen, resumes_in, left, lane)


def _held_error(held: Hold, lane: str, waited: float) -> PersonaError:
    """The lane's shared limiter held every start: a process sharing it was told to wait."""
    said, kind = _HELD[held]
    message = (
        f"{said} (seen by a process sharing this lane's limiter, which holds every start "
        f"until then); the request's deadline passed after {waited:.3g}s: it was never sent"
    )
    return kind(message, provider=lane)


#: Why a shared limiter holds its starts, in the words and type of the answer that caused it.
_HELD: dict[Hold, tuple[str, type[PersonaError]]] = {
    "paused": ("the provider is down for maintenance", MaintenanceError),
    "cooling": ("the provider asked to slow down (Retry-After)", RateLimitError),
}


def maintenance_error(said: MaintenanceError | None, waited: float, lane: str) -> MaintenanceError:
    """A request waited ``max_maintenance_wait`` for a provider that is still in maintenance."""
    return MaintenanceError(
        (f"{said.message}; " if said else "") + f"provider still in maintenance after {waited:g}s",
        # The provider's own code and status, as for any other error.
        code=said.code if said else None,
        http_status=said.http_status if said else None,
        provider=lane,
    )


class Deadlines:
    """One loop timer for a lane's waiting jobs: each is failed at its last start time.

    A timer per request costs a call into the loop's timer heap to set and one to cancel; a
    lane keeps its own order instead, behind a single loop timer set for the earliest. Most
    jobs are armed in the order of their last start times (a stream's requests all have the
    same deadline): those join a plain line, and the rest a heap of ``(last_start, seq, job)``.
    A job that stops waiting is only marked (``disarm``); a line drops marked jobs from its
    front at once (they usually leave in order), and either is compacted when most of it is
    stale, so memory follows the jobs that wait.

    ``expire(job)`` is called for a job still armed at its last start time.
    """

    __slots__ = ("_at", "_clock", "_expire", "_handle", "_heap", "_line", "_room", "_seq")

    def __init__(self, expire: Callable[[_Job], None], clock: Callable[[], float]) -> None:
        self._expire = expire
        self._clock = clock  # the lane's, which last_start is on
        self._line: deque[_Job] = deque()  # armed in last_start order (maybe stale)
        self._heap: list[tuple[float, int, _Job]] = []  # armed out of order (maybe stale)
        self._room = _COMPACT_AT  # the size at which the line or heap drops its stale entries
        self._seq = 0  # ties in time go in arming order; jobs are never compared
        self._handle: asyncio.TimerHandle | None = None
        self._at = math.inf  # when the loop timer fires

    def arm(self, job: _Job) -> None:
        last_start = job.last_start
        if job.armed or job.done or last_start == math.inf:  # inf: no deadline
            return
        job.armed = True
        line = self._line
        if not line or line[-1].last_start <= last_start:
            line.append(job)
            if len(line) > self._room:
                self._compact()
        else:
            self._seq += 1
            heapq.heappush(self._heap, (last_start, self._seq, job))
            if len(self._heap) > self._room:
                self._compact()
        if last_start < self._at:
            self._schedule(last_start)

    def disarm(self, job: _Job) -> None:
        if job.armed:
            job.armed = False
            line = self._line
            while line and not line[0].armed:
                line.popleft()

    def armed_before(self, t: float) -> list[_Job]:
        """The waiting jobs whose last start time comes before ``t``."""
        jobs = [job for job in self._line if job.armed and job.last_start < t]
        jobs.extend(job for _, _, job in self._heap if job.armed and job.last_start < t)
        return jobs

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _compact(self) -> None:
        self._line = deque(job for job in self._line if job.armed)
        self._heap = [entry for entry in self._heap if entry[2].armed]
        heapq.heapify(self._heap)
        self._room = max(_COMPACT_AT, 2 * max(len(self._line), len(self._heap)))

    def _schedule(self, at: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._at = at
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(max(0.0, at - self._clock()), self._fire)

    def _fire(self) -> None:
        self._handle, self._at = None, math.inf
        line, heap, now = self._line, self._heap, self._clock()
        while line and (line[0].last_start <= now or not line[0].armed):
            job = line.popleft()
            if job.armed:
                job.armed = False
                self._expire(job)
        while heap and (heap[0][0] <= now or not heap[0][2].armed):
            job = heapq.heappop(heap)[2]
            if job.armed:
                job.armed = False
                self._expire(job)
        earliest = min(line[0].last_start if line else math.inf, heap[0][0] if heap else math.inf)
        if earliest < math.inf:
            self._schedule(earliest)


#: Entries a lane's Deadlines holds before it first drops the stale ones.
_COMPACT_AT = 256
