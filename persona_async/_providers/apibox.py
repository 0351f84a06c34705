"""api.box: the family skeleton on apibox.erweima.ai."""

from __future__ import annotations

from ._family import SunoApiFamilyProvider

__all__ = ["ApiBoxProvider"]


class ApiBoxProvider(SunoApiFamilyProvider):
    """api.box (apibox.erweima.ai)."""

    kind = "apibox"
    api_key_env = "APIBOX_API_KEY"
    default_base_url = "https://apibox.erweima.ai"

    __slots__ = ()
