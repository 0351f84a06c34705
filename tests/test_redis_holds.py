"""A lane held by a process sharing its Redis limiter: a request that runs out of time says why.

One process is answered 455 (maintenance) or 429 with a Retry-After, and holds every start of
the shared key for a while. A request in a second process, whose deadline passes while it
waits for that hold, fails unsent with what the first process was told (a ``MaintenanceError``
or a ``RateLimitError``, as it would in the first process), not with a bare timeout. The two
clients here have limiters of their own on one key, as two processes have.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
import redis.asyncio
from test_redis import API_KEY, RedisServer, redis_server  # noqa: F401

from persona_async import (
    CrunProvider,
    MaintenanceError,
    PersonaClient,
    PersonaError,
    PersonaRequest,
    ProviderTimeoutError,
    RateLimitError,
)
from persona_async.redis import RedisLimiter
from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio


def _request(name: str) -> PersonaRequest:
    return PersonaRequest(f"task_{name}", f"clip_{name}", "Neon Siren", "Smoky R&B")


async def _until_held(url: str) -> None:
    async with redis.asyncio.Redis.from_url(url) as raw:
        for _ in range(1000):
            if await raw.keys("*:hold"):
                return
            await asyncio.sleep(0.005)
    raise AssertionError("the first process never told Redis to hold")


@pytest.mark.parametrize(
    ("fault", "expected", "words"),
    [
        (Fault.envelope(455), MaintenanceError, "the provider is down for maintenance ("),
        (Fault.envelope(429, retry_after=3.0), RateLimitError, "the provider asked to slow down"),
    ],
    ids=["paused", "cooling"],
)
async def test_a_deadline_passing_in_a_hold_from_another_process_says_what_it_was_told(
    redis_server: RedisServer,  # noqa: F811
    fault: Fault,
    expected: type[PersonaError],
    words: str,
) -> None:
    async with FakeProvider() as fake:
        fake.inject(fault)

        def lane() -> CrunProvider:
            limiter = RedisLimiter(redis_server.url)
            return CrunProvider(api_key=API_KEY, base_url=fake.url, limiter=limiter)

        # The first process probes again only after 3 s (its pause), or waits out Retry-After.
        there = PersonaClient([lane()], backoff_initial=3.0, backoff_max=3.0)
        here = PersonaClient([lane()], deadline=0.5)
        async with there, here:
            first = asyncio.ensure_future(there.create_persona(_request("there")))
            await _until_held(redis_server.url)
            started = time.monotonic()
            with pytest.raises(PersonaError) as info:
                await here.create_persona(_request("here"))
            waited = time.monotonic() - started
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first

    err = info.value
    assert type(err) is expected, err
    assert err.message.startswith(words), err
    assert "seen by a process sharing this lane's limiter" in err.message
    assert err.message.endswith("it was never sent")
    assert (err.provider, err.task_id, err.attempts) == ("crun", "task_here", 0)
    assert waited < 1.0  # its own deadline, not the hold's end
    assert [r.json["suno_id"] for r in fake.requests if r.json] == ["clip_there"]


async def test_a_hold_that_has_ended_is_not_blamed_for_a_later_wait(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    # A pause elsewhere, 0.3 s long: the first request waits it out and is sent. The second
    # waits for the next window (one request per 10 s), and its deadline passes there: it says
    # it waited for the rate limit, not for a maintenance that is over.
    async with FakeProvider() as fake:
        provider = CrunProvider(
            api_key=API_KEY,
            base_url=fake.url,
            rate_limit=1,
            rate_period=10.0,
            limiter=RedisLimiter(redis_server.url),
        )
        elsewhere = RedisLimiter(redis_server.url).for_lane(provider)
        try:
            await elsewhere.hold("paused", 0.3)
            async with PersonaClient([provider], deadline=1.0) as client:
                persona = await client.create_persona(_request("first"))
                with pytest.raises(PersonaError) as info:
                    await client.create_persona(_request("second"))
        finally:
            await elsewhere.aclose()

    assert persona.task_id == "task_first"
    assert type(info.value) is ProviderTimeoutError, info.value
    assert "waiting in the lane's queue (rate limit" in info.value.message
    assert [r.json["suno_id"] for r in fake.requests if r.json] == ["clip_first"]
