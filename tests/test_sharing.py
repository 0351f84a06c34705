"""One request, one persona: identical ``create_persona`` calls share one create, and a persona
made is returned again without sending, for ``remember_for`` seconds. Counted at the fake
provider: what it received and what it created."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest
from _support import make, req

from persona_async import (
    CrunProvider,
    Outcome,
    PersonaClient,
    PersonaRequest,
    ProviderTimeoutError,
    ValidationError,
)
from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio

REQUEST = PersonaRequest("task_1", "clip_1", "Neon Siren", "Smoky late-night R&B")


def client(fake: FakeProvider, **kw: Any) -> PersonaClient:
    return PersonaClient([make(CrunProvider, fake)], backoff_initial=0.01, **kw)


async def test_twenty_identical_calls_at_once_make_one_persona_and_all_get_its_id(
    fake: FakeProvider,
) -> None:
    fake.latency = 0.2
    async with client(fake) as c:
        personas = await asyncio.gather(*(c.create_persona(REQUEST) for _ in range(20)))
        stats = c.stats()["crun"]
    assert fake.request_count == 1
    assert fake.creations.total() == 1
    assert {p.persona_id for p in personas} == set(fake.personas)
    assert (stats.sent, stats.succeeded) == (1, 1)


async def test_the_same_request_after_it_succeeded_is_answered_without_sending(
    fake: FakeProvider,
) -> None:
    async with client(fake) as c:
        first = await c.create_persona(REQUEST)
        again = await c.create_persona(REQUEST)
    assert fake.request_count == 1
    assert again == first


async def test_the_same_clip_under_another_name_or_description_is_another_request(
    fake: FakeProvider,
) -> None:
    async with client(fake) as c:
        first = await c.create_persona(REQUEST)
        renamed = await c.create_persona(
            PersonaRequest("task_1", "clip_1", "Other Name", "Smoky late-night R&B")
        )
        described = await c.create_persona(
            PersonaRequest("task_1", "clip_1", "Neon Siren", "Bright pop")
        )
    assert fake.request_count == 3
    assert len({first.persona_id, renamed.persona_id, described.persona_id}) == 3
    assert renamed.name == "Other Name"
    assert described.description == "Bright pop"


async def test_a_failed_request_asked_again_is_sent_again(fake: FakeProvider) -> None:
    fake.inject(Fault.http(422, message="audio not ready"))
    async with client(fake) as c:
        with pytest.raises(ValidationError):
            await c.create_persona(REQUEST)
        persona = await c.create_persona(REQUEST)
    assert fake.request_count == 2
    assert persona.persona_id in fake.personas


async def test_identical_calls_in_flight_share_a_failure_each_with_its_own_exception(
    fake: FakeProvider,
) -> None:
    fake.latency = 0.2
    fake.inject(Fault.http(422, message="audio not ready"))
    async with client(fake) as c:
        outcomes = await asyncio.gather(
            *(c.create_persona(REQUEST) for _ in range(5)), return_exceptions=True
        )
    assert fake.request_count == 1
    assert all(isinstance(o, ValidationError) for o in outcomes)
    assert len({id(o) for o in outcomes}) == 5


async def test_a_caller_that_hung_up_after_sending_gets_the_persona_when_it_asks_again(
    fake: FakeProvider,
) -> None:
    fake.latency = 0.6
    orphans: list[Outcome] = []
    async with client(fake, on_orphan=lambda lane, o: orphans.append(o)) as c:
        with anyio.move_on_after(0.2) as hung_up:  # the request is on the wire by then
            await c.create_persona(REQUEST)
        assert hung_up.cancelled_caught
        persona = await c.create_persona(REQUEST)  # joins the attempt still in flight
        assert fake.request_count == 1
        with anyio.move_on_after(0.2):
            await c.create_persona(req(2))  # hangs up: this one is made for nobody
        await anyio.sleep(0.8)
        again = await c.create_persona(req(2))  # asked again after it was made
    assert fake.request_count == 2
    assert fake.creations.total() == 2
    assert persona.persona_id in fake.personas
    assert again.persona_id in fake.personas
    assert [o.persona.persona_id for o in orphans if o.persona] == [again.persona_id]


async def test_a_caller_that_hung_up_before_sending_sends_nothing(fake: FakeProvider) -> None:
    fake.latency = 0.3
    provider = make(CrunProvider, fake, max_concurrency=1)
    async with PersonaClient([provider]) as c, anyio.create_task_group() as tg:
        tg.start_soon(c.create_persona, req(1))  # holds the one connection
        await anyio.sleep(0.05)
        with anyio.move_on_after(0.1):
            await c.create_persona(req(2))  # queued behind it, then gone
        await anyio.sleep(0.6)
    assert fake.request_count == 1


async def test_a_caller_whose_deadline_passes_first_leaves_and_the_others_get_the_persona(
    fake: FakeProvider,
) -> None:
    fake.latency = 0.5
    async with client(fake) as c:
        first = asyncio.ensure_future(c.create_persona(REQUEST))
        await anyio.sleep(0.1)
        with pytest.raises(ProviderTimeoutError) as info:
            await c.create_persona(REQUEST, deadline=0.1)  # joins, then its time is up
        persona = await first
        again = await c.create_persona(REQUEST, deadline=0.1)  # remembered: nothing to wait
    assert info.value.sent is True  # the shared request was on the wire
    assert "calling again" in str(info.value).lower()
    assert again == persona
    assert fake.request_count == 1


async def test_remember_for_0_sends_the_same_request_again(fake: FakeProvider) -> None:
    async with client(fake, remember_for=0) as c:
        first = await c.create_persona(REQUEST)
        second = await c.create_persona(REQUEST)
    assert fake.request_count == 2
    assert first.persona_id != second.persona_id


async def test_a_remembered_persona_is_forgotten_after_remember_for(fake: FakeProvider) -> None:
    async with client(fake, remember_for=0.3) as c:
        await c.create_persona(REQUEST)
        await c.create_persona(REQUEST)
        assert fake.request_count == 1
        await anyio.sleep(0.4)
        await c.create_persona(REQUEST)
    assert fake.request_count == 2


async def test_memory_is_bounded_by_remember_max_least_recently_used_first(
    fake: FakeProvider,
) -> None:
    async with client(fake, remember_max=2) as c:
        for i in (1, 2, 1, 3):  # 1 is used again, so 2 is the least recently used
            await c.create_persona(req(i))
        assert fake.request_count == 3
        await c.create_persona(req(1))  # still remembered
        assert fake.request_count == 3
        await c.create_persona(req(2))  # pushed out by 3: sent again
    assert fake.request_count == 4


@pytest.mark.parametrize("kw", [{"remember_for": -1}, {"remember_max": 0}])
def test_bad_memory_settings_are_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kw))):
        PersonaClient([CrunProvider(api_key="k")], **kw)


async def test_create_many_shares_what_create_persona_made_or_is_making(
    fake: FakeProvider,
) -> None:
    fake.latency = 0.3
    async with client(fake) as c:
        made = await c.create_persona(REQUEST)
        in_flight = asyncio.ensure_future(c.create_persona(req(2)))
        await anyio.sleep(0.1)  # req(2) is on the wire
        outcomes = {
            o.request.audio_id: o async for o in c.create_many([REQUEST, req(2), req(3)])
        }
        joined = await in_flight
    assert fake.request_count == 3  # REQUEST once, req(2) once, req(3) once
    assert outcomes["clip_1"].persona == made
    assert outcomes["clip_1"].attempts == 0  # nothing was sent for it
    assert outcomes["clip-2"].persona == joined
    assert outcomes["clip-3"].ok
