"""One request, one persona: identical ``create_persona`` calls share one create.

Two calls are identical when the provider would receive the same thing: the same lane and the
same encoded request body (every field sent, not only the clip; the API key is in a header,
never in the body, and never part of what is kept here). Within a client:

* a call identical to one in flight joins it: one attempt, and its outcome (persona or error)
  for every caller;
* a persona made is remembered for ``remember_for`` seconds (at most ``remember_max`` of them,
  least recently used first out) and returned to an identical call without sending anything;
  a failure is never remembered: asked again, the request is sent again;
* every caller keeps its own deadline: one whose deadline passes while the shared attempt is on
  the wire leaves with a ``ProviderTimeoutError`` (``sent=True``) saying that calling again
  joins the attempt or gets its persona; a shared request that was never sent when its time ran
  out is queued again for callers whose deadlines are later;
* a caller that leaves (cancelled, deadline) does not stop the attempt if others wait for it;
  when the last one leaves, an unsent request is never sent, and a sent one runs to its end: a
  persona it makes for nobody is remembered (an identical call gets it) and reported as an
  orphan (``_orphans``).

Across processes, a lane whose limiter offers a ``FlightStore`` (``RedisLimiter``) also asks
it, so that processes sharing it send one of each identical request (``_redis_sharing``).

``create_many`` uses ``recall`` and ``join`` only: a dict lookup a request. What a stream makes
is not remembered (a bulk run's repeats are its journal's business).
"""

from __future__ import annotations

import asyncio
import copy
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.abc

from ._exceptions import PersonaError, ProviderTimeoutError
from ._job import _Job
from ._models import Persona, PersonaRequest
from ._orphans import OnOrphan, report_orphan
from ._remembered import (
    DEFAULT_REMEMBER_FOR,
    DEFAULT_REMEMBER_MAX,
    RememberedPersonas,
    as_asked,
)

if TYPE_CHECKING:
    from ._lane import Lane

__all__ = ["FlightStore", "SharedCreates"]

_Key = tuple[str, bytes]  # (lane name, encoded body)
#: Seconds two deadlines on one clock may differ by and still count as the same.
_SLACK = 1e-3


class FlightStore(Protocol):
    """Where processes sharing a lane's limiter agree on one flight per identical request."""

    async def once(
        self,
        body: bytes,
        send: Callable[[], Awaitable[Persona]],
        *,
        remember_for: float,
        time_left: Callable[[], float],
        made: Callable[[str, str | None], Persona],
    ) -> Persona:
        """``send()``'s persona, unless a process sharing the store sent ``body`` already:
        then the persona it made (built by ``made(persona_id, provider_task_id)``)."""
        ...

    async def aclose(self) -> None: ...


class _Caller:
    """One ``create_persona`` call waiting for a flight."""

    __slots__ = ("ends", "future", "request", "timer")

    def __init__(self, future: asyncio.Future[Persona], request: PersonaRequest, ends: float):
        self.future = future
        self.request = request
        self.ends = ends  # its deadline, on the client's clock
        self.timer: asyncio.TimerHandle | None = None


class _Flight:
    """One request in flight for every identical call waiting for it."""

    __slots__ = ("body", "callers", "ends", "job", "key", "lane", "max_retries", "request", "scope")

    def __init__(
        self, key: _Key, lane: Lane, request: PersonaRequest, body: bytes, max_retries: int | None
    ) -> None:
        self.key = key
        self.lane = lane
        self.request = request  # the first caller's; its body is every caller's
        self.body = body
        self.max_retries = max_retries
        self.callers: list[_Caller] = []
        self.ends = -math.inf  # the latest deadline of its callers
        self.job: _Job | None = None  # the lane's current job for it, once submitted
        self.scope: anyio.CancelScope | None = None  # a shared store's wait, before the job

    def waiting(self) -> list[_Caller]:
        return [c for c in self.callers if not c.future.done()]


class SharedCreates:
    """A client's flights and the personas it made recently. See the module docstring."""

    __slots__ = ("_clock", "_flights", "_on_orphan", "_stores", "memory")

    def __init__(
        self,
        *,
        remember_for: float = DEFAULT_REMEMBER_FOR,
        remember_max: int = DEFAULT_REMEMBER_MAX,
        on_orphan: OnOrphan | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.memory = RememberedPersonas(remember_for, remember_max, clock)
        self._on_orphan = on_orphan
        self._clock = clock
        self._flights: dict[_Key, _Flight] = {}
        self._stores: dict[str, FlightStore | None] = {}  # lane name -> its shared store

    def join(
        self, lane: str, body: bytes, request: PersonaRequest, deadline: float
    ) -> asyncio.Future[Persona] | None:
        """A new caller's answer from an identical flight in progress; None if there is none."""
        flight = self._flights.get((lane, body)) if self._flights else None
        if flight is None:
            return None
        caller = self._add(flight, request, deadline)
        return caller.future

    def _add(self, flight: _Flight, request: PersonaRequest, deadline: float) -> _Caller:
        loop = asyncio.get_running_loop()
        caller = _Caller(loop.create_future(), request, self._clock() + deadline)
        flight.callers.append(caller)
        if caller.ends > flight.ends:
            flight.ends = caller.ends
        if deadline != math.inf:
            # Its deadline is its own: a caller may leave before the shared request is answered.
            caller.timer = loop.call_later(deadline, self._expire, flight, caller)
        return caller

    # -- one call ------------------------------------------------------------------------------

    async def create(
        self,
        lane: Lane,
        request: PersonaRequest,
        tg: anyio.abc.TaskGroup,
        *,
        deadline: float,
        max_retries: int | None,
    ) -> Persona:
        """What ``create_persona`` returns for a validated ``request`` on ``lane``."""
        name = lane.provider.name
        body = lane.provider.encode(request)
        remembered = self.memory.recall(name, body, request)
        if remembered is not None:
            return remembered
        key = (name, body)
        flight = self._flights.get(key)
        if flight is None:
            flight = self._flights[key] = _Flight(key, lane, request, body, max_retries)
            caller = self._add(flight, request, deadline)
            self._launch(flight, tg)
        else:
            caller = self._add(flight, request, deadline)
        try:
            return await caller.future
        except asyncio.CancelledError:
            self._leave(flight, caller)
            raise

    def _launch(self, flight: _Flight, tg: anyio.abc.TaskGroup) -> None:
        lane = flight.lane
        name = lane.provider.name
        if name not in self._stores:
            self._stores[name] = _store_of(lane)
        store = self._stores[name]
        if store is None:
            self._submit(flight, tg, self._answered)
        else:
            tg.start_soon(self._fly, flight, store, tg)

    def _submit(
        self,
        flight: _Flight,
        tg: anyio.abc.TaskGroup,
        answered: Callable[[_Flight, _Job, Persona | None, PersonaError | None], None],
    ) -> None:
        def deliver(job: _Job, persona: Persona | None, error: PersonaError | None) -> None:
            if error is not None and job.attempts == 0 and not job.abandoned:
                # Never sent (its time ran out, say): callers with later deadlines go on.
                waiting = flight.waiting()
                if any(c.ends > job.deadline + _SLACK for c in waiting):
                    for caller in waiting:
                        if caller.ends <= job.deadline + _SLACK:
                            _fail(caller, _copy_error(error, caller))
                    return self._submit(flight, tg, answered)
            answered(flight, job, persona, error)

        left = flight.ends - self._clock()
        flight.job = flight.lane.submit(
            flight.request,
            deliver,
            tg,
            deadline=left if left > 0 else 1e-3,
            max_retries=flight.max_retries,
        )

    async def _fly(self, flight: _Flight, store: FlightStore, tg: anyio.abc.TaskGroup) -> None:
        """A flight through a shared store: it may be answered by another process."""
        lane = flight.lane
        loop = asyncio.get_running_loop()

        async def send() -> Persona:
            answer: asyncio.Future[Persona] = loop.create_future()

            def answered(f: _Flight, job: _Job, p: Persona | None, e: PersonaError | None) -> None:
                if e is not None:
                    answer.set_exception(e)
                else:
                    assert p is not None
                    answer.set_result(p)

            self._submit(flight, tg, answered)
            return await answer

        def made(persona_id: str, provider_task_id: str | None) -> Persona:
            r = flight.request
            return Persona(
                persona_id, lane.provider.name, r.task_id, r.audio_id, r.name, r.description,
                provider_task_id,
            )  # fmt: skip

        scope = flight.scope = anyio.CancelScope()
        persona: Persona | None = None
        error: PersonaError | None = None
        try:
            with scope:
                try:
                    persona = await store.once(
                        flight.body,
                        send,
                        remember_for=self.memory.remember_for,
                        time_left=lambda: flight.ends - self._clock(),
                        made=made,
                    )
                except PersonaError as err:
                    error = err
        except BaseException:  # the client is closing: nobody is left waiting for nothing
            closed = PersonaError("the client was closed", provider=lane.provider.name)
            self._answered(flight, flight.job, None, closed)
            raise
        if scope.cancelled_caught:  # every caller left before anything was sent
            self._flights.pop(flight.key, None)
            return
        self._answered(flight, flight.job, persona, error)

    # -- answers -------------------------------------------------------------------------------

    def _answered(
        self, flight: _Flight, job: _Job | None, persona: Persona | None, error: PersonaError | None
    ) -> None:
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
        name = flight.lane.provider.name
        if persona is not None:
            self.memory.remember(name, flight.body, persona)
        waiting = flight.waiting()
        for caller in waiting:
            if caller.timer is not None:
                caller.timer.cancel()
        if not waiting:
            if job is not None:
                report_orphan(name, job, persona, error, self._on_orphan)
            return
        for i, caller in enumerate(waiting):
            if error is not None:
                caller.future.set_exception(error if i == 0 else _copy_error(error, caller))
            else:
                assert persona is not None
                caller.future.set_result(as_asked(persona, caller.request))

    def _expire(self, flight: _Flight, caller: _Caller) -> None:
        """A caller's deadline came before the shared request's answer."""
        caller.timer = None
        if caller.future.done():
            return
        job = flight.job
        if job is not None and not job.done and job.deadline <= caller.ends + _SLACK:
            return  # the lane answers by then (an attempt's timeout is the time left)
        sent = job is not None and (job.attempts > 0 or job.on_wire)
        if sent:
            error: PersonaError = ProviderTimeoutError(
                "the call's deadline passed while an identical request, sent for another "
                "caller, was still unanswered: it may still create a persona. Calling again "
                "joins it, or returns the persona it made",
                sent=True,
                retryable=True,
                provider=flight.lane.provider.name,
            )
        elif job is not None:
            error = flight.lane.why_unsent(job)
        else:
            error = ProviderTimeoutError(
                "the call's deadline passed while an identical request was in flight in "
                "another process sharing the lane's limiter: it was not sent from here",
                sent=False,
                retryable=True,
                provider=flight.lane.provider.name,
            )
        error.task_id, error.audio_id = caller.request.task_id, caller.request.audio_id
        error.attempts = 0
        _fail(caller, error)
        if not flight.waiting():
            self._abandon(flight)

    def _leave(self, flight: _Flight, caller: _Caller) -> None:
        """A caller was cancelled; the flight goes on while anyone waits for it."""
        if caller.timer is not None:
            caller.timer.cancel()
        future = caller.future
        if future.done() and not future.cancelled():
            # Answered, then cancelled before the answer could be returned.
            error = future.exception()
            persona = None if error is not None else future.result()
            assert error is None or isinstance(error, PersonaError)
            if flight.job is not None:
                report_orphan(
                    flight.lane.provider.name, flight.job, persona, error, self._on_orphan
                )
            return
        if not flight.waiting():
            self._abandon(flight)

    def _abandon(self, flight: _Flight) -> None:
        if flight.job is not None:
            flight.lane.abandon(flight.job)  # sent: it runs on, and what it makes is kept
        elif flight.scope is not None:
            flight.scope.cancel()  # still waiting for another process: nothing was sent

    async def aclose(self) -> None:
        stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            if store is not None:
                await store.aclose()


def _fail(caller: _Caller, error: PersonaError) -> None:
    if caller.timer is not None:
        caller.timer.cancel()
        caller.timer = None
    if not caller.future.done():
        caller.future.set_exception(error)


def _store_of(lane: Lane) -> FlightStore | None:
    """The lane's cross-process store, if its shared limiter offers one."""
    flights_for = getattr(lane.provider.limiter, "flights_for", None)
    if flights_for is None:
        return None
    store: FlightStore = flights_for(lane.provider, lane.limiter)
    return store


def _copy_error(error: PersonaError, caller: _Caller) -> PersonaError:
    """Each caller raises its own copy: one exception raised in many tasks tangles tracebacks."""
    clone = copy.copy(error)
    clone.__cause__ = error.__cause__
    clone.task_id, clone.audio_id = caller.request.task_id, caller.request.audio_id
    return clone
