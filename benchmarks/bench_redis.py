"""The Redis limiter: what one acquire costs, and how exact the shared window is across processes.

1. **Acquire overhead**, in one run: ``SlidingWindowLimiter.acquire()`` (the local limiter) and
   ``RedisLimiter``'s lane ``acquire()`` (one Lua script round trip to a ``redis-server`` on
   loopback TCP), back to back, at a limit high enough never to wait. Rounds alternate; each
   figure is the median over rounds of the mean, and p50/p99 over every single acquire.
2. **Multi-process accuracy**: P worker processes, each with its own ``PersonaClient`` and the
   same API key, send to ONE fake provider (``python -m persona_async.testing --rate-limit N
   --rate-period T``, in its own process) whose window rejects anything above N per T. Run
   once with each process on its own local limiter (what the issue describes: P times the rate)
   and once with all of them on one ``RedisLimiter``. The fake counts window violations; the
   rate is measured after the first window's burst, as (requests - N) over the time between
   the first and the last completion, against N / T.

This script starts its own ``redis-server`` (Debian package ``redis-server``) on a free port.

    python benchmarks/bench_redis.py
    python benchmarks/bench_redis.py --acquires 50000 --processes 8 --per-process 40
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from _common import API_KEY, FakeProcess, machine, persona_requests, table

from persona_async import CrunProvider, PersonaClient
from persona_async._limiter import LaneLimiter
from persona_async._ratelimit import SlidingWindowLimiter
from persona_async.redis import RedisLimiter


@contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway ``redis-server`` on a free loopback port; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (Debian: apt-get install redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    proc = subprocess.Popen([*command, "no"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait()


# -- 1. acquire overhead -----------------------------------------------------------------------


async def _time_acquires(limiter: LaneLimiter, n: int) -> list[float]:
    for _ in range(200):  # warm-up: connection, script load
        await limiter.acquire()
    clock = time.perf_counter
    samples = []
    for _ in range(n):
        start = clock()
        await limiter.acquire()
        samples.append(clock() - start)
    return samples


async def acquire_overhead(url: str, n: int, rounds: int) -> list[list[object]]:
    # A limit that never makes anyone wait, over a short window so the Redis log stays small.
    provider = CrunProvider(api_key=API_KEY, rate_limit=10**9, rate_period=0.01)
    runs: dict[str, list[list[float]]] = {"local": [], "redis": []}
    for _ in range(rounds):
        local = SlidingWindowLimiter(10**9, 0.01)
        runs["local"].append(await _time_acquires(local, n))
        # A fresh prefix per round: each round starts on empty keys.
        lane = RedisLimiter(url, prefix=f"bench{time.monotonic_ns()}").for_lane(provider)
        try:
            runs["redis"].append(await _time_acquires(lane, n))
        finally:
            await lane.aclose()
    rows: list[list[object]] = []
    names = {"local": "SlidingWindowLimiter (local)", "redis": "RedisLimiter (loopback TCP)"}
    for key, samples in runs.items():
        every = sorted(s for run in samples for s in run)
        mean = statistics.median(statistics.fmean(run) for run in samples)
        rows.append(
            [
                names[key],
                n,
                f"{mean * 1e6:.1f}",
                f"{every[len(every) // 2] * 1e6:.1f}",
                f"{every[int(len(every) * 0.99)] * 1e6:.1f}",
            ]
        )
    base = statistics.median(statistics.fmean(run) for run in runs["local"])
    rows[1].append(f"{float(str(rows[1][2])) - base * 1e6:.1f}")
    rows[0].append("-")
    return rows


# -- 2. multi-process accuracy -----------------------------------------------------------------


async def _work(config: dict[str, Any]) -> list[float]:
    limiter = RedisLimiter(config["redis"]) if config["redis"] else None
    provider = CrunProvider(
        api_key=API_KEY,
        base_url=config["fake"],
        rate_limit=config["limit"],
        rate_period=config["period"],
        limiter=limiter,
    )
    done = []
    async with PersonaClient([provider], backoff_initial=0.05, backoff_max=1.0) as client:
        async for outcome in client.create_many(persona_requests(config["n"], config["prefix"])):
            if not outcome.ok:
                raise SystemExit(f"request failed: {outcome.error!r}")
            done.append(time.monotonic())  # CLOCK_MONOTONIC: comparable across processes
    return done


def worker_main(config_json: str) -> None:
    # The local run's lanes log every 429 cooldown; the table counts them instead.
    logging.getLogger("persona_async").setLevel(logging.ERROR)
    config = json.loads(config_json)
    print("READY", flush=True)
    sys.stdin.readline()  # GO: every process starts together
    print(json.dumps(asyncio.run(_work(config))), flush=True)


def accuracy_run(
    redis_url: str | None, processes: int, per_process: int, limit: int, period: float
) -> list[object]:
    with FakeProcess("--rate-limit", str(limit), "--rate-period", str(period)) as fake:
        workers = []
        for i in range(processes):
            config = {
                "redis": redis_url,
                "fake": fake.url,
                "limit": limit,
                "period": period,
                "n": per_process,
                "prefix": f"{'r' if redis_url else 'l'}{i}_",
            }
            proc = subprocess.Popen(
                [sys.executable, __file__, "--worker", json.dumps(config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            workers.append(proc)
        for proc in workers:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "READY":
                raise RuntimeError("a worker did not start")
        for proc in workers:
            assert proc.stdin is not None
            proc.stdin.write("GO\n")
            proc.stdin.flush()
        done: list[float] = []
        for proc in workers:
            out, _ = proc.communicate(timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"a worker failed with status {proc.returncode}")
            done += json.loads(out.strip().splitlines()[-1])
        stats = fake.stats()
    done.sort()
    total = len(done)
    allowed = limit / period
    rate = (total - limit) / (done[-1] - done[0])
    mode = f"{processes} x local limiter" if redis_url is None else f"{processes} x RedisLimiter"
    return [
        mode,
        total,
        stats["request_count"],
        stats["window_violations"],
        f"{done[-1] - done[0]:.2f}",
        f"{rate:.2f}",
        f"{allowed:.2f}",
        f"{100 * rate / allowed:.1f}%",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--acquires", type=int, default=20_000, help="per limiter per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--per-process", type=int, default=30, help="requests per process")
    parser.add_argument("--limit", type=int, default=20, help="the fake's N per window")
    parser.add_argument("--period", type=float, default=1.0, help="the fake's window T, s")
    parser.add_argument("--skip-local", action="store_true", help="no run without Redis")
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return

    print(machine())
    with redis_server() as url:
        version = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=False
        ).stdout.split()
        print(f"redis-server {next((v for v in version if v.startswith('v=')), '?')[2:]}\n")
        rows = asyncio.run(acquire_overhead(url, args.acquires, args.rounds))
        print(f"Acquire overhead ({args.acquires} sequential acquires x {args.rounds} rounds)")
        headers = ["limiter", "acquires", "mean us", "p50 us", "p99 us", "extra us"]
        print(table(headers, rows))
        print()
        accuracy = []
        if not args.skip_local:
            accuracy.append(
                accuracy_run(None, args.processes, args.per_process, args.limit, args.period)
            )
        accuracy.append(
            accuracy_run(url, args.processes, args.per_process, args.limit, args.period)
        )
    print(
        f"Multi-process accuracy: {args.processes} processes x {args.per_process} requests, "
        f"one key, fake window {args.limit} per {args.period:g} s"
    )
    headers = [
        "mode",
        "created",
        "sent",
        "violations",
        "span s",
        "rate/s",
        "allowed/s",
        "of allowed",
    ]
    print(table(headers, accuracy))


if __name__ == "__main__":
    main()
