"""kie's market route (docs.kie.ai/suno-api/generate-persona): ``POST /api/v1/jobs/createTask``
answers a task id; ``GET /api/v1/jobs/recordInfo?taskId=`` answers its ``state`` and, on success, a
``resultJson`` *string* holding the persona id."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from ._contract import _Contract
from ._tasks import FakeTask
from ._wire import _encode

KIE_JOBS_PATH: Final = "/api/v1/jobs/createTask"
KIE_JOBS_STATUS_PATH: Final = "/api/v1/jobs/recordInfo"
KIE_JOBS_MODEL: Final = "ai-music-api/generate-persona"


def status_route(path: str, query: Mapping[str, str]) -> str | None:
    return query.get("taskId", "") if path == KIE_JOBS_STATUS_PATH else None


def status_reply(task: FakeTask | None, now: float) -> tuple[int, int, bytes]:
    if task is None:
        return 200, 404, _encode({"code": 404, "msg": "task not found", "data": None})
    state = task.state(now)
    data = {
        "taskId": task.task_id,
        "model": KIE_JOBS_MODEL,
        "state": {"running": "generating", "succeeded": "success", "failed": "fail"}[state],
        "resultJson": _encode({"persona_id": task.persona_id}).decode()
        if state == "succeeded"
        else "",
        "failCode": "501" if state == "failed" else "",
        "failMsg": "generation failed" if state == "failed" else "",
        "createTime": int(task.submitted * 1000),
    }
    return 200, 200, _encode({"code": 200, "msg": "success", "data": data})


KIE_JOBS: Final = _Contract(
    kind="kie-jobs",
    path=KIE_JOBS_PATH,
    auth_header="authorization",
    style="code",
    message_key="msg",
    persona_id_key="taskId",
    task="task_id",
    audio="audio_id",
    name="name",
    description="description",
    vocal_start="vocal_start",
    vocal_end="vocal_end",
    style_field="style",
    max_lengths={},
    missing_task_message="task_id not found",
    one_per_audio=False,
    echoes_details=False,
    wrap="input",
    model=KIE_JOBS_MODEL,
    status_route=status_route,
    status_reply=status_reply,
)
