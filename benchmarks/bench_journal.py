"""What the batch journal costs: ``persona-async batch`` over N items against an unlimited fake.

Each run is a fresh ``persona-async batch`` process (two lanes, crun and kie, each at its default
concurrency of 16 and a limit high enough never to wait) writing a new journal in a temporary
directory on the same filesystem as ``--dir``; the fake provider runs in its own process. The
batch's CPU (user + sys, all its threads) and peak RSS come from ``os.wait4`` on that process
alone, so neither the fake nor this script is counted. Items per second is N over the wall time
of the whole command, start-up included.

Example::

    python benchmarks/bench_journal.py                  # 100k items, 3 runs (~2 min)
    python benchmarks/bench_journal.py --items 20000 --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from _common import API_KEY, FakeProcess, machine, table

_CONFIG = """\
[providers.crun]
kind = "crun"
api_key_env = "BENCH_KEY"
base_url = "{url}"
rate_limit = 1000000
rate_period = 1.0

[providers.kie]
kind = "kie"
api_key_env = "BENCH_KEY"
base_url = "{url}"
rate_limit = 1000000
rate_period = 1.0
"""


def _write_input(path: str, items: int) -> None:
    with open(path, "w", encoding="utf-8") as file:
        for n in range(items):
            lane = "crun" if n % 2 else "kie"
            row = {"provider": lane, "task_id": f"task-{n}", "audio_id": f"clip-{n}",
                   "name": "Neon Siren", "description": "Smoky late-night R&B"}  # fmt: skip
            file.write(json.dumps(row) + "\n")


def _one_run(fake: FakeProcess, workdir: str, items: int) -> dict[str, float]:
    fake.reset()  # one persona per audio id on the family: every run starts clean
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        source, config = os.path.join(tmp, "in.jsonl"), os.path.join(tmp, "persona.toml")
        _write_input(source, items)
        with open(config, "w", encoding="utf-8") as file:
            file.write(_CONFIG.format(url=fake.url))
        out = os.path.join(tmp, "results.jsonl")
        command = [sys.executable, "-m", "persona_async", "batch", source, "--config", config,
                   "--out", out, "--no-progress"]  # fmt: skip
        env = {**os.environ, "BENCH_KEY": API_KEY}
        started = time.perf_counter()
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"the batch exited with {proc.returncode}")
        with open(out, "rb") as file:
            records = sum(1 for _ in file)
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "items_per_s": items / wall,
        "cpu_us_per_item": cpu / items * 1e6,
        "rss_mib": usage.ru_maxrss / 1024,
        "records": records,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the journals go (default: $TMPDIR)")
    args = parser.parse_args()
    print(machine())
    rows = []
    with FakeProcess() as fake:
        for run in range(1, args.runs + 1):
            result = _one_run(fake, args.dir or tempfile.gettempdir(), args.items)
            rows.append(result)
            print(
                f"run {run}: {result['items_per_s']:.0f} items/s, "
                f"{result['cpu_us_per_item']:.0f} us CPU/item, {result['rss_mib']:.0f} MiB RSS, "
                f"{result['records']:.0f} records",
                flush=True,
            )

    def summary(key: str, fmt: str) -> list[str]:
        values = [row[key] for row in rows]
        return [format(statistics.median(values), fmt),
                f"{format(min(values), fmt)}-{format(max(values), fmt)}"]  # fmt: skip

    print(
        table(
            ["measure", "median", "range"],
            [
                ["items/s", *summary("items_per_s", ".0f")],
                ["CPU us/item", *summary("cpu_us_per_item", ".0f")],
                ["peak RSS MiB", *summary("rss_mib", ".0f")],
            ],
        )
    )
    print(json.dumps({key: statistics.median(row[key] for row in rows) for key in rows[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
