"""A lane held by a process sharing its Redis limiter says why, to its callers and its user.

One process is answered 455 (maintenance) or 429 with a Retry-After, and holds every start of
the shared key for a while. A request in a second process that cannot start before that hold
ends fails at once, unsent, with what the first process was told (a ``MaintenanceError`` or a
``RateLimitError`` with its ``retry_after``, as it would in the first process); the second
process's ``LaneStats.held`` and its CLI's live line say the lane is held, and by what. The
clients here have limiters of their own on one key, as two processes have.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import get_args

import anyio
import pytest
import redis.asyncio
from _cli_support import (
    KEYS,
    batch_args,
    config_text,
    fake_provider,
    items,
    read_journal,
    run_on_a_terminal,
    write_jsonl,
)
from test_redis import API_KEY, RedisServer, redis_server  # noqa: F401

from persona_async import (
    CrunProvider,
    KieProvider,
    LaneState,
    MaintenanceError,
    PersonaClient,
    PersonaError,
    PersonaRequest,
    ProviderTimeoutError,
    RateLimitError,
    _deadline,
    _redis_lane,
)
from persona_async._cli import _progress
from persona_async._limiter import Hold
from persona_async.redis import RedisLimiter
from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio


def _request(name: str) -> PersonaRequest:
    return PersonaRequest(f"task_{name}", f"clip_{name}", "Neon Siren", "Smoky R&B")


async def _until_held(url: str) -> None:
    async with redis.asyncio.Redis.from_url(url) as raw:
        for _ in range(1000):
            if await raw.keys("*:hold"):
                return
            await asyncio.sleep(0.005)
    raise AssertionError("the first process never told Redis to hold")


@pytest.mark.parametrize(
    ("fault", "expected", "words"),
    [
        (Fault.envelope(455), MaintenanceError, "the provider is down for maintenance ("),
        (Fault.envelope(429, retry_after=3.0), RateLimitError, "the provider asked to slow down"),
    ],
    ids=["paused", "cooling"],
)
async def test_a_call_that_cannot_start_before_another_processs_hold_fails_at_once(
    redis_server: RedisServer,  # noqa: F811
    fault: Fault,
    expected: type[PersonaError],
    words: str,
) -> None:
    async with FakeProvider() as fake:
        fake.inject(fault)

        def lane() -> CrunProvider:
            limiter = RedisLimiter(redis_server.url)
            return CrunProvider(api_key=API_KEY, base_url=fake.url, limiter=limiter)

        # The first process probes again only after 3 s (its pause), or waits out Retry-After.
        there = PersonaClient([lane()], backoff_initial=3.0, backoff_max=3.0)
        here = PersonaClient([lane()], deadline=0.5)
        async with there, here:
            first = asyncio.ensure_future(there.create_persona(_request("there")))
            await _until_held(redis_server.url)
            started = time.monotonic()
            with pytest.raises(PersonaError) as info:
                await here.create_persona(_request("here"))
            waited = time.monotonic() - started
            stats = here.stats()["crun"]
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first

    err = info.value
    assert type(err) is expected, err
    assert err.message.startswith(words), err
    assert "seen by a process sharing this lane's limiter" in err.message
    # The hold (3 s) ends after the call's last start (0.375 s in): it fails as soon as Redis
    # says so, not at its last start, as a lane that saw the answer itself fails it.
    assert err.message.endswith("it was not sent, and failed at once"), err
    assert (err.provider, err.task_id, err.attempts) == ("crun", "task_here", 0)
    assert waited < 0.25, waited
    if isinstance(err, RateLimitError):
        assert err.retry_after == 3.0  # whole seconds until the shared cooldown ends
    # Its own lane saw nothing: it runs, held by what the other process saw.
    assert (stats.state, stats.held) == (
        LaneState.RUNNING,
        "paused" if expected is MaintenanceError else "cooling",
    )
    assert [r.json["suno_id"] for r in fake.requests if r.json] == ["clip_there"]


async def test_a_hold_that_has_ended_is_not_blamed_for_a_later_wait(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    # A pause elsewhere, 0.3 s long: the first request waits it out and is sent. The second
    # waits for the next window (one request per 10 s), and its deadline passes there: it says
    # it waited for the rate limit, not for a maintenance that is over.
    async with FakeProvider() as fake:
        provider = CrunProvider(
            api_key=API_KEY,
            base_url=fake.url,
            rate_limit=1,
            rate_period=10.0,
            limiter=RedisLimiter(redis_server.url),
        )
        elsewhere = RedisLimiter(redis_server.url).for_lane(provider)
        try:
            await elsewhere.hold("paused", 0.3)
            async with PersonaClient([provider], deadline=1.0) as client:
                persona = await client.create_persona(_request("first"))
                with pytest.raises(PersonaError) as info:
                    await client.create_persona(_request("second"))
                held = client.stats()["crun"].held
        finally:
            await elsewhere.aclose()

    assert persona.task_id == "task_first"
    assert held is None
    assert type(info.value) is ProviderTimeoutError, info.value
    assert "waiting in the lane's queue (rate limit" in info.value.message
    assert [r.json["suno_id"] for r in fake.requests if r.json] == ["clip_first"]


async def test_the_live_line_says_a_lane_is_paused_by_what_a_process_sharing_it_saw(
    redis_server: RedisServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    # Another process saw a 455 and holds the shared key for 2 s. A batch started meanwhile
    # shows its lane paused for a maintenance seen elsewhere, then sends everything after.
    async with fake_provider() as fake:
        text = config_text(fake.url, lanes=("kie",))
        text = text.replace("max_concurrency", f'limiter = "{redis_server.url}"\nmax_concurrency')
        (tmp_path / "persona.toml").write_text(text)
        write_jsonl(tmp_path / "in.jsonl", items(3, lanes=("kie",)))
        elsewhere = RedisLimiter(redis_server.url).for_lane(KieProvider(api_key=KEYS["kie"]))
        try:
            await elsewhere.hold("paused", 2.0)
            held_until = time.monotonic() + 2.0
            args = [*batch_args(tmp_path)][:-1]  # the live line wanted: no --no-progress
            code, output = await anyio.to_thread.run_sync(run_on_a_terminal, args)
        finally:
            await elsewhere.aclose()
        first_sent = min(r.arrived for r in fake.requests)

    assert code == 0, output
    frames = [f for f in output.split(b"\r") if b"/3 (" in f]
    assert any(b"kie: paused (maintenance, shared)" in f for f in frames), output
    assert first_sent >= held_until - 0.05
    assert sum(r["status"] == "created" for r in read_journal(tmp_path / "results.jsonl")) == 3


def test_every_hold_state_has_its_error_its_words_and_its_reply() -> None:
    states = set(get_args(Hold))
    assert states == {"cooling", "paused"}
    assert set(_deadline._HELD) == states  # what a deadline inside it fails with
    assert set(_progress._HELD_WORDS) == states  # what the live line says
    assert {state.encode() for state in states} <= set(_redis_lane._HOLDS)  # Redis's reply
    assert set(_redis_lane._HOLDS.values()) == states
