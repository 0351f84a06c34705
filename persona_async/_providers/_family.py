"""The sunoapi.org family: one API skeleton behind apikley, sunoapi.org, kie.ai and api.box.

``POST {base}/api/v1/generate/generate-persona``, camelCase, ``Authorization: Bearer``. Each
audio id can make one persona; a repeat is answered with 409, which makes an ambiguous create
safe to resend. Source status at ``GET {base}/api/v1/generate/record-info?taskId=``
(sunoapi.org's https://docs.sunoapi.org/suno-api/get-music-generation-details, kie's
https://docs.kie.ai/suno-api/get-music-details).
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from .._models import PersonaRequest
from ._base import Provider, Wire
from ._status import (
    Refusal,
    StatusRoute,
    TaskInfo,
    TaskState,
    clips_of,
    envelope_refusal,
    state_of,
    state_table,
)
from ._styles import CodeEnvelopeReply, code_envelope

__all__ = ["FAMILY_STATES", "SunoApiFamilyProvider"]


class _Body(msgspec.Struct, rename="camel", omit_defaults=True):
    task_id: str
    audio_id: str
    name: str
    description: str
    vocal_start: float | None = None
    vocal_end: float | None = None
    style: str | None = None


# The family's older shared schema (still on some status pages) numbers things differently:
# 405 and 430 are rate limits, and 429 may mean "insufficient credits". Read code and message.
_LEGACY_RATE_CODES = frozenset({405, 430})
_CREDIT_WORDS = ("credit", "balance", "insufficient")

_R, _OK, _NO = TaskState.RUNNING, TaskState.READY, TaskState.FAILED
#: record-info's ``status`` enum, as those pages list it. Only SUCCESS means every track is done.
FAMILY_STATES = state_table(
    {
        "PENDING": _R,
        "TEXT_SUCCESS": _R,
        "FIRST_SUCCESS": _R,
        "SUCCESS": _OK,
        "CREATE_TASK_FAILED": _NO,
        "GENERATE_AUDIO_FAILED": _NO,
        "CALLBACK_EXCEPTION": _NO,
        "SENSITIVE_WORD_ERROR": _NO,
    }
)


class _Clip(msgspec.Struct):
    id: str
    duration: float | str | None = None


class _Response(msgspec.Struct, rename="camel"):
    suno_data: list[_Clip] | None = None


class _Task(msgspec.Struct, rename="camel"):
    status: str
    response: _Response | None = None
    error_code: int | str | None = None
    error_message: str | None = None


_envelope = code_envelope("msg")
_task = msgspec.json.Decoder(_Task).decode


def decode_status(status: int, body: bytes) -> TaskInfo | Refusal:
    """record-info: ``data.status``; clips at ``data.response.sunoData[]`` with ``duration``."""
    envelope = _envelope(body)
    if (refusal := envelope_refusal(envelope, status)) is not None:
        return refusal
    task = _task(envelope.data)
    clips = clips_of(task.response.suno_data if task.response is not None else None)
    state = state_of(FAMILY_STATES, task.status)
    return TaskInfo(state, task.status, clips, task.error_code, task.error_message or "")


class SunoApiFamilyProvider(Provider):
    """The shared implementation; subclasses set only defaults and documented quirks.

    ``vocal_step`` (kie, sunoapi.org: "multiples of 0.01") rounds the vocal window to that step
    before it is checked and sent.
    """

    detects_duplicates = True
    path = "/api/v1/generate/generate-persona"
    wire = Wire(body=_Body, reply=CodeEnvelopeReply(message_key="msg", id_key="personaId"))
    vocal_window: ClassVar[tuple[float, float] | None] = (10.0, 30.0)
    source_status = StatusRoute("/api/v1/generate/record-info?taskId={task_id}", decode_status)

    __slots__ = ()

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}

    def encode(self, request: PersonaRequest) -> bytes:
        if request.vocal_start is None and request.vocal_end is None:
            return self.wire.encode(request)  # the common request: nothing to round
        return self.wire.encode(self.stepped(request))

    def classify(self, code: int | str, message: str) -> int | str:
        if code == 429 and any(word in message.lower() for word in _CREDIT_WORDS):
            return 402
        if code in _LEGACY_RATE_CODES:
            return 429
        return code
