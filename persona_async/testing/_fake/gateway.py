"""The Suno-API gateways' contract (CometAPI, https://apidoc.cometapi.com/api-18657315; DeerAPI):
the raw Suno persona object back, its ``id`` the persona id; errors as HTTP statuses.

Songs: ``GET /suno/fetch/{task_id}`` (new-api's fetch page,
https://docs.aiid.edu.kg/api-reference/en/music-generation-task-format/query-a-music-task-by-id):
``code: "success"``, ``data.status``
NOT_START/QUEUED/IN_PROGRESS/SUCCESS/FAILURE, clips at ``data.data[]`` with raw Suno's
``metadata.duration``.
"""

from __future__ import annotations

from typing import Final

from ._contract import StatusEndpoint, _Contract, tail
from ._song import Song, word
from ._wire import _encode

GATEWAY_PATH: Final = "/suno/persona/create"
GATEWAY_STATUS_PREFIX: Final = "/suno/fetch/"


def _song(song: Song, phase: float) -> bytes:
    status = word(phase, song.fails, ("QUEUED", "IN_PROGRESS", "SUCCESS", "FAILURE"))
    clips = [
        {"id": cid, "state": "succeeded", "title": "t", "metadata": {"duration": d}}
        for cid, d in song.clips.items()
    ]
    data = {
        "task_id": song.task_id,
        "action": "MUSIC",
        "status": status,
        "fail_reason": song.error_message if status == "FAILURE" else "",
        "progress": "100%" if phase >= 1.0 else f"{int(phase * 100)}%",
        "data": clips if status == "SUCCESS" else [],
    }
    return _encode({"code": "success", "message": "", "data": data})


def _error(code: int, message: str) -> tuple[int, bytes]:
    return code, _encode({"code": "error", "message": message, "data": None})


GATEWAY: Final = _Contract(
    kind="gateway",
    path=GATEWAY_PATH,
    auth_header="authorization",
    style="object",
    message_key="message",
    persona_id_key="id",
    task=None,
    audio="root_clip_id",
    name="name",
    description="description",
    vocal_start=None,
    vocal_end=None,
    style_field=None,
    max_lengths={},
    missing_task_message="clip not found",
    one_per_audio=False,
    echoes_details=True,
    extra_required={"clips": list, "is_public": bool},
    status=StatusEndpoint(
        "GET", f"{GATEWAY_STATUS_PREFIX}{{task_id}}", tail(GATEWAY_STATUS_PREFIX), _song, _error
    ),
)
