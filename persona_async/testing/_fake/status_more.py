"""The fake's song status for the providers whose status endpoints are not crun's or the
sunoapi.org family's (``_sources_more.py`` asks them), each in its documented shape.

* kie's market route: ``GET /api/v1/jobs/recordInfo?taskId=`` (docs.kie.ai, market
  get-task-detail): ``data.state`` waiting/queuing/generating/success/fail, the music in
  ``data.resultJson`` (a JSON *string*, clips at its ``data[]``), ``failCode``/``failMsg`` on a
  failure. Shared with kie's persona tasks: the server routes by task id (a known song, else a
  persona task).
* AceData: ``POST /suno/tasks {"id", "action": "retrieve"}`` (AceData's Suno tasks API):
  ``state`` pending/processing/complete/failed, clips at ``response.data[]`` (an empty
  ``response`` until complete).
* Evolink: ``GET /v1/tasks/{id}`` (docs.evolink.ai, get task detail): ``status``, clips at
  ``result_data[]`` (``result_id``, ``duration``). Shared with Evolink's persona tasks, routed by
  task id as for kie.
* the gateways: ``GET /suno/fetch/{task_id}`` (new-api's Suno fetch): ``code: "success"``,
  ``data.status`` NOT_START/QUEUED/IN_PROGRESS/SUCCESS/FAILURE, clips at ``data.data[]`` with raw
  Suno's ``metadata.duration``.
* TTAPI: ``GET /suno/v2/fetch?jobId=`` (docs.ttapi.io, suno_fetch): ``status``
  ON_QUEUE/SUCCESS/FAILED, clips at ``data.musics[]`` (``musicId``, ``duration`` a *string*);
  key in ``TT-API-KEY``.
* MountSea: ``GET /suno/v2/status?taskId=`` (docs.mountsea.ai, suno task): ``status``
  queued/running/stream/success/failed, ``failCode``/``failReason``, ``data: {}`` (its clips are
  not documented).

Each renderer takes (song, phase) and returns the JSON body of a 200; each ``*_error`` takes
(code, message) and returns (HTTP status, body) for an error reply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from ._wire import _encode, _envelope

if TYPE_CHECKING:
    from .status import Song

KIE_JOBS_SONG_PATH: Final = "/api/v1/jobs/recordInfo"
ACEDATA_SONG_PATH: Final = "/suno/tasks"
EVOLINK_SONG_PREFIX: Final = "/v1/tasks/"
GATEWAY_SONG_PREFIX: Final = "/suno/fetch/"
TTAPI_SONG_PATH: Final = "/suno/v2/fetch"
MOUNTSEA_SONG_PATH: Final = "/suno/v2/status"


def _word(phase: float, failed: bool, words: tuple[str, str, str, str]) -> str:
    """Early running word, late running word, success word, failure word by phase."""
    if phase < 1.0:
        return words[0] if phase < 0.5 else words[1]
    return words[3] if failed else words[2]


def kie_jobs_song(song: Song, phase: float) -> bytes:
    state = _word(phase, song.fails, ("queuing", "generating", "success", "fail"))
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


def kie_jobs_error(code: int, message: str) -> tuple[int, bytes]:
    return (429 if code == 429 else 200), _envelope("msg", code, message)


def acedata_song(song: Song, phase: float) -> bytes:
    state = _word(phase, song.fails, ("pending", "processing", "complete", "failed"))
    response: dict[str, Any] = {}
    if state == "complete":
        clips = [
            {"id": cid, "audio_url": f"https://example.invalid/{cid}.mp3", "duration": d}
            for cid, d in song.clips.items()
        ]
        response = {"success": True, "task_id": song.task_id, "data": clips}
    elif state == "failed":
        error = {"code": str(song.error_code), "message": song.error_message}
        response = {"success": False, "task_id": song.task_id, "error": error}
    return _encode(
        {
            "_id": "fake",
            "id": song.task_id,
            "api_id": "fake-api",
            "state": state,
            "request": {"action": "generate"},
            "trace_id": "trace-fake",
            "response": response,
        }
    )


_ACEDATA_NAMES: Final = {401: "invalid_token", 404: "no_api", 429: "too_many_requests"}


def acedata_error(code: int, message: str) -> tuple[int, bytes]:
    name = _ACEDATA_NAMES.get(code, "api_error")
    return code, _encode({"error": {"code": name, "message": message}, "trace_id": "trace-fake"})


def evolink_song(song: Song, phase: float) -> bytes:
    status = _word(phase, song.fails, ("pending", "processing", "completed", "failed"))
    body: dict[str, Any] = {"id": song.task_id, "model": "suno-v5", "status": status}
    body["progress"] = 100 if phase >= 1.0 else int(phase * 100)
    if status == "completed":
        body["result_data"] = [
            {"result_id": cid, "title": "t", "duration": d} for cid, d in song.clips.items()
        ]
    elif status == "failed":
        body["error"] = {"code": str(song.error_code), "message": song.error_message}
    return _encode(body)


def evolink_error(code: int, message: str) -> tuple[int, bytes]:
    return code, _encode({"error": {"code": str(code), "message": message}})


def gateway_song(song: Song, phase: float) -> bytes:
    status = _word(phase, song.fails, ("QUEUED", "IN_PROGRESS", "SUCCESS", "FAILURE"))
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


def gateway_error(code: int, message: str) -> tuple[int, bytes]:
    return code, _encode({"code": "error", "message": message, "data": None})


def ttapi_song(song: Song, phase: float) -> bytes:
    status = _word(phase, song.fails, ("ON_QUEUE", "ON_QUEUE", "SUCCESS", "FAILED"))
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


def ttapi_error(code: int, message: str) -> tuple[int, bytes]:
    return code, _encode({"status": "FAILED", "message": message, "data": None})


def mountsea_song(song: Song, phase: float) -> bytes:
    status = _word(phase, song.fails, ("queued", "stream", "success", "failed"))
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


def mountsea_error(code: int, message: str) -> tuple[int, bytes]:
    return code, _encode({"message": message, "statusCode": code})
