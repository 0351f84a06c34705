"""A request's deadline: fixed when the request is submitted, it bounds the whole call.

Queueing, the rate limiter, a cooldown after 429, a maintenance wait and every retry all count.
The deadline is kept by not *starting* an attempt that could not finish: an attempt starts only
while a fair share of time is left (``min_attempt_time``), and nothing on the wire is cancelled
because a deadline passed. A request still unsent at its last start time fails then, with the
error that explains it (``give_up_error``): the provider's last answer, never a bare timeout.

The defaults fit the two ways the client is used: a web handler answers its user in seconds,
while a bulk stream would rather wait out a maintenance window than fail a thousand items.
"""

from __future__ import annotations

from ._exceptions import MaintenanceError, PersonaError, ProviderTimeoutError, RateLimitError

__all__ = [
    "DEFAULT_DEADLINE",
    "DEFAULT_STREAM_DEADLINE",
    "check_deadline",
    "give_up_error",
    "maintenance_error",
    "min_attempt_time",
]

#: Seconds one ``create_persona`` call may take, from submission: a web handler's budget.
DEFAULT_DEADLINE = 30.0
#: Seconds each ``create_many`` request may take, from the moment it is pulled: long enough to
#: wait out a maintenance window (``max_maintenance_wait``, 600 s) and a read-ahead's queue.
DEFAULT_STREAM_DEADLINE = 3600.0


def check_deadline(value: float | None, name: str = "deadline") -> float | None:
    """``value`` if it is a valid deadline in seconds (``math.inf``: none) or None, else raise."""
    if value is not None and (isinstance(value, bool) or not value > 0):
        raise ValueError(f"{name} must be > 0 seconds (math.inf for none), got {value!r}")
    return None if value is None else float(value)


def min_attempt_time(provider_timeout: float, deadline: float) -> float:
    """The least time left with which an attempt may start.

    A retry squeezed in just before the deadline would time out after the provider got it,
    creating the very ambiguity retries must avoid: give it a fair chance or none.
    """
    return min(provider_timeout, deadline) / 4


def give_up_error(
    *,
    lane: str,
    waited: float,
    last_error: PersonaError | None,
    last_429: RateLimitError | None,
    last_455: MaintenanceError | None,
    cooling: bool,
    paused: bool,
) -> PersonaError:
    """Why a request that ran out of time was not (or no longer) sent.

    In a paused lane, the provider's maintenance answer; in a cooling lane, its 429 (with its
    ``Retry-After``); else the request's own last failure; else a timeout saying it was queued.
    """
    said: PersonaError | None = None
    if paused and last_455 is not None:
        said = last_455
    elif cooling and last_429 is not None:
        said = last_error if isinstance(last_error, RateLimitError) else last_429
    elif last_error is not None:
        return last_error
    if said is not None:
        # The lane's error is shared by every request it turned away: each gets its own copy.
        clone = said.for_request(None, None)
        clone.message = f"{said.message}; the request's deadline passed after {waited:.3g}s"
        clone.args = (clone.message,)
        return clone
    return ProviderTimeoutError(
        f"the request's deadline passed after {waited:.3g}s waiting in the lane's queue "
        "(rate limit, concurrency cap or retries): it was never sent",
        sent=False,
        retryable=True,
        provider=lane,
    )


def maintenance_error(said: MaintenanceError | None, waited: float, lane: str) -> MaintenanceError:
    """A request waited ``max_maintenance_wait`` for a provider that is still in maintenance."""
    return MaintenanceError(
        (f"{said.message}; " if said else "") + f"provider still in maintenance after {waited:g}s",
        # The provider's own code and status, as for any other error.
        code=said.code if said else None,
        http_status=said.http_status if said else None,
        provider=lane,
    )
