"""Every contract the fake speaks, in one place, and which of the SDK's providers each serves.

The server, the status endpoints and ``python -m persona_async.testing --help`` iterate
``CONTRACTS``; ``FOR_KIND`` maps every ``kind`` of the SDK's registry (``PROVIDER_KINDS``) to the
contract its create path names, so a provider added there without a fake contract fails at
import, not in a user's test.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from ..._providers import PROVIDER_KINDS
from ._contract import _Contract
from .acedata import ACEDATA
from .crun import CRUN
from .evolink import EVOLINK
from .family import FAMILY
from .gateway import GATEWAY
from .kie_jobs import KIE_JOBS
from .mountsea import MOUNTSEA
from .ttapi import TTAPI

CONTRACTS: Final[tuple[_Contract, ...]] = (
    CRUN,
    FAMILY,
    ACEDATA,
    GATEWAY,
    TTAPI,
    MOUNTSEA,
    KIE_JOBS,
    EVOLINK,
)
#: Create path -> contract (a POST there is a create).
BY_PATH: Final[Mapping[str, _Contract]] = MappingProxyType({c.path: c for c in CONTRACTS})
#: The async-task contracts: their status endpoint also answers for persona tasks.
ASYNC: Final = tuple(c for c in CONTRACTS if c.status is not None and c.status.task is not None)


def _for_kinds() -> Mapping[str, _Contract]:
    missing = sorted(k for k, cls in PROVIDER_KINDS.items() if cls.path not in BY_PATH)
    if missing:
        raise RuntimeError(f"the fake speaks no contract for provider kinds {missing}")
    return MappingProxyType({k: BY_PATH[cls.path] for k, cls in PROVIDER_KINDS.items()})


#: SDK provider kind -> the fake's contract for it.
FOR_KIND: Final = _for_kinds()


def served_kinds(contract: _Contract) -> list[str]:
    """The SDK's provider kinds ``contract`` serves."""
    return [kind for kind, served in FOR_KIND.items() if served is contract]


def describe_contracts() -> str:
    """One paragraph per contract: the kinds it serves, its create and its status endpoint."""
    lines = []
    for contract in CONTRACTS:
        status = contract.status
        lines.append(f"  {contract.kind} (for {', '.join(served_kinds(contract))})")
        lines.append(f"      POST {contract.path}")
        if status is not None:
            also = " (persona tasks and songs)" if status.task is not None else " (songs)"
            lines.append(f"      {status.method} {status.where}{also}")
    return "\n".join(lines)
