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

import collections
import random
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Final

from aiohttp import web

from ._behaviour import Behaviour
from ._faults import DEFAULT_FAULT_MIX, Fault, _Injection
from ._limits import RateShape, RateWindow
from ._songs import Songs
from ._tasks import FakeTask, TaskBook
from ._wire import (
    DEFAULT_API_KEY,
    DEFAULT_RATE_PERIOD,
    _encode,
)

# Kinds always listed in stats(); the others appear once they have been seen.
_STATS_KINDS: Final = ("crun", "family", "other")

# Graceful-shutdown budget for in-flight handlers; a fake must close fast, not wait out a
# slow fault for aiohttp's default 60 s.
_SHUTDOWN_TIMEOUT: Final = 1.0


class FakeProvider(Behaviour):
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

    __slots__ = ("_host", "_port", "_runner")

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
            "requests_by_kind": {k: n for k, n in self._kinds.items() if n or k in _STATS_KINDS}
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

    # -- control routes ---------------------------------------------------------------------

    async def _handle_stats(self, request: web.Request) -> web.Response:
        return web.Response(body=_encode(self.stats()), content_type="application/json")

    async def _handle_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.Response(body=_encode(self.stats()), content_type="application/json")
