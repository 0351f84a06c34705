"""CometAPI (the Suno-API gateway contract) against the fake: the codes its error page documents
(https://apidoc.cometapi.com/errors/error-codes-handling): 403, 500 ``invalid_request``, 524."""

from __future__ import annotations

import pytest
from _support import make

from persona_async import (
    AuthenticationError,
    CometApiProvider,
    OutcomeUnknownError,
    PersonaClient,
    PersonaError,
    PersonaRequest,
    ValidationError,
)
from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio

REQ = PersonaRequest("task_1", "clip_1", "n", "d")


def sent(fake: FakeProvider) -> int:
    return sum(1 for r in fake.requests if r.kind == "gateway")


async def refused(fake: FakeProvider, fault: Fault) -> PersonaError:
    fake.inject(fault, path="gateway")
    provider = make(CometApiProvider, fake)
    async with PersonaClient([provider], backoff_initial=0.01, backoff_max=0.02) as client:
        with pytest.raises(PersonaError) as info:
            await client.create_persona(REQ)
    return info.value


async def test_a_500_invalid_request_is_not_retried(fake: FakeProvider) -> None:
    body = (
        b'{"error": {"message": "bad clips", "type": "comet_api_error", "param": "",'
        b' "code": "invalid_request"}}'
    )
    err = await refused(fake, Fault.body(body, status=500))
    assert isinstance(err, ValidationError)
    assert "invalid_request" in err.message
    assert sent(fake) == 1


@pytest.mark.parametrize(
    "fault",
    [
        Fault.html(524),
        Fault.body(b'{"error": {"message": "timeout", "type": "comet_api_error"}}', status=524),
    ],
    ids=["cloudflare-page", "json"],
)
async def test_a_524_may_have_made_the_persona_and_is_not_resent(
    fake: FakeProvider, fault: Fault
) -> None:
    err = await refused(fake, fault)
    assert type(err) is OutcomeUnknownError
    assert sent(fake) == 1


async def test_a_403_stops_the_lane_like_a_401(fake: FakeProvider) -> None:
    fake.inject(Fault.http(403, message="access blocked"), path="gateway")
    async with PersonaClient([make(CometApiProvider, fake)], backoff_initial=0.01) as client:
        with pytest.raises(AuthenticationError):
            await client.create_persona(REQ)
        with pytest.raises(AuthenticationError):  # the lane is stopped: not sent
            await client.create_persona(PersonaRequest("task_2", "clip_2", "n", "d"))
    assert sum(1 for r in fake.requests if r.kind == "gateway") == 1
