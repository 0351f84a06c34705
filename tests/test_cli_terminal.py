"""What a user at a terminal sees: Ctrl-C that stops at once when nothing is on the wire, a
live line that says the run is stopping, and ``-v`` log lines that never land on the live line.
Real subprocesses, on a pseudo-terminal where the live line matters."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from _cli_support import (
    KEYS,
    cli_env,
    command,
    config_text,
    items,
    read_journal,
    run_on_a_terminal,
    write_jsonl,
)

from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio

# A log record as the CLI formats it: "2026-01-31 12:00:00,123 WARNING lane ..."
_LOG_LINE = re.compile(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?:INFO|WARNING|ERROR) ")


def fake_provider(**kw: Any) -> FakeProvider:
    return FakeProvider(api_keys=tuple(KEYS.values()), **kw)


def write_input_with_blank_lines(path: Path, rows: list[dict[str, Any]]) -> None:
    write_jsonl(path, rows)
    path.write_text("\n" + path.read_text() + "\n\n")  # blank lines are not items


async def test_ctrl_c_with_nothing_in_flight_exits_at_once_and_counts_every_unsent_item(
    tmp_path: Path,
) -> None:
    rows = items(20, lanes=("crun",))
    write_input_with_blank_lines(tmp_path / "in.jsonl", rows)
    journal = tmp_path / "results.jsonl"
    async with fake_provider() as fake:
        # 3 per 30 s: after the first three the run only waits for the window.
        config = config_text(
            fake.url, lanes=("crun",), rate_limit=3, rate_period=30.0, max_concurrency=1
        )
        (tmp_path / "persona.toml").write_text(config)
        args = ["batch", str(tmp_path / "in.jsonl"), "--config", str(tmp_path / "persona.toml"),
                "--out", str(journal), "--no-progress"]  # fmt: skip
        async with await anyio.open_process(command(*args), env=cli_env()) as process:
            with anyio.fail_after(10):
                while True:
                    if journal.exists() and journal.read_text().count('"created"') == 3:
                        break
                    await anyio.sleep(0.01)
            await anyio.sleep(0.2)  # idle, waiting for the window
            signalled = time.monotonic()
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(10):
                await process.wait()
            took = time.monotonic() - signalled
            stdout = b"".join([chunk async for chunk in process.stdout or ()])
            stderr = b"".join([chunk async for chunk in process.stderr or ()])
    assert process.returncode == 130, stderr
    # At once: not after the 30 s window (5 s leaves a busy machine room to exit).
    assert took < 5.0, f"Ctrl-C with nothing in flight took {took:.2f}s"
    assert b"no request is in flight" in stderr, stdout
    assert stderr.count(b"Nothing more is sent") == 1, stderr  # said once
    assert b"\ninterrupted: run the same command again to continue.\n" in stdout, stdout
    # Read ahead or never read, all counted.
    assert b"17 item(s) were not sent" in stdout, stdout.decode()
    assert fake.request_count == 3
    assert all(r["status"] != "pending" or r["audio_id"] in {x["audio_id"] for x in rows[:3]}
               for r in read_journal(journal))  # fmt: skip


async def test_the_live_line_says_the_run_is_stopping_while_requests_finish(
    tmp_path: Path,
) -> None:
    write_jsonl(tmp_path / "in.jsonl", items(10, lanes=("kie",)))
    async with fake_provider(latency=1.5) as fake:
        (tmp_path / "persona.toml").write_text(
            config_text(fake.url, lanes=("kie",), max_concurrency=2)
        )
        args = ["batch", str(tmp_path / "in.jsonl"), "--config", str(tmp_path / "persona.toml"),
                "--out", str(tmp_path / "results.jsonl")]  # fmt: skip
        code, output = await anyio.to_thread.run_sync(
            lambda: run_on_a_terminal(args, interrupt_at=b"kie: running")
        )
    assert code == 130, output
    frames = [frame for frame in output.split(b"\r") if b"/10 (" in frame]
    assert any(b"kie: running" in frame for frame in frames)
    assert any(b"stopping: waiting for 2 request(s) in flight" in frame for frame in frames)
    # The line said once on Ctrl-C: what is still on the wire, and how to stop waiting for it.
    assert re.search(
        rb"SIGINT: stopping\. Nothing more is sent; waiting up to [\d.]+s for 2 request\(s\) "
        rb"in flight\. Press Ctrl-C again to abort now\.",
        output,
    ), output
    assert fake.request_count == 2


async def test_verbose_log_lines_and_the_live_line_share_the_terminal_cleanly(
    tmp_path: Path,
) -> None:
    write_input_with_blank_lines(tmp_path / "in.jsonl", items(40))
    async with fake_provider(latency=0.05) as fake:
        # Each lane pauses for maintenance, then runs again: four log lines.
        fake.inject(Fault.envelope(455), times=1, path="crun")
        fake.inject(Fault.envelope(455), times=1, path="family")
        (tmp_path / "persona.toml").write_text(config_text(fake.url, max_concurrency=2))
        args = ["batch", str(tmp_path / "in.jsonl"), "--config", str(tmp_path / "persona.toml"),
                "--out", str(tmp_path / "results.jsonl"), "-v"]  # fmt: skip
        code, output = await anyio.to_thread.run_sync(lambda: run_on_a_terminal(args))
    assert code == 0, output
    frames = [frame for frame in output.split(b"\r") if b"/40 (" in frame]
    assert frames, output  # the total leaves the blank lines out
    assert all(re.match(rb"\[[#.]{20}\]  \d+/40 ", frame) for frame in frames)  # a bar
    logs = list(_LOG_LINE.finditer(output))
    assert len(logs) >= 4, output  # paused, running, on each lane
    for log in logs:
        before = output[: log.start()]
        # At the start of a line: after a newline, or right after the live line was cleared.
        assert before.endswith((b"\n", b"\r\x1b[K")), before[-120:] + output[log.start() :][:80]
    # The interaction happened: some log line came while the live line was up.
    assert any(output[: log.start()].endswith(b"\r\x1b[K") for log in logs)
    assert b"lane crun paused" in output
    assert b"lane kie paused" in output


async def test_ctrl_c_on_a_terminal_with_nothing_in_flight_says_stopping_on_the_live_line(
    tmp_path: Path,
) -> None:
    write_jsonl(tmp_path / "in.jsonl", items(20, lanes=("crun",)))
    async with fake_provider() as fake:
        # 3 per 30 s: after the first three the run only waits for the window.
        (tmp_path / "persona.toml").write_text(
            config_text(
                fake.url, lanes=("crun",), rate_limit=3, rate_period=30.0, max_concurrency=1
            )
        )
        args = ["batch", str(tmp_path / "in.jsonl"), "--config", str(tmp_path / "persona.toml"),
                "--out", str(tmp_path / "results.jsonl")]  # fmt: skip
        code, output = await anyio.to_thread.run_sync(
            lambda: run_on_a_terminal(args, interrupt_at=b"3/20 (")
        )
    assert code == 130, output
    said = output.index(b"no request is in flight")
    after = [frame for frame in output[said:].split(b"\r") if b"/20 (" in frame]
    assert after, output  # the live line, drawn again below the message
    assert all(frame.endswith(b"stopping\x1b[K") for frame in after), after
    assert fake.request_count == 3
