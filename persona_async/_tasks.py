"""Async-task providers: after the submit, follow the provider's task until it ends.

A create on kie's market route or Evolink answers with a *task id*; the persona id arrives later
on the task. The lane's worker sends the submit like any create (rate limit, retries, 429
feedback) and hands the task id here; from then on the job holds no create slot and no worker:
it is polled by the lane's ``Poller`` (its own budget, so a 429 on polling slows polling only)
until the task succeeds, fails, or the request's deadline passes.

The task id is the state: ``on_submitted(request, task_id)`` tells the caller (the CLI's
journal) the moment the submit is answered, and a request that already carries a
``provider_task_id`` is never submitted again, only polled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio.abc

from ._decoding import interpret_task
from ._exceptions import LANE_STOPPERS, MalformedResponseError, PersonaError, ProviderTimeoutError
from ._models import Persona
from ._polling import Poller, Running
from ._providers import Provider
from ._providers._styles import FinishedSubmit
from ._transport import SessionPool

if TYPE_CHECKING:
    from ._job import _Job

__all__ = ["TaskFlow"]

logger = logging.getLogger("persona_async")

Finish = Callable[["_Job", "Persona | None", "PersonaError | None"], None]


class TaskFlow:
    """One lane's submitted tasks: who to tell about them, and the polling of each."""

    __slots__ = ("_clock", "_disarm", "_finish", "_poller", "_pool", "_provider", "_stop", "_tg")

    def __init__(
        self,
        provider: Provider,
        pool: SessionPool,
        poller: Poller,
        *,
        finish: Finish,
        stop: Callable[[PersonaError], None],
        clock: Callable[[], float],
        disarm: Callable[[_Job], None],
    ) -> None:
        self._provider = provider
        self._pool = pool
        self._poller = poller
        self._finish = finish  # the lane's: records the outcome and answers the caller
        self._stop = stop  # the lane's: nothing more is sent (a refused key)
        self._clock = clock
        self._disarm = disarm  # the lane's: its deadline timer lets go of a job
        self._tg: anyio.abc.TaskGroup | None = None

    def adopt(self, job: _Job, tg: anyio.abc.TaskGroup) -> bool:
        """Take a new job; True when it names a submitted task and is only to be polled."""
        self._tg = tg
        task_id = job.request.provider_task_id
        if task_id is None:
            return False
        self._polling(job)
        tg.start_soon(self._follow, job, task_id, 0.0)
        return True

    def submitted(self, job: _Job, task_id: str) -> None:
        """The submit was answered with ``task_id``: tell the caller, then poll it apart."""
        hook, job.on_submitted = job.on_submitted, None
        if isinstance(task_id, FinishedSubmit):  # the persona itself: no task to tell of or poll
            return self._finish(job, self._persona(job, str(task_id), None), None)
        if hook is not None:
            try:
                hook(job.request, task_id)
            except Exception:
                # The task exists whatever the hook thinks; losing it from view would be worse.
                logger.exception("on_submitted failed for task %s", task_id)
        assert self._tg is not None
        self._polling(job)
        # The provider's estimate, but never longer than the policy's longest gap.
        first = min(self._provider.estimated_time, self._provider.poll.max_interval)
        self._tg.start_soon(self._follow, job, task_id, first)

    def _polling(self, job: _Job) -> None:
        # The task exists: from here its deadline is the poller's, which fails it naming the
        # task id (the lane's own deadline timer would only say it was not sent). Its answer is
        # awaited as a reply is: a caller that leaves now is told of its persona as an orphan.
        self._disarm(job)
        job.on_wire = True

    async def _follow(self, job: _Job, task_id: str, first: float) -> None:
        provider = self._provider
        undocumented_since: float | None = None  # when the task began answering an odd word

        async def query() -> str | Running:
            nonlocal undocumented_since
            timeout = max(min(provider.timeout, job.deadline - self._clock()), 0.001)
            raw = await self._pool.query(provider, provider.task_url(task_id), timeout=timeout)
            answer = interpret_task(provider, raw, task_id)
            if not (isinstance(answer, Running) and answer.undocumented):
                undocumented_since = None
                return answer
            now = self._clock()
            undocumented_since = now if undocumented_since is None else undocumented_since
            if now - undocumented_since >= provider.unknown_state_patience:
                raise MalformedResponseError(
                    f"task {task_id} has answered the undocumented state {answer.status!r} for "
                    f"{now - undocumented_since:.0f} s; look it up at {provider.kind} or resume "
                    f"with provider_task_id={task_id!r}",
                    http_status=raw.status,
                    provider=provider.name,
                    provider_task_id=task_id,
                    retryable=False,
                )
            return answer

        def expired(last: Running | None, err: PersonaError | None) -> PersonaError:
            state = f"still {last.status!r}" if last else "not answered"
            said = f"; last status query: {err.message}" if err is not None else ""
            return ProviderTimeoutError(
                f"task {task_id} {state} at the request's deadline{said}; look it up at "
                f"{provider.kind} or resume with provider_task_id={task_id!r}",
                sent=True,
                retryable=False,
                provider=provider.name,
                http_status=err.http_status if err is not None else None,
            )

        try:
            persona_id = await self._poller.wait(
                (provider.name, task_id), query, deadline=job.deadline, expired=expired, first=first
            )
        except PersonaError as exc:
            # The poller hands every waiter of one task the same object: answer with a copy.
            err = exc.for_request(job.request.task_id, job.request.audio_id)
            err.provider_task_id = task_id
            self._finish(job, None, err)
            if isinstance(exc, LANE_STOPPERS):
                self._stop(exc)  # the status query's key is the creates' key
            return
        except BaseException:
            self._finish(
                job,
                None,
                PersonaError(
                    f"the client was closed while task {task_id} was being polled; resume "
                    f"with provider_task_id={task_id!r}",
                    provider=provider.name,
                    provider_task_id=task_id,
                ),
            )
            raise
        self._finish(job, self._persona(job, persona_id, task_id), None)

    def _persona(self, job: _Job, persona_id: str, task_id: str | None) -> Persona:
        request = job.request
        return Persona(
            persona_id=persona_id,
            provider=self._provider.name,
            task_id=request.task_id,
            audio_id=request.audio_id,
            name=request.name,
            description=request.description,
            provider_task_id=task_id,
        )
