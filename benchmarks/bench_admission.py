"""Admission against the limiters providers really run: share of the real rate, rejections, stalls.

Every cell is one run of 200 creates through ``create_many`` (crun, ``max_concurrency`` 8, the
fake answering in 20 ms, in its own process) against a provider that allows 10 requests per
second, limited in one of five ways, while the lane is configured right, four times too high,
or not at all (``rate_limit=None``: no rate, no window):

* ``sliding``, ``fixed``, ``bucket``: the fake's own windows (any second; a counter reset on the
  clock's seconds; a token bucket of 10 refilled at 10/s);
* ``nginx``: a real nginx (``limit_req rate=10r/s``, no burst) in front of the fake: one request
  per 100 ms, the rest of any burst refused; ``nginx b10``: ``burst=10 nodelay``;
* ``nginx 503``: nginx without burst and with its default ``limit_req_status``, 503.

Figures per cell (what the provider saw; rejections are 429s, or 503s):

* share: accepted per second over the real rate, whole run (first to last acceptance plus one
  window) and steady (whole seconds from the fifth on);
* rejections per 100 requests the provider saw, whole run and steady;
* the longest stall between two acceptances.

The overload row: no provider limit, a lane of 20 per 2 s with ``max_concurrency`` 16, callers
with a 2 s deadline arriving at 20 per second for 20 s (twice the lane's rate): the share of the
lane's limit each 2 s window sent, and the latest answer after a caller's deadline.

    python benchmarks/bench_admission.py            # the whole table, about 7 minutes
    python benchmarks/bench_admission.py --shape nginx --shape "nginx 503" --n 300
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import itertools
import math
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from _common import API_KEY, FakeProcess, machine, persona_requests, table

from persona_async import CrunProvider, PersonaClient, PersonaError
from persona_async.testing.nginx import NginxLimiter

REAL = 10  # the provider's limit per PERIOD
PERIOD = 1.0
N = 200
CONCURRENCY = 8
LATENCY = 0.02
STEADY_FROM = 5.0  # seconds after the first acceptance
CONFIGS: tuple[tuple[str, int | None], ...] = (
    ("configured = real", REAL),
    ("configured 4x real", 4 * REAL),
    ("rate_limit=None", None),
)
SHAPES = ("sliding", "fixed", "bucket", "nginx", "nginx b10", "nginx 503")
#: Targets (README, "Lanes: how the limits are kept"): steady and whole share of the allowed
#: rate, rejections per 100, for every limiter shape including nginx answering 503.
STEADY_SHARE, WHOLE_SHARE, STEADY_REJECTED, WHOLE_REJECTED, STALL = 0.90, 0.80, 5, 10, 2.0


@contextlib.contextmanager
def provider_at(shape: str) -> Iterator[tuple[str, FakeProcess, NginxLimiter | None]]:
    """The URL to send to, the fake behind it, and nginx when it is the limiter."""
    latency = ("--latency", str(LATENCY))
    if not shape.startswith("nginx"):
        args = ("--rate-limit", str(REAL), "--rate-period", str(PERIOD), "--rate-shape", shape)
        with FakeProcess(*args, "--rate-limit-http", *latency) as fake:
            yield fake.url, fake, None
        return
    burst, status = (10, 429) if shape == "nginx b10" else (0, 503 if "503" in shape else 429)
    with FakeProcess(*latency) as fake, NginxLimiter(
        fake.url, rate=REAL, burst=burst, nodelay=bool(burst), status=None if status == 503 else 429
    ) as nginx:
        yield nginx.url, fake, nginx


async def _drive(url: str, configured: int | None) -> list[tuple[float, bool, int]]:
    """(completion time, ok, rejections the lane had seen by then) per outcome."""
    # A lane with no limit is given no window either: it has to find out.
    window = {} if configured is None else {"rate_period": PERIOD}
    provider = CrunProvider(
        api_key=API_KEY, base_url=url, rate_limit=configured, max_concurrency=CONCURRENCY,
        **window,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    seen = []
    async with PersonaClient([provider]) as client:
        async for outcome in client.create_many(persona_requests(N)):
            seen.append((loop.time(), outcome.ok, client.stats()[provider.name].throttled))
    return seen


def cell(shape: str, config: str, configured: int | None) -> dict[str, Any]:
    with provider_at(shape) as (url, fake, nginx):
        seen = asyncio.run(_drive(url, configured))
        if nginx is not None:
            rejected = sum(1 for _, status in nginx.log() if status in (429, 503))
        else:
            rejected = fake.stats()["response_codes"].get("429", 0)
    done = [t for t, ok, _ in seen if ok]
    first, last = done[0], done[-1]
    steady_from = first + STEADY_FROM
    seconds = math.floor(last - steady_from)
    steady = [(t, thr) for t, ok, thr in seen if ok and steady_from <= t < steady_from + seconds]
    steady_rejected = steady[-1][1] - steady[0][1] if steady else 0
    return {
        "shape": shape,
        "config": config,
        "created": len(done),
        "whole_share": len(done) / (last - first + PERIOD) / REAL,
        "whole_rejected": 100 * rejected / (N + rejected),
        "steady_share": len(steady) / max(seconds, 1) / REAL,
        "steady_rejected": 100 * steady_rejected / max(len(steady) + steady_rejected, 1),
        "stall": max(b - a for a, b in itertools.pairwise(done)),
    }


def verdicts(r: dict[str, Any]) -> list[str]:
    """The targets this cell misses (empty: all met)."""
    missed = []
    if r["created"] < N:
        missed.append(f"created {r['created']} of {N}")
    if r["steady_share"] < STEADY_SHARE:
        missed.append(f"steady share {r['steady_share']:.0%}")
    if r["whole_share"] < WHOLE_SHARE:
        missed.append(f"whole share {r['whole_share']:.0%}")
    if r["steady_rejected"] > STEADY_REJECTED:
        missed.append(f"steady rejections {r['steady_rejected']:.1f}/100")
    if r["whole_rejected"] > WHOLE_REJECTED:
        missed.append(f"rejections {r['whole_rejected']:.1f}/100")
    if r["stall"] > STALL:
        missed.append(f"stall {r['stall']:.2f} s")
    return missed


# -- overload: callers faster than the lane, each with a deadline -------------------------------

OVERLOAD_LIMIT, OVERLOAD_PERIOD, OVERLOAD_DEADLINE = 20, 2.0, 2.0
OVERLOAD_ARRIVALS, OVERLOAD_SECONDS = 20.0, 20.0


async def _overload(url: str) -> dict[str, Any]:
    provider = CrunProvider(
        api_key=API_KEY, base_url=url, rate_limit=OVERLOAD_LIMIT, rate_period=OVERLOAD_PERIOD,
        max_concurrency=16,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    created: list[float] = []
    late = 0.0

    async def caller(i: int) -> None:
        nonlocal late
        began = loop.time()
        with contextlib.suppress(PersonaError):
            await client.create_persona(next(persona_requests(1, f"o{i}-")), deadline=2.0)
            created.append(loop.time())
        late = max(late, loop.time() - began - OVERLOAD_DEADLINE)

    async with PersonaClient([provider]) as client:
        began = loop.time()
        async with asyncio.TaskGroup() as tg:
            for i in range(int(OVERLOAD_ARRIVALS * OVERLOAD_SECONDS)):
                tg.create_task(caller(i))
                await asyncio.sleep(began + (i + 1) / OVERLOAD_ARRIVALS - loop.time())
    windows = [
        sum(1 for t in created if began + w <= t < began + w + OVERLOAD_PERIOD)
        for w in range(2, int(OVERLOAD_SECONDS) - 2, int(OVERLOAD_PERIOD))
    ]
    return {"least": min(windows) / OVERLOAD_LIMIT, "windows": windows, "late": late}


def overload() -> dict[str, Any]:
    with FakeProcess("--latency", str(LATENCY)) as fake:
        return asyncio.run(_overload(fake.url))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", action="append", choices=SHAPES, help="repeatable")
    parser.add_argument("--n", type=int, default=N, help="creates per cell")
    parser.add_argument("--no-overload", action="store_true")
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        metavar="K",
        help="cells run at once (default 1: on 2 cores, three at once add milliseconds of "
        "jitter, and a leaky bucket refuses a request a millisecond early)",
    )
    args = parser.parse_args(argv)
    globals()["N"] = args.n
    print(machine())
    rows = []
    for config, configured in CONFIGS:
        with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
            cells = [pool.submit(cell, s, config, configured) for s in args.shape or SHAPES]
            rows += [c.result() for c in cells]
    print(
        f"Admission: {N} creates, provider allows {REAL} per {PERIOD:g} s, concurrency "
        f"{CONCURRENCY}, reply latency {LATENCY * 1000:g} ms"
    )
    print(table(
        ["limiter", "lane", "created", "share", "steady share", "rejected/100",
         "steady rejected/100", "longest stall", "targets"],
        [[r["shape"], r["config"], r["created"], f"{r['whole_share']:.0%}",
          f"{r['steady_share']:.0%}", f"{r['whole_rejected']:.1f}", f"{r['steady_rejected']:.1f}",
          f"{r['stall']:.2f} s", "; ".join(verdicts(r)) or "met"] for r in rows],
    ))  # fmt: skip
    if not args.no_overload:
        o = overload()
        print(
            f"overload (lane {OVERLOAD_LIMIT} per {OVERLOAD_PERIOD:g} s, 16 workers, callers at "
            f"{OVERLOAD_ARRIVALS:g}/s with a {OVERLOAD_DEADLINE:g} s deadline): least window "
            f"{o['least']:.0%} of the lane's limit {o['windows']}, latest answer "
            f"{max(o['late'], 0.0) * 1000:.0f} ms after a deadline "
            f"(targets >= 90%, answered by the deadline)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
