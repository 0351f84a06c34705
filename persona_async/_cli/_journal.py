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
import errno
import os
import stat
import time
from collections.abc import Callable, Sequence

import anyio
import msgspec

from ._items import Invalid, Item
from ._journal_records import (
    ErrorInfo,
    JournalError,
    Record,
    Resume,
    _load,
    _PendingRecord,
    _TaskRecord,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock
    fcntl = None  # type: ignore[assignment]

__all__ = ["DEFAULT_SYNC_INTERVAL", "Journal", "JournalWriteError"]

#: Longest time an outcome record waits for a sync while nothing is being sent.
DEFAULT_SYNC_INTERVAL = 1.0
# fdatasync skips metadata a read does not need; macOS has only fsync.
_datasync = getattr(os, "fdatasync", os.fsync)


class JournalWriteError(Exception):
    """The journal stopped accepting records (disk full, I/O error, file removed)."""


_encode = msgspec.json.Encoder().encode


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
