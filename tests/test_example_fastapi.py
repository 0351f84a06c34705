"""examples/fastapi_app.py, served in process (httpx's ASGI transport, the app's own lifespan)
against the fake provider: a persona, a 503 with Retry-After, a refused request."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

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
