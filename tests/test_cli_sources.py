"""The CLI and source songs: ``wait_for_source`` in the TOML, ``validate --check-sources``, and a
rerun that sends again an item whose song was not finished. Real subprocesses, fake provider."""

from __future__ import annotations

from pathlib import Path

import pytest
from _cli_support import (
    KEYS,
    cli_env,
    config_text,
    items,
    last_records,
    read_journal,
    run_cli,
    summary_rows,
    write_jsonl,
)

from persona_async.testing import FakeProvider

pytestmark = pytest.mark.anyio

CREATE_PATHS = ("/api/v1/client/job/suno-persona-generate", "/api/v1/generate/generate-persona")


def fake_provider() -> FakeProvider:
    return FakeProvider(api_keys=tuple(KEYS.values()))


def creates(fake: FakeProvider, audio_id: str | None = None) -> int:
    return sum(
        r.path in CREATE_PATHS and (audio_id is None or (r.json or {}).get(k) == audio_id)
        for r in fake.requests
        for k in (("suno_id",) if r.path == CREATE_PATHS[0] else ("audioId",))
    )


def batch(tmp_path: Path) -> list[str]:
    return [
        "batch",
        str(tmp_path / "in.jsonl"),
        "--config",
        str(tmp_path / "persona.toml"),
        "--out",
        str(tmp_path / "results.jsonl"),
        "--no-progress",
    ]


async def test_wait_for_source_in_the_toml_waits_for_the_song_then_creates_once(
    tmp_path: Path,
) -> None:
    rows = items(2)
    write_jsonl(tmp_path / "in.jsonl", rows)
    async with fake_provider() as fake:
        for row in rows:
            fake.songs.add(row["task_id"], clips={row["audio_id"]: 90.0}, ready_in=1.5)
        text = config_text(fake.url).replace(
            "max_concurrency = 8\n", "max_concurrency = 8\nwait_for_source = 20\n"
        )
        (tmp_path / "persona.toml").write_text(text)
        result = await run_cli(*batch(tmp_path))
    assert result.returncode == 0, result.stderr
    records = last_records(read_journal(tmp_path / "results.jsonl"))
    assert {r["status"] for r in records.values()} == {"created"}
    assert creates(fake) == 2
    assert fake.songs.queries(fake.requests) >= 2


async def test_a_not_finished_song_fails_retryably_and_a_rerun_sends_it_again(
    tmp_path: Path,
) -> None:
    rows = items(1, lanes=("kie",))
    write_jsonl(tmp_path / "in.jsonl", rows)
    async with fake_provider() as fake:
        song = fake.songs.add(rows[0]["task_id"], clips={rows[0]["audio_id"]: 90.0}, ready_in=600)
        (tmp_path / "persona.toml").write_text(config_text(fake.url, lanes=("kie",)))
        first = await run_cli(*batch(tmp_path))
        after_first = last_records(read_journal(tmp_path / "results.jsonl"))
        song.ready_in = 0.0  # the song has finished since
        second = await run_cli(*batch(tmp_path))
    assert first.returncode == 1
    (record,) = after_first.values()
    assert record["status"] == "failed"
    assert record["error"]["type"] == "SourceNotReadyError"
    assert record["error"]["next_run_retries"] is True
    assert second.returncode == 0, second.stderr
    (record,) = last_records(read_journal(tmp_path / "results.jsonl")).values()
    assert record["status"] == "created"
    assert creates(fake, rows[0]["audio_id"]) == 2  # one per run, none resent within a run


async def test_validate_check_sources_reports_each_lines_source_and_sends_no_create(
    tmp_path: Path,
) -> None:
    rows = items(6, lanes=("crun", "kie"))
    write_jsonl(tmp_path / "in.jsonl", rows)
    async with fake_provider() as fake:
        fake.songs.add(rows[0]["task_id"], clips={rows[0]["audio_id"]: 90.0})  # ready
        fake.songs.add(rows[1]["task_id"], clips={rows[1]["audio_id"]: 90.0}, ready_in=60)
        fake.songs.add(rows[2]["task_id"], fails=True, error_message="sensitive word")
        fake.songs.add(rows[3]["task_id"], clips={"another_clip": 90.0})  # wrong audio id
        fake.songs.add(rows[4]["task_id"], clips={rows[4]["audio_id"]: 90.0})  # ready
        # rows[5]: a task the provider does not know
        (tmp_path / "persona.toml").write_text(config_text(fake.url))
        result = await run_cli(
            "validate",
            str(tmp_path / "in.jsonl"),
            "--config",
            str(tmp_path / "persona.toml"),
            "--check-sources",
        )
    out = result.stdout.decode()
    assert result.returncode == 1
    assert "in.jsonl:1: source ready" in out
    assert "in.jsonl:2: source running: PENDING" in out
    assert "in.jsonl:3: source failed" in out
    assert "sensitive word" in out
    assert "in.jsonl:4: source failed: audio_id is not one of the clips" in out
    assert "in.jsonl:5: source ready" in out
    assert "in.jsonl:6: source unknown: status query failed" in out
    assert "sources: 2 ready, 1 running, 2 failed, 1 unknown" in out
    assert creates(fake) == 0
    assert fake.songs.queries(fake.requests) == 6
    assert all(r.method == "GET" for r in fake.requests)


async def test_validate_check_sources_needs_the_keys(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", items(1))
    (tmp_path / "persona.toml").write_text(config_text("http://127.0.0.1:9"))
    env = {k: v for k, v in cli_env().items() if not k.startswith("CLI_TEST_")}
    result = await run_cli(
        "validate",
        str(tmp_path / "in.jsonl"),
        "--config",
        str(tmp_path / "persona.toml"),
        "--check-sources",
        env=env,
    )
    assert result.returncode == 2
    assert b"is not set" in result.stderr


async def test_wait_for_source_on_a_lane_must_be_positive(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", items(1))
    text = config_text("http://127.0.0.1:9").replace(
        "max_concurrency = 8\n", "max_concurrency = 8\nwait_for_source = 0\n"
    )
    (tmp_path / "persona.toml").write_text(text)
    result = await run_cli(*batch(tmp_path))
    assert result.returncode == 2
    assert b"wait_for_source: must be > 0" in result.stderr


async def test_a_clip_the_source_task_does_not_have_is_an_invalid_line_that_says_so(
    tmp_path: Path,
) -> None:
    rows = items(2)
    rows[1]["id"] = "row-2"
    write_jsonl(tmp_path / "in.jsonl", rows)
    async with fake_provider() as fake:
        fake.songs.add(rows[0]["task_id"], clips={rows[0]["audio_id"]: 90.0})
        fake.songs.add(rows[1]["task_id"], clips={"other-clip": 90.0})  # not rows[1]'s clip
        text = config_text(fake.url).replace(
            "max_concurrency = 8\n", "max_concurrency = 8\nwait_for_source = 20\n"
        )
        (tmp_path / "persona.toml").write_text(text)
        first = await run_cli(*batch(tmp_path))
        second = await run_cli(*batch(tmp_path))
    assert first.returncode == 1, first.stderr
    records = read_journal(tmp_path / "results.jsonl")
    (invalid,) = [r for r in records if r["status"] == "invalid"]  # once: the rerun knows it
    lane = rows[1]["provider"]
    assert (invalid["line"], invalid["id"], invalid["provider"]) == (2, "row-2", lane)
    assert (invalid["task_id"], invalid["audio_id"]) == (rows[1]["task_id"], rows[1]["audio_id"])
    assert invalid["error"]["field"] == "audio_id"
    assert invalid["error"]["message"].startswith(
        f"audio_id is not one of the clips of task {rows[1]['task_id']!r} (it has: other-clip)"
    )
    assert creates(fake, rows[1]["audio_id"]) == 0
    assert creates(fake) == 1
    summary = summary_rows(first.stdout)
    assert summary[lane][5] == "1"  # the invalid column of its lane
    assert second.returncode == 1, second.stderr
