"""Providers: one file each, holding the provider's whole contract (wire, codes, quirks, task and
source status). ``PROVIDER_KINDS`` is the one registry: it maps a config ``kind`` to its class,
and the public ``persona_async``, the CLI's ``kind`` table and the fake's contract list read it.
Adding a provider is a module here and a line in that tuple."""

from __future__ import annotations

from ._base import Provider, Reply, Wire
from .acedata import AceDataProvider
from .apibox import ApiBoxProvider
from .apikley import ApikleyProvider
from .cometapi import CometApiProvider
from .crun import CrunProvider
from .deerapi import DeerApiProvider
from .evolink import EvolinkProvider
from .kie import KieProvider
from .kie_jobs import KieJobsProvider
from .mountsea import MountSeaProvider
from .sunoapi import SunoApiProvider
from .ttapi import TtapiProvider

__all__ = [
    "PROVIDER_KINDS",
    "describe_providers",
    "AceDataProvider",
    "ApiBoxProvider",
    "ApikleyProvider",
    "CometApiProvider",
    "CrunProvider",
    "DeerApiProvider",
    "EvolinkProvider",
    "KieJobsProvider",
    "KieProvider",
    "MountSeaProvider",
    "Provider",
    "Reply",
    "SunoApiProvider",
    "TtapiProvider",
    "Wire",
]

PROVIDER_KINDS: dict[str, type[Provider]] = {
    cls.kind: cls
    for cls in (
        CrunProvider,
        ApikleyProvider,
        SunoApiProvider,
        KieProvider,
        ApiBoxProvider,
        AceDataProvider,
        CometApiProvider,
        DeerApiProvider,
        TtapiProvider,
        MountSeaProvider,
        KieJobsProvider,
        EvolinkProvider,
    )
}


def describe_providers() -> str:
    """Every supported provider by ``kind``, and how much of its contract its docs publish."""
    return "; ".join(f"{kind} ({cls.documentation})" for kind, cls in PROVIDER_KINDS.items())
