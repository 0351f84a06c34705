"""When to resend, and how long to wait first: the policy as one frozen value."""

from __future__ import annotations

import email.utils
import math
import random
import time
from dataclasses import dataclass

__all__ = [
    "DEFAULT_BACKOFF_INITIAL",
    "DEFAULT_BACKOFF_MAX",
    "DEFAULT_MAX_MAINTENANCE_WAIT",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_RETRY_AFTER_MAX",
    "RetryPolicy",
    "parse_retry_after",
]

DEFAULT_MAX_RETRIES = 3
DEFAULT_BACKOFF_INITIAL = 0.5
DEFAULT_BACKOFF_MAX = 30.0
#: A provider's Retry-After is honoured up to this many seconds.
DEFAULT_RETRY_AFTER_MAX = 120.0
#: How long a request waits for a provider in maintenance (455) before it fails.
DEFAULT_MAX_MAINTENANCE_WAIT = 600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How one request is retried. Retries go back to the lane's queue with a not-before time.

    Every wait is also bounded by the request's own deadline (see ``_deadline``).
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    backoff_initial: float = DEFAULT_BACKOFF_INITIAL
    backoff_max: float = DEFAULT_BACKOFF_MAX
    retry_after_max: float = DEFAULT_RETRY_AFTER_MAX
    max_maintenance_wait: float = DEFAULT_MAX_MAINTENANCE_WAIT

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        for name in ("backoff_initial", "backoff_max", "retry_after_max"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not self.max_maintenance_wait > 0:
            raise ValueError("max_maintenance_wait must be > 0")

    def backoff(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (1-based): exponential with full jitter."""
        ceiling = min(self.backoff_max, self.backoff_initial * 2 ** (retry - 1))
        return random.uniform(0, ceiling)

    def capped(self, retry_after: float) -> float:
        """The provider's Retry-After, at most ``retry_after_max``."""
        return min(retry_after, self.retry_after_max)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
