"""What a lane reports about itself: its state and a frozen snapshot of its figures."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from ._limiter import Hold, advice

__all__ = ["LaneState", "LaneStats"]


class LaneState(str, enum.Enum):
    RUNNING = "running"
    COOLING = "cooling"  # after a 429, until the cooldown ends
    PAUSED = "paused"  # provider in maintenance (455); one probe at a time
    STOPPED = "stopped"  # 401/402: nothing more is sent


# The states by plain name, for the lane's hot path: reading an enum member off its class goes
# through a descriptor and costs several times a module global.
RUNNING, COOLING, PAUSED, STOPPED = (
    LaneState.RUNNING,
    LaneState.COOLING,
    LaneState.PAUSED,
    LaneState.STOPPED,
)


@dataclass(frozen=True, slots=True)
class LaneStats:
    """A snapshot of one lane; ``failed`` counts final failures by error class name."""

    name: str
    kind: str
    state: LaneState
    in_flight: int
    queued: int
    sent: int
    succeeded: int
    failed: Mapping[str, int]
    retries: int
    throttled: int
    #: Starts per second the lane allows right now; None: no limit configured or learned.
    effective_rate: float | None
    #: Starts per ``rate_period`` the lane runs at now: the configured ``rate_limit``, or less
    #: when the provider's 429s taught it less; None: no limit configured or learned yet.
    limit: int | None = None
    rate_limit: int | None = None
    rate_period: float = 0.0
    #: What the provider sustained once the lane settled below ``rate_limit`` (or learned a
    #: limit with none configured); None otherwise. ``advice`` puts it in words.
    learned_limit: int | None = None
    #: Set while the lane's shared limiter (Redis) holds every start because a process sharing
    #: it was answered 429 with a Retry-After (``"cooling"``) or 455 (``"paused"``); ``state``
    #: says what this lane saw itself. None otherwise, and always for a limiter not shared.
    held: Hold | None = None
    #: The seconds ``limit`` counts over: ``rate_period``, or for a lane with no ``rate_limit``
    #: the provider's window as the lane measured it (see the README, "Rate limits").
    limit_period: float = 0.0
    #: The seconds ``learned_limit`` counts over: ``rate_period``, or a round period (1, 10, 60
    #: s) for a lane with no ``rate_limit``.
    learned_period: float = 0.0

    @property
    def advice(self) -> str | None:
        """ "crun: configured 40 per 1 s, provider sustained about 10 per 1 s: set ..." or None."""
        if self.learned_limit is None:
            return None
        period = self.learned_period or self.rate_period
        return advice(self.name, self.rate_limit, self.learned_limit, period)
