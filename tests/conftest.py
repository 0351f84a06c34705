from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    # aiohttp is asyncio-only; async test modules set `pytestmark = pytest.mark.anyio`.
    return "asyncio"
