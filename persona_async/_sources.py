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

A provider states how to ask in ``Provider.source_status``: a ``SourceStatus`` (the URL, an
optional POST body, and a decoder from the raw reply to a ``SourceInfo``). crun and the
sunoapi.org family are here; another provider adds its own subclass next to its wire.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

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
from ._retry import parse_retry_after

if TYPE_CHECKING:
    from ._job import _Job
    from ._providers import Provider
    from ._transport import RawResponse, SessionPool

__all__ = [
    "CRUN_STATES",
    "FAMILY_STATES",
    "CrunStatus",
    "FamilyStatus",
    "SourceGate",
    "SourceInfo",
    "SourceState",
    "SourceStatus",
    "lookup",
    "verdict",
]

logger = logging.getLogger("persona_async")


class SourceState(str, enum.Enum):
    READY = "ready"  # terminal success: a persona can be made from its clips
    RUNNING = "running"  # still generating
    FAILED = "failed"  # terminal failure: nothing will help
    UNKNOWN = "unknown"  # a status word the contract does not document: waited as running


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What a status endpoint said about one music task.

    ``clips`` maps each clip id of a finished task to its duration in seconds (None when the
    reply gives none); ``clips`` itself is None when the reply lists no clips at all, and then
    the audio id cannot be checked. ``code``/``message`` are the provider's words on a failure.
    """

    state: SourceState
    status: str
    clips: Mapping[str, float | None] | None = None
    code: int | str | None = None
    message: str = ""


class SourceStatus:
    """How to ask one contract about a music task: subclass and set ``path`` and ``decode``."""

    #: Appended to ``base_url``; ``{task_id}`` is replaced by the URL-quoted task id.
    path: str = ""

    def url(self, provider: Provider, task_id: str) -> str:
        return provider.base_url + self.path.format(task_id=quote(task_id, safe=""))

    def body(self, task_id: str) -> bytes | None:
        """A POST body for contracts that query by POST (AceData); None sends a GET."""
        return None

    def decode(self, provider: Provider, raw: RawResponse) -> SourceInfo:
        """Read a reply; raise the ``PersonaError`` an error envelope stands for."""
        raise NotImplementedError


def _duration(value: object) -> float | None:
    # Seconds as a number (the family) or a numeric string (TTAPI); anything else is unknown.
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _decode_or_raise(provider: Provider, raw: RawResponse, decoder: Callable[[bytes], Any]) -> Any:
    """The envelope, or the error a non-envelope reply means (a 429 page still slows polls)."""
    if raw.status == 429:
        retry_after = parse_retry_after(raw.retry_after)
        try:
            envelope = decoder(raw.body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            envelope = None
        message = getattr(envelope, "message", None) or "HTTP 429 Too Many Requests"
        raise RateLimitError(
            message, http_status=429, provider=provider.name, retry_after=retry_after
        )
    try:
        return decoder(raw.body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        from ._transport import excerpt

        raise MalformedResponseError(
            f"HTTP {raw.status}: status reply is not the {provider.kind} envelope ({exc})",
            http_status=raw.status,
            provider=provider.name,
            excerpt=excerpt(provider, raw.body),
            retryable=raw.status >= 500,
        ) from exc


def _raise_for_code(provider: Provider, raw: RawResponse, code: int | str, message: str) -> None:
    """Raise what a non-200 envelope code means, through the one code table.

    ``code`` is an envelope's number, or a string code (AceData's ``used_up``, ...) looked up
    in the provider's table; the error then carries the HTTP status as its number.
    """
    if code == 200 and raw.status < 400:
        return
    code = code if code != 200 else raw.status
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


# -- the sunoapi.org family: GET {base}/api/v1/generate/record-info?taskId= -----------------------

#: record-info's ``status`` enum (docs.sunoapi.org/suno-api/get-music-generation-details). Only
#: SUCCESS means every track is done.
FAMILY_STATES: Mapping[str, SourceState] = MappingProxyType(
    {
        "PENDING": SourceState.RUNNING,
        "TEXT_SUCCESS": SourceState.RUNNING,
        "FIRST_SUCCESS": SourceState.RUNNING,
        "SUCCESS": SourceState.READY,
        "CREATE_TASK_FAILED": SourceState.FAILED,
        "GENERATE_AUDIO_FAILED": SourceState.FAILED,
        "CALLBACK_EXCEPTION": SourceState.FAILED,
        "SENSITIVE_WORD_ERROR": SourceState.FAILED,
    }
)


class _FamilyClip(msgspec.Struct):
    id: str
    duration: float | str | None = None


class _FamilyResponse(msgspec.Struct, rename="camel"):
    suno_data: list[_FamilyClip] | None = None


class _FamilyTask(msgspec.Struct, rename="camel"):
    status: str
    response: _FamilyResponse | None = None
    error_code: int | str | None = None
    error_message: str | None = None


class _FamilyEnvelope(msgspec.Struct):
    code: int
    message: str | None = msgspec.field(default=None, name="msg")
    data: msgspec.Raw = msgspec.Raw(b"null")


class FamilyStatus(SourceStatus):
    """record-info: ``data.status``; clips at ``data.response.sunoData[]`` with ``duration``."""

    path = "/api/v1/generate/record-info?taskId={task_id}"
    _envelope = msgspec.json.Decoder(_FamilyEnvelope).decode
    _task = msgspec.json.Decoder(_FamilyTask).decode

    def decode(self, provider: Provider, raw: RawResponse) -> SourceInfo:
        envelope = _decode_or_raise(provider, raw, self._envelope)
        _raise_for_code(provider, raw, envelope.code, envelope.message or "")
        task = _decode_or_raise(provider, raw._replace(body=bytes(envelope.data)), self._task)
        data = task.response.suno_data if task.response is not None else None
        clips = None if not data else {c.id: _duration(c.duration) for c in data}
        return SourceInfo(
            FAMILY_STATES.get(task.status, SourceState.UNKNOWN),
            task.status,
            clips,
            task.error_code,
            provider.redact(task.error_message or ""),
        )


# -- crun: GET /api/v1/client/job/TaskInfo?task_id= ----------------------------------------------

#: TaskInfo's ``status`` (docs.crun.ai/suno-api/suno-task-info shows only "running"; the
#: rest is from a third-party client's schema). Any other word is UNKNOWN and waited on as if
#: still running.
CRUN_STATES: Mapping[str, SourceState] = MappingProxyType(
    {
        "pending": SourceState.RUNNING,
        "running": SourceState.RUNNING,
        "success": SourceState.READY,
        "failed": SourceState.FAILED,
    }
)
#: Where a clip id may sit in a ``result.suno_data[]`` item: crun's docs do not show the item, and
#: its create calls the clip ``suno_id``. The first key present wins.
_CRUN_CLIP_KEYS = ("suno_id", "id", "clip_id", "audio_id")


class _CrunResult(msgspec.Struct):
    code: int | str | None = None
    message: str | None = None
    suno_data: list[dict[str, Any]] | None = None


class _CrunTask(msgspec.Struct):
    status: str
    result: _CrunResult | None = None


class _CrunEnvelope(msgspec.Struct):
    code: int
    message: str | None = None
    data: msgspec.Raw = msgspec.Raw(b"null")


class CrunStatus(SourceStatus):
    """TaskInfo: ``data.status``; on success, clips at ``data.result.suno_data[]`` (assumed)."""

    path = "/api/v1/client/job/TaskInfo?task_id={task_id}"
    _envelope = msgspec.json.Decoder(_CrunEnvelope).decode
    _task = msgspec.json.Decoder(_CrunTask).decode

    def decode(self, provider: Provider, raw: RawResponse) -> SourceInfo:
        envelope = _decode_or_raise(provider, raw, self._envelope)
        _raise_for_code(provider, raw, envelope.code, envelope.message or "")
        task = _decode_or_raise(provider, raw._replace(body=bytes(envelope.data)), self._task)
        result = task.result or _CrunResult()
        clips: dict[str, float | None] | None = None
        for item in result.suno_data or ():
            clip_id = next((item[k] for k in _CRUN_CLIP_KEYS if isinstance(item.get(k), str)), None)
            if clip_id is not None:
                clips = clips or {}
                clips[clip_id] = _duration(item.get("duration"))
        return SourceInfo(
            CRUN_STATES.get(task.status, SourceState.UNKNOWN),
            task.status,
            clips,
            result.code,
            provider.redact(result.message or ""),
        )


# -- the lane's side ---------------------------------------------------------------------------


async def lookup(provider: Provider, pool: SessionPool, task_id: str) -> SourceInfo:
    """One status query for ``task_id``; raises the ``PersonaError`` the reply means."""
    status = provider.source_status
    if status is None:
        raise ValueError(f"{type(provider).__name__} has no status endpoint")
    raw = await pool.query(
        provider, status.url(provider, task_id), body=status.body(task_id), timeout=provider.timeout
    )
    return status.decode(provider, raw)


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
