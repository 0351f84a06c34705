"""Run the CPU, memory and limiter benchmarks and print one table of figures against their
targets (the README's Benchmarks table).

    pip install -e '.[bench]'          # httpx, for the comparison
    python benchmarks/run_all.py       # about 4-5 minutes on 2 cores (1M requests for memory)
    python benchmarks/run_all.py --quick

Each benchmark also runs on its own (``bench_cpu.py``, ``bench_memory.py``,
``bench_limiter.py``, each with ``--help``). The fake provider always runs in a separate
process, and benchmarks are never part of the test suite.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import bench_cpu
import bench_limiter
import bench_memory
from _common import machine, table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=bench_cpu.DEFAULT_N, help="CPU: requests per run")
    parser.add_argument("--rounds", type=int, default=bench_cpu.DEFAULT_ROUNDS, help="CPU: rounds")
    parser.add_argument(
        "--big", type=int, default=bench_memory.DEFAULT_BIG, help="memory: requests, long run"
    )
    parser.add_argument(
        "--quick", action="store_true", help="10k CPU runs and a 200k memory run (~2 minutes)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.big = 10_000, 200_000
    started = time.monotonic()
    print(machine(), flush=True)
    sections, summary = [], []

    print("\n[1/3] client CPU per request", file=sys.stderr)
    cpu_rows = bench_cpu.run(
        n=args.n, rounds=args.rounds, clients=bench_cpu.available(bench_cpu.IMPLS)
    )
    sections.append(bench_cpu.render(cpu_rows))
    summary += [("CPU", *v) for v in bench_cpu.verdicts(cpu_rows)]

    print("\n[2/3] memory", file=sys.stderr)
    memory_rows = bench_memory.run(big=args.big)
    sections.append(bench_memory.render(memory_rows, bench_memory.DEFAULT_CONCURRENCY, False))
    summary += [("memory", *v) for v in bench_memory.verdicts(memory_rows)]

    print("\n[3/3] limiter accuracy", file=sys.stderr)
    limiter_rows = bench_limiter.run()
    sections.append(bench_limiter.render(limiter_rows, bench_limiter.DEFAULT_CONCURRENCY))
    summary += [("limiter", *v) for v in bench_limiter.verdicts(limiter_rows)]

    for section in sections:
        print(f"\n{section}")
    print("\nSummary")
    print(
        table(
            ["benchmark", "measure", "value", "target", "met"],
            [[b, m, v, t, "yes" if ok else "NO"] for b, m, v, t, ok in summary],
        )
    )
    print(f"\n{machine()}\ntotal time {time.monotonic() - started:.0f} s")
    return 0 if all(ok for *_, ok in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
