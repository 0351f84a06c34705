"""kie's market route (``KieJobsProvider``) against the fake: the wire variants its docs leave
open (https://docs.kie.ai/suno-api/generate-persona), read as other clients of the route read
them."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest
from _support import make

from persona_async import (
    GenerationFailedError,
    KieJobsProvider,
    MalformedResponseError,
    OutcomeUnknownError,
    PersonaClient,
    PersonaError,
    PersonaRequest,
    PollPolicy,
)
from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio

FAST = PollPolicy(initial=0.05, factor=1.0, max_interval=0.05, min_interval=0.0, jitter=0.0)
REQ = PersonaRequest("task_1", "clip_1", "Neon Siren", "Smoky")


def kie(fake: FakeProvider, **kw: Any) -> KieJobsProvider:
    provider = make(KieJobsProvider, fake, poll=FAST, **kw)
    assert isinstance(provider, KieJobsProvider)
    return provider


def record(state: str, result: object = None) -> bytes:
    """A recordInfo reply for a task in ``state`` (``resultJson`` the JSON of ``result``)."""
    result_json = "" if result is None else msgspec.json.encode(result).decode()
    data = {"taskId": "t", "state": state, "resultJson": result_json, "failCode": "", "failMsg": ""}
    return msgspec.json.encode({"code": 200, "msg": "success", "data": data})


def status_queries(fake: FakeProvider) -> int:
    return sum(1 for r in fake.requests if r.kind == "kie-jobs-status")


async def create(provider: KieJobsProvider, request: PersonaRequest = REQ) -> Any:
    async with PersonaClient([provider], max_retries=0) as client:
        return await client.create_persona(request)


async def refused(provider: KieJobsProvider) -> PersonaError:
    with pytest.raises(PersonaError) as info:
        await create(provider)
    return info.value


async def test_a_persona_id_in_the_submit_reply_is_the_answer_with_no_poll(
    fake: FakeProvider,
) -> None:
    submit = b'{"code": 200, "msg": "success", "data": {"persona_id": "p_direct"}}'
    fake.inject(Fault.body(submit), path="kie-jobs")
    persona = await create(kie(fake))
    assert persona.persona_id == "p_direct"
    assert persona.provider_task_id is None
    assert status_queries(fake) == 0


@pytest.mark.parametrize(
    "result",
    [{"data": [{"persona_id": "p_7"}]}, {"data": [{"personaId": "p_7", "name": "n"}]}],
    ids=["persona_id", "personaId"],
)
async def test_result_json_whose_data_is_an_array_gives_the_persona(
    fake: FakeProvider, result: object
) -> None:
    fake.inject(Fault.body(record("success", result)), path="kie-jobs-status")
    assert (await create(kie(fake))).persona_id == "p_7"


@pytest.mark.parametrize("word", ["failed", "error", "FAIL", "Failed"])
async def test_failure_synonyms_in_any_case_end_the_task_as_failed(
    fake: FakeProvider, word: str
) -> None:
    fake.inject(Fault.body(record(word)), path="kie-jobs-status")
    err = await refused(kie(fake))
    assert type(err) is GenerationFailedError
    assert status_queries(fake) == 1


async def test_an_upper_case_success_is_success(fake: FakeProvider) -> None:
    fake.inject(Fault.body(record("SUCCESS", {"persona_id": "p_up"})), path="kie-jobs-status")
    assert (await create(kie(fake))).persona_id == "p_up"


async def test_an_unknown_state_word_is_waited_on_then_the_task_is_read(
    fake: FakeProvider,
) -> None:
    fake.inject(Fault.body(record("rendering")), times=2, path="kie-jobs-status")
    persona = await create(kie(fake))
    assert persona.persona_id in fake.personas
    assert status_queries(fake) == 3  # two odd words, then the fake's own "success"


async def test_an_unknown_state_word_is_waited_on_for_a_bounded_time(
    fake: FakeProvider,
) -> None:
    class Patient(KieJobsProvider):
        unknown_state_patience = 0.3

    fake.inject(Fault.body(record("rendering")), times=1000, path="kie-jobs-status")
    provider = make(Patient, fake, poll=FAST)
    started = time.monotonic()
    async with PersonaClient([provider], max_retries=0) as client:
        with pytest.raises(MalformedResponseError) as info:
            await client.create_persona(REQ, deadline=30)
    waited = time.monotonic() - started
    assert "undocumented state 'rendering'" in info.value.message
    assert info.value.provider_task_id is not None
    assert 0.3 <= waited < 5
    assert status_queries(fake) >= 2


async def test_a_408_on_submit_may_have_made_the_persona_and_is_not_resent(
    fake: FakeProvider,
) -> None:
    fake.inject(Fault.envelope(408, "no result for over 10 minutes"), path="kie-jobs")
    err = await refused(kie(fake))
    assert type(err) is OutcomeUnknownError
    assert sum(1 for r in fake.requests if r.kind == "kie-jobs") == 1


async def test_the_vocal_window_is_rounded_to_hundredths(fake: FakeProvider) -> None:
    request = PersonaRequest("task_1", "clip_1", "n", "d", vocal_start=12.344, vocal_end=30.006)
    await create(kie(fake), request)
    (submit,) = [r for r in fake.requests if r.kind == "kie-jobs"]
    assert submit.json is not None
    assert (submit.json["input"]["vocal_start"], submit.json["input"]["vocal_end"]) == (
        12.34,
        30.01,
    )


async def test_a_persona_id_in_the_submit_reply_is_no_task_to_journal(fake: FakeProvider) -> None:
    submit = b'{"code": 200, "msg": "success", "data": {"personaId": "p_direct"}}'
    fake.inject(Fault.body(submit), path="kie-jobs")
    told: list[str] = []
    async with PersonaClient([kie(fake)], max_retries=0) as client:
        outcomes = [
            o
            async for o in client.create_many(
                [REQ], on_submitted=lambda request, task_id: told.append(task_id)
            )
        ]
    assert [o.persona.persona_id for o in outcomes if o.persona] == ["p_direct"]
    assert told == []
