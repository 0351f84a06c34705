"""A fake Suno persona provider: a real aiohttp server on loopback speaking both contracts.

One :class:`FakeProvider` serves, on one base URL, the crun contract
(``POST /api/v1/client/job/suno-persona-generate``, ``x-api-key``, snake_case) and the
sunoapi.org family contract (``POST /api/v1/generate/generate-persona``, ``Authorization:
Bearer``, camelCase), with the state rules of each: crun makes a new persona for every create,
the family answers 409 for an audio id that already has one.

Around that it can misbehave on purpose, the way real providers and the gateways in front of
them do: a sliding-window rate limit per key, maintenance windows, and :class:`Fault` values
(envelope errors, real HTTP errors, HTML error pages, truncated or empty bodies, connection
resets before and *after* the persona was created, slow answers, redirects) injected one per
request or drawn at random from a seeded mix. Everything it received and did is recorded for
tests to assert on; ``GET /_fake/stats`` serves the summary to other processes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import socket
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Final, Literal

import msgspec
from aiohttp import web

CRUN_PATH: Final = "/api/v1/client/job/suno-persona-generate"
FAMILY_PATH: Final = "/api/v1/generate/generate-persona"
DEFAULT_API_KEY: Final = "test-key"
DEFAULT_RATE_PERIOD: Final = 10.0

Kind = Literal["crun", "family", "other"]
FaultKind = Literal[
    "envelope",
    "http",
    "html",
    "truncated",
    "empty",
    "body",
    "reset_before",
    "reset_after",
    "slow",
    "redirect",
]

# Messages used when a fault or rejection does not name its own; worded like the providers'.
_MESSAGES: Final[Mapping[int, str]] = {
    200: "success",
    401: "unauthorized: invalid or missing api key",
    402: "insufficient credits",
    404: "not found",
    405: "rate limited",
    408: "request timeout",
    409: "Persona already exists for this music",
    422: "validation error",
    429: "rate limited",
    430: "call frequency too high",
    451: "failed to fetch the music data",
    455: "maintenance",
    500: "internal server error",
    501: "generation failed",
    505: "feature disabled",
}

_SECRET_HEADERS: Final = frozenset({"authorization", "x-api-key", "proxy-authorization"})
_REDACTED: Final = "***"
# Graceful-shutdown budget for in-flight handlers; a fake must close fast, not wait out a
# slow fault for aiohttp's default 60 s.
_SHUTDOWN_TIMEOUT: Final = 1.0
# SO_LINGER on, zero timeout: close() then sends RST instead of FIN, a true connection reset.
_LINGER_RESET: Final = struct.pack("ii", 1, 0)

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def _message_for(code: int) -> str:
    message = _MESSAGES.get(code)
    if message is not None:
        return message
    try:
        return HTTPStatus(code).phrase.lower()
    except ValueError:
        return "error"


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
    #: Extra delay of a ``slow`` fault.
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
    def html(cls, status: int = 502) -> Fault:
        """An nginx-style HTML error page (``text/html``), as a gateway in front would send."""
        return cls("html", status=status, content_type="text/html")

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


@dataclass(slots=True)
class RequestRecord:
    """What the fake received on one request, and what it answered.

    Records are appended on arrival, before any fault or latency, so ``response_code`` and
    ``http_status`` stay ``None`` until the answer is sent, and forever for a reset.
    """

    method: str
    path: str
    #: ``"crun"`` or ``"family"`` for a POST to that contract's path, else ``"other"``.
    kind: Kind
    query_string: str
    #: All request headers, with ``Authorization``/``X-Api-Key``/``Proxy-Authorization``
    #: values replaced by ``"***"``.
    headers: dict[str, str]
    #: The key from the header this contract reads it from (``x-api-key`` for crun, the
    #: ``Bearer`` token for the family; for ``other``, the Bearer token else ``x-api-key``).
    #: Left out of ``repr()`` so a failing assertion does not print a key.
    api_key: str | None = field(repr=False)
    body: bytes
    #: The body parsed as a JSON object, or ``None`` if it is not one.
    json: dict[str, Any] | None
    #: :func:`time.monotonic` at arrival (the clock asyncio's ``loop.time()`` uses).
    arrived: float
    #: Envelope code sent, else the HTTP status for replies without an envelope.
    response_code: int | None = None
    http_status: int | None = None


@dataclass(frozen=True, slots=True)
class _Contract:
    """The wire facts of one provider contract that the fake's handling depends on."""

    kind: Kind
    message_key: str
    persona_id_key: str
    task: str
    audio: str
    name: str
    description: str
    vocal_start: str
    vocal_end: str
    style: str
    max_lengths: Mapping[str, int]
    missing_task_message: str
    one_per_audio: bool
    #: The success reply repeats the persona's name and description next to its id.
    echoes_details: bool

    def validate(self, body: Mapping[str, Any]) -> str | None:
        """Return the 422 message for the first invalid field, or ``None`` if valid."""
        for name in (self.task, self.audio, self.name, self.description):
            value = body.get(name)
            if value is None:
                return f"{name} is required"
            if not isinstance(value, str) or not value:
                return f"{name} must be a non-empty string"
        for name in (self.vocal_start, self.vocal_end):
            value = body.get(name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value < 0
            ):
                return f"{name} must be a number >= 0"
        style = body.get(self.style)
        if style is not None and not isinstance(style, str):
            return f"{self.style} must be a string"
        for name, limit in self.max_lengths.items():
            value = body.get(name)
            if isinstance(value, str) and len(value) > limit:
                return f"{name} must be at most {limit} characters"
        return None

    def success_data(self, persona_id: str, body: Mapping[str, Any]) -> dict[str, str]:
        data = {self.persona_id_key: persona_id}
        if self.echoes_details:
            data["name"] = body[self.name]
            data["description"] = body[self.description]
        return data


_CONTRACTS: Final[Mapping[str, _Contract]] = {
    CRUN_PATH: _Contract(
        kind="crun",
        message_key="message",
        persona_id_key="persona_id",
        task="task_id",
        audio="suno_id",
        name="name",
        description="description",
        vocal_start="vocal_start",
        vocal_end="vocal_end",
        style="style",
        # Only crun documents length limits; the family documents none.
        max_lengths={"name": 100, "description": 1000, "style": 1000},
        missing_task_message="task_id not found",
        one_per_audio=False,
        echoes_details=False,
    ),
    FAMILY_PATH: _Contract(
        kind="family",
        message_key="msg",
        persona_id_key="personaId",
        task="taskId",
        audio="audioId",
        name="name",
        description="description",
        vocal_start="vocalStart",
        vocal_end="vocalEnd",
        style="style",
        max_lengths={},
        missing_task_message="record status is not success",
        one_per_audio=True,
        echoes_details=True,
    ),
}


class _Injection:
    """A queued fault with how many more requests it applies to."""

    __slots__ = ("fault", "kind", "remaining")

    def __init__(self, fault: Fault, remaining: int, kind: str | None) -> None:
        self.fault = fault
        self.remaining = remaining
        self.kind = kind


# (HTTP status, envelope code, body, extra headers)
_Outcome = tuple[int, int, bytes, Mapping[str, str] | None]


def _envelope(message_key: str, code: int, message: str, data: Any = None) -> bytes:
    return _encode({"code": code, message_key: message, "data": data})


def _retry_after_headers(seconds: float | None) -> dict[str, str] | None:
    # HTTP wants whole seconds, but tests need sub-second waits; "%g" keeps "2" as "2".
    return None if seconds is None else {"Retry-After": f"{seconds:g}"}


def _nginx_page(status: int) -> bytes:
    try:
        title = f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        title = str(status)
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()


def _api_key(kind: Kind, headers: Mapping[str, str]) -> str | None:
    if kind == "crun":
        return headers.get("x-api-key")
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") if kind == "other" else None


class FakeProvider:
    """A loopback HTTP server that behaves like crun and the sunoapi.org family at once.

    Start it as an async context manager (or :meth:`start`/:meth:`close`) and point a
    client at :attr:`url`; both contracts live under that one base URL::

        async with FakeProvider(rate_limit=20, rate_period=10.0) as fake:
            fake.inject(Fault.reset_after(), path="family")
            ...  # drive the client at fake.url with fake.api_key
            assert fake.window_violations == 0
            assert max(fake.creations.values()) == 1

    Business errors are sent the family's way, inside an HTTP 200 envelope; only faults and
    ``rate_limit_http`` use real HTTP error statuses. A request passes, in order: its fault
    (injected first, else random), maintenance, the API key, the rate window (all judged at
    arrival), then ``latency`` plus any ``slow`` delay, then body validation, ``missing_tasks``
    and the family's one-persona-per-audio rule, and finally creation.

    The public attributes are live state, meant to be read (and ``missing_tasks``,
    ``latency``, ``rate_limit_http`` and ``retry_after`` to be changed) between requests.

    :param api_keys: Accepted keys; any other key, or none, gets envelope code 401.
    :param host: Interface to bind; loopback by default.
    :param port: Port to bind; 0 picks a free one (read it back from :attr:`url`).
    :param rate_limit: Requests accepted per key within any ``rate_period`` seconds; the
        next one is rejected with 429 (not queued) and counted in :attr:`window_violations`.
        ``None`` disables the limit.
    :param rate_period: Length in seconds of the sliding rate window.
    :param rate_limit_http: Send rate-limit rejections as HTTP 429 instead of HTTP 200.
    :param retry_after: Seconds to put in a ``Retry-After`` header on rate-limit
        rejections; ``None`` sends no header (as no provider documents one).
    :param latency: Seconds every answer is delayed, faults included.
    :param fault_rate: Probability that a contract request gets a random fault from
        :data:`DEFAULT_FAULT_MIX`.
    :param seed: Seed for those draws, for reproducible runs.
    :param record_requests: Keep a :class:`RequestRecord` per request in :attr:`requests`.
        Turn off for long benchmark runs; counters and :meth:`stats` still work.
    """

    __slots__ = (
        "_codes",
        "_fault_mix",
        "_fault_rate",
        "_faults_served",
        "_host",
        "_injections",
        "_keys",
        "_kinds",
        "_maintenance_until",
        "_next_persona",
        "_port",
        "_rate_limit",
        "_rate_period",
        "_record_requests",
        "_request_count",
        "_resets",
        "_rng",
        "_runner",
        "_windows",
        "creations",
        "in_flight",
        "latency",
        "max_concurrent",
        "missing_tasks",
        "personas",
        "rate_limit_http",
        "requests",
        "retry_after",
        "window_violations",
    )

    #: Every request received, in arrival order (empty if ``record_requests`` is off).
    requests: list[RequestRecord]
    #: Personas created per ``(kind, audio_id)``; a crun count above 1 is a duplicate.
    creations: collections.Counter[tuple[str, str]]
    #: Persona id -> what it was created from (kind, task_id, audio_id, name, ...).
    personas: dict[str, dict[str, Any]]
    #: Task ids that answer 422 as if not found / not finished.
    missing_tasks: set[str]
    #: Requests rejected by the rate window.
    window_violations: int
    #: Most contract requests ever handled at once, and how many are being handled now.
    max_concurrent: int
    in_flight: int
    latency: float
    rate_limit_http: bool
    retry_after: float | None

    def __init__(
        self,
        *,
        api_keys: Sequence[str] = (DEFAULT_API_KEY,),
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: int | None = None,
        rate_period: float = DEFAULT_RATE_PERIOD,
        rate_limit_http: bool = False,
        retry_after: float | None = None,
        latency: float = 0.0,
        fault_rate: float = 0.0,
        seed: int | None = None,
        record_requests: bool = True,
    ) -> None:
        if isinstance(api_keys, str) or not api_keys:
            raise ValueError("api_keys must be a non-empty sequence of strings")
        if latency < 0:
            raise ValueError("latency must be >= 0")
        self.requests = []
        self.creations = collections.Counter()
        self.personas = {}
        self.missing_tasks = set()
        self.window_violations = 0
        self.max_concurrent = 0
        self.in_flight = 0
        self.latency = latency
        self.rate_limit_http = rate_limit_http
        self.retry_after = retry_after
        # Accepted keys in the caller's order, so api_key can name the first one.
        self._keys: tuple[str, ...] = tuple(api_keys)
        self._host = host
        # Requested port until started, then the bound one.
        self._port = port
        self._record_requests = record_requests
        # Counters kept apart from `requests` so stats survive record_requests=False.
        self._request_count = 0
        self._kinds: collections.Counter[str] = collections.Counter()
        self._codes: collections.Counter[int] = collections.Counter()
        self._resets = 0
        self._faults_served = 0
        # Persona ids come from a counter that reset() keeps, so ids never repeat.
        self._next_persona = 1
        # Per key: arrival times of accepted requests inside the current window, oldest first.
        self._windows: dict[str, collections.deque[float]] = {}
        self._rate_limit: int | None = None
        self._rate_period = rate_period
        self.set_rate_limit(rate_limit, rate_period)
        # Injected faults, FIFO; each entry may apply to several requests.
        self._injections: list[_Injection] = []
        self._rng = random.Random(seed)
        self._fault_rate = 0.0
        self._fault_mix: tuple[Fault, ...] = DEFAULT_FAULT_MIX
        self.random_faults(fault_rate)
        # time.monotonic() until which every request gets 455; 0.0 when not in maintenance.
        self._maintenance_until = 0.0
        self._runner: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start serving; :attr:`url` is valid once this returns."""
        if self._runner is not None:
            raise RuntimeError("FakeProvider is already started")
        app = web.Application()
        app.router.add_get("/_fake/stats", self._handle_stats)
        app.router.add_post("/_fake/reset", self._handle_reset)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port)
            await site.start()
            self._port = int(runner.addresses[0][1])
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def close(self) -> None:
        """Stop serving and drop open connections. Safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakeProvider:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """Base URL, ``http://HOST:PORT`` without a trailing slash; only while started."""
        if self._runner is None:
            raise RuntimeError("FakeProvider is not started")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def api_key(self) -> str:
        """The first accepted key."""
        return self._keys[0]

    @property
    def api_keys(self) -> tuple[str, ...]:
        return self._keys

    @property
    def request_count(self) -> int:
        """Requests received (control endpoints under ``/_fake/`` excluded)."""
        return self._request_count

    # -- behaviour knobs -------------------------------------------------------------------

    def set_rate_limit(self, limit: int | None, period: float | None = None) -> None:
        """Change the per-key rate window; requests already in a window keep counting."""
        if limit is not None and limit < 1:
            raise ValueError("rate_limit must be >= 1 or None")
        period = self._rate_period if period is None else period
        if period <= 0:
            raise ValueError("rate_period must be > 0")
        self._rate_limit = limit
        self._rate_period = period

    def maintenance(self, seconds: float) -> None:
        """Answer every contract request with code 455 for the next ``seconds``."""
        self._maintenance_until = time.monotonic() + seconds

    def end_maintenance(self) -> None:
        self._maintenance_until = 0.0

    def inject(self, fault: Fault, times: int = 1, path: str | None = None) -> None:
        """Queue ``fault`` for the next ``times`` contract requests.

        Queued faults are used first-in first-out, one per request, before random ones.
        ``path`` of ``"crun"`` or ``"family"`` reserves the fault for that contract; other
        requests pass it by. Requests to unknown paths never consume faults.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        if path not in (None, "crun", "family"):
            raise ValueError('path must be None, "crun" or "family"')
        self._injections.append(_Injection(fault, times, path))

    def random_faults(self, rate: float, faults: Sequence[Fault] | None = None) -> None:
        """Give each contract request a ``rate`` chance of a fault drawn from ``faults``.

        ``faults`` defaults to :data:`DEFAULT_FAULT_MIX`; repeat an entry to weight it.
        Draws use the generator seeded at construction, so a run is reproducible as long as
        requests arrive in the same order.
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError("fault rate must be between 0 and 1")
        mix = DEFAULT_FAULT_MIX if faults is None else tuple(faults)
        if rate and not mix:
            raise ValueError("faults must not be empty")
        self._fault_rate = rate
        self._fault_mix = mix

    def reset(self) -> None:
        """Forget everything observed and all pending faults and maintenance.

        Configuration stays: keys, rate limit, latency, random faults, ``missing_tasks``.
        Persona ids keep counting up so an id is never reused.
        """
        self.requests.clear()
        self.creations.clear()
        self.personas.clear()
        self.window_violations = 0
        self.max_concurrent = self.in_flight
        self._request_count = 0
        self._kinds.clear()
        self._codes.clear()
        self._resets = 0
        self._faults_served = 0
        self._windows.clear()
        self._injections.clear()
        self._maintenance_until = 0.0

    def stats(self) -> dict[str, Any]:
        """A JSON-able summary of what happened, as served by ``GET /_fake/stats``.

        Keys: ``request_count``, ``requests_by_kind``, ``response_codes`` (code as a string ->
        count), ``connection_resets``, ``creations`` (personas created), ``personas``,
        ``duplicate_creations`` (creations beyond the first per kind and audio id),
        ``window_violations``, ``max_concurrent``, ``in_flight``, ``faults_served``,
        ``faults_pending``.
        """
        return {
            "request_count": self._request_count,
            "requests_by_kind": {k: self._kinds[k] for k in ("crun", "family", "other")},
            "response_codes": {str(c): n for c, n in sorted(self._codes.items())},
            "connection_resets": self._resets,
            "creations": self.creations.total(),
            "personas": len(self.personas),
            "duplicate_creations": sum(n - 1 for n in self.creations.values() if n > 1),
            "window_violations": self.window_violations,
            "max_concurrent": self.max_concurrent,
            "in_flight": self.in_flight,
            "faults_served": self._faults_served,
            "faults_pending": sum(i.remaining for i in self._injections),
        }

    # -- request handling ------------------------------------------------------------------

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return web.Response(body=_encode(self.stats()), content_type="application/json")

    async def _handle_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.Response(body=_encode(self.stats()), content_type="application/json")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        if self.in_flight > self.max_concurrent:
            self.max_concurrent = self.in_flight
        try:
            arrived = time.monotonic()
            body = await request.read()
            contract = _CONTRACTS.get(request.path) if request.method == "POST" else None
            kind: Kind = "other" if contract is None else contract.kind
            parsed: Any = None
            if body:
                try:
                    parsed = _decode(body)
                except msgspec.DecodeError:
                    parsed = None
            headers = request.headers
            record = RequestRecord(
                method=request.method,
                path=request.path,
                kind=kind,
                query_string=request.query_string,
                headers={
                    k: _REDACTED if k.lower() in _SECRET_HEADERS else v for k, v in headers.items()
                },
                api_key=_api_key(kind, headers),
                body=body,
                json=parsed if isinstance(parsed, dict) else None,
                arrived=arrived,
            )
            self._request_count += 1
            self._kinds[kind] += 1
            if self._record_requests:
                self.requests.append(record)
            if contract is None:
                await self._wait(self.latency)
                return self._send(record, (404, 404, _envelope("msg", 404, "not found"), None))
            return await self._respond(request, contract, record)
        finally:
            self.in_flight -= 1

    async def _respond(
        self, request: web.Request, contract: _Contract, record: RequestRecord
    ) -> web.StreamResponse:
        fault = self._next_fault(contract.kind)
        if fault is not None:
            self._faults_served += 1
            if fault.kind not in _PASS_THROUGH:
                await self._wait(self.latency)
                if fault.kind == "reset_before":
                    return self._reset(request)
                return self._send_fault(contract, record, fault)
        outcome = self._admit(contract, record)
        if outcome is None:
            extra = fault.seconds if fault is not None else 0.0
            await self._wait(self.latency + extra)
            outcome = self._process(contract, record)
        else:
            await self._wait(self.latency)
        if fault is not None and fault.kind == "reset_after":
            return self._reset(request)
        return self._send(record, outcome)

    def _next_fault(self, kind: str) -> Fault | None:
        for index, injection in enumerate(self._injections):
            if injection.kind is None or injection.kind == kind:
                injection.remaining -= 1
                if not injection.remaining:
                    del self._injections[index]
                return injection.fault
        if self._fault_rate and self._rng.random() < self._fault_rate:
            return self._rng.choice(self._fault_mix)
        return None

    def _admit(self, contract: _Contract, record: RequestRecord) -> _Outcome | None:
        """Judge maintenance, key and rate window at arrival; ``None`` lets the request in."""
        key = contract.message_key
        if record.arrived < self._maintenance_until:
            return 200, 455, _envelope(key, 455, _MESSAGES[455]), None
        api_key = record.api_key
        if api_key is None or api_key not in self._keys:
            return 200, 401, _envelope(key, 401, _MESSAGES[401]), None
        limit = self._rate_limit
        # A fresh reading rather than `arrived` keeps each window sorted even when bodies of
        # concurrent requests finish reading out of arrival order.
        if limit is not None and not self._take_slot(api_key, time.monotonic(), limit):
            self.window_violations += 1
            status = 429 if self.rate_limit_http else 200
            headers = _retry_after_headers(self.retry_after)
            return status, 429, _envelope(key, 429, _MESSAGES[429]), headers
        return None

    def _take_slot(self, api_key: str, now: float, limit: int) -> bool:
        window = self._windows.get(api_key)
        if window is None:
            window = self._windows[api_key] = collections.deque()
        horizon = now - self._rate_period
        while window and window[0] <= horizon:
            window.popleft()
        if len(window) >= limit:
            return False
        window.append(now)
        return True

    def _process(self, contract: _Contract, record: RequestRecord) -> _Outcome:
        key = contract.message_key
        body = record.json
        if body is None:
            return 200, 422, _envelope(key, 422, "request body must be a JSON object"), None
        error = contract.validate(body)
        if error is not None:
            return 200, 422, _envelope(key, 422, error), None
        if body[contract.task] in self.missing_tasks:
            return 200, 422, _envelope(key, 422, contract.missing_task_message), None
        audio_key = (contract.kind, body[contract.audio])
        if contract.one_per_audio and self.creations[audio_key]:
            return 200, 409, _envelope(key, 409, _MESSAGES[409]), None
        persona_id = f"persona_{self._next_persona}"
        self._next_persona += 1
        self.creations[audio_key] += 1
        details: dict[str, Any] = {
            "kind": contract.kind,
            "task_id": body[contract.task],
            "audio_id": body[contract.audio],
            "name": body[contract.name],
            "description": body[contract.description],
        }
        for wire, name in (
            (contract.vocal_start, "vocal_start"),
            (contract.vocal_end, "vocal_end"),
            (contract.style, "style"),
        ):
            if body.get(wire) is not None:
                details[name] = body[wire]
        self.personas[persona_id] = details
        data = contract.success_data(persona_id, body)
        return 200, 200, _envelope(key, 200, "success", data), None

    def _send(self, record: RequestRecord, outcome: _Outcome) -> web.Response:
        status, code, body, headers = outcome
        record.http_status = status
        record.response_code = code
        self._codes[code] += 1
        return web.Response(
            status=status, body=body, content_type="application/json", headers=headers
        )

    def _send_fault(self, contract: _Contract, record: RequestRecord, fault: Fault) -> web.Response:
        headers = _retry_after_headers(fault.retry_after)
        if fault.code is not None:  # envelope and http
            body = _envelope(contract.message_key, fault.code, fault.message)
            return self._send(record, (fault.status, fault.code, body, headers))
        if fault.kind == "truncated":
            data = {contract.persona_id_key: "persona_0"}
            whole = _envelope(contract.message_key, 200, "success", data)
            raw = whole[: len(whole) // 2]
        elif fault.kind == "html":
            raw = _nginx_page(fault.status)
        elif fault.kind == "redirect":
            headers = {"Location": fault.location}
            raw = b""
        else:  # empty, body
            raw = fault.raw
        record.http_status = record.response_code = fault.status
        self._codes[fault.status] += 1
        return web.Response(
            status=fault.status, body=raw, content_type=fault.content_type, headers=headers
        )

    def _reset(self, request: web.Request) -> web.Response:
        self._resets += 1
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

    @staticmethod
    async def _wait(seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)
