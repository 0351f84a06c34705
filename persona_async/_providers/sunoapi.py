"""sunoapi.org: the family's reference host."""

from __future__ import annotations

from ._family import SunoApiFamilyProvider

__all__ = ["SunoApiProvider"]


class SunoApiProvider(SunoApiFamilyProvider):
    """sunoapi.org (api.sunoapi.org). Publishes "20 requests every 10 seconds". The vocal
    window is rounded to 0.01 s, as sunoapi.org requires."""

    kind = "sunoapi"
    api_key_env = "SUNOAPI_API_KEY"
    default_base_url = "https://api.sunoapi.org"
    documentation = "in full"
    vocal_step = 0.01

    __slots__ = ()
