"""The batch command's promises that need a real rate limit, a failing disk, a certificate the
client refuses or the system calls to see: real ``python -m persona_async`` subprocesses against a
``FakeProvider`` on loopback.

Also the input and config paths no other test walks: CSV errors, a one-lane config whose lines
name no provider, and ``retry_ambiguous = true`` on resume.

Neighbours: test_cli.py (the command as a user meets it), test_journal.py (what the journal
records), test_cli_resume.py, test_cli_sources.py, test_cli_tasks.py, test_cli_terminal.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest
from _cli_support import (
    KEYS,
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
    run_on_a_terminal,
    summary_rows,
    write_jsonl,
)
from _support import JITTER, most_in_any_window

from persona_async.testing import Fault

pytestmark = pytest.mark.anyio


def batch_args(tmp_path: Path, source: str = "in.jsonl", *extra: str) -> list[str]:
    return ["batch", str(tmp_path / source), "--config", str(tmp_path / "persona.toml"),
            "--out", str(tmp_path / "results.jsonl"), "--no-progress", *extra]


# -- a real rate limit ---------------------------------------------------------------------------


async def test_a_batch_with_a_real_rate_limit_waits_for_each_window_and_never_breaks_one(
    tmp_path: Path,
) -> None:
    limit, period = 3, 0.5
    rows = items(12)  # six per lane: a burst, then two more windows each
    write_jsonl(tmp_path / "in.jsonl", rows)
    async with fake_provider(rate_limit=limit, rate_period=period - JITTER) as fake:
        (tmp_path / "persona.toml").write_text(
            config_text(fake.url, rate_limit=limit, rate_period=period)
        )
        result = await run_cli(*batch_args(tmp_path))
    assert result.returncode == 0, result.stderr
    assert fake.window_violations == 0
    for key in KEYS.values():
        arrivals = sorted(r.arrived for r in fake.requests if r.api_key == key)
        assert len(arrivals) == 6
        assert most_in_any_window(arrivals, period - JITTER) <= limit
        assert arrivals[-1] - arrivals[0] >= period  # it waited for the next window
    last = last_records(read_journal(tmp_path / "results.jsonl"))
    assert {r["status"] for r in last.values()} == {"created"}


async def test_ctrl_c_while_waiting_for_the_rate_window_sends_nothing_more_and_exits_130(
    tmp_path: Path,
) -> None:
    rows = items(6, lanes=("crun",))
    write_jsonl(tmp_path / "in.jsonl", rows)
    journal = tmp_path / "results.jsonl"
    async with fake_provider() as fake:
        # One start per 2 s: the second item waits in the rate limiter for the window.
        (tmp_path / "persona.toml").write_text(
            config_text(fake.url, rate_limit=1, rate_period=2.0, max_concurrency=1,
                        lanes=("crun",))
        )
        async with await anyio.open_process(
            command(*batch_args(tmp_path)), env=cli_env()
        ) as process:
            with anyio.fail_after(10):
                while True:
                    if '"created"' in (journal.read_text() if journal.exists() else ""):
                        break
                    await anyio.sleep(0.01)
            await anyio.sleep(0.3)  # the next item is deep in its wait for the window
            signalled = time.monotonic()
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(10):
                await process.wait()
            took = time.monotonic() - signalled
            stderr = b"".join([chunk async for chunk in process.stderr or ()])
        sent_before_resume = fake.request_count
        interrupted = last_records(read_journal(journal))
        (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("crun",)))
        resumed = await run_cli(*batch_args(tmp_path))  # at full speed: the rest, once
    assert process.returncode == 130, stderr
    assert b"stopping" in stderr
    assert sent_before_resume == 1, "a request admitted after Ctrl-C was sent"
    assert took < 5.0  # not the 30 s grace period: nothing was in flight
    assert [r["status"] for r in interrupted.values()] == ["created"]
    assert resumed.returncode == 0, resumed.stderr
    assert len(fake.creations) == len(rows)
    assert max(fake.creations.values()) == 1


# -- the journal: on disk before the send, fsynced at the end --------------------------------------


async def test_a_pending_record_that_cannot_be_written_stops_its_send(tmp_path: Path) -> None:
    rows = items(4, lanes=("crun",))
    write_jsonl(tmp_path / "in.jsonl", rows)
    journal = tmp_path / "results.jsonl"
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("crun",)))
        # The file may not grow past 40 bytes: the first pending record cannot be written
        # whole (the write fails with EFBIG, as on a full disk).
        with anyio.fail_after(60):
            full = await anyio.run_process(
                command_with_file_size_limit(40, *batch_args(tmp_path)),
                check=False,
                env=cli_env(measured=False),
            )
        sent_while_full = fake.request_count
        resumed = await run_cli(*batch_args(tmp_path))
    assert sent_while_full == 0, "a request went out without its pending record on disk"
    assert full.returncode != 0
    assert b"File too large" in full.stderr or b"EFBIG" in full.stderr, full.stderr
    # The next run with room repairs the torn line and sends everything once.
    assert resumed.returncode == 0, resumed.stderr
    assert {identity(r) for r in rows} == set(last_records(read_journal(journal)))
    assert max(fake.creations.values()) == 1
    assert len(fake.creations) == len(rows)


async def test_a_finished_run_fsyncs_its_journal_after_the_last_record(tmp_path: Path) -> None:
    strace = shutil.which("strace")
    if strace is None:
        pytest.fail("strace is not installed (Debian: apt-get install strace)")
    write_jsonl(tmp_path / "in.jsonl", items(3))
    trace = tmp_path / "trace.txt"
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url))
        with anyio.fail_after(60):
            result = await anyio.run_process(
                [strace, "-f", "-qq", "-o", str(trace), "-e",
                 "trace=openat,write,fsync,fdatasync,close", *command(*batch_args(tmp_path))],
                check=False,
                env=cli_env(),
            )
    assert result.returncode == 0, result.stderr
    assert len(read_journal(tmp_path / "results.jsonl")) == 6
    calls = _journal_calls(trace.read_text(), str(tmp_path / "results.jsonl"))
    assert "write" in calls, calls
    last_write = len(calls) - 1 - calls[::-1].index("write")
    assert calls[-1] == "close", calls
    # A finished run's last records survive a power cut: fsync after the last write.
    assert {"fsync", "fdatasync"} & set(calls[last_write:]), calls


def _journal_calls(trace: str, path: str) -> list[str]:
    """The write/fsync/close calls on the journal's read-write descriptor, in order."""
    fd = None
    calls: list[str] = []
    for line in trace.splitlines():
        opened = re.search(r'openat\([^,]+, "([^"]+)", ([A-Z_|]+).*\) = (\d+)', line)
        if fd is None:
            if opened and opened.group(1) == path and "O_RDWR" in opened.group(2):
                fd = opened.group(3)
            continue
        call = re.search(r"\b(write|fsync|fdatasync|close)\((\d+)\b", line)
        if call and call.group(2) == fd:
            calls.append(call.group(1))
            if call.group(1) == "close":
                break
    return calls


# -- input and config paths -----------------------------------------------------------------------


async def test_csv_lines_with_bad_utf8_a_wrong_field_count_or_a_bad_number_are_each_named(
    tmp_path: Path,
) -> None:
    header = b"provider,task_id,audio_id,name,description,vocal_start\n"
    lines = [
        b"crun,t1,a1,Neon Siren,Smoky,\n",
        b"crun,t2,a2,N\xff\xfeon,Smoky,\n",  # line 3: not UTF-8
        b"crun,t3,a3,Neon Siren\n",  # line 4: 4 fields
        b"crun,t4,a4,Neon Siren,Smoky,soon\n",  # line 5: not a number
        b"crun,t5,a5,Neon Siren,Smoky,2.5\n",
    ]
    (tmp_path / "in.csv").write_bytes(header + b"".join(lines))
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("crun",)))
        result = await run_cli(
            "validate", str(tmp_path / "in.csv"), "--config", str(tmp_path / "persona.toml")
        )
    assert fake.request_count == 0
    assert result.returncode == 1, result.stderr
    report = result.stdout.decode().splitlines()
    named = [line for line in report if line.startswith(str(tmp_path / "in.csv"))]
    assert [line.split(":")[1] for line in named] == ["3", "4", "5"], report
    assert "UTF-8" in named[0]
    assert "4 fields, the header has 6" in named[1]
    assert "vocal_start" in named[2]
    assert "2 valid item(s), 3 invalid line(s)" in report


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", b"empty CSV file"),
        (b"provider,task_id,audio_id,name,description,mood\n", b"unknown column 'mood'"),
        (b"provider,task_id,name,description\n", b"no 'audio_id' column"),
        (b"provider,task_id,audio_id,name,name,description\n", b"appears twice"),
    ],
    ids=["empty", "unknown-column", "missing-column", "duplicate-column"],
)
async def test_a_csv_header_error_exits_2_naming_the_file_and_column(
    tmp_path: Path, content: bytes, message: bytes
) -> None:
    (tmp_path / "in.csv").write_bytes(content)
    (tmp_path / "persona.toml").write_text(config_text("http://127.0.0.1:9", lanes=("crun",)))
    result = await run_cli(*batch_args(tmp_path, "in.csv"))
    assert result.returncode == 2
    assert message in result.stderr
    assert b"in.csv" in result.stderr
    assert not (tmp_path / "results.jsonl").exists() or not (
        tmp_path / "results.jsonl"
    ).read_bytes()


async def test_with_one_lane_lines_without_a_provider_go_to_that_lane(tmp_path: Path) -> None:
    rows = [{k: v for k, v in row.items() if k != "provider"} for row in items(3)]
    write_jsonl(tmp_path / "in.jsonl", rows)
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("kie",)))
        result = await run_cli(*batch_args(tmp_path))
    assert result.returncode == 0, result.stderr
    last = last_records(read_journal(tmp_path / "results.jsonl"))
    assert {key[0] for key in last} == {"kie"}
    assert {r["status"] for r in last.values()} == {"created"}
    assert sorted(audio for _, audio in fake.creations) == ["clip-0", "clip-1", "clip-2"]
    assert {kind for kind, _ in fake.creations} == {"family"}


async def test_retry_ambiguous_true_resends_a_crun_item_left_pending_by_a_dead_run(
    tmp_path: Path,
) -> None:
    rows = items(2, lanes=("crun",))
    write_jsonl(tmp_path / "in.jsonl", rows)
    journal = tmp_path / "results.jsonl"
    dead = {"id": None, **{k: rows[0][k] for k in ("provider", "task_id", "audio_id")},
            "status": "pending", "persona_id": None, "error": None, "attempts": 0, "line": 1}
    journal.write_text(json.dumps(dead) + "\n")
    async with fake_provider() as fake:
        text = config_text(fake.url, lanes=("crun",))
        (tmp_path / "persona.toml").write_text(
            text.replace("max_concurrency", "retry_ambiguous = true\nmax_concurrency", 1)
        )
        result = await run_cli(*batch_args(tmp_path))
    assert result.returncode == 0, result.stdout
    last = last_records(read_journal(journal))
    assert last[identity(rows[0])]["status"] == "created"  # resent, as the user opted in
    assert fake.creations[("crun", rows[0]["audio_id"])] == 1
    assert len(fake.creations) == 2



# -- a connection refused before anything is sent -----------------------------------------------

# A self-signed certificate for 127.0.0.1 that no trust store holds (a test fixture, never a
# secret): the client refuses it during the TLS handshake, before the request is written.
_UNTRUSTED = Path(__file__).parent / "data"


async def test_a_certificate_the_client_refuses_sends_nothing_and_the_next_run_sends_the_items(
    tmp_path: Path,
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(_UNTRUSTED / "untrusted-cert.pem", _UNTRUSTED / "untrusted-key.pem")
    received: list[bytes] = []

    async def serve(stream: anyio.abc.ByteStream) -> None:
        with anyio.move_on_after(5):
            async for chunk in stream:  # the handshake never completes: nothing arrives
                received.append(chunk)

    rows = items(4, lanes=("crun",))
    write_jsonl(tmp_path / "in.jsonl", rows)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    tls = anyio.streams.tls.TLSListener(listener, context, standard_compatible=False)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with tls, anyio.create_task_group() as tg:
        tg.start_soon(tls.serve, serve)
        (tmp_path / "persona.toml").write_text(
            config_text(f"https://127.0.0.1:{port}", lanes=("crun",))
        )
        refused = await run_cli(*batch_args(tmp_path))
        tg.cancel_scope.cancel()
    after_refusal = last_records(read_journal(tmp_path / "results.jsonl"))
    async with fake_provider() as fake:  # the config fixed: the provider's real address
        (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("crun",)))
        fixed = await run_cli(*batch_args(tmp_path))

    assert refused.returncode == 1, refused.stderr
    assert received == []
    for record in after_refusal.values():
        assert record["status"] == "failed"
        assert record["error"]["type"] == "ProviderConnectionError"
        # Never sent, so safe to send again: crun has no duplicate detection, and yet the
        # next run sends these.
        assert record["error"]["next_run_retries"] is True, record
    assert fixed.returncode == 0, fixed.stderr
    last = last_records(read_journal(tmp_path / "results.jsonl"))
    assert {r["status"] for r in last.values()} == {"created"}
    assert sorted(fake.creations) == sorted(("crun", row["audio_id"]) for row in rows)


# -- what a stopped run says it left -------------------------------------------------------------


def _holds_open(fds: Path, target: Path) -> bool:
    """Does the process whose ``/proc/PID/fd`` is ``fds`` hold ``target`` open?"""
    for fd in fds.iterdir():
        try:
            if Path(os.readlink(fd)) == target:
                return True
        except OSError:  # closed meanwhile
            continue
    return False


async def _interrupt_while_waiting(
    args: list[str], journal: Path, stdin: bytes | None = None
) -> bytes:
    """Run the CLI, let it settle into waiting for its window, press Ctrl-C: its stdout."""
    async with await anyio.open_process(
        command(*args), env=cli_env(), stdin=subprocess.PIPE if stdin else None
    ) as process:
        if stdin is not None:
            assert process.stdin is not None
            await process.stdin.send(stdin)  # left open: the rest of the input never comes
        # However slow the machine is to start it: once it holds its journal open, it has
        # its signal handlers and is running.
        fds = Path(f"/proc/{process.pid}/fd")
        with anyio.fail_after(20):
            while not _holds_open(fds, journal):  # noqa: ASYNC110 (no event to wait on)
                await anyio.sleep(0.02)
        await anyio.sleep(1.0)  # reading ahead, sending the first, then waiting 30 s
        process.send_signal(signal.SIGINT)
        with anyio.fail_after(10):
            await process.wait()
        stdout = b"".join([chunk async for chunk in process.stdout or ()])
    assert process.returncode == 130, stdout
    return stdout


async def test_a_resumed_run_stopped_early_counts_only_the_items_it_left_unsent(
    tmp_path: Path,
) -> None:
    # 40 items to send, then an invalid line (41) and four items (42-45) an earlier run
    # settled. Stopped while waiting for its window, the run has read a few lines ahead; the
    # note counts what it left unsent, not what the earlier run settled or reported invalid.
    rows = items(45, lanes=("crun",))
    lines = [json.dumps(row) for row in rows]
    lines[40] = '{"provider": "crun", "task_id": "t-41"}'  # no audio_id: invalid
    earlier = ["" if n < 40 else line for n, line in enumerate(lines)]  # blank: not items
    (tmp_path / "in.jsonl").write_text("\n".join(earlier) + "\n")
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("crun",)))
        first = await run_cli(*batch_args(tmp_path))
        assert first.returncode == 1, first.stderr  # the invalid line
        assert len(fake.creations) == 4
        (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
        (tmp_path / "persona.toml").write_text(
            config_text(fake.url, lanes=("crun",), rate_limit=1, rate_period=30.0)
        )
        sent_before = fake.request_count
        stdout = await _interrupt_while_waiting(batch_args(tmp_path), tmp_path / "results.jsonl")
        sent = fake.request_count - sent_before
    assert sent <= 1
    assert b"%d item(s) were not sent because the run stopped." % (40 - sent) in stdout, stdout


async def test_a_run_reading_stdin_stopped_early_says_the_rest_was_not_read(
    tmp_path: Path,
) -> None:
    stdin = "".join(json.dumps(row) + "\n" for row in items(10, lanes=("crun",))).encode()
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(
            config_text(fake.url, lanes=("crun",), rate_limit=1, rate_period=30.0)
        )
        args = ["batch", "-", *batch_args(tmp_path)[2:]]  # stdin
        stdout = await _interrupt_while_waiting(args, tmp_path / "results.jsonl", stdin=stdin)
    assert re.search(
        rb"\n(\d+) item\(s\) read were not sent and the rest of the input was not read, because "
        rb"the run stopped\.\n",
        stdout,
    ), stdout
    assert fake.request_count == 1


async def test_items_piped_in_are_sent_as_they_come_while_the_producer_pauses(
    tmp_path: Path,
) -> None:
    # A pipeline writes three items, pauses with the pipe open, then writes two more: the first
    # three are created during the pause (a read that waits must not stop the run).
    rows = items(5)
    journal = tmp_path / "results.jsonl"
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url))
        args = ["batch", "-", *batch_args(tmp_path)[2:]]
        async with await anyio.open_process(
            command(*args), env=cli_env(), stdin=subprocess.PIPE
        ) as process:
            assert process.stdin is not None
            await process.stdin.send("".join(json.dumps(r) + "\n" for r in rows[:3]).encode())
            with anyio.fail_after(10):
                while (  # noqa: ASYNC110 - a subprocess and a file: nothing to wait on
                    not journal.exists()
                    or sum(r["status"] == "created" for r in read_journal(journal)) < 3
                ):
                    await anyio.sleep(0.02)
            created_in_the_pause = read_journal(journal)
            await process.stdin.send("".join(json.dumps(r) + "\n" for r in rows[3:]).encode())
            await process.stdin.aclose()
            with anyio.fail_after(10):
                await process.wait()
    assert process.returncode == 0
    assert sum(r["status"] == "created" for r in created_in_the_pause) == 3
    last = last_records(read_journal(journal))
    assert {r["status"] for r in last.values()} == {"created"}
    assert len(last) == len(fake.creations) == 5


async def test_a_named_pipe_as_the_input_is_read_once_as_it_comes(tmp_path: Path) -> None:
    # On a terminal the live line counts the input's lines up front, by reading the file again:
    # not a named pipe's (a second reader would wait for a writer that never comes).
    rows = items(4)
    fifo = tmp_path / "in.jsonl"
    os.mkfifo(fifo)
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url))
        args = [arg for arg in batch_args(tmp_path) if arg != "--no-progress"]

        def produce() -> None:  # opening a FIFO waits for its reader
            with open(fifo, "w") as pipe:
                pipe.write("".join(json.dumps(row) + "\n" for row in rows))

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.to_thread.run_sync, produce)
                code, output = await anyio.to_thread.run_sync(lambda: run_on_a_terminal(args))
    assert code == 0, output
    last = last_records(read_journal(tmp_path / "results.jsonl"))
    assert {r["status"] for r in last.values()} == {"created"}
    assert len(fake.creations) == 4


async def test_the_summary_counts_every_invalid_line_of_a_lane(tmp_path: Path) -> None:
    rows = items(3, lanes=("kie",))
    lines = [json.dumps(row) for row in rows]
    lines += ['{"provider": "kie"}', '{"provider": "kie", "task_id": "t-9", "audio_id": 9}']
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("kie",)))
        result = await run_cli(*batch_args(tmp_path))
    assert result.returncode == 1, result.stderr  # the invalid lines
    summary = summary_rows(result.stdout)
    assert summary["kie"][2] == "3"  # created
    assert summary["kie"][5] == "2"  # invalid
    assert 0 <= float(summary["kie"][7].removesuffix("s")) < 30  # elapsed: this run's seconds
    assert f"journal: {tmp_path / 'results.jsonl'}\n" in result.stdout.decode()


async def test_an_unknown_outcome_says_how_to_resend_and_is_counted_and_other_failures_are_not(
    tmp_path: Path,
) -> None:
    rows = items(3, lanes=("crun",))
    write_jsonl(tmp_path / "in.jsonl", rows)
    async with fake_provider() as fake:
        fake.inject(Fault.reset_after(), times=2, path="crun")  # created, then the reply lost
        fake.inject(Fault.envelope(451), path="crun")  # refused: certainly not made
        (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("crun",)))
        result = await run_cli(*batch_args(tmp_path))
    assert result.returncode == 1, result.stderr
    last = last_records(read_journal(tmp_path / "results.jsonl"))
    by_type = {r["error"]["type"]: r["error"] for r in last.values()}
    assert Counter(r["error"]["type"] for r in last.values()) == {
        "OutcomeUnknownError": 2,
        "MusicAccessError": 1,
    }
    unknown, refused = by_type["OutcomeUnknownError"], by_type["MusicAccessError"]
    assert unknown["message"].startswith("the request was sent and then lost (")
    assert unknown["message"].endswith(
        "; to send it again, run the same command with --resend-unknown"
    )
    assert unknown["next_run_retries"] is False
    assert "--resend-unknown" not in refused["message"]
    assert re.search(rb"(^|\n)2 item\(s\) have an unknown outcome", result.stdout), result.stdout
    summary = summary_rows(result.stdout)
    assert summary["crun"][4] == "3"  # failed, of every kind
    (by_kind,) = re.findall(rb"failed on crun: (.*)\n", result.stdout)
    assert sorted(by_kind.split(b", ")) == [b"MusicAccessError 1", b"OutcomeUnknownError 2"]


async def test_a_failure_after_sending_says_a_persona_may_exist_and_whether_a_rerun_settles_it(
    tmp_path: Path,
) -> None:
    rows = items(2, lanes=("kie",))
    write_jsonl(tmp_path / "in.jsonl", rows)
    async with fake_provider() as fake:
        # One reply is a gateway's HTML page with status 200 (final); the other request is cut
        # after it was sent (kie detects duplicates: a rerun settles it), with no retries left.
        fake.inject(Fault.html(200), path="family")
        fake.inject(Fault.reset_after(), path="family")
        (tmp_path / "persona.toml").write_text(
            config_text(fake.url, lanes=("kie",), client={"max_retries": 0})
        )
        result = await run_cli(*batch_args(tmp_path))
    assert result.returncode == 1, result.stderr
    errors = {r["error"]["type"]: r["error"] for r in last_records(
        read_journal(tmp_path / "results.jsonl")).values()}  # fmt: skip
    page, cut = errors["MalformedResponseError"], errors["ProviderConnectionError"]
    maybe = "; it may have reached the provider, so a persona may exist"
    assert page["message"].endswith(maybe), page
    assert page["next_run_retries"] is False
    assert cut["message"].endswith(maybe + " (running the same command again settles it)"), cut
    assert cut["next_run_retries"] is True
