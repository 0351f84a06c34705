"""The journal and the batch run that writes it: what is recorded before and after each send,
what a damaged or foreign file is met with, what a rerun sends again and what it counts as
settled. The journal in process against real files; the batch by running
``python -m persona_async`` against a ``FakeProvider`` on loopback. Each test fails with the bug
it pins (``tests/mutation/cli_mutants.py`` repeats the check).

Neighbours: test_cli_journal.py (the journal's shape as a user reads it), test_cli_resume.py
(resuming after a crash), test_cli_batch.py (the batch command against a real rate limit, a
failing disk, a refused certificate).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import resource
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest
from _cli_support import (
    KEYS,
    batch_args,
    cli_env,
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

from persona_async import KieProvider, PersonaClient, PersonaRequest
from persona_async._cli._items import Invalid, Item, identity_key
from persona_async._cli._journal import Journal, JournalWriteError
from persona_async._cli._journal_records import (
    ErrorInfo,
    JournalError,
    State,
    read_resume,
    sent_again,
)


def _item(n: int, *, provider: str = "crun", id: str | None = None) -> Item:
    request = PersonaRequest(
        f"task-{n}", f"clip-{n}", f"Persona {n}", "Smoky late-night R&B", provider=provider
    )
    return Item(n, id, request, identity_key(id, provider, request.task_id, request.audio_id))


def _journal(path: Path, **kw: float) -> Journal:
    return Journal.open(str(path), **kw)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


@contextmanager
def _system_calls(trace: Path) -> Iterator[list[str]]:
    """The opens, syncs and truncations this process makes inside the block, as strace shows
    them (``fdatasync(5) = 0``), attached to every thread (and those started later)."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.fail("strace is not installed (Debian: apt-get install strace)")
    trace.unlink(missing_ok=True)  # a trace of an earlier block is no sign of this one
    threads = os.listdir(f"/proc/{os.getpid()}/task")
    tracer = subprocess.Popen(
        [strace, "-f", "-qq", "-o", str(trace), "-e", "trace=openat,fsync,fdatasync,ftruncate",
         *(f"-p{tid}" for tid in threads)]
    )  # fmt: skip
    # Attached is not yet tracing: wait until strace shows a call made for the purpose.
    probe = str(trace) + ".probe"
    deadline = time.monotonic() + 10
    while not (trace.exists() and probe in trace.read_text()):
        assert time.monotonic() < deadline, "strace did not start tracing"
        with contextlib.suppress(FileNotFoundError):
            os.open(probe, os.O_RDONLY)
        time.sleep(0.005)
    calls: list[str] = []
    try:
        yield calls
    finally:
        tracer.terminate()  # strace detaches
        tracer.wait(timeout=10)
        calls += [line.split(None, 1)[1] for line in trace.read_text().splitlines()]


def _on(calls: list[str], path: Path) -> list[str]:
    """The names of the sync and truncate calls made on ``path``'s descriptors, in order."""
    fds: set[str] = set()
    names = []
    for call in calls:
        opened = re.match(r'openat\([^,]+, "([^"]+)", .*\) = (\d+)$', call)
        if opened:
            if opened.group(1) == str(path):
                fds.add(opened.group(2))
            continue
        used = re.match(r"(\w+)\((\d+)\b", call)
        if used and used.group(2) in fds:
            names.append(used.group(1))
    return names


@contextmanager
def _file_size_limit(limit: int) -> Iterator[None]:
    """Writes past ``limit`` bytes fail with EFBIG, as on a full disk (Python ignores
    SIGXFSZ, so the write returns the error)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


# -- never another file, and only what a crash leaves is repaired ---------------------------------


def test_a_one_line_file_of_someone_elses_json_is_refused_and_left_as_it_is(
    tmp_path: Path,
) -> None:
    path = tmp_path / "notes.json"
    for content in (b'{"status": "created"}', b'{"id": 1, "status": "done"}\n', b"{}"):
        path.write_bytes(content)
        with pytest.raises(JournalError, match="not a persona-async journal"):
            _journal(path)
        assert path.read_bytes() == content


def test_only_a_torn_record_and_nul_bytes_are_cut_off_the_end_and_each_is_said(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.jsonl"
    journal = _journal(path)
    journal.outcome(_item(1), "created", persona_id="p-1", attempts=1)
    journal.close()
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"id":null,"provider":"crun","taX' + b"\0" * 7)
    journal = _journal(path)
    journal.close()
    assert path.read_bytes() == whole
    assert journal.repairs == (
        "cut 33 byte(s) of a torn last line (a record cut short by a crash or a full disk)",
        "cut 7 NUL byte(s) at the end (space a crash left before the data reached the disk)",
    )
    assert journal.resume.peek(_item(1).key) is State.DONE
    assert journal.path == str(path)  # what its messages name


# -- resuming: what the earlier runs left ---------------------------------------------------------


def test_resume_counts_the_settled_items_this_run_has_not_read_for_the_not_sent_note(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.jsonl"
    journal = _journal(path)
    journal.outcome(_item(1), "created", persona_id="p-1", attempts=1)
    journal.outcome(_item(2), "exists", attempts=1)
    journal.outcome(_item(3), "failed", error=ErrorInfo("InvalidRequestError", 422, "no"))
    journal.pending(_item(4))  # in flight when the run died: not settled
    journal.close()
    resume = read_resume(str(path))
    assert resume.settled_unread() == 3
    assert resume.take(_item(1).key, 7) is State.DONE
    assert resume.settled_unread() == 2  # item 1 is read now
    assert resume.take(_item(4).key, 9) is State.PENDING
    assert resume.settled_unread() == 2


def test_a_duplicate_line_is_told_the_line_that_first_had_its_identity(tmp_path: Path) -> None:
    resume = read_resume(str(tmp_path / "results.jsonl"))  # no file: nothing earlier
    key = _item(1).key
    assert resume.first_line(key) == 0  # not read yet
    assert resume.take(key, 12) is State.NEW
    assert resume.take(key, 15) is None  # a duplicate
    assert resume.first_line(key) == 12


_RECORD = b'{"id":null,"provider":"crun","task_id":"t","audio_id":"a","status":"created"}'


@pytest.mark.parametrize(
    ("tail", "repaired"),
    [
        (_RECORD[:20], True),  # a record cut short
        (_RECORD, True),  # a whole record cut just before its newline
        (b"{", True),  # cut after its first byte
        (b'{"status":"crea', True),  # a JSON object cut short
        (_RECORD[:20] + b"\0" * 9, True),  # cut short, then space the crash left
        (b"\0" * 9, True),
        (b'{"a": 1}', False),  # whole JSON, not a record: someone else's data
        (b'{"id":null,\0"provider', False),  # a NUL inside: not what a crash leaves
        (b"done", False),  # not JSON at all
    ],
    ids=[
        "torn",
        "no newline",
        "one byte",
        "object",
        "torn then NULs",
        "NULs",
        "JSON",
        "NUL inside",
        "text",
    ],
)
def test_after_whole_records_only_what_a_crash_leaves_is_cut_and_anything_else_refused(
    tmp_path: Path, tail: bytes, repaired: bool
) -> None:
    path = tmp_path / "results.jsonl"
    whole = _RECORD + b"\n"
    path.write_bytes(whole + tail)
    if repaired:
        journal = _journal(path)
        journal.close()
        assert path.read_bytes() == whole
        assert journal.resume.records == 1
    else:
        with pytest.raises(JournalError) as refused:
            _journal(path)
        assert str(refused.value) == (
            f"{path}: line 2 is not a journal record; the file was damaged or edited and was "
            "left as it is. Move it aside to start over, or fix that line"
        )
        assert path.read_bytes() == whole + tail


@pytest.mark.parametrize(
    ("content", "repaired"),
    [(_RECORD[:5], True), (b'{"i', True), (b'{"status":"created"', False), (b"\0{", False)],
    ids=["torn record", "its first bytes", "not our first bytes", "NUL first"],
)
def test_a_first_line_is_taken_for_a_torn_record_only_if_it_starts_like_one(
    tmp_path: Path, content: bytes, repaired: bool
) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(content)
    if repaired:
        _journal(path).close()
        assert path.read_bytes() == b""
    else:
        with pytest.raises(JournalError) as refused:
            _journal(path)
        assert str(refused.value) == (
            f"{path} is not a persona-async journal (its first line is not a journal record), "
            "so it was left as it is. --out names the journal this command writes and resumes: "
            "a new file, or the --out of an earlier run"
        )
        assert path.read_bytes() == content


@pytest.mark.parametrize(
    "damaged",
    [b'{"id":null,"provider":"crun","ta', b'{"status":"deleted"}', b"\0\0\0", b"# note"],
    ids=["torn", "unknown status", "NULs", "text"],
)
def test_a_line_in_the_middle_that_is_not_a_record_is_refused_not_cut(
    tmp_path: Path, damaged: bytes
) -> None:
    path = tmp_path / "results.jsonl"
    content = _RECORD + b"\n" + damaged + b"\n" + _RECORD + b"\n"
    path.write_bytes(content)
    with pytest.raises(JournalError, match=re.escape(f"{path}: line 2 is not a journal record")):
        _journal(path)
    assert path.read_bytes() == content


def test_a_journal_that_cannot_be_opened_or_read_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "results.jsonl"
    with pytest.raises(JournalError) as refused:
        _journal(missing)
    assert str(refused.value) == (
        f"{missing}: cannot create the journal: the directory {missing.parent} does not exist"
    )
    assert read_resume(str(missing)).states == {}  # nothing earlier
    with pytest.raises(JournalError) as refused:
        read_resume(str(tmp_path))  # a directory
    assert str(refused.value) == f"{tmp_path}: cannot read the journal: Is a directory"


def test_a_second_run_on_the_same_journal_is_refused_while_the_first_holds_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.jsonl"
    first = _journal(path)
    with pytest.raises(JournalError, match="another persona-async run is using this journal"):
        _journal(path)
    first.close()
    _journal(path).close()  # free again


# -- the records: what a reader of the journal and the next run rely on ---------------------------


def test_a_pending_record_names_the_item_its_line_and_when_it_was_released(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.jsonl"
    journal = _journal(path)
    before = time.time()
    journal.pending(_item(3, id="row-3"))
    journal.close()
    [record] = _records(path)
    sent_at = record.pop("sent_at")
    assert before - 0.001 <= sent_at <= time.time() + 0.001  # stamped to the millisecond
    assert record == {
        "id": "row-3", "provider": "crun", "task_id": "task-3", "audio_id": "clip-3",
        "status": "pending", "persona_id": None, "error": None, "attempts": 0, "line": 3,
    }  # fmt: skip
    # A restart counts it against crun's window, if it is recent enough.
    time.sleep(0.002)  # the stamp may be rounded up past now
    for horizon, recent in (({"horizon": 60.0}, {"crun": [sent_at]}), ({}, {})):
        restarted = _journal(path, **horizon)
        restarted.close()
        assert restarted.resume.recent_sends == recent


def test_outcome_submitted_and_invalid_records_carry_what_the_reader_and_the_next_run_need(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.jsonl"
    journal = _journal(path)
    journal.outcome(_item(1, id="row-1"), "created", persona_id="p-1", attempts=2)
    journal.submitted(_item(2, provider="kie"), "kie-task-2")
    error = ErrorInfo("RateLimitError", 429, "slow down", True)
    journal.outcome(_item(3), "failed", error=error, attempts=1, provider_task_id="t-3")
    journal.invalid(Invalid(4, "name", "name: too long", provider="crun", task_id="task-4",
                            audio_id="clip-4"))  # fmt: skip
    journal.invalid(Invalid(5, None, "not a JSON object"))
    journal.invalid(Invalid(6, "name", "name: empty", id="row-6"))
    journal.close()
    common = {"id": None, "persona_id": None, "error": None, "attempts": 0}
    assert _records(path) == [
        {**common, "id": "row-1", "provider": "crun", "task_id": "task-1", "audio_id": "clip-1",
         "status": "created", "persona_id": "p-1", "attempts": 2, "line": 1},
        {**common, "provider": "kie", "task_id": "task-2", "audio_id": "clip-2",
         "status": "submitted", "attempts": 1, "line": 2, "provider_task_id": "kie-task-2"},
        {**common, "provider": "crun", "task_id": "task-3", "audio_id": "clip-3",
         "status": "failed", "attempts": 1, "line": 3, "provider_task_id": "t-3",
         "error": {"type": "RateLimitError", "code": 429, "message": "slow down",
                   "next_run_retries": True, "field": None}},
        {**common, "provider": "crun", "task_id": "task-4", "audio_id": "clip-4",
         "status": "invalid", "line": 4,
         "error": {"type": "InvalidRequestError", "code": None, "message": "name: too long",
                   "next_run_retries": False, "field": "name"}},
        {**common, "provider": None, "task_id": None, "audio_id": None, "status": "invalid",
         "line": 5, "error": {"type": "InvalidRequestError", "code": None,
                              "message": "not a JSON object", "next_run_retries": False,
                              "field": None}},
        {**common, "id": "row-6", "provider": None, "task_id": None, "audio_id": None,
         "status": "invalid", "line": 6, "error": {"type": "InvalidRequestError", "code": None,
                                                   "message": "name: empty",
                                                   "next_run_retries": False, "field": "name"}},
    ]  # fmt: skip
    resume = read_resume(str(path))
    assert resume.records == 6
    assert resume.peek(_item(1, id="row-1").key) is State.DONE  # known by its id
    assert resume.task_ids == {_item(2, provider="kie").key: "kie-task-2", _item(3).key: "t-3"}
    assert resume.invalid_lines == {4: _item(4).key, 5: None, 6: identity_key("row-6", *[None] * 3)}


# What each kind of last record means for the next run: its state, and whether crun (no
# duplicate detection) and kie (a second create is a 409) send the item again, without and
# with --resend-unknown.
_RESUME_RULES = [
    # last record, state, crun sends, kie sends, crun with --resend-unknown
    ({"status": "pending"}, State.PENDING, False, True, True),
    ({"status": "submitted", "provider_task_id": "t"}, State.SUBMITTED, True, True, True),
    ({"status": "created", "persona_id": "p"}, State.DONE, False, False, False),
    ({"status": "exists"}, State.DONE, False, False, False),
    ({"status": "failed", "error": {"type": "RateLimitError", "retryable": True},
      "attempts": 0}, State.RETRY, True, True, True),
    ({"status": "failed", "error": {"type": "ServerError", "retryable": True},
      "attempts": 2}, State.RETRY_SENT, True, True, True),
    ({"status": "failed", "error": {"type": "OutcomeUnknownError", "retryable": False},
      "attempts": 1}, State.UNKNOWN, False, False, True),
    ({"status": "failed", "error": {"type": "InvalidRequestError", "retryable": False},
      "attempts": 1}, State.FAILED, False, False, False),
    # The same rules under the field's name since issue 21 (the rows above are older journals).
    ({"status": "failed", "error": {"type": "RateLimitError", "next_run_retries": True},
      "attempts": 0}, State.RETRY, True, True, True),
    ({"status": "failed", "error": {"type": "ServerError", "next_run_retries": True},
      "attempts": 2}, State.RETRY_SENT, True, True, True),
    ({"status": "failed", "error": {"type": "OutcomeUnknownError", "next_run_retries": False},
      "attempts": 1}, State.UNKNOWN, False, False, True),
    ({"status": "failed", "error": None, "attempts": 1}, State.FAILED, False, False, False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("last", "state", "crun", "kie", "resend"),
    _RESUME_RULES,
    ids=[
        f"{rule[0]['status']} {rule[1].name}"
        + (" (old journal)" if "retryable" in (rule[0].get("error") or {}) else "")
        for rule in _RESUME_RULES
    ],
)
def test_the_last_record_of_an_item_decides_whether_the_next_run_sends_it(
    tmp_path: Path, last: dict, state: State, crun: bool, kie: bool, resend: bool
) -> None:
    path = tmp_path / "results.jsonl"
    first = {"id": None, "provider": "crun", "task_id": "task-1", "audio_id": "clip-1",
             "status": "pending", "line": 1}  # fmt: skip
    path.write_text(json.dumps(first) + "\n" + json.dumps({**first, **last}) + "\n")
    assert read_resume(str(path)).peek(_item(1).key) is state
    assert sent_again(state, resends_pending=False) is crun
    assert sent_again(state, resends_pending=True) is kie
    assert sent_again(state, resends_pending=False, resend_unknown=True) is resend


# -- a write that fails stops the run, not the file -----------------------------------------------


def test_a_refused_write_is_cut_back_and_from_then_on_no_pending_record_is_accepted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.jsonl"
    journal = _journal(path)
    journal.outcome(_item(1), "created", persona_id="p-1", attempts=1)
    journal.outcome(_item(6), "created", persona_id="p-6", attempts=1)
    whole = path.stat().st_size
    with _file_size_limit(whole + 40):  # less than a record: half of it is written
        with pytest.raises(JournalWriteError):
            journal.pending(_item(2))
        assert path.stat().st_size == whole  # the half record is cut back off
        journal.outcome(_item(3), "created", persona_id="p-3", attempts=1)  # tried: lost
    with pytest.raises(JournalWriteError):
        journal.pending(_item(4))  # room again, but the run is stopping: not sent
    journal.outcome(_item(5), "created", persona_id="p-5", attempts=1)  # on the wire: kept
    journal.close()
    assert isinstance(journal.failed, OSError)
    assert journal.failed.errno == errno.EFBIG
    assert journal.lost == 2  # the pending record of item 2 and the outcome of item 3
    assert [r["audio_id"] for r in _records(path)] == ["clip-1", "clip-6", "clip-5"]


def test_a_closed_journal_writes_nothing_more_anywhere_and_closes_again_quietly(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.jsonl"
    journal = _journal(path)
    journal.outcome(_item(1), "created", persona_id="p-1", attempts=1)
    journal.close()
    whole = path.read_bytes()
    journal.outcome(_item(2), "created", persona_id="p-2", attempts=1)
    journal.outcome(_item(3), "created", persona_id="p-3", attempts=1)
    with pytest.raises(JournalWriteError):
        journal.pending(_item(4))
    journal.tick()
    journal.close()
    assert journal.lost == 3
    assert journal.failed is None  # nothing failed: the run was over
    assert path.read_bytes() == whole


def test_outcomes_are_synced_once_their_interval_has_passed_and_on_close_if_any_are_new(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.jsonl"
    with _system_calls(tmp_path / "trace") as calls:
        journal = _journal(path, sync_interval=0.0)
        journal.outcome(_item(1), "created", persona_id="p-1", attempts=1)
        journal.tick()  # due: synced
        journal.tick()  # nothing new: no sync
        journal.outcome(_item(3), "created", persona_id="p-3", attempts=1)
        journal.tick()  # due: synced
        journal.close()  # nothing new: no sync
        journal = _journal(path, sync_interval=3600.0)
        journal.outcome(_item(2), "created", persona_id="p-2", attempts=1)
        journal.tick()  # not due yet
        journal.close()  # new records: synced before the file is closed
    assert _on(calls, path) == ["fdatasync", "fdatasync", "fsync"]


@pytest.mark.anyio
async def test_a_group_commit_syncs_once_for_all_waiting_records_and_leaves_close_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.jsonl"
    with _system_calls(tmp_path / "trace") as calls:
        journal = _journal(path)
        async with anyio.create_task_group() as tg:
            tg.start_soon(journal.run_syncs)
            journal.pending(_item(1))
            journal.pending(_item(2))
            with anyio.fail_after(5):
                await journal.durable()  # one sync for both
            journal.tick()  # nothing new: nothing to do
            tg.cancel_scope.cancel()
        journal.close()  # nothing new since that sync
        journal = _journal(path)
        async with anyio.create_task_group() as tg:
            tg.start_soon(journal.run_syncs)
            journal.pending(_item(3))
            with anyio.fail_after(5):
                await journal.durable()
            journal.outcome(_item(3), "created", persona_id="p-3", attempts=1)
            journal.tick()  # not due yet (a second)
            tg.cancel_scope.cancel()
        journal.close()  # the outcome is new: synced on close
    assert _on(calls, path) == ["fdatasync", "fdatasync", "fsync"]


def test_a_new_journal_s_directory_entry_and_a_repaired_end_are_made_durable(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.jsonl"
    with _system_calls(tmp_path / "trace") as calls:
        _journal(path).close()
    assert _on(calls, tmp_path) == ["fsync"]  # the new file's directory entry
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 & ~umask  # like any data file
    assert _on(calls, path) == []
    path.write_bytes(b'{"id":null,"provider":"crun","ta')
    with _system_calls(tmp_path / "trace") as calls:
        _journal(path).close()
    assert _on(calls, tmp_path) == []  # an existing file: its entry is on disk already
    assert _on(calls, path) == ["ftruncate", "fsync"]
    assert path.read_bytes() == b""


@pytest.mark.anyio
async def test_a_pending_record_is_durable_only_once_a_sync_ran_and_never_after_a_failure(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.jsonl"
    journal = _journal(path)
    journal.pending(_item(1))
    durable = journal.durable()
    await anyio.sleep(0.01)
    assert not durable.done()  # no sync has run: the request must wait
    async with anyio.create_task_group() as tg:
        tg.start_soon(journal.run_syncs)
        with anyio.fail_after(5):
            await durable
        journal.pending(_item(2))
        second = journal.durable()
        assert second is not durable  # the next record waits for the next sync
        with anyio.fail_after(5):
            await second
        # A write fails: records written before it are not durable any more either.
        journal.pending(_item(3))
        third = journal.durable()
        with _file_size_limit(path.stat().st_size + 40), pytest.raises(JournalWriteError):
            journal.pending(_item(4))
        with anyio.fail_after(5), pytest.raises(JournalWriteError):
            await third
        tg.cancel_scope.cancel()
    journal.close()


def test_a_journal_removed_during_the_run_is_noticed_once_and_stops_pending_records(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.jsonl"
    journal = _journal(path)
    failures: list[OSError] = []
    journal.on_failure = failures.append
    journal.tick()
    assert failures == []
    path.unlink()
    journal.tick()
    journal.tick()
    assert [f.errno for f in failures] == [errno.ENOENT]
    assert failures[0].strerror == "the file was removed during the run"  # the user reads it
    with pytest.raises(JournalWriteError):
        journal.pending(_item(1))
    journal.close()


# -- the batch run --------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_a_pending_record_the_disk_refuses_ends_the_run_with_exit_2_and_no_traceback(
    tmp_path: Path,
) -> None:
    write_jsonl(tmp_path / "in.jsonl", items(3, lanes=("crun",)))
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("crun",)))
        with anyio.fail_after(60):
            full = await anyio.run_process(
                command_with_file_size_limit(40, *batch_args(tmp_path)),
                check=False,
                env=cli_env(measured=False),
            )
    journal = tmp_path / "results.jsonl"
    assert fake.request_count == 0
    assert full.returncode == 2, full.stderr
    assert full.stderr.decode() == (
        f"persona-async: error: the journal {journal} could not be written (File too large): "
        "stopping. Nothing more is sent; no request is in flight. \n"
        f"persona-async: error: the journal {journal} could not be written: File too large "
        "(1 record(s) lost); it is whole up to there. Fix that (free space, another disk: move "
        "the journal there and point --out at it), then run the same command to continue.\n"
    )
    assert b"\n3 item(s) were not sent because the run stopped.\n" in full.stdout


@pytest.mark.anyio
async def test_a_409_is_put_down_to_an_earlier_run_only_for_an_item_that_run_may_have_sent(
    tmp_path: Path,
) -> None:
    rows = items(4, lanes=("kie",))
    write_jsonl(tmp_path / "in.jsonl", rows)
    pending, new, unsent, sent = rows

    def earlier(row: dict, status: str, **kw: object) -> str:
        return json.dumps({"id": None, "provider": "kie", "task_id": row["task_id"],
                           "audio_id": row["audio_id"], "status": status, **kw}) + "\n"  # fmt: skip

    retryable = {"type": "ServerError", "code": 500, "message": "x", "retryable": True}
    (tmp_path / "results.jsonl").write_text(
        earlier(pending, "pending")
        + earlier(unsent, "failed", error=retryable, attempts=0)  # never reached kie
        + earlier(sent, "failed", error=retryable, attempts=2)  # reached kie, answer lost
    )
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("kie",)))
        async with PersonaClient([KieProvider(api_key=KEYS["kie"], base_url=fake.url)]) as sdk:
            for row in rows:  # every persona exists already: each create is a 409
                await sdk.create_persona(
                    PersonaRequest(row["task_id"], row["audio_id"], "n", "d", provider="kie")
                )
        result = await run_cli(*batch_args(tmp_path))
    last = last_records(read_journal(tmp_path / "results.jsonl"))
    assert result.returncode == 0, result.stderr
    assert {record["status"] for record in last.values()} == {"exists"}
    blamed = {key for key, record in last.items() if "earlier run" in record["error"]["message"]}
    assert blamed == {identity(pending), identity(sent)}
    said = last[identity(new)]["error"]["message"]  # kie's own words
    assert last[identity(pending)]["error"]["message"] == (
        said + "; an earlier run sent this item and did not see it succeed, so that attempt "
        "may have created this persona"
    )
    for record in last.values():  # settled: one attempt, nothing to send again
        assert (record["attempts"], record["error"]["next_run_retries"]) == (1, False)
    # The summary counts them: 0 created, 4 exists, 0 failed, 0 invalid.
    assert re.search(rb"^kie +kie +0 +4 +0 +0 ", result.stdout, re.M), result.stdout


@pytest.mark.anyio
async def test_a_rerun_sends_nothing_settled_and_counts_each_kind_it_skipped(
    tmp_path: Path,
) -> None:
    rows = items(7, lanes=("crun",))
    broken = {"provider": "crun", "task_id": "t"}  # no audio_id
    write_jsonl(tmp_path / "in.jsonl", [*rows, broken, broken])  # lines 8 and 9
    created, exists, failed, failed_too, unknown, unknown_too, new = rows

    def earlier(row: dict, status: str, error: dict | None = None) -> dict:
        who = {k: row[k] for k in ("provider", "task_id", "audio_id")}
        return {"id": None, **who, "status": status, "error": error, "attempts": 1}

    def error(kind: str) -> dict:
        return {"type": kind, "code": None, "message": "x", "retryable": False}

    def invalid(line: int) -> dict:
        nobody = {"id": None, "provider": "crun", "task_id": None, "audio_id": None}
        return {**nobody, "status": "invalid", "error": error("InvalidRequestError"), "line": line}

    journal = tmp_path / "results.jsonl"
    journal.write_text("".join(json.dumps(record) + "\n" for record in [
        earlier(created, "created"),
        earlier(exists, "exists"),
        earlier(failed, "failed", error("MusicAccessError")),
        earlier(failed_too, "failed", error("InvalidRequestError")),
        earlier(unknown, "failed", error("OutcomeUnknownError")),
        earlier(unknown_too, "failed", error("OutcomeUnknownError")),
        invalid(8),
        invalid(9),
    ]))  # fmt: skip
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("crun",)))
        result = await run_cli(*batch_args(tmp_path))
    assert result.returncode == 1  # settled, but not all of it well
    assert [r.json["suno_id"] for r in fake.requests if r.json] == [new["audio_id"]]
    assert (
        b"\nskipped, settled by an earlier run: 2 created or exists, 2 failed, "
        b"2 outcome unknown, 2 invalid\n" in result.stdout
    ), result.stdout
    # The earlier run's unknown outcomes are still unknown: the note counts them.
    assert (
        b"\n2 item(s) have an unknown outcome (OutcomeUnknownError): a persona may or may not "
        b"exist. Check the provider's dashboard for their audio ids (in the journal); to send "
        b"them again, run the same command with --resend-unknown.\n"
    ) in result.stdout, result.stdout


@pytest.mark.anyio
async def test_a_crun_item_left_in_flight_is_not_sent_again_and_its_record_says_what_to_do(
    tmp_path: Path,
) -> None:
    rows = items(2, lanes=("crun",))
    write_jsonl(tmp_path / "in.jsonl", rows)
    journal = tmp_path / "results.jsonl"
    journal.write_text(
        "".join(json.dumps({"id": None, **_who(row), "status": "pending"}) + "\n" for row in rows)
    )
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("crun",)))
        result = await run_cli(*batch_args(tmp_path))
    assert fake.request_count == 0  # crun detects no duplicates: a resend could make two
    assert result.returncode == 1
    records = read_journal(journal)[len(rows) :]
    assert [(record["status"], record["attempts"]) for record in records] == [("failed", 0)] * 2
    assert records[0]["error"] == {
        "type": "OutcomeUnknownError", "code": None, "next_run_retries": False, "field": None,
        "message": "an earlier run sent this request and stopped before its outcome was "
        "recorded; a persona may or may not exist. crun documents no duplicate detection, so "
        "it was not sent again: check the provider's dashboard for a persona of audio_id "
        f"'{rows[0]['audio_id']}' (task_id '{rows[0]['task_id']}'); if there is none, run the "
        "same command with --resend-unknown",
    }  # fmt: skip
    assert b"\nfailed on crun: OutcomeUnknownError 2\n" in result.stdout, result.stdout
    assert b"\n2 item(s) have an unknown outcome (OutcomeUnknownError)" in result.stdout


def _who(row: dict) -> dict:
    return {k: row[k] for k in ("provider", "task_id", "audio_id")}
