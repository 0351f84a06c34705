"""The four ways providers count requests against a rate limit, per API key.

* ``sliding``: at most ``limit`` accepted requests in any ``period`` seconds (judged at arrival);
* ``fixed``: a counter per key that resets on every multiple of ``period`` on the clock, so a
  burst at the end of one window and another at the start of the next both pass;
* ``bucket``: a token bucket holding at most ``limit`` tokens, refilled at ``limit / period``
  per second; each accepted request takes one;
* ``leaky``: nginx's ``limit_req`` without ``burst`` (and any leaky bucket of depth one): a
  request is accepted only ``period / limit`` seconds or more after the last accepted one, so
  a burst gets one request through however small the window it arrives in.

With ``count_rejected`` a rejected request counts against the window too (a sliding or fixed
window records it; a bucket goes into debt, down to ``-limit`` tokens), as some providers do:
a client that keeps knocking then waits longer.
"""

from __future__ import annotations

import collections
import math
from typing import Literal

__all__ = ["RATE_SHAPES", "RateShape", "RateWindow"]

RateShape = Literal["sliding", "fixed", "bucket", "leaky"]
RATE_SHAPES: tuple[RateShape, ...] = ("sliding", "fixed", "bucket", "leaky")


class RateWindow:
    """One key's rate limit in one of the four shapes; ``admit(now)`` says yes or no."""

    __slots__ = (
        "_arrivals",
        "_count",
        "_epoch",
        "_tokens",
        "_updated",
        "count_rejected",
        "limit",
        "period",
        "shape",
    )

    def __init__(
        self, shape: RateShape, limit: int, period: float, *, count_rejected: bool = False
    ) -> None:
        if shape not in RATE_SHAPES:
            raise ValueError(f"rate shape must be one of {', '.join(RATE_SHAPES)}, got {shape!r}")
        self.shape = shape
        self.limit = limit
        self.period = period
        self.count_rejected = count_rejected
        self._arrivals: collections.deque[float] = collections.deque()  # sliding: times counted
        self._epoch = -math.inf  # fixed: index of the current window on the clock
        self._count = 0  # fixed: requests counted in it
        self._tokens = float(limit)  # bucket: starts full
        self._updated: float | None = None  # bucket: last refill; leaky: last accepted

    def admit(self, now: float) -> bool:
        if self.shape == "sliding":
            return self._sliding(now)
        if self.shape == "fixed":
            return self._fixed(now)
        if self.shape == "leaky":
            return self._leaky(now)
        return self._bucket(now)

    def _sliding(self, now: float) -> bool:
        arrivals = self._arrivals
        horizon = now - self.period
        while arrivals and arrivals[0] <= horizon:
            arrivals.popleft()
        ok = len(arrivals) < self.limit
        if ok or self.count_rejected:
            arrivals.append(now)
        return ok

    def _fixed(self, now: float) -> bool:
        epoch = math.floor(now / self.period)
        if epoch != self._epoch:
            self._epoch, self._count = epoch, 0
        ok = self._count < self.limit
        if ok or self.count_rejected:
            self._count += 1
        return ok

    def _bucket(self, now: float) -> bool:
        if self._updated is not None:
            refill = (now - self._updated) * self.limit / self.period
            self._tokens = min(float(self.limit), self._tokens + refill)
        self._updated = now
        ok = self._tokens >= 1.0
        if ok or self.count_rejected:
            self._tokens = max(-float(self.limit), self._tokens - 1.0)
        return ok

    def _leaky(self, now: float) -> bool:
        # nginx keeps an "excess" that drains at the rate and rises by one per accepted request;
        # with no burst a request is refused while any is left. The arrival of the last accepted
        # request holds the same information. nginx counts whole milliseconds of its cached clock.
        interval = self.period / self.limit
        last = self._updated
        ok = last is None or round((now - last) * 1000) >= round(interval * 1000)
        if ok or (self.count_rejected and last is not None):
            self._updated = now
        return ok
