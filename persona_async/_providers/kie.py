"""kie.ai's legacy route: the family skeleton; its spec adds codes 408, 501 and 505."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .._exceptions import CODE_TO_EXCEPTION, PersonaError, ProviderTimeoutError
from ._family import SunoApiFamilyProvider

__all__ = ["KIE_ERRORS", "KieProvider"]

#: kie's codes. kie's error schema documents 408 as "no result has been returned for over 10
#: minutes" (https://docs.kie.ai/old-model/suno-api/generate-persona): the persona may exist,
#: so it is a sent-and-lost reply, resent only where a repeat is refused with 409 (the legacy
#: route) or when ``retry_ambiguous=True``.
KIE_ERRORS: Mapping[Any, type[PersonaError]] = MappingProxyType(
    {**CODE_TO_EXCEPTION, 408: ProviderTimeoutError}
)


class KieProvider(SunoApiFamilyProvider):
    """kie.ai (api.kie.ai). Publishes 20 new generation requests per 10 seconds per account;
    excess is rejected with 429, not queued. The vocal window is rounded to 0.01 s, as kie
    requires."""

    kind = "kie"
    api_key_env = "KIE_API_KEY"
    default_base_url = "https://api.kie.ai"
    documentation = "in full; kie's legacy route"
    errors = KIE_ERRORS
    vocal_step = 0.01

    __slots__ = ()
