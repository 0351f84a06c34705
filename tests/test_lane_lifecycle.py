"""What a lane reports while it runs and how it ends: ``stats()`` (a frozen snapshot: configured
rate, what it learned of the provider's limit, retries waiting counted as queued), each state
change logged once, the lane a persona names, and ``aclose()`` answering every request in flight
or queued.

Real :class:`FakeProvider` on loopback. The client's sessions and closing twice:
test_lifecycle.py; a client never closed: test_unclosed_client.py. Neighbours:
test_lane_window.py, test_lane_maintenance.py, test_lane_stops.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random

import anyio
import pytest
from _support import FAST_RETRY, JITTER, collect, crun, req

from persona_async import (
    LaneState,
    LaneStats,
    OutcomeUnknownError,
    PersonaClient,
    PersonaError,
)
from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio


async def test_stats_is_a_frozen_snapshot_of_each_lane() -> None:
    async with FakeProvider() as fake:
        fake.missing_tasks.add("task-3")
        fake.inject(Fault.http(500), times=2)
        async with PersonaClient([crun(fake, max_concurrency=2)], retry=FAST_RETRY) as client:
            idle = client.stats()["crun"]
            fake.inject(Fault.slow(0.3), times=2)
            stream = client.create_many([req(i) for i in range(10)])
            async with stream:
                first = await stream.__anext__()
                during = client.stats()["crun"]
                rest = [o async for o in stream]
            after = client.stats()["crun"]

        assert isinstance(idle, LaneStats)
        assert (idle.name, idle.kind, idle.state) == ("crun", "crun", LaneState.RUNNING)
        assert (idle.in_flight, idle.queued, idle.sent, idle.succeeded) == (0, 0, 0, 0)
        assert idle.effective_rate is None  # rate_limit=None: no limiter
        with pytest.raises(dataclasses.FrozenInstanceError):
            idle.sent = 5  # type: ignore[misc]
        with pytest.raises(TypeError):
            idle.failed["X"] = 1  # type: ignore[index]

        # Each request has one outcome: the first, then the other nine.
        assert sorted(o.request.task_id for o in [first, *rest]) == sorted(
            f"task-{i}" for i in range(10)
        )
        assert during.in_flight >= 1
        assert during.queued >= 1
        assert during.sent < after.sent
        assert len(rest) == 9

        assert after.sent == 12  # 10 requests, two of them twice
        assert after.retries == 2
        assert after.succeeded == 9
        assert after.failed == {"ValidationError": 1}
        assert (after.in_flight, after.queued, after.throttled) == (0, 0, 0)
        assert (idle.sent, dict(idle.failed)) == (0, {})  # an earlier snapshot does not move


async def test_each_lane_state_change_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="persona_async")
    async with FakeProvider() as fake, FakeProvider() as doomed:
        fake.inject(Fault.http(429, retry_after=0.1))
        async with PersonaClient(
            [crun(fake, max_concurrency=4), crun(doomed, name="doomed", api_key="wrong")],
            backoff_initial=0.02,
            backoff_max=0.1,
        ) as client:
            await collect(client, [req(i, "crun") for i in range(10)])
            fake.maintenance(0.2)
            await collect(client, [req(i, "crun") for i in range(10, 20)])
            await collect(client, [req(i, "doomed") for i in range(5)])

    states = {state.value for state in LaneState}
    changes = [
        (r.getMessage().split(":")[0], r.levelno)
        for r in caplog.records
        if r.name == "persona_async"
        and r.getMessage().startswith("lane ")
        and r.getMessage().split(":")[0].split()[-1] in states  # not the lane's advice
    ]
    assert changes == [
        ("lane crun cooling", logging.WARNING),
        ("lane crun running", logging.INFO),
        ("lane crun paused", logging.WARNING),
        ("lane crun running", logging.INFO),
        ("lane doomed stopped", logging.WARNING),
    ]
    assert all("wrong" not in r.getMessage() for r in caplog.records)


async def test_create_persona_calls_pending_at_close_fail_instead_of_hanging() -> None:
    async with FakeProvider() as fake:
        fake.inject(Fault.slow(5.0), times=2)
        provider = crun(fake, rate_limit=2, rate_period=10.0, max_concurrency=4)
        client = PersonaClient([provider], retry=FAST_RETRY)
        results: dict[int, BaseException | object] = {}

        async def one(i: int) -> None:
            try:
                results[i] = await client.create_persona(req(i))
            except PersonaError as exc:
                results[i] = exc

        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(one, i)
            # Two in flight, two waiting in the rate limiter, two queued.
            for _ in range(300):
                if fake.in_flight == 2:
                    break
                await anyio.sleep(0.01)
            with anyio.fail_after(3):
                await client.aclose()
                # Every caller is answered by the time aclose() returns.
                await asyncio.sleep(0)
            tg.cancel_scope.deadline = anyio.current_time() + 3

        assert sorted(results) == list(range(6))
        errors = list(results.values())
        assert all(isinstance(e, PersonaError) for e in errors), errors
        unknown = [e for e in errors if isinstance(e, OutcomeUnknownError)]
        assert len(unknown) == 2  # those two were sent: a persona may exist
        assert fake.request_count == 2


async def test_a_lanes_stats_say_its_configured_rate_and_count_retries_waiting_as_queued(
    fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(random, "uniform", lambda low, high: high)  # the backoff at its ceiling
    fake.inject(Fault.http(500), times=1)
    lane = crun(fake, rate_limit=4, rate_period=0.5, max_concurrency=1)
    async with PersonaClient([lane], backoff_initial=5.0, backoff_max=5.0) as client:
        before = client.stats()["crun"]
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.create_persona, req(0))  # 500: its retry waits 5 s
                while client.stats()["crun"].retries == 0:  # noqa: ASYNC110 - no event to wait on
                    await anyio.sleep(0.01)
                await client.create_persona(req(1))  # not held up by the retry waiting
                waiting = client.stats()["crun"]
                tg.cancel_scope.cancel()
    assert (before.limit, before.rate_limit, before.rate_period) == (4, 4, 0.5)
    assert (before.effective_rate, before.learned_limit, before.queued) == (8.0, None, 0)
    assert (waiting.queued, waiting.in_flight, waiting.retries) == (1, 0, 1)


async def test_a_lanes_stats_say_what_it_learned_of_the_providers_limit() -> None:
    async with FakeProvider(rate_limit=2, rate_period=0.25 - JITTER) as fake:
        lane = crun(fake, rate_limit=8, rate_period=0.25, max_concurrency=8)
        async with PersonaClient([lane], retry=FAST_RETRY) as client:
            with anyio.fail_after(20):
                outcomes = await collect(client, [req(i) for i in range(10)])
            learned = client.stats()["crun"]
    assert all(o.ok for o in outcomes)
    assert learned.learned_limit is not None
    assert learned.learned_limit < 8
    assert learned.limit is not None
    # What it runs at now: near what the provider sustained (it probes above it), well below
    # what was configured.
    assert learned.learned_limit <= learned.limit < 8
    assert learned.effective_rate == learned.limit / 0.25
    assert (learned.rate_limit, learned.rate_period) == (8, 0.25)  # what was configured


async def test_a_persona_names_its_lane_and_what_it_was_made_from(fake: FakeProvider) -> None:
    lane = crun(fake, name="crun-eu")
    async with PersonaClient([lane], retry=FAST_RETRY) as client:
        with anyio.fail_after(5):
            persona = await client.create_persona(req(7))
    made = fake.personas[persona.persona_id]
    assert (persona.provider, persona.task_id, persona.audio_id) == ("crun-eu", "task-7", "clip-7")
    assert (persona.name, persona.description) == ("Persona 7", "Smoky late-night R&B")
    assert (made["task_id"], made["audio_id"], made["name"]) == ("task-7", "clip-7", "Persona 7")


async def test_closing_the_client_answers_requests_in_flight_and_queued_for_what_they_are() -> None:
    async with FakeProvider(latency=5.0) as fake:
        client = PersonaClient([crun(fake, name="main", max_concurrency=1)], retry=FAST_RETRY)
        errors: dict[int, PersonaError] = {}

        async def call(i: int) -> None:
            try:
                await client.create_persona(req(i))
            except PersonaError as err:
                errors[i] = err

        with anyio.fail_after(5):
            async with client, anyio.create_task_group() as tg:
                tg.start_soon(call, 3)
                while fake.request_count == 0:  # noqa: ASYNC110 - the fake has no event for it
                    await anyio.sleep(0.01)
                tg.start_soon(call, 4)  # queued behind it: one request at a time
                await anyio.sleep(0.05)
                await client.aclose()
    sent, queued = errors[3], errors[4]
    assert type(sent) is OutcomeUnknownError
    assert sent.message == (
        "the client was closed while the request was in flight; a persona may exist"
    )
    assert (sent.provider, sent.request, sent.audio_id) == ("main", req(3), "clip-3")
    assert type(queued) is PersonaError
    assert queued.message == "the client was closed before the request was sent"
    assert (queued.provider, queued.audio_id) == ("main", "clip-4")
    assert fake.request_count == 1
