"""AceData Cloud's contract (https://docs.acedata.cloud/api-reference/suno/suno-persona): Bearer,
real HTTP statuses, string codes.

Songs: ``POST /suno/tasks {"id", "action": "retrieve"}`` (AceData's tasks guide, in
https://github.com/AceDataCloud/SunoAPI; states from its MCP server): ``state`` pending/processing/
complete/failed, clips at ``response.data[]`` (an empty ``response`` until complete).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from ._contract import StatusEndpoint, _Contract
from ._song import Song, word
from ._wire import _encode

ACEDATA_PATH: Final = "/suno/persona"
ACEDATA_STATUS_PATH: Final = "/suno/tasks"
_NAMES: Final = {401: "invalid_token", 404: "no_api", 429: "too_many_requests"}


def _task_of(path: str, query: Mapping[str, str], body: Any) -> str | None:
    if path != ACEDATA_STATUS_PATH:
        return None
    asked = body.get("id") if isinstance(body, dict) and body.get("action") == "retrieve" else None
    return asked if isinstance(asked, str) else ""


def _song(song: Song, phase: float) -> bytes:
    state = word(phase, song.fails, ("pending", "processing", "complete", "failed"))
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


def _error(code: int, message: str) -> tuple[int, bytes]:
    name = _NAMES.get(code, "api_error")
    return code, _encode({"error": {"code": name, "message": message}, "trace_id": "trace-fake"})


ACEDATA: Final = _Contract(
    kind="acedata",
    path=ACEDATA_PATH,
    auth_header="authorization",
    style="acedata",
    message_key="message",
    persona_id_key="persona_id",
    task=None,
    audio="audio_id",
    name="name",
    description="description",
    description_required=False,
    vocal_start="vocal_start",
    vocal_end="vocal_end",
    style_field=None,
    max_lengths={},
    missing_task_message="audio_id not found",
    one_per_audio=False,
    echoes_details=False,
    status=StatusEndpoint(
        "POST", f'{ACEDATA_STATUS_PATH} {{"id", "action": "retrieve"}}', _task_of, _song, _error
    ),
)
