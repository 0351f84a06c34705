"""How a batch run reads its input: which lines are sent, skipped or recorded as invalid.

The resume rules (``_journal_records.sent_again``) decide, from the state the earlier runs left
in the journal, whether each item is sent; a duplicate or invalid line is recorded once. A mixin
of ``Batch`` (``_batch``), which sets up the state it reads and changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import anyio
import anyio.lowlevel
import msgspec

from .._models import PersonaRequest
from .._providers import Provider
from ._input import Input, InputError
from ._items import Invalid, Item, duplicate
from ._journal import Journal
from ._journal_records import ErrorInfo, State, sent_again
from ._pipe import threaded
from ._summary import Tally

__all__ = ["BatchReading"]

# The reader yields to the event loop this often while it skips settled items, so signals
# and the progress line are served during a long resume.
_CHECKPOINT_EVERY = 256
# Invalid lines the summary names (the journal and ``validate`` have them all).
_INVALID_SHOWN = 3


class BatchReading:
    """The reading half of ``Batch``: what to send (a mixin)."""

    # Set up by Batch.__init__.
    tally: Tally
    _entries: Input
    _reading: Iterator[Item | Invalid]
    _lines_read: int
    _last_line: int
    _journal: Journal
    _providers: dict[str, Provider]
    _resend_unknown: bool
    _pulled: dict[int, Item]
    _stopping: bool
    _unreadable: InputError | None
    _invalid_shown: list[Invalid]

    async def _requests(self) -> AsyncIterator[PersonaRequest]:
        """The items to send; a read error ends them, as the end of the input would: what was
        read is sent, and ``_finish`` says where reading stopped."""
        try:
            async for request in self._read_requests():
                yield request
        except InputError as exc:  # a read error, or stdin in UTF-16
            self._unreadable = exc

    async def _read_requests(self) -> AsyncIterator[PersonaRequest]:
        lines = self._entries.blocking_lines
        if lines is None:  # a file: its reads return at once
            for entry in self._reading:
                if self._stopping:  # this entry counts among the unread ones
                    return
                if self._lines_read % _CHECKPOINT_EVERY == 0:
                    await anyio.lowlevel.checkpoint()
                if (item := self._read(entry)) is not None:
                    yield item.request
        else:  # stdin, a FIFO: read off the event loop, which a waiting read would stop
            async with contextlib.aclosing(threaded(self._reading, lines)) as entries:
                async for entry in entries:
                    if self._stopping:
                        return
                    if self._lines_read % _CHECKPOINT_EVERY == 0:
                        await anyio.lowlevel.checkpoint()
                    if (item := self._read(entry)) is not None:
                        yield item.request

    def _read(self, entry: Item | Invalid) -> Item | None:
        """Count ``entry`` as read; the item if it is to be sent."""
        self._lines_read += 1
        self._last_line = entry.line
        if isinstance(entry, Invalid):
            self._invalid(entry)
        elif self._admit(entry):
            self._pulled[id(entry.request)] = entry
            return entry
        return None

    def _admit(self, item: Item) -> bool:
        """Apply the resume rules; True when ``item`` is to be sent."""
        resume = self._journal.resume
        state = resume.take(item.key, item.line)
        if state is None:
            self._invalid(duplicate(item, resume.first_line(item.key)))
            return False
        tally = self.tally
        if self._sends(item, state):
            item.sent_before = state is not State.NEW and state is not State.RETRY
            task_id = resume.task_ids.get(item.key)
            if task_id is not None:  # submitted by an earlier run: poll it, never resubmit
                item.request = msgspec.structs.replace(item.request, provider_task_id=task_id)
                self._polling(item)
            return True
        if state is State.DONE:
            tally.skipped["done"] += 1
        elif state is State.FAILED:
            tally.skipped["failed"] += 1
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

    def _sends(self, item: Item, state: State) -> bool:
        """Whether an item left in ``state`` by the earlier runs is sent by this one."""
        return sent_again(
            state, resends_pending=self._resends(item.lane), resend_unknown=self._resend_unknown
        )

    def _resends(self, lane: str) -> bool:
        provider = self._providers[lane]
        return provider.detects_duplicates or provider.retry_ambiguous

    def _invalid(self, entry: Invalid, *, own: bool = False) -> None:
        """Record an invalid line. Unless it is the record of the item itself (``own``), a line
        sharing the identity of a valid item is written without that identity, so it never
        becomes the last record, the state, of that item."""
        resume = self._journal.resume
        key = entry.key
        if not own and key is not None and resume.known(key):
            entry = entry.detached()
        known = resume.invalid_lines
        self.tally.done += 1
        if entry.line in known and known[entry.line] in (key, entry.key):
            self.tally.skipped["invalid"] += 1  # reported by an earlier run
            return
        self._journal.invalid(entry)
        self.tally.lane(entry.provider).invalid += 1
        if len(self._invalid_shown) < _INVALID_SHOWN:
            self._invalid_shown.append(entry)

    def _polling(self, item: Item) -> None:
        item.polled = True
        self.tally.tasks_running += 1
