"""What a lane does with the provider's answers, and how a job ends.

The base of ``Lane`` (``_lane``, whose docstring tells the behaviour): the checks a waiting job
meets (can it still start, the error when it cannot), carrying out ``_retry.decide``'s action
for a failed attempt (resend, cool, pause, stop, fail), the lane-wide states that follow, and
``_finish``, the one place a job's result is delivered. ``Lane.__init__`` sets up the state
declared here.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter, deque
from collections.abc import Callable

import aiolimiter

from ._deadline import (
    Deadlines,
    cannot_start_error,
    give_up_error,
    held_elsewhere_error,
    maintenance_error,
)
from ._exceptions import MaintenanceError, OverloadedError, PersonaError, RateLimitError
from ._job import _Job
from ._lanestate import LaneStatus
from ._limiter import Hold, LaneLimiter, advice
from ._models import Persona
from ._providers import Provider
from ._queue import WorkerPark
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
from ._stats import COOLING, PAUSED, RUNNING, LaneState
from ._tasks import TaskFlow

__all__ = ["LaneFeedback"]

logger = logging.getLogger("persona_async")


class LaneFeedback:
    """The provider's answers and the end of a job, for ``Lane`` (a base class)."""

    # Set up by Lane.__init__ (see there).
    provider: Provider
    _policy: RetryPolicy
    _clock: Callable[[], float]
    _limiter: LaneLimiter
    _advised: int | None
    _deadlines: Deadlines
    _retry_budget: aiolimiter.AsyncLimiter
    _tasks: TaskFlow | None
    _ready: deque[_Job]
    _delayed: list[tuple[float, int, _Job]]
    _seq: int
    _park: WorkerPark
    _status: LaneStatus
    _last_success: float
    _succeeded: int
    _failed: Counter[str]
    _retries: int
    _throttled: int

    # -- admission checks ----------------------------------------------------------------------

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

    def _held_elsewhere(self, held: Hold, seconds: float) -> None:
        """A process sharing the lane's limiter saw a 429 or a 455: every start waits
        ``seconds``. A waiting request whose last start comes first fails now, unsent, with the
        error a lane that saw the answer itself gives; the others wait it out."""
        now = self._clock()
        for job in self._deadlines.armed_before(now + seconds):
            if not job.done:
                left = job.last_start - now
                err = held_elsewhere_error(held, seconds, left, self.provider.name)
                self._finish(job, None, err)

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

    def _arm(self, job: _Job) -> None:
        """Fail ``job`` at its last start time, unless it is on the wire by then.

        Only a job that waits is armed (most go out at once): one queued behind busy workers or
        a cooling or paused lane, one about to wait for the rate limiter or a journal, a retry.
        """
        self._deadlines.arm(job)

    # -- an attempt's answer -------------------------------------------------------------------

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

    def _requeue(self, job: _Job, not_before: float) -> None:
        self._seq += 1
        heapq.heappush(self._delayed, (not_before, self._seq, job))
        self._arm(job)
        self._park.wake_one()  # someone must set a timer for it

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
