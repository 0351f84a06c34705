"""What a lane does after a failed attempt, as a table: one row per rule of ``decide``.

``decide`` is pure (it reads the error, the request's attempt so far, the provider and the
lane's clock and changes nothing), so each row is one call: the error, what is known of the
request, and the action expected. The lane only carries actions out; the behaviour tests
(test_retries, test_errors, test_lane_retries, test_lane_maintenance, test_deadline) show it does.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from persona_async import (
    AuthenticationError,
    CrunProvider,
    InsufficientCreditsError,
    KieProvider,
    MaintenanceError,
    MalformedResponseError,
    OverloadedError,
    PersonaError,
    PersonaExistsError,
    PersonaRequest,
    Provider,
    ProviderConnectionError,
    ProviderTimeoutError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    SourceNotReadyError,
    ValidationError,
)
from persona_async._job import _Job
from persona_async._retry import Action, Cool, Fail, Pause, Resend, Stop, decide, resend_or_fail

NOW = 1000.0  # the lane's clock when the attempt failed
BACKOFF = 2.0  # backoff_initial; full jitter is pinned at its ceiling below
POLICY = RetryPolicy(
    max_retries=3, backoff_initial=BACKOFF, backoff_max=60.0, retry_after_max=120.0,
    max_maintenance_wait=600.0,
)  # fmt: skip
CRUN = CrunProvider(api_key="k", rate_limit=None)  # no duplicate detection
CRUN_OPTED_IN = CrunProvider(api_key="k", rate_limit=None, retry_ambiguous=True)
KIE = KieProvider(api_key="k", rate_limit=None)  # a second persona for one audio is a 409


def job(**kw: Any) -> _Job:
    """A request submitted 10 s ago that may start for another 30 s, with no failure yet."""
    request = PersonaRequest("task-1", "clip-1", "Neon Siren", "R&B")
    fields: dict[str, Any] = {"submitted": NOW - 10, "last_start": NOW + 30, "max_retries": 3}
    return _Job(request, b"", lambda *_: None, **{**fields, **kw})


def summary(action: Action, err: PersonaError) -> tuple[object, ...]:
    """The action in a row's words; times relative to NOW."""
    if isinstance(action, Resend):
        return ("resend", round(action.at - NOW, 6), action.counts, action.ambiguous)
    if isinstance(action, Cool):
        assert action.signal is err
        return ("cool", action.said, action.retry_after, round(action.at - NOW, 6), action.counts)
    if isinstance(action, Pause):
        assert action.error is err
        return ("pause", action.wait)
    if isinstance(action, Stop):
        return ("stop", action.error is err)
    return ("fail", type(action.error).__name__, action.error is err)


def sent_lost() -> PersonaError:
    return ProviderConnectionError("reset after the request was sent", sent=True, retryable=True)


ROWS: list[Any] = [
    # -- "slow down": the lane cools; not a failure of the request ------------------------------
    ("429 cools until the window passes", RateLimitError("busy"), {}, CRUN, {},
     ("cool", "429", None, 0.0, False)),
    ("429's Retry-After rules, capped", RateLimitError("busy", retry_after=500), {}, CRUN, {},
     ("cool", "429", 120.0, 0.0, False)),
    ("429 at the last retry still cools", RateLimitError("busy"), {"failures": 3}, CRUN, {},
     ("cool", "429", None, 0.0, False)),
    ("503 while the provider accepts others is a 429", OverloadedError("shed"), {}, CRUN,
     {"last_success": NOW - 4.9}, ("cool", "503", None, 0.0, False)),
    ("503 within two rate periods is a 429", OverloadedError("shed"), {}, CRUN,
     {"last_success": NOW - 19.9, "period": 10.0}, ("cool", "503", None, 0.0, False)),
    ("503 with Retry-After is a 429 even when down", OverloadedError("shed", retry_after=3),
     {}, CRUN, {}, ("cool", "503", 3.0, 0.0, False)),
    ("bare 503s only: down, counted and backed off", OverloadedError("shed"), {"failures": 1},
     CRUN, {"last_success": NOW - 5.1}, ("cool", "503", None, 2 * BACKOFF, True)),
    # -- maintenance: the lane pauses; the request waits for a probe, within its limits ---------
    ("455 waits for the next probe", MaintenanceError("down"), {}, CRUN, {},
     ("pause", True)),
    ("455 still inside max_maintenance_wait", MaintenanceError("down"),
     {"since_maintenance": NOW - 599.9}, CRUN, {}, ("pause", True)),
    ("455 after max_maintenance_wait fails", MaintenanceError("down"),
     {"since_maintenance": NOW - 600}, CRUN, {}, ("pause", False)),
    ("455 at the last start time fails", MaintenanceError("down"), {"last_start": NOW}, CRUN,
     {}, ("pause", False)),
    ("455 to an abandoned request fails", MaintenanceError("down"), {"abandoned": True}, CRUN,
     {}, ("pause", False)),
    # -- the account: the lane stops ------------------------------------------------------------
    ("401 stops the lane", AuthenticationError("bad key"), {}, CRUN, {}, ("stop", True)),
    ("402 stops the lane", InsufficientCreditsError("no credits"), {}, KIE, {},
     ("stop", True)),
    # -- sent and lost: resent only where a resend cannot make a second persona -----------------
    ("lost on crun is unknown", sent_lost(), {}, CRUN, {},
     ("fail", "OutcomeUnknownError", False)),
    ("lost on crun, retry_ambiguous: resent", sent_lost(), {}, CRUN_OPTED_IN, {},
     ("resend", BACKOFF, True, True)),
    ("lost on kie: resent, a 409 will tell", sent_lost(), {}, KIE, {},
     ("resend", BACKOFF, True, True)),
    ("a reply timeout on crun is unknown",
     ProviderTimeoutError("no reply", sent=True, retryable=True), {}, CRUN, {},
     ("fail", "OutcomeUnknownError", False)),
    ("a retryable malformed reply on crun is unknown",
     MalformedResponseError("HTML", retryable=True), {}, CRUN, {},
     ("fail", "OutcomeUnknownError", False)),
    ("a non-retryable malformed reply fails as is", MalformedResponseError("JSON"), {}, KIE,
     {}, ("fail", "MalformedResponseError", True)),
    ("never sent: resent anywhere",
     ProviderConnectionError("refused", sent=False, retryable=True), {}, CRUN, {},
     ("resend", BACKOFF, True, False)),
    ("a TLS failure is not resent", ProviderConnectionError("cert", sent=False), {}, CRUN, {},
     ("fail", "ProviderConnectionError", True)),
    ("409 after a lost attempt says it may be ours", PersonaExistsError("exists"),
     {"ambiguous": True}, KIE, {}, ("fail", "PersonaExistsError", False)),
    ("409 on a first attempt fails as is", PersonaExistsError("exists"), {}, KIE, {},
     ("fail", "PersonaExistsError", True)),
    # -- 500: backoff, within max_retries, the budget and the time left -------------------------
    ("500 is resent after a backoff", ServerError("oops"), {}, CRUN, {},
     ("resend", BACKOFF, True, False)),
    ("the backoff doubles", ServerError("oops"), {"failures": 2}, CRUN, {},
     ("resend", 4 * BACKOFF, True, False)),
    ("500 with max_retries spent fails", ServerError("oops"), {"failures": 3}, CRUN, {},
     ("fail", "ServerError", True)),
    ("500 with max_retries=0 fails", ServerError("oops"), {"max_retries": 0}, CRUN, {},
     ("fail", "ServerError", True)),
    ("500 with the lane's budget spent fails", ServerError("oops"), {}, CRUN,
     {"budget_left": False}, ("fail", "ServerError", True)),
    ("500 resent exactly at the last start", ServerError("oops"),
     {"last_start": NOW + BACKOFF}, CRUN, {}, ("resend", BACKOFF, True, False)),
    ("500 whose backoff ends after the last start fails", ServerError("oops"),
     {"last_start": NOW + BACKOFF - 1e-6}, CRUN, {}, ("fail", "ServerError", True)),
    ("500 to an abandoned request fails", ServerError("oops"), {"abandoned": True}, CRUN, {},
     ("fail", "ServerError", True)),
    # -- the rest fails as it is ----------------------------------------------------------------
    ("a song still generating is not resent by the lane", SourceNotReadyError("generating"),
     {}, KIE, {}, ("fail", "SourceNotReadyError", True)),
    ("422 fails", ValidationError("bad"), {}, CRUN, {}, ("fail", "ValidationError", True)),
    ("a code without a class fails", PersonaError("odd"), {}, CRUN, {},
     ("fail", "PersonaError", True)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("err", "job_fields", "provider", "lane", "expected"),
    [pytest.param(*row[1:], id=row[0]) for row in ROWS],
)
def test_decide(
    monkeypatch: pytest.MonkeyPatch,
    err: PersonaError,
    job_fields: dict[str, Any],
    provider: Provider,
    lane: dict[str, Any],
    expected: tuple[object, ...],
) -> None:
    monkeypatch.setattr(random, "uniform", lambda low, high: high)  # the backoff's ceiling
    facts = {"last_success": -math.inf, "period": 1.0, "budget_left": True, **lane}
    action = decide(err, job(**job_fields), provider, POLICY, now=NOW, **facts)
    assert summary(action, err) == expected


def test_decide_changes_nothing_it_reads() -> None:
    request = job(failures=1, since_maintenance=None)
    before = (request.failures, request.ambiguous, request.since_maintenance, request.done)
    for err in (ServerError("oops"), sent_lost(), MaintenanceError("down"), RateLimitError("x")):
        decide(err, request, KIE, POLICY, now=NOW, last_success=NOW, period=1.0,
               budget_left=True)  # fmt: skip
    assert (request.failures, request.ambiguous, request.since_maintenance, request.done) == before


@pytest.mark.parametrize(
    ("at", "job_fields", "counts", "budget_left", "expected"),
    [
        pytest.param(NOW + 30, {}, False, False, Resend(NOW + 30, False), id="at-last-start"),
        pytest.param(NOW + 30.001, {}, False, True, None, id="after-last-start"),
        pytest.param(NOW, {"failures": 3}, False, True, Resend(NOW, False), id="uncounted"),
        pytest.param(NOW, {"failures": 2}, True, True, Resend(NOW, True), id="last-retry"),
        pytest.param(NOW, {"failures": 3}, True, True, None, id="retries-spent"),
        pytest.param(NOW, {}, True, False, None, id="budget-spent"),
        pytest.param(NOW, {"abandoned": True}, False, True, None, id="abandoned"),
    ],
)  # fmt: skip
def test_resend_or_fail_after_a_cooldown(
    at: float,
    job_fields: dict[str, Any],
    counts: bool,
    budget_left: bool,
    expected: Resend | None,
) -> None:
    # What the lane asks once a cooldown's end is known (a 429's window, a Retry-After).
    err = RateLimitError("busy")
    action = resend_or_fail(err, job(**job_fields), at, counts=counts, budget_left=budget_left)
    assert action == (Fail(err) if expected is None else expected)
