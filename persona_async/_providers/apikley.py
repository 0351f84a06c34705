"""apikley: the sunoapi.org family skeleton, without the optional fields."""

from __future__ import annotations

from ._base import OPTIONAL_FIELDS
from ._family import SunoApiFamilyProvider

__all__ = ["ApikleyProvider"]


class ApikleyProvider(SunoApiFamilyProvider):
    """apikley (api.apikley.ru). Its page documents none of vocal_start, vocal_end and style,
    so passing them is an ``InvalidRequestError`` rather than a silent drop."""

    kind = "apikley"
    api_key_env = "APIKLEY_API_KEY"
    default_base_url = "https://api.apikley.ru"
    documentation = "in full"
    unsupported_fields = OPTIONAL_FIELDS
    vocal_window = None

    __slots__ = ()
