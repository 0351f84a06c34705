"""When to resend, and how long to wait first: the policy as one frozen value, and the one
function that turns a failed attempt into what the lane does next.

``RetryPolicy`` holds the numbers; ``decide`` holds the rules. A lane asks ``decide`` after
every failed attempt and carries out the ``Action`` it gets (``Resend``, ``Cool``, ``Pause``,
``Stop``, ``Fail``); nothing else in the package decides whether a create is sent again.
``decide`` reads its inputs and changes nothing: the table in ``tests/test_retry_decision.py``
pins it row by row.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ._exceptions import (
    LANE_STOPPERS,
    THROTTLES,
    MaintenanceError,
    OutcomeUnknownError,
    OverloadedError,
    PersonaError,
    PersonaExistsError,
    RateLimitError,
    SourceNotReadyError,
    _MaybeSent,
)

if TYPE_CHECKING:
    from ._job import _Job
    from ._providers import Provider

__all__ = [
    "DEFAULT_BACKOFF_INITIAL",
    "DEFAULT_BACKOFF_MAX",
    "DEFAULT_MAX_MAINTENANCE_WAIT",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_RETRY_AFTER_MAX",
    "DEFAULT_RETRY_BUDGET",
    "DEFAULT_RETRY_POLICY",
    "FIELD_RULES",
    "LANE_STOPPERS",
    "OVERLOAD_ALIVE",
    "THROTTLES",
    "Action",
    "Cool",
    "Fail",
    "Pause",
    "Resend",
    "RetryPolicy",
    "Stop",
    "decide",
    "maintenance_deadline",
    "parse_retry_after",
    "resend_or_fail",
    "resends_ambiguous",
    "with_aliases",
]

DEFAULT_MAX_RETRIES = 3
DEFAULT_BACKOFF_INITIAL = 0.5
DEFAULT_BACKOFF_MAX = 30.0
#: A provider's Retry-After is honoured up to this many seconds.
DEFAULT_RETRY_AFTER_MAX = 120.0
#: How long a request waits for a provider in maintenance (455) before it fails.
DEFAULT_MAX_MAINTENANCE_WAIT = 600.0
#: Retries of failed requests (500s, transport errors) a lane may send per rate period, on top
#: of first attempts: an outage must not multiply the load on a provider.
DEFAULT_RETRY_BUDGET = 10
#: A 503 is a limiter's "slow down" while the provider accepted a request this recently (or
#: within two of the lane's rate periods); after longer with nothing but 503s it is down.
OVERLOAD_ALIVE = 5.0



def _at_least(bound: float) -> Callable[[float], bool]:
    return lambda value: value >= bound  # False for NaN


#: Each ``RetryPolicy`` field's rule, as a test and in words. ``RetryPolicy`` checks them; the
#: CLI's ``[client]`` table is built from them, so a new field is a new config key.
FIELD_RULES: Mapping[str, tuple[Callable[[float], bool], str]] = MappingProxyType(
    {
        "max_retries": (_at_least(0), "must be >= 0"),
        "backoff_initial": (_at_least(0), "must be >= 0"),
        "backoff_max": (_at_least(0), "must be >= 0"),
        "retry_after_max": (_at_least(0), "must be >= 0"),
        "max_maintenance_wait": (lambda value: value > 0, "must be > 0"),
        "retry_budget": (_at_least(1), "must be >= 1"),
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How a client resends: pass one as ``PersonaClient(retry=RetryPolicy(...))``. Frozen.

    * ``max_retries``: resends of one request after a 500 or a transport failure (a call's own
      ``max_retries=`` overrides it); 429s and 503s from a limiter do not count;
    * ``backoff_initial``, ``backoff_max``: the wait before resend ``n`` is drawn from
      ``[0, min(backoff_max, backoff_initial * 2 ** (n - 1))]`` (full jitter); a paused lane's
      probes start ``backoff_initial`` apart and double up to ``backoff_max``;
    * ``retry_after_max``: a provider's ``Retry-After`` is honoured up to this many seconds;
    * ``max_maintenance_wait``: how long a request waits out a 455 maintenance before it fails;
    * ``retry_budget``: resends a lane may send per rate period, on top of first attempts.

    Every wait is also bounded by the request's deadline.
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    backoff_initial: float = DEFAULT_BACKOFF_INITIAL
    backoff_max: float = DEFAULT_BACKOFF_MAX
    retry_after_max: float = DEFAULT_RETRY_AFTER_MAX
    max_maintenance_wait: float = DEFAULT_MAX_MAINTENANCE_WAIT
    retry_budget: int = DEFAULT_RETRY_BUDGET

    def __post_init__(self) -> None:
        for name, (ok, says) in FIELD_RULES.items():
            value = getattr(self, name)
            if name in _WHOLE and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{name} must be an int, got {value!r}")
            if not ok(value):
                raise ValueError(f"{name} {says}, got {value!r}")

    def backoff(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (1-based): exponential with full jitter."""
        ceiling = min(self.backoff_max, self.backoff_initial * 2 ** (retry - 1))
        return random.uniform(0, ceiling)

    def capped(self, retry_after: float) -> float:
        """The provider's Retry-After, at most ``retry_after_max``."""
        return min(retry_after, self.retry_after_max)


#: The fields counted in whole numbers (their defaults are ints).
_WHOLE = frozenset(f.name for f in fields(RetryPolicy) if type(f.default) is int)
DEFAULT_RETRY_POLICY = RetryPolicy()


def with_aliases(retry: RetryPolicy, **aliases: float | None) -> RetryPolicy:
    """``retry`` with the fields given as ``PersonaClient``'s keyword aliases (None: not given).

    The aliases only change the default policy: given with a policy of one's own, they are a
    ``TypeError`` naming both, since one of the two would be silently ignored.
    """
    if not isinstance(retry, RetryPolicy):
        raise TypeError(f"retry must be a RetryPolicy, got {type(retry).__name__}")
    given: dict[str, Any] = {name: value for name, value in aliases.items() if value is not None}
    if not given:
        return retry
    if retry is not DEFAULT_RETRY_POLICY:
        names = ", ".join(f"{name}=" for name in given)
        raise TypeError(
            f"pass the retry policy either as retry=RetryPolicy(...) or as {names}, not both: "
            f"put {names} in the RetryPolicy"
        )
    return replace(retry, **given)


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


# -- the decision --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resend:
    """Queue the request again, not before ``at`` (the lane's clock). ``counts``: the resend
    spends one of its ``max_retries`` and one of the lane's retry budget. ``ambiguous``: the
    failed attempt may have made a persona (a 409 to the resend then says so)."""

    at: float
    counts: bool = True
    ambiguous: bool = False


@dataclass(frozen=True, slots=True)
class Cool:
    """The provider said "slow down" (``signal``: a 429, or a limiter's 503, ``said``): the lane
    cools for ``retry_after`` seconds (None: until the window that refused the request has passed,
    as the lane's limiter measures it). The request then goes to ``resend_or_fail`` with the
    later of the cooldown's end and ``at``; ``counts`` as for ``Resend``."""

    signal: RateLimitError | OverloadedError
    said: str
    retry_after: float | None
    at: float
    counts: bool = False


@dataclass(frozen=True, slots=True)
class Pause:
    """The provider is in maintenance (``error``, a 455): the lane pauses and probes. The request
    waits for the next probe when ``wait``, else it fails with ``error``."""

    error: MaintenanceError
    wait: bool


@dataclass(frozen=True, slots=True)
class Stop:
    """The account is unusable (401, 402): the request fails with ``error``, the lane stops and
    every request queued in it fails with a copy."""

    error: PersonaError


@dataclass(frozen=True, slots=True)
class Fail:
    """The request fails with ``error`` (the attempt's own, or one that explains it better)."""

    error: PersonaError


Action = Resend | Cool | Pause | Stop | Fail


def resends_ambiguous(provider: Provider) -> bool:
    """May a request to ``provider`` whose attempt was sent and lost be sent again? Only where
    a second one cannot make a second persona (the provider refuses it: 409) or the user said
    so (``retry_ambiguous=True``)."""
    return provider.detects_duplicates or provider.retry_ambiguous


def decide(
    err: PersonaError,
    job: _Job,
    provider: Provider,
    policy: RetryPolicy,
    *,
    now: float,
    last_success: float,
    period: float,
    budget_left: bool,
) -> Action:
    """What the lane does after ``job``'s attempt failed with ``err`` at ``now``.

    ``job`` is read, never changed: its failures so far, ``max_retries``, last start time (no
    attempt starts after it), whether it was abandoned, whether an earlier attempt was lost and
    since when it waits out a maintenance. ``last_success`` is when the provider last accepted a
    request, ``period`` the lane's rate period, ``budget_left`` whether the lane's retry budget
    has room. A backoff is drawn from ``policy`` only when a resend is considered.
    """
    if isinstance(err, RateLimitError):
        retry_after = None if err.retry_after is None else policy.capped(err.retry_after)
        return Cool(err, "429", retry_after, now)
    if isinstance(err, OverloadedError):
        # A limiter's 503 is a 429 in other words (a Retry-After, or a provider that took other
        # requests lately, says it is one); a provider that answers nothing but bare 503s is
        # down, and they are server errors, each retry counted and backed off as for a 500.
        retry_after = None if err.retry_after is None else policy.capped(err.retry_after)
        alive = now - last_success < max(OVERLOAD_ALIVE, 2 * period) or retry_after is not None
        if alive:
            return Cool(err, "503", retry_after, now)
        return Cool(err, "503", None, now + policy.backoff(job.failures + 1), counts=True)
    if isinstance(err, MaintenanceError):
        expired = now >= maintenance_deadline(job, now, policy)
        return Pause(err, wait=not (job.abandoned or now >= job.last_start or expired))
    if isinstance(err, LANE_STOPPERS):
        return Stop(err)
    if isinstance(err, PersonaExistsError) and job.ambiguous:
        return Fail(err.after_ambiguous_attempt_error())
    ambiguous = isinstance(err, _MaybeSent) and err.sent  # it may have made a persona
    if ambiguous and err.retryable and not resends_ambiguous(provider):
        assert isinstance(err, _MaybeSent)
        return Fail(_outcome_unknown(err, job, provider))
    if err.retryable and not isinstance(err, SourceNotReadyError):  # songs take minutes
        at = now + policy.backoff(job.failures + 1)
        return resend_or_fail(err, job, at, budget_left=budget_left, ambiguous=ambiguous)
    return Fail(err)


def maintenance_deadline(job: _Job, now: float, policy: RetryPolicy) -> float:
    """When ``job`` stops waiting for a provider in maintenance: ``max_maintenance_wait`` after
    it first met the maintenance (``now`` if it has not yet). Queued jobs of a paused lane and
    the one that got the 455 are held to the same time."""
    since = now if job.since_maintenance is None else job.since_maintenance
    return since + policy.max_maintenance_wait


def resend_or_fail(
    err: PersonaError,
    job: _Job,
    at: float,
    *,
    counts: bool = True,
    budget_left: bool = True,
    ambiguous: bool = False,
) -> Resend | Fail:
    """``Resend`` at ``at`` if ``job`` may still be sent then, else ``Fail`` with ``err``.

    A counted resend needs one of ``max_retries`` left and room in the lane's budget; none
    goes to an abandoned job (its answer still reaches its caller) or starts after the job's
    last start time: a resend squeezed in just before the deadline could time out after the
    provider made the persona.
    """
    allowed = not counts or (job.failures + 1 <= job.max_retries and budget_left)
    if job.abandoned or not allowed or at > job.last_start:
        return Fail(err)
    return Resend(at, counts, ambiguous)


def _outcome_unknown(err: _MaybeSent, job: _Job, provider: Provider) -> OutcomeUnknownError:
    unknown = OutcomeUnknownError(
        f"the request was sent and then lost ({err.message}); a persona may or may not "
        f"exist. {provider.kind} documents no duplicate detection, so it was not resent: "
        "check the provider's dashboard for this audio id, then resend it or set "
        "retry_ambiguous=True",
        request=job.request,
        provider=provider.name,
        http_status=err.http_status,
    )
    unknown.__cause__ = err
    return unknown
