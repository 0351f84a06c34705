"""AceData Cloud: ``POST /suno/persona``, Bearer, real HTTP statuses with string error codes;
source status at ``POST /suno/tasks {"id", "action": "retrieve"}``. Persona: AceData's page
https://docs.acedata.cloud/api-reference/suno/suno-persona; tasks: its integration guide,
docs/suno_tasks_api_integration_guide.md in https://github.com/AceDataCloud/SunoAPI."""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import msgspec

from .._exceptions import (
    HTTP_STATUS_TO_EXCEPTION,
    AuthenticationError,
    FeatureDisabledError,
    InsufficientCreditsError,
    NotFoundError,
    PersonaError,
    ProviderTimeoutError,
    RateLimitError,
    ServerError,
    ValidationError,
)
from ._base import Provider, Wire
from ._status import Refusal, StatusRoute, TaskInfo, TaskState, clips_of, state_of, state_table
from ._styles import AceDataReply, ErrorObject

__all__ = ["ACEDATA_ERRORS", "ACEDATA_STATES", "AceDataProvider"]


class _Body(msgspec.Struct, omit_defaults=True):
    audio_id: str
    name: str
    description: str
    vocal_start: float | None = None
    vocal_end: float | None = None


#: AceData's platform error codes (AceDataCloud/Docs ``concepts/responses.mdx`` and the suno
#: OpenAPI), then the HTTP statuses for a reply without an ``error`` object.
ACEDATA_ERRORS: Mapping[Any, type[PersonaError]] = MappingProxyType(
    {
        **HTTP_STATUS_TO_EXCEPTION,
        "bad_request": ValidationError,
        "api_not_implemented": FeatureDisabledError,
        "no_token": AuthenticationError,
        "invalid_token": AuthenticationError,
        "token_expired": AuthenticationError,
        "token_mismatched": AuthenticationError,
        "disabled": AuthenticationError,
        "used_up": InsufficientCreditsError,
        "forbidden": ValidationError,  # content moderation: this request, not the key
        "no_api": NotFoundError,
        "too_many_requests": RateLimitError,
        "api_error": ServerError,
        "timeout": ProviderTimeoutError,
    }
)

#: AceData's task states: its docs publish none; these are from AceData's own MCP server,
#: https://glama.ai/mcp/servers/AceDataCloud/SunoMCP/tools/suno_get_task.
ACEDATA_STATES = state_table(
    {
        "pending": TaskState.RUNNING,
        "processing": TaskState.RUNNING,
        "complete": TaskState.READY,
        "failed": TaskState.FAILED,
    }
)


class _Clip(msgspec.Struct):
    id: str
    duration: float | str | None = None


class _Response(msgspec.Struct):
    success: bool | None = None
    data: list[_Clip] | None = None
    error: ErrorObject | None = None


class _Task(msgspec.Struct):
    id: str
    state: str | None = None
    status: str | None = None
    response: _Response | None = None
    error: ErrorObject | None = None


class _Refused(msgspec.Struct):
    error: ErrorObject | None = None


_task = msgspec.json.Decoder(_Task).decode
_refused = msgspec.json.Decoder(_Refused).decode


def decode_status(status: int, body: bytes) -> TaskInfo | Refusal:
    """Clips at ``response.data[]``. The state word (``state`` or ``status``) may be missing:
    then a non-empty ``response`` means complete, as AceData's platform notes say."""
    refused = _refused(body).error
    if status >= 400 or refused is not None:
        error = refused or ErrorObject()
        return Refusal(error.code if error.code is not None else status, error.message or "")
    task = _task(body)
    response = task.response
    word = task.state or task.status
    if word is None:  # no state word: a non-empty response is the completion
        if response is None or (response.success is None and not response.data):
            word, state = "pending", TaskState.RUNNING
        elif response.success is False:
            word, state = "failed", TaskState.FAILED
        else:
            word, state = "complete", TaskState.READY
    else:
        state = state_of(ACEDATA_STATES, word)
    failure = response.error if response is not None and response.error else ErrorObject()
    clips = clips_of(response.data if response is not None else None)
    return TaskInfo(state, word, clips, failure.code, failure.message or "")


def _retrieve(task_id: str) -> bytes:
    return json.dumps({"id": task_id, "action": "retrieve"}).encode()


class AceDataProvider(Provider):
    """AceData Cloud (api.acedata.cloud): synchronous; the persona id comes back in the reply.

    The token is bound to the Suno service (another service's token is ``token_mismatched``).
    AceData takes no source task id and documents no ``style``, so ``style`` is refused;
    ``task_id`` is not sent. No duplicate detection is documented::

        AceDataProvider(api_key="...")
    """

    kind = "acedata"
    api_key_env = "ACEDATA_API_KEY"
    default_base_url = "https://api.acedata.cloud"
    documentation = "in full"
    path = "/suno/persona"
    wire = Wire(body=_Body, reply=AceDataReply())
    unsupported_fields = frozenset({"style"})
    errors = ACEDATA_ERRORS
    # The task id travels in the body.
    source_status = StatusRoute("/suno/tasks", decode_status, post=_retrieve)

    __slots__ = ()

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}
