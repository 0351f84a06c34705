"""MountSea: ``POST /suno/v2/persona``, Bearer, the persona object back with HTTP 201."""

from __future__ import annotations

from typing import Any

import msgspec

from .._exceptions import HTTP_STATUS_TO_EXCEPTION
from .._models import PersonaRequest
from .._sources_more import MountSeaStatus
from ._base import Provider, Wire, check_is_public
from ._styles import ObjectReply

__all__ = ["MountSeaProvider"]


class _Body(msgspec.Struct, omit_defaults=True):
    audio_id: str = msgspec.field(name="clip_id")
    name: str
    description: str
    is_public: bool
    vocal_start: float | None = msgspec.field(default=None, name="vocal_start_s")
    vocal_end: float | None = msgspec.field(default=None, name="vocal_end_s")
    style: str | None = msgspec.field(default=None, name="user_input_styles")


class MountSeaProvider(Provider):
    """MountSea (api.mountsea.ai): synchronous, HTTP 201 with the persona object (``id``).

    The clip is sent as ``clip_id``, the style as ``user_input_styles``; ``task_id`` is not
    sent. ``is_public`` is required by MountSea; it defaults to False here. Errors are not
    documented; HTTP statuses are read as their usual meaning::

        MountSeaProvider(api_key="...", is_public=False)
    """

    kind = "mountsea"
    api_key_env = "MOUNTSEA_API_KEY"
    default_base_url = "https://api.mountsea.ai"
    path = "/suno/v2/persona"
    wire = Wire(body=_Body, reply=ObjectReply())
    errors = HTTP_STATUS_TO_EXCEPTION
    source_status = MountSeaStatus()

    __slots__ = ("is_public",)

    def __init__(self, *, is_public: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self.is_public = check_is_public(type(self).__name__, is_public)

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}

    def encode(self, request: PersonaRequest) -> bytes:
        return self.wire.encode(request, is_public=self.is_public)
