"""TTAPI: ``POST /suno/v1/persona``, ``TT-API-KEY`` header, ``{status, message, data}``; source
status at ``GET /suno/v2/fetch?jobId=`` (https://docs.ttapi.io/api/en/suno/suno_persona,
https://docs.ttapi.io/api/cn/suno/suno_fetch_v2)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import msgspec

from .._exceptions import (
    HTTP_STATUS_TO_EXCEPTION,
    AuthenticationError,
    GenerationFailedError,
    PersonaError,
    RateLimitError,
)
from ._base import Provider, Wire
from ._status import Refusal, StatusRoute, TaskInfo, TaskState, clips_of, state_of, state_table
from ._styles import ErrorObject, StatusReply

__all__ = ["TTAPI_ERRORS", "TTAPI_STATES", "TtapiProvider"]


class _Body(msgspec.Struct, omit_defaults=True):
    audio_id: str = msgspec.field(name="music_id")
    name: str
    description: str = msgspec.field(name="describe")
    style: str | None = msgspec.field(default=None, name="styles")


#: TTAPI's HTTP statuses (docs.ttapi.io grids/en/development/response) and its body status.
TTAPI_ERRORS: Mapping[Any, type[PersonaError]] = MappingProxyType(
    {
        **HTTP_STATUS_TO_EXCEPTION,
        403: AuthenticationError,  # account blocked (older docs)
        # The queue for this product is exhausted: not created, try again later.
        499: RateLimitError,
        # `status: FAILED` inside HTTP 200: the persona was not made.
        "FAILED": GenerationFailedError,
    }
)

#: TTAPI's body ``status`` (the fetch page's ON_QUEUE/SUCCESS/FAILED, and PENDING_QUEUE from its
#: response page, https://docs.ttapi.io/grids/en/development/response).
TTAPI_STATES = state_table(
    {
        "PENDING_QUEUE": TaskState.RUNNING,
        "ON_QUEUE": TaskState.RUNNING,
        "SUCCESS": TaskState.READY,
        "FAILED": TaskState.FAILED,
    }
)


class _Music(msgspec.Struct):
    musicId: str  # TTAPI's spellings
    duration: float | str | None = None


class _Job(msgspec.Struct):
    musics: list[_Music] | None = None


class _Fetch(msgspec.Struct):
    status: str
    message: str | None = None
    data: _Job | None = None


_fetch = msgspec.json.Decoder(_Fetch).decode
_error = msgspec.json.Decoder(ErrorObject).decode  # {"status": "FAILED", "message": ...}


def decode_status(status: int, body: bytes) -> TaskInfo | Refusal:
    """``status``; clips at ``data.musics[]`` (``musicId``, ``duration`` a string)."""
    if status >= 400:
        return Refusal(status, _error(body).message or "")
    reply = _fetch(body)
    state = state_of(TTAPI_STATES, reply.status)
    clips = clips_of(reply.data.musics if reply.data is not None else None, "musicId")
    said = (reply.message or "") if state is TaskState.FAILED else ""
    return TaskInfo(state, reply.status, clips, None, said)


class TtapiProvider(Provider):
    """TTAPI (api.ttapi.io): synchronous; the key rides in ``TT-API-KEY``.

    The clip is sent as ``music_id``, the description as ``describe``, the style as
    ``styles``; ``task_id`` is not sent. TTAPI documents the vocal window only for a vocal
    ("vox") persona, "required when vox_audio_id is provided", and the SDK sends no vox id, so
    vocal_start and vocal_end are refused.
    A 499 (queue exhausted) cools the lane like a 429; a 504 (the synchronous call timed out)
    may have made the persona and is not resent. No duplicate detection is documented.
    """

    kind = "ttapi"
    api_key_env = "TTAPI_API_KEY"
    default_base_url = "https://api.ttapi.io"
    documentation = "partly: no vox persona, no published limits"
    path = "/suno/v1/persona"
    wire = Wire(body=_Body, reply=StatusReply())
    errors = TTAPI_ERRORS
    unsupported_fields = frozenset({"vocal_start", "vocal_end"})
    unsupported_note = "documented only for a vox persona, with a vox_audio_id"
    source_status = StatusRoute("/suno/v2/fetch?jobId={task_id}", decode_status)

    __slots__ = ()

    def auth_headers(self) -> dict[str, str]:
        return {"TT-API-KEY": self._api_key}
