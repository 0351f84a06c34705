"""Evolink's contract (docs.evolink.ai, Suno persona creation): ``POST /v1/audios/generations``
answers a task object; ``GET /v1/tasks/{id}`` answers its ``status`` and
``result_data.persona_id``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ._contract import _Contract
from ._tasks import FakeTask
from ._wire import _encode

EVOLINK_PATH: Final = "/v1/audios/generations"
EVOLINK_STATUS_PREFIX: Final = "/v1/tasks/"
EVOLINK_MODEL: Final = "suno-persona"


def status_route(path: str, query: Mapping[str, str]) -> str | None:
    if path.startswith(EVOLINK_STATUS_PREFIX):
        return path[len(EVOLINK_STATUS_PREFIX) :]
    return None


def task_object(task: FakeTask, state: str) -> dict[str, Any]:
    word = {"submitted": "pending", "running": "processing"}.get(state, state)
    body: dict[str, Any] = {
        "created": int(task.submitted),
        "id": task.task_id,
        "model": EVOLINK_MODEL,
        "object": "audio.generation.task",
        "progress": 100 if state in ("succeeded", "failed") else 0,
        "status": {"succeeded": "completed"}.get(word, word),
        "task_info": {"can_cancel": False, "estimated_time": 15},
        "type": "audio",
    }
    if state == "succeeded":
        body["result_data"] = {"persona_id": task.persona_id}
    if state == "failed":
        body["error"] = {"code": "generation_failed", "message": "persona generation failed"}
    return body


def status_reply(task: FakeTask | None, now: float) -> tuple[int, int, bytes]:
    if task is None:
        return 404, 404, _encode({"error": {"code": "not_found", "message": "task not found"}})
    return 200, 200, _encode(task_object(task, task.state(now)))


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
    status_route=status_route,
    status_reply=status_reply,
    submit_reply=lambda task: _encode(task_object(task, "submitted")),
)
