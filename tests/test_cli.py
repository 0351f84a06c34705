"""``persona-async`` as a user meets it: inputs, the journal's shape, exit codes, config errors,
``validate`` and ``demo``. Real subprocesses against a ``FakeProvider`` on loopback."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from _cli_support import (
    ENV_NAMES,
    KEYS,
    cli_env,
    command,
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

import persona_async

pytestmark = pytest.mark.anyio

RECORD_FIELDS = ["id", "provider", "task_id", "audio_id", "status", "persona_id", "error",
                 "attempts", "line"]


def batch(tmp_path: Path, source: str = "in.jsonl", *extra: str) -> list[str]:
    return ["batch", source if source == "-" else str(tmp_path / source), "--config",
            str(tmp_path / "persona.toml"), "--out", str(tmp_path / "results.jsonl"),
            "--no-progress", *extra]


async def test_a_clean_batch_creates_everything_exits_0_and_journals_each_item(
    tmp_path: Path,
) -> None:
    rows = items(10)
    rows[0]["id"] = "customer-42"
    rows[1]["vocal_start"], rows[1]["vocal_end"], rows[1]["style"] = 3.0, 23.5, "dream pop"
    write_jsonl(tmp_path / "in.jsonl", rows)
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url))
        result = await run_cli(*batch(tmp_path))
    assert result.returncode == 0, result.stderr
    records = read_journal(tmp_path / "results.jsonl")
    final = [r for r in records if r["status"] != "pending"]
    pending = [r for r in records if r["status"] == "pending"]
    assert all(list(record) == RECORD_FIELDS for record in final)
    # A pending record also says when its request was released (for the provider's window).
    assert all(list(record) == [*RECORD_FIELDS, "sent_at"] for record in pending)
    assert len(pending) == 10
    assert all(abs(r["sent_at"] - time.time()) < 60 for r in pending)
    assert len(final) == 10
    assert {r["status"] for r in final} == {"created"}
    first = next(r for r in final if r["id"] == "customer-42")
    assert first["line"] == 1
    assert first["attempts"] == 1
    assert first["error"] is None
    assert fake.personas[first["persona_id"]]["audio_id"] == rows[0]["audio_id"]
    styled = next(p for p in fake.personas.values() if p["audio_id"] == rows[1]["audio_id"])
    assert (styled["vocal_start"], styled["vocal_end"], styled["style"]) == (3.0, 23.5, "dream pop")
    table = result.stdout.decode()
    assert "created" in table
    assert "\ncrun " in table
    assert "\nkie " in table
    for key in KEYS.values():
        assert key not in table
        assert key not in (tmp_path / "results.jsonl").read_text()


async def test_any_failed_item_makes_the_exit_code_1_and_the_summary_names_the_error(
    tmp_path: Path,
) -> None:
    write_jsonl(tmp_path / "in.jsonl", items(6))
    async with fake_provider() as fake:
        fake.missing_tasks.add("task-2")  # crun answers 422 "task_id not found"
        (tmp_path / "persona.toml").write_text(config_text(fake.url))
        result = await run_cli(*batch(tmp_path))
    assert result.returncode == 1
    failed = [r for r in read_journal(tmp_path / "results.jsonl") if r["status"] == "failed"]
    assert [(r["task_id"], r["error"]["type"], r["error"]["code"]) for r in failed] == [
        ("task-2", "ValidationError", 422)
    ]
    assert b"failed on crun: ValidationError 1" in result.stdout


async def test_a_file_full_of_broken_lines_names_each_line_and_field_and_goes_on(
    tmp_path: Path,
) -> None:
    good = items(2)
    lines = [
        "{not json",  # 1
        "[1, 2]",  # 2
        json.dumps({"provider": "crun", "task_id": "t3", "audio_id": "a3", "name": "n"}),  # 3
        json.dumps({**good[0], "task_id": 5}),  # 4
        json.dumps({**good[0], "audio_id": "a5", "vocalStart": 3}),  # 5
        json.dumps({**good[0], "audio_id": "a6", "provider": "suno"}),  # 6
        json.dumps({**good[1], "audio_id": "a7", "vocal_start": 0, "vocal_end": 5}),  # 7
        json.dumps({**good[0], "audio_id": "a8", "name": "  "}),  # 8
        json.dumps(good[0]),  # 9: valid
        "",  # 10: blank lines are not items
        json.dumps(good[0]),  # 11: the same item again
        json.dumps(good[1]),  # 12: valid
        json.dumps({**good[1], "audio_id": "a13", "vocal_end": "late"}),  # 13
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url))
        first = await run_cli(*batch(tmp_path))
        journal_after_first = (tmp_path / "results.jsonl").read_text()
        second = await run_cli(*batch(tmp_path))
    records = read_journal(tmp_path / "results.jsonl")
    invalid = {r["line"]: r["error"]["field"] for r in records if r["status"] == "invalid"}
    assert invalid == {
        1: None, 2: None, 3: "description", 4: "task_id", 5: "vocalStart", 6: "provider",
        7: "vocal_end", 8: "name", 11: "audio_id", 13: "vocal_end",
    }
    by_line = {r["line"]: r for r in records if r["status"] == "invalid"}
    assert "not valid JSON" in by_line[1]["error"]["message"]
    assert "duplicate" in by_line[11]["error"]["message"]
    assert {r["line"] for r in records if r["status"] == "created"} == {9, 12}
    assert len(fake.creations) == 2
    assert first.returncode == second.returncode == 1
    assert (tmp_path / "results.jsonl").read_text() == journal_after_first, "rerun adds nothing"


async def test_csv_input_with_a_header_is_read_like_jsonl(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text(
        "provider,task_id,audio_id,name,description,vocal_start,vocal_end,style,id\n"
        'crun,t1,a1,"Neon, Siren","Smoky, late",,,,\n'
        "kie,t2,a2,Glass Choir,Airy,5,25,dream pop,row-2\n"
        "kie,t3,a3,Low Tide,Dark,soon,25,,row-3\n"
    )
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url))
        result = await run_cli(*batch(tmp_path, "in.csv"))
    assert result.returncode == 1
    last = last_records(read_journal(tmp_path / "results.jsonl"))
    assert last[("crun", "t1", "a1")]["status"] == "created"
    assert last[("kie", "t2", "a2")]["id"] == "row-2"
    invalid = [r for r in read_journal(tmp_path / "results.jsonl") if r["status"] == "invalid"]
    assert [(r["line"], r["error"]["field"]) for r in invalid] == [(4, "vocal_start")]
    # The bad row still says who it is, and lands in its lane's row of the summary.
    assert (invalid[0]["id"], invalid[0]["provider"], invalid[0]["audio_id"]) == (
        "row-3", "kie", "a3")  # fmt: skip
    summary = summary_rows(result.stdout)
    assert summary["kie"][5] == "1"  # the invalid column
    assert "-" not in summary
    personas = {p["audio_id"]: p for p in fake.personas.values()}
    assert personas["a1"]["name"] == "Neon, Siren"
    assert (personas["a2"]["vocal_start"], personas["a2"]["style"]) == (5.0, "dream pop")


async def test_stdin_input_is_jsonl(tmp_path: Path) -> None:
    rows = items(4)
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url))
        stdin = "".join(json.dumps(row) + "\n" for row in rows).encode()
        result = await run_cli(*batch(tmp_path, "-"), stdin=stdin)
    assert result.returncode == 0, result.stderr
    last = last_records(read_journal(tmp_path / "results.jsonl"))
    assert set(last) == {identity(row) for row in rows}
    assert len(fake.creations) == 4


async def test_a_wrong_key_stops_the_lane_and_a_rerun_with_the_right_key_sends_the_rest(
    tmp_path: Path,
) -> None:
    rows = items(12)
    write_jsonl(tmp_path / "in.jsonl", rows)
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url, max_concurrency=1))
        wrong = await run_cli(*batch(tmp_path), env=cli_env(**{ENV_NAMES["crun"]: "sk-revoked"}))
        crun_requests = sum(1 for r in fake.requests if r.kind == "crun")
        right = await run_cli(*batch(tmp_path))
    assert wrong.returncode == 1
    assert b"AuthenticationError" in wrong.stdout
    assert crun_requests == 1, "a 401 stops the lane: nothing more is sent there"
    assert right.returncode == 0, right.stdout
    last = last_records(read_journal(tmp_path / "results.jsonl"))
    assert {r["status"] for r in last.values()} == {"created"}
    assert len(fake.creations) == 12
    assert max(fake.creations.values()) == 1


def crun_table(*lines: str) -> str:
    return "[providers.crun]\n" + "".join(line + "\n" for line in lines)


KIND = 'kind = "crun"'
CONFIG_ERRORS = {
    "unknown key": (
        crun_table(KIND, "rate_limt = 5"), {}, [b"[providers.crun] rate_limt", b"unknown key"]
    ),
    "wrong type": (
        crun_table(KIND, 'rate_limit = "20"'),
        {},
        [b"[providers.crun] rate_limit", b'expected an integer or "none"'],
    ),
    "inline key": (
        crun_table(KIND, 'api_key = "sk-inline-0001"'),
        {},
        [b"[providers.crun] api_key", b"api_key_env"],
    ),
    "missing env var": (
        crun_table(KIND, 'api_key_env = "{}"'.format(ENV_NAMES["crun"])),
        {ENV_NAMES["crun"]: ""},
        [b"[providers.crun] api_key_env", ENV_NAMES["crun"].encode(), b"not set"],
    ),
    "unknown kind": (
        crun_table('kind = "suno"'), {}, [b"[providers.crun] kind", b"crun, apikley, sunoapi"]
    ),
    "client setting": (
        crun_table(KIND) + "[client]\nmax_retries = 1.5\n",
        {},
        [b"[client] max_retries", b"expected an integer, got a number with a fraction"],
    ),
    "plain http to a remote host": (
        crun_table(KIND, 'base_url = "http://api.example.com"'),
        {},
        [b"[providers.crun] base_url", b"https://", b"loopback"],
    ),
}


async def test_a_lane_configured_with_no_limit_and_no_window_measures_the_providers(
    tmp_path: Path,
) -> None:
    # rate_limit = "none" and no rate_period: the lane measures the window the provider counts
    # over (here 5 per 0.5 s). Assuming the old 10 s, 30 items took about a minute.
    write_jsonl(tmp_path / "in.jsonl", items(30, lanes=("crun",)))
    (tmp_path / "persona.toml").write_text(
        f'[providers.crun]\nkind = "crun"\napi_key_env = "{ENV_NAMES["crun"]}"\n'
        'base_url = "URL"\nrate_limit = "none"\nmax_concurrency = 4\n'
        "[client]\nbackoff_initial = 0.005\nbackoff_max = 0.05\n"
    )
    async with fake_provider(rate_limit=5, rate_period=0.5) as fake:
        config = tmp_path / "persona.toml"
        config.write_text(config.read_text().replace("URL", fake.url))
        began = time.monotonic()
        result = await run_cli(*batch(tmp_path))
        took = time.monotonic() - began
    assert result.returncode == 0, result.stderr
    assert len(fake.creations) == 30
    assert took < 15, took


@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
async def test_config_errors_exit_2_naming_the_file_table_and_key(
    tmp_path: Path, case: str
) -> None:
    text, env, expected = CONFIG_ERRORS[case]
    (tmp_path / "persona.toml").write_text(text)
    write_jsonl(tmp_path / "in.jsonl", items(1, lanes=("crun",)))
    result = await run_cli(*batch(tmp_path), env=cli_env(**env))
    assert result.returncode == 2, result.stderr
    assert str(tmp_path / "persona.toml").encode() in result.stderr
    for fragment in expected:
        assert fragment in result.stderr
    assert b"sk-inline-0001" not in result.stderr + result.stdout
    assert not (tmp_path / "results.jsonl").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], b"usage"),
        (["batch", "in.jsonl", "--config", "persona.toml"], b"--out"),
        (["batch", "missing.jsonl", "--config", "persona.toml", "--out", "o.jsonl"],
         b"missing.jsonl"),
        (["batch", "in.txt", "--config", "persona.toml", "--out", "o.jsonl"], b".jsonl or .csv"),
        (["batch", "bad.csv", "--config", "persona.toml", "--out", "o.jsonl"], b"'audioId'"),
        (["batch", "in.jsonl", "--config", "persona.toml", "--out", "in.jsonl"], b"input file"),
    ],
    ids=["no command", "no --out", "no input", "unknown format", "bad CSV header", "out is in"],
)
async def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: bytes) -> None:
    (tmp_path / "persona.toml").write_text(config_text("http://127.0.0.1:9"))
    write_jsonl(tmp_path / "in.jsonl", items(1))
    (tmp_path / "in.txt").write_text("{}\n")
    (tmp_path / "bad.csv").write_text("provider,task_id,audioId,name,description\n")
    with anyio.fail_after(30):
        result = await anyio.run_process(
            command(*args), check=False, env=cli_env(), cwd=tmp_path
        )
    assert result.returncode == 2
    assert message in result.stderr


async def test_a_journal_in_use_by_another_run_is_refused(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", items(1))
    (tmp_path / "persona.toml").write_text(config_text("http://127.0.0.1:9"))
    held = os.open(tmp_path / "results.jsonl", os.O_WRONLY | os.O_CREAT)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = await run_cli(*batch(tmp_path))
    finally:
        os.close(held)
    assert result.returncode == 2
    assert b"another persona-async run" in result.stderr


async def test_validate_reports_every_invalid_line_sends_nothing_and_needs_no_key(
    tmp_path: Path,
) -> None:
    rows = items(3)
    lines = [json.dumps(rows[0]), "{oops", json.dumps({**rows[1], "provider": "suno"}),
             json.dumps(rows[2]), json.dumps(rows[0])]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    write_jsonl(tmp_path / "good.jsonl", rows)
    no_keys = {k: v for k, v in cli_env().items() if k not in ENV_NAMES.values()}
    async with fake_provider() as fake:
        (tmp_path / "persona.toml").write_text(config_text(fake.url))
        bad = await run_cli("validate", str(tmp_path / "in.jsonl"), "--config",
                            str(tmp_path / "persona.toml"), env=no_keys)
        good = await run_cli("validate", str(tmp_path / "good.jsonl"), "--config",
                             str(tmp_path / "persona.toml"), env=no_keys)
    assert fake.request_count == 0
    assert bad.returncode == 1, bad.stderr
    assert good.returncode == 0, good.stdout
    report = bad.stdout.decode().splitlines()
    counts = report.index("2 valid item(s), 3 invalid line(s)")
    problems = report[:counts]
    assert [line.split(":")[1] for line in problems] == ["2", "3", "5"]
    assert "provider" in problems[1]
    assert "duplicate of line 1" in problems[2]
    assert "3 valid item(s), 0 invalid line(s)" in good.stdout.decode().splitlines()


async def test_demo_runs_two_lanes_against_the_embedded_fake_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "demo.jsonl"
    result = await run_cli("demo", "--count", "40", "--no-progress", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout.decode()
    assert "No key, no network" in text
    assert "pauses both lanes" in text  # the maintenance window, as it happens
    assert "counted as 'exists'" in text  # why the summary shows some
    rows = summary_rows(result.stdout)
    crun, kie = rows["crun"], rows["kie"]
    assert int(crun[2]) + int(crun[3]) == 20
    assert int(kie[2]) + int(kie[3]) == 20
    last = last_records(read_journal(out))
    assert len(last) == 40
    assert {r["status"] for r in last.values()} <= {"created", "exists"}


async def test_progress_line_is_drawn_on_a_terminal_with_lane_states_and_not_in_a_pipe(
    tmp_path: Path,
) -> None:
    code, output = await anyio.to_thread.run_sync(run_on_a_terminal, ["demo", "--count", "30"])
    assert code == 0, output
    frames = [f for f in output.split(b"\r") if b"/30 (" in f]
    assert frames, output
    states = rb"crun: (running|cooling|paused)\b.*kie: (running|cooling|paused)\b"
    assert any(re.search(states, f) for f in frames)
    assert any(b"ETA" in f for f in frames)
    piped = await run_cli("demo", "--count", "4")
    assert piped.returncode == 0
    assert b"\r" not in piped.stdout


def test_python_m_persona_async_and_the_console_script_are_one_command() -> None:
    result = subprocess.run(command("--version"), capture_output=True, check=False)
    assert result.returncode == 0
    assert result.stdout == f"persona-async {persona_async.__version__}\n".encode()
    script = Path(sys.executable).with_name("persona-async")  # installed by pip
    console = subprocess.run([str(script), "--version"], capture_output=True, check=False)
    assert console.stdout == result.stdout


async def test_validate_says_per_lane_what_a_batch_would_send_and_how_long_it_takes(
    tmp_path: Path,
) -> None:
    rows = [*items(50, lanes=("crun",)), *items(30, lanes=("kie",), prefix="k")]
    write_jsonl(tmp_path / "in.jsonl", rows)
    (tmp_path / "persona.toml").write_text(
        config_text("http://127.0.0.1:9", rate_limit=20, rate_period=10.0)
    )
    journal = tmp_path / "results.jsonl"
    done = [{"id": None, **{k: r[k] for k in ("provider", "task_id", "audio_id")},
             "status": "created", "persona_id": f"p{n}", "error": None, "attempts": 1,
             "line": n + 1} for n, r in enumerate(rows[:10])]  # fmt: skip
    journal.write_text("".join(json.dumps(r) + "\n" for r in done))
    before = journal.read_bytes()
    no_keys = {k: v for k, v in cli_env().items() if k not in ENV_NAMES.values()}
    validate = ["validate", str(tmp_path / "in.jsonl"), "--config", str(tmp_path / "persona.toml")]
    fresh = await run_cli(*validate, env=no_keys)
    resumed = await run_cli(*validate, "--out", str(journal), env=no_keys)
    assert fresh.returncode == resumed.returncode == 0, resumed.stderr
    assert journal.read_bytes() == before, "validate never writes the journal"

    def table(output: bytes) -> dict[str, list[str]]:
        return {lane: row for lane, row in summary_rows(output).items() if lane in ("crun", "kie")}

    # lane, kind, to send, settled, time at the limits, limit: 20 at once, the next 20 10 s
    # later, and so on (50: the last 10 go at 20 s; 30: the last 10 at 10 s).
    assert table(fresh.stdout)["crun"][2:5] == ["50", "-", "20s"]
    assert table(resumed.stdout)["crun"][2:5] == ["40", "10", "10s"]
    assert table(resumed.stdout)["kie"][2:5] == ["30", "0", "10s"]
    assert "at least 10s in all" in resumed.stdout.decode()


async def test_validate_refuses_an_out_that_is_not_a_journal(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", items(2))
    (tmp_path / "persona.toml").write_text(config_text("http://127.0.0.1:9"))
    source = str(tmp_path / "in.jsonl")
    result = await run_cli(
        "validate", source, "--config", str(tmp_path / "persona.toml"), "--out", source
    )
    assert result.returncode == 2
    assert b"not a persona-async journal" in result.stderr


def test_the_fake_providers_help_says_how_it_reports_readiness_and_creations() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "persona_async.testing", "--help"], capture_output=True, check=True
    )
    assert b"READY http://127.0.0.1:PORT" in result.stdout
    assert b"/_fake/stats" in result.stdout
    assert b"creations" in result.stdout
    assert b"window_violations" in result.stdout


def test_the_license_file_is_the_mit_license_pyproject_names() -> None:
    root = Path(__file__).resolve().parent.parent
    assert 'license = "MIT"' in (root / "pyproject.toml").read_text()
    assert (root / "LICENSE").read_text().startswith("MIT License\n")
