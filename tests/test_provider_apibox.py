"""api.box against the fake: its current page (https://docs.api.box/suno-api/generate-persona)
documents no 10-30 s window, so a longer window is sent and api.box judges it."""

from __future__ import annotations

import pytest
from _support import make

from persona_async import ApiBoxProvider, InvalidRequestError, PersonaClient, PersonaRequest
from persona_async.testing import FakeProvider

pytestmark = pytest.mark.anyio


async def test_a_window_longer_than_30_seconds_is_sent(fake: FakeProvider) -> None:
    request = PersonaRequest("task_1", "clip_1", "n", "d", vocal_start=0.0, vocal_end=45.0)
    async with PersonaClient([make(ApiBoxProvider, fake)]) as client:
        await client.create_persona(request)
    (sent,) = fake.requests
    assert sent.json is not None
    assert (sent.json["vocalStart"], sent.json["vocalEnd"]) == (0.0, 45.0)


async def test_an_end_before_the_start_is_still_refused_unsent(fake: FakeProvider) -> None:
    request = PersonaRequest("task_1", "clip_1", "n", "d", vocal_start=20.0, vocal_end=10.0)
    async with PersonaClient([make(ApiBoxProvider, fake)]) as client:
        with pytest.raises(InvalidRequestError) as info:
            await client.create_persona(request)
    assert info.value.field == "vocal_end"
    assert not fake.requests
