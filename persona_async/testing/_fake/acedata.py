"""AceData Cloud's contract (docs.acedata.cloud/api-reference/suno/suno-persona): Bearer, real
HTTP statuses, string codes."""

from __future__ import annotations

from typing import Final

from ._contract import _Contract

ACEDATA_PATH: Final = "/suno/persona"

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
)
