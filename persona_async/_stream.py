"""``create_many``'s outcome stream: lazy pull, bounded read-ahead, clean stop.

A feeder task (in the client's task group) pulls requests from the caller's iterable only while
fewer than ``max_pending`` are pulled but not yet yielded, and submits them to their lanes. The
consumer receives an ``Outcome`` per request, in completion order or, with ``ordered=True``, in
input order (the reorder buffer is bounded by the same ``max_pending``).

Breaking out of ``async for`` drops the stream; dropping or closing it stops the feeder and
abandons every request of this stream that has not been sent, synchronously, so nothing is sent
after the loop is left.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING

import anyio

from ._exceptions import PersonaError
from ._models import Created, Failed, Outcome, Persona, PersonaRequest

if TYPE_CHECKING:
    from ._job import _Job

__all__ = ["OutcomeStream"]

Submit = Callable[
    [PersonaRequest, "Callable[[_Job, Persona | None, PersonaError | None], None]", int],
    "_Job | None",
]


class _StreamState:
    # Everything the feeder task and the lanes' callbacks touch. They must not reference the
    # OutcomeStream handle itself, so that dropping the handle (``break``) closes the stream.

    __slots__ = (
        "_closed",
        "_deliver_to",
        "_error",
        "_feeder",
        "_feeder_scope",
        "_free",
        "_input_done",
        "_jobs",
        "_next_seq",
        "_ordered",
        "_pulled",
        "_ready",
        "_reorder",
        "_waiter",
    )

    def __init__(self, *, max_pending: int, ordered: bool) -> None:
        self._ordered = ordered
        self._free = max_pending  # how many more may be pulled before some are yielded
        self._feeder: asyncio.Future[None] | None = None  # the feeder, when it waits for room
        self._ready: deque[Outcome] = deque()  # outcomes the consumer may take now
        self._reorder: dict[int, Outcome] = {}  # ordered mode: finished ahead of their turn
        self._next_seq = 0  # ordered mode: the sequence number to yield next
        self._pulled = 0  # requests taken from the input so far
        self._jobs: dict[int, _Job | None] = {}  # seq -> job not yet finished (abandon on close)
        self._input_done = False
        self._error: BaseException | None = None  # the input iterable raised this
        self._waiter: asyncio.Future[None] | None = None  # the consumer, when parked
        self._feeder_scope = anyio.CancelScope()
        self._deliver_to = self._deliver  # bound once: the lanes call it per request
        self._closed = False

    # -- feeder side (runs in the client's task group) ------------------------------------------

    async def feed(
        self,
        requests: Iterable[PersonaRequest] | AsyncIterable[PersonaRequest],
        submit: Submit,
    ) -> None:
        with self._feeder_scope:
            try:
                if isinstance(requests, AsyncIterable):
                    iterator = aiter(requests)
                    while True:
                        if self._free <= 0:
                            await self._room()
                        if self._closed:  # closed while we waited: pull nothing more
                            break
                        try:
                            request = await anext(iterator)
                        except StopAsyncIteration:
                            break
                        self._submit(request, submit)
                else:
                    sync_iterator = iter(requests)
                    while True:
                        if self._free <= 0:
                            await self._room()  # before pulling: nothing pulled waits
                        if self._closed:
                            break
                        try:
                            request = next(sync_iterator)
                        except StopIteration:
                            break
                        self._submit(request, submit)
            except Exception as exc:  # the caller's iterable failed: tell the consumer
                self._error = exc
            finally:
                self._input_done = True
                self._wake()

    async def _room(self) -> None:
        # Until the consumer has taken an outcome (or the stream is closed).
        self._feeder = asyncio.get_running_loop().create_future()
        try:
            await self._feeder
        finally:
            self._feeder = None

    def _submit(self, request: PersonaRequest, submit: Submit) -> None:
        seq = self._pulled
        self._pulled += 1
        self._free -= 1
        if self._closed:
            return
        self._jobs[seq] = None  # submit() may deliver at once (invalid request, stopped lane)
        job = submit(request, self._deliver_to, seq)
        if seq in self._jobs:
            self._jobs[seq] = job

    def _deliver(self, job: _Job, persona: Persona | None, error: PersonaError | None) -> None:
        """Record the outcome of ``job`` (called once per request); its tag is its number."""
        seq = job.tag if isinstance(job.tag, int) else -1
        self._jobs.pop(seq, None)
        if self._closed:
            return
        # The two constructors inline (not ``outcome_of``): this runs once per request.
        outcome: Outcome
        if persona is not None:
            outcome = Created(job.request, persona, job.attempts)
        else:
            assert error is not None  # every request ends with one of the two
            outcome = Failed(job.request, error, job.attempts)
        if not self._ordered:
            self._ready.append(outcome)
        elif seq == self._next_seq:
            self._ready.append(outcome)
            self._next_seq += 1
            while self._next_seq in self._reorder:
                self._ready.append(self._reorder.pop(self._next_seq))
                self._next_seq += 1
        else:
            self._reorder[seq] = outcome
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next(self) -> Outcome:
        while not self._ready:
            if self._error is not None and not self._jobs:
                # Raised only once every request pulled before the failure has its outcome
                # out: those may have been sent, and may have made personas.
                error, self._error = self._error, None
                self.close()
                raise error
            if self._closed or (self._input_done and not self._jobs):
                self.close()
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._free += 1
        feeder = self._feeder
        if feeder is not None and not feeder.done():
            feeder.set_result(None)
        return self._ready.popleft()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._feeder_scope.cancel()
        for job in self._jobs.values():
            if job is not None:
                job.abandon()
        self._jobs.clear()
        self._ready.clear()
        self._reorder.clear()


Starter = Callable[[_StreamState], Awaitable[None]]


class OutcomeStream:
    """An async iterator of ``Outcome``; also an async context manager that closes it.

    Usage::

        async with client.create_many(requests) as outcomes:
            async for outcome in outcomes:
                ...

    Leaving the loop early (``break``, an exception, cancellation) closes the stream: nothing
    more is pulled from the input and no request that was not already sent is sent.
    """

    __slots__ = ("_start", "_state")

    def __init__(self, *, max_pending: int, ordered: bool, start: Starter) -> None:
        self._state = _StreamState(max_pending=max_pending, ordered=ordered)
        self._start: Starter | None = start  # starts the feeder on first use

    def __aiter__(self) -> OutcomeStream:
        return self

    def __anext__(self) -> Awaitable[Outcome]:
        # Not a coroutine itself: after the first, each outcome costs one coroutine, not two.
        if self._start is not None:
            return self._first()
        return self._state.next()

    async def _first(self) -> Outcome:
        if self._start is not None:
            start, self._start = self._start, None
            await start(self._state)
        return await self._state.next()

    def close(self) -> None:
        """Stop pulling and abandon every request not yet sent. Idempotent and synchronous."""
        self._start = None
        self._state.close()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> OutcomeStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # `break` out of `async for` drops the last reference: stop here, synchronously.
        self._state.close()
