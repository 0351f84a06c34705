"""TTAPI: ``POST /suno/v1/persona``, ``TT-API-KEY`` header, ``{status, message, data}``."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import msgspec

from .._exceptions import (
    HTTP_STATUS_TO_EXCEPTION,
    AuthenticationError,
    GenerationFailedError,
    PersonaError,
    RateLimitError,
)
from .._sources_more import TtapiStatus
from ._base import Provider, Wire
from ._styles import StatusReply

__all__ = ["TTAPI_ERRORS", "TtapiProvider"]


class _Body(msgspec.Struct, omit_defaults=True):
    audio_id: str = msgspec.field(name="music_id")
    name: str
    description: str = msgspec.field(name="describe")
    vocal_start: float | None = msgspec.field(default=None, name="vocal_start_s")
    vocal_end: float | None = msgspec.field(default=None, name="vocal_end_s")
    style: str | None = msgspec.field(default=None, name="styles")


#: TTAPI's HTTP statuses (docs.ttapi.io grids/en/development/response) and its body status.
TTAPI_ERRORS: Mapping[Any, type[PersonaError]] = MappingProxyType(
    {
        **HTTP_STATUS_TO_EXCEPTION,
        403: AuthenticationError,  # account blocked (older docs)
        # The queue for this product is exhausted: not created, try again later.
        499: RateLimitError,
        # `status: FAILED` inside HTTP 200: the persona was not made.
        "FAILED": GenerationFailedError,
    }
)


class TtapiProvider(Provider):
    """TTAPI (api.ttapi.io): synchronous; the key rides in ``TT-API-KEY``.

    The clip is sent as ``music_id``, the description as ``describe``, the style as
    ``styles``, the vocal window as ``vocal_start_s``/``vocal_end_s``; ``task_id`` is not sent.
    A 499 (queue exhausted) cools the lane like a 429; a 504 (the synchronous call timed out)
    may have made the persona and is not resent. No duplicate detection is documented.
    """

    kind = "ttapi"
    api_key_env = "TTAPI_API_KEY"
    default_base_url = "https://api.ttapi.io"
    path = "/suno/v1/persona"
    wire = Wire(body=_Body, reply=StatusReply())
    errors = TTAPI_ERRORS
    source_status = TtapiStatus()

    __slots__ = ()

    def auth_headers(self) -> dict[str, str]:
        return {"TT-API-KEY": self._api_key}
