"""Source songs: is the music task behind a request finished, and does it hold the clip?

Every provider refuses a persona for a song that is still generating (the sunoapi.org family
"will return a failure"; crun answers 422). With ``wait_for_source=`` a lane asks the provider's
status endpoint first, for each request's ``task_id``, before the first create:

* still running: wait, polling through the lane's ``Poller`` (its own budget, a growing
  schedule, one loop per task however many requests share it), up to ``wait_for_source`` seconds
  and within the request's deadline, then ``SourceNotReadyError`` (retryable);
* failed: ``SourceFailedError`` with the provider's code and message, nothing created;
* finished: the request's ``audio_id`` must be one of the task's clips and its ``vocal_end`` at
  most that clip's duration (when the reply gives them), else ``InvalidRequestError`` naming the
  field; only then is the request queued for its create.

Only the terminal success state counts (the family's ``SUCCESS``, not ``FIRST_SUCCESS``). A
finished task (done or failed) is remembered for the lane's life, so a batch of requests for one
song costs one status query once it is done.

A provider states how to ask in ``Provider.source_status``, a ``StatusRoute`` in its own module
(the URL, an optional POST body, and a pure decoder to a ``TaskInfo``); here the reply becomes
that ``TaskInfo`` or the typed error it means.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn

import msgspec

from ._exceptions import (
    InvalidRequestError,
    MalformedResponseError,
    OverloadedError,
    PersonaError,
    RateLimitError,
    SourceFailedError,
    SourceNotReadyError,
)
from ._models import PersonaRequest
from ._polling import Poller, Running
from ._providers import Provider
from ._providers._status import Refusal, TaskInfo, TaskState
from ._retry import parse_retry_after
from ._transport import RawResponse, SessionPool, excerpt

if TYPE_CHECKING:
    from ._job import _Job

__all__ = [
    "SourceGate",
    "SourceInfo",
    "SourceState",
    "lookup",
    "read_status",
    "verdict",
]

logger = logging.getLogger("persona_async")

#: A source song is a music task: the providers' task vocabulary, under the names the lane uses.
SourceInfo = TaskInfo
SourceState = TaskState


def read_status(provider: Provider, raw: RawResponse) -> SourceInfo:
    """The status reply as a ``SourceInfo``, or the ``PersonaError`` it means (a 429 page
    still slows polls; a gateway page is a missed poll)."""
    assert provider.source_status is not None
    try:
        info = provider.source_status.decode(raw.status, raw.body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        if raw.status == 429:
            raise RateLimitError(
                "HTTP 429 Too Many Requests",
                http_status=429,
                provider=provider.name,
                retry_after=parse_retry_after(raw.retry_after),
            ) from exc
        raise MalformedResponseError(
            f"HTTP {raw.status}: status reply is not the {provider.kind} envelope ({exc})",
            http_status=raw.status,
            provider=provider.name,
            excerpt=excerpt(provider, raw.body),
            retryable=raw.status >= 500,
        ) from exc
    if isinstance(info, Refusal):
        _raise_for_code(provider, raw, info.code, info.message)
    if info.message:
        return dataclasses.replace(info, message=provider.redact(info.message))
    return info


def _raise_for_code(
    provider: Provider, raw: RawResponse, code: int | str, message: str
) -> NoReturn:
    """Raise what a refused status query means, through the provider's one code table.

    ``code`` is an envelope's number, or a string code (AceData's ``used_up``, ...) looked up
    in the provider's table; the error then carries the HTTP status as its number.
    """
    cls = provider.errors.get(provider.classify(code, message), PersonaError)
    text = "status query: " + (provider.redact(message) or f"provider answered code {code}")
    number = code if isinstance(code, int) else raw.status
    if cls is RateLimitError or cls is OverloadedError:  # "not now", and maybe until when
        raise cls(
            text,
            code=number,
            http_status=raw.status,
            provider=provider.name,
            retry_after=parse_retry_after(raw.retry_after),
        )
    raise cls(text, code=number, http_status=raw.status, provider=provider.name)


# -- the lane's side ---------------------------------------------------------------------------


async def lookup(provider: Provider, pool: SessionPool, task_id: str) -> SourceInfo:
    """One status query for ``task_id``; raises the ``PersonaError`` the reply means."""
    route = provider.source_status
    if route is None:
        raise ValueError(f"{type(provider).__name__} has no status endpoint")
    url = route.url(provider.base_url, task_id)
    raw = await pool.query(provider, url, body=route.body(task_id), timeout=provider.timeout)
    return read_status(provider, raw)


def verdict(request: PersonaRequest, info: SourceInfo, provider: str) -> PersonaError | None:
    """The error a finished task means for ``request``, or None when its create may go."""
    task_id = request.task_id
    if info.state is SourceState.FAILED:
        said = f": {info.message}" if info.message else ""
        return SourceFailedError(
            f"the source song's music task failed ({info.status}{said}); no persona can be "
            "made from it",
            status=info.status,
            code=info.code if isinstance(info.code, int) else None,
            provider=provider,
            attempts=0,
        )
    if info.clips is None:
        return None
    if request.audio_id not in info.clips:
        known = ", ".join(sorted(info.clips)[:5])
        return InvalidRequestError(
            f"audio_id is not one of the clips of task {task_id!r} (it has: {known})",
            field="audio_id",
            provider=provider,
            attempts=0,
        )
    duration = info.clips[request.audio_id]
    end = request.vocal_end
    if duration is not None and end is not None and end > duration:
        return InvalidRequestError(
            f"vocal_end must be at most the clip's duration ({duration:g} s), got {end:g}",
            field="vocal_end",
            provider=provider,
            attempts=0,
        )
    return None


@dataclass(slots=True)
class SourceGate:
    """One lane's source checks: the status lookups, the cache of finished tasks, the waits.

    Created by the lane when its provider has ``wait_for_source``; ``hold`` runs in the job's
    own task (never in a worker, never holding a create slot) and hands the job back through
    ``admit`` with None (create it) or the error it ends with.
    """

    provider: Provider
    pool: SessionPool
    poller: Poller
    wait: float  # wait_for_source
    clock: Callable[[], float] = time.monotonic
    #: Finished (READY or FAILED) tasks by task id, for the lane's life.
    finished: dict[str, SourceInfo] = field(default_factory=dict)

    @classmethod
    def for_lane(cls, provider: Provider, pool: SessionPool, poller: Poller) -> SourceGate | None:
        """The lane's gate, or None when its provider does not wait for sources."""
        if provider.wait_for_source is None or provider.source_status is None:
            return None
        return cls(provider, pool, poller, provider.wait_for_source)

    async def lookup(self, task_id: str) -> SourceInfo:
        return await lookup(self.provider, self.pool, task_id)

    async def settled(self, task_id: str, until: float) -> SourceInfo:
        """The task once it has finished (READY or FAILED); ``SourceNotReadyError`` at ``until``."""
        info = self.finished.get(task_id)
        if info is not None:
            return info

        async def query() -> SourceInfo | Running:
            found = await self.lookup(task_id)
            if found.state in (SourceState.READY, SourceState.FAILED):
                return found
            return Running(found.status)

        started = self.clock()

        def expired(last: Running | None, err: PersonaError | None) -> PersonaError:
            waited = max(0.0, self.clock() - started)
            state = f"still {last.status}" if last else "not known to be finished"
            why = f"; the last status query failed: {err.message}" if err else ""
            return SourceNotReadyError(
                f"the source song (task {task_id!r}) is {state} after waiting {waited:.0f} s "
                f"for it{why}",
                provider=self.provider.name,
                attempts=0,
            )

        info = await self.poller.wait(("source", task_id), query, deadline=until, expired=expired)
        self.finished[task_id] = info
        return info

    async def ready(self, request: PersonaRequest, until: float) -> None:
        """Return when ``request`` may be created; raise the error it ends with otherwise."""
        try:
            info = await self.settled(request.task_id, until)
        except PersonaError as err:
            # A failure from a shared loop reaches every request of the task: one copy each.
            raise err.for_request(request.task_id, request.audio_id) from err.__cause__
        refused = verdict(request, info, self.provider.name)
        if refused is not None:
            raise refused

    async def hold(self, job: _Job, admit: Callable[[_Job, PersonaError | None], None]) -> None:
        """Wait for ``job``'s source inside its deadline, then ``admit`` it (or its error)."""
        # Waiting for the song is part of the request's time: a create must still fit after it.
        until = min(self.clock() + self.wait, job.last_start)
        try:
            await self.ready(job.request, until)
        except PersonaError as err:
            admit(job, err)
        except Exception as exc:  # a bug must cost one request, not the lane
            logger.exception("lane %s: unexpected error checking a source", self.provider.name)
            admit(job, PersonaError(f"internal error: {exc!r}", provider=self.provider.name))
        except BaseException:
            admit(job, None)  # cancelled (client closing): queued, so it is answered as such
            raise
        else:
            admit(job, None)
