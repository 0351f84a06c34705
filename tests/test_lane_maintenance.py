"""A lane paused by a 455 maintenance: it probes with a doubling wait, holds its queue (and every
process sharing its key through Redis) until a probe goes through, and fails the requests that
waited longer than ``max_maintenance_wait`` with the provider's 455.

Real :class:`FakeProvider` on loopback (and a real ``redis-server`` for the shared hold; more of
it in test_redis_holds.py). Neighbours: test_lane_window.py (429 cooldowns), test_lane_stops.py
(401/402), test_lane_retries.py, test_deadline.py.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator

import anyio
import pytest
from _support import FAST_RETRY, JITTER, Scripted, collect, crun, req
from test_redis import RedisServer

from persona_async import (
    CrunProvider,
    LaneState,
    MaintenanceError,
    PersonaClient,
    PersonaError,
    ProviderTimeoutError,
)
from persona_async.redis import RedisLimiter
from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio


@pytest.fixture
def redis_url() -> Iterator[str]:
    server = RedisServer()
    server.start()
    yield server.url
    server.kill()


async def test_a_lane_in_maintenance_does_not_delay_another_lane_and_resumes_after() -> None:
    pause = 0.6
    async with FakeProvider() as down, FakeProvider() as up:
        client = PersonaClient(
            [crun(down, name="down", max_concurrency=4), crun(up, name="up")],
            backoff_initial=0.02,
            backoff_max=1.0,
        )
        down.maintenance(pause)
        started = time.monotonic()
        finished: dict[str, list[float]] = {"down": [], "up": []}
        async with client:
            requests = [req(i, "down" if i % 2 else "up") for i in range(40)]
            async for outcome in client.create_many(requests):
                assert outcome.ok, outcome.error
                assert outcome.request.provider is not None
                finished[outcome.request.provider].append(time.monotonic() - started)
            stats = client.stats()

        assert len(finished["up"]) == len(finished["down"]) == 20
        assert max(finished["up"]) < pause  # the healthy lane never waited for the other
        assert min(finished["down"]) >= pause
        assert stats["down"].state is LaneState.RUNNING
        # During the pause: the requests already in flight when the first 455 came back, then
        # one probe at a time, at growing intervals. Nothing spun, nothing failed.
        refused = [r.arrived for r in down.requests if r.response_code == 455]
        first_wave = [t for t in refused if t - refused[0] < 0.01]
        probes = refused[len(first_wave) :]
        assert len(first_wave) <= 4
        assert 3 <= len(probes) <= 8
        gaps = [b - a for a, b in itertools.pairwise(probes)]
        assert all(later > earlier for earlier, later in itertools.pairwise(gaps)), gaps
        assert sum(r.response_code == 200 for r in down.requests) == 20


async def test_requests_waiting_longer_than_max_maintenance_wait_fail_together() -> None:
    async with FakeProvider() as fake:
        fake.maintenance(30.0)
        client = PersonaClient(
            [crun(fake, max_concurrency=2)],
            backoff_initial=0.02,
            backoff_max=0.1,
            max_maintenance_wait=0.3,
        )
        async with client:
            started = time.monotonic()
            outcomes = await collect(client, [req(i) for i in range(8)])
            elapsed = time.monotonic() - started
            stats = client.stats()["crun"]

        assert [type(o.error) for o in outcomes] == [MaintenanceError] * 8
        # Every request waited about max_maintenance_wait, not one wait after another.
        assert 0.3 <= elapsed < 0.9
        assert stats.failed == {"MaintenanceError": 8}
        assert stats.state is LaneState.PAUSED
        assert fake.request_count <= 2 + 6  # the first wave, then probes only


async def test_each_maintenance_probe_waits_twice_as_long_as_the_one_before_and_the_log_says_why(
    fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="persona_async")
    fake.inject(Fault.envelope(455), times=3)
    async with PersonaClient([crun(fake)], backoff_initial=0.1, backoff_max=10.0) as client:
        with anyio.fail_after(5):
            await client.create_persona(req(0))
    arrived = [r.arrived for r in fake.requests]
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrived)]
    assert len(gaps) == 3  # the request, two probes answered 455, the one that went through
    assert 0.1 <= gaps[0] < 0.2
    assert 0.2 <= gaps[1] < 0.4
    assert 0.4 <= gaps[2] < 0.8  # tripling would make it 0.9
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("lane ")]
    assert lines == [
        "lane crun paused: 455 maintenance, probing",
        "lane crun running: maintenance over",
    ]


async def test_a_455_seen_by_one_process_holds_the_others_sharing_its_key_until_the_probe(
    fake: FakeProvider, redis_url: str
) -> None:
    # Two clients (as two processes would be) share one Redis budget. The first is told the
    # provider is in maintenance and will probe again in 0.4 s; the second, asked to send just
    # after, waits for that probe too instead of hammering a provider in maintenance.
    fake.inject(Fault.envelope(455))

    def lane() -> CrunProvider:
        return crun(fake, limiter=RedisLimiter(redis_url))

    async with (
        PersonaClient([lane()], backoff_initial=0.4) as here,
        PersonaClient([lane()]) as there,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(here.create_persona, req(0))
        with anyio.fail_after(5):
            while fake.request_count == 0:  # noqa: ASYNC110 - the fake has no event
                await anyio.sleep(0.005)
            await anyio.sleep(0.05)  # the 455 is answered and told to Redis by now
            await there.create_persona(req(1))
    told = fake.requests[0].arrived
    [other] = [r.arrived for r in fake.requests if (r.json or {}).get("suno_id") == "clip-1"]
    assert other - told >= 0.35


async def test_a_probe_answered_455_after_max_maintenance_wait_fails_with_the_providers_455() -> (
    None
):
    # Every answer takes 0.2 s. The first 455 comes at 0.2 s; the probe goes at 0.4 s (before
    # the 0.3 s wait is up) and its 455 comes at 0.6 s, past it: the request fails then, with
    # what the provider said.
    async with FakeProvider(latency=0.2) as fake:
        fake.maintenance(60.0)
        async with PersonaClient(
            [crun(fake)], backoff_initial=0.2, backoff_max=0.2, max_maintenance_wait=0.3
        ) as client:
            started = time.monotonic()
            with pytest.raises(PersonaError) as info, anyio.fail_after(5):
                await client.create_persona(req(0))
            elapsed = time.monotonic() - started
    assert type(info.value) is MaintenanceError
    assert info.value.code == 455
    assert (info.value.attempts, fake.request_count) == (2, 2)
    assert elapsed < 1.0


async def test_a_caller_leaving_the_queue_of_a_paused_lane_does_not_hold_up_those_behind_it() -> (
    None
):
    # One request at a time. The first is answered 455 after 0.2 s; meanwhile the second's
    # caller leaves it in the queue and the third waits behind it. The lane pauses: the third
    # still fails after max_maintenance_wait (0.3 s), with the first, not later.
    async with FakeProvider(latency=0.2) as fake:
        fake.maintenance(60.0)
        async with PersonaClient(
            [crun(fake, max_concurrency=1)],
            backoff_initial=0.05,
            backoff_max=0.1,
            max_maintenance_wait=0.3,
            deadline=10.0,
        ) as client:
            errors: dict[int, BaseException] = {}
            leaving = anyio.CancelScope()

            async def call(i: int, scope: anyio.CancelScope | None = None) -> None:
                with scope or anyio.CancelScope():
                    try:
                        await client.create_persona(req(i))
                    except PersonaError as err:
                        errors[i] = err
                        failed_at[i] = time.monotonic() - started

            failed_at: dict[int, float] = {}
            started = time.monotonic()
            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(call, 0)
                    await anyio.sleep(0.02)
                    tg.start_soon(call, 1, leaving)
                    await anyio.sleep(0.02)
                    tg.start_soon(call, 2)
                    await anyio.sleep(0.05)
                    leaving.cancel()
            elapsed = time.monotonic() - started
    assert sorted(errors) == [0, 2]  # the second's caller left: it gets no answer
    assert type(errors[2]) is MaintenanceError, errors
    assert elapsed < 2.0
    # The third's wait ran out with the first's, in the same turn: it was never sent as a probe.
    assert failed_at[2] - failed_at[0] < 0.1, failed_at
    assert [r.json["suno_id"] for r in fake.requests if r.json] == ["clip-0"] * len(fake.requests)


async def test_a_second_maintenance_window_gives_the_requests_still_queued_a_fresh_wait() -> None:
    # One request at a time, answers in 0.05 s, a probe every 0.1 s. Two maintenance windows of
    # four 455s each (about 0.6 s), a success in between: each is shorter than the 1 s
    # max_maintenance_wait, so the request queued through both is sent, not failed (the two
    # together are longer than 1 s).
    async with FakeProvider(latency=0.05) as fake:
        for _ in range(2):
            fake.inject(Fault.envelope(455), times=4)
            fake.inject(Fault.slow(0.0))  # the probe that finds the provider back
        async with PersonaClient(
            [crun(fake, max_concurrency=1)],
            backoff_initial=0.1,
            backoff_max=0.1,
            max_maintenance_wait=1.0,
            deadline=10.0,
        ) as client:
            with anyio.fail_after(8):
                outcomes = await collect(client, [req(i) for i in range(3)])
    assert [o.error for o in outcomes] == [None, None, None]
    assert fake.request_count == 11  # 4 + 1, 4 + 1, and the last one


async def test_a_429_answered_during_a_maintenance_is_waited_out_after_it_ends() -> None:
    # A goes first and is answered 429 (Retry-After 1 s) only at 0.3 s. B, sent just after, is
    # answered 455 at once: the lane pauses and B is its probe, answered (a success) at 0.5 s.
    # A's 429 came in between: A waits out its Retry-After while the maintenance ends, then is
    # sent once more and succeeds. Nothing is lost, nothing is sent early.
    async with FakeProvider() as fake:
        fake.inject(Fault.envelope(429, retry_after=1.0).later(0.3))
        fake.inject(Fault.envelope(455))
        fake.inject(Fault.slow(0.4))  # the probe: the provider is back
        async with PersonaClient(
            [crun(fake, max_concurrency=2)], backoff_initial=0.05, backoff_max=0.05
        ) as client:
            personas = {}

            async def call(i: int) -> None:
                personas[i] = await client.create_persona(req(i))

            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(call, 0)
                    while fake.request_count == 0:  # noqa: ASYNC110 - the fake has no event
                        await anyio.sleep(0.001)
                    tg.start_soon(call, 1)
            stats = client.stats()["crun"]
    assert sorted(personas) == [0, 1]
    assert stats.state is LaneState.RUNNING
    sends = [(r.json["suno_id"], r.arrived) for r in fake.requests if r.json]
    assert [audio for audio, _ in sends] == ["clip-0", "clip-1", "clip-1", "clip-0"]
    assert sends[3][1] - sends[0][1] >= 1.3 - JITTER  # the 429 at 0.3 s, then its Retry-After
    assert sorted(fake.creations.values()) == [1, 1]  # one persona each


@pytest.mark.parametrize(
    "fault", [Fault.envelope(455), Fault.http(429, retry_after=0.1)], ids=["455", "429"]
)
async def test_a_455_or_429_the_lane_got_over_is_not_blamed_for_a_later_wait(fault: Fault) -> None:
    # Two requests per 10 s. The first request is answered 455 (or 429, Retry-After 0.1 s)
    # and succeeds on its next attempt: the lane runs again. The second waits for the window
    # and its deadline passes there: it says so, not that the provider is in maintenance or
    # throttling, which was over before it was even submitted.
    async with FakeProvider() as fake:
        fake.inject(fault)
        provider = crun(fake, rate_limit=2, rate_period=10.0, max_concurrency=1)
        async with PersonaClient([provider], retry=FAST_RETRY) as client:
            await client.create_persona(req(0))
            with pytest.raises(PersonaError) as info, anyio.fail_after(5):
                await client.create_persona(req(1), deadline=0.5)
    assert type(info.value) is ProviderTimeoutError, info.value
    assert "waiting in the lane's queue" in info.value.message
    assert (info.value.sent, info.value.retryable) == (False, True)  # never sent: safe to resend
    assert [r.json["suno_id"] for r in fake.requests if r.json] == ["clip-0", "clip-0"]


async def test_a_paused_lane_fails_the_requests_past_their_maintenance_wait_while_it_probes() -> (
    None
):
    # Every answer takes 1 s. Two go at once and are answered 455 at 1 s; the third waited in
    # the queue. The probe then takes 1 s to answer; meanwhile the queued requests' 0.3 s
    # maintenance wait runs out: they fail then (about 1.3 s), not when the probe comes back.
    async with FakeProvider(latency=1.0) as fake:
        fake.maintenance(60.0)
        async with PersonaClient(
            [crun(fake, max_concurrency=2)],
            backoff_initial=0.05,
            backoff_max=0.05,
            max_maintenance_wait=0.3,
        ) as client:
            failed_at: dict[str, float] = {}
            started = time.monotonic()
            with anyio.fail_after(8):
                async for outcome in client.create_many([req(i) for i in range(3)]):
                    failed_at[outcome.request.audio_id] = time.monotonic() - started
                    assert type(outcome.error) is MaintenanceError
    assert 1.2 < failed_at["clip-2"] < 1.8, failed_at


async def test_every_probe_a_maintenance_costs_is_counted_as_a_retry(fake: FakeProvider) -> None:
    fake.maintenance(0.25)
    async with PersonaClient([crun(fake)], backoff_initial=0.05, backoff_max=0.05) as client:
        with anyio.fail_after(5):
            await client.create_persona(req(0))
        stats = client.stats()["crun"]
    assert fake.request_count >= 3  # the first 455, then probes until the window ended
    assert stats.retries == fake.request_count - 1
    assert stats.sent == fake.request_count


async def test_a_429_to_a_maintenance_probe_holds_every_probe_until_its_retry_after() -> None:
    # The lane is paused by a 455 and probes; the probe is answered 429, Retry-After 0.5 s.
    # No request may reach the provider before that half second is over: not the next probe,
    # not the others waiting, not the first ones once the maintenance is over.
    async with Scripted((0.0, 455, None), (0.0, 429, 0.5)) as provider:
        lane = CrunProvider(
            api_key="k", base_url=provider.url, rate_limit=100, rate_period=0.2, max_concurrency=1
        )
        async with PersonaClient([lane], retry=FAST_RETRY) as client:
            with anyio.fail_after(10):
                outcomes = await collect(client, [req(i) for i in range(4)])
    assert all(outcome.ok for outcome in outcomes), outcomes
    _paused, (throttled, _), *after = provider.arrived  # the 455, the probe's 429, the rest
    assert after, provider.arrived
    assert min(when for when, _ in after) >= throttled + 0.5
