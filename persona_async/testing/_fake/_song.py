"""A source song as the fake keeps it: a music task that finishes (or fails) after a while.

Every contract's status route renders a ``Song`` at a ``phase`` (the fraction of it generated)
in its own shape; see each contract's module.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class Song:
    """One music task. It runs for ``ready_in`` seconds from when it was added, then succeeds
    (or fails, when ``fails``). ``clips`` maps clip id -> duration in seconds."""

    task_id: str
    clips: dict[str, float]
    ready_in: float
    fails: bool
    error_code: int
    error_message: str
    #: crun's status word while running (to try words the SDK does not know).
    running_word: str
    added: float = field(default_factory=time.monotonic)

    def phase(self, now: float) -> float:
        """Fraction of the generation done (1.0 when finished)."""
        if self.ready_in <= 0:
            return 1.0
        return min(1.0, (now - self.added) / self.ready_in)


def word(phase: float, failed: bool, words: tuple[str, str, str, str]) -> str:
    """A contract's status word at ``phase``: early running, late running, success, failure."""
    if phase < 1.0:
        return words[0] if phase < 0.5 else words[1]
    return words[3] if failed else words[2]
