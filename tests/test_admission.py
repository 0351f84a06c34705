"""Admission against real limiters: a real nginx ``limit_req`` in front of the fake, and overload.

What the provider sees is asserted: nginx's own log of every request it received (arrival,
status), the fake's record of what reached it. nginx takes one request per ``1/rate`` s and
refuses the rest of any burst, so a lane that sends its window's allowance at once gets one
request in. Figures over longer runs: ``benchmarks/bench_admission.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from typing import Any

import aiohttp
import pytest
from _support import FAST_RETRY, fast_retry, req

from persona_async import (
    CrunProvider,
    OverloadedError,
    PersonaClient,
    PersonaError,
    ServerError,
)
from persona_async.testing import FakeProvider, Fault
from persona_async.testing._fake import RateWindow
from persona_async.testing.nginx import NginxLimiter

# Rates measured in real time: these run one at a time on one worker (--dist loadgroup), so
# that they do not compete with each other for the CPU.
pytestmark = [pytest.mark.anyio, pytest.mark.xdist_group("real_time_rates")]

RATE = 10  # nginx's rate=10r/s: one request per 100 ms


def crun_via(url: str, fake: FakeProvider, **kw: Any) -> CrunProvider:
    """A crun lane sending to ``url`` (nginx in front of ``fake``, or ``fake`` itself) with
    ``fake``'s key, eight at a time unless told."""
    return CrunProvider(api_key=fake.api_key, base_url=url, **{"max_concurrency": 8, **kw})


async def run(provider: CrunProvider, n: int) -> PersonaClient:
    async with PersonaClient([provider], retry=FAST_RETRY) as client:
        outcomes = [o async for o in client.create_many(req(i) for i in range(n))]
    assert all(o.ok for o in outcomes), [o.error for o in outcomes if not o.ok][:3]
    return client


def share(accepted: list[float], since: float) -> float:
    """Accepted per second from ``since`` to the last acceptance, over nginx's rate."""
    steady = [t for t in accepted if t >= since]
    return (len(steady) - 1) / (steady[-1] - steady[0]) / RATE


@pytest.mark.parametrize("status", [429, None], ids=["limit_req_status-429", "default-503"])
async def test_a_lane_configured_at_nginxs_rate_paces_and_uses_nearly_all_of_it(
    fake: FakeProvider, status: int | None
) -> None:
    async with NginxLimiter(fake.url, rate=RATE, status=status) as nginx:
        client = await run(crun_via(nginx.url, fake, rate_limit=RATE, rate_period=1.0), 40)
    log = nginx.log()
    accepted = [t for t, code in log if code == 200]
    refused = [t for t, code in log if code != 200]
    assert {code for _, code in log} <= {200, status or 503}
    assert sum(fake.creations.values()) == 40  # every item, once: a 503 is resent like a 429
    # The opening burst (8 workers) gets one request in; after it, the lane paces, and 40 take
    # about 4 s. Before pacing it learned "1 per second" (10% of it). A busy machine delays
    # some sends more than others, so paced requests can still arrive too close together: each
    # such refusal widens the pace (6%, 12%, 24%) and keeps the rate, so there are few of them.
    at = [round(t - log[0][0], 3) for t in refused]
    assert len([t for t in at if t < 0.5]) <= 8, at
    assert len([t for t in at if t >= 0.5]) <= 3, at
    # (On a quiet machine 95-99%: benchmarks/bench_admission.py. The bound leaves room for a
    # machine with both cores busy, whose sends lag unevenly.)
    assert share(accepted, accepted[0] + 1.0) >= 0.75
    stats = client.stats()["crun"]
    assert stats.failed == {}
    assert stats.limit == RATE  # the rate it was told stays; only the bursts stopped


async def test_a_provider_that_takes_bursts_still_gets_them_at_once(fake: FakeProvider) -> None:
    async with NginxLimiter(fake.url, rate=RATE, burst=RATE - 1, nodelay=True) as nginx:
        provider = crun_via(nginx.url, fake, rate_limit=RATE, rate_period=1.0, max_concurrency=10)
        async with PersonaClient([provider], retry=FAST_RETRY) as client:
            began = time.monotonic()
            await asyncio.gather(*(client.create_persona(req(i)) for i in range(10)))
            took = time.monotonic() - began
    arrivals = [t for t, _ in nginx.log()]
    assert [code for _, code in nginx.log()] == [200] * 10
    assert max(arrivals) - min(arrivals) < 0.05  # all ten left at once
    assert took < 1.0


async def test_a_lane_with_no_limit_and_no_window_measures_nginxs(fake: FakeProvider) -> None:
    async with NginxLimiter(fake.url, rate=RATE, status=429) as nginx:
        client = await run(crun_via(nginx.url, fake, rate_limit=None), 60)
    log = nginx.log()
    accepted = [t for t, code in log if code == 200]
    refused = [t for t, code in log if code != 200]
    stats = client.stats()["crun"]
    assert stats.limit is not None
    assert stats.limit_period < 5.0
    # The opening burst, the probes that measure the window (about log2(0.1 / 0.05) + 1) and a
    # failed climb or two; then steady pacing near nginx's rate (it was 10% assuming 10 s).
    assert len(refused) <= 14, [round(t - log[0][0], 2) for t in refused]
    assert share(accepted, accepted[0] + 2.0) >= 0.65
    if stats.learned_limit is not None:  # advice is never above what nginx allows
        assert stats.learned_limit / stats.learned_period <= RATE


async def test_a_request_that_gives_up_waiting_for_a_start_leaves_it_to_the_next() -> None:
    async with FakeProvider() as fake:
        provider = CrunProvider(
            api_key=fake.api_key, base_url=fake.url, rate_limit=1, rate_period=1.0,
            max_concurrency=1,
        )  # fmt: skip
        async with PersonaClient([provider], retry=FAST_RETRY) as client:
            await client.create_persona(req(0))  # the window is full until about t=1.02
            began = time.monotonic()
            impatient = asyncio.ensure_future(client.create_persona(req(1), deadline=0.3))
            await asyncio.sleep(0.05)
            patient = asyncio.ensure_future(client.create_persona(req(2)))
            with pytest.raises(PersonaError):
                await impatient  # its deadline passed while it waited for the window
            await patient
            waited = time.monotonic() - began
    # The start the impatient one waited for went to the next request: one window, not two.
    assert [(r.json or {})["task_id"] for r in fake.requests] == ["task-0", "task-2"]
    assert waited < 1.6, waited


async def test_an_overloaded_lane_sends_its_full_rate_and_answers_every_caller_in_time() -> None:
    limit, period, deadline = 10, 0.5, 0.5
    async with FakeProvider() as fake:
        provider = CrunProvider(
            api_key=fake.api_key, base_url=fake.url, rate_limit=limit, rate_period=period,
            max_concurrency=8,
        )  # fmt: skip
        late: list[float] = []
        async with PersonaClient([provider], retry=FAST_RETRY) as client:
            loop = asyncio.get_running_loop()

            async def caller(i: int) -> None:
                began = loop.time()
                with contextlib.suppress(PersonaError):
                    await client.create_persona(req(i), deadline=deadline)
                late.append(loop.time() - began - deadline)

            began = loop.time()
            tasks = []
            for i in range(120):  # 40 a second for 3 s: twice the lane's rate
                tasks.append(asyncio.ensure_future(caller(i)))
                await asyncio.sleep(began + (i + 1) / 40 - loop.time())
            await asyncio.gather(*tasks)
    arrivals = [r.arrived for r in fake.requests]
    first = arrivals[0]
    windows = [
        sum(1 for t in arrivals if first + w * period <= t < first + (w + 1) * period)
        for w in range(1, 5)
    ]
    # Every window of the lane's period used (it lost one start per worker a window before).
    assert min(windows) >= 0.8 * limit, windows
    assert max(late) < 0.25, max(late)  # every caller answered by its deadline (and a tick)


async def test_a_provider_answering_only_503_fails_the_call_as_a_server_error(
    fake: FakeProvider,
) -> None:
    fake.inject(Fault.http(503), times=1000)
    provider = crun_via(fake.url, fake, rate_limit=None, rate_period=1.0)
    async with PersonaClient([provider], retry=fast_retry(max_retries=2)) as client:
        began = time.monotonic()
        with pytest.raises(OverloadedError) as caught:
            await client.create_persona(req(0), deadline=5.0)
        took = time.monotonic() - began
    assert isinstance(caught.value, ServerError)  # down, not a limiter: retries counted
    assert caught.value.attempts == 3
    assert took < 5.0


async def test_a_gateway_page_that_says_when_to_come_back_is_resent_after_it(
    fake: FakeProvider,
) -> None:
    fake.inject(Fault.html(502, retry_after=0.3))
    provider = crun_via(fake.url, fake, rate_limit=None, rate_period=1.0)
    async with PersonaClient([provider], retry=fast_retry(max_retries=0)) as client:
        await client.create_persona(req(0))  # resent although max_retries=0: not processed
    first, second = fake.requests[0].arrived, fake.requests[1].arrived
    assert second - first >= 0.3
    assert sum(fake.creations.values()) == 1


async def test_nginx_and_the_fakes_leaky_shape_refuse_the_same_requests(
    fake: FakeProvider,
) -> None:
    """The fake's ``leaky`` shape is checked against the real thing: arrivals 60-140 ms apart
    (some too early for 10r/s, some not) get the same verdicts from both."""
    body = {"task_id": "t", "suno_id": "c", "name": "n", "description": "d"}
    async with NginxLimiter(fake.url, rate=RATE) as nginx, aiohttp.ClientSession() as session:
        url = nginx.url + "/api/v1/client/job/suno-persona-generate"
        for gap in itertools.islice(itertools.cycle([0.06, 0.14, 0.09, 0.12]), 12):
            async with session.post(url, json=body, headers={"x-api-key": fake.api_key}):
                pass
            await asyncio.sleep(gap)
    log = nginx.log()
    model = RateWindow("leaky", RATE, 1.0)
    real, modelled = [code == 200 for _, code in log], [model.admit(t) for t, _ in log]
    assert real == modelled
    assert False in real
    assert True in real
