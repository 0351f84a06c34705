"""The sunoapi.org family (seed 002): camelCase body, Bearer key, one persona per audio."""

from __future__ import annotations

from typing import Final

from ._contract import _Contract

FAMILY_PATH: Final = "/api/v1/generate/generate-persona"

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
)
