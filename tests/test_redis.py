"""RedisLimiter against a real redis-server: one budget for every process using an API key.

Each test starts its own ``redis-server`` on a free loopback port (no persistence) and kills it
afterwards. The multi-process tests run real subprocesses: this file, run as a script, is the
worker (see ``_worker_main`` at the bottom), each with its own ``PersonaClient``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
import redis.asyncio
from _cli_support import KEYS, cli_env, config_text, items, read_journal, run_cli, write_jsonl
from _support import FAST_RETRY, JITTER, most_in_any_window
from _support import free_port as _free_port

from persona_async import (
    CrunProvider,
    KieProvider,
    PersonaClient,
    PersonaRequest,
    RedisUnavailableError,
)
from persona_async.redis import RedisLimiter
from persona_async.testing import FakeProvider, Fault
from persona_async.testing.nginx import NginxLimiter

# Rates measured in real time: these run one at a time on one worker (--dist loadgroup), so
# that they do not compete with each other for the CPU.
pytestmark = [pytest.mark.anyio, pytest.mark.xdist_group("real_time_rates")]

API_KEY = "test-key"  # the fake's default key
PASSWORD = "s3cret"  # the Redis password that must never show


class RedisServer:
    """``redis-server`` on loopback, no persistence; ``kill()`` and ``start()`` again at will."""

    def __init__(self, password: str | None = None) -> None:
        self.port = _free_port()
        self.password = password
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (Debian: apt-get install redis-server)")
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no"]
        if self.password:
            command += ["--requirepass", self.password]
        self._proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(64):  # +PONG, or -NOAUTH with a password: either way it is up
                    return
            if self._proc.poll() is not None:
                break
            time.sleep(0.01)
        self.kill()
        pytest.fail("redis-server did not start")

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-conversation, as in a crash."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            if self._proc.stderr is not None:
                self._proc.stderr.close()
            self._proc = None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(password=PASSWORD)
    server.start()
    yield server
    server.kill()


def _requests(n: int, prefix: str) -> list[PersonaRequest]:
    return [
        PersonaRequest(f"task_{prefix}{i}", f"clip_{prefix}{i}", "Neon Siren", "Smoky R&B")
        for i in range(n)
    ]


def _client(*providers: CrunProvider | KieProvider) -> PersonaClient:
    return PersonaClient(providers, retry=FAST_RETRY)


# -- worker processes --------------------------------------------------------------------------


class Worker:
    """A child process with its own client: started, then sent GO, then read to the end."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.outcomes: list[dict[str, Any]] = []
        self.stderr = ""

    @classmethod
    async def start(cls, **config: Any) -> Worker:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            json.dumps(config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        worker = cls(proc)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if line.strip() != b"READY":
            await worker.finish()
            pytest.fail(f"worker did not start: {line!r} {worker.stderr}")
        return worker

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"GO\n")

    async def finish(self) -> list[dict[str, Any]]:
        out, err = await asyncio.wait_for(self.proc.communicate(), 60)
        self.stderr = err.decode()
        lines = out.decode().splitlines()
        self.outcomes = [json.loads(line) for line in lines if line.startswith("{")]
        assert self.proc.returncode == 0, self.stderr
        return self.outcomes


async def _workers(processes: int, **config: Any) -> list[Worker]:
    workers = await asyncio.gather(
        *(Worker.start(prefix=f"w{i}_", **config) for i in range(processes))
    )
    return list(workers)


@contextlib.contextmanager
def _fake_process(*args: str) -> Iterator[str]:
    """``python -m persona_async.testing`` in its own process; yields its base URL."""
    command = [sys.executable, "-m", "persona_async.testing", "--api-key", API_KEY, *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("READY "), line
        yield line.split()[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _fake_stats(url: str) -> dict[str, Any]:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url + "/_fake/stats", timeout=10) as resp:
        return dict(json.load(resp))


# -- one budget across processes ---------------------------------------------------------------


async def test_four_processes_sharing_a_key_stay_in_the_window_at_full_rate(
    redis_server: RedisServer,
) -> None:
    # The window is widened by 2% of the period for network jitter: 40 ms here, enough for a
    # burst of 20 through a loaded 2-core machine.
    limit, period, per_worker = 20, 2.0, 20
    with _fake_process("--rate-limit", str(limit), "--rate-period", str(period)) as url:
        workers = await _workers(
            4,
            redis=redis_server.url,
            fake=url,
            count=per_worker,
            rate_limit=limit,
            rate_period=period,
        )
        for worker in workers:
            worker.go()
        results = [await worker.finish() for worker in workers]
        stats = _fake_stats(url)

    outcomes = [o for result in results for o in result]
    assert len(outcomes) == 4 * per_worker
    assert all(o["ok"] for o in outcomes), [o for o in outcomes if not o["ok"]][:3]
    # The fake's own window (rate_limit per rate_period for the key) never overflowed ...
    assert stats["window_violations"] == 0
    assert stats["creations"] == 4 * per_worker
    assert all(o["attempts"] == 1 for o in outcomes)
    # ... and the four together kept the allowed rate: after the first window's burst, the
    # rest came at >= 90% of limit/period (a sliding log with a 2% margin gives ~98%).
    done = sorted(o["t"] for o in outcomes)
    rate = (len(done) - limit) / (done[-1] - done[0])
    assert rate >= 0.9 * limit / period, f"{rate:.2f}/s"
    # Every process got a share of the budget: a shared window, not one process's.
    assert all(len(result) == per_worker for result in results)
    for worker in workers:
        assert PASSWORD not in worker.stderr


async def test_processes_sharing_a_key_behind_nginx_pace_together(
    redis_server: RedisServer,
) -> None:
    # nginx's limit_req at 10r/s takes one request per 100 ms and refuses the rest of a burst.
    # The shared window lets ten out at once (from both processes); nginx takes one, and the
    # lanes, through Redis, pace together at ten a second instead of learning "one a second".
    with _fake_process() as url, NginxLimiter(url, rate=10, status=429) as nginx:
        workers = await _workers(
            2, redis=redis_server.url, fake=nginx.url, count=20, rate_limit=10, rate_period=1.0
        )
        for worker in workers:
            worker.go()
        results = [await worker.finish() for worker in workers]
    outcomes = [o for result in results for o in result]
    assert all(o["ok"] for o in outcomes), [o for o in outcomes if not o["ok"]][:3]
    log = nginx.log()
    accepted = [t for t, code in log if code == 200]
    refused = [round(t - log[0][0], 2) for t, code in log if code != 200]
    assert len(accepted) == 40
    assert len(refused) <= 12, refused  # the opening burst ...
    # ... and after it at most the few arrivals a busy machine sends too close together, each
    # widening the shared pace (6%, 12%, 24%) rather than lowering the rate.
    assert len([t for t in refused if t >= 1.0]) <= 3, refused
    rate = (len(accepted) - 1) / (accepted[-1] - accepted[0])
    assert rate >= 0.75 * 10, f"{rate:.2f}/s"  # one shared pace, not one per process


async def test_a_429_seen_by_one_process_cools_the_others(
    redis_server: RedisServer, fake: FakeProvider
) -> None:
    cooldown = 1.0
    other = await Worker.start(
        redis=redis_server.url, fake=fake.url, count=1, rate_limit=20, rate_period=10.0, prefix="b"
    )
    fake.inject(Fault.envelope(429, retry_after=cooldown), times=1)
    limiter = RedisLimiter(redis_server.url)
    async with _client(CrunProvider(api_key=API_KEY, base_url=fake.url, limiter=limiter)) as client:
        request = _requests(1, "a")[0]
        mine = asyncio.ensure_future(client.create_persona(request))
        async with redis.asyncio.Redis.from_url(redis_server.url) as raw:
            for _ in range(1000):  # until the 429 came back and the lane told Redis
                if await raw.keys("*:hold"):
                    break
                await asyncio.sleep(0.005)
        other.go()
        told_at = time.monotonic()
        (result,) = await other.finish()
        persona = await mine

    assert persona.task_id == "task_a0"
    assert result["ok"]
    assert result["attempts"] == 1  # the other process never saw the 429
    arrivals = [r.arrived for r in fake.requests if r.json and r.json["suno_id"] == "clip_b0"]
    assert len(arrivals) == 1
    first_429 = fake.requests[0].arrived
    # It was told to go at once, but waited out the cooldown the first process saw.
    assert arrivals[0] - first_429 >= cooldown - 0.05
    assert arrivals[0] - told_at >= cooldown - 0.1


# -- shared feedback, in one process with separate limiters (as separate processes would) ------


async def test_a_pause_elsewhere_holds_every_lane_until_it_ends(redis_server: RedisServer) -> None:
    provider = CrunProvider(api_key=API_KEY, base_url="http://127.0.0.1:9")
    here = RedisLimiter(redis_server.url).for_lane(provider)
    there = RedisLimiter(redis_server.url).for_lane(provider)
    try:
        await there.hold("paused", 0.4)
        await there.hold("cooling", 0.05)  # a shorter cooldown does not cut the pause short
        started = time.monotonic()
        await here.acquire()
        assert time.monotonic() - started >= 0.35
    finally:
        await here.aclose()
        await there.aclose()


async def test_after_429s_processes_sharing_a_key_slow_down_and_recover_their_rate_together(
    redis_server: RedisServer, fake: FakeProvider
) -> None:
    # Two clients with limiters of their own, as two processes would have, share one key.
    # The provider first allows half their limit: both learn it, together. Then it relents:
    # both climb back, together, to the full limit and no further.
    limit, period = 10, 0.3
    fake.set_rate_limit(limit // 2, period)
    clients = [
        _client(
            CrunProvider(
                api_key=API_KEY,
                base_url=fake.url,
                rate_limit=limit,
                rate_period=period,
                limiter=RedisLimiter(redis_server.url),
            )
        )
        for _ in range(2)
    ]

    async def run(n: int, client: PersonaClient) -> None:
        async with client:
            async for outcome in client.create_many(_requests(80, f"r{n}_")):
                assert outcome.ok, outcome.error

    async def the_provider_relents() -> None:
        await anyio.sleep(2.0)
        fake.set_rate_limit(None)

    async with anyio.create_task_group() as tg:
        tg.start_soon(the_provider_relents)
        for n, client in enumerate(clients):
            tg.start_soon(run, n, client)

    ok = sorted(
        (r.arrived, r.json["suno_id"][5:8]) for r in fake.requests if r.response_code == 200
    )
    start = ok[0][0]
    learned = [t for t, _ in ok if start + 1.0 < t < start + 2.0]
    late = [(t, who) for t, who in ok if t > start + 4.0]
    # While the provider allowed 5 per window, both together sent no more than that...
    assert most_in_any_window(learned, period - JITTER) <= limit // 2
    # ...and after it relented they grew back to the full shared limit, never over it.
    assert most_in_any_window([t for t, _ in late], period) == limit
    assert {who for _, who in late} == {"r0_", "r1_"}
    assert most_in_any_window([t for t, _ in ok], period - JITTER) <= limit

async def test_only_lanes_with_the_same_kind_and_key_share_a_budget(
    redis_server: RedisServer,
) -> None:
    limiter = RedisLimiter(redis_server.url)
    lanes = [
        limiter.for_lane(CrunProvider(api_key=API_KEY, rate_limit=2, rate_period=30.0)),
        limiter.for_lane(CrunProvider(api_key="other-key", rate_limit=2, rate_period=30.0)),
        limiter.for_lane(KieProvider(api_key=API_KEY, rate_limit=2, rate_period=30.0)),
    ]
    same = limiter.for_lane(CrunProvider(api_key=API_KEY, rate_limit=2, rate_period=30.0))
    try:
        for lane in lanes:  # each budget has room for two at once
            await asyncio.wait_for(lane.acquire(), 1)
            await asyncio.wait_for(lane.acquire(), 1)
        with pytest.raises(TimeoutError):  # but crun + test-key is spent, from any lane
            await asyncio.wait_for(same.acquire(), 0.3)
        async with redis.asyncio.Redis.from_url(redis_server.url) as raw:
            keys = [key.decode() for key in await raw.keys("*")]
        assert keys
        assert all(key.startswith("persona_async:{") for key in keys)
        assert not any(API_KEY in key or "other-key" in key for key in keys)
    finally:
        for lane in [*lanes, same]:
            await lane.aclose()


# -- Redis down --------------------------------------------------------------------------------


async def test_redis_killed_mid_run_fails_the_rest_unsent_and_loses_nothing(
    redis_server: RedisServer, fake: FakeProvider
) -> None:
    limiter = RedisLimiter(redis_server.url)
    provider = CrunProvider(
        api_key=API_KEY, base_url=fake.url, rate_limit=10, rate_period=1.0, limiter=limiter
    )
    outcomes = []
    killed_at = 0.0
    async with _client(provider) as client:
        async for outcome in client.create_many(_requests(40, "k")):
            outcomes.append(outcome)
            if len(outcomes) == 15:  # in the second window
                redis_server.kill()
                killed_at = time.monotonic()

    assert len(outcomes) == 40  # every request has an outcome
    created = [o for o in outcomes if o.ok]
    failed = [o for o in outcomes if not o.ok]
    assert 15 <= len(created) < 40
    assert failed
    for outcome in failed:
        assert isinstance(outcome.error, RedisUnavailableError)
        assert outcome.attempts == 0  # never sent
        assert outcome.error.attempts == 0
        assert f"127.0.0.1:{redis_server.port}" in str(outcome.error)
        assert outcome.error.url == f"redis://:***@127.0.0.1:{redis_server.port}/0"
    # Nothing sent without a token: everything the fake saw became a persona, and nothing
    # reached it after Redis died beyond what was already on its way.
    assert len(fake.requests) == len(created) == fake.creations.total()
    assert {o.request.audio_id for o in created} == {a for _, a in fake.creations}
    assert all(r.arrived <= killed_at + 0.1 for r in fake.requests)


async def test_password_never_appears_in_errors_logs_or_reprs(
    redis_server: RedisServer, fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    limiter = RedisLimiter(redis_server.url)
    provider = CrunProvider(api_key=API_KEY, base_url=fake.url, limiter=limiter)
    async with _client(provider) as client:
        await client.create_persona(_requests(1, "p")[0])  # the password works
        redis_server.kill()
        with pytest.raises(RedisUnavailableError) as caught:
            await client.create_persona(_requests(2, "p")[1])
    wrong = RedisLimiter(redis_server.url.replace(PASSWORD, "wr0ng-" + PASSWORD))
    redis_server.start()
    async with _client(CrunProvider(api_key=API_KEY, base_url=fake.url, limiter=wrong)) as client:
        with pytest.raises(RedisUnavailableError) as refused:
            await client.create_persona(_requests(3, "p")[2])
    with pytest.raises(ValueError, match="redis://") as bad_scheme:
        RedisLimiter(f"http://:{PASSWORD}@127.0.0.1:6379/0")
    query = RedisLimiter(f"unix:///tmp/redis.sock?db=0&password={PASSWORD}")

    assert "AuthenticationError" in str(refused.value)
    shown = [
        str(caught.value),
        repr(caught.value),
        caught.value.url,
        str(refused.value),
        repr(refused.value),
        str(bad_scheme.value),
        repr(limiter),
        repr(wrong),
        repr(query),
        query.url,
        repr(provider),
        caplog.text,
    ]
    assert caplog.text.count("is unavailable") == 2  # logged, once per lane
    assert "***" in caught.value.url
    assert "***" in query.url
    for text in shown:
        assert PASSWORD not in text
    restored = pickle.loads(pickle.dumps(caught.value))
    assert restored.url == caught.value.url
    with pytest.raises(TypeError):
        pickle.dumps(limiter)


async def test_fallback_local_keeps_the_window_and_warns_once(
    fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    fake.set_rate_limit(4, 1.0)
    nowhere = f"redis://:{PASSWORD}@127.0.0.1:{_free_port()}/0"
    limiter = RedisLimiter(nowhere, fallback="local", recheck=60)
    provider = CrunProvider(
        api_key=API_KEY, base_url=fake.url, rate_limit=4, rate_period=1.0, limiter=limiter
    )
    async with _client(provider) as client:
        outcomes = [o async for o in client.create_many(_requests(9, "f"))]

    assert all(o.ok for o in outcomes)
    assert fake.window_violations == 0
    arrivals = sorted(r.arrived for r in fake.requests)
    assert arrivals[-1] - arrivals[0] >= 2 * 1.0  # 9 at 4 per window: three windows
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "falling back" in warnings[0].getMessage()
    assert PASSWORD not in caplog.text


async def test_unreachable_redis_fails_each_request_at_once_without_spinning() -> None:
    nowhere = f"redis://127.0.0.1:{_free_port()}/0"
    lane = RedisLimiter(nowhere, recheck=0).for_lane(CrunProvider(api_key=API_KEY))
    try:
        for _ in range(3):  # every acquire asks Redis once and reports, never loops
            with pytest.raises(RedisUnavailableError, match="is unavailable"):
                await asyncio.wait_for(lane.acquire(), 2)
    finally:
        await lane.aclose()


async def test_redis_back_after_a_restart_is_used_again(redis_server: RedisServer) -> None:
    provider = CrunProvider(api_key=API_KEY, rate_limit=5, rate_period=10.0)
    lane = RedisLimiter(redis_server.url, recheck=0.05).for_lane(provider)
    try:
        await lane.acquire()
        redis_server.kill()
        with pytest.raises(RedisUnavailableError):
            await lane.acquire()
        with pytest.raises(RedisUnavailableError):  # within recheck: fails without trying
            await lane.acquire()
        redis_server.start()
        await asyncio.sleep(0.06)
        await asyncio.wait_for(lane.acquire(), 2)  # a fresh, empty Redis admits at once
    finally:
        await lane.aclose()


# -- the worker: `python tests/test_redis.py CONFIG_JSON` --------------------------------------


async def test_cli_lane_with_a_redis_limiter_keeps_the_window_and_hides_the_password(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    limit, period = 5, 0.5
    fake_window = period - JITTER  # arrival stamps lag the sends (see _support.JITTER)
    keys = (KEYS["kie"],)
    async with FakeProvider(api_keys=keys, rate_limit=limit, rate_period=fake_window) as fake:
        text = config_text(fake.url, rate_limit=limit, rate_period=period, lanes=("kie",))
        text = text.replace("max_concurrency", f'limiter = "{redis_server.url}"\nmax_concurrency')
        (tmp_path / "persona.toml").write_text(text)
        write_jsonl(tmp_path / "in.jsonl", items(15, lanes=("kie",)))
        result = await run_cli(
            "batch",
            str(tmp_path / "in.jsonl"),
            "--config",
            str(tmp_path / "persona.toml"),
            "--out",
            str(tmp_path / "out.jsonl"),
            "--no-progress",
            env=cli_env(),
        )
        assert result.returncode == 0, result.stderr
        assert fake.window_violations == 0
        assert fake.request_count == 15
        arrivals = sorted(r.arrived for r in fake.requests)
        assert most_in_any_window(arrivals, fake_window) <= limit
        assert arrivals[-1] - arrivals[0] >= 2 * period  # three windows' worth: it waited
    records = read_journal(tmp_path / "out.jsonl")
    assert sum(r["status"] == "created" for r in records) == 15
    everything = result.stdout + result.stderr + (tmp_path / "out.jsonl").read_bytes()
    assert PASSWORD.encode() not in everything
    # The lane's budget lives in Redis, keyed by a fingerprint of the key, never the key.
    client = redis.asyncio.Redis.from_url(redis_server.url)
    try:
        names = [name.decode() for name in await client.keys("*")]
    finally:
        await client.aclose()
    assert any("window" in name for name in names)
    assert not any(KEYS["kie"] in name for name in names)


async def test_cli_refuses_a_limiter_that_is_not_a_redis_url(tmp_path: Path) -> None:
    text = config_text("http://127.0.0.1:9", lanes=("kie",))
    text = text.replace("max_concurrency", 'limiter = "http://127.0.0.1:6379"\nmax_concurrency')
    (tmp_path / "persona.toml").write_text(text)
    write_jsonl(tmp_path / "in.jsonl", items(1, lanes=("kie",)))
    result = await run_cli(
        "batch",
        str(tmp_path / "in.jsonl"),
        "--config",
        str(tmp_path / "persona.toml"),
        "--out",
        str(tmp_path / "out.jsonl"),
        env=cli_env(),
    )
    assert result.returncode == 2
    assert b"[providers.kie] limiter" in result.stderr


async def _work(config: dict[str, Any]) -> None:
    limiter = RedisLimiter(config["redis"])
    provider = CrunProvider(
        api_key=API_KEY,
        base_url=config["fake"],
        rate_limit=config["rate_limit"],
        rate_period=config["rate_period"],
        limiter=limiter,
    )
    async with _client(provider) as client:
        requests = _requests(config["count"], config["prefix"])
        async for outcome in client.create_many(requests):
            error = outcome.error
            record = {
                "audio_id": outcome.request.audio_id,
                "ok": outcome.ok,
                "attempts": outcome.attempts,
                "error": None if error is None else f"{type(error).__name__}: {error}",
                "t": time.monotonic(),  # CLOCK_MONOTONIC: comparable across processes
            }
            print(json.dumps(record), flush=True)


def _worker_main(argv: Sequence[str]) -> None:
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    config = json.loads(argv[0])
    print("READY", flush=True)
    if sys.stdin.readline().strip() == "GO":
        asyncio.run(_work(config))


if __name__ == "__main__":
    _worker_main(sys.argv[1:])
