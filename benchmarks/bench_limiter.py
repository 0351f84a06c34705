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

    python benchmarks/bench_limiter.py                       # 50 per 1 s and 20 per 2 s
    python benchmarks/bench_limiter.py --scenario 20/10 --windows 10   # kie's published limit
"""

from __future__ import annotations

import argparse
import asyncio
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
    args = parser.parse_args(argv)
    print(machine())
    rows = run(args.scenario or DEFAULT_SCENARIOS, args.windows, args.latency, args.concurrency)
    print(render(rows, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
