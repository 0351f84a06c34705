"""crun against the fake and a loopback server speaking its TaskInfo: 403 "API key disabled"
and an upper-case ``SUCCESS``, both from third-party clients: crun's pages list neither."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from _support import make
from aiohttp import web
from aiohttp.test_utils import TestServer

from persona_async import AuthenticationError, CrunProvider, PersonaClient, PersonaRequest
from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio

REQ = PersonaRequest("task_1", "clip_1", "n", "d")


async def test_a_403_stops_the_lane_like_a_401(fake: FakeProvider) -> None:
    fake.inject(Fault.envelope(403, "API key disabled"), path="crun")
    async with PersonaClient([make(CrunProvider, fake)], backoff_initial=0.01) as client:
        with pytest.raises(AuthenticationError):
            await client.create_persona(REQ)
        with pytest.raises(AuthenticationError):  # the lane is stopped: not sent
            await client.create_persona(PersonaRequest("task_2", "clip_2", "n", "d"))
    assert sum(1 for r in fake.requests if r.kind == "crun") == 1


@pytest.fixture
async def crun_upper() -> AsyncIterator[TestServer]:
    """crun's TaskInfo answering ``SUCCESS`` in capitals, and its persona route."""

    async def task_info(request: web.Request) -> web.Response:
        task = {
            "task_id": request.query["task_id"],
            "status": "SUCCESS",
            "result": {"suno_data": [{"suno_id": "clip_1", "duration": 120.0}]},
        }
        return web.json_response({"code": 200, "message": "success", "data": task})

    async def persona(request: web.Request) -> web.Response:
        return web.json_response({"code": 200, "message": "success", "data": {"persona_id": "p1"}})

    app = web.Application()
    app.router.add_get("/api/v1/client/job/TaskInfo", task_info)
    app.router.add_post("/api/v1/client/job/suno-persona-generate", persona)
    async with TestServer(app, host="127.0.0.1") as server:
        yield server


async def test_an_upper_case_success_on_task_info_lets_the_create_go(
    crun_upper: TestServer,
) -> None:
    url = str(crun_upper.make_url("")).rstrip("/")
    provider = CrunProvider(api_key="k", base_url=url, rate_limit=None, wait_for_source=1.0)
    async with PersonaClient([provider], max_retries=0) as client:
        persona = await client.create_persona(REQ)
    assert persona.persona_id == "p1"
