"""examples/fastapi_app.py against the fake provider, served in process (httpx's ASGI transport,
the app's own lifespan): a persona, 503s with Retry-After, a refused request; and under a real
uvicorn process with a real HTTP client that hangs up (its timeout)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from _support import free_port

from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fastapi_app.py"
BODY = {
    "task_id": "task_123",
    "audio_id": "clip_abc",
    "name": "Neon Siren",
    "description": "Smoky late-night R&B vocalist",
}


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastapi_app", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def http(
    fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    # The example as written (CrunProvider() reads its key and base URL from the environment),
    # with a short handler deadline so that a maintenance answer comes back quickly.
    monkeypatch.setenv("CRUN_API_KEY", fake.api_key)
    monkeypatch.setenv("CRUN_BASE_URL", fake.url)
    app: Any = load_example().create_app(deadline=0.6)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            yield client


async def test_a_post_creates_a_persona_at_the_provider(
    http: httpx.AsyncClient, fake: FakeProvider
) -> None:
    response = await http.post("/personas", json=BODY)
    assert response.status_code == 201
    persona_id = response.json()["persona_id"]
    assert fake.personas[persona_id]["audio_id"] == "clip_abc"


async def test_maintenance_becomes_a_503_with_retry_after_by_the_handlers_deadline(
    http: httpx.AsyncClient, fake: FakeProvider
) -> None:
    fake.maintenance(60.0)
    started = time.monotonic()
    response = await http.post("/personas", json=BODY)
    assert time.monotonic() - started < 0.6 + 0.4
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "60"
    assert response.json()["error"] == "MaintenanceError"


async def test_a_429_becomes_a_503_carrying_the_providers_retry_after(
    http: httpx.AsyncClient, fake: FakeProvider
) -> None:
    fake.inject(Fault.http(429, retry_after=20))
    response = await http.post("/personas", json=BODY)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "20"
    assert response.json()["error"] == "RateLimitError"


async def test_a_request_breaking_a_rule_is_a_422_naming_the_field_and_nothing_is_sent(
    http: httpx.AsyncClient, fake: FakeProvider
) -> None:
    response = await http.post("/personas", json={**BODY, "name": "x" * 101})
    assert response.status_code == 422
    assert response.json()["field"] == "name"
    assert fake.request_count == 0


async def test_a_request_the_queue_could_not_send_in_time_is_a_503_with_retry_after(
    fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRUN_API_KEY", fake.api_key)
    monkeypatch.setenv("CRUN_BASE_URL", fake.url)
    module = load_example()
    app: Any = module.create_app(lambda: [module.CrunProvider(max_concurrency=1)], deadline=0.6)
    fake.inject(Fault.slow(1.5))  # holds the lane's one connection
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            first = asyncio.ensure_future(http.post("/personas", json=BODY))
            await asyncio.sleep(0.1)
            queued = await http.post("/personas", json={**BODY, "audio_id": "clip_other"})
            await first
    assert queued.status_code == 503
    assert queued.headers["Retry-After"] == "5"
    assert queued.json()["error"] == "ProviderTimeoutError"
    assert fake.request_count == 1  # the queued one was never sent


# -- under a real uvicorn, with a real client that hangs up ------------------------------------


@contextlib.contextmanager
def uvicorn_serving(fake: FakeProvider, log: Path) -> Iterator[str]:
    """``uvicorn examples.fastapi_app:app`` in its own process, as the README runs it."""
    port = free_port()
    env = {**os.environ, "CRUN_API_KEY": fake.api_key, "CRUN_BASE_URL": fake.url}
    command = [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--port", str(port)]
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, cwd=EXAMPLE.parent.parent, env=env, stderr=sink)
    try:
        deadline = time.monotonic() + 20
        while "Application startup complete" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)


async def test_under_uvicorn_a_hang_up_after_sending_goes_to_on_orphan_and_a_retry_gets_it(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.latency = 1.5
    log = tmp_path / "uvicorn.log"
    with uvicorn_serving(fake, log) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            with pytest.raises(httpx.ReadTimeout):  # the client gives up: it hangs up
                await http.post("/personas", json=BODY, timeout=0.5)
            await asyncio.sleep(1.5)  # the provider answers; nobody is there to read it
            [persona_id] = fake.personas
            assert f"orphan on crun: clip_abc -> {persona_id}" in log.read_text()
            retried = await http.post("/personas", json=BODY, timeout=10)
    assert retried.status_code == 201
    assert retried.json()["persona_id"] == persona_id  # the one made for nobody
    assert fake.request_count == 1


async def test_under_uvicorn_a_hang_up_while_queued_sends_nothing(
    fake: FakeProvider, tmp_path: Path
) -> None:
    fake.maintenance(60.0)  # the first request gets 455: the lane pauses, the call waits
    with uvicorn_serving(fake, tmp_path / "uvicorn.log") as url:
        async with httpx.AsyncClient(base_url=url) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.post("/personas", json=BODY, timeout=0.5)
            fake.end_maintenance()
            await asyncio.sleep(1.0)  # the lane's next probe would have sent it by now
    assert fake.request_count == 1  # the 455 only: the call left, its request never went
