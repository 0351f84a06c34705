"""TTAPI's contract (https://docs.ttapi.io/api/en/suno/suno_persona): ``TT-API-KEY``,
``{status, message, data}``.

Songs: ``GET /suno/v2/fetch?jobId=``: ``status`` ON_QUEUE/SUCCESS/FAILED, clips at
``data.musics[]`` (``musicId``, ``duration`` a *string*).
"""

from __future__ import annotations

from typing import Final

from ._contract import StatusEndpoint, _Contract, param
from ._song import Song, word
from ._wire import _encode

TTAPI_PATH: Final = "/suno/v1/persona"
TTAPI_STATUS_PATH: Final = "/suno/v2/fetch"


def _song(song: Song, phase: float) -> bytes:
    status = word(phase, song.fails, ("ON_QUEUE", "ON_QUEUE", "SUCCESS", "FAILED"))
    musics = [
        {"musicId": cid, "title": "t", "audioUrl": "https://example.invalid", "duration": f"{d}"}
        for cid, d in song.clips.items()
    ]
    data = {
        "jobId": song.task_id,
        "action": "music",
        "progress": "100%" if phase >= 1.0 else f"{int(phase * 100)}%",
        "musics": musics if status == "SUCCESS" else [],
    }
    message = song.error_message if status == "FAILED" else "success"
    return _encode({"status": status, "message": message, "jobId": song.task_id, "data": data})


def _error(code: int, message: str) -> tuple[int, bytes]:
    return code, _encode({"status": "FAILED", "message": message, "data": None})


TTAPI: Final = _Contract(
    kind="ttapi",
    path=TTAPI_PATH,
    auth_header="tt-api-key",
    style="status",
    message_key="message",
    persona_id_key="persona_id",
    task=None,
    audio="music_id",
    name="name",
    description="describe",
    description_required=False,
    vocal_start="vocal_start_s",
    vocal_end="vocal_end_s",
    style_field="styles",
    max_lengths={},
    missing_task_message="music_id not found",
    one_per_audio=False,
    echoes_details=False,
    status=StatusEndpoint(
        "GET", f"{TTAPI_STATUS_PATH}?jobId=", param(TTAPI_STATUS_PATH, "jobId"), _song, _error
    ),
)
