"""wait_for_source: the lane asks the status endpoint before creating, and only creates once.

Every test runs against the fake provider's status endpoints and counts what the provider saw:
status queries, creates, and when they arrived.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from _support import make

from persona_async import (
    AuthenticationError,
    CrunProvider,
    InvalidRequestError,
    KieProvider,
    NotFoundError,
    PersonaClient,
    PersonaError,
    PersonaRequest,
    PollPolicy,
    Provider,
    SourceFailedError,
    SourceNotReadyError,
)
from persona_async.testing import FakeProvider

pytestmark = pytest.mark.anyio

QUICK = PollPolicy(initial=0.35, factor=1.5, max_interval=1.0, min_interval=0.35, jitter=0.0)
CREATE_PATHS = ("/api/v1/client/job/suno-persona-generate", "/api/v1/generate/generate-persona")


def creates(fake: FakeProvider) -> list[Any]:
    return [r for r in fake.requests if r.path in CREATE_PATHS]


def req(task: str = "task_1", audio: str = "clip_1", **kw: Any) -> PersonaRequest:
    return PersonaRequest(task, audio, "Neon Siren", "Smoky late-night R&B", **kw)


def waiting(cls: type[Provider], fake: FakeProvider, wait: float = 10.0, **kw: Any) -> Provider:
    return make(cls, fake, wait_for_source=wait, poll=QUICK, **kw)


@pytest.mark.parametrize("cls", [CrunProvider, KieProvider])
async def test_a_song_that_finishes_soon_is_waited_for_then_created_once(
    fake: FakeProvider, cls: type[Provider]
) -> None:
    song = fake.songs.add("task_1", ready_in=1.0)
    async with PersonaClient([waiting(cls, fake)]) as client:
        persona = await client.create_persona(req())
    assert persona.audio_id == "clip_1"
    sent = creates(fake)
    assert len(sent) == 1  # status queries, not repeated creates
    assert sent[0].arrived >= song.added + song.ready_in
    assert fake.songs.queries(fake.requests, "task_1") >= 3
    assert fake.songs.too_fast == 0  # never more than 3 status queries per second per task


async def test_first_success_is_not_finished_only_success_is(fake: FakeProvider) -> None:
    # The family reports FIRST_SUCCESS from 60% to 100% of the generation; the poll at 0.875 s
    # land in it, and a create sent then would be refused by the fake with a 422.
    song = fake.songs.add("task_1", ready_in=1.0)
    async with PersonaClient([waiting(KieProvider, fake)]) as client:
        await client.create_persona(req())
    assert [r.response_code for r in creates(fake)] == [200]
    assert creates(fake)[0].arrived >= song.added + 1.0


@pytest.mark.parametrize("cls", [CrunProvider, KieProvider])
async def test_a_failed_song_is_source_failed_with_the_providers_words_and_no_create(
    fake: FakeProvider, cls: type[Provider]
) -> None:
    fake.songs.add("task_1", ready_in=0.2, fails=True, error_message="sensitive lyrics")
    async with PersonaClient([waiting(cls, fake)]) as client:
        with pytest.raises(SourceFailedError) as info:
            await client.create_persona(req())
    err = info.value
    assert err.code == 501
    assert "sensitive lyrics" in str(err)
    assert err.retryable is False
    assert (err.task_id, err.audio_id, err.attempts) == ("task_1", "clip_1", 0)
    assert creates(fake) == []


@pytest.mark.parametrize("cls", [CrunProvider, KieProvider])
async def test_an_audio_id_not_among_the_tasks_clips_fails_before_any_create(
    fake: FakeProvider, cls: type[Provider]
) -> None:
    fake.songs.add("task_1", clips={"clip_a": 100.0, "clip_b": 110.0})
    async with PersonaClient([waiting(cls, fake)]) as client:
        with pytest.raises(InvalidRequestError) as info:
            await client.create_persona(req(audio="clip_z"))
    assert info.value.field == "audio_id"
    assert "clip_a" in str(info.value)
    assert creates(fake) == []


@pytest.mark.parametrize("cls", [CrunProvider, KieProvider])
async def test_a_vocal_window_past_the_clips_end_names_vocal_end_before_any_create(
    fake: FakeProvider, cls: type[Provider]
) -> None:
    fake.songs.add("task_1", clips={"clip_1": 40.0})
    async with PersonaClient([waiting(cls, fake)]) as client:
        with pytest.raises(InvalidRequestError) as info:
            await client.create_persona(req(vocal_start=20.0, vocal_end=45.0))
        ok = await client.create_persona(req(vocal_start=15.0, vocal_end=40.0))
    assert info.value.field == "vocal_end"
    assert "40 s" in str(info.value)
    assert ok.persona_id
    assert len(creates(fake)) == 1


async def test_the_wait_ends_with_a_retryable_not_ready_and_no_create(fake: FakeProvider) -> None:
    fake.songs.add("task_1", ready_in=60.0)
    start = time.monotonic()
    async with PersonaClient([waiting(CrunProvider, fake, wait=0.5)]) as client:
        with pytest.raises(SourceNotReadyError) as info:
            await client.create_persona(req())
    assert 0.5 <= time.monotonic() - start < 2.0
    assert info.value.retryable is True
    assert "still pending" in str(info.value)
    assert creates(fake) == []


async def test_the_wait_stays_within_the_requests_deadline(fake: FakeProvider) -> None:
    fake.songs.add("task_1", ready_in=60.0)
    start = time.monotonic()
    async with PersonaClient([waiting(CrunProvider, fake, wait=600.0)], deadline=1.0) as client:
        with pytest.raises(SourceNotReadyError):
            await client.create_persona(req())
    assert time.monotonic() - start < 1.5


async def test_an_undocumented_crun_status_is_waited_on_as_running(fake: FakeProvider) -> None:
    fake.songs.add("task_1", ready_in=0.8, running_word="queued_for_gpu")
    async with PersonaClient([waiting(CrunProvider, fake)]) as client:
        assert await client.create_persona(req())
    assert len(creates(fake)) == 1


async def test_many_requests_for_one_finished_task_cost_one_status_query(
    fake: FakeProvider,
) -> None:
    fake.songs.add("task_1", clips={f"clip_{i}": 120.0 for i in range(20)})
    requests = [req(audio=f"clip_{i}") for i in range(20)]
    # remember_for=0: the later request is sent (not answered with the persona already made).
    async with PersonaClient([waiting(CrunProvider, fake)], remember_for=0) as client:
        outcomes = [o async for o in client.create_many(requests)]
        # A later request for the same task is served from the lane's memory.
        await client.create_persona(req(audio="clip_3"))
    assert all(o.ok for o in outcomes)
    assert fake.songs.queries(fake.requests) == 1
    assert len(creates(fake)) == 21


async def test_many_requests_for_one_running_task_share_one_polling_loop(
    fake: FakeProvider,
) -> None:
    fake.songs.add("task_1", ready_in=1.0, clips={f"clip_{i}": 120.0 for i in range(20)})
    requests = [req(audio=f"clip_{i}") for i in range(20)]
    async with PersonaClient([waiting(CrunProvider, fake)]) as client:
        outcomes = [o async for o in client.create_many(requests)]
    assert all(o.ok for o in outcomes)
    # One loop's worth (about 1 s of polling), not one per request.
    assert 2 <= fake.songs.queries(fake.requests) <= 5
    assert fake.songs.too_fast == 0


async def test_a_waiting_request_holds_no_worker(fake: FakeProvider) -> None:
    fake.songs.add("slow", ready_in=1.0)
    fake.songs.add("done")
    finished: list[str] = []
    async with PersonaClient([waiting(CrunProvider, fake, max_concurrency=1)]) as client:

        async def one(task: str) -> None:
            await client.create_persona(req(task=task))
            finished.append(task)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(one("slow"))
            await asyncio.sleep(0.05)
            tg.create_task(one("done"))
    assert finished == ["done", "slow"]


async def test_a_429_on_a_status_query_slows_polling_not_creates(fake: FakeProvider) -> None:
    fake.songs.add("task_1", ready_in=0.3)
    fake.songs.add("task_2")
    fake.songs.throttle(1, retry_after=0.6)
    provider = waiting(CrunProvider, fake, rate_limit=20, rate_period=1.0)
    async with PersonaClient([provider]) as client:
        start = time.monotonic()
        await client.create_persona(req())
        assert time.monotonic() - start >= 0.6  # the 429's Retry-After was honoured
        stats = client.stats()["crun"]
    assert stats.effective_rate == 20.0  # the create budget was not cut
    assert stats.throttled == 0
    assert len(creates(fake)) == 1


async def test_an_unknown_task_fails_before_any_create(fake: FakeProvider) -> None:
    async with PersonaClient([waiting(KieProvider, fake)]) as client:
        with pytest.raises(NotFoundError):
            await client.create_persona(req(task="nobody_made_this"))
    assert creates(fake) == []


async def test_closing_the_client_during_a_wait_sends_nothing(fake: FakeProvider) -> None:
    fake.songs.add("task_1", ready_in=60.0)
    client = PersonaClient([waiting(CrunProvider, fake)])
    await client.__aenter__()
    pending = asyncio.ensure_future(client.create_persona(req()))
    await asyncio.sleep(0.3)
    await client.aclose()
    with pytest.raises(PersonaError, match="closed before the request was sent"):
        await pending
    assert creates(fake) == []


async def test_without_wait_for_source_not_complete_is_retryable_and_sent_once(
    fake: FakeProvider,
) -> None:
    fake.songs.add("task_1", ready_in=60.0)
    async with PersonaClient([make(KieProvider, fake)], backoff_initial=0.01) as client:
        with pytest.raises(SourceNotReadyError) as info:
            await client.create_persona(req())
    assert info.value.retryable is True
    assert info.value.code == 422
    assert len(creates(fake)) == 1  # the lane does not resend it: a song takes minutes
    assert fake.songs.queries(fake.requests) == 0


def test_wait_for_source_needs_a_status_endpoint_and_a_positive_wait() -> None:
    class NoStatus(CrunProvider):
        source_status = None

    with pytest.raises(ValueError, match="wait_for_source needs a status endpoint"):
        NoStatus(api_key="k", wait_for_source=10)
    with pytest.raises(ValueError, match="wait_for_source must be > 0"):
        CrunProvider(api_key="k", wait_for_source=0)
    assert CrunProvider(api_key="k", wait_for_source=600).wait_for_source == 600


async def test_a_rejected_key_on_a_status_query_stops_the_lane(fake: FakeProvider) -> None:
    fake.songs.add("task_1")
    fake.songs.add("task_2")
    provider = CrunProvider(
        api_key="wrong-key", base_url=fake.url, rate_limit=None, wait_for_source=10, poll=QUICK
    )
    async with PersonaClient([provider]) as client:
        with pytest.raises(AuthenticationError):
            await client.create_persona(req())
        with pytest.raises(AuthenticationError):
            await client.create_persona(req(task="task_2"))
        assert client.stats()["crun"].state.value == "stopped"
    assert fake.request_count == 1  # the second request sent nothing at all


async def test_the_fakes_status_endpoints_speak_the_documented_shapes(fake: FakeProvider) -> None:
    fake.songs.add("t", clips={"c1": 198.44, "c2": 201.0}, ready_in=0.4)
    bearer = {"Authorization": f"Bearer {fake.api_key}"}
    family = f"{fake.url}/api/v1/generate/record-info?taskId=t"
    crun = f"{fake.url}/api/v1/client/job/TaskInfo?task_id=t"
    async with aiohttp.ClientSession() as session:
        async with session.get(family, headers=bearer) as resp:
            early = await resp.json()
        async with session.get(crun, headers={"x-api-key": fake.api_key}) as resp:
            crun_early = await resp.json()
        await asyncio.sleep(0.45)
        async with session.get(family, headers=bearer) as resp:
            done = await resp.json()
        async with session.get(crun, headers={"x-api-key": fake.api_key}) as resp:
            crun_done = await resp.json()
        async with session.get(crun, headers={"x-api-key": "nope"}) as resp:
            refused = await resp.json()
    assert early["data"]["status"] == "PENDING"
    assert isinstance(done["data"]["param"], str)  # a JSON string, as documented
    assert done["data"]["status"] == "SUCCESS"
    clips = done["data"]["response"]["sunoData"]
    assert [(c["id"], c["duration"]) for c in clips] == [("c1", 198.44), ("c2", 201.0)]
    assert (crun_early["code"], crun_early["data"]["status"]) == (200, "pending")
    assert crun_done["data"]["status"] == "success"
    assert crun_done["data"]["result"]["suno_data"][0] == {"suno_id": "c1", "duration": 198.44}
    assert refused["code"] == 401
