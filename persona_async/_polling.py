"""Polite polling: asking a provider "is task X done?" until it is, without hammering it.

Two things poll: a lane waiting for a *source* music task to finish before its first create
(``wait_for_source``), and an async-task provider waiting for a *persona* task it submitted.
Both are a thin use of one ``Poller`` per lane:

* **a poll budget of its own**: at most ``rate_limit`` status queries per ``rate_period`` for the
  whole lane, in a ``SlidingWindowLimiter`` apart from the create limiter, so polls never take a
  create's slot and creates never starve polls;
* **a schedule per task**: the first query after ``first`` seconds (the provider's estimate; 0 to
  ask at once), then intervals growing by ``factor`` from ``initial`` up to ``max_interval``,
  never closer than ``min_interval`` (kie: at most 3 queries per second per task);
* **429 slows polling only**: the poll budget halves (AIMD, as for creates) and every poll of the
  lane waits out the Retry-After (or the current interval, doubled); creates are untouched;
* **transient failures are polled through**: a status query is a GET, safe to repeat, so a 500 or
  a reset is just a missed poll; anything else non-retryable ends the wait;
* **one query per task**: concurrent waits for the same key share one polling loop and its
  answer;
* **a deadline per waiter**: each caller stops at its own deadline with the error it chose.

The poller knows nothing about HTTP: a wait is given a ``query`` coroutine function that returns
the finished value, returns ``Running(...)`` while the task runs, or raises a ``PersonaError``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ._exceptions import THROTTLES, PersonaError
from ._limiter import Start
from ._ratelimit import SlidingWindowLimiter

__all__ = [
    "DEFAULT_POLL_POLICY",
    "PollBudget",
    "PollPolicy",
    "Poller",
    "Running",
]

T = TypeVar("T")

#: Status queries per ``rate_period`` for one lane, all tasks together. No provider publishes a
#: lane-wide figure for its status endpoint; AceData asks for under 1 per second per task and kie
#: allows 3 per second per task, so 5 per second across a lane is modest for both.
DEFAULT_POLL_RATE_LIMIT = 5
DEFAULT_POLL_RATE_PERIOD = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PollPolicy:
    """How a lane polls. Frozen; share one per provider.

    Poll ``n`` (0-based) of one wait happens ``first`` seconds after the wait starts, then each
    next one ``interval(n)`` seconds after the previous answer: ``initial * factor ** (n - 1)``,
    capped at ``max_interval``, never below ``min_interval``, spread by +-``jitter`` (a fraction)
    so that many waits started together do not poll in lockstep.
    """

    initial: float = 2.0
    factor: float = 1.5
    max_interval: float = 30.0
    min_interval: float = 0.5
    jitter: float = 0.1
    rate_limit: int = DEFAULT_POLL_RATE_LIMIT
    rate_period: float = DEFAULT_POLL_RATE_PERIOD

    def __post_init__(self) -> None:
        if not (0 <= self.min_interval <= self.initial <= self.max_interval):
            raise ValueError("poll intervals must satisfy 0 <= min_interval <= initial <= max")
        if self.factor < 1 or not 0 <= self.jitter < 1:
            raise ValueError("poll factor must be >= 1 and jitter in [0, 1)")
        if self.rate_limit < 1 or not self.rate_period > 0:
            raise ValueError("poll rate_limit must be >= 1 and rate_period > 0")

    def interval(self, n: int) -> float:
        """Seconds between poll ``n - 1`` and poll ``n`` (``n >= 1``), jitter included."""
        base = min(self.max_interval, self.initial * self.factor ** max(0, n - 1))
        spread = base * self.jitter
        return max(self.min_interval, base + random.uniform(-spread, spread))


DEFAULT_POLL_POLICY = PollPolicy()


@dataclass(frozen=True, slots=True)
class Running:
    """What a ``query`` returns while the task is not finished.

    ``status`` is the provider's own word for the state (kept for the message when the wait
    ends); ``retry_in`` is the provider's hint of when to ask again, if it gave one (it is
    still kept within ``min_interval`` and ``max_interval``). ``undocumented``: the word is not
    one the contract documents, waited on as running for a bounded time by the caller.
    """

    status: str = ""
    retry_in: float | None = None
    undocumented: bool = False


class PollBudget:
    """A lane's status-query budget: a sliding window apart from creates, slowed by 429s.

    Example::

        budget = PollBudget(PollPolicy(rate_limit=5, rate_period=1.0))
        start = await budget.acquire()        # then send one status query
        await budget.throttled(start, 2.0)    # it came back 429 with Retry-After: 2
    """

    __slots__ = ("_clock", "_cool_until", "_limiter", "_sleep")

    def __init__(
        self,
        policy: PollPolicy = DEFAULT_POLL_POLICY,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._limiter = SlidingWindowLimiter(
            policy.rate_limit, policy.rate_period, clock=clock, sleep=sleep
        )
        self._cool_until = 0.0  # clock time before which no poll of the lane goes out
        self._clock = clock
        self._sleep = sleep

    @property
    def limit(self) -> int | None:
        """Status queries per period allowed right now (below the policy's after 429s)."""
        return self._limiter.limit

    async def acquire(self) -> Start:
        """Wait out any cooldown, then for a start in the window."""
        while (wait := self._cool_until - self._clock()) > 0:
            await self._sleep(wait)
        return await self._limiter.acquire()

    async def throttled(self, start: Start, wait: float) -> None:
        """A status query came back 429: learn from it as creates do, and hold every poll of
        the lane for ``wait`` s (or until its window has passed, if that is later)."""
        wait = max(wait, await self._limiter.throttled(start))
        self._cool_until = max(self._cool_until, self._clock() + wait)


class _Flight(Generic[T]):
    # One polling loop for one key, and how many waits are listening to it.
    __slots__ = ("last_error", "last_running", "task", "waiters")

    def __init__(self) -> None:
        self.task: asyncio.Task[T] | None = None
        self.waiters = 0
        self.last_running: Running | None = None  # the last "still running" answer
        self.last_error: PersonaError | None = None  # the last transient failure, if any


class Poller:
    """One lane's polling: its budget, its policy, and one loop per polled key.

    Example (an async-task provider waiting for the persona task it submitted)::

        poller = Poller(PollPolicy(initial=5.0, max_interval=30.0))

        async def query() -> str | Running:
            reply = await get_task(task_id)           # raises PersonaError on a failed task
            if reply.status in ("pending", "processing"):
                return Running(reply.status)
            return reply.persona_id

        persona_id = await poller.wait(
            ("persona", task_id), query, first=15.0,  # the provider's estimated_time
            deadline=time.monotonic() + 300,
            expired=lambda last, err: ProviderTimeoutError(f"task {task_id} still running"),
        )
        ...
        await poller.aclose()

    Waits with equal keys share one loop: the first wait's ``query`` and ``first`` are used,
    and the loop runs while any of them still listens. A failure raised by ``query`` reaches
    every wait sharing it as the *same* exception object: copy it before changing it
    (``PersonaError.for_request``). The loop's tasks belong to the poller; a wait that is
    cancelled or expires stops its loop when it was the last one listening, and ``aclose``
    stops them all.
    """

    __slots__ = ("_clock", "_flights", "_sleep", "budget", "policy")

    def __init__(
        self,
        policy: PollPolicy = DEFAULT_POLL_POLICY,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.policy = policy
        self.budget = PollBudget(policy, clock=clock, sleep=sleep)
        self._flights: dict[Hashable, _Flight[object]] = {}
        self._clock = clock
        self._sleep = sleep

    async def wait(
        self,
        key: Hashable,
        query: Callable[[], Awaitable[T | Running]],
        *,
        deadline: float,
        expired: Callable[[Running | None, PersonaError | None], PersonaError],
        first: float = 0.0,
    ) -> T:
        """Poll ``query`` until it returns a value other than ``Running``, and return that.

        ``deadline`` is a ``clock()`` time; when it passes first, the error made by
        ``expired(last_running, last_error)`` is raised (the last "still running" answer and the
        last transient failure, either may be None). A ``PersonaError`` raised by ``query`` that
        is not retryable ends the wait at once; a retryable one (500, reset, timeout) and a 429
        are polled through until the deadline.
        """
        flight = self._flights.get(key)
        if flight is None:
            flight = _Flight()
            flight.task = asyncio.get_running_loop().create_task(
                self._run(key, flight, query, first)
            )
            self._flights[key] = flight
        task = flight.task
        assert task is not None
        flight.waiters += 1
        try:
            timeout = deadline - self._clock()
            if timeout > 0 and not task.done():
                await asyncio.wait((task,), timeout=timeout)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not task.done():
                task.cancel()  # nobody listens any more
                if self._flights.get(key) is flight:
                    del self._flights[key]
        if task.done() and not task.cancelled():
            return task.result()  # type: ignore[return-value]
        raise expired(flight.last_running, flight.last_error)

    async def _run(
        self,
        key: Hashable,
        flight: _Flight[T],
        query: Callable[[], Awaitable[T | Running]],
        first: float,
    ) -> T:
        try:
            delay = first
            polls = 0
            while True:
                if delay > 0:
                    await self._sleep(delay)
                start = await self.budget.acquire()
                polls += 1
                try:
                    answer = await query()
                except THROTTLES as err:  # a 429, or a limiter's 503
                    flight.last_error = err
                    if err.retry_after is not None:
                        delay = max(err.retry_after, self.policy.min_interval)
                    else:
                        slower = 2 * max(delay, self.policy.initial, self.policy.min_interval)
                        delay = min(self.policy.max_interval, slower)
                    await self.budget.throttled(start, delay)
                    continue
                except PersonaError as err:
                    if not err.retryable:
                        raise
                    flight.last_error = err
                    delay = self.policy.interval(polls)
                    continue
                if not isinstance(answer, Running):
                    return answer
                flight.last_running = answer
                delay = self.policy.interval(polls)
                if answer.retry_in is not None:
                    delay = min(
                        self.policy.max_interval, max(self.policy.min_interval, answer.retry_in)
                    )
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]

    async def aclose(self) -> None:
        """Stop every polling loop (their waits then expire or are being cancelled anyway)."""
        flights, self._flights = list(self._flights.values()), {}
        tasks = [f.task for f in flights if f.task is not None and not f.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
