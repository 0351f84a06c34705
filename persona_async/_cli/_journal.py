"""The batch journal: an append-only JSONL file that is both the results and the resume state.

One JSON object per line: ``id``, ``provider``, ``task_id``, ``audio_id``, ``status``,
``persona_id``, ``error``, ``attempts``, ``line``. The last record of an item is its state.
A ``pending`` record is written (one ``write()``, so it survives ``kill -9``) right before an
item's first request goes out; every outcome as soon as it is known. The file is fsynced every
``sync_interval`` seconds and on close, and locked so two runs never share it.

On open, junk at the end (a line torn by a power cut, a tail of zeros) is cut off; junk followed
by good records means the file was damaged otherwise, and is refused. Resuming keeps one small
int per item identity (a 16-byte digest): about 100 bytes per item, ~100 MB for a million.
"""

from __future__ import annotations

import enum
import os
import time
from collections import Counter
from dataclasses import dataclass, field

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
    "Record",
    "Resume",
    "State",
]

#: Seconds between fsyncs while records are being written.
DEFAULT_SYNC_INTERVAL = 1.0


class JournalError(Exception):
    """The journal cannot be used (locked by another run, damaged, unwritable): exit 2."""


class ErrorInfo(msgspec.Struct):
    """A record's ``error``. ``retryable``: a later run sends the item again.

    ``field`` names the field of an ``invalid`` record.
    """

    type: str
    code: int | None
    message: str
    retryable: bool = False
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


class _ErrorRead(msgspec.Struct):
    type: str = ""
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


class State(enum.IntEnum):
    """Where an item stands after the earlier runs (``NEW``: no record)."""

    NEW = 0
    DONE = 1  # created or exists: skip
    FAILED = 2  # failed, not retryable: skip
    PENDING = 3  # sent, no outcome recorded: the process died with it in flight
    RETRY = 4  # failed retryably, never reached the provider
    RETRY_SENT = 5  # failed retryably after reaching the provider
    UNKNOWN = 6  # OutcomeUnknownError on a provider without duplicate detection


_SEEN = 0x10  # flag: this run has already read the item (a second line is a duplicate)
_STATE = 0x0F

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Read).decode


@dataclass(slots=True)
class Resume:
    """What the earlier runs left, in memory: identity digest -> ``State`` (plus ``_SEEN``)."""

    states: dict[bytes, int] = field(default_factory=dict)
    #: Line number -> the identity (if any) of an ``invalid`` record: skipped while unchanged.
    invalid_lines: dict[int, bytes | None] = field(default_factory=dict)
    records: int = 0

    def take(self, key: bytes) -> State | None:
        """Note that this run has read ``key``; return its state after the earlier runs, or
        None when this run has read it already (a duplicate line)."""
        value = self.states.get(key, 0)
        if value & _SEEN:
            return None
        self.states[key] = value | _SEEN
        return State(value & _STATE)

    def summary(self) -> Counter[State]:
        """How many items stand where, after the earlier runs."""
        return Counter(State(value & _STATE) for value in self.states.values())


class Journal:
    """The open journal of one run. ``Journal.open(path)``; ``close()`` when done."""

    def __init__(
        self, path: str, fd: int, resume: Resume, repaired: int, sync_interval: float
    ) -> None:
        self.path = path
        self.resume = resume
        #: Bytes of junk cut off the end on open (0 when the file was whole).
        self.repaired = repaired
        self._fd = fd
        self._sync_interval = sync_interval
        self._last_sync = time.monotonic()
        self._dirty = False

    @classmethod
    def open(cls, path: str, *, sync_interval: float = DEFAULT_SYNC_INTERVAL) -> Journal:
        """Lock ``path`` (created if missing), repair its end, and load the resume state."""
        existed = os.path.exists(path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise JournalError(f"{path}: cannot open the journal: {exc.strerror or exc}") from None
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    raise JournalError(
                        f"{path}: another persona-async run is using this journal"
                    ) from None
            if not existed:
                _sync_dir(path)
            resume, good_end = _load(path)
            size = os.fstat(fd).st_size
            if good_end < size:
                os.ftruncate(fd, good_end)
                os.fsync(fd)
            return cls(path, fd, resume, size - good_end, sync_interval)
        except BaseException:
            os.close(fd)
            raise

    # -- writing -------------------------------------------------------------------------------

    def pending(self, item: Item) -> None:
        """Note that ``item`` is about to be sent: on disk (if not synced) before it goes out."""
        self.write(self._record(item, "pending", None, None, 0))

    def outcome(
        self,
        item: Item,
        status: str,
        *,
        persona_id: str | None = None,
        error: ErrorInfo | None = None,
        attempts: int = 0,
    ) -> None:
        self.write(self._record(item, status, persona_id, error, attempts))

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

    @staticmethod
    def _record(
        item: Item, status: str, persona_id: str | None, error: ErrorInfo | None, attempts: int
    ) -> Record:
        request = item.request
        return Record(
            item.id,
            request.provider,
            request.task_id,
            request.audio_id,
            status,
            persona_id,
            error,
            attempts,
            item.line,
        )

    def write(self, record: Record) -> None:
        """Append one record with a single ``write()`` (a whole line or, if killed, nothing)."""
        data = memoryview(_encode(record) + b"\n")
        while data:
            data = data[os.write(self._fd, data) :]
        self._dirty = True
        self.sync_if_due()

    def sync_if_due(self) -> None:
        if self._dirty and time.monotonic() - self._last_sync >= self._sync_interval:
            self.sync()

    def sync(self) -> None:
        if self._dirty:
            os.fsync(self._fd)
            self._dirty = False
        self._last_sync = time.monotonic()

    def close(self) -> None:
        """fsync, unlock and close. Idempotent."""
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            if self._dirty:
                os.fsync(fd)
        finally:
            os.close(fd)  # also releases the lock


def _load(path: str) -> tuple[Resume, int]:
    """Read every record; return the state and the offset where the good records end."""
    resume = Resume()
    states = resume.states
    good_end = 0
    junk_at: tuple[int, int] | None = None  # (line number, offset) of the first bad line
    with open(path, "rb") as file:
        offset = 0
        for number, raw in enumerate(file, start=1):
            start, offset = offset, offset + len(raw)
            try:
                if not raw.endswith(b"\n"):
                    raise ValueError("torn")
                record = _decode(raw)
            except (msgspec.DecodeError, ValueError):
                if junk_at is None:
                    junk_at = (number, start)
                continue
            if junk_at is not None:
                raise JournalError(
                    f"{path}: line {junk_at[0]} is not a journal record but later lines are; "
                    "the file was damaged or edited. Move it aside to start over, or fix it"
                )
            good_end = offset
            resume.records += 1
            _apply(resume, states, record)
    return resume, good_end


def _apply(resume: Resume, states: dict[bytes, int], record: _Read) -> None:
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


def _state_of(record: _Read) -> State:
    status = record.status
    if status == "pending":
        return State.PENDING
    if status in ("created", "exists"):
        return State.DONE
    error = record.error
    if error is not None and error.retryable:
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
