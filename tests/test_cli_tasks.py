"""The CLI with an async-task provider (kie's market route): the journal records the provider's
task id the moment the submit is answered, and a run killed with ``kill -9`` between submit and
completion is resumed by polling that task, never by submitting again (the fake counts submits).
"""

from __future__ import annotations

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
    write_jsonl,
)

from persona_async.testing import FakeProvider

pytestmark = pytest.mark.anyio

KEY_ENV = "CLI_TEST_KIE_JOBS_KEY"
KEY = "sk-kiejobs-5c2e-MUST-NOT-LEAK"


def config(url: str, deadline: float = 30.0) -> str:
    return (
        f'[providers.kie-jobs]\nkind = "kie-jobs"\napi_key_env = "{KEY_ENV}"\n'
        f'base_url = "{url}"\nrate_limit = 1000\nrate_period = 1.0\nmax_concurrency = 4\n'
        f"[client]\nbackoff_initial = 0.005\nbackoff_max = 0.05\ndeadline = {deadline}\n"
    )


def args(tmp_path: Path) -> list[str]:
    return [
        "batch",
        str(tmp_path / "in.jsonl"),
        "--config",
        str(tmp_path / "persona.toml"),
        "--out",
        str(tmp_path / "results.jsonl"),
        "--no-progress",
    ]


def submits(fake: FakeProvider) -> Counter[str]:
    return Counter(
        r.json["input"]["audio_id"] for r in fake.requests if r.kind == "kie-jobs" and r.json
    )


async def test_kill_9_between_submit_and_completion_then_resume_polls_and_never_resubmits(
    tmp_path: Path,
) -> None:
    rows = items(4, lanes=("kie-jobs",))
    write_jsonl(tmp_path / "in.jsonl", rows)
    journal = tmp_path / "results.jsonl"
    env = cli_env(**{KEY_ENV: KEY})
    async with FakeProvider(api_keys=(KEY,)) as fake:
        fake.task_seconds = 60.0  # nothing finishes while the first run lives
        (tmp_path / "persona.toml").write_text(config(fake.url))
        async with await anyio.open_process(
            command(*args(tmp_path)), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        ) as process:
            with anyio.fail_after(20):
                while (  # noqa: ASYNC110 - a subprocess and a file: nothing to wait on
                    len(fake.tasks) < len(rows)
                    or not journal.exists()
                    or sum(r["status"] == "submitted" for r in read_journal(journal)) < len(rows)
                ):
                    await anyio.sleep(0.05)
            process.kill()
            await process.wait()
        await anyio.sleep(0.1)
        before = read_journal(journal)
        submitted = {
            identity(r): r["provider_task_id"] for r in before if r["status"] == "submitted"
        }
        assert set(submitted) == {identity(row) for row in rows}
        assert set(submitted.values()) == set(fake.tasks)
        assert all(last_records(before)[k]["status"] == "submitted" for k in submitted)
        assert KEY.encode() not in journal.read_bytes()

        for task in fake.tasks.values():  # the tasks finish while nobody is watching
            task.ready_at = 0.0
        fake.requests.clear()
        result = await run_cli(*args(tmp_path), env=env)

    assert result.returncode == 0, result.stderr
    assert b"4 submitted task(s) to poll" in result.stderr
    assert submits(fake) == Counter()  # the resumed run submitted nothing
    polled = {
        r.query_string.removeprefix("taskId=") for r in fake.requests if r.kind == "kie-jobs-status"
    }
    assert polled == set(fake.tasks)
    last = last_records(read_journal(journal))
    for key, task_id in submitted.items():
        record = last[key]
        assert record["status"] == "created"
        assert record["provider_task_id"] == task_id
        assert record["persona_id"] == next(
            pid for pid, p in fake.personas.items() if p.get("provider_task_id") == task_id
        )


async def test_task_outliving_the_deadline_is_polled_again_by_the_next_run(tmp_path: Path) -> None:
    rows = items(2, lanes=("kie-jobs",))
    write_jsonl(tmp_path / "in.jsonl", rows)
    journal = tmp_path / "results.jsonl"
    env = cli_env(**{KEY_ENV: KEY})
    async with FakeProvider(api_keys=(KEY,)) as fake:
        fake.task_seconds = 60.0
        (tmp_path / "persona.toml").write_text(config(fake.url, deadline=2.5))
        first = await run_cli(*args(tmp_path), env=env)
        timed_out = last_records(read_journal(journal))
        for task in fake.tasks.values():
            task.ready_at = 0.0
        fake.requests.clear()
        second = await run_cli(*args(tmp_path), env=env)

    assert first.returncode == 1, first.stderr
    for record in timed_out.values():
        assert record["status"] == "failed"
        assert record["error"]["type"] == "ProviderTimeoutError"
        assert record["error"]["next_run_retries"] is True
        assert record["provider_task_id"] in record["error"]["message"]
    assert second.returncode == 0, second.stderr
    assert submits(fake) == Counter()
    last = last_records(read_journal(journal))
    assert {r["status"] for r in last.values()} == {"created"}
    assert {r["provider_task_id"] for r in last.values()} == set(fake.tasks)


async def test_a_task_the_provider_failed_is_final_the_next_run_neither_polls_nor_resubmits_it(
    tmp_path: Path,
) -> None:
    rows = items(2, lanes=("kie-jobs",))
    write_jsonl(tmp_path / "in.jsonl", rows)
    journal = tmp_path / "results.jsonl"
    env = cli_env(**{KEY_ENV: KEY})
    async with FakeProvider(api_keys=(KEY,)) as fake:
        fake.failing_tasks = {rows[0]["audio_id"]}
        (tmp_path / "persona.toml").write_text(config(fake.url))
        first = await run_cli(*args(tmp_path), env=env)
        failed = last_records(read_journal(journal))[identity(rows[0])]
        fake.requests.clear()
        second = await run_cli(*args(tmp_path), env=env)

    assert first.returncode == 1, first.stderr
    assert failed["status"] == "failed"
    assert failed["error"]["type"] == "GenerationFailedError"
    assert failed["provider_task_id"] in set(fake.tasks)
    # The task is over: its id will not change that.
    assert failed["error"]["next_run_retries"] is False
    assert second.returncode == 1, second.stderr  # the failure stands
    assert fake.requests == []  # nothing polled, nothing submitted
    last = last_records(read_journal(journal))
    assert last[identity(rows[0])]["status"] == "failed"
    created = last[identity(rows[1])]
    assert created["status"] == "created"
    assert created["provider_task_id"] in set(fake.tasks) - {failed["provider_task_id"]}
