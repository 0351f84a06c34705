"""The session pool's hook for rate-limited lanes: a window counts from the real send."""

from __future__ import annotations

import time

import anyio
import pytest
from _support import JITTER, HeldPort, free_port, most_in_any_window, req
from aiohttp import web
from aiohttp.test_utils import TestServer

from persona_async import CrunProvider, PersonaClient
from persona_async.testing import FakeProvider

pytestmark = pytest.mark.anyio


async def test_a_slow_connection_setup_cannot_make_two_windows_overlap_at_the_provider() -> None:
    limit, period = 2, 1.5
    # The first connections take a SYN retransmission (about 1 s) to open: the first two
    # requests are admitted at once but written a second later. Had their window started at
    # admission, the next two would follow them half a second after. (A setup longer than the
    # whole window is another matter: the limiter cannot tell an admitted request that has
    # not been written yet from one that was, and frees its slot when the window ends.)
    async with (
        FakeProvider(rate_limit=limit, rate_period=period - JITTER) as fake,
        HeldPort() as port,
    ):
        provider = CrunProvider(
            api_key=fake.api_key,
            base_url=port.url,
            rate_limit=limit,
            rate_period=period,
            connect_timeout=5.0,
        )
        async with PersonaClient([provider], backoff_initial=0.01, backoff_max=0.02) as client:
            started = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(port.open_after, 0.3, fake.url)
                outcomes = [o async for o in client.create_many([req(i) for i in range(4)])]
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    arrivals = sorted(r.arrived for r in fake.requests)
    assert arrivals[0] - started >= 0.5, "the connection opened at once: the test proves nothing"
    assert fake.window_violations == 0
    assert most_in_any_window(arrivals, period - JITTER) <= limit


async def test_a_cookie_set_by_the_provider_is_never_sent_back() -> None:
    # Cookies would tie requests together behind the key's back (and leak between lanes'
    # callers); nothing in the contracts uses them, so the pool keeps none.
    cookies: list[str | None] = []

    async def create(request: web.Request) -> web.Response:
        cookies.append(request.headers.get("Cookie"))
        body = {"code": 200, "msg": "success", "data": {"persona_id": f"p{len(cookies)}"}}
        response = web.json_response(body)
        response.set_cookie("session", "abc123")
        return response

    app = web.Application()
    app.router.add_post("/api/v1/client/job/suno-persona-generate", create)
    async with TestServer(app, host="127.0.0.1") as server:
        # A host name, not an IP: cookie jars ignore cookies from bare IP addresses.
        url = f"http://localhost:{server.port}"
        provider = CrunProvider(api_key="k", base_url=url, rate_limit=None)
        async with PersonaClient([provider]) as client:
            await client.create_persona(req(0))
            await client.create_persona(req(1))
    assert cookies == [None, None]


async def test_proxy_variables_in_the_environment_are_ignored(
    fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy from the environment would receive every request, API key included: the key
    # goes only to its own provider's host.
    nowhere = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, nowhere)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    provider = CrunProvider(api_key=fake.api_key, base_url=fake.url, rate_limit=None)
    async with PersonaClient([provider], max_retries=0) as client:
        persona = await client.create_persona(req(0))
    assert persona.audio_id == "clip-0"
    assert fake.request_count == 1
