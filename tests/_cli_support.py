"""Shared by the CLI tests: run ``python -m persona_async`` as a real subprocess against a
``FakeProvider`` on loopback, and read what it left in its journal."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

import persona_async
from persona_async.testing import FakeProvider

# Distinctive, so a leak into a journal or a terminal is easy to find.
KEYS = {"crun": "sk-crun-4f9a-MUST-NOT-LEAK", "kie": "sk-kie-77b1-MUST-NOT-LEAK"}
ENV_NAMES = {"crun": "CLI_TEST_CRUN_KEY", "kie": "CLI_TEST_KIE_KEY"}
_PACKAGE_PARENT = str(Path(persona_async.__file__).resolve().parent.parent)
FINAL = frozenset({"created", "exists", "failed", "invalid"})


def config_text(
    url: str,
    *,
    rate_limit: int = 1000,
    rate_period: float = 1.0,
    max_concurrency: int = 8,
    lanes: Sequence[str] = ("crun", "kie"),
    client: Mapping[str, float | int] | None = None,
) -> str:
    """A config with a crun lane and a kie lane at ``url``, and compressed retry timings."""
    tables = []
    for lane in lanes:
        tables.append(
            f'[providers.{lane}]\nkind = "{lane}"\napi_key_env = "{ENV_NAMES[lane]}"\n'
            f'base_url = "{url}"\nrate_limit = {rate_limit}\nrate_period = {rate_period}\n'
            f"max_concurrency = {max_concurrency}\n"
        )
    settings = {
        "backoff_initial": 0.005,
        "backoff_max": 0.05,
        "retry_after_max": 0.1,
        "retry_budget": 100000,
        "deadline": 30.0,
        **(client or {}),
    }
    tables.append("[client]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
    return "\n".join(tables)


#: Set by ``coverage run`` (``patch = ["subprocess"]``): makes subprocesses measure themselves.
_COVERAGE_ENV = ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")


def cli_env(*, measured: bool = True, **extra: str) -> dict[str, str]:
    """The CLI's environment: the keys, this package. ``measured=False`` keeps coverage out of a
    subprocess whose files are size-limited (coverage's own data file would hit the limit)."""
    drop = {"CI", *(() if measured else _COVERAGE_ENV)}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    # The CLI imports the persona_async these tests imported, wherever the subprocess starts
    # (a mutation run's copy, not the installed one: tests/mutation/cli_mutants.py).
    env["PYTHONPATH"] = os.pathsep.join(
        [_PACKAGE_PARENT, *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env.update({ENV_NAMES[lane]: key for lane, key in KEYS.items()})
    env.update(extra)
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "persona_async", *args]


_WITH_FILE_SIZE_LIMIT = (
    "import os, resource, sys\n"
    "limit = int(sys.argv[1])\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'persona_async', *sys.argv[2:]])\n"
)


def command_with_file_size_limit(limit: int, *args: str) -> list[str]:
    """The CLI with every file it writes limited to ``limit`` bytes: a write past it fails with
    EFBIG, as on a full disk. Run it with ``cli_env(measured=False)``."""
    return [sys.executable, "-c", _WITH_FILE_SIZE_LIMIT, str(limit), *args]


async def run_cli(
    *args: str, stdin: bytes | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI to completion without blocking the event loop the fake provider runs on."""
    with anyio.fail_after(60):
        return await anyio.run_process(
            command(*args), input=stdin, check=False, env=dict(env or cli_env())
        )


def items(count: int, *, lanes: Sequence[str] = ("crun", "kie"), prefix: str = "") -> list[dict]:
    """``count`` valid input lines, alternating between ``lanes``, each with its own audio id."""
    return [
        {
            "provider": lanes[n % len(lanes)],
            "task_id": f"{prefix}task-{n}",
            "audio_id": f"{prefix}clip-{n}",
            "name": f"Persona {n}",
            "description": "Smoky late-night R&B",
        }
        for n in range(count)
    ]


def write_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_journal(path: Path) -> list[dict[str, Any]]:
    """Every record; fails if any line is not a whole JSON object."""
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"", "the journal must end with a newline"
    return [json.loads(line) for line in lines[:-1]]


def last_records(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], dict]:
    """The last record per (provider, task_id, audio_id), invalid records left out."""
    last: dict[tuple[str, str, str], dict] = {}
    for record in records:
        if record["status"] != "invalid":
            last[(record["provider"], record["task_id"], record["audio_id"])] = dict(record)
    return last


def summary_rows(output: bytes) -> dict[str, list[str]]:
    """The CLI's output, line by line, keyed by each line's first word (a lane's row by its
    name: ``rows["crun"][2]`` is its third column)."""
    return {line.split()[0]: line.split() for line in output.decode().splitlines() if line.strip()}


def identity(row: Mapping[str, Any]) -> tuple[str, str, str]:
    return (row["provider"], row["task_id"], row["audio_id"])


def run_on_a_terminal(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    interrupt_at: bytes | None = None,
) -> tuple[int, bytes]:
    """Run the CLI with stdout and stderr on a pseudo-terminal (blocking: call it in a thread);
    return its exit code and everything it wrote there, escape sequences included.

    ``interrupt_at``: send SIGINT once the output shows these bytes (Ctrl-C)."""
    controller, terminal = pty.openpty()
    env = {**(env or cli_env()), "TERM": "xterm", "COLUMNS": "200"}
    process = subprocess.Popen(
        command(*args), stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal, env=env
    )
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the other end is closed: the process is done
            break
        if not chunk:
            break
        output += chunk
        if interrupt_at is not None and interrupt_at in output:
            interrupt_at = None
            process.send_signal(signal.SIGINT)
    os.close(controller)
    return process.wait(timeout=60), output


def fake_provider(**kw: Any) -> FakeProvider:
    """A fake provider that accepts both lanes' keys."""
    return FakeProvider(api_keys=tuple(KEYS.values()), **kw)


def batch_args(tmp_path: Path, *extra: str, out: Path | None = None) -> list[str]:
    """``batch in.jsonl`` with the test's config, journal and no live line."""
    return ["batch", str(tmp_path / "in.jsonl"), "--config", str(tmp_path / "persona.toml"),
            "--out", str(out or tmp_path / "results.jsonl"), "--no-progress", *extra]  # fmt: skip
