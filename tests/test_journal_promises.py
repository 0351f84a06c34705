"""The journal's and the batch run's promises, one test each, found by mutation testing
(``tests/mutation/cli_mutants.py``): each test fails when the bug a surviving mutant made is
there. The journal's own promises are tested in process against real files; the batch's by
running ``python -m persona_async`` against a ``FakeProvider`` on loopback."""

from __future__ import annotations

import errno
import json
import resource
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from persona_async import PersonaRequest
from persona_async._cli._input import Item, identity_key
from persona_async._cli._journal import (
    ErrorInfo,
    Journal,
    JournalError,
    JournalWriteError,
    State,
    read_resume,
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
    path.write_bytes(whole + b'{"id":null,"provider":"crun","ta' + b"\0" * 7)
    journal = _journal(path)
    journal.close()
    assert path.read_bytes() == whole
    assert journal.repairs == (
        "cut 32 byte(s) of a torn last line (a record cut short by a crash or a full disk)",
        "cut 7 NUL byte(s) at the end (space a crash left before the data reached the disk)",
    )
    assert journal.resume.peek(_item(1).key) is State.DONE


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


def test_a_second_run_on_the_same_journal_is_refused_while_the_first_holds_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.jsonl"
    first = _journal(path)
    with pytest.raises(JournalError, match="another persona-async run is using this journal"):
        _journal(path)
    first.close()
    _journal(path).close()  # free again


# -- a write that fails stops the run, not the file ------------------------------------------------


def test_a_refused_write_is_cut_back_and_from_then_on_no_pending_record_is_accepted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "results.jsonl"
    journal = _journal(path)
    journal.outcome(_item(1), "created", persona_id="p-1", attempts=1)
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
    assert [r["audio_id"] for r in _records(path)] == ["clip-1", "clip-5"]


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
    with pytest.raises(JournalWriteError):
        journal.pending(_item(1))
    journal.close()
