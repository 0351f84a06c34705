"""api.box: the family skeleton on apibox.erweima.ai."""

from __future__ import annotations

from ._family import SunoApiFamilyProvider

__all__ = ["ApiBoxProvider"]


class ApiBoxProvider(SunoApiFamilyProvider):
    """api.box (apibox.erweima.ai). Its current page documents no 10-30 s vocal window, only
    "vocalEnd must be greater than vocalStart" (https://docs.api.box/suno-api/generate-persona),
    so only that is checked here; api.box judges the rest itself."""

    kind = "apibox"
    api_key_env = "APIBOX_API_KEY"
    default_base_url = "https://apibox.erweima.ai"
    documentation = "in full"
    vocal_window = None

    __slots__ = ()
