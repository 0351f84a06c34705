"""One batch run: input lines in, journal records out, through one ``PersonaClient``.

The order of events for one item, and why a completed create is never sent twice:

1. The reader decides from the journal whether the item is sent at all (resume rules below) and
   hands it to ``create_many``, which pulls lazily.
2. ``on_send`` writes the item's ``pending`` record when its first request is about to go out,
   and the request waits until that record is on stable storage (one sync shared by everything
   about to go out: the journal's group commit). An item that is never sent has no record and
   is sent by the next run.
3. Its outcome (``created``/``exists``/``failed``) is written as soon as it is known.

So after ``kill -9`` or a power cut at any instant, an item whose last record is ``pending`` may
have reached the provider, and an item that reached the provider has a ``pending`` record; on
resume the sunoapi.org family sends it again (its 409 turns a second create into ``exists``)
and crun, which detects no duplicates, records it as ``OutcomeUnknownError`` instead unless
``--resend-unknown`` says otherwise. A resumed run first counts the dead run's sends of the
last ``rate_period`` against each lane's window (``Gate``).

Stopping: the first SIGINT/SIGTERM, or a journal that stops accepting records (disk full, an
I/O error, the file removed), closes the gate (each lane's admission point), so nothing more is
sent, not even what was waiting for the window. The run waits for requests on the wire only,
for at most ``grace`` seconds, and ends as soon as none is left. Then the client is closed: a
request still on the wire is recorded as ``OutcomeUnknownError``, one waiting for a retry as not
sent. A second signal aborts at once, leaving the ``pending`` records for the next run to judge.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, TextIO

import anyio
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
    ProviderTimeoutError,
    _MaybeSent,
)
from .._lane import LaneStats
from .._models import Outcome, PersonaRequest
from .._providers import Provider
from ._batch_reading import BatchReading
from ._batch_stopping import BatchStopping
from ._exists import name_existing
from ._gate import Gate, Interrupted
from ._input import Input, InputError
from ._items import Invalid, Item
from ._journal import Journal, JournalWriteError
from ._journal_records import ErrorInfo
from ._progress import Progress, Terminal
from ._report import Report, journal_error
from ._summary import Tally, render_summary

__all__ = [
    "DEFAULT_GRACE",
    "EXIT_FAILED",
    "EXIT_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_JOURNAL",
    "EXIT_OK",
    "Batch",
]

EXIT_OK = 0
EXIT_FAILED = 1
#: The journal could not be written (at start, or mid-run: disk full, I/O error, removed).
EXIT_JOURNAL = 2
#: The input failed while being read (an I/O error, a terminal that hung up).
EXIT_INPUT = 2
EXIT_INTERRUPTED = 130
#: Seconds the first Ctrl-C waits for requests on the wire before giving up on them.
DEFAULT_GRACE = 30.0
_TICK = 0.2

# Failures that say nothing about the item itself: the account, the key or the endpoint was
# wrong, so the next run (after the user fixes it) sends the item again.
_ACCOUNT_WIDE = (AuthenticationError, InsufficientCreditsError, NotFoundError, FeatureDisabledError)

# The record of an item whose earlier attempt got an answer (a 429, a 455) and whose retry
# was not sent because the run was interrupted: nothing of it is on the wire.
_NOT_SENT_AGAIN = ErrorInfo(
    "Interrupted",
    None,
    "not sent again: the run was stopped while this request waited for a retry; running "
    "the same command again sends it",
    True,
)


class Batch(BatchReading, BatchStopping):
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
        terminal: Terminal | None = None,
        err: TextIO = sys.stderr,
        on_progress: Callable[[Tally], None] | None = None,
        journal_label: str | None = None,
    ) -> None:
        self._providers = {p.name: p for p in providers}
        self._client_options = client_options
        self._entries = entries
        self._reading: Iterator[Item | Invalid] = iter(entries)
        self._lines_read = 0  # entries read (non-blank lines)
        self._last_line = 0  # the line number of the last entry read
        self._journal = journal
        self._gate = gate
        self._resend_unknown = resend_unknown
        self._grace = grace
        self._terminal = terminal or Terminal(sys.stdout, live=False)
        self._err = err
        self._on_progress = on_progress  # the demo's director watches the run through this
        self._journal_label = journal_label or journal.path
        self.tally = Tally.for_lanes({p.name: p.kind for p in providers})
        self._pulled: dict[int, Item] = {}  # id(request) -> item, from pull to outcome
        self._stopping = False
        self._signalled = False  # stopped by a signal (exit 130) rather than by the journal
        self._on_wire_left: int | None = None  # while stopping: requests still on the wire
        self._closing = False  # the grace period is over: the client is being closed
        self._aborted = False
        self._abort_scope: anyio.CancelScope | None = None
        # Set when the run must stop; a task in the run's task group then waits for the
        # requests on the wire (a loop callback cannot start tasks: it runs outside any task).
        self._stop_requested = asyncio.Event()
        self._stop_reason = ""
        self._stop_then = ""
        self._stop_said = False
        self._stats: Mapping[str, LaneStats] = {}
        self._unreadable: InputError | None = None  # the input failed mid-read
        self._invalid_shown: list[Invalid] = []  # the first invalid lines, for the summary
        self._client: PersonaClient | None = None
        self._total = entries.count() if self._terminal.live or on_progress else None
        self._progress = Progress(self.tally, self._total, self._lane_stats,
                                  stopping=self._stopping_words)  # fmt: skip
        journal.on_failure = self._on_journal_failure

    # -- the run -------------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        installed = self._install_signals(loop)
        started = time.monotonic()
        journal_start = self._journal.size  # this run's records come after it
        self._terminal.show(self._progress.line)
        try:
            async with PersonaClient(
                list(self._providers.values()), **self._client_options
            ) as client:
                self._client = client
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._journal.run_syncs)
                    tg.start_soon(self._tick)
                    tg.start_soon(self._watch_stop)
                    with anyio.CancelScope() as self._abort_scope:
                        stream = client.create_many(
                            self._requests(), on_send=self._on_send, on_submitted=self._submitted
                        )
                        async with stream:
                            async for outcome in stream:
                                self._settle(outcome)
                    self._stats = client.stats()
                    tg.cancel_scope.cancel()
                if self._stopping:  # the run ended before the watcher could say so
                    self._say_stopping(0)
            if self.tally.exists_no_id and not self._aborted:
                self.tally.exists_no_id -= await name_existing(self._journal, journal_start)
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
            self._terminal.show(None)
            self._journal.close()
        return self._finish(time.monotonic() - started)

    def _finish(self, elapsed: float) -> int:
        cut_off = sum(1 for item in self._pulled.values() if item.sent)
        not_sent, rest_uncounted = self._not_sent() if self._stopping else (0, False)
        report = Report(
            self.tally,
            self._entries.name,
            self._entries.format,
            lines_read=self._lines_read,
            aborted_in_flight=cut_off if self._aborted else 0,
            stopped=self._stopping,
            not_sent=not_sent,
            rest_uncounted=rest_uncounted,
            signalled=self._signalled,
            unreadable=self._unreadable,
            invalid_shown=self._invalid_shown,
        )
        summary = render_summary(
            self.tally, self._stats, elapsed=elapsed, journal=self._journal_label,
            notes=report.notes(),
        )  # fmt: skip
        self._terminal.say(summary)
        if (said := report.input_error()) is not None:
            self._terminal.say(said, self._err)
        failed = self._journal.failed
        if failed is not None:
            self._terminal.say(
                journal_error(self._journal.path, failed, self._journal.lost), self._err
            )
            return EXIT_JOURNAL
        if self._signalled:
            return EXIT_INTERRUPTED
        if self._unreadable is not None:
            return EXIT_INPUT
        return EXIT_OK if self.tally.all_succeeded else EXIT_FAILED

    def _not_sent(self) -> tuple[int, bool]:
        """How many items of the input this run left unsent, read or not, and True when the
        rest of the input cannot be counted (stdin)."""
        not_sent = sum(t.not_sent for t in self.tally.lanes.values())
        not_sent += sum(
            1
            for item in self._pulled.values()
            if not item.sent and item.request.provider_task_id is None  # a task is polled
        )
        total = self._total if self._total is not None else self._entries.count()
        if total is None:
            return not_sent, True
        # The rest of the input, not parsed (that could take long): its lines, less the items
        # and lines the journal already settles.
        resume = self._journal.resume
        unread = max(total - self._lines_read, 0)
        settled = resume.settled_unread() + sum(
            1 for line in resume.invalid_lines if line > self._last_line
        )
        return not_sent + max(unread - settled, 0), False

    async def _tick(self) -> None:
        while True:
            self._journal.tick()
            self._terminal.draw()
            if self._on_progress is not None:
                self._on_progress(self.tally)
            await anyio.sleep(_TICK)

    def _lane_stats(self) -> Mapping[str, LaneStats]:
        return {} if self._client is None else self._client.stats()

    # -- sending and outcomes -------------------------------------------------------------------

    def _on_send(self, request: PersonaRequest) -> Awaitable[None]:
        item = self._pulled[id(request)]
        try:
            self._journal.pending(item)
        except JournalWriteError:
            raise self._unrecorded(item) from None
        item.sent = True  # from here on it may reach the provider
        return self._durable(item)

    def _submitted(self, request: PersonaRequest, provider_task_id: str) -> None:
        item = self._pulled[id(request)]
        self._journal.submitted(item, provider_task_id)
        self._polling(item)

    async def _durable(self, item: Item) -> None:
        try:
            await self._journal.durable()  # the pending record is on stable storage
        except JournalWriteError:
            raise self._unrecorded(item) from None

    def _unrecorded(self, item: Item) -> Interrupted:
        return Interrupted(
            "not sent: the journal could not record it; running the same command again (once "
            "the journal can be written) sends it",
            provider=item.lane,
            retryable=True,
        )

    def _settle(self, outcome: Outcome) -> None:
        item = self._pulled.pop(id(outcome.request))
        if item.polled:
            self.tally.tasks_running -= 1
        lane = self.tally.lane(item.lane)
        persona, err = outcome.persona, outcome.error
        attempts = outcome.attempts
        if persona is not None:
            self._journal.outcome(
                item, "created", persona_id=persona.persona_id, attempts=attempts,
                provider_task_id=persona.provider_task_id,
            )  # fmt: skip
            lane.created += 1
        elif self._stopped_before_answer(err) and (
            outcome.provider_task_id or item.request.provider_task_id
        ):
            # Submitted to an async-task provider: the task runs there whatever this run does,
            # and its last record (``submitted``) makes the next run poll it, never resubmit.
            lane.running += 1
            return
        elif self._stopped_before_answer(err):
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
            self.tally.exists_no_id += 1  # until the journal names it (``name_existing``)
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
                ),
                own=True,
            )
            return
        else:
            assert err is not None
            info = self._info(err, self._next_run_retries(err, item, attempts))
            if isinstance(err, OutcomeUnknownError) and not info.next_run_retries:
                info.message += "; to send it again, run the same command with --resend-unknown"
                self.tally.unknown += 1
            elif isinstance(err, _MaybeSent) and err.sent:  # lost after sending
                info.message += "; it may have reached the provider, so a persona may exist" + (
                    " (running the same command again settles it)" if info.next_run_retries else ""
                )
            self._journal.outcome(
                item, "failed", error=info, attempts=attempts,
                provider_task_id=err.provider_task_id,
            )  # fmt: skip
            lane.failed[type(err).__name__] += 1
        self.tally.done += 1
        if attempts:
            self.tally.answered += 1

    def _stopped_before_answer(self, err: PersonaError | None) -> bool:
        """``err`` says only that this run stopped before the request was sent (again) or its
        task answered."""
        return isinstance(err, Interrupted) or (self._closing and type(err) is PersonaError)

    def _next_run_retries(self, err: PersonaError, item: Item, attempts: int) -> bool:
        """Whether the next run sends the item again, or polls its task (the journal's
        ``next_run_retries``)."""
        if isinstance(err, OutcomeUnknownError):
            return self._resends(item.lane)  # a resend can only come back as 409 there
        if err.retryable or isinstance(err, _ACCOUNT_WIDE):
            return True
        if isinstance(err, ProviderTimeoutError) and err.provider_task_id:
            return True  # the task outlived the deadline: the next run polls it again
        if isinstance(err, _MaybeSent) and not err.sent:
            return True  # this attempt never left (the deadline passed, TLS refused): harmless
        return attempts == 0 and not item.sent  # never reached the provider

    def _info(self, err: PersonaError, next_run_retries: bool) -> ErrorInfo:
        message = err.message
        for provider in self._providers.values():
            message = provider.redact(message)
        return ErrorInfo(type(err).__name__, err.code, message, next_run_retries)
