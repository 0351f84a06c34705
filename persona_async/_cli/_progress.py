"""The terminal during a run: one live line at the bottom, every message and log line above it.

The live line (a bar, done/total, rate, ETA and each lane's state, or that the run is stopping)
is shown only on a terminal: off when stdout is not a TTY, under CI (``CI`` set), with
``TERM=dumb``, or with ``--no-progress``. ``Terminal`` is the one writer: messages, the summary
and log records (``TerminalLogHandler``) clear the line, print, and redraw it, so nothing is
ever printed onto the end of it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TextIO

from .._lane import LaneState
from .._stats import LaneStats
from ._summary import Tally

__all__ = ["Progress", "Terminal", "TerminalLogHandler", "duration", "progress_wanted"]

#: The rate is measured over this many recent seconds, so the ETA follows a lane that slows.
_RATE_WINDOW = 10.0
_DEFAULT_WIDTH = 100
_BAR = 20
_STATE_WORDS = {
    LaneState.RUNNING: "running",
    LaneState.COOLING: "cooling after 429",
    LaneState.PAUSED: "paused (maintenance)",
    LaneState.STOPPED: "stopped",
}
#: A running lane whose shared limiter holds every start: what a process sharing it was told.
_HELD_WORDS = {"cooling": "cooling after 429 (shared)", "paused": "paused (maintenance, shared)"}


def _lane_words(stats: LaneStats) -> str:
    if stats.state is LaneState.RUNNING and stats.held is not None:
        return _HELD_WORDS[stats.held]
    return _STATE_WORDS[stats.state]


def progress_wanted(disabled: bool, stream: TextIO) -> bool:
    if disabled or os.environ.get("CI", "").lower() not in ("", "0", "false"):
        return False
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Terminal:
    """Writes messages to the terminal, keeping the live line (``show()``) below them."""

    def __init__(self, out: TextIO, *, live: bool) -> None:
        self.out = out
        #: Whether the live line is drawn at all (a terminal, not disabled).
        self.live = live
        self._line: Callable[[], str] | None = None
        self._drawn = False

    def show(self, line: Callable[[], str] | None) -> None:
        """Draw ``line()`` as the live line from now on (None: no live line)."""
        self.clear()
        self._line = line

    def draw(self) -> None:
        if not self.live or self._line is None:
            return
        # A terminal that reports no size (a bare pty) gets the default width.
        width = shutil.get_terminal_size().columns or _DEFAULT_WIDTH
        text = self._line()[: max(width - 1, 20)]
        with contextlib.suppress(BrokenPipeError):
            self.out.write("\r" + text + "\x1b[K")
            self.out.flush()
        self._drawn = True

    def clear(self) -> None:
        if self._drawn:
            self._drawn = False
            with contextlib.suppress(BrokenPipeError):
                self.out.write("\r\x1b[K")
                self.out.flush()

    def say(self, text: str, stream: TextIO | None = None) -> None:
        """Print ``text`` (a line or more) above the live line, then redraw the line."""
        redraw = self._drawn
        self.clear()
        with contextlib.suppress(BrokenPipeError):
            print(text, file=stream or self.out, flush=True)
        if redraw:
            self.draw()


class TerminalLogHandler(logging.Handler):
    """Log records, formatted, through a ``Terminal`` (to ``stream``, stderr by default)."""

    def __init__(self, terminal: Terminal, stream: TextIO) -> None:
        super().__init__()
        self.terminal = terminal
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.terminal.say(self.format(record), self.stream)
        except Exception:  # logging must never break the run
            self.handleError(record)


class Progress:
    """The text of the live line; ``line()`` is cheap enough to call a few times a second."""

    def __init__(
        self,
        tally: Tally,
        total: int | None,
        lanes: Callable[[], Mapping[str, LaneStats]],
        *,
        stopping: Callable[[], str | None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tally = tally
        self._total = total
        self._lanes = lanes
        self._stopping = stopping  # why and how the run is stopping, when it is
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque()  # (time, answered) for the rate

    def line(self) -> str:
        tally = self._tally
        now = self._clock()
        self._samples.append((now, tally.answered))
        while len(self._samples) > 2 and now - self._samples[0][0] > _RATE_WINDOW:
            self._samples.popleft()
        first_time, first_count = self._samples[0]
        span = now - first_time
        rate = (tally.answered - first_count) / span if span > 0.5 else None
        done, total = tally.done, self._total
        parts = []
        if total:
            filled = min(done, total) * _BAR // max(total, 1)
            parts.append("[" + "#" * filled + "." * (_BAR - filled) + "]")
            parts.append(f"{done}/{total} ({min(done, total) * 100 // max(total, 1)}%)")
        else:
            parts.append(f"{done} done")
        if tally.tasks_running:  # submitted: not done, but not waiting for this run either
            parts.append(f"{tally.tasks_running} task(s) running at the provider")
        stopping = self._stopping()
        if stopping is not None:
            return "  ".join(parts) + "  | " + stopping
        parts.append(f"{rate:.1f}/s" if rate is not None else "-/s")
        if total and rate:
            parts.append("ETA " + duration(max(total - done, 0) / rate))
        lanes = "  ".join(f"{name}: {_lane_words(stats)}" for name, stats in self._lanes().items())
        return "  ".join(parts) + ("  | " + lanes if lanes else "")


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``27h46m``."""
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
