"""MountSea's contract (docs.mountsea.ai/api-reference/suno/persona): Bearer, the persona object
back with HTTP 201."""

from __future__ import annotations

from typing import Final

from ._contract import _Contract

MOUNTSEA_PATH: Final = "/suno/v2/persona"

MOUNTSEA: Final = _Contract(
    kind="mountsea",
    path=MOUNTSEA_PATH,
    auth_header="authorization",
    style="object",
    message_key="message",
    persona_id_key="id",
    task=None,
    audio="clip_id",
    name="name",
    description="description",
    description_required=False,
    vocal_start="vocal_start_s",
    vocal_end="vocal_end_s",
    style_field="user_input_styles",
    max_lengths={},
    missing_task_message="clip not found",
    one_per_audio=False,
    echoes_details=True,
    extra_required={"is_public": bool},
    success_status=201,
)
