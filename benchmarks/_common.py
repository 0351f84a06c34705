"""Shared pieces of the benchmarks: the fake provider in its own process, machine facts, tables.

The fake provider always runs as a separate process (``python -m persona_async.testing``), so
whatever CPU and memory it uses is never counted against the client being measured.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
from collections.abc import Iterator, Sequence
from importlib import metadata
from types import TracebackType
from typing import Any
from urllib import request as urlrequest

from persona_async import PersonaRequest

#: The key the fake accepts and every client sends; loopback only, not a secret.
API_KEY = "bench-key"
#: crun's create endpoint, as served by the fake.
CRUN_PATH = "/api/v1/client/job/suno-persona-generate"

# Talk to the fake directly, whatever http_proxy the environment names.
_OPENER = urlrequest.build_opener(urlrequest.ProxyHandler({}))


class FakeProcess:
    """``python -m persona_async.testing`` in a child process; a context manager.

    Example::

        with FakeProcess("--rate-limit", "50", "--rate-period", "1") as fake:
            print(fake.url, fake.stats()["window_violations"])
    """

    def __init__(self, *args: str) -> None:
        command = [
            sys.executable, "-m", "persona_async.testing",
            "--port", "0", "--api-key", API_KEY, *args,
        ]  # fmt: skip
        self._proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.startswith("READY "):
            self.close()
            raise RuntimeError(f"the fake provider did not start: {line!r}")
        self.url = line.split()[1]

    def stats(self) -> dict[str, Any]:
        with _OPENER.open(self.url + "/_fake/stats", timeout=30) as resp:
            return dict(json.load(resp))

    def reset(self) -> None:
        """Forget counts, windows and stored personas (keeps the fake small on long runs)."""
        req = urlrequest.Request(self.url + "/_fake/reset", data=b"", method="POST")
        with _OPENER.open(req, timeout=30) as resp:
            resp.read()

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> FakeProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def persona_requests(n: int, prefix: str = "b") -> Iterator[PersonaRequest]:
    """``n`` distinct crun requests, made one at a time (nothing is held in a list)."""
    for i in range(n):
        yield PersonaRequest(
            f"task_{prefix}{i}", f"clip_{prefix}{i}", "Neon Siren", "Smoky late-night R&B"
        )


def crun_bodies(n: int, prefix: str = "b") -> Iterator[dict[str, str]]:
    """The same requests as plain JSON objects, for the hand-written loops."""
    for i in range(n):
        yield {
            "task_id": f"task_{prefix}{i}",
            "suno_id": f"clip_{prefix}{i}",
            "name": "Neon Siren",
            "description": "Smoky late-night R&B",
        }


def cpu_seconds() -> float:
    """User + system CPU of this process so far (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_worker(script: str, *args: str) -> dict[str, Any]:
    """Run ``script`` in a fresh interpreter; it prints one JSON object as its last line."""
    done = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{os.path.basename(script)} {' '.join(args)} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> str:
    """One line naming the machine and the versions the figures belong to."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    libs = ", ".join(
        f"{d} {_version(d)}" for d in ("persona-async", "aiohttp", "httpx", "msgspec", "anyio")
    )
    return (
        f"machine: {cpus} CPUs (nproc), {_cpu_model()}, {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()} "
        f"({platform.python_implementation()}); {libs}; load average {load}"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table, numbers right-aligned."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [
        all(_is_number(row[i]) for row in cells[1:]) if rows else False for i in range(len(headers))
    ]

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(row, widths, numeric, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def _is_number(text: str) -> bool:
    try:
        float(text.rstrip("x%").replace(",", ""))
    except ValueError:
        return False
    return True
