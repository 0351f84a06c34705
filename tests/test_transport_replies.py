"""What the session pool promises about replies and failures, each pinned against a real server.

Loopback servers throughout: the ``FakeProvider``, aiohttp test servers and raw asyncio servers
for replies no HTTP framework would send. (Windows counted from the real send, cookies and
proxies: test_transport.py; connect vs reply timeouts and stale keep-alive connections:
test_sending.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from persona_async import (
    CrunProvider,
    KieProvider,
    MalformedResponseError,
    OutcomeUnknownError,
    PersonaClient,
    PersonaError,
    PersonaRequest,
    Provider,
    ProviderTimeoutError,
    _transport,
)
from persona_async._transport import MAX_BODY_BYTES, SessionPool, hook_sends
from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio

KEY = "sk-live-7f3a9c1e5b2d4068a1c3e5f7"

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def req(i: int = 0) -> PersonaRequest:
    return PersonaRequest(f"task-{i}", f"clip-{i}", f"Persona {i}", "Smoky late-night R&B")


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    """A bare TCP server on loopback speaking whatever ``handler`` writes; yields its URL."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


def replying(raw: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(raw)
            await writer.drain()
        writer.close()

    return handler


async def error_of(provider: Provider, **kw: Any) -> PersonaError:
    async with PersonaClient([provider], max_retries=0, **kw) as client:
        with pytest.raises(PersonaError) as info:
            await client.create_persona(req())
    return info.value


# -- what a transport error says ----------------------------------------------------------------


async def test_the_foreign_cause_keeps_the_request_headers_for_debugging_with_the_key_masked() -> (
    None
):
    async with raw_server(replying(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}")) as url:
        provider = CrunProvider(api_key=KEY, base_url=url, rate_limit=None)
        err = await error_of(provider)
    cause = err.__cause__
    assert isinstance(cause, aiohttp.ClientResponseError)
    headers = cause.request_info.headers
    assert headers["User-Agent"].startswith("persona-async/")
    assert [headers[name] for name in provider.auth_headers()] == ["***"]
    assert KEY not in repr(cause)


async def test_a_transport_errors_detail_is_cut_at_200_characters() -> None:
    # aiohttp quotes the bad status line whole; a hostile or broken server could make it huge.
    async with raw_server(replying(b"HTTP/1.1 " + b"9" * 400 + b" OK\r\n\r\n")) as url:
        err = await error_of(CrunProvider(api_key=KEY, base_url=url, rate_limit=None))
    head = "ClientResponseError after the request was sent: "
    assert type(err) is MalformedResponseError
    assert err.message.startswith(head + "400, ")
    assert len(err.message) == len(head) + 200


async def test_a_reply_timeout_says_so_in_plain_words(fake: FakeProvider) -> None:
    # asyncio's TimeoutError has no text: no dangling colon after what happened.
    fake.inject(Fault.slow(0.3))
    provider = KieProvider(api_key=fake.api_key, base_url=fake.url, rate_limit=None, timeout=0.1)
    err = await error_of(provider)
    assert type(err) is ProviderTimeoutError
    assert err.message == "TimeoutError after the request was sent"


# -- replies too large --------------------------------------------------------------------------

#: What a 2xx reply too large to read adds: the provider took the request.
TAKEN = "; the provider accepted the request, so a persona may exist"


async def test_a_reply_announcing_too_many_bytes_is_refused_by_its_length(
    fake: FakeProvider,
) -> None:
    size = MAX_BODY_BYTES + 10
    fake.inject(Fault.body(b'{"code": 200, "pad": "' + b"x" * (size - 24) + b'"}'))
    unknown = await error_of(
        CrunProvider(api_key=fake.api_key, base_url=fake.url, rate_limit=None)
    )
    # A 2xx too large to read: the provider took the request, so crun's outcome is unknown.
    assert type(unknown) is OutcomeUnknownError
    err = unknown.__cause__
    assert type(err) is MalformedResponseError
    assert err.message == f"reply of {size} bytes exceeds {MAX_BODY_BYTES}" + TAKEN
    assert err.excerpt.startswith('{"code": 200, "pad": "xxx')


async def test_a_reply_that_never_ends_is_cut_at_the_size_limit_not_read_until_the_timeout() -> (
    None
):
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
            writer.write(b'{"code": 200, "pad": "')
            while True:
                writer.write(b"z" * 65536)
                await writer.drain()
        writer.close()

    async with raw_server(endless) as url:
        provider = CrunProvider(api_key=KEY, base_url=url, rate_limit=None, timeout=10.0)
        started = time.monotonic()
        unknown = await error_of(provider)
    err = unknown.__cause__
    assert type(unknown) is OutcomeUnknownError
    assert type(err) is MalformedResponseError
    assert err.message == f"reply exceeds {MAX_BODY_BYTES} bytes" + TAKEN
    assert err.provider == provider.name
    assert time.monotonic() - started < 5.0


async def test_a_reply_one_byte_over_the_limit_is_refused_even_when_that_byte_comes_late() -> None:
    # The first MAX_BODY_BYTES are a valid envelope (padded with spaces); one more byte comes
    # after a pause. Stopping at exactly the limit would take the persona and drop the rest.
    envelope = b'{"code": 200, "msg": "ok", "data": {"persona_id": "p-cut"}}'

    async def late_byte(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            writer.write(b"Connection: close\r\n\r\n")
            writer.write(envelope + b" " * (MAX_BODY_BYTES - len(envelope)))
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.write(b" ")
            await writer.drain()
        writer.close()

    async with raw_server(late_byte) as url:
        unknown = await error_of(CrunProvider(api_key=KEY, base_url=url, rate_limit=None))
    assert type(unknown) is OutcomeUnknownError
    err = unknown.__cause__
    assert type(err) is MalformedResponseError
    assert err.message == f"reply exceeds {MAX_BODY_BYTES} bytes" + TAKEN


# -- what a bad reply's error names --------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "named"),
    [(b"", "no content type"), (b"Content-Type: text/html; charset=utf-8\r\n", "text/html")],
    ids=["none", "with-parameters"],
)
async def test_a_reply_that_is_not_the_envelope_names_its_content_type_and_nothing_more(
    header: bytes, named: str
) -> None:
    reply = b"HTTP/1.1 200 OK\r\n" + header + b"Content-Length: 5\r\n\r\nhello"
    async with raw_server(replying(reply)) as url:
        err = await error_of(CrunProvider(api_key=KEY, base_url=url, rate_limit=None))
    assert type(err) is MalformedResponseError
    assert err.message.startswith(f"HTTP 200 {named}: reply is not the crun envelope ("), (
        err.message
    )


# -- a closed pool -----------------------------------------------------------------------------


async def test_a_closed_session_pool_opens_nothing_and_says_the_client_is_closed(
    fake: FakeProvider,
) -> None:
    provider = CrunProvider(api_key=fake.api_key, base_url=fake.url, rate_limit=None)
    pool = SessionPool()
    with pytest.raises(ValueError, match=r"^a status query must stay on the provider's base_url$"):
        await pool.query(provider, "http://127.0.0.1:9/elsewhere", timeout=1.0)
    await pool.aclose()
    with pytest.raises(RuntimeError, match=r"^the client is closed$"):
        await pool.post(provider, b"{}", timeout=1.0)
    assert fake.request_count == 0


async def test_a_lanes_status_queries_never_hold_more_than_max_concurrency_connections() -> None:
    # Polls run outside the lane's workers (a polled task holds none), so only the connector
    # keeps the lane at max_concurrency connections to its provider.
    busy, most = 0, 0

    async def status(request: web.Request) -> web.Response:
        nonlocal busy, most
        busy += 1
        most = max(most, busy)
        await asyncio.sleep(0.1)
        busy -= 1
        return web.json_response({"code": 200})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", status)
    async with TestServer(app, host="127.0.0.1") as server:
        base = str(server.make_url("")).rstrip("/")
        provider = CrunProvider(api_key=KEY, base_url=base, max_concurrency=2)
        pool = SessionPool()
        try:
            replies = await asyncio.gather(
                *(
                    pool.query(provider, f"{base}/status?task_id=t{i}", timeout=5.0)
                    for i in range(5)
                )
            )
        finally:
            await pool.aclose()
    assert [r.status for r in replies] == [200] * 5
    assert most == 2


async def test_an_idle_pooled_connection_is_dropped_before_a_servers_usual_idle_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # KEEPALIVE_TIMEOUT (10 s) is shorter than common server idle timeouts (nginx: 75 s), so a
    # pooled connection is never reused just as the server drops it. Compressed here to 0.2 s
    # against a server that keeps idle connections for 30 s.
    monkeypatch.setattr(_transport, "KEEPALIVE_TIMEOUT", 0.2)
    peers: list[int] = []

    async def create(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername")[1])  # type: ignore[union-attr]
        return web.json_response({"code": 200, "msg": "ok", "data": {"persona_id": "p"}})

    app = web.Application()
    app.router.add_post("/api/v1/client/job/suno-persona-generate", create)
    runner = web.AppRunner(app, keepalive_timeout=30)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        provider = CrunProvider(api_key=KEY, base_url=url, rate_limit=None)
        async with PersonaClient([provider], max_retries=0) as client:
            await client.create_persona(req(0))
            await client.create_persona(req(1))  # at once: the same connection
            await asyncio.sleep(0.5)
            await client.create_persona(req(2))  # idle longer than the keep-alive: a new one
    finally:
        await runner.cleanup()
    assert peers[0] == peers[1] != peers[2]


# -- the send hook and per-attempt timeouts ------------------------------------------------------


async def test_on_sent_fires_once_per_create_when_its_connection_is_open_and_never_for_a_query(
    fake: FakeProvider,
) -> None:
    # A lane worker binds its hook for good (hook_sends); a status query run from such a task
    # must not stamp the worker's request, and a create from any other task stamps its own.
    provider = CrunProvider(api_key=fake.api_key, base_url=fake.url, rate_limit=None)
    body = b'{"task_id": "t", "suno_id": "a", "name": "n", "description": "d"}'
    worker_sends: list[float] = []
    own_sends: list[float] = []
    pool = SessionPool()
    try:

        async def worker() -> None:
            def stamp() -> None:
                worker_sends.append(time.monotonic())

            hook_sends(stamp)  # as a lane worker does, then passes the same hook to post
            await pool.query(provider, fake.url + "/_fake/stats", timeout=5.0)
            assert worker_sends == []
            await pool.post(provider, body, 5.0, stamp)

        await asyncio.create_task(worker())
        before = time.monotonic()
        await pool.post(provider, body, 5.0, lambda: own_sends.append(time.monotonic()))
        await pool.post(provider, body, 5.0)  # no hook: nothing stamped
    finally:
        await pool.aclose()
    assert len(worker_sends) == 1
    assert len(own_sends) == 1
    assert own_sends[0] >= before
    assert fake.request_count == 3


async def test_each_attempt_ends_at_its_own_timeout_not_an_earlier_attempts() -> None:
    # Attempts late in a deadline get less than the provider's timeout, each its own share.
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(4096):
                pass
        writer.close()

    async with raw_server(silent) as url:
        provider = CrunProvider(api_key=KEY, base_url=url, rate_limit=None, timeout=5.0)
        pool = SessionPool()
        took = []
        try:
            for timeout in (0.4, 0.1):
                started = time.monotonic()
                with pytest.raises(ProviderTimeoutError):
                    await pool.post(provider, b"{}", timeout)
                took.append(time.monotonic() - started)
        finally:
            await pool.aclose()
    assert took[0] >= 0.4
    assert took[1] < 0.3, took
