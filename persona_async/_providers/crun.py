"""crun: ``POST /api/v1/client/job/suno-persona-generate``, snake_case, ``x-api-key``."""

from __future__ import annotations

from types import MappingProxyType

import msgspec

from .._sources import CrunStatus
from ._base import Provider, Wire
from ._styles import CodeEnvelopeReply

__all__ = ["CrunProvider"]


class _Body(msgspec.Struct, omit_defaults=True):
    task_id: str
    audio_id: str = msgspec.field(name="suno_id")
    name: str
    description: str
    vocal_start: float | None = None
    vocal_end: float | None = None
    style: str | None = None


class CrunProvider(Provider):
    """crun (api.crun.ai): synchronous; the persona id comes back in the reply.

    crun documents no duplicate detection, so a create whose outcome is unknown is not resent
    unless ``retry_ambiguous=True``::

        CrunProvider(api_key="...", rate_limit=20, rate_period=10)
    """

    kind = "crun"
    api_key_env = "CRUN_API_KEY"
    default_base_url = "https://api.crun.ai"
    path = "/api/v1/client/job/suno-persona-generate"
    wire = Wire(body=_Body, reply=CodeEnvelopeReply(message_key="message", id_key="persona_id"))
    max_lengths = MappingProxyType({"name": 100, "description": 1000, "style": 1000})
    source_status = CrunStatus()

    __slots__ = ()

    def auth_headers(self) -> dict[str, str]:
        return {"x-api-key": self._api_key}
