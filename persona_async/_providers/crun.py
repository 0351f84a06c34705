"""crun: ``POST /api/v1/client/job/suno-persona-generate``, snake_case, ``x-api-key``; source
status at ``GET /api/v1/client/job/TaskInfo?task_id=`` (crun's pages,
https://docs.crun.ai/suno-api/suno-persona-generate and
https://docs.crun.ai/suno-api/suno-task-info)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import msgspec

from .._exceptions import CODE_TO_EXCEPTION, AuthenticationError, PersonaError
from ._base import Provider, Wire
from ._status import (
    Refusal,
    StatusRoute,
    TaskInfo,
    TaskState,
    duration,
    envelope_refusal,
    state_of,
    state_table,
)
from ._styles import CodeEnvelopeReply, code_envelope

__all__ = ["CRUN_ERRORS", "CRUN_STATES", "CrunProvider"]


class _Body(msgspec.Struct, omit_defaults=True):
    task_id: str
    audio_id: str = msgspec.field(name="suno_id")
    name: str
    description: str
    vocal_start: float | None = None
    vocal_end: float | None = None
    style: str | None = None


#: crun's codes (its wording is kie's), and 403 "API key disabled" from a third-party client's
#: error map (crun's pages do not list 403): a refused key stops the lane as a 401 does.
CRUN_ERRORS: Mapping[Any, type[PersonaError]] = MappingProxyType(
    {**CODE_TO_EXCEPTION, 403: AuthenticationError}
)

#: TaskInfo's ``status`` (crun's task-info page shows only "running"; the rest is from a
#: third-party schema; some clients see ``SUCCESS``, hence no regard to case).
CRUN_STATES = state_table(
    {
        "pending": TaskState.RUNNING,
        "running": TaskState.RUNNING,
        "success": TaskState.READY,
        "failed": TaskState.FAILED,
    }
)
#: Where a clip id may sit in a ``result.suno_data[]`` item: crun's docs do not show the item, and
#: its create calls the clip ``suno_id``. The first key present wins.
_CLIP_KEYS = ("suno_id", "id", "clip_id", "audio_id")


class _Result(msgspec.Struct):
    code: int | str | None = None
    message: str | None = None
    suno_data: list[dict[str, Any]] | None = None


class _Task(msgspec.Struct):
    status: str
    result: _Result | None = None


_envelope = code_envelope("message")
_task = msgspec.json.Decoder(_Task).decode


def decode_status(status: int, body: bytes) -> TaskInfo | Refusal:
    """TaskInfo: ``data.status``; on success, clips at ``data.result.suno_data[]`` (assumed)."""
    envelope = _envelope(body)
    if (refusal := envelope_refusal(envelope, status)) is not None:
        return refusal
    task = _task(envelope.data)
    result = task.result or _Result()
    clips: dict[str, float | None] | None = None
    for item in result.suno_data or ():
        clip_id = next((item[k] for k in _CLIP_KEYS if isinstance(item.get(k), str)), None)
        if clip_id is not None:
            clips = clips or {}
            clips[clip_id] = duration(item.get("duration"))
    state = state_of(CRUN_STATES, task.status)
    return TaskInfo(state, task.status, clips, result.code, result.message or "")


class CrunProvider(Provider):
    """crun (api.crun.ai): synchronous; the persona id comes back in the reply.

    crun documents no duplicate detection, so a create whose outcome is unknown is not resent
    unless ``retry_ambiguous=True``::

        CrunProvider(api_key="...", rate_limit=20, rate_period=10)
    """

    kind = "crun"
    api_key_env = "CRUN_API_KEY"
    default_base_url = "https://api.crun.ai"
    documentation = "in full but for its TaskInfo status words"
    path = "/api/v1/client/job/suno-persona-generate"
    wire = Wire(body=_Body, reply=CodeEnvelopeReply(message_key="message", id_key="persona_id"))
    max_lengths = MappingProxyType({"name": 100, "description": 1000, "style": 1000})
    errors = CRUN_ERRORS
    source_status = StatusRoute("/api/v1/client/job/TaskInfo?task_id={task_id}", decode_status)

    __slots__ = ()

    def auth_headers(self) -> dict[str, str]:
        return {"x-api-key": self._api_key}
