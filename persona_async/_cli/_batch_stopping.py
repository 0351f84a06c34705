"""How a batch run stops: a signal or a journal that fails closes the gate, the run waits
for the requests on the wire (at most ``grace`` seconds), then closes the client; a second
signal aborts at once. A mixin of ``Batch`` (``_batch``), which sets up the state it reads and
changes; ``_batch``'s docstring tells the whole order of events.
"""

from __future__ import annotations

import asyncio
import signal
from typing import TextIO

import anyio

from .._client import PersonaClient
from ._gate import Gate
from ._journal import Journal
from ._progress import Terminal

__all__ = ["BatchStopping"]

# While stopping: how often to look whether requests are still on the wire.
_POLL = 0.05
_SETTLE = 0.01
# After closing the client at the end of the grace period: how long its last outcomes may take
# to come out before the run stops without them (their records then stay pending).
_DRAIN = 2.0


class BatchStopping:
    """The stopping half of ``Batch`` (a mixin)."""

    # Set up by Batch.__init__.
    _journal: Journal
    _gate: Gate
    _grace: float
    _terminal: Terminal
    _err: TextIO
    _client: PersonaClient | None
    _stopping: bool
    _signalled: bool
    _on_wire_left: int | None
    _closing: bool
    _aborted: bool
    _abort_scope: anyio.CancelScope | None
    _stop_requested: asyncio.Event
    _stop_reason: str
    _stop_then: str
    _stop_said: bool

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[int]:
        installed: list[int] = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            # Not available on Windows; Ctrl-C then aborts through KeyboardInterrupt.
            try:
                loop.add_signal_handler(signum, self._on_signal, signum)
            except (NotImplementedError, RuntimeError):
                continue
            installed.append(signum)
        return installed

    def _on_signal(self, signum: int) -> None:
        if self._signalled:
            self._abort()
            return
        self._signalled = True
        self._stop(f"{signal.Signals(signum).name}: stopping", "Press Ctrl-C again to abort now.")

    def _on_journal_failure(self, exc: OSError) -> None:
        self._stop(
            f"error: the journal {self._journal.path} could not be written "
            f"({exc.strerror or exc}): stopping",
            "",
        )

    def _stop(self, why: str, then: str) -> None:
        """Send nothing more (at once, even what waits for the window); the watcher then
        waits for what is on the wire."""
        if self._stopping:
            return
        self._stopping = True
        self._stop_reason = why
        self._stop_then = then
        self._gate.close()
        self._stop_requested.set()

    async def _watch_stop(self) -> None:
        await self._stop_requested.wait()
        # A moment for the requests that waited for the window to come out unsent.
        await anyio.sleep(_SETTLE)
        left = self._on_wire()
        self._say_stopping(left)
        with anyio.move_on_after(self._grace):
            while left:
                self._on_wire_left = left
                await anyio.sleep(_POLL)
                left = self._on_wire()
        self._on_wire_left = left
        if not self._aborted:
            await self._close_early(left)

    def _say_stopping(self, left: int) -> None:
        if self._stop_said:
            return
        self._stop_said = True
        waiting = (
            f"waiting up to {self._grace:g}s for {left} request(s) in flight"
            if left
            else "no request is in flight"
        )
        self._say(
            f"persona-async: {self._stop_reason}. Nothing more is sent; {waiting}. "
            + self._stop_then
        )

    def _on_wire(self) -> int:
        """Requests between leaving and their answer (the gate is closed: no worker waits
        for the window any more)."""
        assert self._client is not None
        return sum(stats.in_flight for stats in self._client.stats().values())

    async def _close_early(self, left: int) -> None:
        if left:
            self._say(f"persona-async: grace period over: closing; {left} request(s) still open")
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

    def _say(self, text: str) -> None:
        self._terminal.say(text, self._err)

    def _stopping_words(self) -> str | None:
        if not self._stopping:
            return None
        left = self._on_wire_left
        if left is None or not left:
            return "stopping"
        return f"stopping: waiting for {left} request(s) in flight"
