"""SlidingWindowLimiter on virtual time: the window guarantee, the sustained rate, AIMD, FIFO.

Most tests run on an event loop whose clock only moves when every task is waiting: its
selector, instead of blocking for ``timeout`` seconds, moves the clock forward by ``timeout``.
``asyncio.sleep`` (and aiolimiter's timers) then cost no real time, so hundreds of windows of
a 10 s period run in milliseconds, and every start time is exact.
"""

from __future__ import annotations

import asyncio
import random
import selectors
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import aiolimiter
import pytest
from _support import most_in_any_window

from persona_async._ratelimit import SlidingWindowLimiter

T = TypeVar("T")


class _VirtualSelector(selectors.DefaultSelector):
    """Polls without blocking; a wait of ``timeout`` seconds moves the virtual clock instead."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if not events:
            if timeout is None:
                raise RuntimeError("every task waits for something that will never happen")
            self.now += max(timeout, 0.0)
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time (see the module docstring); no real I/O may be pending."""

    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


def run_virtual(main: Callable[[], Awaitable[T]]) -> T:
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def virtual_limiter(limit: int, period: float) -> SlidingWindowLimiter:
    loop = asyncio.get_running_loop()
    return SlidingWindowLimiter(limit, period, clock=loop.time, sleep=asyncio.sleep)


async def acquire_all(limiter: SlidingWindowLimiter, arrivals: Sequence[float]) -> list[float]:
    """One task per arrival time: wait until then, acquire, record the virtual start time."""
    loop = asyncio.get_running_loop()
    starts: list[float] = []

    async def one(at: float) -> None:
        await asyncio.sleep(at - loop.time())
        await limiter.acquire()
        starts.append(loop.time())

    await asyncio.gather(*(one(at) for at in arrivals))
    return starts


# -- the window guarantee ---------------------------------------------------------------------


def test_a_burst_of_five_hundred_never_puts_more_than_the_limit_in_any_window() -> None:
    async def main() -> list[float]:
        return await acquire_all(virtual_limiter(20, 10.0), [0.0] * 500)

    starts = run_virtual(main)

    assert len(starts) == 500
    assert most_in_any_window(starts, 10.0) == 20
    # The first 20 go at once: a caller with nothing queued does not wait for nothing.
    assert sorted(starts)[:20] == [0.0] * 20


def test_random_bursts_never_exceed_the_limit_in_any_sliding_window() -> None:
    rng = random.Random(3)
    arrivals: list[float] = []
    for _ in range(40):  # 40 bursts of 1..30 requests at random moments over ~400 s
        at = rng.uniform(0, 400)
        arrivals += [at + rng.uniform(0, 0.5) for _ in range(rng.randint(1, 30))]

    async def main() -> list[float]:
        return await acquire_all(virtual_limiter(20, 10.0), arrivals)

    starts = run_virtual(main)

    assert len(starts) == len(arrivals)
    assert most_in_any_window(starts, 10.0) <= 20
    # Probe windows that end exactly on a start, where an off-by-one would show.
    for start in starts:
        assert sum(start - 10.0 < s <= start for s in starts) <= 20


def test_a_waiting_backlog_gets_at_least_95_percent_of_the_allowed_rate() -> None:
    limit, period, windows = 20, 10.0, 100

    async def main() -> list[float]:
        return await acquire_all(virtual_limiter(limit, period), [0.0] * (limit * windows))

    starts = sorted(run_virtual(main))

    assert most_in_any_window(starts, period) <= limit
    # All limit * windows starts fit in `windows` periods, give or take the 2% margin.
    elapsed = starts[-1] + period  # the last window is used in full
    achieved = len(starts) / elapsed
    assert achieved >= 0.95 * limit / period


def test_a_trickle_below_the_limit_is_never_delayed() -> None:
    # Nine requests per 10 s window, evenly spaced: the limiter must not add any wait.
    arrivals = [i * (10.0 / 9) for i in range(90)]

    async def main() -> list[float]:
        return await acquire_all(virtual_limiter(10, 10.0), arrivals)

    starts = sorted(run_virtual(main))

    assert starts == pytest.approx(arrivals)


def test_aiolimiter_leaky_bucket_admits_about_twice_the_limit_in_the_first_window() -> None:
    """Why the lanes do not use ``aiolimiter.AsyncLimiter(N, T)`` for the provider's window.

    The bucket starts empty: N go at once, and it drains continuously, so N more trickle in
    before the first T seconds are over. A provider that counts windows (kie: 20 per 10 s,
    excess rejected) would reject almost half of them.
    """

    async def bucket() -> list[float]:
        limiter = aiolimiter.AsyncLimiter(20, 10.0)
        loop = asyncio.get_running_loop()
        starts: list[float] = []

        async def one() -> None:
            await limiter.acquire()
            starts.append(loop.time())

        await asyncio.gather(*(one() for _ in range(100)))
        return starts

    async def window() -> list[float]:
        return await acquire_all(virtual_limiter(20, 10.0), [0.0] * 100)

    leaky = run_virtual(bucket)
    ours = run_virtual(window)

    assert most_in_any_window(leaky, 10.0) >= 38  # ~2N: 20 at once plus 19 drained
    assert most_in_any_window(ours, 10.0) == 20


# -- FIFO -------------------------------------------------------------------------------------


def test_waiters_are_served_in_arrival_order() -> None:
    async def main() -> list[int]:
        limiter = virtual_limiter(3, 1.0)
        served: list[int] = []

        async def one(i: int) -> None:
            await asyncio.sleep(i * 0.001)  # arrive one after another
            await limiter.acquire()
            served.append(i)

        await asyncio.gather(*(one(i) for i in range(30)))
        return served

    assert run_virtual(main) == list(range(30))


def test_a_cancelled_waiter_leaves_the_line_without_costing_a_start() -> None:
    async def main() -> tuple[list[int], list[float]]:
        loop = asyncio.get_running_loop()
        limiter = virtual_limiter(1, 1.0)
        served: list[int] = []
        starts: list[float] = []

        async def one(i: int) -> None:
            await limiter.acquire()
            served.append(i)
            starts.append(loop.time())

        await limiter.acquire()  # the window is full until t=1.02
        tasks = [loop.create_task(one(i)) for i in range(3)]
        await asyncio.sleep(0.5)
        tasks[1].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return served, starts

    served, starts = run_virtual(main)

    assert served == [0, 2]
    assert starts == pytest.approx([1.02, 2.04])


# -- AIMD -------------------------------------------------------------------------------------


class ManualClock:
    """A clock that moves only when slept on (or told to): one task at a time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def test_throttled_halves_the_effective_limit_once_per_window() -> None:
    clock = ManualClock()
    limiter = SlidingWindowLimiter(20, 10.0, clock=clock, sleep=clock.sleep)
    assert (limiter.effective_limit, limiter.effective_rate) == (20, 2.0)

    limiter.throttled()
    assert (limiter.effective_limit, limiter.effective_rate) == (10, 1.0)

    # A storm of 429s from one window's requests is one signal, not five halvings.
    for _ in range(5):
        clock.now += 1.0
        limiter.throttled()
    assert limiter.effective_limit == 10

    clock.now += 10.0
    limiter.throttled()
    assert limiter.effective_limit == 5
    for _ in range(10):
        clock.now += 10.0
        limiter.throttled()
    assert limiter.effective_limit == 1  # never below one start per window


def test_succeeded_after_quiet_windows_wins_the_configured_limit_back_step_by_step() -> None:
    clock = ManualClock()
    limiter = SlidingWindowLimiter(20, 10.0, clock=clock, sleep=clock.sleep)
    limiter.throttled()
    assert limiter.effective_limit == 10

    limiter.succeeded()  # same window as the 429: no change yet
    assert limiter.effective_limit == 10

    seen = []
    for _ in range(8):
        clock.now += 10.0
        limiter.succeeded()
        limiter.succeeded()  # at most one step per quiet window
        seen.append(limiter.effective_limit)

    assert seen == [12, 14, 16, 18, 20, 20, 20, 20]


def test_the_lowered_limit_is_what_acquire_enforces() -> None:
    async def main() -> list[float]:
        limiter = virtual_limiter(10, 1.0)
        limiter.throttled()  # 5 per window now
        return await acquire_all(limiter, [0.0] * 50)

    starts = run_virtual(main)

    assert most_in_any_window(starts, 1.0) == 5


def test_acquire_with_an_injected_clock_paces_by_sleeping_on_it() -> None:
    clock = ManualClock()
    limiter = SlidingWindowLimiter(2, 1.0, margin=0.0, clock=clock, sleep=clock.sleep)

    async def main() -> list[float]:
        starts = []
        for _ in range(6):
            await limiter.acquire()
            starts.append(clock.now)
        return starts

    assert asyncio.run(main()) == [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]


@pytest.mark.parametrize(
    ("limit", "period", "margin"), [(0, 1.0, 0.0), (1, 0.0, 0.0), (1, 1.0, -0.1)]
)
def test_nonsense_configuration_is_refused(limit: int, period: float, margin: float) -> None:
    with pytest.raises(ValueError, match="limit must be"):
        SlidingWindowLimiter(limit, period, margin=margin)


def test_a_start_counts_from_when_it_was_sent_not_when_it_was_admitted() -> None:
    """A request that waits (say, for a TLS handshake) after admission reaches the provider
    late; its window is moved to its send time, so the next window cannot overlap it there."""

    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        limiter = virtual_limiter(1, 10.0)
        first = await limiter.acquire()
        await asyncio.sleep(3.0)  # its connection takes 3 s to open
        limiter.sent(first)
        sent_at = loop.time()
        await limiter.acquire()  # the next start waits for the first one's *send* + 10 s
        return sent_at, loop.time()

    sent_at, second = run_virtual(main)
    assert sent_at == pytest.approx(3.0)
    assert second == pytest.approx(3.0 + 10.0 * 1.02)


def test_sent_for_an_unknown_stamp_still_records_a_start() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        limiter = virtual_limiter(1, 10.0)
        limiter.sent(-123.0)  # nothing admitted at that time: counted now, to be safe
        await limiter.acquire()
        return loop.time()

    assert run_virtual(main) >= 10.0
