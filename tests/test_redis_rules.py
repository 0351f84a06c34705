"""The shared limit's rules, one at a time, as the starts Redis grants show them.

Each test drives ``RedisLimiter`` lanes (what a lane calls: ``acquire``, ``throttled``) against a
real ``redis-server`` and counts the starts granted: what the provider would receive. The rules
are ``AdaptiveLimit``'s (pinned on virtual time in test_ratelimit.py), run by the Lua script
inside Redis so that every process sharing a key runs at one limit; these tests pin the Lua's
copy of them. Windows are compressed to a fraction of a second: a start that has to wait waits
for most of a window, far longer than the ``QUICK`` a start granted at once may take.

Neighbours: test_redis.py (RedisLimiter across real processes), test_redis_holds.py (a 455 or
429 held for every process sharing a key).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import pickle
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio
from _support import HeldPort, free_port, most_in_any_window
from test_redis import API_KEY, PASSWORD, RedisServer, redis_server  # noqa: F401

from persona_async import CrunProvider, RedisUnavailableError
from persona_async._limiter import LaneLimiter, Start
from persona_async.redis import RedisLimiter

pytestmark = pytest.mark.anyio

#: How long a start granted at once may take on a loaded machine (a round trip to Redis).
QUICK = 0.1

Lanes = Callable[..., LaneLimiter]


@pytest.fixture
async def lanes(redis_server: RedisServer) -> AsyncIterator[Lanes]:  # noqa: F811
    """Makes lanes with limiters of their own (as separate processes have) on one shared key."""
    made: list[LaneLimiter] = []

    def make(limit: int | None, period: float, margin: float = 0.02) -> LaneLimiter:
        provider = CrunProvider(api_key=API_KEY, rate_limit=limit, rate_period=period)
        made.append(RedisLimiter(redis_server.url, margin=margin).for_lane(provider))
        return made[-1]

    yield make
    for made_lane in made:
        await made_lane.aclose()


async def granted_at_once(limiter: LaneLimiter, most: int) -> list[Start]:
    """Starts taken one after another until one has to wait (or ``most`` were taken)."""
    starts: list[Start] = []
    for _ in range(most):
        try:
            starts.append(await asyncio.wait_for(limiter.acquire(), QUICK))
        except TimeoutError:
            break
    return starts


async def paced(limiter: LaneLimiter, n: int, interval: float) -> list[Start]:
    """``n`` starts ``interval`` apart: a 429 to one of them is about the rate. (A 429 to a
    start granted together with others says the provider takes no burst: the lane then paces,
    and keeps its limit.)"""
    starts: list[Start] = []
    for _ in range(n):
        starts.append(await asyncio.wait_for(limiter.acquire(), QUICK))
        await asyncio.sleep(interval)
    return starts


async def next_window(limiter: LaneLimiter, period: float, most: int) -> int:
    """How many starts ``limiter`` grants at once once the current window has passed."""
    await asyncio.sleep(period * 1.1)
    return len(await granted_at_once(limiter, most))


async def refuse_the_fourth(limiter: LaneLimiter, period: float = 0.3) -> None:
    """Four starts paced through a window, the fourth answered 429: three a window from then."""
    starts = await paced(limiter, 4, period / 5)
    await limiter.throttled(starts[-1])


# -- how far one congestion event lowers the shared limit ---------------------------------------


async def test_a_burst_of_429s_from_one_window_lowers_the_shared_limit_once(lanes: Lanes) -> None:
    # Ten went out through a window; the provider took five and refused the rest. Those 429s
    # are one event (all sent before anyone reacted): the shared limit goes to the five
    # delivered, not down by half again for each refusal.
    period = 0.3
    here, there = lanes(10, period), lanes(10, period)
    starts = await paced(here, 10, period / 12)
    for start in starts[5:]:
        await here.throttled(start)
    assert await next_window(there, period, 10) == 5


async def test_a_refused_burst_paces_every_process_sharing_the_key_at_the_same_limit(
    lanes: Lanes, redis_server: RedisServer  # noqa: F811
) -> None:
    # Ten went out at once and the provider (a leaky bucket: nginx's limit_req) took one. It
    # takes no burst, which says nothing of its rate: every process keeps the limit of ten a
    # window and spaces its starts a tenth of a window apart, instead of learning "one".
    period = 1.0
    here, there = lanes(10, period), lanes(10, period)
    starts = await granted_at_once(here, 10)
    assert len(starts) == 10
    for start in starts[1:]:
        await here.throttled(start)
    assert (here.limit, there.limit) == (10, 10)
    await asyncio.sleep(period * 1.1)  # the burst's window has passed
    granted = [await asyncio.wait_for(there.acquire(), period) for _ in range(4)]
    keys = there._keys  # type: ignore[attr-defined]
    async with redis.asyncio.Redis.from_url(redis_server.url) as raw:  # on Redis's own clock
        stamps = [await raw.zscore(keys[0], start.member) for start in granted]
    gaps = [(b - a) / 1e6 for a, b in itertools.pairwise(stamps)]
    # Paced a tenth of a window apart, widened by the window's 2% and the pace's 3%...
    assert all(gap >= period / 10 * 1.02 * 1.025 for gap in gaps), gaps
    assert all(gap < period / 10 + QUICK for gap in gaps), gaps  # ... at the rate, not slower


async def test_a_paced_start_refused_alone_widens_every_processs_pace_and_keeps_the_rate(
    lanes: Lanes, redis_server: RedisServer  # noqa: F811
) -> None:
    # Paced at the configured ten a window, one request arrived early (a busy machine sent it
    # late after the one before): the provider took every other start. The rate holds; every
    # process sharing the key spaces its starts wider (the pace's 3% doubled), and none learns
    # "nine".
    period = 1.0
    here, there = lanes(10, period), lanes(10, period)
    starts = await granted_at_once(here, 10)
    for start in starts[1:]:
        await here.throttled(start)  # a burst: pace
    await asyncio.sleep(period * 1.1)
    early = await asyncio.wait_for(here.acquire(), period)
    await asyncio.wait_for(here.acquire(), period)
    await here.throttled(early)
    assert (here.limit, there.limit) == (10, 10)
    granted = [await asyncio.wait_for(there.acquire(), period) for _ in range(4)]
    keys = there._keys  # type: ignore[attr-defined]
    async with redis.asyncio.Redis.from_url(redis_server.url) as raw:  # on Redis's own clock
        stamps = [await raw.zscore(keys[0], start.member) for start in granted]
    gaps = [(b - a) / 1e6 for a, b in itertools.pairwise(stamps)]
    assert all(gap >= period / 10 * 1.02 * 1.055 for gap in gaps), gaps
    assert all(gap < period / 10 * 1.1 + QUICK for gap in gaps), gaps


async def test_one_429_lowers_the_shared_limit_at_most_by_half(lanes: Lanes) -> None:
    # A lone 429 early in a run (a gateway's hiccup, one request in) would otherwise pin every
    # process sharing the key to one request a window.
    limiter = lanes(10, 3.0)
    _, second = await paced(limiter, 2, 0.31)
    await limiter.throttled(second)
    # Five a window now: the two already in this window and three more.
    assert len(await granted_at_once(limiter, 10)) == 3


async def test_a_429_when_nothing_got_through_waits_the_window_out_but_keeps_the_limit(
    lanes: Lanes,
) -> None:
    # The first start of a window was refused: someone else (or a run before this one) filled
    # it. Nothing says what the provider allows, so the limit stays; the window is waited out.
    period = 0.3
    limiter = lanes(6, period)
    (only,) = await granted_at_once(limiter, 1)
    waited = await limiter.throttled(only)
    assert waited >= period * 0.8
    assert await next_window(limiter, period, 10) == 6


async def test_an_earlier_429_in_the_window_is_not_counted_as_delivered(lanes: Lanes) -> None:
    # Four a window configured. The first start of the window was refused (nothing to learn
    # from); two more got through and the fourth was refused: the provider delivered two,
    # not three, and two a window it is.
    period = 0.3
    limiter = lanes(4, period)
    (refused,) = await paced(limiter, 1, period / 5)
    await limiter.throttled(refused)
    starts = await paced(limiter, 3, period / 5)
    await limiter.throttled(starts[-1])
    assert await next_window(limiter, period, 10) == 2


# -- growing back ------------------------------------------------------------------------------


async def probe_four(limiter: LaneLimiter, period: float) -> list[Start]:
    """After ``refuse_the_fourth``: starts as the window allows, until the limit probed four;
    the last one left on its own (a 429 to it is the probe's, not a burst's)."""
    starts = []
    while limiter.limit != 4:
        starts.append(await asyncio.wait_for(limiter.acquire(), 5 * period))
    await asyncio.sleep(period / 7)
    starts.append(await asyncio.wait_for(limiter.acquire(), 5 * period))
    return starts


async def test_after_a_429_the_shared_limit_grows_back_once_a_clean_window_wanted_more(
    lanes: Lanes,
) -> None:
    # Four a window configured, a 429 at the fourth: three a window. The lane keeps wanting
    # more; after one clean window the shared limit probes back up to four, and no further.
    period = 0.3
    limiter = lanes(4, period)
    await refuse_the_fourth(limiter)
    granted = []
    for _ in range(5):
        await asyncio.wait_for(limiter.acquire(), 5 * period)
        granted.append(time.monotonic())
    assert most_in_any_window(granted, period * 0.9) == 4


async def test_the_shared_limit_grows_only_after_a_window_in_which_the_lane_wanted_more(
    lanes: Lanes,
) -> None:
    # A lane that used less than its limit learned nothing about whether more would pass:
    # probing upward then would only risk another 429.
    period = 0.3
    limiter = lanes(4, period)
    await refuse_the_fourth(limiter)  # three a window now
    await asyncio.sleep(period * 1.1)
    assert len(await granted_at_once(limiter, 2)) == 2  # room to spare: no reason to grow
    assert await next_window(limiter, period, 10) == 3


async def test_a_probe_that_failed_waits_two_clean_windows_before_trying_that_level_again(
    lanes: Lanes,
) -> None:
    # Three a window after a 429 at four; a clean window later the probe back to four gets a
    # 429 at once. Probing four again one window later would only collect another 429.
    period = 0.3
    limiter = lanes(4, period)
    await refuse_the_fourth(limiter)
    probe = await probe_four(limiter, period)
    await limiter.throttled(probe[-1])  # the probe at four failed
    until = time.monotonic() + 1.9 * period
    limits = []
    while (left := until - time.monotonic()) > 0:  # the lane wants more all along
        try:
            await asyncio.wait_for(limiter.acquire(), left)
        except TimeoutError:
            break
        limits.append(limiter.limit)
    assert len(limits) >= 3  # it kept sending, at three a window
    assert set(limits) == {3}


async def test_after_a_retry_after_every_process_probes_the_failed_level_patience_of_them_on(
    lanes: Lanes,
) -> None:
    # As above, and the failed probe's 429 said Retry-After: two windows. Another process on
    # the key probes four again only after two (patience) of those, four windows: a failed
    # probe now costs a Retry-After, not a window.
    period, retry_after = 0.3, 0.6
    limiter, other = lanes(4, period), lanes(4, period)
    await refuse_the_fourth(limiter)
    probe = await probe_four(limiter, period)
    await limiter.throttled(probe[-1])  # the probe at four failed
    failed = time.monotonic()
    await limiter.hold("cooling", retry_after)
    await asyncio.wait_for(other.acquire(), 10 * period)  # after the hold: three a window
    assert other.limit == 3
    while other.limit != 4:
        await asyncio.wait_for(other.acquire(), 10 * period)
    assert time.monotonic() - failed >= 2 * retry_after - 0.05


async def test_what_every_process_learns_is_the_level_held_when_a_probe_above_it_fails_short(
    lanes: Lanes, redis_server: RedisServer  # noqa: F811
) -> None:
    # As AdaptiveLimit's rule (test_ratelimit.py): the shared limit held 3 through a clean
    # window and has just probed 4; the 429's window shows only 2 accepted. The limit drops to
    # 2, and what every process learned is 3. The key's state is written as the script keeps
    # it (times in microseconds of Redis's clock), then a real 429 is reported.
    period = 1.0
    limiter, other = lanes(None, period), lanes(None, period)
    keys = limiter._keys  # type: ignore[attr-defined]
    async with redis.asyncio.Redis.from_url(redis_server.url) as raw:
        seconds, micros = await raw.time()
        now = seconds * 1_000_000 + micros
        grown = now - 200_000  # probed 4 a fifth of a window ago
        await raw.hset(keys[2], mapping={
            "cur": 4, "changed": grown, "grown": grown, "decreased": now - 5_000_000,
            "ceiling": 0, "patience": 1, "sat": 0, "sustained": 3, "evidence": 3,
            "discovered": now - 10_000_000, "proven": 3,
        })  # fmt: skip
        await raw.zadd(keys[0], {"a": now - 300_000, "b": now - 150_000, "probe": now})
    await limiter.throttled(Start(0.0, "probe"))
    await granted_at_once(other, 1)
    assert (limiter.limit, limiter.learned) == (2, 3)
    assert (other.limit, other.learned) == (2, 3)


async def test_a_level_the_shared_limit_held_through_a_clean_window_is_what_was_learned(
    lanes: Lanes,
) -> None:
    # Down to 3 after a 429, the shared limit climbs: 4 after a clean window, 5 after the next.
    # Having held 4 through a window, 4 is what every process learned, not the 3 of the 429
    # (or 5, if the last acquire found 5 sent in full through a window and probed 6; never a
    # level not sent in full: the last acquire may probe 6 after an idle window at 5).
    period = 0.3
    limiter, other = lanes(None, period), lanes(None, period)
    starts = await granted_at_once(limiter, 4)
    await limiter.throttled(starts[-1])
    assert limiter.limit == 3
    while other.limit != 5:
        await asyncio.wait_for(other.acquire(), 5 * period)
    await asyncio.sleep(period)  # two windows since the 429: settled
    await granted_at_once(limiter, 1)
    learned = limiter.learned
    assert learned is not None
    assert 4 <= learned <= limiter.limit - 1


async def test_a_level_never_sent_in_full_is_not_probed_above(lanes: Lanes) -> None:
    # Ten a window after a 429; a process had to wait once (the shared "wanted more"), then
    # the key went quiet. A window with one start proves nothing about ten: no probe to eleven.
    period = 0.3
    limiter = lanes(20, period)
    starts = await paced(limiter, 11, period / 12)
    await limiter.throttled(starts[-1])  # ten got through
    assert limiter.limit == 10
    await asyncio.wait_for(limiter.acquire(), 2 * period)  # waits: the window is full
    await asyncio.sleep(2.2 * period)  # past the two windows the script looks back over
    await asyncio.wait_for(limiter.acquire(), QUICK)
    await asyncio.sleep(period)
    await asyncio.wait_for(limiter.acquire(), QUICK)
    assert limiter.limit == 10


async def test_a_lane_without_a_rate_limit_is_not_paced_until_its_first_429(lanes: Lanes) -> None:
    assert len(await granted_at_once(lanes(None, 30.0), 30)) == 30


async def test_the_shared_limit_and_what_was_learned_show_in_the_stats_two_windows_on(
    lanes: Lanes,
) -> None:
    # What LaneStats.limit and .learned_limit show: the shared limit at once, what the
    # provider sustained once two windows have passed since the first 429 (not before: one
    # 429 early in a run says little).
    period = 0.2
    limiter, other = lanes(10, period), lanes(10, period)
    _, second = await paced(limiter, 2, period / 8)
    await limiter.throttled(second)
    assert (limiter.limit, limiter.learned) == (5, None)
    await granted_at_once(other, 1)
    assert other.limit == 5  # one limit for every process sharing the key
    await asyncio.sleep(period * 2.2)
    assert (limiter.learned, other.learned) == (5, 5)


# -- never above the configured limit ----------------------------------------------------------


async def test_a_lowered_rate_limit_rules_over_the_higher_limit_redis_remembers(
    lanes: Lanes,
) -> None:
    # A run at 20 a window learned 15 and Redis keeps that for an hour. The next run is
    # configured at 5 (a cheaper plan, or the advice followed halfway): 5 it is, at once.
    period = 0.3
    before = lanes(20, period)
    starts = await paced(before, 20, period / 25)
    await before.throttled(starts[15])  # fifteen got through
    assert await next_window(lanes(5, period), period, 20) == 5


async def test_a_probe_upward_never_takes_the_window_above_the_configured_limit(
    lanes: Lanes,
) -> None:
    # A probe adds 5% of the limit, rounded: at 39 of 40 that is two. With a wide margin
    # (the window is twice the period) the window still holds the 40 sent before the 429 when
    # the probe comes; a 41st must wait.
    period = 0.3
    limiter = lanes(40, period, margin=1.0)
    starts = await granted_at_once(limiter, 40)
    assert len(starts) == 40
    await limiter.throttled(starts[-1])  # 39 delivered: 39 a window
    assert await granted_at_once(limiter, 1) == []  # the lane wants more: a probe is due
    await asyncio.sleep(period * 1.2 - QUICK)
    assert await granted_at_once(limiter, 1) == []


# -- the window --------------------------------------------------------------------------------


async def test_the_margin_widens_the_shared_window_by_that_fraction_of_the_period(
    lanes: Lanes,
) -> None:
    # margin=1: a start counts for two periods, so the provider's own window, however its
    # clock lags ours, has seen the last one go before the next comes.
    period = 0.3
    limiter = lanes(3, period, margin=1.0)
    assert len(await granted_at_once(limiter, 3)) == 3
    await asyncio.sleep(period * 1.1)
    assert await granted_at_once(limiter, 1) == []
    await asyncio.sleep(period)
    assert len(await granted_at_once(limiter, 3)) == 3


# -- settings: refused with the setting and the rule named, password never shown ---------------

GOOD = f"redis://:{PASSWORD}@127.0.0.1:6379/0"


SCHEMES = "RedisLimiter: the URL must start with redis://, rediss:// or unix://, got "
RANGES = "RedisLimiter: margin and recheck must be >= 0 and timeout > 0"


@pytest.mark.parametrize(
    ("args", "kw", "error", "says"),
    [
        ((42,), {}, TypeError, "RedisLimiter: url must be a string, got int"),
        ((f"http://:{PASSWORD}@127.0.0.1:6379/0",), {}, ValueError, SCHEMES + "http://"),
        (("//127.0.0.1:6379/0",), {}, ValueError, SCHEMES + "no scheme"),
        (
            (f"redis://:{PASSWORD}@127.0.0.1:port/0",),
            {},
            ValueError,
            "RedisLimiter: not a valid Redis URL: redis://:***@127.0.0.1:port/0",
        ),
        (
            (GOOD,),
            {"fallback": "remote"},
            ValueError,
            "RedisLimiter: fallback must be None or \"local\", got 'remote'",
        ),
        ((GOOD,), {"margin": -0.01}, ValueError, RANGES),
        ((GOOD,), {"timeout": 0}, ValueError, RANGES),
        ((GOOD,), {"recheck": -1}, ValueError, RANGES),
    ],
    ids=["url-type", "scheme", "no-scheme", "bad-url", "fallback", "margin", "timeout", "recheck"],
)
def test_bad_limiter_settings_are_refused_naming_the_setting_and_the_rule(
    args: tuple[Any, ...], kw: dict[str, Any], error: type[Exception], says: str
) -> None:
    with pytest.raises(error) as refused:
        RedisLimiter(*args, **kw)
    assert str(refused.value) == says


def test_a_limiter_holding_a_password_refuses_to_be_pickled_and_says_why() -> None:
    with pytest.raises(TypeError) as refused:
        pickle.dumps(RedisLimiter(GOOD))
    assert str(refused.value) == "RedisLimiter may hold a Redis password and is not picklable"


def test_every_redis_scheme_and_the_edges_of_each_setting_are_accepted() -> None:
    for url in (GOOD, "rediss://127.0.0.1:6380/0", "unix:///run/redis.sock?db=1"):
        assert RedisLimiter(url).url.split(":")[0] == url.split(":")[0]
    edges = RedisLimiter(GOOD, margin=0, timeout=0.5, recheck=0)
    assert (edges.margin, edges.timeout, edges.recheck) == (0, 0.5, 0)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://alice:pa:ss@127.0.0.1:6379/0", "redis://alice:***@127.0.0.1:6379/0"),
        ("redis://:p@ss@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        (
            f"redis://127.0.0.1:6379/0?db=0&password={PASSWORD}",
            "redis://127.0.0.1:6379/0?db=0&password=***",
        ),
        (f"unix:///run/redis.sock?password={PASSWORD}", "unix:///run/redis.sock?password=***"),
        ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
        ("unix:///run/redis:6379.sock", "unix:///run/redis:6379.sock"),
    ],
    ids=[
        "colon-in-password",
        "at-in-password",
        "query",
        "unix-socket",
        "unix-no-password",
        "unix-colon-in-path",
    ],
)
def test_the_url_shown_blanks_exactly_the_password(url: str, shown: str) -> None:
    assert RedisLimiter(url).url == shown


@pytest.mark.parametrize(
    "auth",
    [
        f":{PASSWORD}@127.0.0.1:{{port}}/0",
        f":{PASSWORD}@127.0.0.1:{{port}}/0?password=other",
        f"user:{PASSWORD}:tail@127.0.0.1:{{port}}/0",  # a colon in the password
    ],
    ids=["userinfo", "userinfo-and-query", "colon-in-password"],
)
async def test_a_password_the_server_echoes_back_is_blanked_in_the_error(auth: str) -> None:
    # A proxy or an odd server that repeats the command it refused: redis-py puts its words in
    # the exception, and the exception's text in ours.
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ValueError):
            while line := await reader.readline():
                words = []
                for _ in range(int(line[1:])):
                    await reader.readline()  # $length
                    words.append((await reader.readline()).strip())
                writer.write(b"-ERR invalid password '" + words[-1] + b"'\r\n")
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    limiter = RedisLimiter("redis://" + auth.format(port=port))
    lane = limiter.for_lane(CrunProvider(api_key=API_KEY))
    try:
        with pytest.raises(RedisUnavailableError) as refused:
            await asyncio.wait_for(lane.acquire(), 5)
    finally:
        await lane.aclose()
        server.close()
        await server.wait_closed()
    assert "invalid password '***'" in str(refused.value)
    assert PASSWORD not in str(refused.value)


# -- Redis slow, silent, restarted or down -------------------------------------------------------


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A server that accepts and reads, and never answers."""
    with contextlib.suppress(OSError):
        while await reader.read(4096):
            pass
    writer.close()


@pytest.mark.parametrize("where", ["unanswered-connect", "silent-server"])
async def test_a_redis_that_does_not_answer_fails_the_request_unsent_within_its_timeout(
    where: str,
) -> None:
    # One connection attempt and one immediate retry, each bounded by ``timeout``: the
    # request fails in about twice that, not redis-py's defaults (5 s, ten retries).
    timeout = 0.3
    async with HeldPort() as held:
        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = held.port if where == "unanswered-connect" else server.sockets[0].getsockname()[1]
        limiter = RedisLimiter(f"redis://:{PASSWORD}@127.0.0.1:{port}/0", timeout=timeout)
        lane = limiter.for_lane(CrunProvider(api_key=API_KEY))
        started = time.monotonic()
        try:
            with pytest.raises(RedisUnavailableError) as down:
                await asyncio.wait_for(lane.acquire(), 10 * timeout)
        finally:
            took = time.monotonic() - started
            await lane.aclose()
            server.close()
            await server.wait_closed()
    assert took < 2.7 * timeout, f"{took:.2f}s"
    assert down.value.attempts == 0
    assert down.value.provider == "crun"


async def test_within_recheck_of_a_failure_requests_fail_and_cooldowns_go_on_without_redis() -> (
    None
):
    # Redis takes ``timeout`` to fail each time: only the first request after a failure pays it.
    timeout = 0.3
    async with HeldPort() as held:
        limiter = RedisLimiter(held.url.replace("http", "redis"), timeout=timeout, recheck=60)
        lane = limiter.for_lane(CrunProvider(api_key=API_KEY))
        try:
            with pytest.raises(RedisUnavailableError):
                await lane.acquire()
            started = time.monotonic()
            with pytest.raises(RedisUnavailableError):
                await lane.acquire()
            await lane.hold("cooling", 1.0)  # a 429's cooldown: not shared, not waited on
            took = time.monotonic() - started
        finally:
            await lane.aclose()
    assert took < timeout / 2, f"{took:.2f}s"


async def test_a_redis_restart_between_two_requests_costs_neither(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    limiter = lane_on(redis_server, recheck=60)
    try:
        await limiter.acquire()
        redis_server.kill()
        redis_server.start()  # the pooled connection is dead; one immediate retry reconnects
        await asyncio.wait_for(limiter.acquire(), 2)
    finally:
        await limiter.aclose()


async def test_a_429_while_redis_is_down_still_cools_the_lane_and_the_next_start_reports_it(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    limiter = lane_on(redis_server, recheck=60)
    try:
        start = await limiter.acquire()
        redis_server.kill()
        await limiter.hold("cooling", 0.5)  # Retry-After: only the sharing is lost
        assert await limiter.throttled(start) == 0.0  # no window to wait for: retry at once
        with pytest.raises(RedisUnavailableError) as down:
            await limiter.acquire()
    finally:
        await limiter.aclose()
    assert (down.value.provider, down.value.attempts) == ("crun", 0)


async def test_once_redis_is_back_a_pause_is_shared_again_even_before_the_next_start(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    here, there = lane_on(redis_server, recheck=0.05), lane_on(redis_server)
    try:
        await here.acquire()
        redis_server.kill()
        with pytest.raises(RedisUnavailableError):
            await here.acquire()
        redis_server.start()
        await asyncio.sleep(0.06)
        await here.hold("paused", 0.3)  # a 455 answered here: every process sharing the key waits
        assert await granted_at_once(there, 1) == []
    finally:
        await here.aclose()
        await there.aclose()


async def test_a_lane_closed_before_it_ever_asked_redis_closes_quietly() -> None:
    limiter = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0")
    await limiter.for_lane(CrunProvider(api_key=API_KEY)).aclose()


def lane_on(server: RedisServer, **kw: Any) -> LaneLimiter:
    provider = CrunProvider(api_key=API_KEY, rate_limit=2, rate_period=30.0)
    return RedisLimiter(server.url, **kw).for_lane(provider)


@pytest.mark.parametrize(
    ("fallback", "then"),
    [
        (None, "requests fail, unsent, until it answers"),
        ("local", "falling back to this process's own limiter until it answers"),
    ],
)
async def test_an_outage_is_logged_once_saying_what_happens_to_requests(
    caplog: pytest.LogCaptureFixture, fallback: Any, then: str
) -> None:
    caplog.set_level(logging.INFO, logger="persona_async")
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    limiter = RedisLimiter(url, fallback=fallback, recheck=0)
    lane = limiter.for_lane(CrunProvider(api_key=API_KEY))
    try:
        for _ in range(2):
            with contextlib.suppress(RedisUnavailableError):
                await lane.acquire()
    finally:
        await lane.aclose()
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = record.getMessage()
    assert message.startswith(f"lane crun: the shared rate limiter's Redis at {limiter.url} ")
    assert message.endswith(f"; {then}")
    assert re.search(r"is unavailable \(\w*ConnectionError: ", message), message
    assert PASSWORD not in caplog.text


# -- fallback="local" ----------------------------------------------------------------------------


async def test_the_local_fallback_keeps_the_margin_and_counts_from_the_send() -> None:
    # Redis is out from the start: this process's own limiter keeps the same window, widened
    # by the same margin, and counting each start from when its request was written.
    period = 0.4
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    provider = CrunProvider(api_key=API_KEY, rate_limit=1, rate_period=period)
    wide = RedisLimiter(nowhere, fallback="local", margin=1.0, recheck=60).for_lane(provider)
    late = RedisLimiter(nowhere, fallback="local", margin=0, recheck=60).for_lane(provider)
    try:
        assert len(await granted_at_once(wide, 1)) == 1
        (start,) = await granted_at_once(late, 1)
        await asyncio.sleep(period / 2)
        late.sent(start)  # a slow connection setup: written half a window after admission
        # A 429 to it, nothing else in its window: wait for the window from its send to pass.
        assert period * 0.8 < await late.throttled(start) <= period
        await asyncio.sleep(period * 0.55)
        assert await granted_at_once(late, 1) == []  # a window after admission, not after send
        assert await granted_at_once(wide, 1) == []  # 1.3 periods on: the margin still holds
    finally:
        await wide.aclose()
        await late.aclose()


async def test_the_local_fallback_remembers_its_starts_from_one_outage_to_the_next(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    provider = CrunProvider(api_key=API_KEY, rate_limit=2, rate_period=30.0)
    limiter = RedisLimiter(redis_server.url, fallback="local", recheck=0).for_lane(provider)
    try:
        redis_server.kill()
        assert len(await granted_at_once(limiter, 2)) == 2  # the local window is full
        redis_server.start()
        assert len(await granted_at_once(limiter, 1)) == 1  # through Redis again
        redis_server.kill()
        assert await granted_at_once(limiter, 1) == []  # the local window is still full
    finally:
        await limiter.aclose()


async def test_the_local_fallback_starts_from_the_limit_learned_so_far(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    provider = CrunProvider(api_key=API_KEY, rate_limit=10, rate_period=3.0)
    limiter = RedisLimiter(redis_server.url, fallback="local", recheck=0).for_lane(provider)
    try:
        _, second = await paced(limiter, 2, 0.31)
        await limiter.throttled(second)  # five a window, learned through Redis
        redis_server.kill()
        assert len(await granted_at_once(limiter, 10)) == 5
    finally:
        await limiter.aclose()


async def test_redis_answering_again_is_logged_once_and_a_new_outage_again(
    redis_server: RedisServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="persona_async")
    limiter = RedisLimiter(redis_server.url, recheck=0)
    lane = limiter.for_lane(CrunProvider(api_key=API_KEY, rate_limit=10, rate_period=30.0))
    try:
        await lane.acquire()
        for _ in range(2):
            redis_server.kill()
            with pytest.raises(RedisUnavailableError):
                await lane.acquire()
            redis_server.start()
            await lane.acquire()
            await lane.acquire()
    finally:
        await lane.aclose()
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    back = f"lane crun: Redis at {limiter.url} answers again; the rate limit is shared again"
    assert [m for level, m in said if level == logging.INFO] == [back, back]
    assert [level for level, _ in said] == [logging.WARNING, logging.INFO] * 2
