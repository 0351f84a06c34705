"""The session pool's hook for rate-limited lanes: a window counts from the real send."""

from __future__ import annotations

import pytest

from persona_async import CrunProvider, PersonaRequest
from persona_async._transport import SessionPool
from persona_async.testing import FakeProvider

pytestmark = pytest.mark.anyio


async def test_on_sent_fires_once_after_the_connection_is_up_and_before_the_reply() -> None:
    async with FakeProvider(latency=0.05) as fake:
        provider = CrunProvider(api_key=fake.api_key, base_url=fake.url, rate_limit=5)
        body = provider.encode(PersonaRequest("t", "a", "n", "d"))
        seen: list[int] = []
        pool = SessionPool()
        try:
            raw = await pool.post(provider, body, 5.0, lambda: seen.append(fake.request_count))
        finally:
            await pool.aclose()
    assert raw.status == 200
    # Called exactly once, when the fake had not yet recorded the request.
    assert seen == [0]
