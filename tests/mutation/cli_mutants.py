"""Mutation testing of the CLI's modules, whose tests run the CLI as subprocesses.

mutmut learns which tests reach a function by watching the test process, and the CLI tests
reach ``_cli/_journal.py`` and ``_cli/_batch.py`` in ``python -m persona_async`` subprocesses,
which it cannot see: their mutants come out "no tests". Run this after ``mutmut run`` has
made the mutants (README, Development); from the project root:

    nice -n 10 .venv/bin/python tests/mutation/cli_mutants.py [MUTANT_GLOB ...]

1. Which tests reach each function: every selected test (``--tests``) is run once in
   ``mutants/``, no mutant active, under coverage, which follows the subprocesses
   (``patch = ["subprocess"]``); one that cannot run under coverage counts for every
   function. This is also the clean run: a test that fails stops here. Kept in
   ``mutants/cli-mutants-reach.json``: a later run measures only tests it does not know
   (``--measure``: all again).
2. Each mutant of those modules without a verdict (mutmut's "no tests", or not run; only
   those matching the globs, in their order; ``--again``: with a verdict too): the tests
   that reach its function (file group by file group in the order of ``--tests``, fastest
   first in each), stopping at the first failure (run again to tell a flaky test from the
   mutant), with ``MUTANT_UNDER_TEST`` naming the mutant. The subprocesses inherit it, and
   ``cli_env()`` points their ``PYTHONPATH`` at ``mutants/``.
3. The verdict goes into mutmut's own results (its ``.meta`` files) as it comes, so
   ``mutmut results`` and ``mutmut show NAME`` read it as usual, and an interrupted run
   continues where it stopped.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import fnmatch
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from coverage import CoverageData
from coverage.exceptions import CoverageException

MODULES = (
    "persona_async/_cli/_journal.py",
    "persona_async/_cli/_journal_records.py",
    "persona_async/_cli/_batch.py",
    "persona_async/_cli/_batch_reading.py",
    "persona_async/_cli/_batch_stopping.py",
)
# In this order: the journal's own tests first (most of their mutants die there).
TESTS = ("tests/test_journal.py", "tests/test_cli*.py")
MUTANTS = Path("mutants")
REACH = MUTANTS / "cli-mutants-reach.json"
# mutmut's exit codes: pytest's, and its own for "no tests" and "timeout".
KILLED = (1, 3)
NO_TESTS = 33
TIMEOUT = 36
# Tests that kill the CLI with SIGKILL: coverage never hears what that process ran, so they
# count for every function.
KILLS = "kill_9"
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("globs", nargs="*", default=["*"], help="mutant names or globs, in order")
    parser.add_argument("--again", action="store_true", help="run mutants with a verdict too")
    parser.add_argument("--skip", nargs="+", default=[], help="mutant names or globs not to run")
    parser.add_argument("--tests", nargs="+", default=TESTS, help="test files (globs), in order")
    parser.add_argument("--measure", action="store_true", help="measure the reach again")
    args = parser.parse_args()
    if not (MUTANTS / MODULES[0]).exists():
        sys.exit("no mutants/: run `mutmut run` first (README, Development)")
    reach = _load_reach(args.tests, again=args.measure)
    todo: list[tuple[str, str]] = []  # (module, mutant), in the order of the globs
    for glob in args.globs:
        for module in MODULES:
            verdicts = json.loads((MUTANTS / (module + ".meta")).read_text())["exit_code_by_key"]
            todo += [
                (module, name)
                for name, code in verdicts.items()
                if fnmatch.fnmatchcase(name, glob)
                and (module, name) not in todo
                and not any(fnmatch.fnmatchcase(name, skip) for skip in args.skip)
                and (args.again or code in (None, NO_TESTS))  # not given a verdict yet
            ]
    bodies = {module: _function_lines(MUTANTS / module) for module in MODULES}
    counts: dict[str, int] = {}
    for module, name in todo:
        tests = _tests_reaching(reach, module, bodies[module][_function_key(name)])
        code, elapsed = (NO_TESTS, 0.0)
        if tests:
            tests.sort(key=lambda test: (_rank(test, args.tests), reach["durations"][test]))
            code, elapsed = _run_mutant(name, tests, reach["durations"])
        meta_path = MUTANTS / (module + ".meta")
        meta = json.loads(meta_path.read_text())  # read again: another run may share it
        meta["exit_code_by_key"][name] = code
        meta["durations_by_key"][name] = elapsed
        meta_path.write_text(json.dumps(meta, indent=4))
        verdict = _status(code)
        counts[verdict] = counts.get(verdict, 0) + 1
        print(f"{verdict:9} {elapsed:6.1f}s  {name}", flush=True)
    print(", ".join(f"{n} {v}" for v, n in sorted(counts.items())) or "nothing to run")
    return 0


def _rank(test: str, globs: list[str]) -> int:
    path = test.split("::")[0]
    return next(n for n, glob in enumerate(globs) if fnmatch.fnmatchcase(path, glob))


def _status(code: int) -> str:
    if code in KILLED:
        return "killed"
    return {0: "survived", NO_TESTS: "no tests", TIMEOUT: "timeout"}.get(code, f"exit {code}")


def _function_key(mutant: str) -> str:
    # persona_async._cli._journal.xǁJournalǁpending__mutmut_3 -> xǁJournalǁpending
    return mutant.rsplit(".", 1)[1].rsplit("__mutmut_", 1)[0]


def _function_lines(path: Path) -> dict[str, set[int]]:
    """Function key -> the lines of its unmutated copy's body (what runs when it is called)."""
    lines: dict[str, set[int]] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.endswith(
            "__mutmut_orig"
        ):
            body = node.body
            if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:] or body  # the docstring does not run
            end = node.end_lineno or node.lineno
            lines[node.name.removesuffix("__mutmut_orig")] = set(range(body[0].lineno, end + 1))
    return lines


def _tests_reaching(reach: dict[str, Any], module: str, body: set[int]) -> list[str]:
    return [
        test
        for test, files in reach["lines"].items()
        if files is None or KILLS in test or body & set(files.get(module, ()))
    ]


def _run_mutant(name: str, tests: list[str], durations: dict[str, float]) -> tuple[int, float]:
    """Run ``tests`` in their order with mutant ``name`` active, up to the first failure. A
    failure is checked once more with the mutant active: a test that then passes failed
    for another reason (a timing test on a loaded machine), and the rest of the tests run."""
    todo = list(tests)
    started = time.monotonic()
    while todo:
        code, failed = _pytest(name, todo, 60 + 3 * sum(durations[test] for test in todo))
        if code in KILLED and failed in todo:
            again, _ = _pytest(name, [failed], 60 + 3 * durations[failed])
            if again == 0:
                print(f"          (a flake, not the mutant: {failed})", flush=True)
                todo = todo[todo.index(failed) + 1 :]
                continue
            code = TIMEOUT if again == TIMEOUT else code
        return code, time.monotonic() - started
    return 0, time.monotonic() - started


def _pytest(name: str, tests: list[str], limit: float) -> tuple[int, str | None]:
    """pytest's exit code with mutant ``name`` active, and the first test that failed."""
    try:
        result = subprocess.run(
            [*PYTEST, "-x", "--tb=no", "-rf", *tests], cwd=MUTANTS, capture_output=True,
            env={**os.environ, "MUTANT_UNDER_TEST": name}, timeout=limit, check=False, text=True,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return TIMEOUT, None
    if result.returncode not in (0, *KILLED):
        sys.exit(f"{name}: pytest exited {result.returncode}:\n{result.stdout}")
    failed = re.search(r"^FAILED (\S+)", result.stdout, re.M)
    return result.returncode, failed.group(1) if failed else None


def _load_reach(test_globs: list[str], *, again: bool) -> dict[str, Any]:
    """Test id -> module -> lines it ran (in the CLI's subprocesses too), and each test's
    duration; measured in mutants/ with no mutant active, once per test (``again``: all)."""
    reach: dict[str, Any] = {"lines": {}, "durations": {}}
    if REACH.exists() and not again:
        reach = json.loads(REACH.read_text())
    listed = subprocess.run(
        [*PYTEST, "--collect-only", *_expand(test_globs)], cwd=MUTANTS,
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    tests = [line for line in listed.stdout.splitlines() if "::" in line]
    new = [test for test in tests if test not in reach["lines"]]
    env = {**os.environ, "MUTANT_UNDER_TEST": ""}
    with tempfile.TemporaryDirectory() as scratch:
        for number, test in enumerate(new, start=1):
            data_dir = Path(scratch, str(number))
            data_dir.mkdir()
            started = time.monotonic()
            result = subprocess.run(
                [sys.executable, "-m", "coverage", "run", *PYTEST[1:], test], cwd=MUTANTS,
                env={**env, "COVERAGE_FILE": str(data_dir / ".coverage")}, capture_output=True,
                check=False,
            )  # fmt: skip
            reach["durations"][test] = time.monotonic() - started
            lines = None  # every function
            if result.returncode:
                # A test whose subprocess cannot write coverage's data (a file size limit):
                # run without coverage, and counted for every function.
                started = time.monotonic()
                plain = subprocess.run([*PYTEST, test], cwd=MUTANTS, env=env, capture_output=True)
                if plain.returncode:
                    sys.exit(f"{test} fails with no mutant active:\n{plain.stdout.decode()}")
                reach["durations"][test] = time.monotonic() - started
            else:
                # A subprocess cut off mid-write (a size limit) leaves unreadable data.
                with contextlib.suppress(CoverageException):
                    lines = _lines_run(data_dir)
            reach["lines"][test] = lines
            print(f"reach {number}/{len(new)} {test}" + (lines is None) * ": every function")
            REACH.write_text(json.dumps(reach))
    # Only the selected tests count (the file may know tests of another selection).
    return {key: {test: reach[key][test] for test in tests} for key in ("lines", "durations")}


def _lines_run(data_dir: Path) -> dict[str, list[int]]:
    """Module -> the lines the data files in ``data_dir`` (one per process) say were run."""
    files: dict[str, set[int]] = {module: set() for module in MODULES}
    for data_file in data_dir.iterdir():
        data = CoverageData(str(data_file))
        data.read()
        for module, lines in files.items():
            lines.update(data.lines(str((MUTANTS / module).resolve())) or ())
    return {module: sorted(lines) for module, lines in files.items()}


def _expand(globs: list[str]) -> list[str]:
    return sorted({str(path.relative_to(MUTANTS)) for g in globs for path in MUTANTS.glob(g)})


if __name__ == "__main__":
    sys.exit(main())
