"""The sunoapi.org family (seed 002): camelCase body, Bearer key, one persona per audio.

Songs: ``GET /api/v1/generate/record-info?taskId=`` (the documented shape: ``param`` a JSON
string, clips at ``data.response.sunoData[]``, status PENDING/TEXT_SUCCESS/FIRST_SUCCESS/SUCCESS
or GENERATE_AUDIO_FAILED with ``errorCode``/``errorMessage``).
"""

from __future__ import annotations

from typing import Any, Final

from ._contract import StatusEndpoint, _Contract, envelope_error, param
from ._song import Song
from ._wire import _encode, _envelope

FAMILY_PATH: Final = "/api/v1/generate/generate-persona"
FAMILY_STATUS_PATH: Final = "/api/v1/generate/record-info"


def _task(song: Song, phase: float) -> dict[str, Any]:
    clips = [
        {"id": cid, "audioUrl": f"https://example.invalid/{cid}.mp3", "duration": d}
        for cid, d in song.clips.items()
    ]
    error_code, error_message = None, None
    shown: list[dict[str, Any]]
    if phase < 0.3:
        status, shown = "PENDING", []
    elif phase < 0.6:
        status, shown = "TEXT_SUCCESS", []
    elif phase < 1.0:
        status, shown = "FIRST_SUCCESS", clips[:1]
    elif song.fails:
        status, shown = "GENERATE_AUDIO_FAILED", []
        error_code, error_message = song.error_code, song.error_message
    else:
        status, shown = "SUCCESS", clips
    return {
        "taskId": song.task_id,
        "parentMusicId": "",
        # The family sends param as a JSON *string*.
        "param": _encode({"prompt": "", "customMode": True, "model": "V4_5ALL"}).decode(),
        "response": {"taskId": song.task_id, "sunoData": shown},
        "status": status,
        "type": "GENERATE",
        "errorCode": error_code,
        "errorMessage": error_message,
    }


STATUS: Final = StatusEndpoint(
    "GET",
    f"{FAMILY_STATUS_PATH}?taskId=",
    param(FAMILY_STATUS_PATH, "taskId"),
    lambda song, phase: _envelope("msg", 200, "success", _task(song, phase)),
    envelope_error("msg"),
)

FAMILY: Final = _Contract(
    path=FAMILY_PATH,
    auth_header="authorization",
    style="code",
    kind="family",
    message_key="msg",
    persona_id_key="personaId",
    task="taskId",
    audio="audioId",
    name="name",
    description="description",
    vocal_start="vocalStart",
    vocal_end="vocalEnd",
    style_field="style",
    max_lengths={},
    missing_task_message="record status is not success",
    one_per_audio=True,
    echoes_details=True,
    status=STATUS,
)
