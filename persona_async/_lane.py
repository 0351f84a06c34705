"""A provider lane: its queue, admission, retries and the provider's feedback, in one place.

Every request for a provider, from ``create_persona`` or ``create_many``, becomes a ``_Job`` in
its lane. ``max_concurrency`` workers take jobs FIFO, pass the rate limiter, send, and act on
the answer (after a failure, as ``_retry.decide`` says):

* success: the job is done; a paused or cooling lane is running again;
* 429: the rate limiter learns from it (once per congestion event: see ``_learning``) and the
  lane cools down until the window that produced it has passed, or for the Retry-After given;
  a 503 (a limiter in front of the provider: ``OverloadedError``) does the same, unless the
  provider has accepted nothing for a while: then it is down, and each 503 counts as a retry;
* 455: the lane pauses and one job probes at growing intervals; waiting jobs neither fail nor
  spin until ``max_maintenance_wait`` or their deadline;
* 401/402: the lane stops; queued jobs fail at once and nothing more is sent;
* 500 and transport failures: retried with backoff, within ``max_retries``, the lane's retry
  budget and the request's deadline, and only when resending cannot make a second persona.

A retry goes back to the queue with a not-before time: it holds no worker and no task. A job's
deadline runs from submission (see ``_deadline``): a timer fails it at its last start time
unless it is on the wire. A job whose caller went away (``abandon``) is never sent again, and
its last answer is still delivered, so that a persona made for nobody can be reported.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from types import MappingProxyType

import aiolimiter
import anyio.abc

from ._deadline import (
    Deadlines,
    cannot_start_error,
    give_up_error,
    maintenance_error,
    min_attempt_time,
)
from ._decoding import interpret
from ._exceptions import (
    AuthenticationError,
    InsufficientCreditsError,
    MaintenanceError,
    OutcomeUnknownError,
    OverloadedError,
    PersonaError,
    RateLimitError,
)
from ._job import Deliver, OnSend, OnSubmitted, _Job
from ._lanestate import LaneStatus
from ._limiter import LaneLimiter, SentHook, Start, advice
from ._models import Persona, PersonaRequest
from ._polling import Poller
from ._providers import Provider
from ._queue import WorkerPark
from ._ratelimit import SlidingWindowLimiter
from ._retry import (
    Cool,
    Pause,
    Resend,
    RetryPolicy,
    Stop,
    decide,
    maintenance_deadline,
    resend_or_fail,
)
from ._sources import SourceGate
from ._stats import COOLING, PAUSED, RUNNING, STOPPED, LaneState, LaneStats
from ._tasks import TaskFlow
from ._transport import SessionPool, hook_sends

__all__ = ["Deliver", "Lane", "LaneState", "LaneStats", "OnSend"]

logger = logging.getLogger("persona_async")


class Lane:
    """One provider's share of the client. See the module docstring for the behaviour."""

    def __init__(
        self,
        provider: Provider,
        pool: SessionPool,
        policy: RetryPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self._pool = pool
        self._policy = policy
        self._clock = clock
        # Every lane has one, limit or not: an unlimited lane learns a limit from its 429s.
        self._limiter: LaneLimiter = (
            provider.limiter.for_lane(provider)
            if provider.limiter is not None
            else SlidingWindowLimiter(
                provider.rate_limit,
                provider.rate_period,
                measure=provider.measures_window,
                clock=clock,
            )
        )
        self._advised: int | None = None  # the learned limit last told to the log
        self._deadlines = Deadlines(self._expire, clock)  # fails waiting jobs at last_start
        # A leaky bucket is the right shape for a retry budget: bursts allowed, long-run capped.
        self._retry_budget = aiolimiter.AsyncLimiter(policy.retry_budget, provider.rate_period)
        self._poller = Poller(provider.poll)  # status queries: a budget apart from creates
        self._tasks = None if provider.mode != "task" else TaskFlow(
            provider, pool, self._poller, finish=self._finish, stop=self._stop,
            clock=clock, disarm=self._deadlines.disarm,
        )  # fmt: skip
        self._sources = SourceGate.for_lane(provider, pool, self._poller)
        self._ready: deque[_Job] = deque()  # FIFO of jobs that may go now
        self._delayed: list[tuple[float, int, _Job]] = []  # heap of (not_before, seq, job)
        self._seq = 0
        self._park = WorkerPark()  # workers with nothing to do now
        self._in_flight: set[_Job] = set()
        self._workers_started = False
        self._status = LaneStatus(provider.name, policy, self._state_changed)
        self._last_success = -math.inf  # when the provider last accepted a request
        # statistics
        self._hooks: list[SentHook] = []  # the workers' send hooks: they count what left
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
        *,
        deadline: float,
        max_retries: int | None = None,
        body: bytes | None = None,
    ) -> _Job:
        """Queue a validated request; ``deliver`` is called once with its result (never for a
        job a stream abandoned before it was sent).

        ``deadline`` (seconds, ``math.inf``: none) bounds it; ``max_retries`` overrides the policy.
        ``body`` is ``request`` encoded by the lane's provider, if the caller has it already.
        """
        now = self._clock()
        ends = now + deadline
        # _Job's fields in order: request .. on_submitted, submitted, deadline, last_start, ...
        job = _Job(
            request, self.provider.encode(request) if body is None else body, deliver, tag,
            on_send, on_submitted, now, ends,
            ends - min_attempt_time(self.provider.timeout, deadline),
            self._policy.max_retries if max_retries is None else max_retries,
        )  # fmt: skip
        if (stopped := self._status.stop_error) is not None:
            self._finish(job, None, stopped.for_request(request.task_id, request.audio_id))
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

    def abandon(self, job: _Job) -> None:
        """The caller went away: never send ``job`` again. Unless an attempt is on the wire (its
        answer is delivered when it comes), deliver its last error now: a lost attempt counts."""
        job.abandon()
        self._deadlines.disarm(job)
        if not job.on_wire and not job.done:
            job.done = job.gone = True
            left = PersonaError("the caller left before the request was sent")
            job.deliver(job, None, job.last_error or left)

    def _expire(self, job: _Job) -> None:
        # Its last start time: unless on the wire (never cut), it fails with the last answer.
        if job.gone or job.on_wire:
            return
        with contextlib.suppress(ValueError):
            self._ready.remove(job)  # a delayed retry stays in its heap, skipped when due
        self._finish(job, None, self._give_up(job))

    @property
    def limiter(self) -> LaneLimiter:
        """The lane's rate limiter (a shared one's view of this lane)."""
        return self._limiter

    def why_unsent(self, job: _Job) -> PersonaError:
        """Why ``job``, still unsent, has not gone out: the error its deadline would give."""
        return self._give_up(job)

    def _cannot_start(self, job: _Job, now: float) -> PersonaError | None:
        """The error a job gets at once when the lane cannot send it before its last start.

        A cooling lane sends nothing before its cooldown ends; a paused lane nothing before its
        next probe: a request whose last start comes first would only hold its caller until
        its deadline to fail with the same answer.
        """
        status = self._status
        if status.state is COOLING:
            resumes = status.cooldown_until
            said: RateLimitError | OverloadedError | MaintenanceError | None = status.last_429
        elif status.state is PAUSED:
            resumes = status.next_probe
            said = status.last_455
        else:
            return None
        if said is None or resumes <= job.last_start:
            return None
        return cannot_start_error(said, resumes - now, job.last_start - now, self.provider.name)

    def _give_up(self, job: _Job) -> PersonaError:
        now = self._clock()
        return give_up_error(
            lane=self.provider.name,
            waited=now - job.submitted,
            last_error=job.last_error,
            last_429=self._status.last_429,
            last_455=self._status.last_455,
            cooling=self._status.cooling(now),
            paused=self._status.state is PAUSED,
            held=self._limiter.holding,
        )

    def _admit(self, job: _Job, err: PersonaError | None) -> None:
        """Queue ``job`` (its source, if waited for, is ready) or finish it with ``err``."""
        if err is not None:
            self._finish(job, None, err)
            if isinstance(err, (AuthenticationError, InsufficientCreditsError)):
                self._stop(err)  # the status query's key is the creates' key
            return
        if self._status.state is not RUNNING:
            late = self._cannot_start(job, self._clock())
            if late is not None:  # paused or cooling past its last start: it fails now
                self._finish(job, None, late)
                return
        self._ready.append(job)
        if not (self._park.idle and self._park.wake_one()) or self._status.state is not RUNNING:
            self._deadlines.arm(job)  # it will wait in the queue

    def _arm(self, job: _Job) -> None:
        """Fail ``job`` at its last start time, unless it is on the wire by then.

        Only a job that waits is armed (most go out at once): one queued behind busy workers or
        a cooling or paused lane, one about to wait for the rate limiter or a journal, a retry.
        """
        self._deadlines.arm(job)

    def stats(self) -> LaneStats:
        limit = self._limiter.limit
        return LaneStats(
            name=self.provider.name,
            kind=self.provider.kind,
            state=self._status.state,
            in_flight=len(self._in_flight),
            queued=len(self._ready) + len(self._delayed),
            sent=sum(hook.left for hook in self._hooks),
            succeeded=self._succeeded,
            failed=MappingProxyType(dict(self._failed)),
            retries=self._retries,
            throttled=self._throttled,
            effective_rate=None if limit is None else limit / self._limiter.period,
            limit=limit,
            rate_limit=self.provider.rate_limit,
            rate_period=self.provider.rate_period,
            learned_limit=self._limiter.learned,
            limit_period=self._limiter.period,
            learned_period=self._limiter.learned_period,
            held=self._limiter.holding,
        )

    async def aclose(self) -> None:
        """Release what the rate limiter holds (a shared limiter's connections)."""
        self._deadlines.close()
        await self._poller.aclose()
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
            if not job.gone:
                closed = PersonaError(
                    "the client was closed before the request was sent", provider=self.provider.name
                )
                self._finish(job, None, closed)

    # -- workers -------------------------------------------------------------------------------

    async def _worker(self) -> None:
        sent = SentHook(self._limiter)  # this worker's: told when each request leaves
        self._hooks.append(sent)  # and counts them, for stats()
        hook_sends(sent)
        ready = self._ready
        limiter = self._limiter
        while True:
            if ready and self._status.state is RUNNING and not self._delayed:
                job, probe = ready.popleft(), False  # the usual case, without a coroutine
                if job.gone:
                    continue
            else:
                job, probe = await self._take()
            start = limiter.take()  # usually a start at once
            waited = start is None and not probe
            if waited:
                self._arm(job)  # a wait for the window is coming
                try:
                    start = await limiter.acquire()
                except PersonaError as err:  # a shared limiter's store is down: fail closed
                    self._finish(job, None, err)
                    continue
                except BaseException:  # cancelled: fail_pending() answers it from the queue
                    ready.appendleft(job)
                    raise
                if job.gone or self._clock() > job.last_start:
                    # Its caller left, or its time ran out, while it waited: the start goes to
                    # the first request in line; it is never wasted on one that cannot go.
                    if not job.gone:
                        self._finish(job, None, self._give_up(job))
                    first = self._first_ready()
                    if first is None:
                        limiter.unused(start)
                        continue
                    job = first
            self._in_flight.add(job)
            try:
                await self._attempt(job, probe, sent, start, waited)
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
                    self._status.probing = False
            self._in_flight.discard(job)

    async def _take(self) -> tuple[_Job, bool]:
        """The next job allowed to go now, waiting out cooldowns and maintenance.

        The flag is True when the job is the one probe of a paused lane.
        """
        while True:
            while self._ready and self._ready[0].gone:
                self._ready.popleft()
            now = self._clock()
            self._promote_due(now)
            timeout: float | None = self._delayed[0][0] - now if self._delayed else None
            if self._status.state is STOPPED:
                self._fail_stopped()
            elif self._status.state is COOLING:
                if now >= self._status.cooldown_until:
                    self._status.set(RUNNING, "cooldown over")
                    continue
                timeout = _earliest(timeout, self._status.cooldown_until - now)
            elif self._status.state is PAUSED:
                self._expire_maintenance_waits(now)
                if self._ready and not self._status.probing and now >= self._status.next_probe:
                    self._status.probing = True
                    return self._ready.popleft(), True
                if self._ready and not self._status.probing:
                    timeout = _earliest(timeout, self._status.next_probe - now)
                if self._ready:
                    wait = self._maintenance_deadline(self._ready[0]) - now
                    timeout = _earliest(timeout, max(wait, 0.0))
            else:
                while self._ready:
                    job = self._ready.popleft()
                    if not job.gone:
                        return job, False
            await self._park.wait(timeout)

    def _promote_due(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            job = heapq.heappop(self._delayed)[2]
            if not job.gone:
                # A retry goes ahead of first attempts: it has waited already.
                self._ready.appendleft(job)

    def _requeue(self, job: _Job, not_before: float) -> None:
        self._seq += 1
        heapq.heappush(self._delayed, (not_before, self._seq, job))
        self._arm(job)
        self._park.wake_one()  # someone must set a timer for it

    # -- one attempt ---------------------------------------------------------------------------

    def _first_ready(self) -> _Job | None:
        """The first request in line, if the lane may send it now (after a wait for a start)."""
        ready = self._ready
        while ready and self._status.stop_error is None and self._status.state is RUNNING:
            job = ready.popleft()
            if job.gone:
                continue
            if self._clock() > job.last_start:  # its timer is due: it fails, unsent
                self._finish(job, None, self._give_up(job))
                continue
            return job
        return None

    async def _attempt(
        self, job: _Job, probe: bool, sent: SentHook, start: Start | None, waited: bool
    ) -> None:
        limiter = self._limiter
        if start is None:  # the one probe of a paused lane waits for its start itself
            self._arm(job)  # a wait for the window is coming
            try:
                start = await limiter.acquire()
            except PersonaError as err:  # a shared limiter's store is down: fail closed
                return self._finish(job, None, err)
            waited = True
        if waited and not self._still_to_send(job, probe):
            return limiter.unused(start)  # never sent: the next request takes the start
        if job.on_send is not None:
            on_send, job.on_send = job.on_send, None
            try:
                durable = on_send(job.request)  # e.g. the CLI's journal: "pending" is written
                if durable is not None:
                    self._arm(job)
                    await durable  # ... and on stable storage (a group commit's sync)
            except PersonaError as err:  # the hook refused: this request is not sent
                limiter.unused(start)
                return self._finish(job, None, err)
            # A job put back now keeps its spent hook: its "pending" record is written.
            if not self._still_to_send(job, probe):
                return limiter.unused(start)
        now = self._clock()
        if now > job.last_start:  # it waited in the queue past its last start time
            limiter.unused(start)
            return self._finish(job, None, self._give_up(job))
        provider = self.provider
        left = job.deadline - now  # min() is a slow builtin for two floats, per request
        timeout = left if left < provider.timeout else provider.timeout
        job.attempts += 1
        job.on_wire = True
        job.start = start
        sent.start = start
        try:
            raw = await self._pool.post(provider, job.body, timeout, sent)
            persona_id = interpret(provider, raw)
        except PersonaError as err:
            job.on_wire = False
            await self._on_error(job, err, probe)
        else:
            job.on_wire = False
            self._on_success(job, persona_id)
        finally:
            sent.start = None

    def _still_to_send(self, job: _Job, probe: bool) -> bool:
        """After a wait (the limiter's, the journal's): may ``job`` go out now?

        It may have been dropped, the lane stopped, cooled or paused meanwhile (it then waits in
        the queue with the others), or its last start time passed (it fails with the provider's
        last answer). Either way it is not sent, and the caller gives the start back.
        """
        if job.gone:
            return False
        if self._status.holds(self._clock(), probe):
            self._ready.appendleft(job)
            self._arm(job)
            self._park.wake_one()
            return False
        if self._clock() > job.last_start:
            self._finish(job, None, self._give_up(job))
            return False
        return True

    def _on_success(self, job: _Job, persona_id: str) -> None:
        self._last_success = self._clock()
        if job.start is not None:
            self._limiter.accepted(job.start)
        learned = self._limiter.learned if self._throttled else None  # only 429s teach
        if learned is not None and learned != self._advised:
            self._advised = learned
            said = advice(
                self.provider.name,
                self.provider.rate_limit,
                learned,
                self._limiter.learned_period,
            )
            logger.warning("lane %s: %s", self.provider.name, said)
        if self._status.state is PAUSED:
            self._status.set(RUNNING, "maintenance over")
        if self._tasks is not None:  # an async-task submit: the "persona id" is the task's id
            return self._tasks.submitted(job, persona_id)
        r, lane = job.request, self.provider.name  # in Persona's order, positionally
        persona = Persona(persona_id, lane, r.task_id, r.audio_id, r.name, r.description)
        self._finish(job, persona, None)

    async def _on_error(self, job: _Job, err: PersonaError, probe: bool) -> None:
        """Carry out what ``decide`` says to do about ``job``'s failed attempt."""
        now = self._clock()
        action = decide(
            err, job, self.provider, self._policy,
            now=now, last_success=self._last_success, period=self._limiter.period,
            budget_left=self._retry_budget.has_capacity(),
        )  # fmt: skip
        if isinstance(action, Cool):
            await self._throttle(job, action, now)
            not_before = max(self._status.cooldown_until, action.at)
            budget_left = not action.counts or self._retry_budget.has_capacity()
            action = resend_or_fail(
                err, job, not_before, counts=action.counts, budget_left=budget_left
            )
        if isinstance(action, Resend):
            await self._resend(job, err, action)
        elif isinstance(action, Pause):
            await self._pause(job, action, probe, now)
        elif isinstance(action, Stop):
            self._finish(job, None, action.error)
            self._stop(action.error)
        else:  # Fail; an abandoned job's answer still reaches its caller
            self._finish(job, None, action.error)

    async def _resend(self, job: _Job, err: PersonaError, action: Resend) -> None:
        if action.ambiguous:
            job.ambiguous = True  # a 409 to the resend may be this attempt's persona
        if action.counts:
            job.failures += 1
            await self._retry_budget.acquire()  # decide() saw room: no wait
        self._retries += 1
        job.last_error = err
        self._requeue(job, action.at)

    async def _pause(self, job: _Job, action: Pause, probe: bool, now: float) -> None:
        self._status.last_455 = action.error
        self._status.pause(now, probe)
        await self._limiter.hold("paused", self._status.next_probe - now)
        if job.since_maintenance is None:
            job.since_maintenance = now
        if not action.wait:
            self._finish(job, None, action.error)
        elif not job.done:
            self._retries += 1
            self._ready.appendleft(job)  # waits for the next probe, holding nothing
            self._arm(job)
            self._park.wake_one()

    # -- lane-wide feedback --------------------------------------------------------------------

    async def _throttle(self, job: _Job, action: Cool, now: float) -> None:
        self._status.last_429 = action.signal
        self._throttled += 1
        assert job.start is not None
        # The limiter learns from the 429 and says how long until the window it came from has
        # passed; a Retry-After, when given, rules instead (the limiter still paces after it).
        wait = await self._limiter.throttled(job.start)
        if action.retry_after is not None:
            wait = action.retry_after
            await self._limiter.hold("cooling", wait)
        self._status.cool(now, wait, action.said)

    def _maintenance_deadline(self, job: _Job) -> float:
        return maintenance_deadline(job, self._clock(), self._policy)

    def _expire_maintenance_waits(self, now: float) -> None:
        expired = []
        for job in self._ready:
            if job.gone:
                continue
            if job.since_maintenance is None:
                job.since_maintenance = now  # its wait for the maintenance starts now
            elif now >= self._maintenance_deadline(job):
                expired.append(job)
        wait = self._policy.max_maintenance_wait
        for job in expired:
            self._ready.remove(job)
            said = maintenance_error(self._status.last_455, wait, self.provider.name)
            self._finish(job, None, said)

    def _stop(self, err: PersonaError) -> None:
        if self._status.stop(err):
            self._fail_stopped()

    def _fail_stopped(self) -> None:
        assert self._status.stop_error is not None
        jobs = [*self._ready, *(entry[2] for entry in self._delayed)]
        self._ready.clear()
        self._delayed.clear()
        for job in jobs:
            if not job.gone:
                err = self._status.stop_error.for_request(job.request.task_id, job.request.audio_id)
                self._finish(job, None, err)

    def _state_changed(self, left: LaneState) -> None:
        """The lane's part of a change of state: the waiting jobs, the workers."""
        if left is PAUSED:
            # A later maintenance window gets a fresh allowance of waiting.
            for job in [*self._ready, *(entry[2] for entry in self._delayed)]:
                job.since_maintenance = None
        if self._status.state is not RUNNING:
            now, waiting = self._clock(), self._ready
            late = [(job, err) for job in waiting if (err := self._cannot_start(job, now))]
            if late:  # in place: each worker holds the deque itself
                failing = {job for job, _ in late}
                keep = [job for job in waiting if job not in failing]
                waiting.clear()
                waiting.extend(keep)
            for job in waiting:  # they wait now
                self._arm(job)
            for job, err in late:  # they cannot go before their last start: they fail now
                self._finish(job, None, err)
        self._park.wake_all()

    def _finish(self, job: _Job, persona: Persona | None, err: PersonaError | None) -> None:
        if job.done:
            return
        job.done = job.gone = True
        if job.armed:
            self._deadlines.disarm(job)
        if err is not None:
            err.task_id = job.request.task_id
            err.audio_id = job.request.audio_id
            err.attempts = job.attempts
            self._failed[type(err).__name__] += 1
        else:
            self._succeeded += 1
        job.deliver(job, persona, err)


def _earliest(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)
