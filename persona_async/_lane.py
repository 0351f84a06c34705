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

``Lane`` keeps the entry points (submit, abandon, stats, close); its workers are in
``_lane_workers``, and what it does with the provider's answers in ``_lane_feedback``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from types import MappingProxyType

import aiolimiter
import anyio.abc

from ._deadline import Deadlines, min_attempt_time
from ._exceptions import (
    AuthenticationError,
    InsufficientCreditsError,
    OutcomeUnknownError,
    PersonaError,
)
from ._job import Deliver, OnSend, OnSubmitted, _Job
from ._lane_workers import LaneWorkers
from ._lanestate import LaneStatus
from ._limiter import LaneLimiter, SentHook
from ._models import PersonaRequest
from ._polling import Poller
from ._providers import Provider
from ._queue import WorkerPark
from ._ratelimit import SlidingWindowLimiter
from ._retry import RetryPolicy
from ._sources import SourceGate
from ._stats import RUNNING, LaneState, LaneStats
from ._tasks import TaskFlow
from ._transport import SessionPool

__all__ = ["Deliver", "Lane", "LaneState", "LaneStats", "OnSend"]


class Lane(LaneWorkers):
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
        self._limiter.watch_holds(self._held_elsewhere)
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
