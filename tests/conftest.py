from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from persona_async.testing import FakeProvider


@pytest.fixture
def anyio_backend() -> str:
    # aiohttp is asyncio-only; async test modules set `pytestmark = pytest.mark.anyio`.
    return "asyncio"


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    """A fresh fake provider on loopback for one test."""
    async with FakeProvider() as server:
        yield server
