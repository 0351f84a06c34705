"""A lane's window: how many requests it starts per rate period and at once, and how a 429
cools it.

Every test talks HTTP to :class:`FakeProvider` (or a scripted loopback server) on compressed time:
rate periods of a fraction of a second. The limiter's rules on virtual time: test_ratelimit.py and
test_adaptive.py; a window counted from the real send: test_transport.py; shared across processes:
test_redis.py and test_redis_rules.py. Neighbours: test_lane_retries.py (resends),
test_lane_maintenance.py (455), test_lane_stops.py (401/402), test_lane_lifecycle.py (stats, close).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from _support import FAST_RETRY, JITTER, Scripted, arrivals, collect, crun, most_in_any_window, req

from persona_async import (
    CrunProvider,
    KieProvider,
    PersonaClient,
    RateLimitError,
    SunoApiProvider,
)
from persona_async.testing import FakeProvider, Fault

# Windows measured in real time: one at a time on one worker with the other rate tests
# (--dist loadgroup), so that they do not compete with each other for the CPU.
pytestmark = [pytest.mark.anyio, pytest.mark.xdist_group("real_time_rates")]


async def test_create_many_over_three_lanes_never_breaks_a_window_and_uses_it_fully() -> None:
    limit, period, per_lane = 10, 0.5, 70
    keys = ("crun-key", "kie-key", "sunoapi-key")
    fake_window = period - JITTER
    async with FakeProvider(api_keys=keys, rate_limit=limit, rate_period=fake_window) as fake:
        window = {"rate_limit": limit, "rate_period": period, "base_url": fake.url}
        providers = [
            CrunProvider(api_key=keys[0], **window),
            KieProvider(api_key=keys[1], **window),
            SunoApiProvider(api_key=keys[2], **window),
        ]
        lanes = [p.name for p in providers]
        requests = [req(i, lanes[i % 3]) for i in range(3 * per_lane)]
        async with PersonaClient(providers, retry=FAST_RETRY) as client:
            started = time.monotonic()
            outcomes = await collect(client, requests)
            elapsed = time.monotonic() - started

        assert fake.window_violations == 0
        assert [o.error for o in outcomes if not o.ok] == []
        assert sorted(o.request.audio_id for o in outcomes) == sorted(r.audio_id for r in requests)
        for key in keys:
            assert most_in_any_window(arrivals(fake, api_key=key), fake_window) <= limit
        # Each lane's last burst can start once (per_lane / limit - 1) full windows are over.
        ideal = (per_lane / limit - 1) * period
        assert ideal / elapsed >= 0.8, f"{elapsed:.2f}s for {ideal:.2f}s of windows"


async def test_create_persona_callers_and_a_running_create_many_share_one_window() -> None:
    limit, period = 10, 0.5
    async with FakeProvider(rate_limit=limit, rate_period=period - JITTER) as fake:
        provider = crun(fake, rate_limit=limit, rate_period=period)
        async with PersonaClient([provider], retry=FAST_RETRY) as client:
            started = time.monotonic()
            singles: list[Any] = []

            async def one(i: int) -> None:
                singles.append(await client.create_persona(req(i)))

            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(one, 1000 + i)
                batch = await collect(client, [req(i) for i in range(40)])
            elapsed = time.monotonic() - started

        assert fake.window_violations == 0
        assert len(singles) == 20
        assert all(o.ok for o in batch)
        assert most_in_any_window(arrivals(fake), period - JITTER) <= limit
        # 60 requests at 10 per window need five more windows after the first burst: had the
        # callers had a window of their own, it would have taken half of that.
        assert elapsed >= 5 * period


@pytest.mark.parametrize("cap", [1, 3])
async def test_a_lane_never_exceeds_its_concurrency_cap_and_serves_first_come_first(
    cap: int,
) -> None:
    async with FakeProvider(latency=0.01) as fake:
        async with PersonaClient([crun(fake, max_concurrency=cap)], retry=FAST_RETRY) as client:
            requests = [req(i) for i in range(24)]
            async with anyio.create_task_group() as tg:
                for request in requests:
                    tg.start_soon(client.create_persona, request)
                    await anyio.lowlevel.checkpoint()  # arrive one after another

        assert fake.max_concurrent == cap
        sent = [r.json["task_id"] for r in fake.requests if r.json]
        assert sorted(sent) == sorted(r.task_id for r in requests)
        # FIFO: a request is never overtaken by one that arrived a whole round later.
        for position, task_id in enumerate(sent):
            assert abs(position - int(task_id.split("-")[1])) < cap


async def test_one_429_cools_the_whole_lane_for_its_retry_after() -> None:
    async with FakeProvider() as fake:
        fake.inject(Fault.http(429, retry_after=0.8))
        # Four start at once; the next ones are already waiting in the rate limiter when the
        # 429 comes back, and must not go out during the cooldown either.
        provider = crun(fake, rate_limit=4, rate_period=0.5, max_concurrency=8)
        async with PersonaClient([provider], retry=FAST_RETRY) as client:
            outcomes = await collect(client, [req(i) for i in range(8)])
            stats = client.stats()["crun"]

        assert all(o.ok for o in outcomes)
        [throttled] = [r for r in fake.requests if r.response_code == 429]
        quiet = [
            r.arrived - throttled.arrived
            for r in fake.requests
            if 0.05 < r.arrived - throttled.arrived < 0.8
        ]
        assert quiet == []
        retried = [r for r in fake.requests if r.json == throttled.json]
        assert len(retried) == 2
        assert retried[1].arrived - throttled.arrived >= 0.8
        assert stats.throttled == 1
        assert stats.retries == 1


async def test_a_429_without_retry_after_cools_the_lane_until_its_window_has_passed() -> None:
    async with FakeProvider() as fake:
        fake.inject(Fault.envelope(429))
        provider = crun(fake, max_concurrency=1, rate_period=0.5)
        async with PersonaClient([provider], retry=FAST_RETRY) as client:
            outcomes = await collect(client, [req(i) for i in range(3)])

        assert all(o.ok for o in outcomes)
        first, second = fake.requests[0].arrived, fake.requests[1].arrived
        assert second - first >= 0.5  # not the 0.01-0.05 s backoff: the window


async def test_when_the_providers_limit_rises_again_the_lane_climbs_back_to_its_own() -> None:
    async with FakeProvider(rate_limit=2, rate_period=0.2) as fake:
        provider = crun(fake, rate_limit=4, rate_period=0.2, max_concurrency=4)
        async with (
            PersonaClient([provider], retry=FAST_RETRY) as client,
            anyio.create_task_group() as tg,
        ):

            async def the_provider_relents() -> None:
                await anyio.sleep(1.5)  # the lane has learned 2 per window by then
                fake.set_rate_limit(None)

            tg.start_soon(the_provider_relents)
            outcomes = await collect(client, [req(i) for i in range(70)])

        assert all(o.ok for o in outcomes)
        accepted = [r.arrived for r in fake.requests if r.response_code == 200]
        start = accepted[0]
        # Learned: no more than the provider's 2 per window while it allowed only that...
        assert most_in_any_window([t for t in accepted if start + 0.5 < t < start + 1.5], 0.2) <= 2
        # ...and never over its own limit, back at it a few windows after the provider relents.
        assert most_in_any_window(accepted, 0.2) <= 4
        assert most_in_any_window([t for t in accepted if t > start + 3.0], 0.2) == 4


async def test_two_requests_throttled_until_the_same_moment_are_both_resent_then(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Sent together: one is told to come back in 0.5 s; the other, 0.05 s later, in 0.1 s. The
    # lane's cooldown is the longer one, so both are due at the same moment: both go then.
    caplog.set_level(logging.INFO, logger="persona_async")
    async with Scripted((0.0, 429, 0.5), (0.05, 429, 0.1)) as server:
        lane = CrunProvider(api_key="k", base_url=server.url, rate_limit=None, max_concurrency=2)
        async with PersonaClient([lane], retry=FAST_RETRY) as client:
            with anyio.fail_after(5):
                outcomes = await collect(client, [req(0), req(1)])
            throttled = client.stats()["crun"].throttled
    assert [o.ok for o in outcomes] == [True, True]
    assert throttled == 2
    first = server.arrived[0][0]
    resent = sorted(when - first for when, _ in server.arrived[2:])
    assert len(resent) == 2
    assert resent[0] >= 0.5  # the shorter Retry-After did not cut the lane's cooldown short
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("lane ")]
    assert lines == [
        "lane crun cooling: 429 from provider, cooling 0.50s",
        "lane crun running: cooldown over",
    ]


async def test_a_429_with_retry_after_zero_is_resent_at_once_without_cooling_the_lane(
    fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="persona_async")
    fake.inject(Fault.http(429, retry_after=0))
    async with PersonaClient([crun(fake)], retry=FAST_RETRY) as client:
        with anyio.fail_after(5):
            persona = await client.create_persona(req(0))
    assert persona.persona_id in fake.personas
    assert fake.request_count == 2
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("lane ")] == []


async def test_a_request_submitted_while_the_lane_cools_goes_out_when_the_cooldown_ends(
    fake: FakeProvider,
) -> None:
    # The 429's own request cannot wait 0.5 s within its 0.4 s deadline: it fails at once, so
    # nothing waits in the retry heap to wake the lane when its cooldown ends; the request
    # submitted meanwhile must still go then.
    fake.inject(Fault.http(429, retry_after=0.5))
    async with PersonaClient([crun(fake)], retry=FAST_RETRY, deadline=5.0) as client:
        started = time.monotonic()
        with pytest.raises(RateLimitError):
            await client.create_persona(req(0), deadline=0.4)
        with anyio.fail_after(4):
            persona = await client.create_persona(req(1))
        took = time.monotonic() - started
    assert persona.persona_id in fake.personas
    assert 0.5 <= took < 3.0
    assert fake.requests[1].arrived - fake.requests[0].arrived >= 0.5
