"""A request's deadline bounds the whole call, from submission: queueing, cooldowns after 429,
maintenance waits and retries. It ends the call with the provider's last answer, and it never
starts an attempt that could not finish in time.

Margins: a call may end at its last start time (the deadline less a quarter of the provider's
timeout, or of the deadline if shorter) and must end by its deadline; the upper bounds allow a
loaded machine a few tenths of a second on top.
"""

from __future__ import annotations

import asyncio
import gc
import random
import re
import time
from typing import Any

import anyio
import pytest
from _support import FAST_RETRY, crun, fast_retry, req

from persona_async import (
    CrunProvider,
    KieProvider,
    MaintenanceError,
    Outcome,
    OutcomeUnknownError,
    Persona,
    PersonaClient,
    PersonaError,
    PersonaRequest,
    ProviderTimeoutError,
    RateLimitError,
    RetryPolicy,
    ServerError,
)
from persona_async._deadline import Deadlines
from persona_async._job import _Job
from persona_async._lane import Lane
from persona_async._transport import SessionPool
from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio

SLACK = 0.4  # scheduling noise on a loaded 2-core machine


def client(provider: CrunProvider | KieProvider, **kw: Any) -> PersonaClient:
    """A client whose resends wait 0.02 s doubling to 0.1 s (not ``FAST_RETRY``'s 0.01-0.05 s):
    the backoffs this file's deadline margins were set with."""
    return PersonaClient([provider], **{"backoff_initial": 0.02, "backoff_max": 0.1, **kw})


async def timed_failure(c: PersonaClient, request: PersonaRequest, **kw: Any) -> tuple[Any, float]:
    started = time.monotonic()
    with pytest.raises(PersonaError) as info:
        await c.create_persona(request, **kw)
    return info.value, time.monotonic() - started


# -- maintenance -------------------------------------------------------------------------------


async def test_a_call_during_maintenance_returns_by_its_deadline_with_maintenance_error(
    fake: FakeProvider,
) -> None:
    fake.maintenance(60.0)
    # max_maintenance_wait is the default 600 s: only the deadline can end this call early.
    # Probes go at 0.5 s, then 1.5 s: the call must not wait for the second one.
    async with client(crun(fake), deadline=1.0, backoff_initial=0.5, backoff_max=30.0) as c:
        err, elapsed = await timed_failure(c, req(1))
    assert type(err) is MaintenanceError
    assert err.code == 455  # the provider's own answer, not a bare timeout
    assert "deadline" in err.message
    assert 0.75 - 0.05 <= elapsed <= 1.0 + SLACK  # at its last start time at the earliest
    assert fake.request_count <= 2  # the first request and one probe, no spinning
    assert fake.personas == {}


async def test_a_per_call_deadline_overrides_the_clients(fake: FakeProvider) -> None:
    fake.maintenance(60.0)
    async with client(crun(fake), deadline=30.0) as c:
        err, elapsed = await timed_failure(c, req(1), deadline=0.5)
    assert type(err) is MaintenanceError
    assert elapsed <= 0.5 + SLACK


async def test_one_client_serves_a_fast_failing_handler_and_a_stream_that_waits_it_out(
    fake: FakeProvider,
) -> None:
    # The client's defaults: a create_persona call gets a web handler's budget, while
    # create_many's requests wait out a maintenance window (here 1.2 s).
    fake.maintenance(1.2)
    async with client(crun(fake, max_concurrency=2)) as c:
        started = time.monotonic()
        err, elapsed = await timed_failure(c, req(0), deadline=0.4)
        outcomes = [o async for o in c.create_many([req(i) for i in range(1, 5)])]
        waited = time.monotonic() - started
    assert type(err) is MaintenanceError
    assert elapsed <= 0.4 + SLACK
    assert [o.ok for o in outcomes] == [True] * 4
    assert waited >= 1.1  # the window was set just before the clock started
    assert sum(fake.creations.values()) == 4


async def test_a_per_stream_deadline_bounds_every_request_of_the_stream(
    fake: FakeProvider,
) -> None:
    fake.maintenance(60.0)
    async with client(crun(fake, max_concurrency=2)) as c:
        started = time.monotonic()
        outcomes: list[Outcome] = [
            o async for o in c.create_many([req(i) for i in range(6)], deadline=0.6)
        ]
        elapsed = time.monotonic() - started
    assert [type(o.error) for o in outcomes] == [MaintenanceError] * 6
    assert elapsed <= 0.6 + SLACK
    assert fake.personas == {}


async def test_max_maintenance_wait_still_caps_a_wait_inside_a_longer_deadline(
    fake: FakeProvider,
) -> None:
    fake.maintenance(60.0)
    async with client(crun(fake), deadline=30.0, max_maintenance_wait=0.3) as c:
        err, elapsed = await timed_failure(c, req(1))
    assert type(err) is MaintenanceError
    assert "after 0.3s" in err.message
    assert elapsed <= 0.3 + SLACK


# -- 429 cooldowns -----------------------------------------------------------------------------


async def test_a_cooldown_longer_than_the_deadline_fails_queued_calls_with_the_429(
    fake: FakeProvider,
) -> None:
    fake.inject(Fault.http(429, retry_after=20))
    async with client(crun(fake, max_concurrency=1)) as c, anyio.create_task_group() as tg:
        errors: list[Any] = []

        async def call(i: int) -> None:
            errors.append(await timed_failure(c, req(i), deadline=1.0))

        tg.start_soon(call, 1)  # gets the 429: the lane cools for 20 s
        await anyio.sleep(0.05)
        tg.start_soon(call, 2)  # queued behind it, in the cooling lane
    assert fake.request_count == 1  # nothing went out during the cooldown
    for err, elapsed in errors:
        assert type(err) is RateLimitError
        assert err.retry_after == 20  # what a handler needs for its own Retry-After
        assert elapsed <= 1.0 + SLACK
    # The one that got the 429 knew at once that its deadline came first.
    assert min(elapsed for _, elapsed in errors) < 0.5


async def test_a_call_arriving_in_a_lane_cooling_past_its_deadline_fails_at_once(
    fake: FakeProvider,
) -> None:
    fake.inject(Fault.http(429, retry_after=20))
    async with client(crun(fake)) as c:
        await timed_failure(c, req(1), deadline=1.0)  # the 429: the lane cools for 20 s
        err, elapsed = await timed_failure(c, req(2), deadline=7.5)  # a web handler's call
        stats = c.stats()["crun"]
    assert type(err) is RateLimitError
    assert elapsed < 0.3  # not the 7.5 s its deadline would have allowed
    assert err.retry_after == 20  # the whole seconds until the lane sends again
    assert "failed at once" in err.message
    assert (err.task_id, err.attempts) == ("task-2", 0)
    assert fake.request_count == 1
    assert stats.failed["RateLimitError"] == 2


async def test_calls_queued_when_the_lane_starts_cooling_past_their_deadline_fail_at_once(
    fake: FakeProvider,
) -> None:
    fake.inject(Fault.http(429, retry_after=20).later(0.2))
    async with client(crun(fake, max_concurrency=1)) as c, anyio.create_task_group() as tg:
        errors: list[Any] = []

        async def call(i: int) -> None:
            errors.append(await timed_failure(c, req(i), deadline=5.0))

        tg.start_soon(call, 1)  # on the wire for 0.2 s, then the 429: cooling for 20 s
        await anyio.sleep(0.05)
        tg.start_soon(call, 2)  # queued behind it
        tg.start_soon(call, 3)
    assert fake.request_count == 1
    assert [type(err) for err, _ in errors] == [RateLimitError] * 3
    assert max(elapsed for _, elapsed in errors) < 0.2 + SLACK  # not their 5 s deadline


async def test_calls_in_a_lane_paused_past_their_last_start_fail_at_once(
    fake: FakeProvider,
) -> None:
    fake.maintenance(60.0)
    async with client(crun(fake), backoff_initial=10.0, backoff_max=30.0) as c:
        await timed_failure(c, req(1), deadline=0.5)  # the 455: next probe in 10 s
        err, elapsed = await timed_failure(c, req(2), deadline=5.0)
    assert type(err) is MaintenanceError
    assert elapsed < 0.3
    assert "next probe" in err.message
    assert fake.request_count == 1


async def test_a_cooldown_the_call_can_wait_out_is_waited_out(fake: FakeProvider) -> None:
    fake.inject(Fault.http(429, retry_after=1))
    async with client(crun(fake)) as c:
        await timed_failure(c, req(1), deadline=0.5)  # the 429: the lane cools for 1 s
        started = time.monotonic()
        persona = await c.create_persona(req(2), deadline=5.0)
    assert persona.persona_id in fake.personas
    assert time.monotonic() - started >= 0.5  # it waited for the lane, then went


# -- attempts that could not finish are not started --------------------------------------------


async def test_a_queued_call_whose_time_runs_out_is_never_sent(fake: FakeProvider) -> None:
    fake.inject(Fault.slow(1.5))  # holds the lane's one connection slot
    async with client(crun(fake, max_concurrency=1)) as c, anyio.create_task_group() as tg:
        tg.start_soon(c.create_persona, req(1))
        await anyio.sleep(0.05)
        err, elapsed = await timed_failure(c, req(2), deadline=0.6)
    assert type(err) is ProviderTimeoutError
    assert err.sent is False  # it says why: it never left the queue
    assert "never sent" in err.message
    assert 0.45 - 0.05 <= elapsed <= 0.6 + SLACK
    assert [(r.json or {}).get("suno_id") for r in fake.requests] == ["clip-1"]


async def test_a_retry_falling_due_with_too_little_time_left_is_not_sent(
    fake: FakeProvider,
) -> None:
    # timeout 1 s: an attempt needs 0.25 s left. The cooldown ends 0.15 s before the deadline.
    fake.inject(Fault.http(429, retry_after=1.85))
    async with client(crun(fake, timeout=1.0), deadline=2.0) as c:
        err, elapsed = await timed_failure(c, req(1))
    assert type(err) is RateLimitError
    assert elapsed < 0.5  # known at the 429: no point waiting
    assert fake.request_count == 1


async def test_a_retry_with_a_fair_share_of_time_left_is_sent(fake: FakeProvider) -> None:
    fake.inject(Fault.http(429, retry_after=0.5))
    async with client(crun(fake, timeout=1.0), deadline=2.0) as c:
        persona = await c.create_persona(req(1))
    assert persona.persona_id in fake.personas
    assert fake.request_count == 2


# -- max_retries per call ---------------------------------------------------------------------


async def test_max_retries_per_call_and_per_stream_override_the_clients(
    fake: FakeProvider,
) -> None:
    fake.inject(Fault.envelope(500), times=100)
    async with client(crun(fake), max_retries=3, backoff_initial=0.01, backoff_max=0.01) as c:
        err, _ = await timed_failure(c, req(1), max_retries=0)  # a handler: no resend
        assert fake.request_count == 1
        outcomes = [o async for o in c.create_many([req(2)], max_retries=1)]
        assert fake.request_count == 1 + 2
        err_default, _ = await timed_failure(c, req(3))  # the client's 3
        assert fake.request_count == 3 + 4
    assert type(err) is type(err_default) is type(outcomes[0].error) is ServerError


# -- bad values --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1.0, float("nan")])
async def test_a_bad_deadline_is_refused_by_name_before_anything_is_sent(
    fake: FakeProvider, bad: float
) -> None:
    with pytest.raises(ValueError, match="deadline must be > 0"):
        PersonaClient([crun(fake)], deadline=bad)
    async with client(crun(fake)) as c:
        with pytest.raises(ValueError, match="deadline must be > 0"):
            await c.create_persona(req(1), deadline=bad)
        with pytest.raises(ValueError, match="deadline must be > 0"):
            c.create_many([req(2)], deadline=bad)
    assert fake.request_count == 0


async def test_a_bad_max_retries_is_refused_by_name_before_anything_is_sent(
    fake: FakeProvider,
) -> None:
    async with client(crun(fake)) as c:
        with pytest.raises(ValueError, match="max_retries must be an int >= 0"):
            await c.create_persona(req(1), max_retries=-1)
        with pytest.raises(ValueError, match="max_retries must be an int >= 0"):
            c.create_many([req(2)], max_retries=-1)
    assert fake.request_count == 0


# -- the defaults: a handler's 30 s, a stream's hour ---------------------------------------------
# Observed through a 429's Retry-After: a cooldown the deadline cannot cover fails the call at
# once, one it can cover is waited out. With the 60 s provider timeout an attempt needs 7.5 s
# of a 30 s deadline, so 25 s is too long for create_persona and 20 s is not.


async def test_create_persona_defaults_to_a_web_handlers_30_seconds(fake: FakeProvider) -> None:
    fake.inject(Fault.http(429, retry_after=25))
    async with client(crun(fake), retry_after_max=120.0) as c:
        err, elapsed = await timed_failure(c, req(1))
        assert type(err) is RateLimitError
        assert elapsed < 0.5
    fake.inject(Fault.http(429, retry_after=20))
    async with client(crun(fake), retry_after_max=120.0) as c:  # a lane not cooling yet
        with anyio.move_on_after(0.5) as waiting:
            await c.create_persona(req(2))  # waits out the 20 s cooldown
    assert waiting.cancelled_caught


async def test_create_many_defaults_to_waiting_out_what_a_handler_would_not(
    fake: FakeProvider,
) -> None:
    fake.inject(Fault.http(429, retry_after=25))
    async with client(crun(fake), retry_after_max=120.0) as c:
        stream = c.create_many([req(1)])
        with anyio.move_on_after(0.5) as waiting:
            await stream.__anext__()
        stream.close()
    assert waiting.cancelled_caught
    assert fake.request_count == 1


# -- one timer for a lane's waiting jobs ---------------------------------------------------------


async def test_one_deadline_timer_fails_each_waiting_job_on_time_however_many_came_and_went() -> (
    None
):
    loop = asyncio.get_running_loop()
    expired: list[tuple[str, float]] = []
    deadlines = Deadlines(lambda job: expired.append((job.request.task_id, loop.time())), loop.time)

    def job(task: str, seconds: float) -> _Job:
        request = PersonaRequest(task, "clip", "Neon Siren", "R&B")
        now = loop.time()
        return _Job(request, b"", lambda *_: None, submitted=now, last_start=now + seconds)

    started = loop.time()
    late, early = job("late", 0.3), job("early", 0.15)
    deadlines.arm(late)
    gone = [job(f"gone-{i}", 0.2 + i / 1000) for i in range(500)]
    for j in gone:  # armed, then sent or finished before their time: never expired
        deadlines.arm(j)
    deadlines.arm(early)
    for j in gone:
        deadlines.disarm(j)
    await asyncio.sleep(0.45)
    deadlines.close()

    assert [task for task, _ in expired] == ["early", "late"]
    assert expired[0][1] - started == pytest.approx(0.15, abs=0.05)
    assert expired[1][1] - started == pytest.approx(0.3, abs=0.05)
    assert len(deadlines._heap) < 100  # the stale entries were dropped, not kept for an hour


async def test_a_job_waiting_long_does_not_keep_alive_the_thousands_that_passed_it() -> None:
    # A bulk stream arms every queued job in deadline order; one of them waits (a retry's
    # backoff) while 20,000 others are sent and finished behind it. Those must be freed, not
    # held until the first one's hour is up: memory follows the jobs that wait.
    loop = asyncio.get_running_loop()
    deadlines = Deadlines(lambda job: None, loop.time)

    def job(task: str, seconds: float) -> _Job:
        request = PersonaRequest(task, "clip", "Neon Siren", "R&B")
        now = loop.time()
        return _Job(request, b"", lambda *_: None, submitted=now, last_start=now + seconds)

    waiting = job("waiting", 3600.0)
    deadlines.arm(waiting)
    for i in range(20_000):
        passed = job(f"passed-{i}", 3600.0 + i / 1000)
        deadlines.arm(passed)
        deadlines.disarm(passed)
    del passed
    gc.collect()
    alive = sum(isinstance(o, _Job) for o in gc.get_objects())
    deadlines.close()

    assert waiting.armed
    assert alive < 600  # the waiting job, and at most a few hundred not yet dropped


# -- the fair share, at its boundary -------------------------------------------------------------
# "An attempt starts only while a fair share of time is left": a quarter of the provider's
# timeout, or of the deadline if that is shorter. Pinned on the lane's own clock, which the test
# holds: the request is submitted, then the clock is moved to just before or just after its
# last start time before the lane's worker first runs, which is when it decides to send. The
# deadline is still seconds away either way, so a lane that sent whatever is not yet past its
# deadline, or counted the share differently, fails a row.


class _Clock:
    """The lane's clock, moved by the test (the loop's timers keep real time)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _attempt_at(
    fake: FakeProvider, *, provider_timeout: float = 60.0, deadline: float = 30.0, at: float = 0.0
) -> tuple[Persona | None, PersonaError | None, int]:
    """Submit one request on a lane whose clock then moves ``at`` seconds before its worker runs.

    Returns the answer (a persona or an error), or (None, None) for a request that the lane
    queued again to resend later; and the lane's retries.
    """
    clock = _Clock()
    pool = SessionPool()
    lane = Lane(crun(fake, timeout=provider_timeout), pool, RetryPolicy(), clock=clock)
    answers: list[tuple[Persona | None, PersonaError | None]] = []

    def deliver(job: _Job, persona: Persona | None, err: PersonaError | None) -> None:
        answers.append((persona, err))

    try:
        async with anyio.create_task_group() as tg:
            lane.submit(req(1), deliver, tg, deadline=deadline)
            clock.now += at  # its worker has not run yet: it finds the request this late
            with anyio.fail_after(5):
                while not answers and not lane.stats().retries:  # noqa: ASYNC110 - a requeue sets no event
                    await anyio.sleep(0.005)
            tg.cancel_scope.cancel()
    finally:
        retries = lane.stats().retries
        await lane.aclose()
        await pool.aclose()
    persona, err = answers[0] if answers else (None, None)
    return persona, err, retries


@pytest.mark.parametrize(
    ("provider_timeout", "deadline", "last_start"),
    [
        pytest.param(60.0, 30.0, 22.5, id="a-quarter-of-the-deadline"),  # shorter than timeout
        pytest.param(10.0, 30.0, 27.5, id="a-quarter-of-the-timeout"),
    ],
)
async def test_an_attempt_starts_only_with_a_fair_share_of_time_left(
    fake: FakeProvider, provider_timeout: float, deadline: float, last_start: float
) -> None:
    limits = {"provider_timeout": provider_timeout, "deadline": deadline}
    persona, err, _ = await _attempt_at(fake, **limits, at=last_start)
    assert err is None  # at its last start time exactly: it goes
    assert persona is not None
    assert fake.request_count == 1

    persona, err, _ = await _attempt_at(fake, **limits, at=last_start + 0.001)
    assert persona is None
    assert type(err) is ProviderTimeoutError  # never sent ...
    assert err.sent is False
    assert err.attempts == 0
    assert fake.request_count == 1  # ... though its deadline was seconds away


async def test_a_cooldown_ending_after_the_last_start_time_fails_the_call_at_once(
    fake: FakeProvider,
) -> None:
    # The same share for a retry: a 429's Retry-After ending exactly at the request's last
    # start time (22.5 s of a 30 s deadline, with crun's 60 s timeout) is waited out, the
    # request queued to be resent then; a millisecond later and the call fails at once with
    # the 429, 7.5 s before its deadline, instead of waiting for a start it may not make.
    fake.inject(Fault.http(429, retry_after=22.5))
    persona, err, retries = await _attempt_at(fake)
    assert (persona, err, retries) == (None, None, 1)  # queued to be resent in 22.5 s

    fake.inject(Fault.http(429, retry_after=22.501))
    persona, err, retries = await _attempt_at(fake)
    assert type(err) is RateLimitError
    assert err.retry_after == 22.501
    assert retries == 0
    assert fake.request_count == 2  # one attempt each


# The defaults at their boundary, through the public API: with crun's 60 s timeout a call's last
# start is 22.5 s after submission for create_persona (30 s) and 3585 s for each create_many
# request (an hour). A 429's Retry-After ending just inside it is waited out; one ending after
# it fails the call at once. (The 0.2 s inside covers the 429's own round trip.)


@pytest.mark.parametrize(
    ("retry_after", "waits"), [(22.3, True), (22.51, False)], ids=["inside", "after"]
)
async def test_create_persona_default_deadline_at_its_last_start(
    fake: FakeProvider, retry_after: float, waits: bool
) -> None:
    fake.inject(Fault.http(429, retry_after=retry_after))
    async with client(crun(fake), retry_after_max=4000.0) as c:
        with anyio.move_on_after(0.5) as waiting, pytest.raises(RateLimitError):
            await c.create_persona(req(1))
    assert waiting.cancelled_caught is waits
    assert fake.request_count == 1


@pytest.mark.parametrize(
    ("retry_after", "waits"), [(3584.8, True), (3585.01, False)], ids=["inside", "after"]
)
async def test_create_many_default_deadline_at_its_last_start(
    fake: FakeProvider, retry_after: float, waits: bool
) -> None:
    fake.inject(Fault.http(429, retry_after=retry_after))
    async with client(crun(fake), retry_after_max=4000.0) as c:
        stream = c.create_many([req(1)])
        with anyio.move_on_after(0.5) as waiting:
            outcome = await stream.__anext__()
            assert type(outcome.error) is RateLimitError
        stream.close()
    assert waiting.cancelled_caught is waits
    assert fake.request_count == 1


# -- the last start time: a call in the queue, one on the wire, a blocked loop, a busy lane -----


async def test_a_call_whose_deadline_passes_in_the_queue_leaves_it_saying_where_and_how_long(
    fake: FakeProvider,
) -> None:
    fake.inject(Fault.slow(0.5))  # holds the lane's one worker
    provider = crun(fake, name="main", max_concurrency=1)
    async with (
        PersonaClient([provider], retry=FAST_RETRY) as client,
        anyio.create_task_group() as tg,
    ):
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
        PersonaClient([crun(fake, max_concurrency=1)], retry=FAST_RETRY) as client,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(client.create_persona, req(0))
        await anyio.sleep(0.01)
        with anyio.fail_after(5):
            persona = await client.create_persona(req(1), deadline=1.6)
    assert persona.audio_id == "clip-1"
    assert persona.persona_id in fake.personas


async def test_a_request_whose_last_start_passed_while_the_event_loop_was_blocked_is_not_sent(
    fake: FakeProvider,
) -> None:
    async with PersonaClient([crun(fake)], retry=FAST_RETRY) as client:
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
        PersonaClient([crun(fake)], retry=fast_retry(max_retries=0)) as client,
    ):
        started = time.monotonic()
        with pytest.raises(OutcomeUnknownError) as info, anyio.fail_after(4):
            await client.create_persona(req(0), deadline=0.5)
        took = time.monotonic() - started
    assert type(info.value.__cause__) is ProviderTimeoutError  # sent, then no answer in time
    assert took < 2.0  # the deadline, not the provider's 60 s timeout


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
