"""Evolink's contract
(https://docs.evolink.ai/en/api-manual/audio-series/suno/suno-persona-creation):
``POST /v1/audios/generations`` answers a task object; ``GET /v1/tasks/{id}`` answers its
``status`` and ``result_data.persona_id``. The same endpoint answers for songs: ``status``, clips
at ``result_data[]`` (``result_id``, ``duration``); the server routes by task id as for kie."""

from __future__ import annotations

from typing import Any, Final

from ._contract import StatusEndpoint, _Contract, tail
from ._song import Song, word
from ._tasks import FakeTask
from ._wire import _encode

EVOLINK_PATH: Final = "/v1/audios/generations"
EVOLINK_STATUS_PREFIX: Final = "/v1/tasks/"
EVOLINK_MODEL: Final = "suno-persona"


def task_object(task: FakeTask, state: str) -> dict[str, Any]:
    said = {"submitted": "pending", "running": "processing"}.get(state, state)
    body: dict[str, Any] = {
        "created": int(task.submitted),
        "id": task.task_id,
        "model": EVOLINK_MODEL,
        "object": "audio.generation.task",
        "progress": 100 if state in ("succeeded", "failed") else 0,
        "status": {"succeeded": "completed"}.get(said, said),
        "task_info": {"can_cancel": False, "estimated_time": 15},
        "type": "audio",
    }
    if state == "succeeded":
        body["result_data"] = {"persona_id": task.persona_id}
    if state == "failed":
        body["error"] = {"code": "generation_failed", "message": "persona generation failed"}
    return body


def _task(task: FakeTask | None, now: float) -> tuple[int, int, bytes]:
    if task is None:
        return 404, 404, _encode({"error": {"code": "not_found", "message": "task not found"}})
    return 200, 200, _encode(task_object(task, task.state(now)))


def _song(song: Song, phase: float) -> bytes:
    status = word(phase, song.fails, ("pending", "processing", "completed", "failed"))
    body: dict[str, Any] = {"id": song.task_id, "model": "suno-v5", "status": status}
    body["progress"] = 100 if phase >= 1.0 else int(phase * 100)
    if status == "completed":
        body["result_data"] = [
            {"result_id": cid, "title": "t", "duration": d} for cid, d in song.clips.items()
        ]
    elif status == "failed":
        body["error"] = {"code": str(song.error_code), "message": song.error_message}
    return _encode(body)


def _error(code: int, message: str) -> tuple[int, bytes]:
    return code, _encode({"error": {"code": str(code), "message": message}})


EVOLINK: Final = _Contract(
    kind="evolink",
    path=EVOLINK_PATH,
    auth_header="authorization",
    style="object",
    message_key="message",
    persona_id_key="id",
    task="source_task_id",
    audio="result_id",
    name="name",
    description="description",
    vocal_start="vocal_start",
    vocal_end="vocal_end",
    style_field="style",
    max_lengths={},
    missing_task_message="source task not found",
    one_per_audio=False,
    echoes_details=False,
    wrap="model_params",
    model=EVOLINK_MODEL,
    status=StatusEndpoint(
        "GET", f"{EVOLINK_STATUS_PREFIX}{{id}}", tail(EVOLINK_STATUS_PREFIX), _song, _error, _task
    ),
    submit_reply=lambda task: _encode(task_object(task, "submitted")),
)
