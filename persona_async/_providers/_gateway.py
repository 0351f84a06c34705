"""The Suno-API gateway contract (new-api deployments): ``POST {base}/suno/persona/create``.

Bearer; the reply is the raw Suno persona object, whose ``id`` is the persona id; errors are
HTTP statuses. One implementation; each host is a subclass of a few lines.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .._exceptions import HTTP_STATUS_TO_EXCEPTION
from .._models import PersonaRequest
from .._sources_more import GatewayStatus
from ._base import OPTIONAL_FIELDS, Provider, Wire, check_is_public
from ._styles import ObjectReply

__all__ = ["SunoGatewayProvider"]


class _Body(msgspec.Struct):
    audio_id: str = msgspec.field(name="root_clip_id")
    name: str
    description: str
    clips: list[str]
    is_public: bool


class SunoGatewayProvider(Provider):
    """The shared gateway implementation. ``is_public`` (default False) decides whether the
    persona is public on the upstream account; the clip is sent as ``root_clip_id`` and as
    the only entry of ``clips``. The gateways take no task id and document no vocal window or
    style: those are refused. No duplicate detection is documented."""

    path = "/suno/persona/create"
    wire = Wire(body=_Body, reply=ObjectReply())
    unsupported_fields = OPTIONAL_FIELDS
    errors = HTTP_STATUS_TO_EXCEPTION
    source_status = GatewayStatus()

    __slots__ = ("is_public",)

    def __init__(self, *, is_public: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self.is_public = check_is_public(type(self).__name__, is_public)

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}

    def encode(self, request: PersonaRequest) -> bytes:
        return self.wire.encode(request, clips=[request.audio_id], is_public=self.is_public)
