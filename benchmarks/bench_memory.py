"""Peak memory of ``create_many``: 10k requests against 1M, both pulled from a generator.

``create_many`` keeps at most ``max_pending`` requests pulled but not yet yielded, so the
client's peak RSS must not grow with the length of the input. Each run is a fresh interpreter
(``ru_maxrss`` is a high-water mark and never goes down) talking to the fake provider in its
own process with no rate limit; the fake is reset every few seconds so that its store of
created personas stays small (it is not the process being measured, but it shares the box).

    python benchmarks/bench_memory.py                 # 10k vs 1M, concurrency 64
    python benchmarks/bench_memory.py --big 200000    # a shorter run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from _common import API_KEY, FakeProcess, machine, persona_requests, table

from persona_async import CrunProvider, PersonaClient

DEFAULT_SMALL = 10_000
DEFAULT_BIG = 1_000_000
DEFAULT_CONCURRENCY = 64
#: The 1M run's peak RSS may be at most this many times the 10k run's (README, Benchmarks):
#: memory must follow the requests in flight, not the requests made.
TARGET_RATIO = 1.2
_RESET_EVERY = 5.0  # seconds between resets of the fake during a run


def _rss_kib() -> int:
    """This process's resident set size now, in KiB (Linux)."""
    with open("/proc/self/statm", encoding="ascii") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() // 1024


async def _measure(url: str, n: int, concurrency: int, ordered: bool) -> dict[str, Any]:
    provider = CrunProvider(
        api_key=API_KEY, base_url=url, rate_limit=None, max_concurrency=concurrency
    )
    ok = 0
    started = time.perf_counter()
    async with PersonaClient([provider]) as client:
        ready_kib = _rss_kib()  # interpreter, imports and a started client: the floor
        async for outcome in client.create_many(persona_requests(n), ordered=ordered):
            if outcome.ok:
                ok += 1
        end_kib = _rss_kib()
    return {
        "n": n,
        "ok": ok,
        "wall_s": time.perf_counter() - started,
        "ready_kib": ready_kib,
        "end_kib": end_kib,
        # ru_maxrss is in KiB on Linux.
        "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def _one_run(fake: FakeProcess, n: int, concurrency: int, ordered: bool) -> dict[str, Any]:
    """One measured run in a fresh interpreter, resetting the fake while it goes."""
    args = [sys.executable, __file__, "--worker", "--url", fake.url, "--n", str(n)]
    args += ["--concurrency", str(concurrency)] + (["--ordered"] if ordered else [])
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        while True:
            try:
                out, err = proc.communicate(timeout=_RESET_EVERY)
                break
            except subprocess.TimeoutExpired:
                fake.reset()
    if proc.returncode != 0:
        raise RuntimeError(f"the memory worker failed:\n{err}")
    result = dict(json.loads(out.strip().splitlines()[-1]))
    if result["ok"] != n:
        raise RuntimeError(f"only {result['ok']} of {n} requests succeeded")
    print(
        f"  {n:>9} requests: peak RSS {result['peak_kib'] / 1024:.1f} MiB, "
        f"{n / result['wall_s']:.0f} req/s",
        file=sys.stderr,
    )
    return result


def run(
    small: int = DEFAULT_SMALL,
    big: int = DEFAULT_BIG,
    concurrency: int = DEFAULT_CONCURRENCY,
    ordered: bool = False,
) -> list[dict[str, Any]]:
    """Measure ``small`` then ``big``; return one row per run."""
    with FakeProcess() as fake:
        return [_one_run(fake, n, concurrency, ordered) for n in (small, big)]


def verdicts(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, str, bool]]:
    small, big = rows
    ratio = big["peak_kib"] / small["peak_kib"]
    return [
        (
            f"peak RSS {big['n']:,} vs {small['n']:,} requests",
            f"{ratio:.3f}x",
            f"<= {TARGET_RATIO}x",
            ratio <= TARGET_RATIO,
        )
    ]


def render(rows: Sequence[dict[str, Any]], concurrency: int, ordered: bool) -> str:
    small = rows[0]
    head = (
        f"Client memory of create_many (input from a generator, concurrency {concurrency}, "
        f"{'ordered' if ordered else 'completion order'}, fresh process per run)"
    )
    body = table(
        ["requests", "peak RSS MiB", "vs first", "RSS after start MiB", "growth MiB", "req/s"],
        [
            [
                f"{r['n']:,}",
                f"{r['peak_kib'] / 1024:.1f}",
                f"{r['peak_kib'] / small['peak_kib']:.3f}x",
                f"{r['ready_kib'] / 1024:.1f}",
                f"{(r['peak_kib'] - r['ready_kib']) / 1024:.1f}",
                f"{r['n'] / r['wall_s']:.0f}",
            ]
            for r in rows
        ],
    )
    lines = [head, body, "growth: peak RSS minus RSS once the client had started"]
    lines += [
        f"target {measure} {target}: {'met' if met else 'NOT met'} ({value})"
        for measure, value, target, met in verdicts(rows)
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=DEFAULT_SMALL, help="requests, short run")
    parser.add_argument("--big", type=int, default=DEFAULT_BIG, help="requests, long run")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--ordered", action="store_true", help="create_many(ordered=True)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = asyncio.run(_measure(args.url, args.n, args.concurrency, args.ordered))
        print(json.dumps(result))
        return 0
    print(machine())
    rows = run(args.small, args.big, args.concurrency, args.ordered)
    print(render(rows, args.concurrency, args.ordered))
    return 0


if __name__ == "__main__":
    sys.exit(main())
