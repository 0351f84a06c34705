"""One batch run: input lines in, journal records out, through one ``PersonaClient``.

The order of events for one item, and why a completed create is never sent twice:

1. The reader decides from the journal whether the item is sent at all (resume rules below) and
   hands it to ``create_many``, which pulls lazily.
2. ``on_send`` writes the item's ``pending`` record right before its first request goes out;
   an item that is never sent has no record and is sent by the next run.
3. Its outcome (``created``/``exists``/``failed``) is written as soon as it is known.

So after ``kill -9`` at any instant, an item whose last record is ``pending`` may have reached the
provider; on resume the sunoapi.org family sends it again (its 409 turns a second create into
``exists``) and crun, which detects no duplicates, records it as ``OutcomeUnknownError`` instead
unless ``--resend-unknown`` says otherwise.

Interruption: the first SIGINT/SIGTERM closes the gate (each lane's admission point, where a
shared limiter would fail closed), so nothing more is sent while requests on the wire finish,
for at most ``grace`` seconds. Then the client is closed: a request still on the wire is
recorded as ``OutcomeUnknownError``, one waiting for a retry as not sent. A second signal aborts
at once, leaving the ``pending`` records for the next run to judge.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, Literal, TextIO

import anyio
import anyio.abc
import anyio.lowlevel

from .._client import PersonaClient
from .._exceptions import (
    AuthenticationError,
    FeatureDisabledError,
    InsufficientCreditsError,
    InvalidRequestError,
    NotFoundError,
    OutcomeUnknownError,
    PersonaError,
    PersonaExistsError,
    _MaybeSent,
)
from .._lane import LaneState, LaneStats
from .._models import Outcome, PersonaRequest
from .._providers import Provider
from .._ratelimit import LaneLimiter, SharedLimiter, SlidingWindowLimiter, Start
from ._input import Input, Invalid, Item
from ._journal import ErrorInfo, Journal, State
from ._progress import Progress
from ._summary import Tally, render_summary

__all__ = ["DEFAULT_GRACE", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "Batch", "Gate"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
#: Seconds the first Ctrl-C waits for requests on the wire before giving up on them.
DEFAULT_GRACE = 30.0
# The reader yields to the event loop this often while it skips settled items, so signals
# and the progress line are served during a long resume.
_CHECKPOINT_EVERY = 256
_TICK = 0.2
# After closing the client at the end of the grace period: how long its last outcomes may take
# to come out before the run stops without them (their records then stay pending).
_DRAIN = 2.0

# Failures that say nothing about the item itself: the account, the key or the endpoint was
# wrong, so the next run (after the user fixes it) sends the item again.
_ACCOUNT_WIDE = (AuthenticationError, InsufficientCreditsError, NotFoundError, FeatureDisabledError)


class _Interrupted(PersonaError):
    """The run was interrupted before this request was sent (again)."""


# The record of an item whose earlier attempt got an answer (a 429, a 455) and whose retry
# was not sent because the run was interrupted: nothing of it is on the wire.
_NOT_SENT_AGAIN = ErrorInfo(
    "Interrupted",
    None,
    "not sent again: the run was interrupted while this request waited for a retry; running "
    "the same command again sends it",
    True,
)


class Gate:
    """A ``SharedLimiter`` that keeps each lane's own sliding window and can stop admission.

    Once ``close()`` is called every lane's next ``acquire()`` fails, so the lane finishes that
    request unsent (the same path as a shared limiter whose store is down).
    """

    def __init__(self, shared: Mapping[str, SharedLimiter] | None = None) -> None:
        self.closed = False
        self._shared = dict(shared or {})  # lane name -> a limiter shared across processes

    def close(self) -> None:
        self.closed = True

    def for_lane(self, provider: Provider) -> LaneLimiter:
        inner: LaneLimiter
        if provider.name in self._shared:
            inner = self._shared[provider.name].for_lane(provider)
        else:
            assert provider.rate_limit is not None  # the config always sets one
            inner = SlidingWindowLimiter(provider.rate_limit, provider.rate_period)
        return _GatedLimiter(self, inner, provider.name)


class _GatedLimiter:
    __slots__ = ("_gate", "_inner", "_lane")

    def __init__(self, gate: Gate, inner: LaneLimiter, lane: str) -> None:
        self._gate = gate
        self._inner = inner
        self._lane = lane

    @property
    def limit(self) -> int | None:
        return self._inner.limit

    @property
    def learned(self) -> int | None:
        return self._inner.learned

    async def acquire(self) -> Start:
        self._check()
        stamp = await self._inner.acquire()
        self._check()  # the wait for the window may have been long
        return stamp

    def sent(self, start: Start) -> None:
        self._inner.sent(start)

    def _check(self) -> None:
        if self._gate.closed:
            raise _Interrupted(
                "not sent: the run was interrupted; running the same command again sends it",
                provider=self._lane,
                retryable=True,
            )

    async def throttled(self, start: Start) -> float:
        return await self._inner.throttled(start)

    def succeeded(self, start: Start) -> None:
        self._inner.succeeded(start)

    async def hold(self, state: Literal["cooling", "paused"], seconds: float) -> None:
        await self._inner.hold(state, seconds)

    async def aclose(self) -> None:
        await self._inner.aclose()


class Batch:
    """Runs ``entries`` through a client built from ``providers``; ``await run()`` -> exit code."""

    def __init__(
        self,
        *,
        providers: Sequence[Provider],
        client_options: Mapping[str, Any],
        entries: Input,
        journal: Journal,
        gate: Gate,
        resend_unknown: bool = False,
        grace: float = DEFAULT_GRACE,
        progress: bool = False,
        out: TextIO = sys.stdout,
        err: TextIO = sys.stderr,
        on_progress: Callable[[Tally], None] | None = None,
        journal_label: str | None = None,
    ) -> None:
        self._providers = {p.name: p for p in providers}
        self._client_options = client_options
        self._entries = entries
        self._journal = journal
        self._gate = gate
        self._resend_unknown = resend_unknown
        self._grace = grace
        self._out = out
        self._err = err
        self._on_progress = on_progress  # the demo's director watches the run through this
        self._journal_label = journal_label or journal.path
        self.tally = Tally.for_lanes({p.name: p.kind for p in providers})
        self._pulled: dict[int, Item] = {}  # id(request) -> item, from pull to outcome
        self._stopping = False
        self._closing = False  # the grace period is over: the client is being closed
        self._aborted = False
        self._tg: anyio.abc.TaskGroup | None = None
        self._abort_scope: anyio.CancelScope | None = None
        # Set by the first signal; a task in the run's task group then times the grace period
        # (a loop callback cannot start tasks: it runs outside any task).
        self._stop_requested = asyncio.Event()
        self._stats: Mapping[str, LaneStats] = {}
        self._client: PersonaClient | None = None
        self._progress: Progress | None = None
        if progress:
            self._progress = Progress(out, self.tally, entries.count(), self._lane_states)

    # -- the run -------------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        installed = self._install_signals(loop)
        started = time.monotonic()
        try:
            async with PersonaClient(
                list(self._providers.values()), **self._client_options
            ) as client:
                self._client = client
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    tg.start_soon(self._tick)
                    tg.start_soon(self._watch_grace)
                    with anyio.CancelScope() as self._abort_scope:
                        stream = client.create_many(self._requests(), on_send=self._on_send)
                        async with stream:
                            async for outcome in stream:
                                self._settle(outcome)
                    self._stats = client.stats()
                    tg.cancel_scope.cancel()
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
            if self._progress is not None:
                self._progress.clear()
            self._journal.close()
        return self._finish(time.monotonic() - started)

    def _finish(self, elapsed: float) -> int:
        notes = []
        cut_off = sum(1 for item in self._pulled.values() if item.sent)
        if self._aborted and cut_off:
            notes.append(
                f"aborted with {cut_off} request(s) in flight: their records stay 'pending'. "
                "On resume the sunoapi.org family sends them again (a 409 then reads 'exists'); "
                "crun reports them as OutcomeUnknownError unless you pass --resend-unknown."
            )
        not_sent = sum(t.not_sent for t in self.tally.lanes.values())
        not_sent += sum(1 for item in self._pulled.values() if not item.sent)
        if not_sent:
            notes.append(f"{not_sent} item(s) were not sent because the run was interrupted.")
        unknown = self.tally.unknown + self.tally.skipped["unknown"]
        if unknown:
            notes.append(
                f"{unknown} item(s) have an unknown outcome (OutcomeUnknownError): a persona may "
                "or may not exist. Check the provider's dashboard for their audio ids (in the "
                "journal); to send them again, run the same command with --resend-unknown."
            )
        if self._stopping:
            notes.append("interrupted: run the same command again to continue.")
        summary = render_summary(
            self.tally, self._stats, elapsed=elapsed, journal=self._journal_label, notes=notes
        )
        self._print(summary, self._out)
        if self._stopping:
            return EXIT_INTERRUPTED
        return EXIT_OK if self.tally.all_succeeded else EXIT_FAILED

    async def _tick(self) -> None:
        while True:
            self._journal.sync_if_due()
            if self._progress is not None:
                self._progress.draw()
            if self._on_progress is not None:
                self._on_progress(self.tally)
            await anyio.sleep(_TICK)

    def _lane_states(self) -> Mapping[str, LaneState]:
        if self._client is None:
            return {}
        return {name: stats.state for name, stats in self._client.stats().items()}

    # -- reading: what to send ------------------------------------------------------------------

    async def _requests(self) -> AsyncIterator[PersonaRequest]:
        for count, entry in enumerate(self._entries, start=1):
            if count % _CHECKPOINT_EVERY == 0:
                await anyio.lowlevel.checkpoint()
            if self._stopping:
                return
            if isinstance(entry, Invalid):
                self._invalid(entry)
            elif self._admit(entry):
                self._pulled[id(entry.request)] = entry
                yield entry.request

    def _admit(self, item: Item) -> bool:
        """Apply the resume rules; True when ``item`` is to be sent."""
        state = self._journal.resume.take(item.key)
        if state is None:
            what = "id" if item.id is not None else "provider, task_id and audio_id"
            self._invalid(
                Invalid(
                    item.line,
                    "id" if item.id is not None else "audio_id",
                    f"duplicate: an earlier line has the same {what}; it is sent once",
                    id=item.id,
                    provider=item.lane,
                    task_id=item.request.task_id,
                    audio_id=item.request.audio_id,
                )
            )
            return False
        tally = self.tally
        if state in (State.NEW, State.RETRY):
            return True
        if state is State.RETRY_SENT:
            item.sent_before = True
            return True
        if state is State.DONE:
            tally.skipped["done"] += 1
        elif state is State.FAILED:
            tally.skipped["failed"] += 1
        elif self._resend_unknown or (state is State.PENDING and self._resends(item.lane)):
            item.sent_before = True
            return True
        elif state is State.UNKNOWN:
            tally.skipped["unknown"] += 1
        else:  # PENDING on a provider that would make a second persona
            provider = self._providers[item.lane]
            request = item.request
            message = (
                "an earlier run sent this request and stopped before its outcome was recorded; "
                f"a persona may or may not exist. {provider.kind} documents no duplicate "
                "detection, so it was not sent again: check the provider's dashboard for a "
                f"persona of audio_id {request.audio_id!r} (task_id {request.task_id!r}); if "
                "there is none, run the same command with --resend-unknown"
            )
            error = ErrorInfo("OutcomeUnknownError", None, message, False)
            self._journal.outcome(item, "failed", error=error)
            tally.lane(item.lane).failed["OutcomeUnknownError"] += 1
            tally.unknown += 1
        tally.done += 1
        return False

    def _resends(self, lane: str) -> bool:
        provider = self._providers[lane]
        return provider.detects_duplicates or provider.retry_ambiguous

    def _invalid(self, entry: Invalid) -> None:
        known = self._journal.resume.invalid_lines
        self.tally.done += 1
        if entry.line in known and known[entry.line] == entry.key:
            self.tally.skipped["invalid"] += 1  # reported by an earlier run
            return
        self._journal.invalid(entry)
        self.tally.lane(entry.provider).invalid += 1

    # -- sending and outcomes -------------------------------------------------------------------

    def _on_send(self, request: PersonaRequest) -> None:
        item = self._pulled[id(request)]
        self._journal.pending(item)  # on disk before the request can go out
        item.sent = True

    def _settle(self, outcome: Outcome) -> None:
        item = self._pulled.pop(id(outcome.request))
        lane = self.tally.lane(item.lane)
        persona, err = outcome.persona, outcome.error
        attempts = outcome.attempts
        if persona is not None:
            self._journal.outcome(
                item, "created", persona_id=persona.persona_id, attempts=attempts
            )
            lane.created += 1
        elif isinstance(err, _Interrupted) or (self._closing and type(err) is PersonaError):
            lane.not_sent += 1
            if item.sent:  # its pending record must not outlive it: nothing is on the wire
                self._journal.outcome(item, "failed", error=_NOT_SENT_AGAIN, attempts=attempts)
            return
        elif isinstance(err, PersonaExistsError):
            info = self._info(err, False)
            if item.sent_before and not err.after_ambiguous_attempt:
                info.message += (
                    "; an earlier run sent this item and did not see it succeed, so that "
                    "attempt may have created this persona"
                )
            self._journal.outcome(item, "exists", error=info, attempts=attempts)
            lane.exists += 1
        elif isinstance(err, InvalidRequestError) and not attempts:
            self._invalid(
                Invalid(
                    item.line,
                    err.field,
                    err.message,
                    id=item.id,
                    provider=item.lane,
                    task_id=item.request.task_id,
                    audio_id=item.request.audio_id,
                )
            )
            return
        else:
            assert err is not None
            info = self._info(err, self._retryable(err, item, attempts))
            if isinstance(err, OutcomeUnknownError) and not info.retryable:
                info.message += "; to send it again, run the same command with --resend-unknown"
                self.tally.unknown += 1
            elif isinstance(err, _MaybeSent) and err.sent:  # lost after sending
                info.message += "; it may have reached the provider, so a persona may exist" + (
                    " (running the same command again settles it)" if info.retryable else ""
                )
            self._journal.outcome(item, "failed", error=info, attempts=attempts)
            lane.failed[type(err).__name__] += 1
        self.tally.done += 1
        if attempts:
            self.tally.answered += 1

    def _retryable(self, err: PersonaError, item: Item, attempts: int) -> bool:
        """Whether the next run sends the item again (the journal's ``retryable``)."""
        if isinstance(err, OutcomeUnknownError):
            return self._resends(item.lane)  # a resend can only come back as 409 there
        if err.retryable or isinstance(err, _ACCOUNT_WIDE):
            return True
        if isinstance(err, _MaybeSent) and not err.sent:
            return True  # this attempt never left (the deadline passed, TLS refused): harmless
        return attempts == 0 and not item.sent  # never reached the provider

    def _info(self, err: PersonaError, retryable: bool) -> ErrorInfo:
        message = err.message
        for provider in self._providers.values():
            message = provider.redact(message)
        return ErrorInfo(type(err).__name__, err.code, message, retryable)

    # -- signals --------------------------------------------------------------------------------

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[int]:
        installed: list[int] = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            # Not available on Windows; Ctrl-C then aborts through KeyboardInterrupt.
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self._on_signal, signum, loop)
                installed.append(signum)
        return installed

    def _on_signal(self, signum: int, loop: asyncio.AbstractEventLoop) -> None:
        if self._stopping:
            self._abort()
            return
        self._stopping = True
        self._gate.close()
        in_flight = sum(1 for item in self._pulled.values() if item.sent)
        self._print(
            f"persona-async: {signal.Signals(signum).name}: stopping. Nothing more is sent; "
            f"waiting up to {self._grace:g}s for {in_flight} request(s) in flight. "
            "Press Ctrl-C again to abort now.",
            self._err,
        )
        self._stop_requested.set()

    async def _watch_grace(self) -> None:
        await self._stop_requested.wait()
        await anyio.sleep(self._grace)
        if not self._aborted:
            await self._close_early()

    async def _close_early(self) -> None:
        in_flight = sum(1 for item in self._pulled.values() if item.sent)
        self._print(
            f"persona-async: grace period over: closing; {in_flight} request(s) still open",
            self._err,
        )
        self._closing = True
        assert self._client is not None
        # Every request still open gets its outcome now and the loop writes it; the stream
        # then ends by itself and cancels this task.
        await self._client.aclose()
        await anyio.sleep(_DRAIN)
        self._abort()

    def _abort(self) -> None:
        self._aborted = True
        if self._abort_scope is not None:
            self._abort_scope.cancel()

    def _print(self, text: str, stream: TextIO) -> None:
        if self._progress is not None:
            self._progress.clear()
        with contextlib.suppress(BrokenPipeError):
            print(text, file=stream, flush=True)
