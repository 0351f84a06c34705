"""The polling machinery: cadence, its own budget, 429s slow polls only, shared loops, deadlines.

The poller takes a plain coroutine function as its query, so these tests count and time the
calls a status endpoint would receive. The lane-level behaviour (what a provider sees) is pinned
in test_sources.py against the fake provider.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from _support import most_in_any_window
from aiohttp import web
from aiohttp.test_utils import TestServer

from persona_async import (
    AuthenticationError,
    CrunProvider,
    OverloadedError,
    PersonaError,
    PollPolicy,
    ProviderTimeoutError,
    RateLimitError,
    ServerError,
)
from persona_async._polling import PollBudget, Poller, Running
from persona_async._transport import SessionPool

pytestmark = pytest.mark.anyio

FAST = PollPolicy(
    initial=0.05, factor=2.0, max_interval=0.2, min_interval=0.02, jitter=0.0, rate_limit=50
)


class Task:
    """A provider task that finishes after ``polls`` queries; records when it was asked."""

    def __init__(self, polls: int, result: str = "done") -> None:
        self.remaining = polls
        self.result = result
        self.asked: list[float] = []

    async def query(self) -> str | Running:
        self.asked.append(time.monotonic())
        self.remaining -= 1
        return self.result if self.remaining <= 0 else Running("running")


def expired(last: Running | None, err: PersonaError | None) -> PersonaError:
    status = last.status if last else "never answered"
    return ProviderTimeoutError(f"still {status}; last error {err!r}", sent=False)


async def test_polls_until_finished_with_growing_intervals_after_first() -> None:
    task = Task(polls=5)
    poller = Poller(FAST)
    start = time.monotonic()
    result = await poller.wait("t", task.query, first=0.1, deadline=start + 5, expired=expired)
    assert result == "done"
    assert len(task.asked) == 5
    assert task.asked[0] - start >= 0.1
    gaps = [b - a for a, b in zip(task.asked, task.asked[1:], strict=False)]
    # 0.05, 0.1, 0.2, then capped at 0.2 (jitter off); scheduling only ever adds delay.
    for gap, planned in zip(gaps, [0.05, 0.1, 0.2, 0.2], strict=True):
        assert gap >= planned * 0.95
    await poller.aclose()


def test_intervals_grow_to_the_cap_and_never_below_the_floor() -> None:
    policy = PollPolicy(initial=2.0, factor=1.5, max_interval=30.0, min_interval=0.5)
    intervals = [policy.interval(n) for n in range(1, 30)]
    assert all(0.5 <= i <= 33.0 for i in intervals)
    assert intervals[0] < 2.3
    assert min(intervals[-5:]) >= 27.0  # tens of seconds at the end
    with pytest.raises(ValueError, match="min_interval"):
        PollPolicy(initial=0.1, min_interval=0.5)


async def test_deadline_ends_the_wait_with_the_callers_error_and_last_status() -> None:
    task = Task(polls=10**6)
    poller = Poller(FAST)
    start = time.monotonic()
    with pytest.raises(ProviderTimeoutError, match="still running"):
        await poller.wait("t", task.query, deadline=start + 0.3, expired=expired)
    took = time.monotonic() - start
    assert 0.3 <= took < 1.0
    asked = len(task.asked)
    await asyncio.sleep(0.3)
    assert len(task.asked) == asked  # the loop stopped with its last listener
    await poller.aclose()


async def test_a_failed_task_ends_the_wait_at_once() -> None:
    calls = 0

    async def query() -> str | Running:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise AuthenticationError("key revoked", provider="x")
        return Running("running")

    poller = Poller(FAST)
    with pytest.raises(AuthenticationError):
        await poller.wait("t", query, deadline=time.monotonic() + 5, expired=expired)
    assert calls == 2
    await poller.aclose()


async def test_transient_failures_are_polled_through() -> None:
    calls = 0

    async def query() -> str | Running:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ServerError("upstream hiccup", provider="x")
        return "done"

    poller = Poller(FAST)
    assert await poller.wait("t", query, deadline=time.monotonic() + 5, expired=expired) == "done"
    assert calls == 3
    await poller.aclose()


async def test_transient_failure_until_deadline_is_reported_with_the_last_error() -> None:
    async def query() -> str | Running:
        raise ServerError("upstream down", provider="x")

    poller = Poller(FAST)
    with pytest.raises(ProviderTimeoutError, match="upstream down"):
        await poller.wait("t", query, deadline=time.monotonic() + 0.2, expired=expired)
    await poller.aclose()


async def test_waits_for_one_key_share_one_loop() -> None:
    task = Task(polls=3)
    poller = Poller(FAST)
    deadline = time.monotonic() + 5
    results = await asyncio.gather(
        *(poller.wait("same", task.query, deadline=deadline, expired=expired) for _ in range(20))
    )
    assert results == ["done"] * 20
    assert len(task.asked) == 3
    await poller.aclose()


async def test_a_shared_loop_outlives_a_waiter_whose_deadline_passed() -> None:
    task = Task(polls=6)
    poller = Poller(FAST)
    now = time.monotonic()
    short = poller.wait("k", task.query, deadline=now + 0.1, expired=expired)
    long = poller.wait("k", task.query, deadline=now + 5, expired=expired)
    results = await asyncio.gather(short, long, return_exceptions=True)
    assert isinstance(results[0], ProviderTimeoutError)
    assert results[1] == "done"
    assert len(task.asked) == 6
    await poller.aclose()


async def test_the_lane_budget_caps_polls_across_tasks() -> None:
    policy = PollPolicy(
        initial=0.02,
        factor=1.0,
        max_interval=0.02,
        min_interval=0.01,
        rate_limit=4,
        rate_period=0.25,
        jitter=0.0,
    )
    poller = Poller(policy)
    tasks = [Task(polls=4) for _ in range(5)]
    deadline = time.monotonic() + 10
    await asyncio.gather(
        *(poller.wait(i, t.query, deadline=deadline, expired=expired) for i, t in enumerate(tasks))
    )
    starts = [s for t in tasks for s in t.asked]
    assert len(starts) == 20
    assert most_in_any_window(starts, 0.25) <= 4
    await poller.aclose()


@pytest.mark.parametrize("error", [RateLimitError, OverloadedError], ids=["429", "503"])
async def test_429_on_a_poll_waits_out_retry_after_for_every_poll_of_the_lane(
    error: type[RateLimitError | OverloadedError],
) -> None:
    asked: list[tuple[str, float]] = []
    throttled = False

    def make(name: str) -> object:
        async def query() -> str | Running:
            nonlocal throttled
            asked.append((name, time.monotonic()))
            if name == "a" and not throttled:
                throttled = True
                raise error("slow down", retry_after=0.3, provider="x")
            return "done" if sum(n == name for n, _ in asked) >= 3 else Running()

        return query

    poller = Poller(FAST)
    deadline = time.monotonic() + 5
    start = time.monotonic()
    await asyncio.gather(
        poller.wait("a", make("a"), deadline=deadline, expired=expired),  # type: ignore[arg-type]
        poller.wait("b", make("b"), first=0.02, deadline=deadline, expired=expired),  # type: ignore[arg-type]
    )
    # After the 429 at ~0, nobody in the lane polls again before Retry-After has passed.
    later = [t - start for _, t in asked[1:]]
    assert all(t >= 0.29 for t in later), later


async def test_a_429_slows_the_poll_budget_by_half_at_most() -> None:
    budget = PollBudget(PollPolicy(rate_limit=8, rate_period=1.0))
    assert budget.limit == 8
    starts = []
    for _ in range(3):  # paced (a 429 to a burst would only stop the bursts)
        starts.append(await budget.acquire())
        await asyncio.sleep(1 / 8)
    await budget.throttled(starts[-1], 0.0)  # two got through, then a 429
    assert budget.limit == 4  # learned like creates: halved at most per event


async def test_aclose_stops_loops_and_their_waiters_get_their_error() -> None:
    task = Task(polls=10**6)
    poller = Poller(FAST)
    waiter = asyncio.ensure_future(
        poller.wait("t", task.query, deadline=time.monotonic() + 30, expired=expired)
    )
    await asyncio.sleep(0.1)
    await poller.aclose()
    with pytest.raises(ProviderTimeoutError):
        await asyncio.wait_for(waiter, 1)


async def test_a_status_query_is_a_get_with_the_key_and_stays_on_base_url() -> None:
    seen: list[tuple[str, str, str | None]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request.method, request.path_qs, request.headers.get("x-api-key")))
        return web.json_response({"code": 200})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with TestServer(app, host="127.0.0.1") as server:
        base = str(server.make_url("")).rstrip("/")
        provider = CrunProvider(api_key="k-123", base_url=base)
        pool = SessionPool()
        try:
            raw = await pool.query(provider, base + "/status?task_id=t1", timeout=5.0)
            posted = await pool.query(provider, base + "/tasks", timeout=5.0, body=b"{}")
            with pytest.raises(ValueError, match="base_url"):
                await pool.query(provider, "http://127.0.0.2:1/status", timeout=5.0)
        finally:
            await pool.aclose()
    assert raw.status == posted.status == 200
    assert seen == [("GET", "/status?task_id=t1", "k-123"), ("POST", "/tasks", "k-123")]
