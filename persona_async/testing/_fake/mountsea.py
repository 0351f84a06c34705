"""MountSea's contract (https://docs.mountsea.ai/api-reference/suno/persona): Bearer, the persona
object back with HTTP 201.

Songs: ``GET /suno/v2/status?taskId=``: ``status`` queued/running/stream/success/failed,
``failCode``/``failReason``, ``data: {}`` (its clips are not documented).
"""

from __future__ import annotations

from typing import Final

from ._contract import StatusEndpoint, _Contract, param
from ._song import Song, word
from ._wire import _encode

MOUNTSEA_PATH: Final = "/suno/v2/persona"
MOUNTSEA_STATUS_PATH: Final = "/suno/v2/status"


def _song(song: Song, phase: float) -> bytes:
    status = word(phase, song.fails, ("queued", "stream", "success", "failed"))
    failed = status == "failed"
    return _encode(
        {
            "taskId": song.task_id,
            "status": status,
            "createdAt": "2026-11-30T00:00:00Z",
            "failReason": song.error_message if failed else None,
            "failCode": str(song.error_code) if failed else None,
            "data": {},
            "finishAt": None,
        }
    )


def _error(code: int, message: str) -> tuple[int, bytes]:
    return code, _encode({"message": message, "statusCode": code})


MOUNTSEA: Final = _Contract(
    kind="mountsea",
    path=MOUNTSEA_PATH,
    auth_header="authorization",
    style="object",
    message_key="message",
    persona_id_key="id",
    task=None,
    audio="clip_id",
    name="name",
    description="description",
    description_required=False,
    vocal_start="vocal_start_s",
    vocal_end="vocal_end_s",
    style_field="user_input_styles",
    max_lengths={},
    missing_task_message="clip not found",
    one_per_audio=False,
    echoes_details=True,
    extra_required={"is_public": bool},
    success_status=201,
    status=StatusEndpoint(
        "GET",
        f"{MOUNTSEA_STATUS_PATH}?taskId=",
        param(MOUNTSEA_STATUS_PATH, "taskId"),
        _song,
        _error,
    ),
)
