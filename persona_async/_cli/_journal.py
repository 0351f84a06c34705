"""The batch journal: an append-only JSONL file that is both the results and the resume state.

One JSON object per line: ``id``, ``provider``, ``task_id``, ``audio_id``, ``status``,
``persona_id``, ``error``, ``attempts``, ``line`` (``pending`` records add ``sent_at``, the wall
clock when the request was released). The last record of an item is its state. An async-task
provider's submit adds a ``submitted`` record with ``provider_task_id``: from then on the item
is only polled by that id, never submitted again, whatever records follow.

Guarantees:

* **Durable before sending.** An item's ``pending`` record is written and then made durable
  (``fdatasync``) before its first request goes out. Syncs are shared (group commit): every
  record written while one sync runs waits for the next, so a busy run pays one sync per batch
  of requests, not per request. Outcomes are written as soon as they are known and synced with
  the next batch, or within ``sync_interval`` seconds.
* **Never another file.** Opening refuses a file whose first line is not a journal record
  (``JournalError``, file untouched). It repairs only what a crash leaves at the end of a
  journal: one torn last line without its newline, a tail of NUL bytes, or both, and says which.
  Anything else that is not a record (a damaged or edited journal) is refused.
* **Write errors stop the run, not the file.** A write that fails (disk full, EIO) is cut back
  off the file so the journal stays whole; later writes are still tried (outcomes of requests
  on the wire), ``pending`` records are refused, and ``on_failure`` tells the run to stop.

Resuming keeps one int per item identity (a 16-byte digest; the int holds its state and the
line that first had it this run): about 130 bytes per item, ~130 MB for a million.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import os
import stat
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import anyio
import msgspec

from ._input import Invalid, Item, identity_key

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "DEFAULT_SYNC_INTERVAL",
    "ErrorInfo",
    "Journal",
    "JournalError",
    "JournalWriteError",
    "Record",
    "Resume",
    "State",
    "read_resume",
    "sent_again",
]

#: Longest time an outcome record waits for a sync while nothing is being sent.
DEFAULT_SYNC_INTERVAL = 1.0
STATUSES = frozenset({"pending", "submitted", "created", "exists", "failed", "invalid"})
# Every record this module writes starts with these bytes: a first line cut short by a crash
# is recognised by them, so a stranger's one-line file is never taken for a torn journal.
_RECORD_START = b'{"id":'
# fdatasync skips metadata a read does not need; macOS has only fsync.
_datasync = getattr(os, "fdatasync", os.fsync)


class JournalError(Exception):
    """The journal cannot be used (not a journal, locked, damaged, unreadable): exit 2."""


class JournalWriteError(Exception):
    """The journal stopped accepting records (disk full, I/O error, file removed)."""


class ErrorInfo(msgspec.Struct):
    """A record's ``error``.

    ``next_run_retries``: running the same command again takes the item up again (sends it, or
    polls its task); False when the failure stands (or, for ``OutcomeUnknownError``, until
    ``--resend-unknown``). It says nothing about the SDK's ``PersonaError.retryable`` (whether
    the same request could succeed if sent again): an ``AuthenticationError`` is not
    retryable, yet the next run, with the key fixed, sends the item again. Journals written
    by earlier versions call it ``retryable``; ``_ErrorRead`` reads both. ``field`` names the
    field of an ``invalid`` record.
    """

    type: str
    code: int | None
    message: str
    next_run_retries: bool = False
    field: str | None = None


class Record(msgspec.Struct):
    id: str | None
    provider: str | None
    task_id: str | None
    audio_id: str | None
    status: str
    persona_id: str | None = None
    error: ErrorInfo | None = None
    attempts: int = 0
    line: int | None = None


class _TaskRecord(Record):
    #: Async-task providers: the provider's task (``submitted`` and later records).
    provider_task_id: str = ""


class _PendingRecord(Record):
    #: Wall-clock seconds (Unix time) when the request was released: a restart counts it
    #: against the provider's window.
    sent_at: float = 0.0


class _ErrorRead(msgspec.Struct):
    type: str = ""
    next_run_retries: bool = False
    #: The same, in journals written before the field was renamed.
    retryable: bool = False


class _Read(msgspec.Struct):
    # What resuming needs from a record, no more: the rest of the line is skipped unparsed.
    status: str
    id: str | None = None
    provider: str | None = None
    task_id: str | None = None
    audio_id: str | None = None
    error: _ErrorRead | None = None
    attempts: int = 0
    line: int | None = None
    sent_at: float | None = None
    provider_task_id: str | None = None


class State(enum.IntEnum):
    """Where an item stands after the earlier runs (``NEW``: no record)."""

    NEW = 0
    DONE = 1  # created or exists: skip
    FAILED = 2  # failed for good: skip
    PENDING = 3  # sent, no outcome recorded: the process died with it in flight
    RETRY = 4  # failed, the next run retries it; never reached the provider
    RETRY_SENT = 5  # failed, the next run retries it; it reached the provider
    UNKNOWN = 6  # OutcomeUnknownError on a provider without duplicate detection
    SUBMITTED = 7  # an async-task provider took it: poll the task, never submit again


# An identity's value in ``Resume.states``: its State in the low bits, a flag once this run has
# read it, and from then on the line that first had it (for the duplicate message).
_STATE = 0x0F
_SEEN = 0x10
_LINE_SHIFT = 5

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Read).decode
_decode_any = msgspec.json.Decoder().decode


@dataclass(slots=True)
class Resume:
    """What the earlier runs left, in memory: identity digest -> ``State`` (plus this run's
    marks)."""

    states: dict[bytes, int] = field(default_factory=dict)
    #: Line number -> the identity (if any) of an ``invalid`` record: skipped while unchanged.
    invalid_lines: dict[int, bytes | None] = field(default_factory=dict)
    #: Lane -> wall-clock times of the ``pending`` records of the last moments (see
    #: ``Journal.open``'s ``horizon``), for the provider's window.
    recent_sends: dict[str, list[float]] = field(default_factory=dict)
    records: int = 0
    #: Identity -> the provider task an earlier run submitted for it (async-task providers).
    task_ids: dict[bytes, str] = field(default_factory=dict)

    def take(self, key: bytes, line: int) -> State | None:
        """Note that this run has read ``key`` on ``line``; return its state after the earlier
        runs, or None when this run has read it already (a duplicate line)."""
        value = self.states.get(key, 0)
        if value & _SEEN:
            return None
        self.states[key] = value | _SEEN | (line << _LINE_SHIFT)
        return State(value & _STATE)

    def first_line(self, key: bytes) -> int:
        """The line on which this run first read ``key`` (0 when it has not)."""
        return self.states.get(key, 0) >> _LINE_SHIFT

    def known(self, key: bytes) -> bool:
        """An earlier run recorded ``key`` or this run has read it as a valid item."""
        return key in self.states

    def peek(self, key: bytes) -> State:
        return State(self.states.get(key, 0) & _STATE)

    def settled_unread(self) -> int:
        """Identities settled by the earlier runs that this run has not read (yet)."""
        settled = (State.DONE, State.FAILED, State.UNKNOWN)
        return sum(1 for v in self.states.values() if not v & _SEEN and v & _STATE in settled)

    def summary(self) -> Counter[State]:
        """How many items stand where, after the earlier runs."""
        return Counter(State(value & _STATE) for value in self.states.values())



class Journal:
    """The open journal of one run. ``Journal.open(path)``; ``close()`` when done.

    In a run: ``pending(item)`` writes an item's ``pending`` record, ``durable()`` returns a
    future resolved once everything written so far is on stable storage, and ``run_syncs()``
    (a task of the run) does the syncs.
    """

    def __init__(
        self,
        path: str,
        fd: int,
        resume: Resume,
        repairs: Sequence[str],
        sync_interval: float,
    ) -> None:
        self.path = path
        self.resume = resume
        #: What was cut off the end on open, in words (empty when the file was whole).
        self.repairs = tuple(repairs)
        #: The first write or sync error; from then on no ``pending`` record is accepted.
        self.failed: OSError | None = None
        #: Records that could not be written after ``failed``.
        self.lost = 0
        #: Called once, with the error, when the journal fails (the run then stops sending).
        self.on_failure: Callable[[OSError], None] | None = None
        self._fd = fd
        self._size = os.fstat(fd).st_size  # where the whole records end
        self._sync_interval = sync_interval
        self._last_sync = time.monotonic()
        self._dirty = False
        self._next: asyncio.Future[None] | None = None  # resolved by the next sync
        self._wanted: asyncio.Event | None = None  # set when a sync is due

    @classmethod
    def open(
        cls, path: str, *, sync_interval: float = DEFAULT_SYNC_INTERVAL, horizon: float = 0.0
    ) -> Journal:
        """Lock ``path`` (created if missing), repair its end, and load the resume state.

        ``pending`` records written within ``horizon`` seconds of now are kept by lane in
        ``resume.recent_sends``.
        """
        existed = os.path.exists(path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except FileNotFoundError:
            folder = os.path.dirname(path) or "."
            raise JournalError(
                f"{path}: cannot create the journal: the directory {folder} does not exist"
            ) from None
        except OSError as exc:
            raise JournalError(f"{path}: cannot open the journal: {exc.strerror or exc}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise JournalError(
                    f"{path} is not a regular file: the journal must be a file that keeps what "
                    "is written (the next run resumes from it); name a file with --out"
                )
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    raise JournalError(
                        f"{path}: another persona-async run is using this journal"
                    ) from None
            if not existed:
                _sync_dir(path)
            resume, good_end, repairs = _load(path, time.time() - horizon)
            if good_end < os.fstat(fd).st_size:
                os.ftruncate(fd, good_end)
                os.fsync(fd)
            return cls(path, fd, resume, repairs, sync_interval)
        except BaseException:
            os.close(fd)
            raise

    @property
    def size(self) -> int:
        """Where the whole records end: the byte offset the next record is written at."""
        return self._size

    # -- writing -------------------------------------------------------------------------------

    def pending(self, item: Item) -> None:
        """Write ``item``'s ``pending`` record; ``durable()`` then says when it is synced.

        Raises ``JournalWriteError`` when the record cannot be written (the item must not go).
        """
        if self.failed is not None:
            raise JournalWriteError(self.failed)
        request = item.request
        record = _PendingRecord(
            item.id, request.provider, request.task_id, request.audio_id, "pending",
            line=item.line, sent_at=round(time.time(), 3),
        )  # fmt: skip
        if not self.write(record):
            raise JournalWriteError(self.failed)

    def outcome(
        self,
        item: Item,
        status: str,
        *,
        persona_id: str | None = None,
        error: ErrorInfo | None = None,
        attempts: int = 0,
        provider_task_id: str | None = None,
    ) -> None:
        request = item.request
        fields = (
            item.id, request.provider, request.task_id, request.audio_id, status, persona_id,
            error, attempts, item.line,
        )  # fmt: skip
        task_id = provider_task_id or request.provider_task_id
        self.write(_TaskRecord(*fields, task_id) if task_id else Record(*fields))

    def submitted(self, item: Item, provider_task_id: str) -> None:
        """Write ``item``'s ``submitted`` record and ask for a sync (it is the resume state)."""
        self.outcome(item, "submitted", attempts=1, provider_task_id=provider_task_id)
        if self._wanted is not None:
            self.durable()

    def invalid(self, entry: Invalid) -> None:
        info = ErrorInfo("InvalidRequestError", None, entry.message, False, entry.field)
        self.write(
            Record(
                entry.id,
                entry.provider,
                entry.task_id,
                entry.audio_id,
                "invalid",
                None,
                info,
                0,
                entry.line,
            )
        )

    def write(self, record: Record) -> bool:
        """Append one record with a single ``write()``; False when it could not be written.

        A failed or short write is cut back off the file, so the journal never holds half a
        record followed by whole ones.
        """
        if self._fd < 0:
            self.lost += 1
            return False
        data = _encode(record) + b"\n"
        try:
            written = os.write(self._fd, data)
            while written < len(data):  # a short write: the disk filled up mid-record
                written += os.write(self._fd, data[written:])
        except OSError as exc:
            self.lost += 1
            self._cut_back()
            self._fail(exc)
            return False
        self._size += written
        self._dirty = True
        return True

    def durable(self) -> asyncio.Future[None]:
        """A future resolved once every record written so far is on stable storage; it fails
        with ``JournalWriteError`` if the sync does. Needs ``run_syncs()`` running."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            if self._wanted is not None:
                self._wanted.set()
        return self._next

    async def run_syncs(self) -> None:
        """Sync whenever ``durable()`` is waited for, one sync for all waiting records (a
        thread does the sync, so records keep arriving meanwhile for the next one)."""
        self._wanted = wanted = asyncio.Event()
        if self._next is not None:
            wanted.set()
        while True:
            await wanted.wait()
            wanted.clear()
            done, self._next = self._next, None
            if done is None:
                continue
            try:
                if self.failed is not None:
                    raise self.failed
                self._dirty = False
                self._last_sync = time.monotonic()
                await anyio.to_thread.run_sync(_datasync, self._fd)
            except OSError as exc:
                self._fail(exc)
                done.set_exception(JournalWriteError(exc))
                done.exception()  # retrieved: a waiter that went away must not log it
            else:
                done.set_result(None)

    def tick(self) -> None:
        """Called a few times a second: sync outcomes that have waited ``sync_interval``, and
        notice a journal that was removed while the run writes it."""
        if self._fd < 0 or self.failed is not None:
            return
        try:
            removed = os.fstat(self._fd).st_nlink == 0
        except OSError as exc:
            self._fail(exc)
            return
        if removed:
            self._fail(FileNotFoundError(errno.ENOENT, "the file was removed during the run"))
        elif self._dirty and time.monotonic() - self._last_sync >= self._sync_interval:
            if self._wanted is not None:
                self.durable()
            else:  # no run_syncs() task (a run that has not started): sync here
                self._sync_now()

    def _sync_now(self) -> None:
        try:
            _datasync(self._fd)
        except OSError as exc:
            self._fail(exc)
        self._dirty = False
        self._last_sync = time.monotonic()

    def _cut_back(self) -> None:
        try:
            if os.fstat(self._fd).st_size > self._size:
                os.ftruncate(self._fd, self._size)
        except OSError:
            pass  # nothing more to do: the next run repairs a torn last line

    def _fail(self, exc: OSError) -> None:
        if self.failed is None:
            self.failed = exc
            if self.on_failure is not None:
                self.on_failure(exc)

    def close(self) -> None:
        """fsync, unlock and close. Idempotent."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            if self._dirty:
                os.fsync(fd)
        except OSError as exc:
            self._fail(exc)
        finally:
            os.close(fd)  # also releases the lock


def read_resume(path: str) -> Resume:
    """The resume state of the journal at ``path``, read only (no lock, no repair); an empty
    state when there is no file. ``JournalError`` when it is not a journal."""
    if not os.path.exists(path):
        return Resume()
    try:
        return _load(path, time.time())[0]
    except OSError as exc:
        raise JournalError(f"{path}: cannot read the journal: {exc.strerror or exc}") from None


def _parse(raw: bytes) -> _Read | None:
    try:
        record = _decode(raw)
    except msgspec.DecodeError:
        return None
    return record if record.status in STATUSES else None


def _load(path: str, recent_since: float) -> tuple[Resume, int, list[str]]:
    """Read every record; return the state, the offset where the whole records end, and what
    is to be cut off after it (in words)."""
    resume = Resume()
    states = resume.states
    good_end = 0
    with open(path, "rb") as file:
        for number, raw in enumerate(file, start=1):
            record = _parse(raw) if raw.endswith(b"\n") else None
            if record is None:
                if raw.endswith(b"\n"):
                    raise JournalError(_not_a_record(path, number))
                return resume, good_end, _tail(path, raw, number)
            good_end += len(raw)
            resume.records += 1
            _apply(resume, states, record, recent_since)
    return resume, good_end, []


def _not_a_record(path: str, number: int) -> str:
    if number == 1:
        return (
            f"{path} is not a persona-async journal (its first line is not a journal record), "
            "so it was left as it is. --out names the journal this command writes and resumes: "
            "a new file, or the --out of an earlier run"
        )
    return (
        f"{path}: line {number} is not a journal record; the file was damaged or edited and "
        "was left as it is. Move it aside to start over, or fix that line"
    )


def _tail(path: str, raw: bytes, number: int) -> list[str]:
    """What a crash can leave after the last whole record, in words; ``JournalError`` for
    anything else."""
    body = raw.rstrip(b"\0")
    zeros = len(raw) - len(body)
    if body:
        ours = body.startswith(_RECORD_START) or _RECORD_START.startswith(body)
        if b"\0" in body or not (ours or (number > 1 and body.startswith(b"{"))):
            raise JournalError(_not_a_record(path, number))
        if _parse(body) is None:
            try:
                _decode_any(body)
            except msgspec.DecodeError:
                pass  # cut short: a torn record
            else:  # a whole JSON value that is not a record: someone else's data
                raise JournalError(_not_a_record(path, number))
    repairs = []
    if body:
        repairs.append(
            f"cut {len(body)} byte(s) of a torn last line (a record cut short by a crash or a "
            "full disk)"
        )
    if zeros:
        repairs.append(
            f"cut {zeros} NUL byte(s) at the end (space a crash left before the data reached "
            "the disk)"
        )
    return repairs


def _apply(resume: Resume, states: dict[bytes, int], record: _Read, recent_since: float) -> None:
    if record.status == "invalid":
        # An invalid record belongs to its line, not to an identity (a duplicate line shares
        # the identity of the item it duplicates).
        if record.line is not None:
            key = None
            if record.id is not None or None not in (
                record.provider,
                record.task_id,
                record.audio_id,
            ):
                key = identity_key(record.id, record.provider, record.task_id, record.audio_id)
            resume.invalid_lines[record.line] = key
        return
    key = identity_key(record.id, record.provider, record.task_id, record.audio_id)
    states[key] = _state_of(record)
    if record.provider_task_id:
        resume.task_ids[key] = record.provider_task_id
    sent_at = record.sent_at
    if sent_at is not None and sent_at >= recent_since and record.provider is not None:
        resume.recent_sends.setdefault(record.provider, []).append(sent_at)


def sent_again(state: State, *, resends_pending: bool, resend_unknown: bool = False) -> bool:
    """Whether a run sends an item the earlier runs left in ``state``. ``resends_pending``: its
    provider detects duplicates (or resending was allowed), so an item that was in flight when a
    run died is sent again rather than reported as unknown."""
    if state in (State.NEW, State.RETRY, State.RETRY_SENT, State.SUBMITTED):
        return True
    if state is State.UNKNOWN:
        return resend_unknown
    if state is State.PENDING:
        return resend_unknown or resends_pending
    return False


def _state_of(record: _Read) -> State:
    status = record.status
    if status == "pending":
        return State.PENDING
    if status == "submitted":
        return State.SUBMITTED
    if status in ("created", "exists"):
        return State.DONE
    error = record.error
    if error is not None and (error.next_run_retries or error.retryable):
        return State.RETRY_SENT if record.attempts else State.RETRY
    if error is not None and error.type == "OutcomeUnknownError":
        return State.UNKNOWN
    return State.FAILED


def _sync_dir(path: str) -> None:
    # The new file's directory entry must survive a power cut too.
    try:
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
