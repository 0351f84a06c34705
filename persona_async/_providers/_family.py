"""The sunoapi.org family: one API skeleton behind apikley, sunoapi.org, kie.ai and api.box.

``POST {base}/api/v1/generate/generate-persona``, camelCase, ``Authorization: Bearer``. Each
audio id can make one persona; a repeat is answered with 409, which makes an ambiguous create
safe to resend.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from .._sources import FamilyStatus
from ._base import Provider, Wire
from ._styles import CodeEnvelopeReply

__all__ = ["SunoApiFamilyProvider"]


class _Body(msgspec.Struct, rename="camel", omit_defaults=True):
    task_id: str
    audio_id: str
    name: str
    description: str
    vocal_start: float | None = None
    vocal_end: float | None = None
    style: str | None = None


# The family's older shared schema (still on some status pages) numbers things differently:
# 405 and 430 are rate limits, and 429 may mean "insufficient credits". Read code and message.
_LEGACY_RATE_CODES = frozenset({405, 430})
_CREDIT_WORDS = ("credit", "balance", "insufficient")


class SunoApiFamilyProvider(Provider):
    """The shared implementation; subclasses set only defaults and documented quirks."""

    detects_duplicates = True
    path = "/api/v1/generate/generate-persona"
    wire = Wire(body=_Body, reply=CodeEnvelopeReply(message_key="msg", id_key="personaId"))
    vocal_window: ClassVar[tuple[float, float] | None] = (10.0, 30.0)
    source_status = FamilyStatus()

    __slots__ = ()

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}

    def classify(self, code: int | str, message: str) -> int | str:
        if code == 429 and any(word in message.lower() for word in _CREDIT_WORDS):
            return 402
        if code in _LEGACY_RATE_CODES:
            return 429
        return code
