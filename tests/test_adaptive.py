"""A lane configured above its provider's real limit learns the real one, end to end.

The fake provider enforces its limit in each of the four shapes providers use (a sliding
window, a fixed window reset on the clock, a token bucket, a leaky bucket) and the lane is
configured four times too high, or with no limit at all. What the provider sees is asserted: its
share of the real rate used, its 429s, the longest gap between accepted requests. Time is
compressed (windows of 0.5 s); the same scenarios over longer runs are
``benchmarks/bench_admission.py``'s table.
"""

from __future__ import annotations

import itertools
import logging
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest
from _cli_support import KEYS, config_text, items, run_cli, write_jsonl
from _support import FAST_RETRY, most_in_any_window
from test_redis import Worker, _fake_process, _fake_stats, redis_server  # noqa: F401

from persona_async import CrunProvider, PersonaClient, PersonaRequest
from persona_async.testing import RATE_SHAPES, FakeProvider, RateShape, RequestRecord

# Rates measured in real time: these run one at a time on one worker (--dist loadgroup), so
# that they do not compete with each other for the CPU.
pytestmark = [pytest.mark.anyio, pytest.mark.xdist_group("real_time_rates")]

REAL = 5  # the provider's limit per window
PERIOD = 0.5


def requests(n: int, prefix: str = "") -> list[PersonaRequest]:
    return [PersonaRequest(f"t{prefix}{i}", f"a{prefix}{i}", "Neon Siren", "R&B") for i in range(n)]


async def run(fake: FakeProvider, configured: int | None, n: int, **kw: Any) -> PersonaClient:
    provider = CrunProvider(
        api_key=fake.api_key,
        base_url=fake.url,
        rate_limit=configured,
        rate_period=PERIOD,
        max_concurrency=kw.pop("max_concurrency", 8),
    )
    async with PersonaClient([provider], retry=FAST_RETRY) as client:
        outcomes = [o async for o in client.create_many(requests(n))]
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok][:3]
    return client


def accepted(fake: FakeProvider) -> list[float]:
    return [r.arrived for r in fake.requests if r.response_code == 200]


def rejected(fake: FakeProvider) -> list[RequestRecord]:
    return [r for r in fake.requests if r.response_code == 429]


@pytest.mark.parametrize("configured", [REAL * 4, None], ids=["configured-4x", "unconfigured"])
async def test_a_lane_above_the_providers_limit_learns_it_and_uses_nearly_all_of_it(
    configured: int | None,
) -> None:
    async def one(shape: RateShape) -> None:
        async with FakeProvider(rate_limit=REAL, rate_period=PERIOD, rate_shape=shape) as fake:
            client = await run(fake, configured, 60)

        times = accepted(fake)
        steady = [t for t in times if t >= times[0] + 3 * PERIOD]
        share = (len(steady) - REAL) / (steady[-1] - steady[0]) / (REAL / PERIOD)
        stats = client.stats()["crun"]
        seen = (shape, share, len(rejected(fake)), stats.limit, stats.learned_limit)
        # Loose bounds for a loaded machine; benchmarks/bench_limiter.py has the real figures.
        assert share >= 0.75, seen
        # Discovery: the refused burst (about one per request in flight), then the rate's.
        assert len(rejected(fake)) <= 18, seen
        assert max(b - a for a, b in itertools.pairwise(times)) <= 2 * PERIOD, seen
        assert stats.limit is not None, seen
        assert stats.limit <= REAL + 1, seen
        # Never above what the provider held; paced just above its rate, a leaky bucket refuses
        # every other request, so a failed probe's window may show one less than it holds.
        assert REAL - (shape == "leaky") <= (stats.learned_limit or 0) <= REAL, seen

    # The four shapes at once, each against its own fake: a quarter of the wall time.
    async with anyio.create_task_group() as tg:
        for shape in RATE_SHAPES:
            tg.start_soon(one, shape)


async def test_a_lane_at_or_below_the_providers_limit_is_never_rejected() -> None:
    async with FakeProvider(rate_limit=REAL, rate_period=PERIOD) as fake:
        client = await run(fake, REAL - 1, 40)

    times = accepted(fake)
    assert rejected(fake) == []
    assert most_in_any_window(times, PERIOD) <= REAL - 1
    rate = (len(times) - (REAL - 1)) / (times[-1] - times[0])
    assert rate >= 0.9 * (REAL - 1) / PERIOD
    assert client.stats()["crun"].learned_limit is None


async def test_a_retry_after_rules_the_cooldown_over_the_window() -> None:
    async with FakeProvider(rate_limit=REAL, rate_period=PERIOD, retry_after=1.2) as fake:
        await run(fake, REAL * 4, 15)

    first = rejected(fake)[0].arrived
    resumed = [r.arrived for r in fake.requests if r.arrived > first + 0.05]
    assert resumed[0] >= first + 1.2 - 0.05  # not the 0.5 s window: the 1.2 s the provider said


async def test_what_was_learned_is_in_the_stats_and_logged_once_in_words(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="persona_async")
    async with FakeProvider(rate_limit=REAL, rate_period=PERIOD) as fake:
        client = await run(fake, 20, 40)

    stats = client.stats()["crun"]
    said = "crun: configured 20 per 0.5 s, provider sustained about 5 per 0.5 s: set rate_limit = 5"
    assert (stats.rate_limit, stats.learned_limit, stats.advice) == (20, REAL, said)
    assert [r.getMessage() for r in caplog.records].count(f"lane crun: {said}") == 1


async def test_processes_sharing_a_redis_key_share_the_limit_one_of_them_learned(
    redis_server: Any,  # noqa: F811
) -> None:
    with _fake_process("--rate-limit", str(REAL), "--rate-period", str(PERIOD)) as url:
        config = {"redis": redis_server.url, "fake": url, "rate_limit": 40, "rate_period": PERIOD}
        first = await Worker.start(prefix="first_", count=30, **config)
        second = await Worker.start(prefix="second_", count=20, **config)
        first.go()
        await first.finish()
        learned_by_first = _fake_stats(url)["response_codes"].get("429", 0)
        second.go()  # a new process: its own client, nothing shared but Redis
        await second.finish()
        stats = _fake_stats(url)

    assert all(o["ok"] for o in first.outcomes + second.outcomes)
    assert learned_by_first >= 3  # the first process met the real limit and learned it
    # The second starts at what the first learned: no burst of 40 into a window of 5.
    assert stats["response_codes"].get("429", 0) - learned_by_first <= 1


def test_the_window_guarantee_holds_on_a_slow_event_loop() -> None:
    """Configured to the provider's real limit, the client under ``python -X dev`` (asyncio's
    debug mode slows every callback); the provider in its own process, as in real life."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        from persona_async import CrunProvider, PersonaClient, PersonaRequest

        async def main(url):
            provider = CrunProvider(api_key="test-key", base_url=url,
                                    rate_limit=20, rate_period=1.0, max_concurrency=16)
            async with PersonaClient([provider]) as client:
                reqs = [PersonaRequest(f"t{i}", f"a{i}", "n", "d") for i in range(120)]
                print(sum([o.ok async for o in client.create_many(reqs)]))

        asyncio.run(main(sys.argv[1]))
        """
    )
    # A 1 s window: the SDK's 2% margin is 20 ms, room for a busy machine's scheduling delays.
    with _fake_process("--rate-limit", "20", "--rate-period", "1.0", "--latency", "0.01") as url:
        result = subprocess.run(
            [sys.executable, "-X", "dev", "-c", script, url],
            capture_output=True,
            timeout=60,
            check=True,
        )
        stats = _fake_stats(url)
    assert result.stdout.split() == [b"120"]
    assert stats["window_violations"] == 0


async def test_the_cli_summary_says_which_limit_to_configure(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", items(40, lanes=("crun",)))
    async with FakeProvider(
        api_keys=(KEYS["crun"],), rate_limit=REAL, rate_period=PERIOD
    ) as fake:
        config = config_text(fake.url, rate_limit=20, rate_period=PERIOD, lanes=("crun",))
        (tmp_path / "persona.toml").write_text(config)
        result = await run_cli(
            "batch", str(tmp_path / "in.jsonl"), "--config", str(tmp_path / "persona.toml"),
            "--out", str(tmp_path / "out.jsonl"), "--no-progress",
        )  # fmt: skip

    assert result.returncode == 0, result.stderr
    advice = re.search(
        rb"rate limit learned on crun: configured 20 per 0\.5 s, provider sustained about "
        rb"(\d+) per 0\.5 s: set rate_limit = (\d+)\n",
        result.stdout,
    )
    assert advice is not None, result.stdout
    # What got through in the window of the 429: the real limit, or one or two fewer when this
    # machine was too busy to send them all in that window. Never more than the real limit.
    sustained, advised = int(advice[1]), int(advice[2])
    assert advised == sustained
    assert REAL - 2 <= advised <= REAL
