"""How long a provider that refused a burst takes to accept again: an unconfigured lane's window.

A lane with no configured limit sends freely until its first 429. It then knows how many
requests the provider took in that burst, but not over what time it counts them: kie counts 20
per 10 s, nginx's ``limit_req`` one per ``1/rate`` seconds. Assuming a window (the old default
was 10 s) paces a provider counting per second at a tenth of its rate.

So the lane measures it: from the burst's first start it sends one probe at a time, each twice
as long after that start as the last (``FIRST_GAP``, then doubling), until the provider accepts
one. The time from the burst's first start to that acceptance is the window: a sliding or fixed
window reopens a window after the burst began, a leaky bucket after ``1/rate``, a token bucket
once it has refilled a token. It is known to within a factor of two, and the lane then climbs
from there (``AdaptiveLimit.discovered``). Each probe refused costs one 429: about
``log2(window / FIRST_GAP)``, six for a one-second window.

Example::

    probe = Discovery(origin=0.0, now=0.03)
    probe.wait(now=0.03)          # 0.02: the first probe goes 0.05 s after the burst began
    probe.sent(at=0.05)           # the next one would go 0.1 s after it
    probe.found(accepted_at=0.05) # accepted: the window is 0.05 s
"""

from __future__ import annotations

__all__ = ["FIRST_GAP", "Discovery"]

#: The first probe goes this long (or twice the time the first 429 took) after the burst began.
FIRST_GAP = 0.05


class Discovery:
    """Probes, one at a time at doubling gaps from ``origin``, for the provider's window."""

    __slots__ = ("first_probe", "gap", "next_at", "origin")

    def __init__(self, *, origin: float, now: float) -> None:
        self.origin = origin  # the first start of the burst the provider cut short
        self.gap = max(FIRST_GAP, 2 * (now - origin))  # the next probe's distance from origin
        self.next_at = origin + self.gap  # when the next probe may go
        self.first_probe: float | None = None  # when the first probe went

    def wait(self, now: float) -> float:
        """Seconds until the next probe may go (0.0: now)."""
        return max(0.0, self.next_at - now)

    def sent(self, at: float) -> None:
        """A probe was admitted at ``at``: the next one waits twice as long from the origin."""
        if self.first_probe is None:
            self.first_probe = at
        self.gap = max(2 * self.gap, 2 * (at - self.origin))
        self.next_at = self.origin + self.gap

    def found(self, accepted_at: float) -> float | None:
        """A request admitted at ``accepted_at`` was accepted: the window, if it was a probe
        (a late answer to the burst itself measures nothing)."""
        first = self.first_probe
        if first is None or accepted_at < first:
            return None
        return accepted_at - self.origin
