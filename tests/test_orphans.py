"""A caller that leaves does not lose a persona: what its request made after it left is logged
and handed to ``on_orphan``; a request cancelled before it was sent is never sent."""

from __future__ import annotations

import asyncio
import logging

import anyio
import pytest
from _support import FAST_RETRY, crun, kie, req

from persona_async import (
    KieJobsProvider,
    Outcome,
    OutcomeUnknownError,
    PersonaClient,
    PersonaRequest,
    PollPolicy,
    ProviderConnectionError,
)
from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio

REQUEST = PersonaRequest("task_1", "clip_1", "Neon Siren", "Smoky late-night R&B")


class Recorder:
    """An ``on_orphan`` hook that keeps what it is given and can wait for it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Outcome]] = []
        self._event = anyio.Event()

    def __call__(self, lane: str, outcome: Outcome) -> None:
        self.calls.append((lane, outcome))
        self._event.set()

    async def wait(self, seconds: float = 5.0) -> None:
        with anyio.fail_after(seconds):
            await self._event.wait()


async def leave_after(seconds: float, client: PersonaClient, request: PersonaRequest) -> None:
    """Call create_persona and go away after ``seconds`` (a handler whose user hung up)."""
    with anyio.move_on_after(seconds) as scope:
        await client.create_persona(request)
    assert scope.cancelled_caught, "the call finished before its caller left"


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "persona_async" and r.levelno == logging.WARNING
    ]


async def test_a_persona_made_after_its_caller_left_is_logged_and_handed_to_the_hook(
    fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    fake.inject(Fault.slow(0.4))
    orphans = Recorder()
    caplog.set_level(logging.WARNING, logger="persona_async")
    async with PersonaClient([crun(fake, name="main")], on_orphan=orphans) as client:
        await leave_after(0.1, client, REQUEST)
        await orphans.wait()
    [(lane, outcome)] = orphans.calls
    assert lane == "main"
    assert outcome.persona is not None
    assert outcome.persona.persona_id in fake.personas
    assert (outcome.request, outcome.attempts) == (REQUEST, 1)
    [line] = [m for m in warnings_of(caplog) if outcome.persona.persona_id in m]
    for part in ("main", "task_1", "clip_1"):
        assert part in line
    assert fake.api_key not in caplog.text


async def test_an_unknown_outcome_after_the_caller_left_is_reported_too(
    fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    fake.latency = 0.4
    fake.inject(Fault.reset_after())  # created, then the connection drops: nobody can know
    orphans = Recorder()
    caplog.set_level(logging.WARNING, logger="persona_async")
    async with PersonaClient([crun(fake)], on_orphan=orphans) as client:
        await leave_after(0.1, client, REQUEST)
        await orphans.wait()
    [(lane, outcome)] = orphans.calls
    assert (lane, outcome.persona) == ("crun", None)
    assert isinstance(outcome.error, OutcomeUnknownError)
    assert sum(fake.creations.values()) == 1
    [line] = [m for m in warnings_of(caplog) if "outcome unknown" in m]
    assert "task_1" in line
    assert "clip_1" in line


async def test_a_request_lost_after_its_caller_left_is_not_resent_but_reported(
    fake: FakeProvider,
) -> None:
    # The family detects duplicates, so a lost request is normally resent; with nobody
    # waiting for it, it is not, and its unknown outcome is reported instead.
    fake.latency = 0.4
    fake.inject(Fault.reset_after())
    orphans = Recorder()
    async with PersonaClient([kie(fake)], on_orphan=orphans, backoff_initial=0.01) as client:
        await leave_after(0.1, client, REQUEST)
        await orphans.wait()
        await anyio.sleep(0.2)  # a resend would have gone out by now
    assert fake.request_count == 1
    [(_, outcome)] = orphans.calls
    assert outcome.persona is None
    assert outcome.error is not None


async def test_a_call_cancelled_before_it_was_sent_sends_nothing_and_is_no_orphan(
    fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    fake.inject(Fault.slow(0.4))  # holds the lane's only slot
    orphans = Recorder()
    caplog.set_level(logging.WARNING, logger="persona_async")
    async with PersonaClient([crun(fake, max_concurrency=1)], on_orphan=orphans) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.create_persona, PersonaRequest("t0", "first", "n", "d"))
            await anyio.sleep(0.05)
            await leave_after(0.1, client, REQUEST)  # still queued when its caller leaves
        await anyio.sleep(0.2)
    assert [(r.json or {}).get("suno_id") for r in fake.requests] == ["first"]
    assert orphans.calls == []
    assert warnings_of(caplog) == []


async def test_a_failing_hook_costs_nothing_but_a_log_line(
    fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    called = anyio.Event()

    def broken(lane: str, outcome: Outcome) -> None:
        called.set()
        raise RuntimeError("the application's bug")

    fake.inject(Fault.slow(0.3))
    async with PersonaClient([crun(fake)], on_orphan=broken) as client:
        await leave_after(0.1, client, REQUEST)
        with anyio.fail_after(5):
            await called.wait()
        # The lane goes on serving.
        persona = await client.create_persona(PersonaRequest("t2", "c2", "n", "d"))
    assert persona.persona_id in fake.personas
    assert "on_orphan hook raised" in caplog.text


async def test_a_persona_answered_just_as_its_caller_was_cancelled_is_reported(
    fake: FakeProvider,
) -> None:
    # The answer is in, but the caller's task is cancelled before it resumes to take it.
    orphans = Recorder()
    async with PersonaClient([crun(fake)], on_orphan=orphans) as client:
        task = asyncio.get_running_loop().create_task(client.create_persona(REQUEST))
        # Polled at every turn of the loop, on purpose: an event would add a turn.
        while client.stats()["crun"].succeeded == 0:  # noqa: ASYNC110
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    [(lane, outcome)] = orphans.calls
    assert lane == "crun"
    assert outcome.persona is not None
    assert outcome.persona.persona_id in fake.personas


# -- a caller leaving while its request waits to be resent, or its task polls --------------


async def test_a_caller_leaving_while_a_lost_request_waits_to_be_resent_gets_it_reported(
    fake: FakeProvider,
) -> None:
    # The family detects duplicates, so a request lost after it was sent is resent; this one's
    # resend waits for the next window (one start per 0.6 s) when its caller leaves. It is never
    # resent, and the lost attempt, which may have made a persona, is reported as an orphan.
    fake.inject(Fault.reset_after())  # created, then the connection drops
    orphans = Recorder()
    provider = kie(fake, rate_limit=1, rate_period=0.6)
    async with PersonaClient([provider], retry=FAST_RETRY, on_orphan=orphans) as client:
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
    orphans = Recorder()
    poll = PollPolicy(initial=0.05, max_interval=0.2, min_interval=0.02, rate_limit=50)
    provider = KieJobsProvider(api_key=fake.api_key, base_url=fake.url, poll=poll, rate_limit=None)
    async with PersonaClient([provider], retry=FAST_RETRY, on_orphan=orphans) as client:
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
