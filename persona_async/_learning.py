"""What a lane learns about its provider's real limit: a rate, and whether it takes bursts.

Most providers publish no limit, so the configured one is often wrong. :class:`AdaptiveLimit`
learns the real one from the provider's 429s, the way TCP learns a path's capacity, but from a
better signal than a halving. A 429 says one of two things, and the log of starts tells which:

* **a burst it would not take**: the refused request left together with others (another start
  within half a paced interval of it). Leaky buckets (nginx's ``limit_req``, a gateway's token
  bucket with a small burst) take one request per ``1/rate`` seconds and refuse the rest of a
  burst however low the rate. The rate is not lowered: the lane stops bursting and paces its
  starts evenly (``burst = 1``), which every limiter shape accepts at its rate;
* **a request that arrived early**: an evenly paced request refused at the configured rate,
  with nothing else refused since the lane last reacted. A busy event loop delays some sends
  more than others, so paced requests can reach a leaky bucket closer together than they left.
  The rate is kept and the pace widened (:meth:`AdaptiveLimit.jittered`), at most to
  :data:`MAX_PACE_MARGIN`; then, or when refusals come together, it is:
* **a rate it would not take**: an evenly paced request refused. Then, as before:

  * one congestion event per window: 429s to requests sent before the last decrease are the
    same event (they were already on their way) and change nothing;
  * decrease to what the provider delivered: the requests accepted in the window that ended in
    the 429 are the best estimate of its limit (but at most by half per event, so a lone 429
    from a hiccup cannot pin a lane to the few requests it had sent when it came; each further
    429 of the same burst confirms the estimate and moves the limit halfway on towards it). A
    window in which nothing got through says nothing about the rate: the lane only waits for
    it to pass;
  * probe upward additively, after a full window with no 429 in which the lane wanted more than
    it was allowed; at the level that failed last, only after ``patience`` such windows,
    doubled by every probe that fails (up to :data:`MAX_PATIENCE`). A provider whose 429s carry
    a ``Retry-After`` longer than the window makes each failed probe cost that long instead of
    a window, so patience is counted in those;
  * never above the configured limit.

A lane configured with no limit also knows no window: :mod:`._discovery` measures it on the
first 429, and the limit found there grows by a quarter per clean window until a probe fails
(:meth:`AdaptiveLimit.discovered`), then as above.
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = [
    "MARGIN_HALF_LIFE",
    "MAX_PACE_MARGIN",
    "MAX_PATIENCE",
    "MIN_COUNT",
    "PACE_MARGIN",
    "PROBE_FRACTION",
    "AdaptiveLimit",
]

#: Most clean windows to wait before probing again at a level where the provider said 429.
MAX_PATIENCE = 16
#: An upward probe adds this fraction of the current limit (at least one request).
PROBE_FRACTION = 0.05
#: A discovered limit's first climb multiplies it by this much per clean window.
CLIMB_FACTOR = 1.25
#: A discovered limit is counted over enough windows to hold at least this many starts, so one
#: more start a window is a small step (5-10%) and not a doubling.
MIN_COUNT = 10
#: A paced lane spaces its starts this much wider than ``period / limit``: a leaky bucket
#: refuses a request that arrives even a millisecond early, and arrivals jitter.
PACE_MARGIN = 0.03
#: The widest that margin grows where arrivals jitter more (a busy machine delays some sends,
#: a network some packets): each paced request refused while the provider took the whole
#: level doubles it (6%, 12%, 24%); past it, a refusal says the rate is too high.
MAX_PACE_MARGIN = 0.24
#: A widened margin halves back toward PACE_MARGIN every this many periods after it widened.
MARGIN_HALF_LIFE = 2


class AdaptiveLimit:
    """The limit a lane runs at, learned from 429s; pure bookkeeping on a caller's clock.

    Example::

        limit = AdaptiveLimit(40, 1.0)      # configured 40 per second
        limit.congested(sent_at=0.01, now=0.05, delivered=10)   # a 429; 10 got through
        assert limit.current == 10
        limit.saturated = True               # the lane wanted more than 10
        limit.grow(now=1.1)                  # a clean window later: probe one higher
        assert limit.current == 11

    ``RedisLimiter`` applies the same rules inside Redis, so processes share one limit.
    """

    __slots__ = (
        "burst",
        "ceiling",
        "changed",
        "climb_every",
        "climbing",
        "configured",
        "current",
        "decreased",
        "discovered_at",
        "evidence",
        "grown",
        "jittered_at",
        "margin",
        "measured",
        "patience",
        "period",
        "proven",
        "saturated",
        "stall",
        "sustained",
    )

    def __init__(self, configured: int | None, period: float) -> None:
        self.configured = configured  # never exceeded; None: no limit until a 429
        self.period = period
        self.current = configured  # what the lane runs at
        self.changed = -math.inf  # when `current` last changed
        self.decreased = -math.inf  # when it last went down: older 429s are that same event
        self.grown = -math.inf  # when it last went up: a 429 soon after is a failed probe
        self.discovered_at = -math.inf  # when a 429 first taught it something
        self.ceiling: int | None = None  # the limit at which the last congestion event came
        self.patience = 1  # clean windows to wait before probing at `ceiling` again
        self.saturated = False  # the lane wanted more starts than `current` since the change
        self.sustained: int | None = None  # what the provider delivered at the last event
        self.evidence: int | None = None  # accepted in the window of the last event's 429
        self.stall = 0.0  # the last 429's Retry-After: what a failed probe costs, if > period
        self.proven: int | None = None  # held through a clean window since the last drop
        self.burst: int | None = None  # starts the provider takes at once; None: `current`
        self.climbing = False  # a discovered limit, growing by CLIMB_FACTOR until a 429
        self.climb_every = period  # clean seconds between two steps of that climb
        self.measured = False  # the period is one discovery measured, not one configured
        self.margin = PACE_MARGIN  # the pace's margin as last widened (see pace_margin)
        self.jittered_at = -math.inf  # when it was last widened

    def bursting(self, now: float) -> None:
        """A 429 to a request sent together with others: the provider takes no such burst.

        Pace from now on (one start per ``period / current``); the rate stays. 429s to requests
        already on their way are this same event.
        """
        self.burst = 1
        self.decreased, self.evidence = now, None

    def pace_margin(self, now: float) -> float:
        """How much wider than ``period / current`` a paced lane spaces its starts at ``now``."""
        margin = self.margin
        if margin <= PACE_MARGIN:
            return PACE_MARGIN
        halvings = min(60, int((now - self.jittered_at) // (MARGIN_HALF_LIFE * self.period)))
        return max(PACE_MARGIN, margin / float(2**halvings))

    def jittered(self, now: float) -> bool:
        """A paced request refused although the provider took the whole level in its window.

        The level holds: the requests reached the provider closer together than they left here
        (a busy event loop delays some sends; networks jitter). Space the starts wider and keep
        the rate; 429s to requests already on their way are this same event. False when the
        margin is already at its widest: then the refusal is about the rate.
        """
        margin = self.pace_margin(now)
        if margin >= MAX_PACE_MARGIN:
            return False
        self.margin = min(2 * margin, MAX_PACE_MARGIN)
        self.jittered_at = self.decreased = now
        self.evidence = None
        return True

    def discovered(self, count: int, window: float, now: float) -> None:
        """An unconfigured lane measured its provider: ``count`` accepted per ``window`` s.

        Counted over as many windows as it takes to hold :data:`MIN_COUNT` starts; paced (the
        provider refused the rest of a burst to find it) and climbing until a 429.
        """
        scale = max(1, math.ceil(MIN_COUNT / max(count, 1)))
        self.current = self.sustained = max(count, 1) * scale
        self.period = window * scale
        self.burst = 1
        self.climbing = self.measured = True
        # The window as measured (before counting over several): a provider counting per
        # second has shown within one of those whether a level holds.
        self.climb_every = window
        self.changed = self.decreased = now
        if self.discovered_at == -math.inf:
            self.discovered_at = now
        self.saturated = False

    def congested(self, *, sent_at: float, now: float, delivered: int) -> bool:
        """A 429 to a request sent at ``sent_at``; ``delivered`` were accepted in its window.

        Returns True if this is a new congestion event (and the limit went down).
        """
        if sent_at < self.decreased:
            # Sent before we reacted to the last 429: the same event. It confirms that event's
            # estimate, so a decrease that was held at half moves halfway on toward it.
            evidence = self.evidence
            if evidence is not None and self.current is not None and self.current > evidence:
                self.current = self.sustained = max(evidence, (self.current + evidence) // 2)
            return False
        if not delivered:
            # Nothing got through in that window (someone else filled it, or a run before
            # this one did): no estimate of the rate; wait for the window to pass.
            self.decreased, self.evidence = now, None
            return True
        before = self.current
        if now - self.grown < 2 * self.period:
            self.patience = min(self.patience * 2, MAX_PATIENCE)  # a probe upward failed
        else:
            self.proven = None  # not a probe that failed: the provider lowered its limit
        aftermath = self.decreased > self.grown and now - self.decreased < 2 * self.period
        if aftermath and self.ceiling is not None and before is not None:
            self.ceiling = max(self.ceiling, before)  # it failed higher up, moments ago
        else:
            self.ceiling = before
        lowered = self.evidence = max(1, delivered)
        if before is not None:
            # At most half per event: a lone 429 early in a run (a gateway's hiccup) would
            # otherwise pin the lane to the two or three requests it had sent so far.
            lowered = max(1, min(max(lowered, before // 2), before - 1))
            if self.climbing and self.proven is not None and self.proven < before:
                # A climb's step failed: back to the level below it, which held through a
                # clean window (the 429's window still holds slower starts of the climb).
                lowered = max(lowered, self.proven)
        if self.measured and lowered < MIN_COUNT // 2:
            # A discovered limit keeps its resolution: the same rate, over more of its windows.
            scale = math.ceil(MIN_COUNT / lowered)
            lowered *= scale
            self.period *= scale
            self.evidence = self.evidence * scale
            if self.ceiling is not None:
                self.ceiling *= scale
        self.current = self.sustained = lowered
        self.decreased = self.changed = now
        self.margin = PACE_MARGIN  # the rate was too high, not the arrivals uneven
        if self.discovered_at == -math.inf:
            self.discovered_at = now
        self.saturated = False
        self.climbing = False
        return True

    def grow(self, now: float, held: Callable[[], int] | None = None) -> None:
        """Probe one step upward if a clean, saturated window (or ``patience`` of them) passed.

        ``held`` counts the starts the provider accepted since the level began: a level never
        sent in full is not one the provider held (a lane that had to wait for a moment may
        not have used its whole allowance), so it is neither advised nor probed above.
        """
        current = self.current
        if current is None or not self.saturated:
            return
        if current == self.configured:
            if now - self.changed >= self.period:
                self.proven = current  # the configured limit holds: nothing to advise
            return
        at_ceiling = self.ceiling is not None and current + 1 >= self.ceiling
        if at_ceiling:
            wait = self.patience * max(self.period, self.stall)
        else:
            wait = self.climb_every if self.climbing else self.period
        if now - self.changed < wait:
            return
        if self.ceiling is not None and current >= self.ceiling:
            self.ceiling, self.patience = None, 1  # it held where it failed before: forget that
        used = current if held is None else held()
        if used < current - 1:  # (one short: a paced start on the window's edge)
            return  # it never sent this level in full: it proved nothing, and wants no more
        # A clean window in which the lane wanted more: it holds, as far as it was sent.
        self.proven = min(current, used)
        fraction = CLIMB_FACTOR - 1 if self.climbing else PROBE_FRACTION
        step = max(1, int(current * fraction + 0.5))  # as Redis's Lua rounds
        self.current = current + step
        if self.configured is not None:
            self.current = min(self.current, self.configured)
        self.changed = self.grown = now
        self.saturated = False

    def cooling(self, seconds: float) -> None:
        """A 429 said ``Retry-After: seconds``: a probe that fails will cost that long."""
        self.stall = seconds

    def learned(self, now: float) -> int | None:
        """What the provider sustained, once two windows have passed since the first 429."""
        sustained = self.sustained
        if sustained is not None and self.proven is not None and self.proven > sustained:
            # A probe above a level held cleanly failed, and the 429's window showed fewer
            # than that level (requests on the window's edge): the level held is what it takes.
            sustained = self.proven
        settled = sustained is not None and now - self.discovered_at >= 2 * self.period
        if not settled or (self.configured is not None and sustained == self.configured):
            return None
        return sustained
