"""DeerAPI: the Suno-API gateway contract at api.deerapi.com."""

from __future__ import annotations

from ._gateway import SunoGatewayProvider

__all__ = ["DeerApiProvider"]


class DeerApiProvider(SunoGatewayProvider):
    """DeerAPI (api.deerapi.com): synchronous, the raw Suno persona object back."""

    kind = "deerapi"
    api_key_env = "DEERAPI_API_KEY"
    default_base_url = "https://api.deerapi.com"
    documentation = "partly: its errors are read as CometAPI's"

    __slots__ = ()
