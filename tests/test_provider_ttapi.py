"""TTAPI against the fake: it documents the vocal window only for a vox persona, "required
when vox_audio_id is provided", and the SDK sends no vox id, so the window is refused unsent."""

from __future__ import annotations

import pytest
from _support import make

from persona_async import InvalidRequestError, PersonaClient, PersonaRequest, TtapiProvider
from persona_async.testing import FakeProvider

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("field", ["vocal_start", "vocal_end"])
async def test_a_vocal_window_without_a_vox_id_is_refused_unsent(
    fake: FakeProvider, field: str
) -> None:
    request = PersonaRequest("task_1", "clip_1", "n", "d", **{field: 12.0})
    async with PersonaClient([make(TtapiProvider, fake)]) as client:
        with pytest.raises(InvalidRequestError) as info:
            await client.create_persona(request)
    assert info.value.field == field
    assert "vox_audio_id" in str(info.value)
    assert not fake.requests
