"""The Suno-API gateway contract (new-api deployments): ``POST {base}/suno/persona/create``.

Bearer; the reply is the raw Suno persona object, whose ``id`` is the persona id; errors are
HTTP statuses with ``{"error": {"message", "type", "code"}}``. Source status at
``GET {base}/suno/fetch/{task_id}`` (CometAPI's persona page,
https://apidoc.cometapi.com/api-18657315; new-api's fetch page,
https://docs.aiid.edu.kg/api-reference/en/music-generation-task-format/query-a-music-task-by-id).
One implementation; each host is a subclass of a few lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import msgspec

from .._exceptions import (
    HTTP_STATUS_TO_EXCEPTION,
    AuthenticationError,
    PersonaError,
    ProviderTimeoutError,
)
from .._models import PersonaRequest
from ._base import OPTIONAL_FIELDS, PublicFlagProvider, Wire
from ._status import Refusal, StatusRoute, TaskInfo, TaskState, duration, state_of, state_table
from ._styles import ErrorObject, ObjectReply

__all__ = ["GATEWAY_ERRORS", "GATEWAY_STATES", "SunoGatewayProvider"]


class _Body(msgspec.Struct):
    audio_id: str = msgspec.field(name="root_clip_id")
    name: str
    description: str
    clips: list[str]
    is_public: bool


#: HTTP statuses as CometAPI's error page (https://apidoc.cometapi.com/errors/error-codes-handling)
#: reads them: 403 access blocked stops the lane as a 401 does; 524 is Cloudflare's origin
#: timeout, after which the persona may exist.
GATEWAY_ERRORS: Mapping[Any, type[PersonaError]] = MappingProxyType(
    {**HTTP_STATUS_TO_EXCEPTION, 403: AuthenticationError, 524: ProviderTimeoutError}
)

_R = TaskState.RUNNING
#: new-api's task ``status``, as its fetch page (module docstring) lists it.
GATEWAY_STATES = state_table(
    {
        "NOT_START": _R,
        "SUBMITTED": _R,
        "QUEUED": _R,
        "IN_PROGRESS": _R,
        "SUCCESS": TaskState.READY,
        "FAILURE": TaskState.FAILED,
    }
)


class _Metadata(msgspec.Struct):
    duration: float | str | None = None


class _Clip(msgspec.Struct):
    id: str
    duration: float | str | None = None
    metadata: _Metadata | None = None


class _Task(msgspec.Struct):
    status: str
    fail_reason: str | None = None
    data: list[_Clip] | None = None


class _Envelope(msgspec.Struct):
    code: str | int | None = None
    message: str | None = None
    data: msgspec.Raw = msgspec.Raw(b"null")
    error: ErrorObject | None = None  # new-api's relay errors: {"error": {"message", "type"}}


class _Code(msgspec.Struct):
    code: str | int


_envelope = msgspec.json.Decoder(_Envelope).decode
_strict = msgspec.json.Decoder(_Code).decode  # names the missing field of a 200 without one
_task = msgspec.json.Decoder(_Task).decode


def decode_status(status: int, body: bytes) -> TaskInfo | Refusal:
    """``/suno/fetch/{task_id}``: ``code: "success"``, ``data.status``, clips at ``data.data[]``
    (``duration``, or raw Suno's ``metadata.duration``)."""
    envelope = _envelope(body)
    said = envelope.message or (envelope.error.message if envelope.error else None) or ""
    if status >= 400:
        return Refusal(status, said)
    code = envelope.code if envelope.code is not None else _strict(body).code
    if code != "success":
        return Refusal(code, said)
    task = _task(envelope.data)
    clips: dict[str, float | None] | None = None
    for item in task.data or ():
        seconds = item.duration
        if seconds is None and item.metadata is not None:
            seconds = item.metadata.duration
        clips = clips or {}
        clips[item.id] = duration(seconds)
    state = state_of(GATEWAY_STATES, task.status)
    return TaskInfo(state, task.status, clips, None, task.fail_reason or "")


class SunoGatewayProvider(PublicFlagProvider):
    """The shared gateway implementation. ``is_public`` (default False) decides whether the
    persona is public on the upstream account; the clip is sent as ``root_clip_id`` and as
    the only entry of ``clips``. The gateways take no task id and document no vocal window or
    style: those are refused. No duplicate detection is documented. A 500 whose ``error.code``
    is ``invalid_request`` is a malformed request ("do not retry"), not a server failure."""

    path = "/suno/persona/create"
    wire = Wire(body=_Body, reply=ObjectReply())
    unsupported_fields = OPTIONAL_FIELDS
    errors = GATEWAY_ERRORS
    source_status = StatusRoute("/suno/fetch/{task_id}", decode_status)

    __slots__ = ()

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}

    def encode(self, request: PersonaRequest) -> bytes:
        return self.wire.encode(request, clips=[request.audio_id], is_public=self.is_public)

    def classify(self, code: int | str, message: str) -> int | str:
        # ObjectReply puts a string error.code first in the message: "invalid_request: ...".
        if code == 500 and message.partition(":")[0].strip() == "invalid_request":
            return 400
        return code
