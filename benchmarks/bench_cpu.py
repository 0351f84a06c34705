"""Client CPU per request: persona_async against the leanest loop a user could write.

Every client sends the same N crun creates, at the same concurrency, to the same fake provider
running in its own process with no rate limit:

* ``persona_async (rate-limited lane)``: ``PersonaClient([CrunProvider(rate_limit=10**6,
  rate_period=10, max_concurrency=C)])`` and ``create_many``: the configuration users run (every
  lane has a limit; the default is 20 per 10 s), with one high enough never to pace;
* ``persona_async (rate_limit=None)``: the same without a configured limit;
* ``lean loop``: the baseline. One ``aiohttp.ClientSession`` (``TCPConnector(limit=C)``) and C
  worker coroutines pulling from one iterator of bodies: ``post(json=...)`` and
  ``await resp.json()``, no task per request;
* ``lean loop + msgspec``: the same loop with bodies pre-encoded by msgspec and replies decoded
  by it: the strongest a user could write with what this package installs;
* ``httpx AsyncClient`` (``pip install -e '.[bench]'``): the lean loop on httpx.

Each measurement runs in a fresh interpreter that first warms up (imports, connections) and
then reads user+sys CPU of its own process (``getrusage(RUSAGE_SELF)``) around the N requests.
Runs are interleaved (the order rotates each round) and repeated; the table shows medians and
ranges, and each client's ratio to the lean loop's run of the same round.

    python benchmarks/bench_cpu.py                    # 20k requests, concurrency 64
    python benchmarks/bench_cpu.py --n 3000 --concurrency 32 --rounds 9 --clients ours,lean
    python benchmarks/bench_cpu.py --profile          # cProfile of the rate-limited lane's run
    python benchmarks/bench_cpu.py --instructions --n 3000 --concurrency 32 --rounds 2 \
        --clients ours,unlimited,lean                 # instructions/request under callgrind
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib.util
import io
import json
import math
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import aiohttp
import msgspec
from _common import (
    API_KEY,
    CRUN_PATH,
    FakeProcess,
    cpu_seconds,
    crun_bodies,
    machine,
    persona_requests,
    run_worker,
    table,
)

from persona_async import CrunProvider, PersonaClient

OURS = "persona_async (rate-limited lane)"
UNLIMITED = "persona_async (rate_limit=None)"
RAW = "lean loop (C workers, json)"
LEAN_MSGSPEC = "lean loop + msgspec"
HTTPX = "httpx AsyncClient (C workers)"
IMPLS = (OURS, UNLIMITED, RAW, LEAN_MSGSPEC, HTTPX)
_KEYS = {OURS: "ours", UNLIMITED: "unlimited", RAW: "lean", LEAN_MSGSPEC: "msgspec", HTTPX: "httpx"}
_IMPL_BY_KEY = {key: impl for impl, key in _KEYS.items()}
DEFAULT_N = 20_000
DEFAULT_CONCURRENCY = 64
DEFAULT_ROUNDS = 7
DEFAULT_HTTPX_ROUNDS = 3
DEFAULT_WARMUP = 1000
#: High enough never to pace these runs, low enough to be a real limit on the lane.
NEVER_PACES = 10**6

# One run: (base URL, N, concurrency, request-id prefix) -> requests that succeeded.
Runner = Callable[[str, int, int, str], Coroutine[Any, Any, int]]


# -- the three clients -------------------------------------------------------------------------


async def _ours(client: PersonaClient, n: int, prefix: str) -> int:
    ok = 0
    async for outcome in client.create_many(persona_requests(n, prefix)):
        if outcome.ok:
            ok += 1
    return ok


async def _lean(
    session: aiohttp.ClientSession, url: str, n: int, c: int, prefix: str, fast: bool
) -> int:
    endpoint = url + CRUN_PATH
    bodies = iter(crun_bodies(n, prefix))
    ok = 0
    encode, decode = msgspec.json.encode, msgspec.json.decode
    headers = {"Content-Type": "application/json"}

    async def worker() -> None:
        nonlocal ok
        for body in bodies:
            try:
                if fast:
                    async with session.post(endpoint, data=encode(body), headers=headers) as resp:
                        reply = decode(await resp.read())
                else:
                    async with session.post(endpoint, json=body) as resp:
                        reply = await resp.json()
                if reply["code"] == 200 and reply["data"]["persona_id"]:
                    ok += 1
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError, TypeError):
                pass  # a failed request is counted by not being ok

    await asyncio.gather(*(worker() for _ in range(c)))
    return ok


async def _httpx(client: Any, url: str, n: int, c: int, prefix: str) -> int:
    import httpx

    endpoint = url + CRUN_PATH
    bodies = iter(crun_bodies(n, prefix))
    ok = 0

    async def worker() -> None:
        nonlocal ok
        for body in bodies:
            try:
                resp = await client.post(endpoint, json=body)
                reply = resp.json()
                if reply["code"] == 200 and reply["data"]["persona_id"]:
                    ok += 1
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                pass

    await asyncio.gather(*(worker() for _ in range(c)))
    return ok


async def _measure(
    impl: str, url: str, n: int, concurrency: int, warmup: int, profile: bool
) -> dict[str, Any]:
    """Warm up, then run N requests and read this process's CPU around them."""
    profiler = cProfile.Profile() if profile else None

    async def timed(run: Callable[[str], Coroutine[Any, Any, int]]) -> dict[str, Any]:
        await run("w")
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        ok = await run("m")
        if profiler is not None:
            profiler.disable()
        cpu, wall = cpu_seconds() - cpu0, time.perf_counter() - wall0
        return {"impl": impl, "n": n, "ok": ok, "cpu_s": cpu, "wall_s": wall}

    if impl in (OURS, UNLIMITED):
        provider = CrunProvider(
            api_key=API_KEY,
            base_url=url,
            rate_limit=NEVER_PACES if impl == OURS else None,
            rate_period=10.0,
            max_concurrency=concurrency,
        )
        async with PersonaClient([provider]) as client:
            result = await timed(lambda p: _ours(client, warmup if p == "w" else n, p))
    elif impl in (RAW, LEAN_MSGSPEC):
        connector = aiohttp.TCPConnector(limit=concurrency)
        fast = impl == LEAN_MSGSPEC
        async with aiohttp.ClientSession(
            connector=connector, headers={"x-api-key": API_KEY}
        ) as session:
            result = await timed(
                lambda p: _lean(session, url, warmup if p == "w" else n, concurrency, p, fast)
            )
    else:
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(
            limits=limits, headers={"x-api-key": API_KEY}, trust_env=False, timeout=60.0
        ) as hclient:
            result = await timed(
                lambda p: _httpx(hclient, url, warmup if p == "w" else n, concurrency, p)
            )
    if impl == HTTPX and importlib.util.find_spec("sniffio") is None:
        # httpcore does `import sniffio` each time it creates a lock; when anyio no longer
        # pulls sniffio in, every one of those is a failed import (a directory scan).
        result["note"] = (
            "sniffio is not installed, so httpcore retries a failed `import sniffio` on every "
            "request; `pip install sniffio` for httpx's best figure"
        )
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(80)
        print(out.getvalue(), file=sys.stderr)
    return result


# -- the orchestrating parent ------------------------------------------------------------------


def run(
    n: int = DEFAULT_N,
    concurrency: int = DEFAULT_CONCURRENCY,
    rounds: int = DEFAULT_ROUNDS,
    warmup: int = DEFAULT_WARMUP,
    clients: Sequence[str] = IMPLS,
    httpx_rounds: int = DEFAULT_HTTPX_ROUNDS,
) -> list[dict[str, Any]]:
    """Run each client ``rounds`` times, interleaved; return one summary row per client.

    httpx takes part in the first ``httpx_rounds`` rounds only: it is an order of magnitude
    slower, and the close call is persona_async against raw aiohttp. ``ratio`` is the median
    over rounds of (this client / raw aiohttp in the same round): runs next to each other in
    time share the machine's load, so the pairing cancels most of the noise.
    """
    cpu: dict[str, dict[int, float]] = {impl: {} for impl in clients}  # us/request by round
    speeds: dict[str, list[float]] = {impl: [] for impl in clients}
    notes: dict[str, str] = {}
    with FakeProcess() as fake:
        for r in range(rounds):
            present = [c for c in clients if c != HTTPX or r < httpx_rounds]
            shift = r % len(present)
            for impl in (*present[shift:], *present[:shift]):
                fake.reset()
                result = run_worker(
                    __file__, "--worker", _KEYS[impl], "--url", fake.url, "--n", str(n),
                    "--concurrency", str(concurrency), "--warmup", str(warmup),
                )  # fmt: skip
                served = fake.stats()["request_count"]
                if result["ok"] != n or served != n + warmup:
                    raise RuntimeError(f"{impl}: {result['ok']}/{n} ok, the fake served {served}")
                if result.get("note"):
                    notes[impl] = result["note"]
                cpu[impl][r] = result["cpu_s"] / n * 1e6
                speeds[impl].append(n / result["wall_s"])
                print(
                    f"  round {r + 1} {impl:<26} {cpu[impl][r]:7.1f} us CPU/req  "
                    f"{speeds[impl][-1]:7.0f} req/s",
                    file=sys.stderr,
                )
    rows = []
    for impl in clients:
        per_req = list(cpu[impl].values())
        ratios = [us / cpu[RAW][r] for r, us in cpu[impl].items()] if RAW in cpu else [math.nan]
        rows.append(
            {
                "impl": impl,
                "n": n,
                "concurrency": concurrency,
                "runs": len(per_req),
                "us_median": statistics.median(per_req),
                "us_min": min(per_req),
                "us_max": max(per_req),
                "ratio": statistics.median(ratios),
                "ratio_range": (min(ratios), max(ratios)),
                "req_s": statistics.median(speeds[impl]),
                "note": notes.get(impl, ""),
            }
        )
    return rows


def instructions(clients: Sequence[str], concurrency: int, rounds: int) -> list[dict[str, Any]]:
    """Instructions per request, counted by valgrind's callgrind: stable however busy the
    machine is. Each client runs at two sizes; the difference over the extra requests leaves
    out start-up and warm-up. Slow (valgrind runs Python ~50x slower): minutes."""
    small, large = 500, 2500
    counts: dict[str, list[float]] = {impl: [] for impl in clients}
    with FakeProcess() as fake, tempfile.TemporaryDirectory() as tmp:

        def count(impl: str, n: int) -> int:
            out = os.path.join(tmp, f"callgrind.{_KEYS[impl]}.{n}")
            subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "-q",
                 sys.executable, __file__, "--worker", _KEYS[impl], "--url", fake.url,
                 "--n", str(n), "--concurrency", str(concurrency), "--warmup", "300"],
                check=True, capture_output=True,
            )
            fake.reset()
            with open(out) as file:
                for line in file:
                    if line.startswith(("summary:", "totals:")):
                        return int(line.split()[1])
            raise RuntimeError(f"no instruction total in {out}")

        for r in range(rounds):
            for impl in clients:
                per = (count(impl, large) - count(impl, small)) / (large - small)
                counts[impl].append(per)
                print(f"  round {r + 1} {impl:<34} {per:,.0f} instructions/req", file=sys.stderr)
    base = counts.get(RAW)
    return [
        {
            "impl": impl,
            "median": statistics.median(v),
            "range": (min(v), max(v)),
            "ratio": statistics.median(v) / statistics.median(base) if base else math.nan,
        }
        for impl, v in counts.items()
    ]


def available(clients: Sequence[str]) -> list[str]:
    """``clients`` without httpx when it is not installed (it is only in the bench extra)."""
    if HTTPX in clients and importlib.util.find_spec("httpx") is None:
        print("httpx is not installed (pip install -e '.[bench]'): skipping it", file=sys.stderr)
        return [c for c in clients if c != HTTPX]
    return list(clients)


def verdicts(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, str, bool]]:
    """(measure, value, target, met) for the issue's targets that these rows can judge."""
    by = {r["impl"]: r for r in rows}
    out = []
    if OURS in by and RAW in by:
        ratio, (low, high) = by[OURS]["ratio"], by[OURS]["ratio_range"]
        value = f"{ratio:.3f}x (rounds {low:.2f}-{high:.2f})"
        out.append(("rate-limited lane vs the lean loop", value, "<= 1.00x", ratio <= 1.0))
    if OURS in by and HTTPX in by:
        vs = by[OURS]["us_median"] / by[HTTPX]["us_median"]
        out.append(("CPU/request vs httpx", f"{vs:.2f}x", "clearly below (< 0.90x)", vs < 0.9))
    return out


def render(rows: Sequence[dict[str, Any]]) -> str:
    first = rows[0]
    head = (
        f"Client CPU per request (user+sys of the client process / requests): "
        f"{first['n']} crun creates per run, concurrency {first['concurrency']}, "
        f"interleaved rounds, fake provider in its own process"
    )
    body = table(
        ["client", "runs", "us CPU/req (median)", "min", "max", "vs lean loop", "req/s (wall)"],
        [
            [
                r["impl"] + (" *" if r["note"] else ""),
                str(r["runs"]),
                f"{r['us_median']:.1f}",
                f"{r['us_min']:.1f}",
                f"{r['us_max']:.1f}",
                f"{r['ratio']:.3f}x ({r['ratio_range'][0]:.2f}-{r['ratio_range'][1]:.2f})",
                f"{r['req_s']:.0f}",
            ]
            for r in rows
        ],
    )
    lines = [head, body]
    lines += [f"* {r['impl']}: {r['note']}" for r in rows if r["note"]]
    lines.append(
        "vs lean loop: median (range) over rounds of the ratio to the lean loop's run of the "
        "same round"
    )
    lines += [
        f"target {measure} {target}: {'met' if met else 'NOT met'} ({value})"
        for measure, value, target, met in verdicts(rows)
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="requests per measured run")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    parser.add_argument(
        "--httpx-rounds",
        type=int,
        default=DEFAULT_HTTPX_ROUNDS,
        help="rounds httpx takes part in (the first ones)",
    )
    parser.add_argument(
        "--warmup", type=int, default=DEFAULT_WARMUP, help="requests before measuring"
    )
    parser.add_argument(
        "--clients",
        default=",".join(_KEYS[i] for i in IMPLS),
        help="comma-separated subset of: ours,unlimited,lean,msgspec,httpx",
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile one persona_async run with cProfile"
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per request with valgrind's callgrind (slow, but stable)",
    )
    parser.add_argument("--worker", choices=sorted(_KEYS.values()), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        impl = _IMPL_BY_KEY[args.worker]
        result = asyncio.run(
            _measure(impl, args.url, args.n, args.concurrency, args.warmup, args.profile)
        )
        print(json.dumps(result))
        return 0
    if args.profile:
        with FakeProcess() as fake:
            result = asyncio.run(
                _measure(OURS, fake.url, args.n, args.concurrency, args.warmup, True)
            )
        print(json.dumps(result))
        return 0
    try:
        clients = [_IMPL_BY_KEY[k.strip()] for k in args.clients.split(",")]
    except KeyError as exc:
        parser.error(f"unknown client {exc}; choose from {', '.join(_IMPL_BY_KEY)}")
    clients = available(clients)
    print(machine())
    if args.instructions:
        rows = instructions(clients, args.concurrency, max(1, min(args.rounds, 3)))
        print(
            table(
                ["client", "instructions/request (median)", "range", "vs lean loop"],
                [
                    [
                        r["impl"],
                        f"{r['median']:,.0f}",
                        f"{r['range'][0]:,.0f}-{r['range'][1]:,.0f}",
                        f"{r['ratio']:.3f}x",
                    ]
                    for r in rows
                ],
            )
        )
        return 0
    rows = run(args.n, args.concurrency, args.rounds, args.warmup, clients, args.httpx_rounds)
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
