"""crun: ``POST /api/v1/client/job/suno-persona-generate``, snake_case, ``x-api-key``."""

from __future__ import annotations

from types import MappingProxyType

import msgspec

from .._models import PersonaRequest
from ._base import Provider, Reply

__all__ = ["CrunProvider"]


class _Body(msgspec.Struct, omit_defaults=True):
    task_id: str
    suno_id: str
    name: str
    description: str
    vocal_start: float | None = None
    vocal_end: float | None = None
    style: str | None = None


class _Data(msgspec.Struct):
    persona_id: str


class _Envelope(msgspec.Struct):
    code: int
    message: str | None = None
    # Decoded only on success, so an error reply with an odd `data` is still read.
    data: msgspec.Raw = msgspec.Raw(b"null")


_encode = msgspec.json.Encoder().encode
_decode_envelope = msgspec.json.Decoder(_Envelope).decode
_decode_data = msgspec.json.Decoder(_Data).decode


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
    max_lengths = MappingProxyType({"name": 100, "description": 1000, "style": 1000})

    __slots__ = ()

    def auth_headers(self) -> dict[str, str]:
        return {"x-api-key": self._api_key}

    def encode(self, request: PersonaRequest) -> bytes:
        return _encode(
            _Body(
                task_id=request.task_id,
                suno_id=request.audio_id,
                name=request.name,
                description=request.description,
                vocal_start=request.vocal_start,
                vocal_end=request.vocal_end,
                style=request.style,
            )
        )

    def decode(self, body: bytes) -> Reply:
        envelope = _decode_envelope(body)
        if envelope.code != 200:
            return Reply(envelope.code, envelope.message or "")
        return Reply(200, envelope.message or "", _decode_data(envelope.data).persona_id)
