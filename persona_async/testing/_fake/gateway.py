"""The Suno-API gateways' contract (CometAPI, DeerAPI: apidoc.deerapi.com, "new persona"): the raw
Suno persona object back, its ``id`` the persona id; errors as HTTP statuses."""

from __future__ import annotations

from typing import Final

from ._contract import _Contract

GATEWAY_PATH: Final = "/suno/persona/create"

GATEWAY: Final = _Contract(
    kind="gateway",
    path=GATEWAY_PATH,
    auth_header="authorization",
    style="object",
    message_key="message",
    persona_id_key="id",
    task=None,
    audio="root_clip_id",
    name="name",
    description="description",
    vocal_start=None,
    vocal_end=None,
    style_field=None,
    max_lengths={},
    missing_task_message="clip not found",
    one_per_audio=False,
    echoes_details=True,
    extra_required={"clips": list, "is_public": bool},
)
