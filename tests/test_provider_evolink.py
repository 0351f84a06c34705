"""Evolink against the fake: ``result_data`` as an array, as its music tasks answer it on the
same endpoint (docs/response-schema.md in https://github.com/EvoLinkAI/awesome-suno-api)."""

from __future__ import annotations

import pytest
from _support import make

from persona_async import EvolinkProvider, PersonaClient, PersonaRequest, PollPolicy
from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio

FAST = PollPolicy(initial=0.05, factor=1.0, max_interval=0.05, min_interval=0.0, jitter=0.0)


@pytest.mark.parametrize(
    "result_data",
    [b'[{"persona_id": "p_9"}]', b'{"persona_id": "p_9"}'],
    ids=["array", "object"],
)
async def test_result_data_as_an_array_or_an_object_gives_the_persona(
    fake: FakeProvider, result_data: bytes
) -> None:
    body = b'{"id": "t", "status": "completed", "result_data": %s}' % result_data
    fake.inject(Fault.body(body), path="evolink-status")
    provider = make(EvolinkProvider, fake, poll=FAST)
    async with PersonaClient([provider], max_retries=0) as client:
        persona = await client.create_persona(PersonaRequest("task_1", "clip_1", "n", "d"))
    assert persona.persona_id == "p_9"


async def test_an_upper_case_status_word_is_read(fake: FakeProvider) -> None:
    body = b'{"id": "t", "status": "COMPLETED", "result_data": {"persona_id": "p_up"}}'
    fake.inject(Fault.body(body), path="evolink-status")
    provider = make(EvolinkProvider, fake, poll=FAST)
    async with PersonaClient([provider], max_retries=0) as client:
        persona = await client.create_persona(PersonaRequest("task_1", "clip_1", "n", "d"))
    assert persona.persona_id == "p_up"
