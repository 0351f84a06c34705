"""``python -m persona_async.testing`` as a user runs it: a real subprocess, driven by the SDK,
with its maintenance window, source songs and async tasks set from the command line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from persona_async import (
    CrunProvider,
    GenerationFailedError,
    InvalidRequestError,
    KieJobsProvider,
    MaintenanceError,
    PersonaClient,
    PersonaRequest,
    PollPolicy,
    Provider,
    SourceFailedError,
)
from persona_async._providers import PROVIDER_KINDS

SOURCE_ROOT = str(Path(__file__).resolve().parent.parent)
KEY = "cli-key"
FAST = PollPolicy(initial=0.1, factor=1.0, max_interval=0.1, min_interval=0.0, jitter=0.0)


@asynccontextmanager
async def fake_process(*args: str) -> AsyncIterator[str]:
    """The fake in its own process with ``args``; yields its base URL."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [SOURCE_ROOT, env.get("PYTHONPATH")]))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "persona_async.testing",
        "--api-key",
        KEY,
        *args,
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 10)
        prefix, url = line.decode().split()
        assert prefix == "READY"
        yield url
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 10)


def at(url: str, cls: type[Provider], **kw: object) -> Provider:
    return cls(api_key=KEY, base_url=url, rate_limit=None, poll=FAST, **kw)  # type: ignore[arg-type]


def test_help_names_every_contract_and_every_provider_kind() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "persona_async.testing", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for kind, cls in PROVIDER_KINDS.items():
        assert kind in done.stdout, kind
        assert f"POST {cls.path}" in done.stdout, kind
    for option in ("--maintenance", "--song", "--failing-song", "--task-seconds", "--failing-task"):
        assert option in done.stdout


@pytest.mark.anyio
async def test_a_maintenance_window_answers_455_then_ends() -> None:
    async with fake_process("--maintenance", "0.6") as url:
        request = PersonaRequest("task_1", "clip_1", "n", "d")
        async with PersonaClient([at(url, CrunProvider)], max_maintenance_wait=0.1) as client:
            with pytest.raises(MaintenanceError):
                await client.create_persona(request)
        await asyncio.sleep(0.7)
        async with PersonaClient([at(url, CrunProvider)]) as client:
            assert (await client.create_persona(request)).persona_id


@pytest.mark.anyio
async def test_a_maintenance_window_can_start_later() -> None:
    async with fake_process("--maintenance", "5", "--maintenance-at", "0.5") as url:
        request = PersonaRequest("task_1", "clip_1", "n", "d")
        async with PersonaClient([at(url, CrunProvider)], max_maintenance_wait=0.1) as client:
            assert (await client.create_persona(request)).persona_id
            await asyncio.sleep(0.6)
            with pytest.raises(MaintenanceError):  # (the same request would be remembered)
                await client.create_persona(PersonaRequest("task_1", "clip_2", "n", "d"))


@pytest.mark.anyio
async def test_songs_are_waited_for_checked_and_failed_as_given() -> None:
    args = ("--song", "task_1=clip_1:95,clip_2:40", "--song-ready-in", "0.5")
    async with fake_process(*args, "--failing-song", "task_9") as url:
        provider = at(url, CrunProvider, wait_for_source=10.0)
        started = time.monotonic()
        async with PersonaClient([provider], max_retries=0) as client:
            ready = PersonaRequest("task_1", "clip_2", "n", "d", vocal_end=30.0)
            assert (await client.create_persona(ready)).persona_id
            assert time.monotonic() - started >= 0.4  # it waited for the song
            with pytest.raises(InvalidRequestError) as wrong:
                await client.create_persona(PersonaRequest("task_1", "clip_3", "n", "d"))
            with pytest.raises(InvalidRequestError) as too_long:
                await client.create_persona(
                    PersonaRequest("task_1", "clip_2", "n", "d", vocal_end=45.0)
                )
            with pytest.raises(SourceFailedError):
                await client.create_persona(PersonaRequest("task_9", "clip_1", "n", "d"))
    assert wrong.value.field == "audio_id"
    assert too_long.value.field == "vocal_end"


@pytest.mark.anyio
async def test_async_tasks_run_for_the_given_time_and_fail_for_the_given_clips() -> None:
    args = ("--task-seconds", "0.5", "--failing-task", "clip_bad")
    async with fake_process(*args) as url, PersonaClient([at(url, KieJobsProvider)]) as client:
        started = time.monotonic()
        persona = await client.create_persona(PersonaRequest("task_1", "clip_1", "n", "d"))
        took = time.monotonic() - started
        with pytest.raises(GenerationFailedError) as failed:
            await client.create_persona(PersonaRequest("task_1", "clip_bad", "n", "d"))
    assert persona.provider_task_id is not None
    assert took >= 0.45
    assert failed.value.provider_task_id is not None


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--song", "=clip_1:9"], "the task id is empty"),
        (["--song", "task_1=clip_1:zero"], "CLIP:SECONDS"),
        (["--maintenance", "-1"], "seconds >= 0"),
    ],
)
def test_a_wrong_option_is_refused_naming_it(args: list[str], said: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "persona_async.testing", *args], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert said in done.stderr
    assert done.stdout == ""
