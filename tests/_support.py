"""Helpers shared by the test modules (the ``fake`` fixture lives in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any

import anyio
from aiohttp import web

from persona_async import (
    CrunProvider,
    KieProvider,
    Outcome,
    PersonaClient,
    PersonaRequest,
    Provider,
    RetryPolicy,
)
from persona_async.testing import FakeProvider

#: The create endpoints the fake serves: crun's, and the sunoapi family's (kie and the others).
CRUN_PATH = "/api/v1/client/job/suno-persona-generate"
FAMILY_PATH = "/api/v1/generate/generate-persona"

#: Retry and probe waits in centiseconds: the behaviour of seconds, in a fraction of the time.
FAST_RETRY = RetryPolicy(backoff_initial=0.01, backoff_max=0.05)

#: How much earlier than the client's window a test's fake provider ends its own. The fake
#: stamps a request when its handler runs, after loopback and event-loop delays; a real provider
#: counting 20 per 10 s sees network jitter well inside the limiter's 2% margin (200 ms), but a
#: test compresses the window to a fraction of a second, where 2% is 10 ms and a loaded 2-core
#: machine delays a handler by more. A limiter that lets even one request too many through a
#: window is still caught: that request arrives within milliseconds of the others. The exact
#: guarantee is pinned on virtual time in test_ratelimit.py.
JITTER = 0.05


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def req(i: int, lane: str | None = None, **fields: Any) -> PersonaRequest:
    """The ``i``-th request of a test: its own task and clip ids, a name and a description
    (``fields`` replace them); for the lane named ``lane`` if one is given."""
    values = {
        "task_id": f"task-{i}",
        "audio_id": f"clip-{i}",
        "name": f"Persona {i}",
        "description": "Smoky late-night R&B",
        **fields,
    }
    return PersonaRequest(**values, provider=lane)


def fast_retry(**fields: Any) -> RetryPolicy:
    """``FAST_RETRY`` with ``fields`` (``max_retries=``, ``retry_budget=``, ...) changed."""
    return dataclasses.replace(FAST_RETRY, **fields)


def make(cls: type[Provider], fake: FakeProvider, **options: Any) -> Provider:
    """A provider of ``cls`` pointed at ``fake`` (its API key and URL unless given), with no
    rate limit unless one is given."""
    options.setdefault("api_key", fake.api_key)
    options.setdefault("base_url", fake.url)
    options.setdefault("rate_limit", None)
    return cls(**options)


def crun(fake: FakeProvider, **options: Any) -> CrunProvider:
    """A :class:`CrunProvider` pointed at ``fake``, as :func:`make` makes one."""
    provider = make(CrunProvider, fake, **options)
    assert isinstance(provider, CrunProvider)
    return provider


def kie(fake: FakeProvider, **options: Any) -> KieProvider:
    """A :class:`KieProvider` pointed at ``fake``, as :func:`make` makes one."""
    provider = make(KieProvider, fake, **options)
    assert isinstance(provider, KieProvider)
    return provider


async def collect(
    client: PersonaClient, requests: Iterable[PersonaRequest], **options: Any
) -> list[Outcome]:
    """Every outcome of ``client.create_many(requests, **options)``, in the order it came."""
    return [outcome async for outcome in client.create_many(requests, **options)]


def arrivals(fake: FakeProvider, **match: Any) -> list[float]:
    """When each request ``fake`` received whose attributes equal ``match`` arrived."""
    return [r.arrived for r in fake.requests if all(getattr(r, k) == v for k, v in match.items())]


def most_in_any_window(starts: Sequence[float], period: float) -> int:
    """The largest number of starts inside any half-open window ``[t, t + period)``."""
    ordered = sorted(starts)
    most, first = 0, 0
    for last, start in enumerate(ordered):
        while start - ordered[first] >= period:
            first += 1
        most = max(most, last - first + 1)
    return most


class Scripted:
    """A crun endpoint on loopback that answers its first requests as scripted, in order of
    arrival: ``(delay, status, retry_after)``; every later request creates a persona."""

    def __init__(self, *script: tuple[float, int, float | None]) -> None:
        self.script = list(script)
        self.arrived: list[tuple[float, str]] = []  # (when, audio id)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _create(self, request: web.Request) -> web.Response:
        audio_id = (await request.json())["suno_id"]
        self.arrived.append((time.monotonic(), audio_id))
        if not self.script:
            body = {"code": 200, "msg": "success", "data": {"persona_id": f"p-{audio_id}"}}
            return web.json_response(body)
        delay, status, retry_after = self.script.pop(0)
        await anyio.sleep(delay)
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        return web.json_response({"code": status, "msg": "no"}, status=status, headers=headers)

    async def __aenter__(self) -> Scripted:
        app = web.Application()
        app.router.add_post(CRUN_PATH, self._create)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


class HeldPort:
    """A loopback port whose listen queue is full, so a connection attempt gets no answer.

    The kernel drops the SYN of a connect to a listener with a full accept queue; the client
    sends it again after its retransmission timeout (1 s on Linux). So until ``open(target)``
    every connection attempt hangs (a connect timeout, nothing sent); after it, the port relays
    to ``target`` and a connection that was waiting opens at its next SYN: a slow connection
    setup, as a distant TLS handshake makes one.
    """

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self.port: int = self._listener.getsockname()[1]
        self._fillers: list[socket.socket] = []
        for _ in range(3):  # one fills the accept queue; the rest wait with the client
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", self.port))
            self._fillers.append(filler)
        self._server: asyncio.AbstractServer | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def open(self, target: str) -> None:
        """Relay every connection, waiting ones included, to ``target`` (``http://host:port``)."""
        host, _, port = target.removeprefix("http://").rstrip("/").partition(":")
        for filler in self._fillers:
            filler.close()

        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
            except OSError:
                writer.close()
                return
            for source, sink in ((reader, up_writer), (up_reader, writer)):
                task = asyncio.ensure_future(_pipe(source, sink))
                self._pipes.add(task)
                task.add_done_callback(self._pipes.discard)

        self._server = await asyncio.start_server(relay, sock=self._listener)

    async def open_after(self, delay: float, target: str) -> None:
        await asyncio.sleep(delay)
        await self.open(target)

    async def aclose(self) -> None:
        pipes = list(self._pipes)
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        else:
            self._listener.close()
        for filler in self._fillers:
            filler.close()

    async def __aenter__(self) -> HeldPort:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except OSError:
        pass
    finally:
        sink.close()
