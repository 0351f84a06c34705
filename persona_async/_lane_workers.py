"""A lane's workers: take the next job allowed to go, pass the rate limiter, send.

The base of ``Lane`` (``_lane``, whose docstring tells the behaviour) above ``LaneFeedback``:
``max_concurrency`` workers each loop taking a job (waiting out cooldowns and maintenance, the
one probe of a paused lane), a start from the limiter, and the journal's hook, then post it and
hand the answer to ``LaneFeedback``. This is the hot path: one request's CPU is spent here.
"""

from __future__ import annotations

import heapq
import logging

from ._decoding import interpret
from ._exceptions import PersonaError
from ._job import _Job
from ._lane_feedback import LaneFeedback
from ._limiter import SentHook, Start
from ._stats import COOLING, PAUSED, RUNNING, STOPPED
from ._transport import SessionPool, hook_sends

__all__ = ["LaneWorkers"]

logger = logging.getLogger("persona_async")


class LaneWorkers(LaneFeedback):
    """The workers of ``Lane`` (a base class)."""

    # Set up by Lane.__init__ (see there).
    _pool: SessionPool
    _in_flight: set[_Job]
    _hooks: list[SentHook]

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


def _earliest(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)
