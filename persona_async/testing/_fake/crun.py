"""crun's contract (seed 000): snake_case body, ``x-api-key``, a new persona on every create."""

from __future__ import annotations

from typing import Final

from ._contract import _Contract

CRUN_PATH: Final = "/api/v1/client/job/suno-persona-generate"

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
)
