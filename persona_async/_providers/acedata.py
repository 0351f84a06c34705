"""AceData Cloud: ``POST /suno/persona``, Bearer, real HTTP statuses with string error codes."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import msgspec

from .._exceptions import (
    HTTP_STATUS_TO_EXCEPTION,
    AuthenticationError,
    FeatureDisabledError,
    InsufficientCreditsError,
    NotFoundError,
    PersonaError,
    ProviderTimeoutError,
    RateLimitError,
    ServerError,
    ValidationError,
)
from .._sources_more import AceDataStatus
from ._base import Provider, Wire
from ._styles import AceDataReply

__all__ = ["ACEDATA_ERRORS", "AceDataProvider"]


class _Body(msgspec.Struct, omit_defaults=True):
    audio_id: str
    name: str
    description: str
    vocal_start: float | None = None
    vocal_end: float | None = None


#: AceData's platform error codes (AceDataCloud/Docs ``concepts/responses.mdx`` and the suno
#: OpenAPI), then the HTTP statuses for a reply without an ``error`` object.
ACEDATA_ERRORS: Mapping[Any, type[PersonaError]] = MappingProxyType(
    {
        **HTTP_STATUS_TO_EXCEPTION,
        "bad_request": ValidationError,
        "api_not_implemented": FeatureDisabledError,
        "no_token": AuthenticationError,
        "invalid_token": AuthenticationError,
        "token_expired": AuthenticationError,
        "token_mismatched": AuthenticationError,
        "disabled": AuthenticationError,
        "used_up": InsufficientCreditsError,
        "forbidden": ValidationError,  # content moderation: this request, not the key
        "no_api": NotFoundError,
        "too_many_requests": RateLimitError,
        "api_error": ServerError,
        "timeout": ProviderTimeoutError,
    }
)


class AceDataProvider(Provider):
    """AceData Cloud (api.acedata.cloud): synchronous; the persona id comes back in the reply.

    The token is bound to the Suno service (another service's token is ``token_mismatched``).
    AceData takes no source task id and documents no ``style``, so ``style`` is refused;
    ``task_id`` is not sent. No duplicate detection is documented::

        AceDataProvider(api_key="...")
    """

    kind = "acedata"
    api_key_env = "ACEDATA_API_KEY"
    default_base_url = "https://api.acedata.cloud"
    path = "/suno/persona"
    wire = Wire(body=_Body, reply=AceDataReply())
    unsupported_fields = frozenset({"style"})
    errors = ACEDATA_ERRORS
    source_status = AceDataStatus()

    __slots__ = ()

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}
