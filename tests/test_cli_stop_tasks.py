"""Ctrl-C during a batch on async-task providers (kie's market route, Evolink): a submitted item
is a task running at its provider, not an item "not sent". The summary and the journal say so,
and the next run polls it, never submits it again."""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from pathlib import Path

import anyio
import pytest
from _cli_support import (
    cli_env,
    command,
    identity,
    items,
    last_records,
    read_journal,
    run_cli,
    run_on_a_terminal,
    write_jsonl,
)

from persona_async.testing import FakeProvider

pytestmark = pytest.mark.anyio

KEY = "sk-tasks-91d0-MUST-NOT-LEAK"
ENV = {"kie-jobs": "CLI_TEST_KIE_JOBS_KEY", "evolink": "CLI_TEST_EVOLINK_KEY"}


def config(
    url: str, rate: str = "rate_limit = 1000\nrate_period = 1.0", deadline: float = 120.0
) -> str:
    return "".join(
        f'[providers.{lane}]\nkind = "{lane}"\napi_key_env = "{env}"\nbase_url = "{url}"\n'
        f"{rate}\nmax_concurrency = 4\n"
        for lane, env in ENV.items()
    ) + f"[client]\nbackoff_initial = 0.005\nbackoff_max = 0.05\ndeadline = {deadline}\n"


def rows(count: int) -> list[dict[str, object]]:
    out = items(count, lanes=tuple(ENV))
    for row in out:
        row.update(vocal_start=0.0, vocal_end=20.0)  # Evolink wants both ends, 10-30 s apart
    return out


def args(tmp_path: Path) -> list[str]:
    return ["batch", str(tmp_path / "in.jsonl"), "--config", str(tmp_path / "persona.toml"),
            "--out", str(tmp_path / "results.jsonl"), "--no-progress"]  # fmt: skip


def submits(fake: FakeProvider) -> Counter[str]:
    return Counter(r.kind for r in fake.requests if r.method == "POST")


async def test_ctrl_c_after_every_task_was_submitted_says_they_run_and_the_rerun_polls_them(
    tmp_path: Path,
) -> None:
    lines = rows(12)
    write_jsonl(tmp_path / "in.jsonl", lines)
    journal = tmp_path / "results.jsonl"
    env = cli_env(**{name: KEY for name in ENV.values()})
    async with FakeProvider(api_keys=(KEY,)) as fake:
        fake.task_seconds = 600.0  # nothing finishes while the first run lives
        (tmp_path / "persona.toml").write_text(config(fake.url))
        async with await anyio.open_process(
            command(*args(tmp_path)), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ) as process:
            with anyio.fail_after(20):
                while (  # noqa: ASYNC110 - a subprocess and a file: nothing to wait on
                    not journal.exists()
                    or sum(r["status"] == "submitted" for r in read_journal(journal)) < len(lines)
                ):
                    await anyio.sleep(0.05)
            process.send_signal(signal.SIGINT)  # Ctrl-C
            assert process.stdout is not None
            assert process.stderr is not None
            with anyio.fail_after(20):
                out = b"".join([chunk async for chunk in process.stdout])
                err = b"".join([chunk async for chunk in process.stderr])
                code = await process.wait()
        first = read_journal(journal)

        for task in fake.tasks.values():  # the tasks finish while nobody is watching
            task.ready_at = 0.0
        fake.requests.clear()
        second = await run_cli(*args(tmp_path), env=env)

    text = out.decode()
    assert code == 130, err
    # The summary says what happened: submitted, still running, the rerun polls them.
    assert "not sent" not in text, text
    assert "12 item(s) were submitted and are still running at their provider" in text, text
    assert "running the same command again polls them" in text, text
    # The journal leaves each as submitted: no record calls it failed or unsent.
    last = last_records(first)
    assert {identity(row) for row in lines} == set(last)
    assert {r["status"] for r in last.values()} == {"submitted"}, last
    assert not [r for r in first if r["status"] == "failed"]
    # The rerun polls the tasks and submits nothing.
    assert second.returncode == 0, second.stderr
    assert submits(fake) == Counter()
    final = last_records(read_journal(journal))
    assert {r["status"] for r in final.values()} == {"created"}
    assert {r["provider_task_id"] for r in final.values()} == set(fake.tasks)


async def test_ctrl_c_with_some_tasks_submitted_and_some_waiting_for_the_window_counts_each(
    tmp_path: Path,
) -> None:
    lines = rows(12)  # 6 per lane; each lane may start 4 a minute
    write_jsonl(tmp_path / "in.jsonl", lines)
    journal = tmp_path / "results.jsonl"
    env = cli_env(**{name: KEY for name in ENV.values()})
    async with FakeProvider(api_keys=(KEY,)) as fake:
        fake.task_seconds = 600.0
        (tmp_path / "persona.toml").write_text(
            config(fake.url, rate="rate_limit = 4\nrate_period = 60.0")
        )
        async with await anyio.open_process(
            command(*args(tmp_path)), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ) as process:
            with anyio.fail_after(20):
                while (  # noqa: ASYNC110 - a subprocess and a file: nothing to wait on
                    not journal.exists()
                    or sum(r["status"] == "submitted" for r in read_journal(journal)) < 8
                ):
                    await anyio.sleep(0.05)
            process.send_signal(signal.SIGINT)
            assert process.stdout is not None
            with anyio.fail_after(20):
                out = b"".join([chunk async for chunk in process.stdout])
                code = await process.wait()
        records = read_journal(journal)

    text = out.decode()
    assert code == 130
    assert "\n8 item(s) were submitted and are still running at their provider" in text, text
    assert "\n4 item(s) were not sent because the run stopped." in text, text
    last = last_records(records)
    assert sorted(r["status"] for r in last.values()) == ["submitted"] * 8, last
    assert len(fake.tasks) == 8


async def test_the_live_line_counts_the_tasks_running_at_the_provider(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", rows(4))
    env = cli_env(**{name: KEY for name in ENV.values()})
    async with FakeProvider(api_keys=(KEY,)) as fake:
        fake.task_seconds = 600.0
        # Without the count on the line, the run ends by itself at the deadline.
        (tmp_path / "persona.toml").write_text(config(fake.url, deadline=8.0))
        live = [a for a in args(tmp_path) if a != "--no-progress"]
        code, output = await anyio.to_thread.run_sync(
            lambda: run_on_a_terminal(live, env, interrupt_at=b"4 task(s) running")
        )
    assert code == 130, output
    # Nothing is done yet, but the line does not look idle: the four tasks are running.
    frames = [frame for frame in output.split(b"\r") if b"0/4 (0%)" in frame]
    assert any(b"0/4 (0%)  4 task(s) running at the provider" in f for f in frames), output
