"""crun's contract (seed 000): snake_case body, ``x-api-key``, a new persona on every create.

Songs: ``GET /api/v1/client/job/TaskInfo?task_id=`` (``data.status`` pending/running/success/
failed, clips at ``data.result.suno_data[]`` as ``{"suno_id", "duration"}``: crun does not
document the item, so this is the shape the SDK assumes).
"""

from __future__ import annotations

from typing import Any, Final

from ._contract import StatusEndpoint, _Contract, envelope_error, param
from ._song import Song
from ._wire import _envelope

CRUN_PATH: Final = "/api/v1/client/job/suno-persona-generate"
CRUN_STATUS_PATH: Final = "/api/v1/client/job/TaskInfo"


def _task(song: Song, phase: float) -> dict[str, Any]:
    result: dict[str, Any] | None = None
    if phase < 1.0:
        status = "pending" if phase < 0.3 else song.running_word
    elif song.fails:
        status = "failed"
        result = {"code": song.error_code, "message": song.error_message}
    else:
        status = "success"
        clips = [{"suno_id": cid, "duration": d} for cid, d in song.clips.items()]
        result = {"code": 200, "message": "success", "media_urls": [], "suno_data": clips}
    return {
        "task_id": song.task_id,
        "provider": "Suno",
        "model_version": "sunov5",
        "status": status,
        "param": {"model": "suno/music-generate", "callback_url": None, "input": {}},
        "create_at": 1768900378,
        "result": result,
        "duration_s": None,
        "complete_at": None,
        "source": "api",
    }


STATUS: Final = StatusEndpoint(
    "GET",
    f"{CRUN_STATUS_PATH}?task_id=",
    param(CRUN_STATUS_PATH, "task_id"),
    lambda song, phase: _envelope("message", 200, "success", _task(song, phase)),
    envelope_error("message"),
)

CRUN: Final = _Contract(
    path=CRUN_PATH,
    auth_header="x-api-key",
    style="code",
    kind="crun",
    message_key="message",
    persona_id_key="persona_id",
    task="task_id",
    audio="suno_id",
    name="name",
    description="description",
    vocal_start="vocal_start",
    vocal_end="vocal_end",
    style_field="style",
    # Only crun documents length limits; the family documents none.
    max_lengths={"name": 100, "description": 1000, "style": 1000},
    missing_task_message="task_id not found",
    one_per_audio=False,
    echoes_details=False,
    status=STATUS,
)
