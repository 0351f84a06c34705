"""SlidingWindowLimiter on virtual time: the window guarantee, the rate, learning the limit, FIFO.

Most tests run on an event loop whose clock only moves when every task is waiting: its
selector, instead of blocking for ``timeout`` seconds, moves the clock forward by ``timeout``.
``asyncio.sleep`` (and aiolimiter's timers) then cost no real time, so hundreds of windows of
a 10 s period run in milliseconds, and every start time is exact.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import selectors
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import aiolimiter
import pytest
from _support import most_in_any_window

from persona_async._learning import MARGIN_HALF_LIFE, MAX_PACE_MARGIN, PACE_MARGIN, AdaptiveLimit
from persona_async._limiter import Hold, Start, advice
from persona_async._ratelimit import SlidingWindowLimiter
from persona_async.testing import RATE_SHAPES, RateShape
from persona_async.testing._fake import RateWindow

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


def virtual_limiter(
    limit: int | None, period: float, *, measure: bool = False
) -> SlidingWindowLimiter:
    loop = asyncio.get_running_loop()
    return SlidingWindowLimiter(
        limit, period, measure=measure, clock=loop.time, sleep=asyncio.sleep
    )


async def paced(limiter: SlidingWindowLimiter, n: int) -> list[Start]:
    """``n`` starts one paced interval (``period / limit``) apart: no burst among them."""
    assert limiter.limit is not None
    starts = []
    for _ in range(n):
        starts.append(await limiter.acquire())
        await asyncio.sleep(limiter.period / limiter.limit)
    return starts


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


# -- learning the provider's real limit ---------------------------------------------------------
#
# The provider is simulated on the same virtual clock by the fake's own rate windows
# (persona_async.testing's RateWindow: sliding, fixed, token bucket), so hundreds of windows of
# traffic run in milliseconds and every figure is exact. Workers act as the lane does: acquire,
# send (latency/2 to arrive), and on a 429 wait the cooldown the limiter returns, then resend.

REAL = 10  # the provider's real limit per period
PERIOD = 1.0
LATENCY = 0.02


class Simulation:
    """What the provider saw: arrival times of accepted and rejected requests."""

    def __init__(self) -> None:
        self.accepted: list[float] = []
        self.rejected: list[float] = []
        self.limiter: SlidingWindowLimiter | None = None

    def share(self, since: float) -> float:
        """Accepted per second after ``since``, as a share of the provider's real rate."""
        steady = [t for t in self.accepted if t >= since]
        return (len(steady) - REAL) / (steady[-1] - steady[0]) / (REAL / PERIOD)

    def rejected_per_100(self, since: float = 0.0) -> float:
        ok = sum(1 for t in self.accepted if t >= since)
        bad = sum(1 for t in self.rejected if t >= since)
        return 100 * bad / (ok + bad)

    def longest_stall(self) -> float:
        times = sorted(self.accepted)
        return max(b - a for a, b in itertools.pairwise(times))


def simulate(
    shape: RateShape,
    configured: int | None,
    items: int,
    *,
    real: int = REAL,
    concurrency: int = 8,
    count_rejected: bool = False,
    retry_after: float | None = None,
    jitter: float = 0.0,
) -> Simulation:
    """``items`` requests through a lane's limiter to a provider enforcing ``real`` per window.

    With ``retry_after``, every 429 carries that ``Retry-After``: as a lane does, the whole lane
    cools that long and tells its limiter (``hold("cooling", ...)``). With ``jitter``, each
    request reaches the provider up to that much later than usual (a busy event loop, a
    network), at random but the same in every run.
    """
    rng = random.Random(7)

    async def main() -> Simulation:
        loop = asyncio.get_running_loop()
        sim = Simulation()
        provider = RateWindow(shape, real, PERIOD, count_rejected=count_rejected)
        # A lane configured with no limit has no window either: it measures the provider's.
        limiter = sim.limiter = virtual_limiter(configured, PERIOD, measure=configured is None)
        todo = items
        cool_until = 0.0

        async def worker() -> None:
            nonlocal todo, cool_until
            while todo:
                todo -= 1
                while True:
                    await asyncio.sleep(cool_until - loop.time())
                    start = await limiter.acquire()
                    limiter.sent(start)
                    await asyncio.sleep(LATENCY / 2 + rng.uniform(0.0, jitter))
                    ok = provider.admit(loop.time())
                    (sim.accepted if ok else sim.rejected).append(loop.time())
                    await asyncio.sleep(LATENCY / 2)
                    if ok:
                        limiter.accepted(start)
                        break
                    wait = await limiter.throttled(start)
                    if retry_after is not None:
                        wait = retry_after
                        cool_until = max(cool_until, loop.time() + wait)
                        await limiter.hold("cooling", wait)
                    await asyncio.sleep(wait)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return sim

    return run_virtual(main)


@pytest.mark.parametrize("shape", RATE_SHAPES)
@pytest.mark.parametrize("configured", [REAL * 4, None], ids=["configured-4x", "unconfigured"])
def test_a_limit_above_the_providers_converges_to_nearly_all_of_its_real_rate(
    shape: RateShape, configured: int | None
) -> None:
    sim = simulate(shape, configured, 600)

    # Steady state, after the first windows: at least 85% of the real rate, at most 5 429s per
    # 100 requests, no stall longer than two windows.
    assert sim.share(since=5 * PERIOD) >= 0.85
    assert sim.rejected_per_100(since=5 * PERIOD) <= 5
    assert sim.longest_stall() <= 2 * PERIOD
    # A whole run, discovery included.
    assert sim.rejected_per_100() <= (10 if configured else 15)
    assert sim.limiter is not None
    learned = sim.limiter.learned or 0
    if configured and shape != "leaky":
        assert learned == REAL
    else:
        # Never above what the provider held. A leaky bucket paced just above its rate refuses
        # every other request, so the window of a failed probe may show one less than it
        # holds; a measured window is advised per a round period, from the starts it held.
        rate = learned / sim.limiter.learned_period
        assert 0.85 * REAL / PERIOD <= rate <= REAL / PERIOD


def test_a_lane_paced_at_a_leaky_providers_rate_keeps_it_when_its_sends_jitter() -> None:
    # Sends that reach nginx up to 15 ms later than they left (15% of its 100 ms interval):
    # two paced requests can arrive too close together. Each such refusal widens the pace
    # (the provider took the whole level in that window) instead of lowering the rate, which
    # took the lane to 5 a second after one refusal in its first second.
    sim = simulate("leaky", REAL, 400, jitter=0.015)
    assert sim.limiter is not None
    assert sim.limiter.limit == REAL
    # Jitter that never ends costs a refusal each time the margin halves back (every
    # MARGIN_HALF_LIFE periods), about one per 20 requests here; a lowered rate cost far more.
    assert sim.rejected_per_100(since=3 * PERIOD) <= 5, sim.rejected_per_100(since=3 * PERIOD)
    assert sim.share(since=3 * PERIOD) >= 0.8, sim.share(since=3 * PERIOD)


def test_a_widened_pace_narrows_again_when_the_jitter_is_gone() -> None:
    limit = AdaptiveLimit(10, 1.0)
    limit.bursting(now=0.0)
    assert limit.pace_margin(0.0) == PACE_MARGIN
    assert limit.jittered(now=1.0)
    assert limit.jittered(now=1.1)
    assert limit.jittered(now=1.2)
    assert limit.pace_margin(1.2) == MAX_PACE_MARGIN
    assert not limit.jittered(now=1.3)  # at its widest, a refusal is about the rate
    assert limit.pace_margin(1.3 + MARGIN_HALF_LIFE) == MAX_PACE_MARGIN / 2
    assert limit.pace_margin(1.3 + 3 * MARGIN_HALF_LIFE) == PACE_MARGIN
    assert limit.current == 10


@pytest.mark.parametrize("shape", RATE_SHAPES)
def test_rejections_that_count_against_the_window_still_converge(shape: RateShape) -> None:
    sim = simulate(shape, REAL * 4, 600, count_rejected=True)

    assert sim.share(since=5 * PERIOD) >= 0.85
    assert sim.rejected_per_100(since=5 * PERIOD) <= 5


@pytest.mark.parametrize("shape", RATE_SHAPES)
def test_a_limit_at_or_below_the_providers_is_used_fully_and_never_rejected(
    shape: RateShape,
) -> None:
    for configured in (REAL, REAL - 2):
        sim = simulate(shape, configured, 300)

        if shape == "leaky":
            # Nothing says a provider takes no burst until it refuses one: the opening burst
            # (the 8 workers' first requests) gets one request through; then the lane paces.
            assert len(sim.rejected) == 7
            assert max(sim.rejected) < 0.05
        else:
            assert sim.rejected == []
        assert sim.share(since=2 * PERIOD) * REAL >= 0.9 * configured
        assert sim.limiter is not None
        assert sim.limiter.learned is None


def test_a_burst_of_429s_from_one_window_is_one_decrease() -> None:
    async def main() -> tuple[int | None, int | None]:
        limiter = virtual_limiter(40, 1.0)
        starts = await paced(limiter, 24)  # 24 on their way, one every 1/40 s
        await asyncio.sleep(0.05)  # their answers come back
        first = await limiter.throttled(starts[10])  # the provider took 10, then said 429
        assert first > 0  # cooling until the window that produced it has passed
        after_first = limiter.limit
        for start in starts[11:]:  # the same burst: already on its way before we reacted
            assert await limiter.throttled(start) > 0
        return after_first, limiter.limit

    after_first, after_all = run_virtual(main)
    assert after_first == 20  # at most half per event: 10 got through, 40 was configured
    # The burst's other 13 429s confirm the estimate: down to what got through, never below
    # (halving per 429, as before, would have ended at 1).
    assert after_all == 10


def test_a_429_to_a_request_sent_after_the_decrease_is_a_new_event() -> None:
    async def main() -> int | None:
        limiter = virtual_limiter(40, 1.0)
        starts = await paced(limiter, 12)
        await asyncio.sleep(0.05)
        await limiter.throttled(starts[10])  # 10 delivered: down to 20 (half of 40)
        await limiter.throttled(starts[11])  # the same event
        later = await limiter.acquire()  # sent after that decrease
        await asyncio.sleep(0.05)
        return await limiter.throttled(later) and limiter.limit

    assert run_virtual(main) == 10


def test_with_a_retry_after_longer_than_the_window_probes_are_as_rare_in_those() -> None:
    # Every 429 says Retry-After: 8 s, eight windows: each failed probe stops the lane that long.
    # Probing at the level that failed after 1, 2, 4 ... windows, as without one, would lose
    # nearly half the rate (57% in this run); counted in Retry-Afters, patience keeps it near
    # 80% (80% here; 86% before a level had to be sent in full to count as held: a window
    # spent in a Retry-After's hold then grew the limit, and the 429s after it doubled the
    # patience as failed probes).
    sim = simulate("sliding", REAL * 4, 1500, retry_after=8 * PERIOD)
    since = 20 * PERIOD
    assert sim.share(since) >= 0.78, sim.share(since)
    assert sim.rejected_per_100(since) <= 0.5, sim.rejected_per_100(since)


def test_a_window_measured_through_a_long_retry_after_keeps_the_burst_it_measures_from() -> None:
    # Every 429 says Retry-After: 4 s, four windows: the probes that measure an unconfigured
    # lane's window wait that long, and the log must still hold the burst they count from (it
    # was trimmed at two windows: one request per 40 s measured, 9% of the rate).
    sim = simulate("sliding", None, 300, retry_after=4 * PERIOD)
    assert sim.limiter is not None
    assert (sim.limiter.limit or 0) / sim.limiter.period >= 2.0  # 10 per 4 s, climbing
    assert sim.share(since=20 * PERIOD) >= 0.6, sim.share(since=20 * PERIOD)


def test_probing_at_a_level_that_failed_waits_longer_each_time() -> None:
    """After a 429 at 11, the limiter probes 11 again after 1, 2, 4, 8 clean windows."""
    sim = simulate("sliding", REAL * 4, 1500)
    # Each failed probe is one 429; they thin out as patience doubles.
    late = [t for t in sim.rejected if t >= 20 * PERIOD]
    early = [t for t in sim.rejected if 5 * PERIOD <= t < 20 * PERIOD]
    assert len(late) / (sim.accepted[-1] - 20 * PERIOD) < len(early) / (15 * PERIOD)


def test_an_unconfigured_limiter_admits_everything_until_its_first_429() -> None:
    async def main() -> list[float]:
        return await acquire_all(virtual_limiter(None, 1.0), [0.0] * 500)

    assert most_in_any_window(run_virtual(main), 1.0) == 500


def test_what_was_learned_reads_as_advice() -> None:
    assert advice("crun", 40, 10, 1.0) == (
        "crun: configured 40 per 1 s, provider sustained about 10 per 1 s: set rate_limit = 10"
    )
    assert advice("kie", None, 18, 10.0) == (
        "kie: no rate_limit configured, provider sustained about 18 per 10 s: "
        "set rate_limit = 18, rate_period = 10"
    )


class ManualClock:
    """A clock that moves only when slept on (or told to): one task at a time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def test_acquire_with_an_injected_clock_paces_by_sleeping_on_it() -> None:
    clock = ManualClock()
    limiter = SlidingWindowLimiter(2, 1.0, margin=0.0, clock=clock, sleep=clock.sleep)

    async def main() -> list[float]:
        starts = []
        for _ in range(6):
            await limiter.acquire()
            starts.append(clock.now)
        return starts

    assert asyncio.run(main()) == pytest.approx([0.0, 0.0, 1.0, 1.0, 2.0, 2.0])


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
        limiter.sent(Start(-123.0))  # nothing admitted at that time: counted now, to be safe
        await limiter.acquire()
        return loop.time()

    assert run_virtual(main) >= 10.0


# -- AdaptiveLimit's rules, one at a time (no clock: every time is given) ---------------------


def test_a_429_sent_before_the_last_decrease_is_not_a_new_event() -> None:
    limit = AdaptiveLimit(40, 1.0)
    assert limit.congested(sent_at=0.00, now=0.05, delivered=10) is True
    assert limit.congested(sent_at=0.01, now=0.06, delivered=10) is False  # already on its way
    assert limit.congested(sent_at=0.07, now=0.10, delivered=10) is True  # sent after: news


def test_a_provider_taking_one_request_a_window_is_paced_at_one() -> None:
    limit = AdaptiveLimit(2, 1.0)
    limit.congested(sent_at=0.0, now=0.1, delivered=1)
    assert limit.current == 1


def test_a_window_in_which_nothing_got_through_changes_no_limit_but_waits_it_out() -> None:
    async def main() -> tuple[int | None, float]:
        limiter = virtual_limiter(40, 1.0)
        first = await limiter.acquire()
        await asyncio.sleep(0.05)
        wait = await limiter.throttled(first)  # someone else filled the provider's window
        return limiter.limit, wait

    current, wait = run_virtual(main)
    assert current == 40
    assert wait == pytest.approx(1.02 - 0.05)  # until the window that produced it has passed


def test_what_was_learned_is_said_two_windows_after_the_first_429() -> None:
    limit = AdaptiveLimit(40, 1.0)
    limit.congested(sent_at=0.0, now=1.0, delivered=10)
    assert limit.learned(now=2.9) is None  # too early to call it settled
    limit.congested(sent_at=2.5, now=2.95, delivered=10)  # a failed probe later on
    assert limit.learned(now=3.0) == 10  # settled since the first 429, whatever came since


def test_the_limit_grows_only_after_a_window_in_which_the_lane_wanted_more() -> None:
    limit = AdaptiveLimit(40, 1.0)
    limit.congested(sent_at=0.0, now=0.1, delivered=10)
    limit.congested(sent_at=0.11, now=0.2, delivered=10)  # down to the 10 delivered
    assert limit.current == 10
    limit.grow(now=5.0)
    assert limit.current == 10  # idle windows prove nothing
    limit.saturated = True
    limit.grow(now=5.0)
    assert limit.current == 11
    limit.grow(now=6.5)
    assert limit.current == 11  # a clean window on, but the lane has not wanted more since


def test_a_level_never_sent_in_full_is_neither_held_nor_probed_above() -> None:
    # The lane wanted more for a moment (a wait), but sent 18 of the 20 allowed in any window:
    # 20 is not a level the provider held, and probing 21 would risk a 429 for nothing. (The
    # demo advised 21 against a fake allowing 20 this way.)
    limit = AdaptiveLimit(40, 1.0)
    limit.congested(sent_at=0.0, now=0.1, delivered=20)  # 40 -> 20
    limit.saturated = True
    limit.grow(now=1.2, held=lambda: 18)
    assert (limit.current, limit.proven) == (20, None)
    limit.grow(now=1.3, held=lambda: 20)
    assert (limit.current, limit.proven) == (21, 20)


def test_what_the_limiter_held_is_counted_in_the_providers_window_length() -> None:
    async def main() -> tuple[int | None, int | None]:
        limiter = virtual_limiter(40, 1.0)
        starts = await paced(limiter, 21)
        await limiter.throttled(starts[-1])  # 20 got through: down to 20 a window
        await asyncio.sleep(2.5)
        # Ten a second for two seconds, and a wait once: the lane wanted more, and sent 20 in
        # the two windows it looks back over, but never 20 in one.
        for _ in range(20):
            await limiter.acquire()
            await asyncio.sleep(0.1)
        limiter._adaptive.saturated = True
        await limiter.acquire()
        return limiter.limit, limiter.learned

    assert run_virtual(main) == (20, 20)  # not probed, and 20 (from the 429) is what it learned


def test_what_was_learned_is_the_level_held_when_a_probe_above_it_fails_short() -> None:
    # The lane holds 3 a window (a clean, saturated window), probes 4, and the 429's window
    # shows only 2 accepted (a start on the window's edge): it runs at 2 for now, but what it
    # learned, and advises, is 3, the level it held. A drop that is not a failed probe (the
    # provider lowered its limit) forgets the level held.
    limit = AdaptiveLimit(None, 1.0)
    limit.congested(sent_at=0.0, now=0.1, delivered=3)
    assert limit.current == 3
    _, now = windows_to_grow(limit, 0.1)
    assert limit.current == 4
    limit.congested(sent_at=now + 0.1, now=now + 0.1, delivered=2)
    assert (limit.current, limit.learned(now + 2.0)) == (2, 3)
    later = now + 5.0  # long after any probe
    limit.congested(sent_at=later, now=later, delivered=1)
    assert (limit.current, limit.learned(later)) == (1, 1)


def test_a_lane_that_climbs_back_to_its_configured_limit_and_holds_it_advises_nothing() -> None:
    limit = AdaptiveLimit(12, 1.0)
    limit.congested(sent_at=0.0, now=0.1, delivered=10)
    assert limit.learned(3.0) == 10
    now = 0.1
    while limit.current < 12:
        _, now = windows_to_grow(limit, now)
    assert limit.learned(now) == 11  # held 11 cleanly; 12 not yet
    limit.saturated = True
    limit.grow(now + 1.0)  # a clean, saturated window at 12
    assert limit.learned(now + 1.0) is None  # the configured limit holds


def test_a_probe_that_failed_waits_longer_at_that_level_each_time() -> None:
    limit = AdaptiveLimit(40, 1.0)
    limit.congested(sent_at=0.0, now=0.1, delivered=10)
    limit.congested(sent_at=0.11, now=0.2, delivered=10)
    waits = []
    now = 0.2
    for _ in range(4):
        grew_at = now
        while limit.current == 10:  # saturated every window until it probes 11
            now += 1.0
            limit.saturated = True
            limit.grow(now)
        waits.append(round(now - grew_at))
        limit.congested(sent_at=now, now=now + 0.05, delivered=10)  # 11 fails at once
        now += 0.05
    assert waits == [1, 2, 4, 8]


def test_a_start_moved_to_its_send_after_later_ones_keeps_the_window_in_order() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        limiter = virtual_limiter(2, 1.0)
        first = await limiter.acquire()
        await limiter.acquire()
        await asyncio.sleep(0.5)
        limiter.sent(first)  # it left half a second late, after the second one
        starts = []
        for _ in range(2):
            await limiter.acquire()
            starts.append(loop.time())
        return starts

    # The second start frees its slot first (1.02), the moved one half a second later.
    assert run_virtual(main) == pytest.approx([1.02, 1.52])


def test_an_earlier_429_in_the_window_is_not_counted_as_delivered() -> None:
    async def main() -> int | None:
        limiter = virtual_limiter(20, 1.0)
        starts = await paced(limiter, 6)
        await asyncio.sleep(0.05)
        await limiter.throttled(starts[2])  # 2 got through before it: down to 10 (half)
        later = await limiter.acquire()
        await asyncio.sleep(0.05)
        await limiter.throttled(later)  # 6 started before it, one of them refused: 5 delivered
        return limiter.limit

    assert run_virtual(main) == 5


def windows_to_grow(limit: AdaptiveLimit, now: float) -> tuple[float, float]:
    """Saturated every window from ``now`` until the limit grows: (windows it took, the time)."""
    start, level = now, limit.current
    while limit.current == level:
        now += limit.period
        limit.saturated = True
        limit.grow(now)
    return (now - start) / limit.period, now


def test_a_late_429_from_a_window_in_which_nothing_got_through_confirms_nothing() -> None:
    limit = AdaptiveLimit(3, 0.5)
    assert limit.congested(sent_at=0.1, now=0.1, delivered=0) is True  # no estimate: waits
    assert limit.congested(sent_at=-0.05, now=0.15, delivered=3) is False  # that same event
    assert limit.current == 3


def test_an_unconfigured_lane_whose_provider_took_one_request_a_window_is_paced_at_one() -> None:
    limit = AdaptiveLimit(None, 2.0)
    limit.congested(sent_at=3.25, now=3.5, delivered=1)
    assert limit.current == 1


@pytest.mark.parametrize(("level", "probe"), [(10, 11), (30, 32), (50, 53)])
def test_each_probe_is_five_percent_of_the_limit_rounded_half_up_as_redis_rounds(
    level: int, probe: int
) -> None:
    limit = AdaptiveLimit(None, 1.0)
    limit.congested(sent_at=0.0, now=0.25, delivered=level)
    assert limit.current == level
    limit.saturated = True
    limit.grow(1.25)
    assert limit.current == probe


@pytest.mark.parametrize(("held", "windows"), [(0.5, 2), (1.5, 1)], ids=["at-once", "later"])
def test_only_a_429_within_two_windows_of_growing_counts_as_a_failed_probe(
    held: float, windows: float
) -> None:
    # Half-second windows: "two windows" is 1 s. A 429 0.5 s after growing from 10 to 11 says
    # 11 failed (the next probe of 11 waits two windows); one 1.5 s after says the provider
    # changed, not that the probe failed (one window, as for any level).
    limit = AdaptiveLimit(40, 0.5)
    limit.congested(sent_at=0.0, now=0.25, delivered=10)
    limit.congested(sent_at=0.25, now=0.5, delivered=10)
    assert limit.current == 10
    _, now = windows_to_grow(limit, 0.5)
    assert limit.current == 11
    limit.congested(sent_at=now + held, now=now + held, delivered=10)
    assert limit.current == 10
    assert windows_to_grow(limit, now + held)[0] == windows


def test_quick_successive_decreases_keep_patience_for_the_level_that_failed() -> None:
    # A probe of 6 fails, then the provider refuses twice more in quick succession, driving the
    # lane down to 1. It climbs back one step per window: its patience is kept for 6, the level
    # whose probe failed, not spent on each level it passed on the way down.
    limit = AdaptiveLimit(10, 1.0)
    limit.congested(sent_at=0.0, now=0.25, delivered=3)
    assert limit.current == 5  # at most half of the 10 configured
    limit.saturated = True
    limit.grow(1.25)
    assert limit.current == 6
    limit.congested(sent_at=2.5, now=2.75, delivered=10)  # 6 failed: patience at 6
    limit.congested(sent_at=4.0, now=4.25, delivered=1)
    limit.congested(sent_at=5.5, now=5.75, delivered=10)
    assert limit.current == 1
    climb = []
    now = 5.75
    while limit.current < 6:
        windows, now = windows_to_grow(limit, now)
        climb.append(windows)
    assert climb == [1, 1, 1, 1, 2]  # 1 to 5 a window each; 6 only after two


def test_after_a_retry_after_a_probe_at_the_level_that_failed_waits_patience_retry_afters() -> (
    None
):
    # A probe of 11 fails; its 429 said Retry-After: 3 windows. Back at 10, the lane tries 11
    # again only after 2 (patience) x 3 windows; a Retry-After shorter than a window counts as
    # one window, as when there is none.
    for retry_after, windows in [(3.0, 6), (0.5, 2), (None, 2)]:
        limit = AdaptiveLimit(None, 1.0)
        limit.congested(sent_at=0.0, now=1.0, delivered=10)
        _, now = windows_to_grow(limit, 1.0)
        assert limit.current == 11
        limit.congested(sent_at=now + 0.25, now=now + 0.25, delivered=10)  # 11 failed at once
        if retry_after is not None:
            limit.cooling(retry_after)
        assert limit.current == 10
        assert windows_to_grow(limit, now + 0.25)[0] == windows, retry_after


def test_only_a_cooldown_makes_a_lanes_limiter_more_patient_not_a_maintenance_pause() -> None:
    async def probe_wait(state: Hold) -> float:
        clock = asyncio.get_running_loop().time
        limiter = virtual_limiter(20, 1.0)
        await paced(limiter, 10)
        await limiter.throttled(await limiter.acquire())  # 10 got through: the limit is 10
        while limiter.limit == 10:  # a saturated window later it probes 11...
            await limiter.acquire()
        await asyncio.sleep(0.3)
        await limiter.throttled(await limiter.acquire())  # ...which fails: patience 2
        assert limiter.limit == 10
        await limiter.hold(state, 5.0)
        changed = clock()
        while limiter.limit == 10:
            await limiter.acquire()
        return clock() - changed

    assert run_virtual(lambda: probe_wait("paused")) < 3.0  # two windows
    assert run_virtual(lambda: probe_wait("cooling")) >= 9.5  # two Retry-Afters


def test_holding_at_the_level_that_failed_forgets_it_and_the_climb_goes_on_a_window_a_step() -> (
    None
):
    limit = AdaptiveLimit(None, 0.5)
    limit.congested(sent_at=0.0, now=1.0, delivered=10)
    _, now = windows_to_grow(limit, 1.0)
    assert limit.current == 11
    limit.congested(sent_at=now + 0.25, now=now + 0.25, delivered=15)  # 11 failed at once
    now += 0.25
    assert limit.current == 10
    climb = []
    for _ in range(4):
        windows, now = windows_to_grow(limit, now)
        climb.append(windows)
    # Back to 11 after two windows; held there two windows: the failure is forgotten, so 12
    # and 13 come a window each. A probe of 14 that fails now waits two windows, not four.
    assert (limit.current, climb) == (14, [2, 2, 1, 1])
    limit.congested(sent_at=now + 0.25, now=now + 0.25, delivered=14)
    assert windows_to_grow(limit, now + 0.25)[0] == 2


def test_a_decrease_more_than_two_windows_after_the_last_is_patient_at_its_own_level() -> None:
    # A probe of 21 fails (patience 2); 2.75 windows later the provider refuses at 15: that is
    # a new failure at 15, not the aftermath of the one at 21, so the climb back waits at 15.
    limit = AdaptiveLimit(40, 1.0)
    limit.congested(sent_at=0.0, now=0.25, delivered=5)
    limit.saturated = True
    limit.grow(1.5)
    assert limit.current == 21
    limit.congested(sent_at=3.0, now=3.0, delivered=15)
    assert limit.current == 15
    limit.congested(sent_at=5.75, now=5.75, delivered=15)
    assert limit.current == 14
    assert windows_to_grow(limit, 5.75)[0] == 2


@pytest.mark.parametrize(
    ("ages", "starts"),
    [
        # 0.2 s, 0.5 s and 5 s ago (the last out of the window): one more start fits now, the
        # next when the 0.5 s one leaves the window (1.02 s wide: its margin), then the 0.2 s.
        ((0.2, 0.5, 5.0), [0.0, 0.52, 0.82]),
        # Two at the same moment (one time each, so both count): both leave at 0.52.
        ((0.5, 0.5), [0.0, 0.52, 0.52]),
    ],
    ids=["any-order", "same-moment"],
)
def test_starts_a_dead_run_made_fill_the_window_as_they_were_made(
    ages: tuple[float, ...], starts: list[float]
) -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(10.0)
        limiter = virtual_limiter(3, 1.0)
        limiter.note_earlier_sends(ages)
        made = []
        for _ in range(3):
            await limiter.acquire()
            made.append(loop.time() - 10.0)
        return made

    assert run_virtual(main) == pytest.approx(starts)


def test_a_429_while_the_window_still_has_room_costs_no_wait() -> None:
    async def main() -> tuple[float, int | None]:
        limiter = virtual_limiter(100, 1.0)
        starts = await paced(limiter, 5)
        await asyncio.sleep(0.05)
        wait = await limiter.throttled(starts[4])  # 4 got through: down to 50 (half of 100)
        return wait, limiter.limit

    assert run_virtual(main) == (0.0, 50)


def test_a_request_written_a_tenth_of_a_window_after_admission_counts_from_then() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        limiter = virtual_limiter(1, 1.0)
        first = await limiter.acquire()
        await asyncio.sleep(0.1)  # its connection took that long to open
        limiter.sent(first)
        await limiter.acquire()
        return loop.time()

    # Its window runs from 0.1 s (1.02 s wide): the next start is at 1.12, not 1.02.
    assert run_virtual(main) == pytest.approx(1.12)
