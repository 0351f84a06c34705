"""What is *not* sent, and when, each pinned by what the provider sees: a call cancelled or a
lane stopped before the send, an ``on_send`` hook that raises, a connection never opened (so
resent safely) against a reply that never came (so a persona may exist), no attempt squeezed in
just before the deadline, no keep-alive connection the server closed reused.

Real loopback servers throughout: the :class:`FakeProvider`, and :class:`HeldPort` for a
connection that takes long (or forever) to open. Neighbours: test_transport.py (windows counted
from the real send), test_transport_replies.py (what the session pool makes of each reply),
test_lane_stops.py (401/402), test_deadline.py, test_retries.py.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from _support import FAST_RETRY, HeldPort, crun, fast_retry, req
from aiohttp import web

from persona_async import (
    AuthenticationError,
    CrunProvider,
    OutcomeUnknownError,
    PersonaClient,
    PersonaError,
    PersonaRequest,
    ProviderTimeoutError,
    RateLimitError,
)
from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio


def crun_at(url: str, **options: Any) -> CrunProvider:
    """A crun provider at ``url``, where no fake provider answers (a held or closed port)."""
    options.setdefault("api_key", "test-key")  # the fake's default key
    options.setdefault("rate_limit", None)
    return CrunProvider(base_url=url, **options)


def sent_audio_ids(fake: FakeProvider) -> list[str]:
    return [r.json["suno_id"] for r in fake.requests if r.json]


# -- cancelled or stopped before the send: never sent -------------------------------------------


async def test_create_persona_cancelled_before_its_send_is_never_sent(fake: FakeProvider) -> None:
    # One start per 0.5 s and one worker: request 1 waits in the rate limiter, request 2 in the
    # queue behind it, when both callers are cancelled.
    provider = crun(fake, rate_limit=1, rate_period=0.5, max_concurrency=1)
    async with PersonaClient([provider], retry=FAST_RETRY) as client:
        await client.create_persona(req(0))  # spends the window
        with anyio.move_on_after(0.1):
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.create_persona, req(1))
                tg.start_soon(client.create_persona, req(2))
        # Sent once the window reopens: anything queued before it that was still going to be
        # sent would have gone first.
        await client.create_persona(req(3))
    assert sent_audio_ids(fake) == ["clip-0", "clip-3"]


async def test_requests_waiting_for_the_window_when_a_401_stops_the_lane_are_never_sent() -> None:
    async with FakeProvider(latency=0.05) as fake:
        fake.inject(Fault.envelope(401))
        # Two start at once; two more workers wait in the rate limiter until 0.5 s, long after
        # the 401 stopped the lane.
        provider = crun(fake, rate_limit=2, rate_period=0.5, max_concurrency=4)
        async with PersonaClient([provider], retry=FAST_RETRY) as client:
            outcomes = [o async for o in client.create_many([req(i) for i in range(6)])]
            await anyio.sleep(0.6)  # past the window: a late send would have arrived by now
    assert fake.request_count == 2
    failed = [type(o.error) for o in outcomes if not o.ok]
    assert failed == [AuthenticationError] * 5
    assert sum(o.attempts for o in outcomes) == 2


async def test_a_request_whose_on_send_hook_raises_is_not_sent(fake: FakeProvider) -> None:
    def journal(request: PersonaRequest) -> None:
        if request.audio_id == "clip-2":
            raise OSError(28, "No space left on device")  # the journal could not be written

    async with PersonaClient([crun(fake)], retry=FAST_RETRY) as client:
        stream = client.create_many([req(i) for i in range(5)], on_send=journal)
        outcomes = [o async for o in stream]
    assert sorted(sent_audio_ids(fake)) == ["clip-0", "clip-1", "clip-3", "clip-4"]
    [refused] = [o for o in outcomes if not o.ok]
    assert refused.request.audio_id == "clip-2"
    assert isinstance(refused.error, PersonaError)
    assert refused.attempts == 0


# -- a failure before sending is always safe to retry; after sending it is not ----------------


async def test_a_connect_timeout_sent_nothing_so_crun_retries_it_and_creates_one_persona(
    fake: FakeProvider,
) -> None:
    async with HeldPort() as port:
        provider = crun_at(port.url, connect_timeout=0.2, timeout=5.0)
        async with PersonaClient([provider], retry=fast_retry(max_retries=5)) as client:
            async with anyio.create_task_group() as tg:
                tg.start_soon(port.open_after, 0.3, fake.url)
                persona = await client.create_persona(req(0))
            stats = client.stats()[provider.name]
    assert persona.audio_id == "clip-0"
    assert stats.retries >= 1  # at least one attempt timed out connecting
    assert fake.request_count == 1
    assert fake.creations[("crun", "clip-0")] == 1


async def test_a_connect_timeout_is_reported_as_not_sent_after_every_retry() -> None:
    async with HeldPort() as port:
        provider = crun_at(port.url, connect_timeout=0.1, timeout=5.0)
        async with PersonaClient([provider], retry=fast_retry(max_retries=2)) as client:
            with pytest.raises(ProviderTimeoutError) as info:
                await client.create_persona(req(0))
    assert info.value.sent is False
    assert info.value.retryable
    assert info.value.attempts == 3  # tried, then retried twice: nothing could have reached it


async def test_a_reply_timeout_may_have_created_so_crun_reports_it_unknown_unsent_again(
    fake: FakeProvider,
) -> None:
    fake.inject(Fault.slow(2.0))
    provider = crun(fake, timeout=0.3)
    async with PersonaClient([provider], retry=fast_retry(max_retries=3)) as client:
        with pytest.raises(OutcomeUnknownError) as info:
            await client.create_persona(req(0))
    assert info.value.attempts == 1
    assert isinstance(info.value.__cause__, ProviderTimeoutError)
    assert info.value.__cause__.sent is True
    assert fake.request_count == 1


# -- deadline ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("retry_after", "retried"), [(0.9, False), (0.4, True)])
async def test_a_retry_is_never_squeezed_in_just_before_the_deadline(
    fake: FakeProvider, retry_after: float, retried: bool
) -> None:
    # Deadline 1 s and an attempt timeout of 1 s: a retry due 0.9 s in would have 0.1 s to
    # live and could time out after the provider created the persona; one due 0.4 s in gets a
    # fair share (0.6 s) and goes.
    fake.inject(Fault.http(429, retry_after=retry_after))
    provider = crun(fake, timeout=1.0)
    retry = fast_retry(retry_after_max=5.0)
    async with PersonaClient([provider], retry=retry, deadline=1.0) as client:
        try:
            await client.create_persona(req(0))
            error = None
        except PersonaError as exc:
            error = exc
    if retried:
        assert error is None
        assert fake.request_count == 2
    else:
        assert isinstance(error, RateLimitError)  # what the provider last said
        assert fake.request_count == 1


# -- keep-alive ----------------------------------------------------------------------------------


async def test_a_keep_alive_connection_the_server_closed_while_idle_is_never_reused() -> None:
    # A server that drops idle connections after 0.1 s (nginx's keepalive_timeout, shortened).
    # Writing a create into such a socket would be reset: on crun, an OutcomeUnknownError for a
    # request that never reached the provider. The pool must open a fresh connection instead.
    peers: list[int] = []

    async def create(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        body = {"code": 200, "msg": "success", "data": {"persona_id": f"p{len(peers)}"}}
        return web.json_response(body)

    app = web.Application()
    app.router.add_post("/api/v1/client/job/suno-persona-generate", create)
    runner = web.AppRunner(app, keepalive_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        provider = crun_at(f"http://127.0.0.1:{port}")
        async with PersonaClient([provider], max_retries=0) as client:
            first = await client.create_persona(req(0))
            await anyio.sleep(0.4)  # the server has closed the idle connection by now
            second = await client.create_persona(req(1))
    finally:
        await runner.cleanup()
    assert (first.persona_id, second.persona_id) == ("p1", "p2")
    assert peers[0] != peers[1]  # a new connection for the second create
