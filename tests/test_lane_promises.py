"""The lane's promises that a mutation run of ``_lane.py`` (mutmut) found unguarded.

Each test pins what the provider sees or what the caller gets, against the real
:class:`FakeProvider` on loopback, and fails with the deliberate bug it was written for (its
comment names the bug; ``mutmut run`` as the README's Development section says repeats the run).
"""

from __future__ import annotations

import itertools
import logging
import random
import re
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from _support import JITTER, req
from aiohttp import web
from test_redis import RedisServer

from persona_async import (
    AuthenticationError,
    CrunProvider,
    KieJobsProvider,
    KieProvider,
    LaneState,
    MaintenanceError,
    Outcome,
    OutcomeUnknownError,
    PersonaClient,
    PersonaError,
    PersonaRequest,
    PollPolicy,
    ProviderConnectionError,
    ProviderTimeoutError,
    RateLimitError,
    ServerError,
)
from persona_async.redis import RedisLimiter
from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio

#: Retry and probe waits in centiseconds: the behaviour of seconds, in a fraction of the time.
FAST: dict[str, Any] = {"backoff_initial": 0.01, "backoff_max": 0.02}


def crun(fake: FakeProvider, **options: Any) -> CrunProvider:
    options.setdefault("rate_limit", None)
    return CrunProvider(api_key=fake.api_key, base_url=fake.url, **options)


CRUN_PATH = "/api/v1/client/job/suno-persona-generate"


class Scripted:
    """A crun endpoint on loopback that answers its first requests as scripted, in order of
    arrival: ``(delay, status, retry_after)``; every later request creates a persona."""

    def __init__(self, *script: tuple[float, int, float | None]) -> None:
        self.script = list(script)
        self.arrived: list[tuple[float, str]] = []  # (when, audio id)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _create(self, request: web.Request) -> web.Response:
        audio_id = (await request.json())["suno_id"]
        self.arrived.append((time.monotonic(), audio_id))
        if not self.script:
            body = {"code": 200, "msg": "success", "data": {"persona_id": f"p-{audio_id}"}}
            return web.json_response(body)
        delay, status, retry_after = self.script.pop(0)
        await anyio.sleep(delay)
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        return web.json_response({"code": status, "msg": "no"}, status=status, headers=headers)

    async def __aenter__(self) -> Scripted:
        app = web.Application()
        app.router.add_post(CRUN_PATH, self._create)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@pytest.fixture
def redis_url() -> Iterator[str]:
    server = RedisServer()
    server.start()
    yield server.url
    server.kill()


def kie(fake: FakeProvider, **options: Any) -> KieProvider:
    options.setdefault("rate_limit", None)
    return KieProvider(api_key=fake.api_key, base_url=fake.url, **options)


class Orphans:
    """An ``on_orphan`` hook that keeps what it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Outcome]] = []
        self._called = anyio.Event()

    def __call__(self, lane: str, outcome: Outcome) -> None:
        self.calls.append((lane, outcome))
        self._called.set()

    async def wait(self, seconds: float) -> None:
        with anyio.fail_after(seconds):
            await self._called.wait()


async def collect(client: PersonaClient, requests: list[PersonaRequest]) -> list[Outcome]:
    return [outcome async for outcome in client.create_many(requests)]


# -- 401/402: a stopped lane sends nothing more ------------------------------------------------


async def test_a_retry_waiting_out_a_429_when_a_401_stops_the_lane_fails_at_once_unsent(
    fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    # Two requests go out together: one is told to come back in 5 s, the other that the key is
    # revoked. The first is waiting for its retry when the lane stops: it fails then, with
    # the 401, and is never resent.
    caplog.set_level(logging.WARNING, logger="persona_async")
    fake.inject(Fault.http(429, retry_after=5.0))
    fake.inject(Fault.envelope(401))
    async with PersonaClient([crun(fake, max_concurrency=2)], **FAST) as client:
        started = time.monotonic()
        with anyio.fail_after(5):
            outcomes = await collect(client, [req(0), req(1)])
        elapsed = time.monotonic() - started
    assert [type(o.error) for o in outcomes] == [AuthenticationError] * 2
    assert sorted(o.request.audio_id for o in outcomes) == ["clip-0", "clip-1"]
    assert fake.request_count == 2
    assert elapsed < 2.0  # not after the 429's 5 s
    # The log says why nothing more is sent, naming the error, never the key.
    stopped = [r.getMessage() for r in caplog.records if "stopped" in r.getMessage()]
    assert stopped == ["lane crun stopped: AuthenticationError, nothing more is sent"]
    assert fake.api_key not in caplog.text


async def test_a_429_answered_after_a_401_stopped_the_lane_does_not_start_it_again() -> None:
    # The 401 comes back first; the 429 to the request sent with it, 0.05 s later. The lane
    # stays stopped: that request fails with the 401 at once, and nothing more is sent.
    async with Scripted((0.0, 401, None), (0.05, 429, 0.3)) as server:
        lane = CrunProvider(api_key="k", base_url=server.url, rate_limit=None, max_concurrency=2)
        async with PersonaClient([lane], **FAST) as client:
            with anyio.fail_after(5):
                outcomes = await collect(client, [req(0), req(1)])
            await anyio.sleep(0.4)  # past the 429's Retry-After
            state = client.stats()["crun"].state
    assert [type(o.error) for o in outcomes] == [AuthenticationError] * 2
    assert len(server.arrived) == 2
    assert state is LaneState.STOPPED


# -- 429: the lane cools down --------------------------------------------------------------------


async def test_two_requests_throttled_until_the_same_moment_are_both_resent_then(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Sent together: one is told to come back in 0.5 s; the other, 0.05 s later, in 0.1 s. The
    # lane's cooldown is the longer one, so both are due at the same moment: both go then.
    caplog.set_level(logging.INFO, logger="persona_async")
    async with Scripted((0.0, 429, 0.5), (0.05, 429, 0.1)) as server:
        lane = CrunProvider(api_key="k", base_url=server.url, rate_limit=None, max_concurrency=2)
        async with PersonaClient([lane], **FAST) as client:
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
    async with PersonaClient([crun(fake)], **FAST) as client:
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
    async with PersonaClient([crun(fake)], **FAST, deadline=5.0) as client:
        started = time.monotonic()
        with pytest.raises(RateLimitError):
            await client.create_persona(req(0), deadline=0.4)
        with anyio.fail_after(4):
            persona = await client.create_persona(req(1))
        took = time.monotonic() - started
    assert persona.persona_id in fake.personas
    assert 0.5 <= took < 3.0
    assert fake.requests[1].arrived - fake.requests[0].arrived >= 0.5


async def test_a_retry_waiting_out_its_backoff_costs_no_cpu(
    fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(random, "uniform", lambda low, high: high)  # the backoff at its ceiling
    fake.inject(Fault.http(500))
    async with PersonaClient([crun(fake)], backoff_initial=1.0, backoff_max=1.0) as client:
        cpu = time.process_time()
        with anyio.fail_after(5):
            await client.create_persona(req(0))
        cpu = time.process_time() - cpu
    assert fake.request_count == 2
    assert cpu < 0.5, f"{cpu:.2f} s of CPU for a 1 s wait: the lane spun instead of sleeping"


# -- a caller that leaves ------------------------------------------------------------------------


async def test_a_caller_leaving_while_a_lost_request_waits_to_be_resent_gets_it_reported(
    fake: FakeProvider,
) -> None:
    # The family detects duplicates, so a request lost after it was sent is resent; this one's
    # resend waits for the next window (one start per 0.6 s) when its caller leaves. It is never
    # resent, and the lost attempt, which may have made a persona, is reported as an orphan.
    fake.inject(Fault.reset_after())  # created, then the connection drops
    orphans = Orphans()
    provider = kie(fake, rate_limit=1, rate_period=0.6)
    async with PersonaClient([provider], on_orphan=orphans, **FAST) as client:
        with anyio.move_on_after(0.3) as scope:
            await client.create_persona(req(0))
        assert scope.cancelled_caught
        await anyio.sleep(0.6)  # past the window: a resend would have gone out by now
    assert fake.request_count == 1
    [(lane, outcome)] = orphans.calls
    assert (lane, outcome.persona, outcome.attempts) == (provider.name, None, 1)
    assert isinstance(outcome.error, ProviderConnectionError)  # what became of the attempt
    assert outcome.error.sent is True


async def test_a_persona_an_async_task_makes_after_its_caller_left_is_reported(
    fake: FakeProvider,
) -> None:
    # kie's market route: the submit is answered with a task id at once and the task is polled
    # (first after 0.2 s here). The caller leaves in between; the persona the task makes is
    # handed to on_orphan, as it would be for a reply that came after its caller left.
    orphans = Orphans()
    poll = PollPolicy(initial=0.05, max_interval=0.2, min_interval=0.02, rate_limit=50)
    provider = KieJobsProvider(api_key=fake.api_key, base_url=fake.url, poll=poll, rate_limit=None)
    async with PersonaClient([provider], on_orphan=orphans, **FAST) as client:
        with anyio.move_on_after(0.1) as scope:
            await client.create_persona(req(0))
        assert scope.cancelled_caught
        await orphans.wait(3.0)
    [(lane, outcome)] = orphans.calls
    assert lane == provider.name
    assert outcome.persona is not None
    assert outcome.persona.audio_id == "clip-0"
    [task] = fake.tasks.values()
    assert outcome.persona.persona_id == task.persona_id
    assert outcome.persona.provider_task_id == task.task_id


# -- what a failure says -------------------------------------------------------------------------


async def test_a_call_whose_deadline_passes_in_the_queue_leaves_it_saying_where_and_how_long(
    fake: FakeProvider,
) -> None:
    fake.inject(Fault.slow(0.5))  # holds the lane's one worker
    provider = crun(fake, name="main", max_concurrency=1)
    async with PersonaClient([provider], **FAST) as client, anyio.create_task_group() as tg:
        tg.start_soon(client.create_persona, req(0))
        await anyio.sleep(0.05)
        with pytest.raises(ProviderTimeoutError) as info:
            await client.create_persona(req(1), deadline=0.3)
        queued = client.stats()["main"].queued  # request 0 is still on the wire
    err = info.value
    assert (err.provider, err.sent, err.attempts, err.audio_id) == ("main", False, 0, "clip-1")
    # Failed at its last start time, 0.225 s after it was submitted (a quarter of the 0.3 s
    # deadline left for an attempt), and says so.
    found = re.search(r"deadline passed after ([0-9.]+)s", err.message)
    assert found is not None
    assert 0.2 <= float(found.group(1)) < 0.6
    assert queued == 0
    assert [(r.json or {}).get("suno_id") for r in fake.requests] == ["clip-0"]


async def test_a_request_on_the_wire_at_its_last_start_time_is_never_cut(
    fake: FakeProvider,
) -> None:
    # One worker. Request 1 waits in the queue behind request 0 (so its deadline timer is set)
    # and goes out after 0.8 s. With a 1.6 s deadline its last start time is 1.2 s (a quarter
    # of the deadline is left for an attempt); it is on the wire then, answered at about 1.4 s,
    # before the deadline: that answer, a persona, is what the caller gets.
    fake.inject(Fault.slow(0.8))
    fake.inject(Fault.slow(0.6))
    async with (
        PersonaClient([crun(fake, max_concurrency=1)], **FAST) as client,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(client.create_persona, req(0))
        await anyio.sleep(0.01)
        with anyio.fail_after(5):
            persona = await client.create_persona(req(1), deadline=1.6)
    assert persona.audio_id == "clip-1"
    assert persona.persona_id in fake.personas


async def test_a_crun_request_lost_after_it_was_sent_says_where_to_look_and_how_to_resend(
    fake: FakeProvider,
) -> None:
    fake.inject(Fault.reset_after())
    async with PersonaClient([crun(fake, name="main")], **FAST) as client:
        with pytest.raises(OutcomeUnknownError) as info:
            await client.create_persona(req(0))
    err = info.value
    assert (err.provider, err.audio_id, err.attempts) == ("main", "clip-0", 1)
    assert err.message.endswith(
        "; a persona may or may not exist. crun documents no duplicate detection, so it was not "
        "resent: check the provider's dashboard for this audio id, then resend it or set "
        "retry_ambiguous=True"
    ), err.message
    assert fake.request_count == 1


# -- backoff ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [pytest.param(Fault.reset_before(), id="lost"), pytest.param(Fault.http(500), id="500")],
)
async def test_each_resend_waits_twice_as_long_as_the_one_before(
    fake: FakeProvider, monkeypatch: pytest.MonkeyPatch, fault: Fault
) -> None:
    # Full jitter draws each wait from [0, ceiling]; pinned at its ceiling, the waits are the
    # schedule itself: backoff_initial, then doubling (0.1 s, 0.2 s), whatever the failure.
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    fake.inject(fault, times=2)
    async with PersonaClient([kie(fake)], backoff_initial=0.1, backoff_max=10.0) as client:
        with anyio.fail_after(5):
            await client.create_persona(req(0))
    first, second, third = (r.arrived for r in fake.requests)
    assert 0.1 <= second - first < 0.2
    assert 0.2 <= third - second < 0.4


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


async def test_a_request_whose_last_start_passed_while_the_event_loop_was_blocked_is_not_sent(
    fake: FakeProvider,
) -> None:
    async with PersonaClient([crun(fake)], **FAST) as client:
        await client.create_persona(req(0))  # the lane's worker is up, waiting for work
        errors: list[PersonaError] = []

        async def call() -> None:
            try:
                await client.create_persona(req(1), deadline=0.2)
            except PersonaError as err:
                errors.append(err)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call)
                await anyio.lowlevel.checkpoint()  # it is submitted, an idle worker woken for it
                time.sleep(0.3)  # noqa: ASYNC251 - a handler hogging the loop past its last start
    (err,) = errors
    assert type(err) is ProviderTimeoutError
    assert err.message.startswith("the request's deadline passed after 0.3")
    assert fake.request_count == 1  # only the first: a squeezed-in attempt would time out


async def test_an_attempt_is_cut_at_the_calls_deadline_when_the_provider_is_slower() -> None:
    async with (
        FakeProvider(latency=2.0) as fake,
        PersonaClient([crun(fake)], **FAST, max_retries=0) as client,
    ):
        started = time.monotonic()
        with pytest.raises(OutcomeUnknownError) as info, anyio.fail_after(4):
            await client.create_persona(req(0), deadline=0.5)
        took = time.monotonic() - started
    assert type(info.value.__cause__) is ProviderTimeoutError  # sent, then no answer in time
    assert took < 2.0  # the deadline, not the provider's 60 s timeout


# -- deadlines -------------------------------------------------------------------------------------


async def test_a_retry_whose_deadline_passes_while_the_lane_is_busy_fails_with_its_last_answer(
    fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One worker. Request 0 gets a 500 and is due again 0.05 s later, but request 1 holds the
    # worker for a second by then: request 0's deadline passes in the queue. It was sent, so
    # "never sent" would be a lie: it fails with what the provider last said.
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    fake.inject(Fault.http(500))
    fake.inject(Fault.slow(1.0))
    lane = crun(fake, max_concurrency=1)
    async with (
        PersonaClient([lane], backoff_initial=0.05) as client,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(client.create_persona, req(1))  # queued behind request 0
        started = time.monotonic()
        with pytest.raises(PersonaError) as info, anyio.fail_after(5):
            await client.create_persona(req(0), deadline=0.5)
        elapsed = time.monotonic() - started
    assert type(info.value) is ServerError
    assert elapsed < 0.75  # at its last start time (0.375 s), not when the worker came free
    assert (info.value.attempts, info.value.audio_id) == (1, "clip-0")
    assert [(r.json or {}).get("suno_id") for r in fake.requests] == ["clip-0", "clip-1"]


# -- 455: the lane pauses ------------------------------------------------------------------------


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
        async with PersonaClient([provider], **FAST) as client:
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
        async with PersonaClient([lane], **FAST) as client:
            with anyio.fail_after(10):
                outcomes = await collect(client, [req(i) for i in range(4)])
    assert all(outcome.ok for outcome in outcomes), outcomes
    _paused, (throttled, _), *after = provider.arrived  # the 455, the probe's 429, the rest
    assert after, provider.arrived
    assert min(when for when, _ in after) >= throttled + 0.5


# -- what stats() tells ----------------------------------------------------------------------------


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
        async with PersonaClient([lane], **FAST) as client:
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


# -- what a persona says ---------------------------------------------------------------------------


async def test_a_persona_names_its_lane_and_what_it_was_made_from(fake: FakeProvider) -> None:
    lane = CrunProvider(api_key=fake.api_key, base_url=fake.url, rate_limit=None, name="crun-eu")
    async with PersonaClient([lane], **FAST) as client:
        with anyio.fail_after(5):
            persona = await client.create_persona(req(7))
    made = fake.personas[persona.persona_id]
    assert (persona.provider, persona.task_id, persona.audio_id) == ("crun-eu", "task-7", "clip-7")
    assert (persona.name, persona.description) == ("Persona 7", "Smoky late-night R&B")
    assert (made["task_id"], made["audio_id"], made["name"]) == ("task-7", "clip-7", "Persona 7")


async def test_closing_the_client_answers_requests_in_flight_and_queued_for_what_they_are() -> (
    None
):
    async with FakeProvider(latency=5.0) as fake:
        client = PersonaClient([crun(fake, name="main", max_concurrency=1)], **FAST)
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
