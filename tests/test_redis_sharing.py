"""One request, one persona across processes: identical calls in real subprocesses sharing a real
``redis-server`` through ``RedisLimiter`` make one persona, counted at the fake provider.

Run as a script, this file is the worker: ``python test_redis_sharing.py CONFIG`` prints READY,
waits for GO on stdin, makes ``calls`` identical ``create_persona`` calls at once and prints
one JSON line per call (the persona id, or the error's class name).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import redis.asyncio
from _support import free_port
from test_redis import RedisServer

from persona_async import (
    CrunProvider,
    PersonaClient,
    PersonaError,
    PersonaRequest,
    RedisUnavailableError,
)
from persona_async.redis import RedisLimiter
from persona_async.testing import FakeProvider

pytestmark = pytest.mark.anyio

REQUEST = {"task_id": "task_1", "audio_id": "clip_1", "name": "Neon Siren", "description": "R&B"}


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.kill()


class Worker:
    """A child process with its own client, started, then told GO, then read to the end."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, fake: FakeProvider, redis_url: str, **config: Any) -> Worker:
        config = {"fake": fake.url, "key": fake.api_key, "redis": redis_url, **config}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            json.dumps(config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.strip() == b"READY", line
        return cls(proc)

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"GO\n")

    async def results(self) -> list[str]:
        out, err = await asyncio.wait_for(self.proc.communicate(), 60)
        assert self.proc.returncode == 0, err.decode()
        return [json.loads(line) for line in out.decode().splitlines()]


async def test_two_processes_sharing_redis_make_one_persona_for_identical_calls(
    fake: FakeProvider, redis_server: RedisServer
) -> None:
    fake.latency = 0.5
    workers = [await Worker.start(fake, redis_server.url, calls=5) for _ in range(2)]
    for worker in workers:
        worker.go()
    ids = [pid for worker in workers for pid in await worker.results()]
    assert len(ids) == 10
    assert set(ids) == set(fake.personas)  # one persona, every call got its id
    assert fake.request_count == 1
    # A third process asking later gets it from Redis, without sending.
    later = await Worker.start(fake, redis_server.url, calls=1)
    later.go()
    assert await later.results() == ids[:1]
    assert fake.request_count == 1


async def test_redis_holds_neither_the_api_key_nor_the_request(
    fake: FakeProvider, redis_server: RedisServer
) -> None:
    limiter = RedisLimiter(redis_server.url)
    provider = CrunProvider(api_key=fake.api_key, base_url=fake.url, limiter=limiter)
    async with PersonaClient([provider]) as c:
        await c.create_persona(PersonaRequest(**REQUEST))
    conn = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        stored = [(k, await conn.dump(k)) for k in await conn.keys("*")]
    finally:
        await conn.aclose()
    assert any(b":create:" in key for key, _ in stored)  # the request's record is there
    for key, value in stored:
        for secret in (fake.api_key, "clip_1", "Neon Siren"):
            assert secret.encode() not in key
            assert value is None or secret.encode() not in value


async def test_the_lease_is_renewed_while_the_owner_waits_for_a_slow_provider(
    fake: FakeProvider, redis_server: RedisServer
) -> None:
    # A lease of 0.3 s against a reply taking 1.5 s: only renewal keeps the second process out.
    fake.latency = 1.5
    first = await Worker.start(fake, redis_server.url, calls=1, lease=0.3)
    second = await Worker.start(fake, redis_server.url, calls=1, lease=0.3)
    first.go()
    with anyio.fail_after(10):
        while fake.request_count == 0:  # noqa: ASYNC110 - the fake has no event
            await anyio.sleep(0.02)
    await anyio.sleep(0.6)  # two leases later
    second.go()
    assert await first.results() == await second.results()
    assert fake.request_count == 1


async def test_when_the_owner_dies_mid_flight_another_process_sends_after_its_lease(
    fake: FakeProvider, redis_server: RedisServer
) -> None:
    fake.latency = 3.0
    doomed = await Worker.start(fake, redis_server.url, calls=1, lease=0.5)
    survivor = await Worker.start(fake, redis_server.url, calls=1, lease=0.5, deadline=20)
    doomed.go()
    with anyio.fail_after(10):
        while fake.request_count == 0:  # noqa: ASYNC110 - the fake has no event
            await anyio.sleep(0.02)
    doomed.proc.kill()  # SIGKILL: no lease renewed, nothing released
    await doomed.proc.wait()
    started = time.monotonic()
    survivor.go()
    [persona_id] = await survivor.results()
    assert persona_id in fake.personas
    assert fake.request_count == 2  # it sent: the dead owner's answer went nowhere
    assert time.monotonic() - started < 0.5 + 3.0 + 2.0  # a lease, a reply, slack


async def test_with_redis_unreachable_the_request_fails_unsent(fake: FakeProvider) -> None:
    limiter = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    provider = CrunProvider(api_key=fake.api_key, base_url=fake.url, limiter=limiter)
    async with PersonaClient([provider]) as c:
        with pytest.raises(RedisUnavailableError) as info:
            await c.create_persona(PersonaRequest(**REQUEST))
    assert info.value.retryable is True
    assert "was not sent" in info.value.message
    assert fake.request_count == 0


async def test_with_fallback_local_an_unreachable_redis_shares_within_the_process(
    fake: FakeProvider,
) -> None:
    fake.latency = 0.3
    limiter = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5, fallback="local")
    provider = CrunProvider(api_key=fake.api_key, base_url=fake.url, limiter=limiter)
    async with PersonaClient([provider]) as c:
        personas = await asyncio.gather(
            *(c.create_persona(PersonaRequest(**REQUEST)) for _ in range(5))
        )
    assert len({p.persona_id for p in personas}) == 1
    assert fake.request_count == 1


# -- the worker --------------------------------------------------------------------------------


async def _work(config: dict[str, Any]) -> None:
    limiter = RedisLimiter(config["redis"], lease=config.get("lease", 10.0))
    provider = CrunProvider(api_key=config["key"], base_url=config["fake"], limiter=limiter)
    request = PersonaRequest(**REQUEST)
    async with PersonaClient([provider], deadline=config.get("deadline", 10)) as client:

        async def call() -> str:
            try:
                return (await client.create_persona(request)).persona_id
            except PersonaError as err:
                return type(err).__name__

        for result in await asyncio.gather(*(call() for _ in range(config["calls"]))):
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    settings = json.loads(sys.argv[1])
    print("READY", flush=True)
    if sys.stdin.readline().strip() == "GO":
        asyncio.run(_work(settings))


async def test_a_caller_leaving_while_another_client_sends_sends_nothing_and_asked_again_gets_it(
    fake: FakeProvider, redis_server: RedisServer
) -> None:
    # Two clients in one process share Redis as two processes would.
    fake.latency = 1.0
    request = PersonaRequest(**REQUEST)

    def provider() -> CrunProvider:
        limiter = RedisLimiter(redis_server.url)
        return CrunProvider(api_key=fake.api_key, base_url=fake.url, limiter=limiter)

    async with PersonaClient([provider()]) as owner, PersonaClient([provider()]) as other:
        sending = asyncio.ensure_future(owner.create_persona(request))
        await anyio.sleep(0.3)  # on the wire from the owner
        with anyio.move_on_after(0.2) as left:
            await other.create_persona(request)  # waits for the owner, then hangs up
        assert left.cancelled_caught
        persona = await sending
        again = await other.create_persona(request)  # from Redis: nothing sent
    assert again == persona
    assert fake.request_count == 1
