"""``PersonaClient``: routes each request to its provider's lane and owns every task and session."""

from __future__ import annotations

import asyncio
import functools
import logging
import warnings
from collections.abc import AsyncIterable, Iterable, Mapping, Sequence
from types import MappingProxyType, TracebackType

import anyio
import anyio.abc

from ._deadline import DEFAULT_DEADLINE, DEFAULT_STREAM_DEADLINE, check_deadline
from ._exceptions import InvalidRequestError, PersonaError
from ._job import Deliver, OnSend, OnSubmitted, _Job
from ._lane import Lane, LaneStats
from ._models import Persona, PersonaRequest
from ._orphans import OnOrphan
from ._providers import Provider
from ._remembered import DEFAULT_REMEMBER_FOR, DEFAULT_REMEMBER_MAX
from ._retry import DEFAULT_RETRY_POLICY, RetryPolicy, with_aliases
from ._sharing import SharedCreates
from ._stream import OutcomeStream, _StreamState
from ._transport import SessionPool

__all__ = ["PersonaClient"]

logger = logging.getLogger("persona_async")

#: create_many's default read-ahead, per unit of total concurrency.
_PENDING_PER_SLOT = 4


class PersonaClient:
    """Creates personas through one or more providers, each a lane with its own limits.

    Share one client across a whole application: every ``create_persona`` and ``create_many``
    draws on the same per-lane rate limit and concurrency cap::

        async def main() -> None:
            async with PersonaClient([CrunProvider(api_key=...)]) as client:
                persona = await client.create_persona(
                    PersonaRequest("task_1", "clip_1", "Neon Siren", "Smoky late-night R&B")
                )

        asyncio.run(main())

    ``deadline`` bounds each request from the moment it is submitted: queueing, cooldowns
    after 429, maintenance waits and retries. ``None`` (the default) means 30 s for a
    ``create_persona`` call (a web handler's budget) and an hour for each ``create_many``
    request (the bulk path, which waits out a maintenance window of up to
    ``max_maintenance_wait``); both calls take ``deadline=`` to override it. When it comes, the
    call fails with the provider's last answer (``MaintenanceError``, ``RateLimitError``, ...).
    An attempt starts only while a quarter of the provider's timeout (or of the deadline, if
    shorter) is left, and nothing on the wire is ever cancelled by a deadline.

    ``retry`` is the whole retry policy (``RetryPolicy``): 429 cools the lane and is retried;
    455 pauses the lane and waits up to ``max_maintenance_wait``; 500 and transport failures are
    retried up to ``max_retries`` times with exponential backoff and full jitter, but a request
    that may already have created a persona is resent only where the provider detects
    duplicates. The keyword arguments ``max_retries``, ``backoff_initial``, ``backoff_max``,
    ``retry_after_max``, ``max_maintenance_wait`` and ``retry_budget`` are aliases kept for
    earlier code: each sets that field of the default policy (``None``: the policy's). Passing
    one of them together with ``retry=`` is a ``TypeError``.

    ``on_orphan(lane, outcome)`` is called when a ``create_persona`` caller was cancelled after
    its request was sent and the answer made (or may have made) a persona nobody received:
    ``outcome.persona`` is set, or ``outcome.error`` says why the outcome is unknown. It runs
    in the lane, synchronously: keep it quick. An exception it raises is logged, never
    propagated. Orphans are logged at WARNING on the ``persona_async`` logger either way.

    Identical requests (the same lane and encoded body) share one create: a ``create_persona``
    identical to one in flight joins it, and a persona made is returned to the same request
    for ``remember_for`` seconds (``0``: off; at most ``remember_max`` requests, least recently
    used out) without sending. A failure is never remembered. With a ``RedisLimiter`` this
    holds between the processes sharing it; otherwise within this client.
    """

    def __init__(
        self,
        providers: Sequence[Provider],
        *,
        retry: RetryPolicy = DEFAULT_RETRY_POLICY,
        deadline: float | None = None,
        on_orphan: OnOrphan | None = None,
        remember_for: float = DEFAULT_REMEMBER_FOR,
        remember_max: int = DEFAULT_REMEMBER_MAX,
        max_retries: int | None = None,
        backoff_initial: float | None = None,
        backoff_max: float | None = None,
        retry_after_max: float | None = None,
        max_maintenance_wait: float | None = None,
        retry_budget: int | None = None,
    ) -> None:
        if not providers:
            raise ValueError("PersonaClient needs at least one provider")
        names = [p.name for p in providers]
        if len(set(names)) != len(names):
            raise ValueError(f"lane names must be unique, got {names}; pass name= to tell apart")
        policy = with_aliases(
            retry,
            max_retries=max_retries,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            retry_after_max=retry_after_max,
            max_maintenance_wait=max_maintenance_wait,
            retry_budget=retry_budget,
        )
        self._deadline = check_deadline(deadline)
        self._shared = SharedCreates(
            remember_for=remember_for, remember_max=remember_max, on_orphan=on_orphan
        )
        self._pool = SessionPool()
        self._lanes = {p.name: Lane(p, self._pool, policy) for p in providers}
        #: The lane of a one-lane client, where a request need not name its provider.
        self._sole = next(iter(self._lanes.values())) if len(self._lanes) == 1 else None
        self._tg: anyio.abc.TaskGroup | None = None  # lives in _runner, for the client's life
        self._runner: asyncio.Task[None] | None = None
        self._started: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._closed = False
        self._close_done: asyncio.Event | None = None  # set once aclose() has finished
        self._warned = False  # the "not closed" warning was given

    def __del__(self) -> None:
        # getattr: __init__ may have raised before setting them.
        if getattr(self, "_runner", None) is not None and not getattr(self, "_closed", True):
            self._warn_unclosed()

    def _warn_unclosed(self, _warn: type[Warning] = ResourceWarning) -> None:
        if self._warned:
            return
        self._warned = True
        message = (
            "PersonaClient was not closed; use 'async with PersonaClient(...)' or "
            "'await client.aclose()'"
        )
        # ResourceWarning is hidden unless -X dev or -W: also say it where it shows by default.
        logger.warning(message)
        warnings.warn(message, _warn, stacklevel=2)

    def __repr__(self) -> str:
        return f"PersonaClient(lanes={list(self._lanes)}, closed={self._closed})"

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> PersonaClient:
        await self._ensure_started()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _ensure_started(self) -> anyio.abc.TaskGroup:
        if self._closed:
            raise RuntimeError("the client is closed")
        if self._tg is None:
            if self._runner is None:
                self._started, self._stop = asyncio.Event(), asyncio.Event()
                # One task owns the task group, so aclose() may come from any task and no
                # worker or feeder outlives the client.
                self._runner = asyncio.get_running_loop().create_task(self._run())
            assert self._started is not None
            await self._started.wait()
        assert self._tg is not None
        return self._tg

    async def _run(self) -> None:
        assert self._started is not None
        assert self._stop is not None
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self._started.set()
                await self._stop.wait()
                tg.cancel_scope.cancel()
        except asyncio.CancelledError:
            # Cancelled from outside: asyncio.run() ending with the client still open.
            if not self._closed:
                self._warn_unclosed()
            raise

    async def aclose(self) -> None:
        """Stop every lane and close every session. Idempotent.

        Requests still queued fail with ``PersonaError``; requests in flight fail with
        ``OutcomeUnknownError`` (they were sent and may have succeeded). Closing finishes even
        if the caller is cancelled meanwhile, and a second call returns once it has.
        """
        if self._closed:
            if self._close_done is not None:
                await self._close_done.wait()
            return
        self._closed = True
        self._close_done = asyncio.Event()
        try:
            with anyio.CancelScope(shield=True):
                if self._runner is not None:
                    assert self._stop is not None
                    self._stop.set()
                    await self._runner
                self._tg = None
                for lane in self._lanes.values():
                    lane.fail_pending()
                await self._pool.aclose()
                for lane in self._lanes.values():
                    await lane.aclose()
                await self._shared.aclose()
        finally:
            self._close_done.set()

    # -- one request ---------------------------------------------------------------------------

    def _lane_for(self, request: PersonaRequest) -> Lane:
        if not isinstance(request, PersonaRequest):
            raise InvalidRequestError(
                f"expected a PersonaRequest, got {type(request).__name__}", field="request"
            )
        name = request.provider
        if name is None and self._sole is not None:
            lane = self._sole
        else:
            found = self._lanes.get(name) if name is not None else None
            if found is None:
                rule = "is required when the client has several lanes" if name is None else (
                    f"{name!r} is not one of the client's lanes"
                )
                raise InvalidRequestError(
                    f"provider {rule}: {', '.join(self._lanes)}",
                    field="provider",
                    task_id=request.task_id,
                    audio_id=request.audio_id,
                    attempts=0,
                )
            lane = found
        lane.provider.validate(request)
        return lane

    async def create_persona(
        self,
        request: PersonaRequest,
        *,
        deadline: float | None = None,
        max_retries: int | None = None,
    ) -> Persona:
        """Create one persona; raise a ``PersonaError`` subclass if it was not created.

        ``deadline`` (seconds, ``None``: the client's) bounds the whole call, queueing and
        waits included; when it comes the call fails with the provider's last answer.
        ``max_retries`` (``None``: the client's) caps resends of 500s and transport failures.
        A request that breaks a rule raises ``InvalidRequestError`` before anything is sent.
        If the caller is cancelled before the request is sent, it is never sent; if it is
        cancelled after, the attempt runs to its end and a persona it made is reported as an
        orphan (see the class docstring).
        """
        seconds = self._resolve_deadline(deadline, DEFAULT_DEADLINE)
        _check_max_retries(max_retries)
        lane = self._lane_for(request)
        tg = await self._ensure_started()
        return await self._shared.create(
            lane, request, tg, deadline=seconds, max_retries=max_retries
        )

    def _resolve_deadline(self, deadline: float | None, default: float) -> float:
        seconds = check_deadline(deadline)
        if seconds is None:
            seconds = self._deadline if self._deadline is not None else default
        return seconds

    # -- many requests -------------------------------------------------------------------------

    def create_many(
        self,
        requests: Iterable[PersonaRequest] | AsyncIterable[PersonaRequest],
        *,
        ordered: bool = False,
        max_pending: int | None = None,
        on_send: OnSend | None = None,
        on_submitted: OnSubmitted | None = None,
        deadline: float | None = None,
        max_retries: int | None = None,
    ) -> OutcomeStream:
        """Yield an ``Outcome`` per request, pulling ``requests`` lazily.

        Completion order by default; input order with ``ordered=True``. At most
        ``max_pending`` requests (default: four per unit of the lanes' total concurrency) are
        pulled but not yet yielded, however long the input. Per-request failures are outcomes,
        never exceptions; an exception raised by ``requests`` itself is re-raised once the
        requests pulled before it have yielded their outcomes.

        ``on_send(request)``, when given, is called right before a request's first attempt
        goes out (never for a request that is not sent): a journal written there knows which
        requests may have reached the provider. It may return an awaitable (say, a future that
        a group commit resolves once the record is on stable storage): the request waits for
        it, then is checked again as after the rate limiter's wait (dropped, lane stopped,
        cooling or paused, deadline), and goes out only if still due. If ``on_send`` or its
        awaitable raises a ``PersonaError``, the request is not sent and that error is its
        outcome.
        ``on_submitted(request, provider_task_id)`` is called when an async-task provider
        answers a submit, before the task is polled: record the id to resume by it.

        ``deadline`` (seconds, ``None``: the client's, else an hour) bounds each request from
        the moment it is pulled: the bulk default waits out a maintenance window.
        ``max_retries`` (``None``: the client's) caps each request's resends.
        """
        seconds = self._resolve_deadline(deadline, DEFAULT_STREAM_DEADLINE)
        _check_max_retries(max_retries)
        if max_pending is None:
            total = sum(lane.provider.max_concurrency for lane in self._lanes.values())
            max_pending = total * _PENDING_PER_SLOT
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        async def start(state: _StreamState) -> None:
            tg = await self._ensure_started()
            submit = _SubmitMany(self, tg, on_send, on_submitted, seconds, max_retries)
            tg.start_soon(state.feed, requests, submit)

        return OutcomeStream(max_pending=max_pending, ordered=ordered, start=start)

    # -- observability -------------------------------------------------------------------------

    def stats(self) -> Mapping[str, LaneStats]:
        """A read-only mapping of lane name to a frozen ``LaneStats`` snapshot of that lane."""
        return MappingProxyType({name: lane.stats() for name, lane in self._lanes.items()})


class _SubmitMany:
    """create_many's way into the lanes: invalid requests become outcomes at once."""

    __slots__ = ("_client", "_deadline", "_max_retries", "_on_send", "_on_submitted", "_tg")

    def __init__(
        self,
        client: PersonaClient,
        tg: anyio.abc.TaskGroup,
        on_send: OnSend | None,
        on_submitted: OnSubmitted | None,
        deadline: float,
        max_retries: int | None,
    ) -> None:
        self._client = client
        self._tg = tg
        self._on_send = on_send
        self._on_submitted = on_submitted
        self._deadline = deadline
        self._max_retries = max_retries

    def __call__(self, request: PersonaRequest, deliver: Deliver, seq: int) -> _Job | None:
        try:
            lane = self._client._lane_for(request)
        except InvalidRequestError as err:
            deliver(_Job(request, b"", deliver, seq), None, err)
            return None
        # What the client remembers, or is creating for create_persona, is not sent again.
        # (What a stream makes is not remembered: ~1 us a request, and a bulk run's repeats
        # are its journal's business.)
        shared, name = self._client._shared, lane.provider.name
        body = lane.provider.encode(request)
        persona = shared.memory.recall(name, body, request)
        if persona is not None:
            deliver(_Job(request, body, deliver, seq), persona, None)
            return None
        joined = shared.join(name, body, request, self._deadline)
        if joined is not None:
            joined.add_done_callback(functools.partial(_joined, _Job(request, body, deliver, seq)))
            return None
        return lane.submit(
            request,
            deliver,
            self._tg,
            seq,
            self._on_send,
            self._on_submitted,
            deadline=self._deadline,
            max_retries=self._max_retries,
            body=body,
        )


def _joined(job: _Job, answer: asyncio.Future[Persona]) -> None:
    """A stream's request answered by an identical ``create_persona`` flight."""
    if answer.cancelled():
        return
    error = answer.exception()
    if error is not None:
        assert isinstance(error, PersonaError)
        job.deliver(job, None, error)
    else:
        job.deliver(job, answer.result(), None)


def _check_max_retries(max_retries: int | None) -> None:
    if max_retries is not None and (isinstance(max_retries, bool) or max_retries < 0):
        raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
