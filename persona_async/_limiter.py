"""The lane-limiter contract: what a lane asks of its rate limiter, and what it gets back.

A lane admits each request through a ``LaneLimiter``: the local ``SlidingWindowLimiter``
(``_ratelimit``) or a shared one from a ``SharedLimiter`` (``persona_async.redis``). Each
admission is a ``Start``; a worker's ``SentHook`` moves it to the moment the request leaves. A
lane told to wait by the provider holds (``Hold``); ``advice`` is the sentence a lane prints
when it settled below its configured limit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import msgspec

__all__ = [
    "DEFAULT_WINDOW_MARGIN",
    "Hold",
    "LaneLimiter",
    "SentHook",
    "SharedLimiter",
    "Start",
    "advice",
]

#: Why a lane holds every start: a 429 with a Retry-After ("cooling") or a 455 ("paused").
Hold = Literal["cooling", "paused"]

#: The window is widened by this fraction of the period: requests reach the provider a little
#: after they start here, and network jitter must not make two windows overlap at its end.
DEFAULT_WINDOW_MARGIN = 0.02


class Start(msgspec.Struct, gc=False):
    """One admitted request: when it left (moved to the real send by ``sent``).

    A msgspec Struct without garbage-collector tracking: it holds no references, and one is
    made per request.
    """

    at: float  # the lane's clock
    member: str | None = None  # its entry in a shared log (Redis), if any


class SentHook:
    """A lane worker's ``on_sent``: moves its current start to the moment the request leaves.

    One per worker, reused for every request it sends: nothing is allocated per request.
    ``left`` counts the requests that left through it (a connection was open for them: a DNS
    or connect failure never gets that far).
    """

    __slots__ = ("_sent", "left", "start")

    def __init__(self, limiter: LaneLimiter) -> None:
        self._sent = limiter.sent  # bound once
        self.start: Start | None = None  # the request on its way, if any
        self.left = 0

    def __call__(self) -> None:
        start = self.start
        if start is not None:
            self.left += 1
            self._sent(start)


class LaneLimiter(Protocol):
    """What a lane needs from its rate limiter; ``SlidingWindowLimiter`` is the local one.

    ``acquire`` may raise a ``PersonaError`` (a shared limiter whose store is down): the
    request then fails without being sent.
    """

    @property
    def limit(self) -> int | None:
        """Starts allowed per ``rate_period`` right now; None: no limit known yet."""
        ...

    @property
    def learned(self) -> int | None:
        """The provider's sustained limit once settled below the configured one, else None."""
        ...

    @property
    def period(self) -> float:
        """The seconds ``limit`` counts over: ``rate_period``, or the window a lane measured."""
        ...

    @property
    def learned_period(self) -> float:
        """The seconds ``learned`` counts over."""
        ...

    @property
    def holding(self) -> Hold | None:
        """Why ``acquire`` waits right now, when a process sharing this limiter said to."""
        ...

    def watch_holds(self, on_hold: Callable[[Hold, float], None]) -> None:
        """Call ``on_hold(state, seconds)`` when a process sharing this limiter makes every
        start wait ``seconds`` (a 429's cooldown, a 455's pause it saw), as ``acquire`` learns
        it: the lane fails at once the requests that cannot start before then."""
        ...

    def take(self) -> Start | None:
        """A start now, without waiting, or None: then ``acquire`` (None when unsure)."""
        ...

    async def acquire(self) -> Start:
        """Wait for a start; return it, to hand to ``sent`` and then to the outcome."""
        ...

    def sent(self, start: Start) -> None:
        """The request admitted as ``start`` has just been written to the socket."""
        ...

    def accepted(self, start: Start) -> None:
        """The provider accepted the request admitted as ``start``."""
        ...

    def unused(self, start: Start) -> None:
        """``start`` was admitted but its request was never sent: give the start back."""
        ...

    async def throttled(self, start: Start) -> float:
        """The provider said 429 to ``start``: learn from it; seconds until the next start."""
        ...

    async def hold(self, state: Hold, seconds: float) -> None:
        """The lane was told to wait (Retry-After, a 455): tell whoever shares the budget."""
        ...

    async def aclose(self) -> None:
        """The client is closing: release what ``acquire`` opened (a shared store's connections)."""
        ...

    def note_earlier_sends(self, ages: Sequence[float]) -> None:
        """Count starts made ``ages`` seconds ago by someone else (a process that died)."""
        ...


class SharedLimiter(Protocol):
    """A limiter shared across processes (``Provider(limiter=...)``): one per lane."""

    # ``provider`` is a Provider, typed loosely: the providers sit above this layer.
    def for_lane(self, provider: Any) -> LaneLimiter: ...


def advice(name: str, configured: int | None, learned: int, period: float) -> str:
    """The sentence a user can act on when a lane settled below its configured limit."""
    if configured:
        was, then = f"configured {configured} per {period:g} s", ""
    else:
        was, then = "no rate_limit configured", f", rate_period = {period:g}"
    return (
        f"{name}: {was}, provider sustained about {learned} per {period:g} s: "
        f"set rate_limit = {learned}{then}"
    )
