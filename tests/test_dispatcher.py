"""The lanes against real fake providers: rate windows, 429, 455, 401/402, retries, stats, close.

Every test talks HTTP to :class:`FakeProvider` on loopback, on compressed time: rate periods
of a fraction of a second, backoffs of centiseconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from _support import JITTER, most_in_any_window

from persona_async import (
    AuthenticationError,
    CrunProvider,
    InsufficientCreditsError,
    KieProvider,
    LaneState,
    LaneStats,
    MaintenanceError,
    Outcome,
    OutcomeUnknownError,
    PersonaClient,
    PersonaError,
    PersonaRequest,
    ServerError,
    SunoApiProvider,
)
from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio

#: Retry and probe waits in centiseconds: the behaviour of seconds, in a fraction of the time.
FAST: dict[str, Any] = {"backoff_initial": 0.01, "backoff_max": 0.05}


def req(i: int, lane: str | None = None) -> PersonaRequest:
    return PersonaRequest(
        f"task-{i}", f"clip-{i}", f"Persona {i}", "Smoky late-night R&B", provider=lane
    )


def crun(fake: FakeProvider, name: str = "crun", **options: Any) -> CrunProvider:
    options.setdefault("api_key", fake.api_key)
    options.setdefault("rate_limit", None)
    return CrunProvider(base_url=fake.url, name=name, **options)


async def collect(client: PersonaClient, requests: Any, **options: Any) -> list[Outcome]:
    return [outcome async for outcome in client.create_many(requests, **options)]




def arrivals(fake: FakeProvider, **match: Any) -> list[float]:
    return [r.arrived for r in fake.requests if all(getattr(r, k) == v for k, v in match.items())]


# -- the provider's window, end to end --------------------------------------------------------


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
        async with PersonaClient(providers, **FAST) as client:
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
        async with PersonaClient([provider], **FAST) as client:
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
        async with PersonaClient([crun(fake, max_concurrency=cap)], **FAST) as client:
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


# -- 455: one lane paused, the other unaffected -----------------------------------------------


async def test_a_lane_in_maintenance_does_not_delay_another_lane_and_resumes_after() -> None:
    pause = 0.6
    async with FakeProvider() as down, FakeProvider() as up:
        client = PersonaClient(
            [crun(down, "down", max_concurrency=4), crun(up, "up")],
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


# -- 429: the whole lane cools down -----------------------------------------------------------


async def test_one_429_cools_the_whole_lane_for_its_retry_after() -> None:
    async with FakeProvider() as fake:
        fake.inject(Fault.http(429, retry_after=0.8))
        # Four start at once; the next ones are already waiting in the rate limiter when the
        # 429 comes back, and must not go out during the cooldown either.
        provider = crun(fake, rate_limit=4, rate_period=0.5, max_concurrency=8)
        async with PersonaClient([provider], **FAST) as client:
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
        async with PersonaClient([provider], **FAST) as client:
            outcomes = await collect(client, [req(i) for i in range(3)])

        assert all(o.ok for o in outcomes)
        first, second = fake.requests[0].arrived, fake.requests[1].arrived
        assert second - first >= 0.5  # not the 0.01-0.05 s backoff: the window


async def test_when_the_providers_limit_rises_again_the_lane_climbs_back_to_its_own() -> None:
    async with FakeProvider(rate_limit=2, rate_period=0.2) as fake:
        provider = crun(fake, rate_limit=4, rate_period=0.2, max_concurrency=4)
        async with PersonaClient([provider], **FAST) as client, anyio.create_task_group() as tg:

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


# -- 401 / 402: the lane stops ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"), [(401, AuthenticationError), (402, InsufficientCreditsError)]
)
async def test_401_or_402_stops_its_lane_and_fails_its_queue_while_others_go_on(
    status: int, error: type[PersonaError]
) -> None:
    async with FakeProvider() as bad, FakeProvider(latency=0.005) as good:
        if status == 401:
            broken = crun(bad, "broken", api_key="revoked-key", max_concurrency=2)
        else:
            bad.inject(Fault.envelope(402), times=1000)
            broken = crun(bad, "broken", max_concurrency=2)
        client = PersonaClient([broken, crun(good, "healthy", max_concurrency=4)], **FAST)
        async with client:
            requests = [req(i, "broken" if i % 2 else "healthy") for i in range(60)]
            started = time.monotonic()
            outcomes = await collect(client, requests)
            sent_by_then = bad.request_count
            later = None
            try:
                await client.create_persona(req(1000, "broken"))
            except PersonaError as exc:
                later = exc
            stats = client.stats()

        by_lane = {"broken": [], "healthy": []}  # type: dict[str, list[Outcome]]
        for outcome in outcomes:
            assert outcome.request.provider is not None
            by_lane[outcome.request.provider].append(outcome)
        assert all(o.ok for o in by_lane["healthy"])
        assert len(by_lane["healthy"]) == 30
        assert [type(o.error) for o in by_lane["broken"]] == [error] * 30
        assert bad.request_count <= 2  # what was in flight when the first answer came back
        assert sum(o.attempts for o in by_lane["broken"]) == bad.request_count
        assert isinstance(later, error)
        assert later.attempts == 0
        assert bad.request_count == sent_by_then  # the stopped lane sent nothing more
        assert stats["broken"].state is LaneState.STOPPED
        assert stats["broken"].failed == {error.__name__: 31}
        assert stats["healthy"].state is LaneState.RUNNING
        assert stats["healthy"].succeeded == 30
        assert time.monotonic() - started < 2.0


# -- retries ----------------------------------------------------------------------------------


async def test_a_retry_waiting_out_its_backoff_holds_no_concurrency_slot() -> None:
    async with FakeProvider(latency=0.03) as fake:
        fake.inject(Fault.http(500), times=2)
        provider = crun(fake, max_concurrency=2)
        async with PersonaClient([provider], backoff_initial=0.3, backoff_max=0.3) as client:
            outcomes = await collect(client, [req(i) for i in range(10)])
            stats = client.stats()["crun"]

        assert all(o.ok for o in outcomes)
        assert fake.max_concurrent == 2
        assert stats.retries == 2
        failed = [r for r in fake.requests if r.response_code == 500]
        assert len(failed) == 2
        for attempt in failed:
            [retry] = [r for r in fake.requests if r.json == attempt.json and r is not attempt]
            # While this request waited out its backoff (up to 0.3 s, jittered), the two
            # slots carried other requests: the wait held neither a slot nor the queue.
            overtaking = [
                r
                for r in fake.requests
                if attempt.arrived < r.arrived < retry.arrived and r.json != attempt.json
            ]
            assert overtaking


async def test_the_retry_budget_caps_resends_during_an_outage() -> None:
    async with FakeProvider() as fake:
        fake.inject(Fault.http(500), times=1000)
        # The budget is per rate period: 3 resends per 10 s for this lane.
        provider = crun(fake, rate_limit=1000, rate_period=10.0, max_concurrency=4)
        async with PersonaClient([provider], max_retries=5, retry_budget=3, **FAST) as client:
            outcomes = await collect(client, [req(i) for i in range(20)])
            stats = client.stats()["crun"]

        assert [type(o.error) for o in outcomes] == [ServerError] * 20
        assert stats.retries == 3
        assert fake.request_count == 20 + 3
        assert stats.failed == {"ServerError": 20}


async def test_the_retry_budget_refills_every_rate_period() -> None:
    # 4 resends per 0.5 s. Two bursts of four failures, a second apart: the first burst spends
    # the whole budget, and by the second it has refilled, so every request is resent and
    # succeeds. (The same budget over a 5 s period would have refused the second burst's
    # resends.) Waiting only lets the bucket drain further, so a slow machine cannot fail this.
    async with FakeProvider() as fake:
        provider = crun(fake, rate_limit=1000, rate_period=0.5, max_concurrency=4)
        async with PersonaClient([provider], max_retries=5, retry_budget=4, **FAST) as client:
            fake.inject(Fault.http(500), times=4)
            first = await collect(client, [req(i) for i in range(4)])
            await anyio.sleep(1.0)
            fake.inject(Fault.http(500), times=4)
            second = await collect(client, [req(i) for i in range(4, 8)])
            stats = client.stats()["crun"]

        assert [o.error for o in first + second] == [None] * 8
        assert stats.retries == 8
        assert fake.request_count == 16


# -- observability ----------------------------------------------------------------------------


async def test_stats_is_a_frozen_snapshot_of_each_lane() -> None:
    async with FakeProvider() as fake:
        fake.missing_tasks.add("task-3")
        fake.inject(Fault.http(500), times=2)
        async with PersonaClient([crun(fake, max_concurrency=2)], **FAST) as client:
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
            [crun(fake, max_concurrency=4), crun(doomed, "doomed", api_key="wrong")],
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


# -- closing ----------------------------------------------------------------------------------


async def test_create_persona_calls_pending_at_close_fail_instead_of_hanging() -> None:
    async with FakeProvider() as fake:
        fake.inject(Fault.slow(5.0), times=2)
        provider = crun(fake, rate_limit=2, rate_period=10.0, max_concurrency=4)
        client = PersonaClient([provider], **FAST)
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
