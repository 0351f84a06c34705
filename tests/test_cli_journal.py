"""The journal a careful person trusts with a long paid job: it never destroys a file that is not
a journal, a request leaves only once its ``pending`` record is on stable storage, a full disk
ends the run cleanly and resumably, and a restart right after ``kill -9`` keeps the provider's
window. Real subprocesses against a real ``FakeProvider`` on loopback."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import anyio
import pytest
from _cli_support import (
    FINAL,
    batch_args,
    cli_env,
    command,
    command_with_file_size_limit,
    config_text,
    fake_provider,
    identity,
    items,
    last_records,
    read_journal,
    run_cli,
    write_jsonl,
)

pytestmark = pytest.mark.anyio


# -- never another file ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("notes.txt", b"call the label on monday\nsend the mixes\nbuy strings\n"),
        ("copy.csv", b"provider,task_id,audio_id,name,description\ncrun,t1,a1,Neon,Smoky\n"),
        ("one-line.json", b'{"id": "not ours", "note": "a JSON file without a newline"}'),
        ("no-newline.txt", b"a single line someone typed"),
    ],
    ids=["text file", "csv copy", "json without newline", "text without newline"],
)
async def test_out_at_a_file_that_is_not_a_journal_is_refused_and_left_byte_for_byte(
    tmp_path: Path, name: str, content: bytes
) -> None:
    write_jsonl(tmp_path / "in.jsonl", items(4))
    victim = tmp_path / name
    victim.write_bytes(content)
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url))
        result = await run_cli(*batch_args(tmp_path, out=victim))
    assert result.returncode == 2, result.stderr
    assert victim.read_bytes() == content
    assert fake.request_count == 0
    assert b"not a persona-async journal" in result.stderr
    assert str(victim).encode() in result.stderr
    assert b"Traceback" not in result.stderr


def _record(row: dict[str, Any], status: str, **kw: Any) -> bytes:
    # As the CLI writes them: compact, "id" first.
    body = {"id": None, **{k: row[k] for k in ("provider", "task_id", "audio_id")},
            "status": status, "persona_id": None, "error": None, "attempts": 1, "line": 1,
            **kw}  # fmt: skip
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


@pytest.mark.parametrize(
    ("tail", "said"),
    [
        (b'{"id":null,"provider":"kie","task_', [b"torn last line"]),
        (b"\0" * 4096, [b"4096 NUL byte(s)"]),
        (b'{"id":null,"prov' + b"\0" * 1000, [b"torn last line", b"1000 NUL byte(s)"]),
    ],
    ids=["torn line", "NUL tail", "torn line then NULs"],
)
async def test_what_a_crash_leaves_at_the_end_is_cut_off_said_and_the_run_goes_on(
    tmp_path: Path, tail: bytes, said: list[bytes]
) -> None:
    rows = items(3)
    write_jsonl(tmp_path / "in.jsonl", rows)
    journal = tmp_path / "results.jsonl"
    whole = _record(rows[0], "created", persona_id="persona_x")
    journal.write_bytes(whole + tail)
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url))
        result = await run_cli(*batch_args(tmp_path))
    assert result.returncode == 0, result.stderr
    for words in said:
        assert words in result.stderr
    assert journal.read_bytes().startswith(whole)
    records = read_journal(journal)  # every line whole again
    assert {identity(r) for r in records[1:] if r["status"] == "created"} == {
        identity(r) for r in rows[1:]
    }
    assert fake.request_count == 2


async def test_a_bad_line_at_the_end_that_a_crash_cannot_leave_is_refused(tmp_path: Path) -> None:
    rows = items(2)
    write_jsonl(tmp_path / "in.jsonl", rows)
    journal = tmp_path / "results.jsonl"
    content = _record(rows[0], "created", persona_id="p") + b"my own notes\n"
    journal.write_bytes(content)
    (tmp_path / "persona.toml").write_text(config_text("http://127.0.0.1:9"))
    result = await run_cli(*batch_args(tmp_path))
    assert result.returncode == 2
    assert b"line 2 is not a journal record" in result.stderr
    assert journal.read_bytes() == content


# -- durable before sending ------------------------------------------------------------------

_SYSCALL = re.compile(rb"^\d+\s+(?:<\.\.\. )?(\w+)")


async def test_each_request_leaves_only_after_a_sync_of_its_pending_record(tmp_path: Path) -> None:
    """strace sees the syscalls themselves: for every request, the journal write of its
    ``pending`` record, then a completed fdatasync/fsync of the journal, then the send."""
    rows = items(12, lanes=("crun",))
    write_jsonl(tmp_path / "in.jsonl", rows)
    journal = tmp_path / "results.jsonl"
    trace = tmp_path / "trace.txt"
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url, max_concurrency=4))
        strace = ["strace", "-f", "-qq", "-y", "-s", "4096", "-o", str(trace),
                  "-e", "trace=write,pwrite64,fsync,fdatasync,sendto,sendmsg,writev"]  # fmt: skip
        with anyio.fail_after(60):
            result = await anyio.run_process(
                [*strace, *command(*batch_args(tmp_path))], check=False, env=cli_env()
            )
    assert result.returncode == 0, result.stderr
    assert fake.request_count == len(rows)
    lines = trace.read_bytes().splitlines()
    name = str(journal).encode()
    synced_at: list[int] = []  # indexes of completed syncs of the journal
    written: dict[bytes, int] = {}  # audio id -> index of its pending record's write
    sent: dict[bytes, int] = {}  # audio id -> index of the send carrying it
    open_syncs: set[bytes] = set()  # pids with a sync of the journal under way
    for index, line in enumerate(lines):
        pid = line.split(b" ", 1)[0]
        call = _SYSCALL.match(line)
        if call is None:
            continue
        syscall = call.group(1)
        if syscall in (b"fsync", b"fdatasync"):
            if name in line and b"<unfinished" in line:
                open_syncs.add(pid)
            elif name in line or (b"resumed>" in line and pid in open_syncs):
                open_syncs.discard(pid)
                if b"= 0" in line:
                    synced_at.append(index)
            continue
        for row in rows:
            audio = row["audio_id"].encode()
            if b'\\"' + audio + b'\\"' not in line and b'"' + audio + b'"' not in line:
                continue
            if syscall in (b"write", b"pwrite64") and name in line and b"pending" in line:
                written.setdefault(audio, index)
            elif b"<socket:" in line or b"<TCP:" in line:
                sent.setdefault(audio, index)
    assert set(written) == set(sent) == {row["audio_id"].encode() for row in rows}, (
        sorted(written), sorted(sent))  # fmt: skip
    for audio, send in sent.items():
        assert any(written[audio] < sync < send for sync in synced_at), (
            f"{audio!r} was sent before a sync of its pending record"
        )


# -- write errors ----------------------------------------------------------------------------


async def test_a_full_disk_stops_the_run_cleanly_and_a_run_elsewhere_resumes_it(
    tmp_path: Path,
) -> None:
    rows = items(40, lanes=("kie",))
    write_jsonl(tmp_path / "in.jsonl", rows)
    full = tmp_path / "small-disk"
    full.mkdir()
    journal = full / "results.jsonl"
    async with fake_provider(latency=0.05) as fake:
        (tmp_path / "persona.toml").write_text(
            config_text(fake.url, lanes=("kie",), max_concurrency=2)
        )
        # The journal may grow to 3000 bytes: a dozen records, then writes fail (EFBIG).
        with anyio.fail_after(60):
            stopped = await anyio.run_process(
                command_with_file_size_limit(3000, *batch_args(tmp_path, out=journal)),
                check=False,
                env=cli_env(measured=False),
            )
        requested = {r.json["audioId"] for r in fake.requests if r.json}
        moved = tmp_path / "other-disk.jsonl"
        shutil.copyfile(journal, moved)
        resumed = await run_cli(*batch_args(tmp_path, out=moved))

    assert stopped.returncode == 2, stopped.stderr
    assert b"Traceback" not in stopped.stderr
    assert b"File too large" in stopped.stderr
    assert str(journal).encode() in stopped.stderr
    assert b"journal: " in stopped.stdout  # the summary was printed
    left = read_journal(journal)  # whole records only
    assert left
    assert journal.stat().st_size <= 3000
    # It stopped at once: every request that went out has its pending record on disk.
    pending = {r["audio_id"] for r in left if r["status"] == "pending"}
    assert requested <= pending
    assert len(requested) < len(rows)
    assert resumed.returncode == 0, resumed.stderr
    last = last_records(read_journal(moved))
    assert set(last) == {identity(r) for r in rows}
    assert {r["status"] for r in last.values()} <= {"created", "exists"}
    assert max(fake.creations.values()) == 1
    assert len(fake.creations) == len(rows)


async def test_a_journal_removed_during_the_run_stops_it_with_a_clear_error(
    tmp_path: Path,
) -> None:
    write_jsonl(tmp_path / "in.jsonl", items(30, lanes=("kie",)))
    journal = tmp_path / "results.jsonl"
    async with fake_provider(latency=0.2) as fake:
        (tmp_path / "persona.toml").write_text(
            config_text(fake.url, lanes=("kie",), max_concurrency=2)
        )
        async with await anyio.open_process(
            command(*batch_args(tmp_path)), env=cli_env()
        ) as process:
            with anyio.fail_after(10):
                while True:
                    if journal.exists() and b"pending" in journal.read_bytes():
                        break
                    await anyio.sleep(0.01)
            journal.unlink()
            removed_at = fake.request_count
            with anyio.fail_after(10):
                await process.wait()
            stderr = b"".join([chunk async for chunk in process.stderr or ()])
        assert process.returncode == 2, stderr
        assert b"Traceback" not in stderr
        assert b"removed" in stderr
        assert str(journal).encode() in stderr
        # Requests already admitted may still leave; nothing after the next tick does.
        assert fake.request_count <= removed_at + 4


# -- a restart keeps the window --------------------------------------------------------------


async def test_kill_9_and_an_immediate_restart_stay_within_the_providers_window(
    tmp_path: Path,
) -> None:
    rows = items(36, lanes=("kie",))
    write_jsonl(tmp_path / "in.jsonl", rows)
    journal = tmp_path / "results.jsonl"
    async with fake_provider(rate_limit=10, rate_period=2.0) as fake:
        (tmp_path / "persona.toml").write_text(
            config_text(fake.url, lanes=("kie",), rate_limit=10, rate_period=2.0)
        )
        for cycle in range(3):
            async with await anyio.open_process(
                command(*batch_args(tmp_path)),
                env=cli_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ) as process:
                # Kill right after this run's burst of a full window.
                with anyio.fail_after(20):
                    while True:
                        if fake.request_count >= 10 * (cycle + 1):
                            break
                        await anyio.sleep(0.005)
                process.kill()
                await process.wait()
        result = await run_cli(*batch_args(tmp_path))
        requests = fake.request_count
    assert result.returncode == 0, result.stderr
    assert requests >= len(rows)  # three full bursts and the rest: the window was exercised
    assert fake.window_violations == 0
    last = last_records(read_journal(journal))
    assert {r["status"] for r in last.values()} <= FINAL - {"failed", "invalid"}
    assert len(last) == len(rows)
    assert max(fake.creations.values()) == 1


# -- duplicates ------------------------------------------------------------------------------


async def test_a_duplicate_line_never_becomes_the_state_of_the_item_it_duplicates(
    tmp_path: Path,
) -> None:
    a, b, c = items(3, lanes=("kie",))
    a["id"], c["id"] = "customer-7", "customer-7"  # line 3 reuses line 1's id
    b_again = dict(b)  # line 4 repeats line 2 (no id: provider, task and audio)
    broken = {"id": "customer-7", "provider": "kie", "task_id": "t"}  # line 5: invalid, same id
    write_jsonl(tmp_path / "in.jsonl", [a, b, c, b_again, broken])
    journal = tmp_path / "results.jsonl"
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("kie",)))
        first = await run_cli(*batch_args(tmp_path))
        after_first = journal.read_bytes()
        again = await run_cli(*batch_args(tmp_path))
        checked = await run_cli("validate", str(tmp_path / "in.jsonl"), "--config",
                                str(tmp_path / "persona.toml"))  # fmt: skip
    assert first.returncode == 1  # invalid lines
    records = read_journal(journal)
    by_id = {r["id"]: r for r in records if r["id"] is not None}  # the last record per id
    assert by_id["customer-7"]["status"] == "created"
    assert by_id["customer-7"]["line"] == 1
    assert last_records(records)[identity(b)]["status"] == "created"
    invalid = {r["line"]: r for r in records if r["status"] == "invalid"}
    assert set(invalid) == {3, 4, 5}
    assert "duplicate of line 1" in invalid[3]["error"]["message"]
    assert "duplicate of line 2" in invalid[4]["error"]["message"]
    for record in invalid.values():  # named by its own line, never by the identity it shares
        assert (record["id"], record["task_id"], record["audio_id"]) == (None, None, None)
    assert fake.request_count == 2
    # The rerun and validate agree: nothing new is written, the same message is shown.
    assert again.returncode == 1
    assert journal.read_bytes() == after_first
    assert invalid[3]["error"]["message"].encode() in checked.stdout
    assert invalid[4]["error"]["message"].encode() in checked.stdout


# -- what a record's fields mean ---------------------------------------------------------------


async def test_a_refused_key_is_not_retryable_in_the_sdk_but_the_journal_says_the_next_run_retries(
    tmp_path: Path,
) -> None:
    rows = items(2, lanes=("crun",))
    write_jsonl(tmp_path / "in.jsonl", rows)
    journal = tmp_path / "results.jsonl"
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("crun",)))
        refused = await run_cli(
            *batch_args(tmp_path), env=cli_env(CLI_TEST_CRUN_KEY="sk-wrong-key")
        )
        first = last_records(read_journal(journal))
        fixed = await run_cli(*batch_args(tmp_path))

    assert refused.returncode == 1, refused.stderr
    for record in first.values():
        assert record["status"] == "failed"
        # One name, one meaning: the SDK's AuthenticationError.retryable is False (the same
        # request fails again); the journal's field says the next run sends the item again.
        assert record["error"]["type"] == "AuthenticationError"
        assert record["error"]["next_run_retries"] is True
        assert "retryable" not in record["error"]
    assert fixed.returncode == 0, fixed.stderr
    assert {r["status"] for r in last_records(read_journal(journal)).values()} == {"created"}
