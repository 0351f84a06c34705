"""kie's market route (https://docs.kie.ai/suno-api/generate-persona,
https://docs.kie.ai/market/common/get-task-detail): ``POST /api/v1/jobs/createTask`` answers a task
id; ``GET /api/v1/jobs/recordInfo?taskId=`` answers its ``state`` and, on success, a
``resultJson`` *string* holding the persona id. The same endpoint answers for songs: ``state``
waiting/queuing/generating/success/fail, the music in ``resultJson`` (clips at its ``data[]``),
``failCode``/``failMsg`` on a failure; the server routes by task id (a known song, else a
persona task)."""

from __future__ import annotations

from typing import Final

from ._contract import StatusEndpoint, _Contract, envelope_error, param
from ._song import Song, word
from ._tasks import FakeTask
from ._wire import _encode, _envelope

KIE_JOBS_PATH: Final = "/api/v1/jobs/createTask"
KIE_JOBS_STATUS_PATH: Final = "/api/v1/jobs/recordInfo"
KIE_JOBS_MODEL: Final = "ai-music-api/generate-persona"


def _task(task: FakeTask | None, now: float) -> tuple[int, int, bytes]:
    if task is None:
        return 200, 404, _envelope("msg", 404, "task not found")
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
    return 200, 200, _envelope("msg", 200, "success", data)


def _song(song: Song, phase: float) -> bytes:
    state = word(phase, song.fails, ("queuing", "generating", "success", "fail"))
    music = {
        "code": 200,
        "data": [
            {"id": cid, "audio_url": f"https://example.invalid/{cid}.mp3", "duration": d}
            for cid, d in song.clips.items()
        ],
    }
    data = {
        "taskId": song.task_id,
        "model": "suno/generate-music",
        "state": state,
        "param": "{}",
        "resultJson": _encode(music).decode() if state == "success" else "",
        "failCode": str(song.error_code) if state == "fail" else "",
        "failMsg": song.error_message if state == "fail" else "",
    }
    return _envelope("msg", 200, "success", data)


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
    status=StatusEndpoint(
        "GET",
        f"{KIE_JOBS_STATUS_PATH}?taskId=",
        param(KIE_JOBS_STATUS_PATH, "taskId"),
        _song,
        envelope_error("msg"),
        _task,
    ),
)
