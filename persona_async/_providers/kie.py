"""kie.ai: the family skeleton; its spec adds codes 408, 501 and 505."""

from __future__ import annotations

from ._family import SunoApiFamilyProvider

__all__ = ["KieProvider"]


class KieProvider(SunoApiFamilyProvider):
    """kie.ai (api.kie.ai). Publishes 20 new generation requests per 10 seconds per account;
    excess is rejected with 429, not queued."""

    kind = "kie"
    api_key_env = "KIE_API_KEY"
    default_base_url = "https://api.kie.ai"

    __slots__ = ()
