"""An input that may pause (stdin from a pipe or a terminal, a FIFO), read off the event loop.

A read of a regular file returns at once; a read of a pipe waits until its producer writes. Done
on the event loop, that wait would stop everything else: requests in flight, the rate limiter,
the live line, Ctrl-C. So such an input is read and parsed by a daemon thread, which hands the
entries over in batches, each one as soon as the next read would have to wait: an item is
never held back waiting for the lines after it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import stat
import threading
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from typing import Generic, TypeVar

__all__ = ["BlockingLines", "may_block", "threaded"]

T = TypeVar("T")

_CHUNK = 1 << 16
_BATCH = 256  # entries handed over at once when the input keeps coming
_QUEUED = 16  # batches waiting for the event loop before the thread waits: constant memory


def may_block(fd: int) -> bool:
    """Whether a read of ``fd`` can wait for a writer (anything but a regular file)."""
    try:
        return not stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


class BlockingLines:
    """The lines of ``fd`` (bytes, newline kept), read with ``os.read``; ``before_read`` is
    called before each read, which may wait."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.before_read: Callable[[], None] = lambda: None

    def __iter__(self) -> Iterator[bytes]:
        rest = b""
        while True:
            self.before_read()
            chunk = os.read(self._fd, _CHUNK)
            if not chunk:
                if rest:
                    yield rest
                return
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                yield line + b"\n"

    def close(self) -> None:
        """The descriptor is not ours (stdin): nothing to close."""


class _Handover(Generic[T]):
    """Batches from the reading thread to the event loop, at most ``_QUEUED`` at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._batches: collections.deque[list[T]] = collections.deque()
        self._room = threading.Condition()
        self._arrived = asyncio.Event()  # set (through the loop) when a batch or the end came
        self.done = False
        self.error: BaseException | None = None
        self.closed = False  # the consumer left: the thread stops handing over

    def put(self, batch: list[T]) -> None:  # in the thread
        with self._room:
            while len(self._batches) >= _QUEUED and not self.closed:
                self._room.wait()
            if self.closed:
                return
            self._batches.append(batch)
        self._wake()

    def finish(self, error: BaseException | None) -> None:  # in the thread
        self.error, self.done = error, True
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._arrived.set)

    async def get(self) -> list[T] | None:  # on the loop; None at the end
        while True:
            self._arrived.clear()
            with self._room:
                if self._batches:
                    batch = self._batches.popleft()
                    self._room.notify()
                    return batch
            if self.done:
                if self.error is not None:
                    raise self.error
                return None
            await self._arrived.wait()

    def close(self) -> None:
        with self._room:
            self.closed = True
            self._room.notify()


async def threaded(entries: Iterable[T], lines: BlockingLines) -> AsyncGenerator[T, None]:
    """Iterate ``entries`` (parsed from ``lines``) in a daemon thread; yield them in order.

    The thread hands over what it parsed before each read of ``lines`` that may wait, and every
    ``_BATCH`` entries; it is left blocked in its read if the consumer stops early (a daemon
    thread: it does not keep the process alive)."""
    handover: _Handover[T] = _Handover(asyncio.get_running_loop())
    pending: list[T] = []

    def hand() -> None:
        if pending:
            handover.put(pending.copy())
            pending.clear()

    def read() -> None:
        error: BaseException | None = None
        lines.before_read = hand
        try:
            for entry in entries:
                if handover.closed:
                    return
                pending.append(entry)
                if len(pending) >= _BATCH:
                    hand()
            hand()
        except BaseException as exc:  # handed to the loop, raised there
            error = exc
        finally:
            handover.finish(error)

    threading.Thread(target=read, name="persona-async input", daemon=True).start()
    try:
        while (batch := await handover.get()) is not None:
            for entry in batch:
                yield entry
    finally:
        handover.close()
