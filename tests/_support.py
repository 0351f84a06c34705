"""Helpers shared by the test modules (the ``fake`` fixture lives in conftest.py)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Sequence
from typing import Any

from persona_async import PersonaRequest, Provider
from persona_async.testing import FakeProvider

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


def req(i: int) -> PersonaRequest:
    """The ``i``-th request of a test: its own task and clip ids, a name and a description."""
    return PersonaRequest(f"task-{i}", f"clip-{i}", f"Persona {i}", "Smoky late-night R&B")


def make(cls: type[Provider], fake: FakeProvider, **kw: Any) -> Provider:
    """A provider of ``cls`` pointed at ``fake``, with no rate limit unless one is given."""
    return cls(api_key=fake.api_key, base_url=fake.url, **{"rate_limit": None, **kw})


def most_in_any_window(starts: Sequence[float], period: float) -> int:
    """The largest number of starts inside any half-open window ``[t, t + period)``."""
    ordered = sorted(starts)
    most, first = 0, 0
    for last, start in enumerate(ordered):
        while start - ordered[first] >= period:
            first += 1
        most = max(most, last - first + 1)
    return most


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
