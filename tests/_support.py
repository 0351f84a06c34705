"""Helpers shared by the test modules (the ``fake`` fixture lives in conftest.py)."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

from persona_async import Provider
from persona_async.testing import FakeProvider


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def make(cls: type[Provider], fake: FakeProvider, **kw: Any) -> Provider:
    """A provider of ``cls`` pointed at ``fake``, with no rate limit unless one is given."""
    return cls(api_key=fake.api_key, base_url=fake.url, **{"rate_limit": None, **kw})


def most_in_any_window(starts: Sequence[float], period: float) -> int:
    """The largest number of starts inside any half-open window ``[t, t + period)``."""
    ordered = sorted(starts)
    most, first = 0, 0
    for last, start in enumerate(ordered):
        while start - ordered[first] >= period:
            first += 1
        most = max(most, last - first + 1)
    return most
