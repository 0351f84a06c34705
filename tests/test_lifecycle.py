"""The client's lifetime: sessions left open are reported, closing is idempotent.

What closing answers to the requests in flight or queued: test_lane_lifecycle.py."""

from __future__ import annotations

import anyio
import pytest

from persona_async import CrunProvider, PersonaClient, PersonaRequest
from persona_async._transport import SessionPool
from persona_async.testing import FakeProvider

pytestmark = pytest.mark.anyio


async def test_sessions_left_open_warn_when_the_pool_is_collected() -> None:
    async with FakeProvider() as fake:
        provider = CrunProvider(api_key=fake.api_key, base_url=fake.url, rate_limit=None)
        pool = SessionPool()
        await pool.post(provider, provider.encode(PersonaRequest("t", "a", "n", "d")), 5.0)
        session = pool._lanes[provider.name][0]  # kept, so this test can close it afterwards
        with pytest.warns(ResourceWarning) as caught:
            del pool  # the last reference: collected here
        await session.close()
    assert str(caught[0].message) == (
        "persona_async client was not closed; use 'async with PersonaClient(...)' "
        "or 'await client.aclose()'"
    )


async def test_a_closed_client_opens_nothing_and_closing_twice_is_fine() -> None:
    async with FakeProvider() as fake:
        provider = CrunProvider(api_key=fake.api_key, base_url=fake.url, rate_limit=None)
        client = PersonaClient([provider])
        await client.create_persona(PersonaRequest("t", "a", "n", "d"))
        await client.aclose()
        await client.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await client.create_persona(PersonaRequest("t", "b", "n", "d"))
        assert fake.request_count == 1


async def test_closing_finishes_even_when_the_closer_is_cancelled() -> None:
    async with FakeProvider() as fake:
        provider = CrunProvider(api_key=fake.api_key, base_url=fake.url, rate_limit=None)
        client = PersonaClient([provider])
        await client.create_persona(PersonaRequest("t", "a", "n", "d"))
        session = client._pool._lanes[provider.name][0]  # to see that it really gets closed
        with anyio.CancelScope() as scope:
            scope.cancel()  # the task closing the client is cancelled as it starts closing
            await client.aclose()
        await client.aclose()  # returns once the first close has finished
        assert session.closed
