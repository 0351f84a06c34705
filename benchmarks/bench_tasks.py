"""Async-task providers: how politely the SDK polls, and whether polling slows creates.

    python benchmarks/bench_tasks.py            # about 10 s
    python benchmarks/bench_tasks.py --n 500 --task-seconds 2

``--n`` personas on ``KieJobsProvider`` against the fake provider (in this process: the figures
are counts and times the fake records, not the client's CPU), every task running
``--task-seconds``. Reported: submits per persona (must be 1), status queries per task, the most
status queries in any one second (the lane's poll budget is 20 per second here), the most per
task in any one second (kie allows 3), when the last submit went out and the whole run's time.
A request being polled still counts against ``create_many``'s ``max_pending`` (four per unit of
concurrency by default), so with long tasks that bound, not the workers, paces the submits.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import time
from collections.abc import Sequence

from persona_async import KieJobsProvider, PersonaClient, PersonaRequest, PollPolicy
from persona_async.testing import FakeProvider

POLICY = PollPolicy(initial=0.5, factor=1.5, max_interval=2.0, min_interval=0.34, rate_limit=20)


def most_in_a_second(times: Sequence[float]) -> int:
    ordered = sorted(times)
    most = first = 0
    for last, t in enumerate(ordered):
        while t - ordered[first] >= 1.0:
            first += 1
        most = max(most, last - first + 1)
    return most


async def run(n: int, task_seconds: float, concurrency: int) -> dict[str, float]:
    async with FakeProvider() as fake:
        fake.task_seconds = task_seconds
        provider = KieJobsProvider(
            api_key=fake.api_key, base_url=fake.url, rate_limit=None,
            max_concurrency=concurrency, poll=POLICY,
        )  # fmt: skip
        requests = [PersonaRequest("task", f"clip-{i}", "n", "d") for i in range(n)]
        started = time.monotonic()
        async with PersonaClient([provider], deadline=task_seconds * 10 + 30) as client:
            outcomes = [o async for o in client.create_many(requests)]
        elapsed = time.monotonic() - started
        submits = [r.arrived for r in fake.requests if r.kind == "kie-jobs"]
        polls = [r for r in fake.requests if r.kind == "kie-jobs-status"]
        per_task = collections.defaultdict(list)
        for r in polls:
            per_task[r.query_string].append(r.arrived)
        return {
            "created": sum(o.ok for o in outcomes),
            "submits_per_persona": len(submits) / n,
            "polls_per_task_mean": len(polls) / n,
            "polls_per_task_max": max(len(v) for v in per_task.values()),
            "most_polls_in_1s": most_in_a_second([r.arrived for r in polls]),
            "most_polls_per_task_in_1s": max(most_in_a_second(v) for v in per_task.values()),
            "last_submit_s": max(submits) - started,
            "elapsed_s": elapsed,
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--task-seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args.n, args.task_seconds, args.concurrency))
    print(
        f"{args.n} personas, tasks of {args.task_seconds:g} s, max_concurrency "
        f"{args.concurrency}, poll budget {POLICY.rate_limit}/{POLICY.rate_period:g} s"
    )
    for name, value in figures.items():
        print(f"  {name:28s} {value:10.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
