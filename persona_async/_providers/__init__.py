"""Providers: one small file each. ``PROVIDER_KINDS`` maps a config ``kind`` to its class."""

from __future__ import annotations

from ._base import Provider, Reply, Wire
from .apibox import ApiBoxProvider
from .apikley import ApikleyProvider
from .crun import CrunProvider
from .kie import KieProvider
from .sunoapi import SunoApiProvider

__all__ = [
    "PROVIDER_KINDS",
    "ApiBoxProvider",
    "ApikleyProvider",
    "CrunProvider",
    "KieProvider",
    "Provider",
    "Reply",
    "SunoApiProvider",
    "Wire",
]

PROVIDER_KINDS: dict[str, type[Provider]] = {
    cls.kind: cls
    for cls in (CrunProvider, ApikleyProvider, SunoApiProvider, KieProvider, ApiBoxProvider)
}
