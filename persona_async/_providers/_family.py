"""The sunoapi.org family: one API skeleton behind apikley, sunoapi.org, kie.ai and api.box.

``POST {base}/api/v1/generate/generate-persona``, camelCase, ``Authorization: Bearer``. Each
audio id can make one persona; a repeat is answered with 409, which makes an ambiguous create
safe to resend.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from .._models import PersonaRequest
from ._base import Provider, Reply

__all__ = ["SunoApiFamilyProvider"]


class _Body(msgspec.Struct, rename="camel", omit_defaults=True):
    task_id: str
    audio_id: str
    name: str
    description: str
    vocal_start: float | None = None
    vocal_end: float | None = None
    style: str | None = None


class _Data(msgspec.Struct, rename="camel"):
    persona_id: str


class _Envelope(msgspec.Struct):
    code: int
    msg: str | None = None
    # Decoded only on success, so an error reply with an odd `data` is still read.
    data: msgspec.Raw = msgspec.Raw(b"null")


_encode = msgspec.json.Encoder().encode
_decode_envelope = msgspec.json.Decoder(_Envelope).decode
_decode_data = msgspec.json.Decoder(_Data).decode

# The family's older shared schema (still on some status pages) numbers things differently:
# 405 and 430 are rate limits, and 429 may mean "insufficient credits". Read code and message.
_LEGACY_RATE_CODES = frozenset({405, 430})
_CREDIT_WORDS = ("credit", "balance", "insufficient")


class SunoApiFamilyProvider(Provider):
    """The shared implementation; subclasses set only defaults and documented quirks."""

    detects_duplicates = True
    path = "/api/v1/generate/generate-persona"
    vocal_window: ClassVar[tuple[float, float] | None] = (10.0, 30.0)

    __slots__ = ()

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}

    def encode(self, request: PersonaRequest) -> bytes:
        return _encode(
            _Body(
                task_id=request.task_id,
                audio_id=request.audio_id,
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
            return Reply(envelope.code, envelope.msg or "")
        return Reply(200, envelope.msg or "", _decode_data(envelope.data).persona_id)

    def classify(self, code: int, message: str) -> int:
        if code == 429 and any(word in message.lower() for word in _CREDIT_WORDS):
            return 402
        if code in _LEGACY_RATE_CODES:
            return 429
        return code
