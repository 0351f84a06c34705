"""The live progress line: done/total, rate, ETA and each lane's state, redrawn in place.

Only on a terminal: off when stdout is not a TTY, under CI (``CI`` set), with ``TERM=dumb``, or
with ``--no-progress``. Everything else the CLI prints goes through ``clear()`` first so the line
never garbles a message.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TextIO

from .._lane import LaneState
from ._summary import Tally

__all__ = ["Progress", "progress_wanted"]

#: The rate is measured over this many recent seconds, so the ETA follows a lane that slows.
_RATE_WINDOW = 10.0
_DEFAULT_WIDTH = 100
_STATE_WORDS = {
    LaneState.RUNNING: "running",
    LaneState.COOLING: "cooling after 429",
    LaneState.PAUSED: "paused (maintenance)",
    LaneState.STOPPED: "stopped",
}


def progress_wanted(disabled: bool, stream: TextIO) -> bool:
    if disabled or os.environ.get("CI", "").lower() not in ("", "0", "false"):
        return False
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """Draws one line on ``stream``; ``draw()`` is cheap enough to call a few times a second."""

    def __init__(
        self,
        stream: TextIO,
        tally: Tally,
        total: int | None,
        lane_states: Callable[[], Mapping[str, LaneState]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._tally = tally
        self._total = total
        self._lane_states = lane_states
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque()  # (time, answered) for the rate
        self._drawn = False

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
        parts = [f"{done}/{total}" if total else f"{done} done"]
        if total:
            parts[0] += f" ({min(done, total) * 100 // max(total, 1)}%)"
        parts.append(f"{rate:.1f}/s" if rate is not None else "-/s")
        if total and rate:
            parts.append("ETA " + _duration(max(total - done, 0) / rate))
        states = self._lane_states()
        lanes = "  ".join(f"{name}: {_STATE_WORDS[state]}" for name, state in states.items())
        return "  ".join(parts) + ("  | " + lanes if lanes else "")

    def draw(self) -> None:
        # A terminal that reports no size (a bare pty) gets the default width.
        width = shutil.get_terminal_size().columns or _DEFAULT_WIDTH
        text = self.line()[: max(width - 1, 20)]
        self._stream.write("\r" + text + "\x1b[K")
        self._stream.flush()
        self._drawn = True

    def clear(self) -> None:
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._drawn = False


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
