"""Source-song status for kie's market route, AceData, Evolink, the Suno-API gateways (CometAPI,
DeerAPI), TTAPI and MountSea. One state table per contract, one decoder each; each endpoint as
its provider's documentation gives it.

* kie-jobs: ``GET /api/v1/jobs/recordInfo?taskId=`` (docs.kie.ai, market get-task-detail):
  ``data.state``; the music is in ``data.resultJson``, a JSON *string*, clips at its ``data[]``
  (``id``, ``duration``).
* AceData: ``POST /suno/tasks {"id": .., "action": "retrieve"}`` (its Suno tasks API): clips at
  ``response.data[]``. The state word (``state`` or ``status``) may be missing: then a non-empty
  ``response`` means complete, as AceData's platform notes say.
* Evolink: ``GET /v1/tasks/{id}`` (docs.evolink.ai, get task detail): ``status``; clips at
  ``result_data[]`` or, as its playground shows, ``result_data.songs[]`` (``result_id``,
  ``duration``). Both are read.
* the gateways: ``GET {base}/suno/fetch/{task_id}`` (new-api's Suno fetch): ``code: "success"``,
  ``data.status``, clips at ``data.data[]`` (``id``; ``duration`` or raw Suno's
  ``metadata.duration``).
* TTAPI: ``GET /suno/v2/fetch?jobId=`` (docs.ttapi.io, suno_fetch): ``status``, clips at
  ``data.musics[]`` (``musicId``; ``duration`` a *string*).
* MountSea: ``GET /suno/v2/status?taskId=`` (docs.mountsea.ai, suno task): ``status``,
  ``failCode``/``failReason``. Its ``data`` is documented only as ``{}``, so no clips are read:
  the audio id and vocal window are not checked before the create (MountSea's create still
  judges them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import msgspec

from ._sources import (
    SourceInfo,
    SourceState,
    SourceStatus,
    _decode_or_raise,
    _duration,
    _raise_for_code,
)

if TYPE_CHECKING:
    from ._providers import Provider
    from ._transport import RawResponse

__all__ = [
    "ACEDATA_STATES",
    "EVOLINK_STATES",
    "GATEWAY_STATES",
    "KIE_JOBS_STATES",
    "MOUNTSEA_STATES",
    "TTAPI_STATES",
    "AceDataStatus",
    "EvolinkStatus",
    "GatewayStatus",
    "KieJobsStatus",
    "MountSeaStatus",
    "TtapiStatus",
]

_R, _OK, _NO = SourceState.RUNNING, SourceState.READY, SourceState.FAILED

#: kie recordInfo's ``state`` (docs.kie.ai, market get-task-detail).
KIE_JOBS_STATES: Mapping[str, SourceState] = MappingProxyType(
    {"waiting": _R, "queuing": _R, "generating": _R, "success": _OK, "fail": _NO}
)
#: AceData's task states (as AceData's own MCP server reads them).
ACEDATA_STATES: Mapping[str, SourceState] = MappingProxyType(
    {"pending": _R, "processing": _R, "complete": _OK, "failed": _NO}
)
#: Evolink's task ``status`` (docs.evolink.ai: persona creation, get task detail).
EVOLINK_STATES: Mapping[str, SourceState] = MappingProxyType(
    {"pending": _R, "processing": _R, "completed": _OK, "failed": _NO}
)
#: new-api's task ``status`` (its Suno fetch, as CometAPI and DeerAPI document it).
GATEWAY_STATES: Mapping[str, SourceState] = MappingProxyType(
    {
        "NOT_START": _R,
        "SUBMITTED": _R,
        "QUEUED": _R,
        "IN_PROGRESS": _R,
        "SUCCESS": _OK,
        "FAILURE": _NO,
    }
)
#: TTAPI's body ``status`` (docs.ttapi.io: the fetch page's ON_QUEUE/SUCCESS/FAILED, and
#: PENDING_QUEUE from its response page).
TTAPI_STATES: Mapping[str, SourceState] = MappingProxyType(
    {"PENDING_QUEUE": _R, "ON_QUEUE": _R, "SUCCESS": _OK, "FAILED": _NO}
)
#: MountSea's task ``status`` (docs.mountsea.ai; ``queued`` and ``awaiting`` from a mirror).
#: ``ready`` is not terminal there (terminal: success, failed, timeout); ``stream`` is audio still
#: streaming.
MOUNTSEA_STATES: Mapping[str, SourceState] = MappingProxyType(
    {
        "queued": _R,
        "awaiting": _R,
        "ready": _R,
        "running": _R,
        "stream": _R,
        "success": _OK,
        "failed": _NO,
        "timeout": _NO,
    }
)


def _clips(items: list[Any] | None) -> dict[str, float | None] | None:
    """``{clip id: duration}`` from decoded clip structs (``id`` and ``duration``)."""
    return {c.id: _duration(c.duration) for c in items} if items else None


def _state(table: Mapping[str, SourceState], word: str) -> SourceState:
    return table.get(word, SourceState.UNKNOWN)


# -- kie's market route ----------------------------------------------------------------------


class _KieEnvelope(msgspec.Struct):
    code: int
    msg: str | None = None
    data: msgspec.Raw = msgspec.Raw(b"null")


class _KieRecord(msgspec.Struct):
    state: str
    resultJson: str | None = None  # kie's spellings
    failCode: int | str | None = None
    failMsg: str | None = None


class _Clip(msgspec.Struct):
    id: str
    duration: float | str | None = None


class _KieMusic(msgspec.Struct):
    data: list[_Clip] | None = None


class KieJobsStatus(SourceStatus):
    """recordInfo: ``data.state``; clips at ``data.resultJson`` (a JSON string) ``.data[]``."""

    path = "/api/v1/jobs/recordInfo?taskId={task_id}"
    _envelope = msgspec.json.Decoder(_KieEnvelope).decode
    _record = msgspec.json.Decoder(_KieRecord).decode
    _music = msgspec.json.Decoder(_KieMusic).decode

    def decode(self, provider: Provider, raw: RawResponse) -> SourceInfo:
        envelope = _decode_or_raise(provider, raw, self._envelope)
        _raise_for_code(provider, raw, envelope.code, envelope.msg or "")
        record = _decode_or_raise(provider, raw._replace(body=bytes(envelope.data)), self._record)
        state = _state(KIE_JOBS_STATES, record.state)
        clips = None
        if state is SourceState.READY and record.resultJson:
            inner = raw._replace(body=record.resultJson.encode())
            clips = _clips(_decode_or_raise(provider, inner, self._music).data)
        code = record.failCode or None
        if isinstance(code, str) and code.isdigit():
            code = int(code)  # kie sends its numeric codes as strings ("501")
        return SourceInfo(
            state,
            record.state,
            clips,
            code,
            provider.redact(record.failMsg or ""),
        )


# -- AceData ---------------------------------------------------------------------------------


class _Error(msgspec.Struct):
    """An error object: AceData's, Evolink's, new-api's relay errors, TTAPI's and MountSea's."""

    code: str | int | None = None
    message: str | None = None


class _AceResponse(msgspec.Struct):
    success: bool | None = None
    data: list[_Clip] | None = None
    error: _Error | None = None


class _AceTask(msgspec.Struct):
    id: str | None = None
    state: str | None = None
    status: str | None = None
    response: _AceResponse | None = None
    error: _Error | None = None


class _AceTaskId(msgspec.Struct):
    id: str


class AceDataStatus(SourceStatus):
    """``POST /suno/tasks`` retrieve: clips at ``response.data[]``."""

    path = "/suno/tasks"
    _task = msgspec.json.Decoder(_AceTask).decode
    _id = msgspec.json.Decoder(_AceTaskId).decode

    def body(self, task_id: str) -> bytes | None:
        return json.dumps({"id": task_id, "action": "retrieve"}).encode()

    def url(self, provider: Provider, task_id: str) -> str:
        return provider.base_url + self.path  # the task id travels in the body

    def decode(self, provider: Provider, raw: RawResponse) -> SourceInfo:
        task = _decode_or_raise(provider, raw, self._task)
        error = task.error or _Error()
        if raw.status >= 400 or task.error is not None:
            code = error.code if error.code is not None else raw.status
            _raise_for_code(provider, raw, code, error.message or "")
        if task.id is None:  # a 200 that is not a task: the decoder names the missing field
            _decode_or_raise(provider, raw, self._id)
        response = task.response
        word = task.state or task.status
        if word is None:  # no state word: a non-empty response is the completion
            if response is None or (response.success is None and not response.data):
                word, state = "pending", SourceState.RUNNING
            elif response.success is False:
                word, state = "failed", SourceState.FAILED
            else:
                word, state = "complete", SourceState.READY
        else:
            state = _state(ACEDATA_STATES, word)
        failure = response.error if response is not None and response.error else _Error()
        return SourceInfo(
            state,
            word,
            _clips(response.data if response is not None else None),
            failure.code,
            provider.redact(failure.message or ""),
        )


# -- Evolink ---------------------------------------------------------------------------------


class _EvolinkClip(msgspec.Struct):
    result_id: str
    duration: float | str | None = None

    @property
    def id(self) -> str:
        return self.result_id


class _EvolinkSongs(msgspec.Struct):
    songs: list[_EvolinkClip] | None = None


class _EvolinkTask(msgspec.Struct):
    status: str | None = None
    result_data: list[_EvolinkClip] | _EvolinkSongs | None = None
    error: _Error | str | None = None
    message: str | None = None


class _EvolinkStatusWord(msgspec.Struct):
    status: str


class EvolinkStatus(SourceStatus):
    """``GET /v1/tasks/{id}``: ``status``; clips at ``result_data[]`` or ``result_data.songs[]``."""

    path = "/v1/tasks/{task_id}"
    _task = msgspec.json.Decoder(_EvolinkTask).decode
    _status = msgspec.json.Decoder(_EvolinkStatusWord).decode  # names the missing field

    def decode(self, provider: Provider, raw: RawResponse) -> SourceInfo:
        task = _decode_or_raise(provider, raw, self._task)
        error = task.error if isinstance(task.error, _Error) else _Error(None, task.error)
        said = error.message or task.message or ""
        if raw.status >= 400:
            _raise_for_code(provider, raw, raw.status, said)
        # A 200 that is not a task object: the decoder names the missing field.
        status: str = task.status or _decode_or_raise(provider, raw, self._status).status
        data = task.result_data
        items = data.songs if isinstance(data, _EvolinkSongs) else data
        return SourceInfo(
            _state(EVOLINK_STATES, status),
            status,
            _clips(items),
            error.code,
            provider.redact(said),
        )


# -- the Suno-API gateways (new-api) ---------------------------------------------------------


class _Metadata(msgspec.Struct):
    duration: float | str | None = None


class _GatewayClip(msgspec.Struct):
    id: str
    duration: float | str | None = None
    metadata: _Metadata | None = None


class _GatewayTask(msgspec.Struct):
    status: str
    fail_reason: str | None = None
    data: list[_GatewayClip] | None = None


class _GatewayEnvelope(msgspec.Struct):
    code: str | int | None = None
    message: str | None = None
    data: msgspec.Raw = msgspec.Raw(b"null")
    error: _Error | None = None  # new-api's relay errors: {"error": {"message", "type"}}


class _GatewayCode(msgspec.Struct):
    code: str | int


class GatewayStatus(SourceStatus):
    """``GET /suno/fetch/{task_id}``: ``code: "success"``, ``data.status``, ``data.data[]``."""

    path = "/suno/fetch/{task_id}"
    _envelope = msgspec.json.Decoder(_GatewayEnvelope).decode
    _strict = msgspec.json.Decoder(_GatewayCode).decode
    _task = msgspec.json.Decoder(_GatewayTask).decode

    def decode(self, provider: Provider, raw: RawResponse) -> SourceInfo:
        envelope = _decode_or_raise(provider, raw, self._envelope)
        said = envelope.message or (envelope.error.message if envelope.error else None) or ""
        if raw.status >= 400:
            _raise_for_code(provider, raw, raw.status, said)
        # A 200 must be the envelope: without a code, the decoder names the missing field.
        code = envelope.code
        if code is None:
            code = _decode_or_raise(provider, raw, self._strict).code
        if code != "success":
            _raise_for_code(provider, raw, code, said)
        task = _decode_or_raise(provider, raw._replace(body=bytes(envelope.data)), self._task)
        clips: dict[str, float | None] | None = None
        for item in task.data or ():
            seconds = item.duration
            if seconds is None and item.metadata is not None:
                seconds = item.metadata.duration
            clips = clips or {}
            clips[item.id] = _duration(seconds)
        return SourceInfo(
            _state(GATEWAY_STATES, task.status),
            task.status,
            clips,
            None,
            provider.redact(task.fail_reason or ""),
        )


# -- TTAPI -----------------------------------------------------------------------------------


class _TtapiMusic(msgspec.Struct):
    musicId: str  # TTAPI's spellings
    duration: float | str | None = None

    @property
    def id(self) -> str:
        return self.musicId


class _TtapiJob(msgspec.Struct):
    musics: list[_TtapiMusic] | None = None


class _TtapiReply(msgspec.Struct):
    status: str
    message: str | None = None
    data: _TtapiJob | None = None


class TtapiStatus(SourceStatus):
    """``GET /suno/v2/fetch?jobId=``: ``status``; clips at ``data.musics[]`` (``musicId``)."""

    path = "/suno/v2/fetch?jobId={task_id}"
    _reply = msgspec.json.Decoder(_TtapiReply).decode
    _error = msgspec.json.Decoder(_Error).decode  # {"status": "FAILED", "message": ...}
    def decode(self, provider: Provider, raw: RawResponse) -> SourceInfo:
        if raw.status >= 400:
            envelope = _decode_or_raise(provider, raw, self._error)
            _raise_for_code(provider, raw, raw.status, envelope.message or "")
        reply = _decode_or_raise(provider, raw, self._reply)
        return SourceInfo(
            _state(TTAPI_STATES, reply.status),
            reply.status,
            _clips(reply.data.musics if reply.data is not None else None),
            None,
            provider.redact(reply.message or "") if reply.status == "FAILED" else "",
        )


# -- MountSea --------------------------------------------------------------------------------


class _MountSeaTask(msgspec.Struct):
    status: str
    failCode: int | str | None = None  # MountSea's spellings
    failReason: str | None = None


class MountSeaStatus(SourceStatus):
    """``GET /suno/v2/status?taskId=``: ``status``; no clips (``data`` is not documented)."""

    path = "/suno/v2/status?taskId={task_id}"
    _task = msgspec.json.Decoder(_MountSeaTask).decode
    _error = msgspec.json.Decoder(_Error).decode

    def decode(self, provider: Provider, raw: RawResponse) -> SourceInfo:
        if raw.status >= 400:
            envelope = _decode_or_raise(provider, raw, self._error)
            _raise_for_code(provider, raw, raw.status, envelope.message or "")
        task = _decode_or_raise(provider, raw, self._task)
        return SourceInfo(
            _state(MOUNTSEA_STATES, task.status),
            task.status,
            None,
            task.failCode or None,
            provider.redact(task.failReason or ""),
        )
