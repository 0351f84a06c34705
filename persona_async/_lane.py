"""A provider lane: its queue, admission, retries and the provider's feedback, in one place.

Every request for a provider, from ``create_persona`` or ``create_many``, becomes a ``_Job`` in
its lane. ``max_concurrency`` workers take jobs FIFO, pass the rate limiter, send, and decide:

* success: the job is done; a paused or cooling lane is running again;
* 429: the whole lane cools down (Retry-After when given, else backoff) and its rate is cut;
* 455: the lane pauses and one job probes at growing intervals; waiting jobs neither fail nor
  spin until ``max_maintenance_wait``;
* 401/402: the lane stops; queued jobs fail at once and nothing more is sent;
* 500 and transport failures: retried with backoff, within ``max_retries``, the lane's retry
  budget and the request's deadline, and only when resending cannot make a second persona.

A retry goes back to the queue with a not-before time: it holds no worker and no task.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import heapq
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import aiolimiter
import anyio.abc

from ._decoding import interpret
from ._exceptions import (
    AuthenticationError,
    InsufficientCreditsError,
    MaintenanceError,
    OutcomeUnknownError,
    PersonaError,
    PersonaExistsError,
    ProviderTimeoutError,
    RateLimitError,
    SourceNotReadyError,
    _MaybeSent,
)
from ._models import Persona, PersonaRequest
from ._polling import Poller
from ._providers import Provider
from ._ratelimit import LaneLimiter, SlidingWindowLimiter
from ._retry import RetryPolicy
from ._sources import SourceGate
from ._tasks import OnSubmitted, TaskFlow
from ._transport import SessionPool

__all__ = ["DEFAULT_RETRY_BUDGET", "Lane", "LaneState", "LaneStats"]

logger = logging.getLogger("persona_async")

#: Retries of failed requests (500s, transport errors) a lane may send per rate period, on top
#: of first attempts: an outage must not multiply the load on a provider.
DEFAULT_RETRY_BUDGET = 10

Deliver = Callable[["_Job", "Persona | None", "PersonaError | None"], None]
OnSend = Callable[[PersonaRequest], "Awaitable[None] | None"]


class LaneState(str, enum.Enum):
    RUNNING = "running"
    COOLING = "cooling"  # after a 429, until the cooldown ends
    PAUSED = "paused"  # provider in maintenance (455); one probe at a time
    STOPPED = "stopped"  # 401/402: nothing more is sent


@dataclass(frozen=True, slots=True)
class LaneStats:
    """A snapshot of one lane; ``failed`` counts final failures by error class name."""

    name: str
    kind: str
    state: LaneState
    in_flight: int
    queued: int
    sent: int
    succeeded: int
    failed: Mapping[str, int]
    retries: int
    throttled: int
    effective_rate: float | None


class _Job:
    __slots__ = (
        "abandoned",
        "ambiguous",
        "attempts",
        "body",
        "deadline",
        "deliver",
        "failures",
        "last_error",
        "on_send",
        "on_submitted",
        "on_wire",
        "request",
        "since_maintenance",
        "tag",
    )

    def __init__(
        self,
        request: PersonaRequest,
        body: bytes,
        deliver: Deliver,
        tag: object,
        on_send: OnSend | None = None,
        on_submitted: OnSubmitted | None = None,
    ) -> None:
        self.request = request
        self.on_send = on_send  # called once, right before the first attempt goes out
        self.on_submitted = on_submitted  # async-task providers: called with the task id
        self.last_error: PersonaError | None = None  # why the job is waiting to be retried
        self.body = body  # encoded once, resent as is
        self.deliver = deliver
        self.tag = tag  # the caller's bookkeeping (create_many's sequence number)
        self.attempts = 0  # requests actually sent
        self.failures = 0  # retried failures that count against max_retries
        self.deadline = 0.0  # set at the first attempt
        self.ambiguous = False  # an earlier attempt was sent and lost: it may have succeeded
        self.abandoned = False  # the caller went away: never send it again
        self.on_wire = False  # an attempt is between the POST and its answer
        self.since_maintenance: float | None = None  # when this job first met a 455


class Lane:
    """One provider's share of the client. See the module docstring for the behaviour."""

    def __init__(
        self,
        provider: Provider,
        pool: SessionPool,
        policy: RetryPolicy,
        *,
        retry_budget: int = DEFAULT_RETRY_BUDGET,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self._pool = pool
        self._policy = policy
        self._clock = clock
        self._limiter: LaneLimiter | None = None
        if provider.limiter is not None:
            self._limiter = provider.limiter.for_lane(provider)
        elif provider.rate_limit:
            self._limiter = SlidingWindowLimiter(
                provider.rate_limit, provider.rate_period, clock=clock
            )
        # A leaky bucket is the right shape for a retry budget: bursts allowed, long-run capped.
        self._retry_budget = aiolimiter.AsyncLimiter(retry_budget, provider.rate_period)
        self._poller = Poller(provider.poll)  # status queries: a budget apart from creates
        self._tasks = None if provider.mode != "task" else TaskFlow(
            provider, pool, self._poller, finish=self._finish, stop=self._stop,
            deadline=policy.deadline, clock=clock,
        )  # fmt: skip
        reserve = self._min_attempt_time()
        self._sources = SourceGate.for_lane(provider, pool, self._poller, policy.deadline, reserve)
        self._ready: deque[_Job] = deque()  # FIFO of jobs that may go now
        self._delayed: list[tuple[float, int, _Job]] = []  # heap of (not_before, seq, job)
        self._seq = 0
        self._idle: deque[asyncio.Future[None]] = deque()  # parked workers, FIFO
        self._in_flight: set[_Job] = set()
        self._workers_started = False
        self.state = LaneState.RUNNING
        self._cooldown_until = 0.0
        self._consecutive_429 = 0
        self._next_probe = 0.0
        self._probe_interval = 0.0
        self._probing = False
        self._stop_error: PersonaError | None = None
        self._last_455: MaintenanceError | None = None  # what the provider last said in a 455
        # statistics
        self._sent = 0
        self._succeeded = 0
        self._failed: Counter[str] = Counter()
        self._retries = 0
        self._throttled = 0

    # -- entry ---------------------------------------------------------------------------------

    def submit(
        self,
        request: PersonaRequest,
        deliver: Deliver,
        tg: anyio.abc.TaskGroup,
        tag: object = None,
        on_send: OnSend | None = None,
        on_submitted: OnSubmitted | None = None,
    ) -> _Job:
        """Queue a validated request; ``deliver`` is called exactly once with its result."""
        job = _Job(request, self.provider.encode(request), deliver, tag, on_send, on_submitted)
        if self._stop_error is not None:
            self._finish(job, None, self._stop_error.for_request(request.task_id, request.audio_id))
            return job
        if self._tasks is not None and self._tasks.adopt(job, tg):
            return job  # a task submitted by an earlier run: polled, never submitted again
        if not self._workers_started:
            self._workers_started = True
            for _ in range(self.provider.max_concurrency):
                tg.start_soon(self._worker)
        if self._sources is not None:  # wait for the source song first, in the job's own task
            tg.start_soon(self._sources.hold, job, self._admit)
        else:
            self._admit(job, None)
        return job

    def _admit(self, job: _Job, err: PersonaError | None) -> None:
        if err is not None:
            self._finish(job, None, err)
            if isinstance(err, (AuthenticationError, InsufficientCreditsError)):
                self._stop(err)  # the status query's key is the creates' key
        else:
            self._ready.append(job)
            self._wake_one()

    def stats(self) -> LaneStats:
        return LaneStats(
            name=self.provider.name,
            kind=self.provider.kind,
            state=self.state,
            in_flight=len(self._in_flight),
            queued=len(self._ready) + len(self._delayed),
            sent=self._sent,
            succeeded=self._succeeded,
            failed=MappingProxyType(dict(self._failed)),
            retries=self._retries,
            throttled=self._throttled,
            effective_rate=self._limiter.effective_rate if self._limiter else None,
        )

    async def aclose(self) -> None:
        """Release what the rate limiter holds (a shared limiter's connections)."""
        await self._poller.aclose()
        if self._limiter is not None:
            await self._limiter.aclose()

    def fail_pending(self) -> None:
        """Fail every job not yet finished: the client is closing and its workers are gone."""
        waiting = [*self._ready, *(entry[2] for entry in self._delayed)]
        in_flight = list(self._in_flight)
        self._ready.clear()
        self._delayed.clear()
        self._in_flight.clear()
        for job in in_flight:
            unknown = OutcomeUnknownError(
                "the client was closed while the request was in flight; a persona may exist",
                request=job.request,
                provider=self.provider.name,
            )
            self._finish(job, None, unknown)
        for job in waiting:
            if not job.abandoned:
                closed = PersonaError(
                    "the client was closed before the request was sent", provider=self.provider.name
                )
                self._finish(job, None, closed)

    # -- workers -------------------------------------------------------------------------------

    async def _worker(self) -> None:
        while True:
            job, probe = await self._take()
            self._in_flight.add(job)
            try:
                await self._attempt(job, probe)
            except Exception as exc:
                # A bug must cost one request, not the lane: the other jobs go on.
                logger.exception("lane %s: unexpected error", self.provider.name)
                self._finish(job, None, PersonaError(f"internal error: {exc!r}"))
            except BaseException:
                # Cancelled: the client is closing and fail_pending() must still answer this
                # job's caller. Sent, it stays in flight (outcome unknown); else it is queued.
                if not job.on_wire:
                    self._in_flight.discard(job)
                    self._ready.appendleft(job)
                raise
            finally:
                if probe:
                    self._probing = False
            self._in_flight.discard(job)

    async def _take(self) -> tuple[_Job, bool]:
        """The next job allowed to go now, waiting out cooldowns and maintenance.

        The flag is True when the job is the one probe of a paused lane.
        """
        while True:
            now = self._clock()
            self._promote_due(now)
            timeout: float | None = self._delayed[0][0] - now if self._delayed else None
            if self.state is LaneState.STOPPED:
                self._fail_stopped()
            elif self.state is LaneState.COOLING:
                if now >= self._cooldown_until:
                    self._set_state(LaneState.RUNNING, "cooldown over")
                    continue
                timeout = _earliest(timeout, self._cooldown_until - now)
            elif self.state is LaneState.PAUSED:
                self._expire_maintenance_waits(now)
                if self._ready and not self._probing and now >= self._next_probe:
                    self._probing = True
                    return self._ready.popleft(), True
                if self._ready and not self._probing:
                    timeout = _earliest(timeout, self._next_probe - now)
                if self._ready:
                    wait = self._maintenance_deadline(self._ready[0]) - now
                    timeout = _earliest(timeout, max(wait, 0.0))
            else:
                while self._ready:
                    job = self._ready.popleft()
                    if not job.abandoned:
                        return job, False
            await self._park(timeout)

    async def _park(self, wake_in: float | None) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._idle.append(waiter)
        timer = loop.call_later(wake_in, _resolve, waiter) if wake_in is not None else None
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            if waiter in self._idle:  # timed out or cancelled while parked: leave the line
                self._idle.remove(waiter)

    def _wake_one(self) -> None:
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _wake_all(self) -> None:
        idle, self._idle = self._idle, deque()
        for waiter in idle:
            _resolve(waiter)

    def _promote_due(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            job = heapq.heappop(self._delayed)[2]
            if not job.abandoned:
                # A retry goes ahead of first attempts: it has waited already.
                self._ready.appendleft(job)

    def _requeue(self, job: _Job, not_before: float) -> None:
        self._seq += 1
        heapq.heappush(self._delayed, (not_before, self._seq, job))
        self._wake_one()  # someone must set a timer for it

    # -- one attempt ---------------------------------------------------------------------------

    async def _attempt(self, job: _Job, probe: bool) -> None:
        provider = self.provider
        stamp = None
        if self._limiter is not None:
            try:
                stamp = await self._limiter.acquire()
            except PersonaError as err:  # a shared limiter's store is down: fail closed
                self._finish(job, None, err)
                return
        if job.abandoned or self._stop_error is not None:
            if not job.abandoned:
                self._ready.appendleft(job)
                self._wake_one()
            return
        if (self.state is LaneState.PAUSED and not probe) or (
            self.state is LaneState.COOLING and self._clock() < self._cooldown_until
        ):
            # A 429 or 455 came back while this job waited for the limiter: it waits in the
            # queue with the others (the limiter slot is lost; the window stays safe).
            self._ready.appendleft(job)
            self._wake_one()
            return
        now = self._clock()
        if not job.deadline:
            # The deadline runs from the first attempt (queueing is not the network's time)
            # and restarts after a maintenance wait.
            job.deadline = now + self._policy.deadline
        timeout = min(provider.timeout, job.deadline - now)
        if timeout < self._min_attempt_time():
            # The retry came due too late: report what the provider last said.
            self._finish(
                job,
                None,
                job.last_error
                or ProviderTimeoutError(
                    "the request's deadline passed before it could be sent",
                    sent=False,
                    retryable=False,
                    provider=provider.name,
                ),
            )
            return
        if job.on_send is not None:
            on_send, job.on_send = job.on_send, None
            try:
                durable = on_send(job.request)  # e.g. the CLI's journal: "pending" is written
                if durable is not None:
                    await durable  # ... and on stable storage (a group commit's sync)
            except PersonaError as err:  # the hook refused: this request is not sent
                self._finish(job, None, err)
                return
            # While the hook waited, the job may have been dropped, the lane stopped, cooled
            # or paused, or the deadline passed: the same checks as after the limiter's wait.
            # A job put back keeps its spent hook: its "pending" record is already written.
            if job.abandoned or self._stop_error is not None or (
                (self.state is LaneState.PAUSED and not probe)
                or (self.state is LaneState.COOLING and self._clock() < self._cooldown_until)
            ):
                if not job.abandoned:
                    self._ready.appendleft(job)
                    self._wake_one()
                return
            timeout = min(provider.timeout, job.deadline - self._clock())
            if timeout < self._min_attempt_time():
                self._finish(job, None, ProviderTimeoutError(
                    "the request's deadline passed before it could be sent",
                    sent=False, retryable=False, provider=provider.name,
                ))  # fmt: skip
                return
        job.attempts += 1
        self._sent += 1
        job.on_wire = True
        on_sent = None if self._limiter is None else functools.partial(self._limiter.sent, stamp)
        try:
            raw = await self._pool.post(provider, job.body, timeout, on_sent)
            persona_id = interpret(provider, raw)
        except PersonaError as err:
            job.on_wire = False
            await self._on_error(job, err, probe)
        else:
            job.on_wire = False
            self._on_success(job, persona_id)

    def _on_success(self, job: _Job, persona_id: str) -> None:
        self._consecutive_429 = 0
        if self._limiter is not None:
            self._limiter.succeeded()
        if self.state is LaneState.PAUSED:
            self._set_state(LaneState.RUNNING, "maintenance over")
        if self._tasks is not None:  # an async-task submit: the "persona id" is the task's id
            return self._tasks.submitted(job, persona_id)
        request = job.request
        persona = Persona(
            persona_id=persona_id,
            provider=self.provider.name,
            task_id=request.task_id,
            audio_id=request.audio_id,
            name=request.name,
            description=request.description,
        )
        self._finish(job, persona, None)

    async def _on_error(self, job: _Job, err: PersonaError, probe: bool) -> None:
        now = self._clock()
        if isinstance(err, RateLimitError):
            self._throttle(err, now)
            if self._limiter is not None:
                await self._limiter.hold("cooling", self._cooldown_until - now)
            await self._retry_or_fail(job, err, max(self._cooldown_until, now), counts=False)
        elif isinstance(err, MaintenanceError):
            self._last_455 = err
            self._pause(now, probe)
            if self._limiter is not None:
                await self._limiter.hold("paused", self._next_probe - now)
            if job.since_maintenance is None:
                job.since_maintenance = now
            if now - job.since_maintenance >= self._policy.max_maintenance_wait:
                self._finish(job, None, err)
            else:
                self._retries += 1
                job.deadline = 0.0
                self._ready.appendleft(job)  # waits for the next probe, holding nothing
                self._wake_one()
        elif isinstance(err, (AuthenticationError, InsufficientCreditsError)):
            self._finish(job, None, err)
            self._stop(err)
        elif isinstance(err, PersonaExistsError) and job.ambiguous:
            self._finish(job, None, _exists_after_ambiguous(err))
        elif isinstance(err, _MaybeSent):
            await self._transport_failure(job, err, now)
        elif err.retryable and not isinstance(err, SourceNotReadyError):  # songs take minutes
            await self._retry_or_fail(job, err, now + self._policy.backoff(job.failures + 1))
        else:
            self._finish(job, None, err)

    async def _transport_failure(self, job: _Job, err: _MaybeSent, now: float) -> None:
        if err.sent:
            job.ambiguous = True
            if err.retryable and not (
                self.provider.detects_duplicates or self.provider.retry_ambiguous
            ):
                unknown = OutcomeUnknownError(
                    f"the request was sent and then lost ({err.message}); a persona may or may "
                    f"not exist. {self.provider.kind} documents no duplicate detection, so it "
                    "was not resent: check the provider's dashboard for this audio id, then "
                    "resend it or set retry_ambiguous=True",
                    request=job.request,
                    provider=self.provider.name,
                    http_status=err.http_status,
                )
                unknown.__cause__ = err
                self._finish(job, None, unknown)
                return
        if err.retryable:
            await self._retry_or_fail(job, err, now + self._policy.backoff(job.failures + 1))
        else:
            self._finish(job, None, err)

    async def _retry_or_fail(
        self, job: _Job, err: PersonaError, not_before: float, *, counts: bool = True
    ) -> None:
        if counts:
            job.failures += 1
            allowed = job.failures <= self._policy.max_retries and self._retry_budget.has_capacity()
        else:
            allowed = True
        if not allowed or job.deadline - not_before < self._min_attempt_time():
            self._finish(job, None, err)
            return
        if counts:
            await self._retry_budget.acquire()  # has_capacity() said yes: no wait
        self._retries += 1
        job.last_error = err
        self._requeue(job, not_before)

    def _min_attempt_time(self) -> float:
        # A retry squeezed in just before the deadline would time out after the provider got
        # it, creating the very ambiguity retries must avoid: give it a fair chance or none.
        return min(self.provider.timeout, self._policy.deadline) / 4

    # -- lane-wide feedback --------------------------------------------------------------------

    def _throttle(self, err: RateLimitError, now: float) -> None:
        self._throttled += 1
        self._consecutive_429 += 1
        if self._limiter is not None:
            self._limiter.throttled()
        if err.retry_after is not None:
            wait = min(err.retry_after, self._policy.retry_after_max)
        else:
            wait = self._policy.backoff(self._consecutive_429)
            wait = max(wait, self._policy.backoff_initial)
        until = now + wait
        if until > self._cooldown_until:
            self._cooldown_until = until
        if self.state is LaneState.RUNNING:
            self._set_state(LaneState.COOLING, f"429 from provider, cooling {wait:.2f}s")

    def _pause(self, now: float, probe: bool) -> None:
        if self.state is not LaneState.PAUSED:
            self._probe_interval = max(self._policy.backoff_initial, 1e-3)
            self._next_probe = now + self._probe_interval
            self._set_state(LaneState.PAUSED, "455 maintenance, probing")
        elif probe:
            self._probe_interval = min(self._probe_interval * 2, self._policy.backoff_max)
            self._next_probe = now + self._probe_interval

    def _maintenance_deadline(self, job: _Job) -> float:
        since = job.since_maintenance if job.since_maintenance is not None else self._clock()
        return since + self._policy.max_maintenance_wait

    def _expire_maintenance_waits(self, now: float) -> None:
        expired = []
        for job in self._ready:
            if job.since_maintenance is None:
                job.since_maintenance = now  # its wait for the maintenance starts now
            elif now >= self._maintenance_deadline(job):
                expired.append(job)
        said = self._last_455
        for job in expired:
            self._ready.remove(job)
            self._finish(
                job,
                None,
                MaintenanceError(
                    (f"{said.message}; " if said else "") + f"provider still in maintenance after "
                    f"{self._policy.max_maintenance_wait:g}s",
                    # The provider's own code and status, as for any other error.
                    code=said.code if said else None,
                    http_status=said.http_status if said else None,
                    provider=self.provider.name,
                ),
            )

    def _stop(self, err: PersonaError) -> None:
        if self._stop_error is None:
            self._stop_error = err
            self._set_state(LaneState.STOPPED, f"{type(err).__name__}, nothing more is sent")
            self._fail_stopped()

    def _fail_stopped(self) -> None:
        assert self._stop_error is not None
        jobs = [*self._ready, *(entry[2] for entry in self._delayed)]
        self._ready.clear()
        self._delayed.clear()
        for job in jobs:
            if not job.abandoned:
                err = self._stop_error.for_request(job.request.task_id, job.request.audio_id)
                self._finish(job, None, err)

    def _set_state(self, state: LaneState, why: str) -> None:
        if state is not self.state:
            if self.state is LaneState.PAUSED:
                # A later maintenance window gets a fresh allowance of waiting.
                for job in [*self._ready, *(entry[2] for entry in self._delayed)]:
                    job.since_maintenance = None
            self.state = state
            logger.log(
                logging.WARNING if state is not LaneState.RUNNING else logging.INFO,
                "lane %s %s: %s",
                self.provider.name,
                state.value,
                why,
            )
            self._wake_all()

    def _finish(self, job: _Job, persona: Persona | None, err: PersonaError | None) -> None:
        if err is not None:
            err.task_id = job.request.task_id
            err.audio_id = job.request.audio_id
            err.attempts = job.attempts
            self._failed[type(err).__name__] += 1
        else:
            self._succeeded += 1
        job.deliver(job, persona, err)


def _exists_after_ambiguous(err: PersonaExistsError) -> PersonaExistsError:
    return PersonaExistsError(
        f"{err.message}; an earlier attempt of this request was sent and lost, "
        "so that attempt may have created this persona",
        after_ambiguous_attempt=True,
        code=err.code,
        http_status=err.http_status,
        provider=err.provider,
    )


def _earliest(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
