"""The batch journal's records, and reading a journal back into the resume state.

The record format (``Record`` and its ``error``, ``ErrorInfo``) is what ``_journal`` writes and
what ``read_resume`` and ``Journal.open`` read: each line is parsed only as far as resuming
needs (``_Read``), the last record of an item gives its ``State``, and what a crash can leave at
the end of a file is told apart from a file that is not a journal (``JournalError``).
"""

from __future__ import annotations

import enum
import os
import time
from collections import Counter
from dataclasses import dataclass, field

import msgspec

from ._items import identity_key

__all__ = [
    "STATUSES",
    "ErrorInfo",
    "JournalError",
    "Record",
    "Resume",
    "State",
    "read_resume",
    "sent_again",
]

STATUSES = frozenset({"pending", "submitted", "created", "exists", "failed", "invalid"})
# Every record the journal writes starts with these bytes: a first line cut short by a crash
# is recognised by them, so a stranger's one-line file is never taken for a torn journal.
_RECORD_START = b'{"id":'


class JournalError(Exception):
    """The journal cannot be used (not a journal, locked, damaged, unreadable): exit 2."""


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
