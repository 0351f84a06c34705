"""MountSea: ``POST /suno/v2/persona``, Bearer, the persona object back with HTTP 201; source
status at ``GET /suno/v2/status?taskId=`` (https://docs.mountsea.ai/api-reference/suno/persona,
https://docs.mountsea.ai/api-reference/suno/task)."""

from __future__ import annotations

import msgspec

from .._exceptions import HTTP_STATUS_TO_EXCEPTION
from ._base import PublicFlagProvider, Wire
from ._status import Refusal, StatusRoute, TaskInfo, TaskState, state_of, state_table
from ._styles import ErrorObject, ObjectReply

__all__ = ["MOUNTSEA_STATES", "MountSeaProvider"]


class _Body(msgspec.Struct, omit_defaults=True):
    audio_id: str = msgspec.field(name="clip_id")
    name: str
    description: str
    is_public: bool
    style: str | None = msgspec.field(default=None, name="user_input_styles")


_R = TaskState.RUNNING
#: MountSea's task ``status`` (its task page; ``queued`` and ``awaiting`` from a mirror,
#: https://mountsea.mintlify.app/api-reference/suno/task). ``ready`` is not
#: terminal there (terminal: success, failed, timeout); ``stream`` is audio still streaming.
MOUNTSEA_STATES = state_table(
    {
        "queued": _R,
        "awaiting": _R,
        "ready": _R,
        "running": _R,
        "stream": _R,
        "success": TaskState.READY,
        "failed": TaskState.FAILED,
        "timeout": TaskState.FAILED,
    }
)


class _Task(msgspec.Struct):
    status: str
    failCode: int | str | None = None  # MountSea's spellings
    failReason: str | None = None


_task = msgspec.json.Decoder(_Task).decode
_error = msgspec.json.Decoder(ErrorObject).decode


def decode_status(status: int, body: bytes) -> TaskInfo | Refusal:
    """``status``, ``failCode``/``failReason``; no clips (``data`` is documented only as
    ``{}``), so the audio id and vocal window are left to MountSea's create to judge."""
    if status >= 400:
        return Refusal(status, _error(body).message or "")
    task = _task(body)
    state = state_of(MOUNTSEA_STATES, task.status)
    return TaskInfo(state, task.status, None, task.failCode or None, task.failReason or "")


class MountSeaProvider(PublicFlagProvider):
    """MountSea (api.mountsea.ai): synchronous, HTTP 201 with the persona object (``id``).

    The clip is sent as ``clip_id``, the style as ``user_input_styles``; ``task_id`` is not
    sent. ``is_public`` is required by MountSea; it defaults to False here. MountSea documents
    the vocal window only for a vocal ("vox") persona, with a ``vox_audio_id`` the SDK does not
    send, so vocal_start and vocal_end are refused. Errors are not documented; HTTP statuses
    are read as their usual meaning::

        MountSeaProvider(api_key="...", is_public=False)
    """

    kind = "mountsea"
    api_key_env = "MOUNTSEA_API_KEY"
    default_base_url = "https://api.mountsea.ai"
    documentation = "partly: no error codes or limits published"
    path = "/suno/v2/persona"
    wire = Wire(body=_Body, reply=ObjectReply())
    errors = HTTP_STATUS_TO_EXCEPTION
    unsupported_fields = frozenset({"vocal_start", "vocal_end"})
    unsupported_note = "documented only for a vox persona, with a vox_audio_id"
    source_status = StatusRoute("/suno/v2/status?taskId={task_id}", decode_status)

    __slots__ = ()

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}
