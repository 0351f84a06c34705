"""An API key goes only in its own header to its own host: never in a URL, repr, error, log line
or pickle, never to another lane, even when a provider echoes it back."""

from __future__ import annotations

import asyncio
import copy
import logging
import pickle
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from _support import CRUN_PATH, FAMILY_PATH, fast_retry
from _support import free_port as closed_port
from aiohttp import web
from aiohttp.test_utils import TestServer

from persona_async import (
    ApiBoxProvider,
    ApikleyProvider,
    CrunProvider,
    KieProvider,
    PersonaClient,
    PersonaError,
    PersonaRequest,
    Provider,
    SunoApiProvider,
)
from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio

KEY = "sk-live-7f3a9c1e5b2d4068a1c3e5f7"
OTHER_KEY = "kie-9b8a7c6d5e4f3a2b1c0d9e8f"
ALL_CLASSES = [CrunProvider, ApikleyProvider, SunoApiProvider, KieProvider, ApiBoxProvider]


def leaks(text: str | bytes, key: str = KEY) -> bool:
    """True if ``text`` holds the key or a recognisable piece of it (12 characters)."""
    haystack = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return any(key[i : i + 12] in haystack for i in range(len(key) - 11))


def assert_error_keeps_the_key_out(err: BaseException) -> None:
    assert isinstance(err, PersonaError)
    assert not leaks(pickle.dumps(err))
    # What logger.exception or an unhandled error would print, causes included.
    assert not leaks("".join(traceback.format_exception(err)))
    # And what an error reporter could find by walking the chain, foreign errors included.
    seen: list[BaseException] = []
    link: BaseException | None = err
    while link is not None and link not in seen:
        seen.append(link)
        assert not leaks(str(link)), type(link)
        assert not leaks(repr(link)), type(link)
        assert not leaks(repr(link.args)), type(link)
        assert not leaks(repr(getattr(link, "__dict__", {}))), type(link)
        link = link.__cause__ or link.__context__


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    # This module's own fake accepts two keys, to check each goes only where it belongs.
    async with FakeProvider(api_keys=[KEY, OTHER_KEY]) as server:
        yield server


def make(cls: type[Provider], fake: FakeProvider, **kw: Any) -> Provider:
    """A provider of ``cls`` at this module's fake, with ``KEY`` (not ``OTHER_KEY``)."""
    return cls(api_key=KEY, base_url=fake.url, rate_limit=None, **kw)


def request(audio_id: str = "clip_1", provider: str | None = None) -> PersonaRequest:
    return PersonaRequest("task_1", audio_id, "Neon Siren", "Smoky", provider=provider)


def client(*providers: Provider, **kw: Any) -> PersonaClient:
    """A client that resends once (``max_retries=1``): a leak on a resend shows too."""
    return PersonaClient(list(providers), retry=fast_retry(**{"max_retries": 1, **kw}))


async def error_from(provider: Provider, **kw: Any) -> PersonaError:
    async with client(provider, **kw) as c:
        with pytest.raises(PersonaError) as info:
            await c.create_persona(request())
    return info.value


def test_leak_check_finds_the_key_and_its_pieces() -> None:
    # The detector itself must work, or every assertion below passes vacuously.
    assert leaks(f"Bearer {KEY}")
    assert leaks(KEY[3:20])
    assert not leaks(KEY[:11])
    assert not leaks("***")


# -- where the key goes ------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [CrunProvider, KieProvider])
async def test_key_is_never_in_the_url_or_body(fake: FakeProvider, cls: type[Provider]) -> None:
    fake.inject(Fault.envelope(500))
    async with client(make(cls, fake)) as c:
        await c.create_persona(request())
    assert len(fake.requests) == 2
    for record in fake.requests:
        assert record.api_key == KEY  # it did travel, in its header
        assert record.query_string == ""
        assert not leaks(record.path)
        assert not leaks(record.body)
        assert not leaks(repr(record.headers))  # only the key headers, which the fake masks


@asynccontextmanager
async def recording_server() -> AsyncIterator[tuple[str, list[tuple[str, dict[str, str]]]]]:
    """A loopback server that records every request's raw headers and creates personas."""
    seen: list[tuple[str, dict[str, str]]] = []
    counter = iter(range(1, 1_000_000))

    async def crun(request: web.Request) -> web.Response:
        seen.append((request.path, dict(request.headers)))
        data = {"persona_id": f"p{next(counter)}"}
        return web.json_response({"code": 200, "message": "success", "data": data})

    async def family(request: web.Request) -> web.Response:
        seen.append((request.path, dict(request.headers)))
        data = {"personaId": f"p{next(counter)}", "name": "n", "description": "d"}
        return web.json_response({"code": 200, "msg": "success", "data": data})

    app = web.Application()
    app.router.add_post(CRUN_PATH, crun)
    app.router.add_post(FAMILY_PATH, family)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("")).rstrip("/"), seen


async def test_each_lane_sends_only_its_own_key_even_to_one_host() -> None:
    async with recording_server() as (url, seen):
        crun = CrunProvider(api_key=KEY, base_url=url, rate_limit=None)
        kie = KieProvider(api_key=OTHER_KEY, base_url=url, rate_limit=None)
        async with client(crun, kie) as c:
            for i in range(3):  # interleaved, over kept-alive connections
                await c.create_persona(request(f"a{i}", provider="crun"))
                await c.create_persona(request(f"b{i}", provider="kie"))
    assert len(seen) == 6
    for path, headers in seen:
        lowered = {k.lower(): v for k, v in headers.items()}
        if path == CRUN_PATH:
            assert lowered["x-api-key"] == KEY
            assert "authorization" not in lowered
            assert not leaks(repr(headers), OTHER_KEY)
        else:
            assert lowered["authorization"] == f"Bearer {OTHER_KEY}"
            assert "x-api-key" not in lowered
            assert not leaks(repr(headers), KEY)


async def test_two_accounts_at_one_provider_each_send_their_own_key() -> None:
    async with recording_server() as (url, seen):
        first = CrunProvider(api_key=KEY, base_url=url, name="crun-a", rate_limit=None)
        second = CrunProvider(api_key=OTHER_KEY, base_url=url, name="crun-b", rate_limit=None)
        async with client(first, second) as c:
            await c.create_persona(request("a", provider="crun-a"))
            await c.create_persona(request("b", provider="crun-b"))
            await c.create_persona(request("c", provider="crun-a"))
    keys = [{k.lower(): v for k, v in headers.items()}["x-api-key"] for _, headers in seen]
    assert keys == [KEY, OTHER_KEY, KEY]


# -- reprs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_provider_repr_masks_the_key(cls: type[Provider]) -> None:
    provider = cls(api_key=KEY)
    assert not leaks(repr(provider))
    assert not leaks(str(provider))
    assert "api_key='***'" in repr(provider)


async def test_client_repr_and_stats_hold_no_key(fake: FakeProvider) -> None:
    c = client(make(CrunProvider, fake), make(KieProvider, fake))
    assert not leaks(repr(c))
    async with c:
        await c.create_persona(request(provider="crun"))
        assert not leaks(repr(c))
        assert not leaks(str(c))
        assert not leaks(repr(dict(c.stats())))
    assert not leaks(repr(c))


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_pickling_a_provider_is_refused(cls: type[Provider]) -> None:
    provider = cls(api_key=KEY)
    with pytest.raises(TypeError, match="not picklable") as info:
        pickle.dumps(provider)
    assert not leaks(str(info.value))
    with pytest.raises(TypeError):
        copy.copy(provider)


def test_key_fingerprint_does_not_reveal_the_key() -> None:
    provider = CrunProvider(api_key=KEY)
    assert not leaks(provider.key_fingerprint)
    assert provider.key_fingerprint == CrunProvider(api_key=KEY).key_fingerprint
    assert provider.key_fingerprint != CrunProvider(api_key=OTHER_KEY).key_fingerprint


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [CrunProvider, KieProvider])
@pytest.mark.parametrize(
    "fault",
    [
        Fault.envelope(422, f"invalid request from key {KEY}"),
        Fault.http(401, message=f"api key {KEY} is not valid"),
        Fault.envelope(418, f"{KEY}{KEY}"),
        Fault.body(f"<html><pre>Authorization: Bearer {KEY}</pre></html>".encode(), status=502),
        Fault.body(f'{{"code": 200, "data": {{"echo": "{KEY}"}}}}'.encode()),
    ],
    ids=["envelope-422", "http-401", "unknown-code", "html-page", "success-without-id"],
)
async def test_key_echoed_back_by_the_provider_is_masked_in_the_error(
    fake: FakeProvider, cls: type[Provider], fault: Fault
) -> None:
    fake.inject(fault, times=5)
    err = await error_from(make(cls, fake), max_retries=0)
    cause = err.__cause__
    shown = str(err) + repr(vars(err)) + (repr(vars(cause)) if cause is not None else "")
    assert "***" in shown  # the key did come back, and was masked
    assert_error_keeps_the_key_out(err)


async def test_key_past_a_long_run_of_whitespace_is_not_left_half_visible(
    fake: FakeProvider,
) -> None:
    # An excerpt is cut short; the key must be masked before the cut, not after.
    fake.inject(Fault.body(b"<pre>" + b" " * 280 + f"x-api-key: {KEY}</pre>".encode()))
    err = await error_from(make(CrunProvider, fake))
    assert "x-api-key: ***" in str(getattr(err, "excerpt", ""))
    assert_error_keeps_the_key_out(err)


@pytest.mark.parametrize(
    "fault",
    [Fault.reset_after(), Fault.reset_before(), Fault.slow(0.3), Fault.truncated()],
    ids=lambda f: f.kind,
)
@pytest.mark.parametrize("cls", [CrunProvider, KieProvider])
async def test_transport_errors_carry_no_key(
    fake: FakeProvider, cls: type[Provider], fault: Fault
) -> None:
    fake.inject(fault, times=5)
    err = await error_from(make(cls, fake, timeout=0.1))
    assert_error_keeps_the_key_out(err)


@pytest.mark.parametrize("cls", [CrunProvider, KieProvider])
async def test_broken_http_reply_error_carries_no_key(cls: type[Provider]) -> None:
    # aiohttp's own error for an unparsable reply holds the request headers, key included.
    async def broken_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(broken_http, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        err = await error_from(cls(api_key=KEY, base_url=f"http://127.0.0.1:{port}"))
    finally:
        server.close()
        await server.wait_closed()
    assert err.__cause__ is not None  # the foreign error is kept for debugging, masked
    assert_error_keeps_the_key_out(err)


async def test_connection_refused_error_carries_no_key() -> None:
    provider = KieProvider(api_key=KEY, base_url=f"http://127.0.0.1:{closed_port()}")
    err = await error_from(provider)
    assert_error_keeps_the_key_out(err)


# -- logs --------------------------------------------------------------------------------------


async def test_debug_logs_of_a_run_with_faults_hold_no_key(
    fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="persona_async")
    for fault in (
        Fault.envelope(429, f"slow down {KEY}", retry_after=0.01),
        Fault.envelope(455, f"maintenance for {KEY}"),
        Fault.http(500, message=f"crashed on {KEY}"),
        Fault.reset_after(),
        Fault.html(502),
        Fault.envelope(401, f"bad key {KEY}"),
    ):
        fake.inject(fault)
    results: list[object] = []
    async with client(
        make(CrunProvider, fake), make(KieProvider, fake), max_retries=3, retry_after_max=0.05
    ) as c:
        for i in range(8):
            lane = "kie" if i % 2 else "crun"
            try:
                results.append(await c.create_persona(request(f"clip_{i}", provider=lane)))
            except PersonaError as err:
                results.append(err)
    assert any(isinstance(r, PersonaError) for r in results)
    records = [r for r in caplog.records if r.name.startswith("persona_async")]
    assert any(r.levelno >= logging.WARNING for r in records)  # the lanes did report things
    for record in records:
        assert not leaks(record.getMessage())
        assert not leaks(repr(record.args))
    assert not leaks(caplog.text)
