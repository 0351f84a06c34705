"""Faults the fake injects: the ways real providers and their gateways misbehave."""

from __future__ import annotations

import contextlib
import socket
import struct
from dataclasses import dataclass, replace
from typing import Final

from aiohttp import web

from ._wire import FaultKind, _message_for


@dataclass(frozen=True, slots=True)
class Fault:
    """One way for a request to go wrong, built with one of the class-method constructors.

    A fault is consumed by one request (see :meth:`FakeProvider.inject`). Unless stated
    otherwise a fault replaces normal handling entirely: nothing is created, nothing enters
    the rate window. ``slow`` and ``reset_after`` are the exceptions: the request is handled
    normally (it may create a persona) and only the answer is delayed or never sent.

    Compare faults by value; construct them directly only through the class methods.
    """

    kind: FaultKind
    #: HTTP status of the reply.
    status: int = 200
    #: Envelope ``code``; ``None`` when the reply carries no envelope.
    code: int | None = None
    #: Envelope message (``message`` for crun, ``msg`` for the family).
    message: str = ""
    #: Seconds for a ``Retry-After`` header, or ``None`` to send none.
    retry_after: float | None = None
    #: Exact body of a ``body`` fault.
    raw: bytes = b""
    content_type: str = "application/json"
    #: Extra delay before the answer: a ``slow`` fault's, or any fault's made with ``later``.
    seconds: float = 0.0
    #: ``Location`` of a ``redirect`` fault.
    location: str = ""

    @classmethod
    def envelope(
        cls, code: int, message: str | None = None, retry_after: float | None = None
    ) -> Fault:
        """HTTP 200 with an error envelope ``code`` (the family's documented style)."""
        text = _message_for(code) if message is None else message
        return cls("envelope", code=code, message=text, retry_after=retry_after)

    @classmethod
    def http(
        cls,
        status: int,
        code: int | None = None,
        message: str | None = None,
        retry_after: float | None = None,
    ) -> Fault:
        """A real HTTP ``status`` with a JSON envelope whose code is ``code`` (or ``status``)."""
        envelope_code = status if code is None else code
        text = _message_for(envelope_code) if message is None else message
        return cls("http", status=status, code=envelope_code, message=text, retry_after=retry_after)

    @classmethod
    def html(cls, status: int = 502, retry_after: float | None = None) -> Fault:
        """An nginx-style HTML error page (``text/html``), as a gateway in front would send;
        with ``retry_after``, a gateway shedding load that says when to come back."""
        return cls("html", status=status, content_type="text/html", retry_after=retry_after)

    @classmethod
    def truncated(cls) -> Fault:
        """HTTP 200 ``application/json`` whose JSON stops mid-object. Nothing is created."""
        return cls("truncated")

    @classmethod
    def empty(cls) -> Fault:
        """HTTP 200 ``application/json`` with an empty body. Nothing is created."""
        return cls("empty")

    @classmethod
    def body(cls, raw: bytes, status: int = 200, content_type: str = "application/json") -> Fault:
        """Exactly ``raw`` as the body: wrong-shape JSON, a huge body, anything."""
        return cls("body", status=status, raw=bytes(raw), content_type=content_type)

    @classmethod
    def reset_before(cls) -> Fault:
        """Reset the connection (RST) without creating anything or replying."""
        return cls("reset_before")

    @classmethod
    def reset_after(cls) -> Fault:
        """Handle the request normally (a persona may be created) then reset, never replying.

        This is the ambiguous outcome a client must not blindly retry: the creation counts in
        :attr:`FakeProvider.creations` and in the family's one-persona-per-audio rule.
        """
        return cls("reset_after")

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        """Wait ``seconds`` (on top of any latency) then handle the request normally."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        return cls("slow", seconds=seconds)

    def later(self, seconds: float) -> Fault:
        """This fault, answered ``seconds`` later (on top of any latency).

        ``Fault.http(429, retry_after=2).later(0.3)``: a 429 that comes back while other
        requests, sent after it, are answered first.
        """
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        return replace(self, seconds=self.seconds + seconds)

    @classmethod
    def redirect(cls, location: str) -> Fault:
        """HTTP 307 to ``location``, which keeps the method and body if followed."""
        return cls("redirect", status=307, location=location)


# Faults that let the request through normal handling instead of replacing it.
_PASS_THROUGH: Final = frozenset({"slow", "reset_after"})

#: The random mix behind ``fault_rate``: drawn uniformly, one per faulted request.
DEFAULT_FAULT_MIX: Final[tuple[Fault, ...]] = (
    Fault.envelope(429, "rate limited"),
    Fault.http(500),
    Fault.html(502),
    Fault.reset_after(),
)



class _Injection:
    """A queued fault with how many more requests it applies to."""

    __slots__ = ("fault", "kind", "remaining")

    def __init__(self, fault: Fault, remaining: int, kind: str | None) -> None:
        self.fault = fault
        self.remaining = remaining
        self.kind = kind




# SO_LINGER on, zero timeout: close() then sends RST instead of FIN, a true connection reset.
_LINGER_RESET: Final = struct.pack("ii", 1, 0)


def _reset_connection(request: web.Request) -> web.Response:
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # If this fails, an orderly close still tells the client nothing came back.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        transport.abort()
    # aiohttp notices the transport is gone and drops this response unsent.
    return web.Response(status=204)
