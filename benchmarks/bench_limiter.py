"""Rate-limiter accuracy: no window overrun at the provider, and close to the full allowed rate.

The fake provider runs in its own process and enforces a sliding window per key (``limit``
requests in any ``period`` seconds, judged at arrival; the excess is rejected with 429 and
counted in ``window_violations``). The client is configured with the same limit and sends
enough requests for about a dozen windows through ``create_many``.

Two figures per scenario:

* violations: requests the fake rejected for breaking its window (target 0);
* achieved rate: the first ``limit`` requests may all start at once, so the rate is measured
  after that opening burst, ``(N - limit) / (last completion - first completion)``, as a
  fraction of ``limit / period`` (target >= 95%). A constant reply latency cancels out.

    python benchmarks/bench_limiter.py                       # 50 per 1 s and 20 per 2 s, then
                                                             # the learning table (~2 min)
    python benchmarks/bench_limiter.py --scenario 20/10 --windows 10   # kie's published limit
    python benchmarks/bench_limiter.py --learning            # only the learning table
    python benchmarks/bench_limiter.py --learning --retry-after 4 --n 600   # 429s that say
                                                             # Retry-After: 4 (four windows)

The learning table: the fake allows 10 per second in each of the three shapes providers use
(sliding window, fixed window reset on the clock, token bucket) while the lane is configured
right, four times too high, or not at all; share of the real rate used, 429s per 100 requests
and the longest stall, over the whole run and in steady state.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import itertools
import math
import sys
from collections.abc import Sequence
from typing import Any

from _common import API_KEY, FakeProcess, machine, persona_requests, table

from persona_async import CrunProvider, PersonaClient

DEFAULT_SCENARIOS = ((50, 1.0), (20, 2.0))
DEFAULT_WINDOWS = 12
DEFAULT_LATENCY = 0.02
DEFAULT_CONCURRENCY = 16
TARGET_FRACTION = 0.95


async def _drive(url: str, limit: int, period: float, n: int, concurrency: int) -> dict[str, Any]:
    provider = CrunProvider(
        api_key=API_KEY,
        base_url=url,
        rate_limit=limit,
        rate_period=period,
        max_concurrency=concurrency,
    )
    loop = asyncio.get_running_loop()
    done: list[float] = []
    ok = 0
    async with PersonaClient([provider]) as client:
        async for outcome in client.create_many(persona_requests(n)):
            done.append(loop.time())
            if outcome.ok:
                ok += 1
        lane = client.stats()[provider.name]
    return {"ok": ok, "done": done, "throttled": lane.throttled, "sent": lane.sent}


def run_scenario(
    limit: int,
    period: float,
    windows: int = DEFAULT_WINDOWS,
    latency: float = DEFAULT_LATENCY,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> dict[str, Any]:
    n = limit * windows
    fake_args = ["--rate-limit", str(limit), "--rate-period", str(period)]
    with FakeProcess(*fake_args, "--latency", str(latency)) as fake:
        result = asyncio.run(_drive(fake.url, limit, period, n, concurrency))
        stats = fake.stats()
    done = result["done"]
    span = done[-1] - done[0]
    allowed = limit / period
    achieved = (n - limit) / span if span > 0 else math.inf
    row = {
        "limit": limit,
        "period": period,
        "n": n,
        "ok": result["ok"],
        "latency": latency,
        "violations": stats["window_violations"],
        "throttled": result["throttled"],
        "sent": result["sent"],
        "span_s": span,
        "allowed_rate": allowed,
        "achieved_rate": achieved,
        "fraction": achieved / allowed,
    }
    print(
        f"  {limit}/{period:g}s: {n} requests in {span:.2f}s, {row['violations']} violations, "
        f"{row['fraction']:.1%} of the allowed rate",
        file=sys.stderr,
    )
    return row


def run(
    scenarios: Sequence[tuple[int, float]] = DEFAULT_SCENARIOS,
    windows: int = DEFAULT_WINDOWS,
    latency: float = DEFAULT_LATENCY,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> list[dict[str, Any]]:
    return [run_scenario(lim, per, windows, latency, concurrency) for lim, per in scenarios]


def verdicts(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, str, bool]]:
    out = []
    for r in rows:
        window = f"{r['limit']} per {r['period']:g} s"
        out.append(
            (f"window violations, {window}", str(r["violations"]), "0", r["violations"] == 0)
        )
        out.append(
            (
                f"achieved fraction of the allowed rate, {window}",
                f"{r['fraction']:.1%}",
                f">= {TARGET_FRACTION:.0%}",
                r["fraction"] >= TARGET_FRACTION,
            )
        )
    return out


def render(rows: Sequence[dict[str, Any]], concurrency: int) -> str:
    latency = rows[0]["latency"]
    head = (
        f"Limiter accuracy: fake enforces a sliding window (judged at arrival), the client has "
        f"the same limit; max_concurrency {concurrency}, reply latency {latency * 1000:g} ms"
    )
    body = table(
        ["window", "requests", "ok", "violations", "429s seen", "span s", "rate/s", "of allowed"],
        [
            [
                f"{r['limit']} per {r['period']:g} s",
                str(r["n"]),
                str(r["ok"]),
                str(r["violations"]),
                str(r["throttled"]),
                f"{r['span_s']:.2f}",
                f"{r['achieved_rate']:.2f}",
                f"{r['fraction']:.1%}",
            ]
            for r in rows
        ],
    )
    lines = [
        head,
        body,
        "rate/s: (requests - limit) / (last completion - first completion)",
    ]
    lines += [
        f"target {measure} {target}: {'met' if met else 'NOT met'} ({value})"
        for measure, value, target, met in verdicts(rows)
    ]
    return "\n".join(lines)


# -- learning the provider's real limit ---------------------------------------------------------

LEARN_REAL = 10  # the provider's limit per LEARN_PERIOD
LEARN_PERIOD = 1.0
LEARN_N = 200
LEARN_CONCURRENCY = 8
#: The first windows are discovery; "steady" figures start after them.
DISCOVERY_WINDOWS = 5
CONFIGS: tuple[tuple[str, int | None], ...] = (
    ("configured = real", LEARN_REAL),
    ("configured 4x real", 4 * LEARN_REAL),
    ("unconfigured", None),
)
SHAPES = ("sliding", "fixed", "bucket")


async def _learn(url: str, configured: int | None, n: int) -> list[tuple[float, bool, int]]:
    """(completion time, ok, 429s the lane had seen by then) per outcome."""
    provider = CrunProvider(
        api_key=API_KEY,
        base_url=url,
        rate_limit=configured,
        rate_period=LEARN_PERIOD,
        max_concurrency=LEARN_CONCURRENCY,
    )
    loop = asyncio.get_running_loop()
    seen = []
    async with PersonaClient([provider]) as client:
        async for outcome in client.create_many(persona_requests(n)):
            seen.append((loop.time(), outcome.ok, client.stats()[provider.name].throttled))
    return seen


def learning_cell(
    shape: str, config: str, configured: int | None, n: int, retry_after: float | None = None
) -> dict[str, Any]:
    args = ["--rate-limit", str(LEARN_REAL), "--rate-period", str(LEARN_PERIOD)]
    if retry_after is not None:
        args += ["--retry-after", str(retry_after)]
    with FakeProcess(*args, "--rate-shape", shape, "--latency", str(DEFAULT_LATENCY)) as fake:
        seen = asyncio.run(_learn(fake.url, configured, n))
        rejected = fake.stats()["response_codes"].get("429", 0)
    real_rate = LEARN_REAL / LEARN_PERIOD
    done = [t for t, ok, _ in seen if ok]
    start = done[0]
    whole = (len(done) - LEARN_REAL) / (done[-1] - start) / real_rate
    steady_from = start + DISCOVERY_WINDOWS * LEARN_PERIOD
    steady = [(t, thr) for t, ok, thr in seen if ok and t >= steady_from]
    # Completions come a window's worth at a time: count from the first window's end.
    steady_share = (len(steady) - LEARN_REAL) / (steady[-1][0] - steady[0][0]) / real_rate
    steady_429 = steady[-1][1] - steady[0][1]
    row = {
        "shape": shape,
        "config": config,
        "n": n,
        "whole_share": whole,
        "whole_429_per_100": 100 * rejected / n,
        "steady_share": steady_share,
        "steady_429_per_100": 100 * steady_429 / len(steady),
        "stall_s": max(b - a for a, b in itertools.pairwise(done)),
        "unconfigured": configured is None,
        "retry_after": retry_after,
    }
    print(
        f"  {shape:<7} {config:<19} share {whole:.0%} (steady {steady_share:.0%}), "
        f"{row['whole_429_per_100']:.1f} 429s/100",
        file=sys.stderr,
    )
    return row


def run_learning(n: int = LEARN_N, retry_after: float | None = None) -> list[dict[str, Any]]:
    """Every shape x configuration; the three shapes of a configuration run at once."""
    rows = []
    for config, configured in CONFIGS:
        with concurrent.futures.ThreadPoolExecutor(len(SHAPES)) as pool:
            cells = [
                pool.submit(learning_cell, s, config, configured, n, retry_after) for s in SHAPES
            ]
            rows += [cell.result() for cell in cells]
    return rows


def learning_verdicts(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, str, bool]]:
    out = []
    for r in rows:
        cell = f"{r['shape']}, {r['config']}"
        whole_share, whole_429 = (0.70, 15) if r["unconfigured"] else (0.80, 10)
        # The provider's Retry-After is a stall it asks for: the target allows one of those.
        stall = max(2 * LEARN_PERIOD, (r["retry_after"] or 0) + LEARN_PERIOD)
        out += [
            (f"steady share of the real rate, {cell}", f"{r['steady_share']:.0%}", ">= 85%",
             r["steady_share"] >= 0.85),
            (f"steady 429s per 100, {cell}", f"{r['steady_429_per_100']:.1f}", "<= 5",
             r["steady_429_per_100"] <= 5),
            (f"longest stall, {cell}", f"{r['stall_s']:.2f} s", f"<= {stall:g} s",
             r["stall_s"] <= stall),
            (f"whole-run share, {cell}", f"{r['whole_share']:.0%}", f">= {whole_share:.0%}",
             r["whole_share"] >= whole_share),
            (f"whole-run 429s per 100, {cell}", f"{r['whole_429_per_100']:.1f}",
             f"<= {whole_429}", r["whole_429_per_100"] <= whole_429),
        ]  # fmt: skip
    return out


def render_learning(rows: Sequence[dict[str, Any]]) -> str:
    head = (
        f"Learning the real limit: the fake allows {LEARN_REAL} per {LEARN_PERIOD:g} s in each "
        f"shape; the lane is configured as the row says; {rows[0]['n']} creates, concurrency "
        f"{LEARN_CONCURRENCY}, reply latency {DEFAULT_LATENCY * 1000:g} ms"
        + (f"; every 429 says Retry-After: {ra:g}" if (ra := rows[0]["retry_after"]) else "")
    )
    body = table(
        ["shape", "configuration", "share of real rate", "steady share", "429s/100",
         "steady 429s/100", "longest stall"],
        [
            [
                r["shape"],
                r["config"],
                f"{r['whole_share']:.0%}",
                f"{r['steady_share']:.0%}",
                f"{r['whole_429_per_100']:.1f}",
                f"{r['steady_429_per_100']:.1f}",
                f"{r['stall_s']:.2f} s",
            ]
            for r in rows
        ],
    )  # fmt: skip
    failed = [v for v in learning_verdicts(rows) if not v[3]]
    lines = [
        head,
        body,
        f"steady: after the first {DISCOVERY_WINDOWS} windows; share: accepted per second after "
        "the opening burst, over the real rate",
        "targets (steady >= 85%, <= 5 429s/100, stall <= 2 windows or a Retry-After and one; "
        "whole run >= 80% / 70% "
        "unconfigured, <= 10 / 15 429s per 100): "
        + (
            "all met"
            if not failed
            else "NOT met: " + "; ".join(f"{m} {v}" for m, v, _, _ in failed)
        ),
    ]
    return "\n".join(lines)


def _scenario(text: str) -> tuple[int, float]:
    limit, _, period = text.partition("/")
    try:
        return int(limit), float(period)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LIMIT/SECONDS, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scenario",
        type=_scenario,
        action="append",
        metavar="LIMIT/SECONDS",
        help="a window to test (repeatable); default 50/1 and 20/2",
    )
    parser.add_argument(
        "--windows", type=int, default=DEFAULT_WINDOWS, help="requests = limit x this"
    )
    parser.add_argument(
        "--latency", type=float, default=DEFAULT_LATENCY, help="seconds the fake takes per reply"
    )
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument(
        "--learning",
        action="store_true",
        help="only the table of learning the real limit (shape x configuration)",
    )
    parser.add_argument("--n", type=int, default=LEARN_N, help="creates per learning cell")
    parser.add_argument(
        "--retry-after",
        type=float,
        default=None,
        metavar="S",
        help="learning: every 429 of the fake says Retry-After: S",
    )
    args = parser.parse_args(argv)
    print(machine())
    if not args.learning:
        rows = run(args.scenario or DEFAULT_SCENARIOS, args.windows, args.latency, args.concurrency)
        print(render(rows, args.concurrency))
    print(render_learning(run_learning(args.n, args.retry_after)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
