"""Every Python snippet in the README runs as pasted: each compiles as a file of its own, and
each that runs on its own (``asyncio.run(main())``) is run in a fresh interpreter against the
fake provider, which the providers find through ``<KIND>_API_KEY`` and ``<KIND>_BASE_URL``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from persona_async.testing import FakeProvider

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLE = ROOT / "examples" / "fastapi_app.py"


def snippets() -> list[tuple[int, str]]:
    text = README.read_text(encoding="utf-8")
    found = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        found.append((text.count("\n", 0, match.start()) + 1, match.group(1)))
    return found


def runnable(source: str) -> bool:
    # The Redis snippet needs a redis-server on localhost:6379; it is compiled, not run.
    return "asyncio.run(main())" in source and "RedisLimiter" not in source


SNIPPETS = snippets()
RUNNABLE = [(line, source) for line, source in SNIPPETS if runnable(source)]


def test_the_readme_has_snippets_to_check() -> None:
    assert len(SNIPPETS) >= 6
    assert len(RUNNABLE) >= 4


@pytest.mark.parametrize(("line", "source"), SNIPPETS, ids=[f"line{n}" for n, _ in SNIPPETS])
def test_every_snippet_compiles_as_a_file_of_its_own(line: int, source: str) -> None:
    # Top-level `async with` or `await` is a SyntaxError here, as it is in a pasted file.
    compile(source, f"README.md:{line}", "exec")


def test_the_fastapi_snippet_is_quoted_from_the_tested_example() -> None:
    [(_, source)] = [(n, s) for n, s in SNIPPETS if "FastAPI(lifespan" in s]
    example = {line.strip() for line in EXAMPLE.read_text(encoding="utf-8").splitlines()}
    missing = [line for line in source.splitlines() if line.strip() not in example]
    assert missing == []


@pytest.mark.anyio
@pytest.mark.parametrize(("line", "source"), RUNNABLE, ids=[f"line{n}" for n, _ in RUNNABLE])
async def test_every_runnable_snippet_runs_against_the_fake_provider(
    line: int, source: str, fake: FakeProvider, tmp_path: Path
) -> None:
    script = tmp_path / f"readme_{line}.py"
    script.write_text(source, encoding="utf-8")
    env = {
        **os.environ,
        "CRUN_API_KEY": fake.api_key,
        "KIE_API_KEY": fake.api_key,
        "CRUN_BASE_URL": fake.url,
        "KIE_BASE_URL": fake.url,
    }
    with anyio.fail_after(60):
        # The fake is served by this test's loop meanwhile: run_process does not block it.
        done = await anyio.run_process(
            [sys.executable, "-X", "dev", "-W", "error", str(script)],
            env=env,
            cwd=tmp_path,
            check=False,
        )
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    # Lane state changes may be logged there (a WARNING shows by default); nothing else may.
    for bad in ("Traceback", "Warning", "not closed", "Unclosed"):
        assert bad not in stderr, stderr
    if "FakeProvider(" not in source:  # a snippet that starts its own fake checks itself
        assert fake.request_count > 0
        assert fake.personas
        printed = done.stdout.decode()
        assert any(persona_id in printed for persona_id in fake.personas)


def test_every_snippet_passes_mypy_strict(tmp_path: Path) -> None:
    # A typed user pastes these too: each must type-check as it stands, with no `assert` or
    # cast added (issue 21: `if outcome.ok:` must narrow `outcome.persona`).
    files = [str(EXAMPLE)]  # the FastAPI snippet is an excerpt of it (checked above)
    for line, source in SNIPPETS:
        if "FastAPI(lifespan" in source:
            continue
        path = tmp_path / f"readme_line{line}.py"
        path.write_text(source, encoding="utf-8")
        files.append(str(path))
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--cache-dir", str(tmp_path / ".mypy_cache"), *files],
        capture_output=True, check=False, cwd=tmp_path, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
