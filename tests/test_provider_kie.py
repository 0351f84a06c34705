"""kie's legacy route and sunoapi.org (the family skeleton) against the fake: kie's 408 and the
0.01 s step of the vocal window both document
(https://docs.kie.ai/old-model/suno-api/generate-persona,
https://docs.sunoapi.org/suno-api/generate-persona)."""

from __future__ import annotations

import pytest
from _support import make

from persona_async import KieProvider, PersonaClient, PersonaRequest, Provider, SunoApiProvider
from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio


async def test_a_408_is_resent_and_the_409_rule_keeps_it_to_one_persona(
    fake: FakeProvider,
) -> None:
    # kie's 408: no result upstream for 10 minutes, the persona may exist. kie answers a repeat
    # for one audio id with 409, so the resend is safe: exactly one persona either way.
    fake.inject(Fault.envelope(408, "no result for over 10 minutes"), path="family")
    async with PersonaClient([make(KieProvider, fake)], backoff_initial=0.01) as client:
        persona = await client.create_persona(PersonaRequest("task_1", "clip_1", "n", "d"))
    assert persona.persona_id in fake.personas
    assert sum(1 for r in fake.requests if r.kind == "family") == 2
    assert fake.creations[("family", "clip_1")] == 1


@pytest.mark.parametrize("cls", [KieProvider, SunoApiProvider])
async def test_the_vocal_window_is_sent_in_hundredths(
    fake: FakeProvider, cls: type[Provider]
) -> None:
    request = PersonaRequest("task_1", "clip_1", "n", "d", vocal_start=12.345, vocal_end=37.3449)
    async with PersonaClient([make(cls, fake)]) as client:
        await client.create_persona(request)
    (sent,) = fake.requests
    assert sent.json is not None
    assert (sent.json["vocalStart"], sent.json["vocalEnd"]) == (12.34, 37.34)
