"""CometAPI: the Suno-API gateway contract at api.cometapi.com."""

from __future__ import annotations

from ._gateway import SunoGatewayProvider

__all__ = ["CometApiProvider"]


class CometApiProvider(SunoGatewayProvider):
    """CometAPI (api.cometapi.com): synchronous, the raw Suno persona object back::

    CometApiProvider(api_key="...", is_public=False)
    """

    kind = "cometapi"
    api_key_env = "COMETAPI_API_KEY"
    default_base_url = "https://api.cometapi.com"
    documentation = "in full, errors included"

    __slots__ = ()
