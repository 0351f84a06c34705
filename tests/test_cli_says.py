"""What the CLI says is true, and a script reading its output, exit code or journal gets what it
needs: unknown outcomes counted as such, ids where they can be had, empty or odd inputs named.
Real subprocesses against a real ``FakeProvider`` on loopback."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import tty
from pathlib import Path

import anyio
import pytest
from _cli_support import (
    batch_args,
    cli_env,
    command,
    config_text,
    fake_provider,
    identity,
    items,
    last_records,
    read_journal,
    run_cli,
    write_jsonl,
)

from persona_async import CrunProvider
from persona_async.testing import Fault

pytestmark = pytest.mark.anyio

# A provider echoing a 1 MB description: far over what the client reads of a reply.
HUGE_REPLY = b'{"code": 200, "msg": "ok", "data": {"description": "' + b"x" * 1_000_000 + b'"}}'


async def test_a_reply_too_large_to_read_is_an_unknown_outcome_that_resend_unknown_resends(
    tmp_path: Path,
) -> None:
    rows = items(2)  # one crun item, one kie item
    write_jsonl(tmp_path / "in.jsonl", rows)
    journal = tmp_path / "results.jsonl"
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url))
        fake.inject(Fault.body(HUGE_REPLY), path="crun")
        fake.inject(Fault.body(HUGE_REPLY), path="family")
        first = await run_cli(*batch_args(tmp_path))
        after_first = last_records(read_journal(journal))
        fake.requests.clear()
        again = await run_cli(*batch_args(tmp_path))
        sent_again = len(fake.requests)
        resent = await run_cli(*batch_args(tmp_path, "--resend-unknown"))

    crun, kie = (after_first[identity(row)] for row in rows)
    # crun detects no duplicates: the provider took the request, its outcome is unknown.
    assert crun["status"] == "failed"
    assert crun["error"]["type"] == "OutcomeUnknownError"
    assert crun["error"]["next_run_retries"] is False
    assert "--resend-unknown" in crun["error"]["message"]
    assert b"1 item(s) have an unknown outcome (OutcomeUnknownError)" in first.stdout, first.stdout
    assert first.returncode == 1
    # The family answers a resend with 409 when the first made it: the lane resent at once.
    assert kie["status"] == "created", kie
    # Not sent again without --resend-unknown; counted as unknown, not as failed for good.
    assert sent_again == 0
    assert b"skipped, settled by an earlier run: 1 created or exists, 1 outcome unknown" in (
        again.stdout
    ), again.stdout
    assert resent.returncode == 0, resent.stdout
    assert last_records(read_journal(journal))[identity(rows[0])]["status"] == "created"


async def test_exists_takes_the_persona_id_the_journal_recorded_for_that_audio_id(
    tmp_path: Path,
) -> None:
    # The same clip listed twice under different ids: the family makes one persona per audio id,
    # so the second line's 409 means the persona the first line created.
    row = items(1, lanes=("kie",))[0]
    rows = [{**row, "id": "first"}, {**row, "id": "second", "name": "Another name"}]
    write_jsonl(tmp_path / "in.jsonl", rows)
    journal = tmp_path / "results.jsonl"
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("kie",)))
        result = await run_cli(*batch_args(tmp_path))
        [persona_id] = fake.personas

    assert result.returncode == 0, result.stderr
    last = {r["id"]: r for r in read_journal(journal)}  # the last record of each id
    # Whichever line reached the fake first made the persona (both were in flight at once).
    created, exists = sorted(last.values(), key=lambda r: r["status"])
    assert (created["status"], exists["status"]) == ("created", "exists")
    assert created["persona_id"] == persona_id
    assert exists["persona_id"] == persona_id
    assert f"created record of input line {created['line']}" in exists["error"]["message"]
    assert b"id unknown" not in result.stdout, result.stdout


async def test_exists_with_no_id_anywhere_is_counted_apart_and_said_where_to_look(
    tmp_path: Path,
) -> None:
    rows = items(3, lanes=("kie",))
    write_jsonl(tmp_path / "in.jsonl", rows)
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("kie",)))
        # Another journal made these personas: this one knows nothing of them.
        made = await run_cli(*batch_args(tmp_path, out=tmp_path / "elsewhere.jsonl"))
        result = await run_cli(*batch_args(tmp_path))

    assert made.returncode == 0, made.stderr
    assert result.returncode == 0, result.stderr  # exists is a success, with or without id
    records = last_records(read_journal(tmp_path / "results.jsonl"))
    assert [r["status"] for r in records.values()] == ["exists"] * 3
    assert all(r["persona_id"] is None for r in records.values())
    lines = result.stdout.decode().splitlines()
    said = [line for line in lines if line.startswith("exists, id unknown: ")]
    assert len(said) == 1, result.stdout
    assert said[0].startswith("exists, id unknown: 3 ("), said
    assert "by audio_id" in said[0]


async def test_an_input_failing_mid_read_is_one_line_exit_2_after_the_summary_of_what_was_read(
    tmp_path: Path,
) -> None:
    # The input is a terminal (a pty's controller side) that hangs up after three lines: the
    # next read fails with EIO, as a disk error would.
    rows = items(3, lanes=("crun",))
    journal = tmp_path / "results.jsonl"
    controller, terminal = pty.openpty()
    tty.setraw(terminal)  # the lines arrive as written
    args = batch_args(tmp_path)
    args[1] = "-"
    try:
        async with fake_provider() as fake:
            (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("crun",)))
            async with await anyio.open_process(
                command(*args), stdin=controller, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=cli_env(),
            ) as process:  # fmt: skip
                os.close(controller)
                controller = -1
                os.write(terminal, b"".join(json.dumps(row).encode() + b"\n" for row in rows))
                with anyio.fail_after(20):
                    while (  # noqa: ASYNC110 - a subprocess and a file: nothing to wait on
                        not journal.exists()
                        or sum(r["status"] == "created" for r in read_journal(journal)) < 3
                    ):
                        await anyio.sleep(0.05)
                os.close(terminal)  # the hang-up
                terminal = -1
                assert process.stdout is not None
                assert process.stderr is not None
                with anyio.fail_after(20):
                    out = b"".join([chunk async for chunk in process.stdout])
                    err = b"".join([chunk async for chunk in process.stderr])
                    code = await process.wait()
    finally:
        for fd in (controller, terminal):
            if fd >= 0:
                os.close(fd)

    assert code == 2, err
    assert b"Traceback" not in err, err.decode()
    [said] = err.decode().splitlines()
    assert said.startswith(
        "persona-async: error: -: reading the input failed after line 3: Input/output error. "
    ), said
    assert re.search(rb"^crun +crun +3 +0 +0 +0 ", out, re.M), out
    assert {r["status"] for r in last_records(read_journal(journal)).values()} == {"created"}


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
async def test_an_input_failing_at_its_first_read_is_one_line_and_exit_2(
    tmp_path: Path, fmt: str
) -> None:
    # /proc/self/mem opens as a regular file and fails every read at offset 0 with EIO.
    link = tmp_path / f"in.{fmt}"
    link.symlink_to("/proc/self/mem")
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("crun",)))
        args = batch_args(tmp_path)
        args[1] = str(link)
        result = await run_cli(*args)
    assert result.returncode == 2, result.stderr
    [said] = result.stderr.decode().splitlines()
    assert said.startswith(
        f"persona-async: error: {link}: reading the input failed at its first line: "
        "Input/output error"
    ), said
    assert fake.request_count == 0


@pytest.mark.parametrize(
    ("name", "content", "what"),
    [
        ("in.jsonl", "", "it is empty or has only blank lines"),
        ("in.jsonl", "\n  \n\n", "it is empty or has only blank lines"),
        ("in.csv", "task_id,audio_id,name,description\n", "it has a header and no rows"),
    ],
    ids=["empty", "blank lines", "CSV header alone"],
)
async def test_an_input_with_no_items_says_so(
    tmp_path: Path, name: str, content: str, what: str
) -> None:
    source = tmp_path / name
    source.write_text(content)
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("crun",)))
        args = batch_args(tmp_path)
        args[1] = str(source)
        result = await run_cli(*args)
        checked = await run_cli("validate", str(source), "--config", str(tmp_path / "persona.toml"))
    assert result.returncode == 0, result.stderr
    assert f"\nno items in {source}: {what}; nothing was sent.\n".encode() in result.stdout, (
        result.stdout
    )
    assert f"no items in {source}\n".encode() in checked.stdout, checked.stdout


async def test_batch_names_the_first_invalid_lines_and_where_the_rest_are(tmp_path: Path) -> None:
    good = items(1, lanes=("crun",))[0]
    bad = [{**good, "audio_id": f"clip-{n}", "name": ""} for n in range(5)]
    write_jsonl(tmp_path / "in.jsonl", [good, *bad])
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("crun",)))
        result = await run_cli(*batch_args(tmp_path))
    assert result.returncode == 1
    text = result.stdout.decode()
    source = tmp_path / "in.jsonl"
    assert "\ninvalid line(s): 5, first:\n" in text, text
    for line in (2, 3, 4):
        assert f"\n  {source}:{line}: name: " in text, text
    assert f"{source}:5:" not in text  # a few, not all: the journal and validate have them
    assert "'invalid' record in the journal; `persona-async validate`" in text


# -- CSV from spreadsheets --------------------------------------------------------------------


async def test_a_csv_header_with_several_wrong_names_names_every_one_and_sends_nothing(
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("taskid,audio_id,Name,description,notes,Comment\nt,a,n,d,x,y\n")
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("crun",)))
        args = batch_args(tmp_path)
        args[1] = str(source)
        result = await run_cli(*args)
        requests = fake.request_count
    assert result.returncode == 2
    assert requests == 0
    [said] = result.stderr.decode().splitlines()
    assert (
        "unknown columns 'taskid' (did you mean 'task_id'?), 'Name' (did you mean 'name'?), "
        "'notes', 'Comment'" in said
    ), said
    assert "no 'task_id', 'name' columns" in said, said
    # Skipping is offered for the extra columns only, never for a misspelt one.
    assert said.endswith("pass --skip-columns notes,Comment"), said


async def test_skip_columns_reads_past_the_extra_columns_and_still_refuses_others(
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.csv"
    source.write_text(
        "task_id,audio_id,name,description,notes,Comment\n"
        "task-1,clip-1,Neon,Smoky late-night R&B,call back,ok\n"
    )
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("crun",)))
        args = batch_args(tmp_path, "--skip-columns", "notes,Comment")
        args[1] = str(source)
        result = await run_cli(*args)
        refused = await run_cli(*[*args[:-2], "--skip-columns", "notes"])
        sent = [r.json for r in fake.requests if r.json]
    assert result.returncode == 0, result.stderr
    assert len(sent) == 1
    assert "call back" not in json.dumps(sent[0])  # an extra column never reaches a provider
    assert refused.returncode == 2
    assert b"unknown column 'Comment'" in refused.stderr, refused.stderr


@pytest.mark.parametrize("name", ["in.csv", "in.jsonl"])
async def test_a_utf_16_file_is_refused_naming_the_encoding_needed(
    tmp_path: Path, name: str
) -> None:
    source = tmp_path / name
    row = items(1, lanes=("crun",))[0]
    text = (
        "task_id,audio_id,name,description\nt,a,Zoë,d\n" if name.endswith(".csv")
        else json.dumps(row) + "\n"
    )  # fmt: skip
    source.write_text(text, encoding="utf-16")
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("crun",)))
        args = batch_args(tmp_path)
        args[1] = str(source)
        result = await run_cli(*args)
    assert result.returncode == 2
    assert fake.request_count == 0
    [said] = result.stderr.decode().splitlines()
    assert said.startswith(f"persona-async: error: {source}: the file is UTF-16; UTF-8 is needed")


async def test_validate_counts_the_polling_of_async_task_lanes_in_its_estimate(
    tmp_path: Path,
) -> None:
    # 30 Evolink items: the creates fit one window, but each task's first status query waits
    # Evolink's estimate (15 s) and 30 queries at the default 5 per second take 5 s more.
    rows = items(30, lanes=("evolink",))
    for row in rows:
        row.update(vocal_start=0.0, vocal_end=20.0)
    write_jsonl(tmp_path / "in.jsonl", rows)
    (tmp_path / "persona.toml").write_text(
        '[providers.evolink]\nkind = "evolink"\napi_key_env = "CLI_TEST_EVOLINK_KEY"\n'
        "rate_limit = 1000\nrate_period = 1.0\n"
    )
    result = await run_cli(
        "validate", str(tmp_path / "in.jsonl"), "--config", str(tmp_path / "persona.toml")
    )
    assert result.returncode == 0, result.stderr
    assert re.search(rb"^evolink +evolink +30 +- +20s ", result.stdout, re.M), result.stdout
    assert b"\nat least 20s in all " in result.stdout, result.stdout


# -- small ones -------------------------------------------------------------------------------


async def test_out_in_a_missing_directory_says_it_is_the_directory(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", items(1, lanes=("crun",)))
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("crun",)))
        result = await run_cli(*batch_args(tmp_path, out=tmp_path / "nodir" / "r.jsonl"))
    assert result.returncode == 2
    assert fake.request_count == 0
    assert result.stderr.decode().splitlines() == [
        f"persona-async: error: {tmp_path}/nodir/r.jsonl: cannot create the journal: the "
        f"directory {tmp_path}/nodir does not exist"
    ]


async def test_out_dev_null_is_refused_before_sending_not_blamed_on_disk_space(
    tmp_path: Path,
) -> None:
    write_jsonl(tmp_path / "in.jsonl", items(1, lanes=("crun",)))
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("crun",)))
        result = await run_cli(*batch_args(tmp_path, out=Path("/dev/null")))
    assert result.returncode == 2
    assert fake.request_count == 0
    assert b"free space" not in result.stderr
    assert result.stderr.decode().splitlines() == [
        "persona-async: error: /dev/null is not a regular file: the journal must be a file that "
        "keeps what is written (the next run resumes from it); name a file with --out"
    ]


async def test_a_lane_with_an_empty_name_is_refused(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", items(1, lanes=("crun",)))
    (tmp_path / "persona.toml").write_text(
        config_text("http://127.0.0.1:9", lanes=("crun",)).replace(
            "[providers.crun]", '[providers.""]'
        )
    )
    result = await run_cli(*batch_args(tmp_path))
    assert result.returncode == 2
    assert result.stderr.decode().splitlines() == [
        f'persona-async: error: {tmp_path}/persona.toml: [providers.""]: a lane needs a name'
    ]
    with pytest.raises(ValueError, match="name must be a non-empty lane name"):
        CrunProvider(api_key="k", name="")


async def test_a_run_shorter_than_a_second_shows_no_rate(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", items(8))
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url))
        result = await run_cli(*batch_args(tmp_path))
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.decode().splitlines()[1:4]}
    assert float(rows["total"][-2].removesuffix("s")) < 1.0, result.stdout
    assert [rows[lane][-1] for lane in ("crun", "kie", "total")] == ["-", "-", "-"], result.stdout
