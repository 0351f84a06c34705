"""The fake provider itself, driven with raw aiohttp over loopback."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

import persona_async.testing
from persona_async.testing import FakeProvider, Fault, RequestRecord

CRUN = "/api/v1/client/job/suno-persona-generate"
FAMILY = "/api/v1/generate/generate-persona"
KEY = "test-key"
# Where persona_async was imported from, so the subprocess imports the same code.
SOURCE_ROOT = str(Path(persona_async.testing.__file__).resolve().parents[2])

# Marked here, not only by conftest's collection hook: anyio adds its backend fixture at
# collection time, and a mark added later makes it rebuild parametrized tests without their
# parameters.
pytestmark = pytest.mark.anyio


class Reply(msgspec.Struct, frozen=True):
    status: int
    headers: Mapping[str, str]
    content_type: str
    raw: bytes

    def json(self) -> Any:
        return msgspec.json.decode(self.raw)


class Client:
    """Posts well-formed creates the way each contract wants them."""

    def __init__(self, session: aiohttp.ClientSession, fake: FakeProvider) -> None:
        self.session = session
        self.fake = fake

    async def request(
        self, method: str, path: str, *, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> Reply:
        async with self.session.request(
            method, self.fake.url + path, json=body, headers=headers, allow_redirects=False
        ) as response:
            return Reply(
                response.status,
                dict(response.headers),
                response.content_type,
                await response.read(),
            )

    async def crun(self, audio: str = "clip-1", *, key: str | None = KEY, **fields: Any) -> Reply:
        body = {"task_id": "task-1", "suno_id": audio, "name": "Neon", "description": "Smoky"}
        body.update(fields)
        headers = {} if key is None else {"x-api-key": key}
        return await self.request("POST", CRUN, body=body, headers=headers)

    async def family(self, audio: str = "clip-1", *, key: str | None = KEY, **fields: Any) -> Reply:
        body = {"taskId": "task-1", "audioId": audio, "name": "Neon", "description": "Smoky"}
        body.update(fields)
        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        return await self.request("POST", FAMILY, body=body, headers=headers)

    async def create(self, kind: str, audio: str = "clip-1", **fields: Any) -> Reply:
        return await (self.crun if kind == "crun" else self.family)(audio, **fields)


@asynccontextmanager
async def serve(**options: Any) -> AsyncIterator[tuple[FakeProvider, Client]]:
    async with FakeProvider(**options) as fake, aiohttp.ClientSession() as session:
        yield fake, Client(session, fake)


both_kinds = pytest.mark.parametrize("kind", ["crun", "family"])


# -- the two contracts ------------------------------------------------------------------------


async def test_crun_create_returns_persona_id_and_is_recorded_with_key_redacted() -> None:
    async with serve() as (fake, client):
        reply = await client.crun("clip-9", vocal_start=12.5, vocal_end=64, style="R&B")

        assert reply.status == 200
        body = reply.json()
        assert body["code"] == 200
        assert body["message"] == "success"
        persona_id = body["data"]["persona_id"]
        assert fake.personas[persona_id] == {
            "kind": "crun",
            "task_id": "task-1",
            "audio_id": "clip-9",
            "name": "Neon",
            "description": "Smoky",
            "vocal_start": 12.5,
            "vocal_end": 64,
            "style": "R&B",
        }
        [record] = fake.requests
        assert isinstance(record, RequestRecord)
        assert (record.path, record.kind, record.method) == (CRUN, "crun", "POST")
        assert record.api_key == KEY
        assert record.headers["x-api-key"] == "***"
        assert KEY not in repr(record)
        assert record.json is not None
        assert record.json["suno_id"] == "clip-9"
        assert (record.response_code, record.http_status) == (200, 200)
        assert fake.request_count == 1


async def test_family_create_echoes_name_and_description() -> None:
    async with serve() as (fake, client):
        body = (await client.family()).json()

        assert body["code"] == 200
        assert body["msg"] == "success"
        assert body["data"]["name"] == "Neon"
        assert body["data"]["description"] == "Smoky"
        assert body["data"]["personaId"] in fake.personas
        assert fake.requests[0].headers["Authorization"] == "***"
        assert fake.requests[0].api_key == KEY


async def test_family_second_create_for_same_audio_is_409_and_creates_nothing() -> None:
    async with serve() as (fake, client):
        first = (await client.family("clip-1")).json()
        second = (await client.family("clip-1", name="Other")).json()

        assert first["code"] == 200
        assert second == {"code": 409, "msg": "Persona already exists for this music", "data": None}
        assert fake.creations[("family", "clip-1")] == 1
        assert len(fake.personas) == 1


async def test_crun_has_no_duplicate_detection_and_every_creation_counts() -> None:
    async with serve() as (fake, client):
        ids = {(await client.crun("clip-1")).json()["data"]["persona_id"] for _ in range(3)}

        assert len(ids) == 3
        assert fake.creations[("crun", "clip-1")] == 3
        assert fake.stats()["duplicate_creations"] == 2


async def test_persona_ids_are_unique_across_contracts() -> None:
    async with serve() as (_fake, client):
        crun_id = (await client.crun("a")).json()["data"]["persona_id"]
        family_id = (await client.family("a")).json()["data"]["personaId"]

        assert crun_id != family_id


@pytest.mark.parametrize(
    ("kind", "headers"),
    [
        ("crun", {}),
        ("crun", {"x-api-key": "wrong"}),
        ("crun", {"Authorization": f"Bearer {KEY}"}),
        ("family", {}),
        ("family", {"Authorization": "Bearer wrong"}),
        ("family", {"x-api-key": KEY}),
    ],
)
async def test_missing_wrong_or_misplaced_key_is_envelope_401(
    kind: str, headers: dict[str, str]
) -> None:
    path = CRUN if kind == "crun" else FAMILY
    body = {"task_id": "t", "suno_id": "a", "taskId": "t", "audioId": "a"}
    body |= {"name": "n", "description": "d"}
    async with serve() as (fake, client):
        reply = await client.request("POST", path, body=body, headers=headers)

        assert reply.status == 200
        assert reply.json()["code"] == 401
        assert not fake.personas
        if headers.get("x-api-key") == KEY or headers.get("Authorization") == f"Bearer {KEY}":
            assert fake.requests[0].api_key is None  # the key went to the wrong header


@pytest.mark.parametrize(
    ("kind", "fields", "named"),
    [
        ("crun", {"task_id": None}, "task_id"),
        ("crun", {"suno_id": ""}, "suno_id"),
        ("crun", {"name": 7}, "name"),
        ("crun", {"name": "x" * 101}, "name"),
        ("crun", {"description": "x" * 1001}, "description"),
        ("crun", {"vocal_start": -1}, "vocal_start"),
        ("crun", {"vocal_end": "10"}, "vocal_end"),
        ("crun", {"style": ["pop"]}, "style"),
        ("family", {"taskId": None}, "taskId"),
        ("family", {"audioId": ""}, "audioId"),
        ("family", {"description": None}, "description"),
        ("family", {"vocalStart": True}, "vocalStart"),
    ],
)
async def test_invalid_field_is_422_naming_the_field(
    kind: str, fields: dict[str, Any], named: str
) -> None:
    async with serve() as (fake, client):
        body = (await client.create(kind, **fields)).json()

        assert body["code"] == 422
        assert named in body["message" if kind == "crun" else "msg"]
        assert not fake.creations


async def test_body_that_is_not_a_json_object_is_422() -> None:
    async with serve() as (_fake, client):
        reply = await client.request(
            "POST", FAMILY, body=[1], headers={"Authorization": "Bearer " + KEY}
        )

        assert reply.json()["code"] == 422


@pytest.mark.parametrize(
    ("kind", "message"),
    [("crun", "task_id not found"), ("family", "record status is not success")],
)
async def test_missing_task_is_422_with_the_providers_message(kind: str, message: str) -> None:
    async with serve() as (fake, client):
        fake.missing_tasks.add("task-1")
        body = (await client.create(kind)).json()

        assert body == {"code": 422, "message" if kind == "crun" else "msg": message, "data": None}
        assert not fake.creations


async def test_unknown_path_is_404_and_recorded_as_other() -> None:
    async with serve() as (fake, client):
        reply = await client.request("GET", CRUN)

        assert reply.status == 404
        assert fake.requests[0].kind == "other"


# -- rate window and maintenance ---------------------------------------------------------------


async def test_rate_window_rejects_excess_with_envelope_429_and_creates_nothing() -> None:
    async with serve(rate_limit=2, rate_period=60) as (fake, client):
        codes = [(await client.crun(f"clip-{i}")).json()["code"] for i in range(4)]

        assert codes == [200, 200, 429, 429]
        assert fake.window_violations == 2
        assert len(fake.personas) == 2
        assert fake.requests[2].http_status == 200


async def test_rate_limit_http_sends_real_429_with_retry_after() -> None:
    async with serve(rate_limit=1, rate_period=60, rate_limit_http=True, retry_after=1.5) as (
        _fake,
        client,
    ):
        assert "Retry-After" not in (await client.family("a")).headers
        reply = await client.family("b")

        assert reply.status == 429
        assert reply.json() == {"code": 429, "msg": "rate limited", "data": None}
        assert reply.headers["Retry-After"] == "1.5"


async def test_rate_window_is_per_key_and_slides() -> None:
    async with serve(api_keys=("k1", "k2"), rate_limit=1, rate_period=0.2) as (fake, client):
        assert (await client.crun("a", key="k1")).json()["code"] == 200
        assert (await client.crun("b", key="k2")).json()["code"] == 200
        assert (await client.crun("c", key="k1")).json()["code"] == 429
        await asyncio.sleep(0.25)
        assert (await client.crun("d", key="k1")).json()["code"] == 200
        assert fake.window_violations == 1


async def test_rate_limit_can_be_changed_at_runtime() -> None:
    async with serve() as (fake, client):
        fake.set_rate_limit(1, 60)
        assert (await client.crun("a")).json()["code"] == 200
        assert (await client.crun("b")).json()["code"] == 429
        fake.set_rate_limit(None)
        assert (await client.crun("c")).json()["code"] == 200


@both_kinds
async def test_maintenance_answers_455_until_ended(kind: str) -> None:
    async with serve() as (fake, client):
        fake.maintenance(60)
        assert (await client.create(kind)).json()["code"] == 455
        fake.end_maintenance()
        assert (await client.create(kind)).json()["code"] == 200


async def test_maintenance_ends_by_itself() -> None:
    async with serve() as (fake, client):
        fake.maintenance(0.1)
        assert (await client.crun()).json()["code"] == 455
        await asyncio.sleep(0.15)
        assert (await client.crun()).json()["code"] == 200


# -- faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status", "content_type", "code", "headers"),
    [
        (Fault.envelope(402, "insufficient credits"), 200, "application/json", 402, {}),
        (Fault.envelope(429, retry_after=2), 200, "application/json", 429, {"Retry-After": "2"}),
        (Fault.http(500), 500, "application/json", 500, {}),
        (Fault.http(503, code=455, message="maintenance"), 503, "application/json", 455, {}),
        (Fault.html(502), 502, "text/html", None, {}),
        (
            Fault.redirect("https://elsewhere.example/"),
            307,
            "application/json",
            None,
            {"Location": "https://elsewhere.example/"},
        ),
    ],
)
async def test_reply_faults_answer_as_asked_and_create_nothing(
    fault: Fault, status: int, content_type: str, code: int | None, headers: dict[str, str]
) -> None:
    async with serve() as (fake, client):
        fake.inject(fault)
        reply = await client.family()

        assert reply.status == status
        assert reply.content_type == content_type
        for name, value in headers.items():
            assert reply.headers[name] == value
        if code is not None:
            assert reply.json()["code"] == code
        assert fake.requests[0].response_code == (status if code is None else code)
        assert not fake.creations


async def test_html_fault_looks_like_an_nginx_error_page() -> None:
    async with serve() as (fake, client):
        fake.inject(Fault.html(503))
        reply = await client.crun()

        assert b"<h1>503 Service Unavailable</h1>" in reply.raw
        assert b"nginx" in reply.raw


@both_kinds
async def test_truncated_fault_is_json_cut_in_the_middle(kind: str) -> None:
    async with serve() as (fake, client):
        fake.inject(Fault.truncated())
        reply = await client.create(kind)

        assert (reply.status, reply.content_type) == (200, "application/json")
        assert reply.raw.startswith(b'{"code":200')
        with pytest.raises(msgspec.DecodeError):
            reply.json()
        assert not fake.creations


async def test_empty_and_raw_body_faults_send_exactly_that() -> None:
    huge = b'{"code":200,"data":[' + b"0," * 500_000 + b"0]}"
    async with serve() as (fake, client):
        fake.inject(Fault.empty())
        fake.inject(Fault.body(b'["wrong", "shape"]'))
        fake.inject(Fault.body(huge, status=201, content_type="text/plain"))

        empty = await client.crun()
        wrong = await client.crun()
        big = await client.crun()

        assert (empty.status, empty.raw) == (200, b"")
        assert wrong.json() == ["wrong", "shape"]
        assert (big.status, big.content_type, big.raw) == (201, "text/plain", huge)
        assert not fake.creations


@both_kinds
async def test_reset_before_drops_the_connection_and_creates_nothing(kind: str) -> None:
    async with serve() as (fake, client):
        fake.inject(Fault.reset_before())

        with pytest.raises(aiohttp.ClientConnectionError):
            await client.create(kind)

        assert not fake.creations
        assert fake.requests[0].response_code is None
        assert fake.stats()["connection_resets"] == 1


async def test_reset_after_creates_then_drops_so_a_blind_family_retry_gets_409() -> None:
    async with serve() as (fake, client):
        fake.inject(Fault.reset_after())

        with pytest.raises(aiohttp.ClientConnectionError):
            await client.family("clip-1")
        retry = (await client.family("clip-1")).json()

        assert retry["code"] == 409
        assert fake.creations[("family", "clip-1")] == 1
        assert fake.requests[0].response_code is None


async def test_reset_after_on_crun_makes_a_duplicate_when_retried() -> None:
    async with serve() as (fake, client):
        fake.inject(Fault.reset_after())

        with pytest.raises(aiohttp.ClientConnectionError):
            await client.crun("clip-1")
        assert (await client.crun("clip-1")).json()["code"] == 200

        assert fake.creations[("crun", "clip-1")] == 2


async def test_slow_fault_delays_then_answers_normally() -> None:
    async with serve() as (fake, client):
        fake.inject(Fault.slow(0.2))
        started = time.monotonic()
        body = (await client.crun()).json()

        assert time.monotonic() - started >= 0.2
        assert body["code"] == 200
        assert len(fake.personas) == 1


async def test_a_fault_answered_later_comes_after_a_reply_to_a_request_sent_after_it() -> None:
    async with serve() as (fake, client):
        fake.inject(Fault.http(429, retry_after=2).later(0.3))
        answered: list[str] = []
        started = time.monotonic()

        async def send(audio: str) -> Reply:
            reply = await client.crun(audio)
            answered.append(audio)
            return reply

        late = asyncio.ensure_future(send("first"))
        while fake.request_count == 0:  # noqa: ASYNC110 - the fake has no event
            await asyncio.sleep(0.001)
        second = (await send("second")).json()
        first = await late
        elapsed = time.monotonic() - started

        assert answered == ["second", "first"]
        assert elapsed >= 0.3
        assert (first.status, first.json()["code"], first.headers["Retry-After"]) == (429, 429, "2")
        assert second["code"] == 200
        assert list(fake.creations) == [("crun", "second")]
    with pytest.raises(ValueError, match="seconds must be >= 0"):
        Fault.http(500).later(-0.1)


async def test_injected_faults_are_fifo_one_per_request_and_can_target_a_contract() -> None:
    async with serve() as (fake, client):
        fake.inject(Fault.envelope(500), path="family")
        fake.inject(Fault.envelope(402), times=2)

        crun_codes = [(await client.crun(f"c{i}")).json()["code"] for i in range(2)]
        family_codes = [(await client.family(f"f{i}")).json()["code"] for i in range(3)]

        # The family-only fault is passed by crun requests, which take the 402s first.
        assert crun_codes == [402, 402]
        assert family_codes == [500, 200, 200]
        assert fake.stats()["faults_pending"] == 0


async def test_random_faults_are_reproducible_with_a_seed() -> None:
    async def run() -> list[int | None]:
        async with serve(fault_rate=0.5, seed=7) as (fake, client):
            for i in range(30):
                with suppress(aiohttp.ClientConnectionError):
                    await client.crun(f"clip-{i}")
            return [record.response_code for record in fake.requests]

    first, second = await run(), await run()

    assert first == second
    assert set(first) >= {200}
    assert len(set(first)) > 1


async def test_random_faults_can_be_changed_at_runtime() -> None:
    async with serve(fault_rate=1.0, seed=1) as (fake, client):
        fake.random_faults(1.0, [Fault.envelope(451)])
        assert (await client.crun()).json()["code"] == 451
        fake.random_faults(0.0)
        assert (await client.crun()).json()["code"] == 200


# -- latency, concurrency, stats, lifecycle ----------------------------------------------------


async def test_latency_delays_every_reply_and_concurrency_is_measured() -> None:
    async with serve(latency=0.1) as (fake, client):
        started = time.monotonic()
        replies = await asyncio.gather(*(client.crun(f"clip-{i}") for i in range(5)))

        assert time.monotonic() - started >= 0.1
        assert all(reply.json()["code"] == 200 for reply in replies)
        assert fake.max_concurrent == 5
        assert fake.in_flight == 0


async def test_stats_endpoint_serves_stats_and_reset_clears_observations() -> None:
    async with serve(rate_limit=1, rate_period=60) as (fake, client):
        await client.crun("a")
        await client.crun("b")
        await client.family("c")
        fake.inject(Fault.reset_before())
        with pytest.raises(aiohttp.ClientConnectionError):
            await client.family("d")

        served = (await client.request("GET", "/_fake/stats")).json()

        assert served == fake.stats()
        assert served["request_count"] == 4
        assert served["requests_by_kind"] == {"crun": 2, "family": 2, "other": 0}
        assert served["response_codes"] == {"200": 1, "429": 2}
        assert served["connection_resets"] == 1
        assert served["window_violations"] == 2
        assert served["creations"] == served["personas"] == 1

        await client.request("POST", "/_fake/reset")

        assert fake.request_count == 0
        assert not fake.requests
        assert not fake.personas
        assert (await client.crun("a")).json()["code"] == 200  # the window was cleared too


async def test_start_and_close_without_context_manager() -> None:
    fake = FakeProvider(api_keys=["k"])
    with pytest.raises(RuntimeError):
        fake.url  # noqa: B018
    await fake.start()
    try:
        assert fake.url.startswith("http://127.0.0.1:")
        assert fake.api_key == "k"
        with pytest.raises(RuntimeError):
            await fake.start()
    finally:
        await fake.close()
    await fake.close()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is not catchable on Windows")
async def test_module_runs_in_a_subprocess_prints_ready_and_stops_on_sigterm() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [SOURCE_ROOT, env.get("PYTHONPATH")]))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "persona_async.testing",
        "--api-key",
        "k1",
        "k2",
        "--rate-limit",
        "1",
        "--rate-period",
        "60",
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 10)
        prefix, url = line.decode().split()
        assert prefix == "READY"
        assert url.startswith("http://127.0.0.1:")

        async with aiohttp.ClientSession() as session:
            body = {"task_id": "t", "suno_id": "a", "name": "n", "description": "d"}
            for _ in range(2):
                async with session.post(url + CRUN, json=body, headers={"x-api-key": "k2"}):
                    pass
            async with session.get(url + "/_fake/stats") as response:
                stats = await response.json()

        assert stats["response_codes"] == {"200": 1, "429": 1}
        assert stats["window_violations"] == 1
    finally:
        if process.returncode is None:
            process.terminate()
        rest, _ = await asyncio.wait_for(process.communicate(), 10)

    assert process.returncode == 0
    assert rest == b""  # exactly one line on stdout
