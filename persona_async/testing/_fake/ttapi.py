"""TTAPI's contract (docs.ttapi.io/api/en/suno/suno_persona): ``TT-API-KEY``, ``{status,
message, data}``."""

from __future__ import annotations

from typing import Final

from ._contract import _Contract

TTAPI_PATH: Final = "/suno/v1/persona"

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
)
