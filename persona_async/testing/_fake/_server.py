"""A fake Suno persona provider: a real aiohttp server on loopback speaking every contract.

One :class:`FakeProvider` serves, on one base URL, the crun contract
(``POST /api/v1/client/job/suno-persona-generate``, ``x-api-key``, snake_case), the
sunoapi.org family contract (``POST /api/v1/generate/generate-persona``, ``Authorization:
Bearer``, camelCase), AceData, the Suno-API gateways, TTAPI and MountSea (each in its own reply
style), and the async-task contracts of kie's market route and Evolink (a submit, then status
queries of a task that runs ``task_seconds``), with the state rules of each: crun makes a new
persona for every create, the family answers 409 for an audio id that already has one.

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
import random
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Final

from aiohttp import web

from ._contract import _Contract, _record, find_status
from ._faults import _PASS_THROUGH, DEFAULT_FAULT_MIX, Fault, _Injection, _reset_connection
from ._limits import RATE_SHAPES, RateShape, RateWindow
from ._registry import ASYNC, BY_PATH, CONTRACTS
from ._songs import Songs
from ._tasks import FakeTask, TaskBook
from ._wire import (
    _MESSAGES,
    DEFAULT_API_KEY,
    DEFAULT_RATE_PERIOD,
    Kind,
    RequestRecord,
    _encode,
    _envelope,
    _nginx_page,
    _Outcome,
    _retry_after_headers,
)

# Kinds always listed in stats(); the others appear once they have been seen.
_STATS_KINDS: Final = ("crun", "family", "other")

# Graceful-shutdown budget for in-flight handlers; a fake must close fast, not wait out a
# slow fault for aiohttp's default 60 s.
_SHUTDOWN_TIMEOUT: Final = 1.0


def _reject(contract: _Contract, code: int, message: str) -> _Outcome:
    status, body = contract.error(code, message)
    return status, code, body, None


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
    :param rate_period: Length in seconds of the rate window.
    :param rate_shape: How requests are counted: ``"sliding"`` (any ``rate_period`` seconds),
        ``"fixed"`` (a counter reset on every multiple of ``rate_period`` on the clock) or
        ``"bucket"`` (a token bucket of ``rate_limit`` tokens refilled over ``rate_period``).
    :param count_rejected: Rejected requests count against the window too.
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
        "_count_rejected",
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
        "_rate_shape",
        "_record_requests",
        "_request_count",
        "_resets",
        "_rng",
        "_runner",
        "_tasks",
        "_windows",
        "creations",
        "failing_tasks",
        "in_flight",
        "latency",
        "max_concurrent",
        "missing_tasks",
        "personas",
        "rate_limit_http",
        "requests",
        "retry_after",
        "songs",
        "task_seconds",
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
    #: Music tasks the status endpoints answer for (see ``status.Songs``).
    songs: Songs
    #: Requests rejected by the rate window.
    window_violations: int
    #: Most contract requests ever handled at once, and how many are being handled now.
    max_concurrent: int
    in_flight: int
    latency: float
    #: Async contracts: seconds a persona task runs after its submit.
    task_seconds: float
    #: Async contracts: clip ids whose persona task fails (``failCode`` / ``error``).
    failing_tasks: set[str]
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
        rate_shape: RateShape = "sliding",
        count_rejected: bool = False,
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
        self.failing_tasks = set()
        self.task_seconds = 0.0
        self._tasks = TaskBook()
        self.songs = Songs()
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
        self._windows: dict[str, RateWindow] = {}
        self._rate_limit: int | None = None
        self._rate_period = rate_period
        self._rate_shape: RateShape = "sliding"
        self._count_rejected = False
        self.set_rate_limit(
            rate_limit, rate_period, shape=rate_shape, count_rejected=count_rejected
        )
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
    def tasks(self) -> Mapping[str, FakeTask]:
        """Async persona tasks submitted (kie's market route, Evolink), by task id."""
        return self._tasks.tasks

    @property
    def request_count(self) -> int:
        """Requests received (control endpoints under ``/_fake/`` excluded)."""
        return self._request_count

    # -- behaviour knobs -------------------------------------------------------------------

    def set_rate_limit(
        self,
        limit: int | None,
        period: float | None = None,
        *,
        shape: RateShape | None = None,
        count_rejected: bool | None = None,
    ) -> None:
        """Change the per-key rate limit; ``None`` keeps that setting as it is.

        A new limit, period or shape starts every key's window afresh.
        """
        if shape is not None and shape not in RATE_SHAPES:
            raise ValueError(f"rate_shape must be one of {', '.join(RATE_SHAPES)}, got {shape!r}")
        if limit is not None and limit < 1:
            raise ValueError("rate_limit must be >= 1 or None")
        period = self._rate_period if period is None else period
        if period <= 0:
            raise ValueError("rate_period must be > 0")
        self._rate_limit = limit
        self._rate_period = period
        if shape is not None:
            self._rate_shape = shape
        if count_rejected is not None:
            self._count_rejected = count_rejected
        self._windows.clear()

    def maintenance(self, seconds: float) -> None:
        """Answer every contract request with code 455 for the next ``seconds``."""
        self._maintenance_until = time.monotonic() + seconds

    def end_maintenance(self) -> None:
        self._maintenance_until = 0.0

    def inject(self, fault: Fault, times: int = 1, path: str | None = None) -> None:
        """Queue ``fault`` for the next ``times`` contract requests.

        Queued faults are used first-in first-out, one per request, before random ones.
        ``path`` names a contract kind (``"crun"``, ``"family"``, ``"acedata"``, ...), or an
        async contract's status queries (``"kie-jobs-status"``, ``"evolink-status"``), and
        reserves the fault for those requests; other requests pass it by. Requests to unknown
        paths never consume faults.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        kinds = {c.kind for c in CONTRACTS} | {f"{c.kind}-status" for c in ASYNC}
        if path is not None and path not in kinds:
            raise ValueError(f"path must be None or one of {', '.join(sorted(kinds))}")
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
        self._tasks.clear()
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
            "requests_by_kind": {
                k: n for k, n in self._kinds.items() if n or k in _STATS_KINDS
            }
            | {k: self._kinds[k] for k in _STATS_KINDS},
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
            contract = BY_PATH.get(request.path) if request.method == "POST" else None
            kind: Kind = "other" if contract is None else contract.kind
            task_id = None
            song = self.songs.claims("GET", request.path, request.query)  # shared status paths
            found = find_status(ASYNC, request.method, request.path, request.query, None)
            if found is not None and not song:  # a persona task's status query
                contract, task_id = found
                kind = f"{contract.kind}-status"  # type: ignore[assignment]
            record = _record(request, body, kind, arrived, contract)
            self._request_count += 1
            self._kinds[kind] += 1
            if self._record_requests:
                self.requests.append(record)
            if contract is None:
                await self._wait(self.latency)
                status = self.songs.answer(record, self._keys)  # a status query, if it is one
                return self._send(
                    record, status or (404, 404, _envelope("msg", 404, "not found"), None)
                )
            return await self._respond(request, contract, record, task_id)
        finally:
            self.in_flight -= 1

    async def _respond(
        self, request: web.Request, contract: _Contract, record: RequestRecord, task_id: str | None
    ) -> web.StreamResponse:
        fault = self._next_fault(record.kind)
        if fault is not None:
            self._faults_served += 1
            if fault.kind not in _PASS_THROUGH:
                await self._wait(self.latency + fault.seconds)
                if fault.kind == "reset_before":
                    return self._reset(request)
                return self._send_fault(contract, record, fault)
        outcome = self._admit(contract, record, windowed=task_id is None)
        if outcome is None:
            extra = fault.seconds if fault is not None else 0.0
            await self._wait(self.latency + extra)
            if task_id is None:
                outcome = self._process(contract, record)
            else:
                outcome = (*self._task_status(contract, task_id), None)
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

    def _admit(
        self, contract: _Contract, record: RequestRecord, *, windowed: bool = True
    ) -> _Outcome | None:
        """Judge maintenance, key and rate window at arrival; ``None`` lets the request in."""
        if record.arrived < self._maintenance_until:
            return _reject(contract, 455, _MESSAGES[455])
        api_key = record.api_key
        if api_key is None or api_key not in self._keys:
            return _reject(contract, 401, _MESSAGES[401])
        limit = self._rate_limit
        # A fresh reading rather than `arrived` keeps each window sorted even when bodies of
        # concurrent requests finish reading out of arrival order.
        if windowed and limit is not None and not self._take_slot(api_key, time.monotonic(), limit):
            self.window_violations += 1
            forced = 429 if self.rate_limit_http else None
            status, body = contract.error(429, _MESSAGES[429], forced)
            return status, 429, body, _retry_after_headers(self.retry_after)
        return None

    def _take_slot(self, api_key: str, now: float, limit: int) -> bool:
        window = self._windows.get(api_key)
        if window is None:
            window = self._windows[api_key] = RateWindow(
                self._rate_shape, limit, self._rate_period, count_rejected=self._count_rejected
            )
        return window.admit(now)

    def _process(self, contract: _Contract, record: RequestRecord) -> _Outcome:
        if record.json is None:
            return _reject(contract, 422, "request body must be a JSON object")
        body = contract.fields_of(record.json)
        if isinstance(body, str):
            return _reject(contract, 422, body)
        error = contract.validate(body)
        if error is not None:
            return _reject(contract, 422, error)
        if body[contract.task or contract.audio] in self.missing_tasks:
            return _reject(contract, 422, contract.missing_task_message)
        refused = self.songs.refuse_create(contract, body)
        if refused is not None:
            return refused
        audio_key = (contract.kind, body[contract.audio])
        if contract.one_per_audio and self.creations[audio_key]:
            return _reject(contract, 409, _MESSAGES[409])
        persona_id = f"persona_{self._next_persona}"
        self._next_persona += 1
        self.creations[audio_key] += 1
        details: dict[str, Any] = {
            "kind": contract.kind,
            "task_id": body.get(contract.task) if contract.task else None,
            "audio_id": body[contract.audio],
            "name": body[contract.name],
            "description": body.get(contract.description),
        }
        for wire, name in contract.fields():
            if wire is not None and body.get(wire) is not None:
                details[name] = body[wire]
        if contract in ASYNC:
            return self._submit(contract, body[contract.audio], persona_id, details)
        self.personas[persona_id] = details
        status, reply = contract.success(persona_id, body)
        return status, 200, reply, None

    def _submit(
        self, contract: _Contract, audio_id: str, persona_id: str, details: dict[str, Any]
    ) -> _Outcome:
        fails = audio_id in self.failing_tasks
        task = self._tasks.submit(contract.kind, audio_id, persona_id, self.task_seconds, fails)
        if not fails:  # the persona exists once the task is made; it is readable when done
            self.personas[persona_id] = details | {"provider_task_id": task.task_id}
        if contract.submit_reply is not None:
            return 200, 200, contract.submit_reply(task), None
        status, reply = contract.success(task.task_id, {})
        return status, 200, reply, None

    def _task_status(self, contract: _Contract, task_id: str) -> tuple[int, int, bytes]:
        reply = contract.status.task if contract.status is not None else None
        assert reply is not None  # only async contracts reach here
        return reply(self._tasks.polled(contract.kind, task_id), time.monotonic())

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
            forced = fault.status if fault.kind == "http" else None
            status, body = contract.error(fault.code, fault.message, forced)
            return self._send(record, (status, fault.code, body, headers))
        if fault.kind == "truncated":
            details = {contract.name: "n", contract.description: "d"}
            whole = contract.success("persona_0", details)[1]
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
        return _reset_connection(request)

    @staticmethod
    async def _wait(seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)
