"""A lane's resends: the backoff between them (doubling, full jitter, no slot or CPU held while
waiting), the retry budget per rate period, and what a lost request says.

Real :class:`FakeProvider` on loopback, backoffs of centiseconds. What one call resends and when a
create that may have succeeded is resent: test_retries.py; the decision table itself:
test_retry_decision.py; the policy's fields: test_retry_policy.py. Neighbours:
test_lane_window.py, test_lane_maintenance.py, test_deadline.py (retries bounded by the deadline).
"""

from __future__ import annotations

import random
import time

import anyio
import pytest
from _support import FAST_RETRY, collect, crun, fast_retry, kie, req

from persona_async import (
    OutcomeUnknownError,
    PersonaClient,
    ServerError,
)
from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio


async def test_a_retry_waiting_out_its_backoff_holds_no_concurrency_slot() -> None:
    async with FakeProvider(latency=0.03) as fake:
        fake.inject(Fault.http(500), times=2)
        provider = crun(fake, max_concurrency=2)
        async with PersonaClient([provider], backoff_initial=0.3, backoff_max=0.3) as client:
            outcomes = await collect(client, [req(i) for i in range(10)])
            stats = client.stats()["crun"]

        assert all(o.ok for o in outcomes)
        assert fake.max_concurrent == 2
        assert stats.retries == 2
        failed = [r for r in fake.requests if r.response_code == 500]
        assert len(failed) == 2
        for attempt in failed:
            [retry] = [r for r in fake.requests if r.json == attempt.json and r is not attempt]
            # While this request waited out its backoff (up to 0.3 s, jittered), the two
            # slots carried other requests: the wait held neither a slot nor the queue.
            overtaking = [
                r
                for r in fake.requests
                if attempt.arrived < r.arrived < retry.arrived and r.json != attempt.json
            ]
            assert overtaking


async def test_the_retry_budget_caps_resends_during_an_outage() -> None:
    async with FakeProvider() as fake:
        fake.inject(Fault.http(500), times=1000)
        # The budget is per rate period: 3 resends per 10 s for this lane.
        provider = crun(fake, rate_limit=1000, rate_period=10.0, max_concurrency=4)
        async with PersonaClient(
            [provider], retry=fast_retry(max_retries=5, retry_budget=3)
        ) as client:
            outcomes = await collect(client, [req(i) for i in range(20)])
            stats = client.stats()["crun"]

        assert [type(o.error) for o in outcomes] == [ServerError] * 20
        assert stats.retries == 3
        assert fake.request_count == 20 + 3
        assert stats.failed == {"ServerError": 20}


async def test_the_retry_budget_refills_every_rate_period() -> None:
    # 4 resends per 0.5 s. Two bursts of four failures, a second apart: the first burst spends
    # the whole budget, and by the second it has refilled, so every request is resent and
    # succeeds. (The same budget over a 5 s period would have refused the second burst's
    # resends.) Waiting only lets the bucket drain further, so a slow machine cannot fail this.
    async with FakeProvider() as fake:
        provider = crun(fake, rate_limit=1000, rate_period=0.5, max_concurrency=4)
        async with PersonaClient(
            [provider], retry=fast_retry(max_retries=5, retry_budget=4)
        ) as client:
            fake.inject(Fault.http(500), times=4)
            first = await collect(client, [req(i) for i in range(4)])
            await anyio.sleep(1.0)
            fake.inject(Fault.http(500), times=4)
            second = await collect(client, [req(i) for i in range(4, 8)])
            stats = client.stats()["crun"]

        assert [o.error for o in first + second] == [None] * 8
        assert stats.retries == 8
        assert fake.request_count == 16


async def test_a_retry_waiting_out_its_backoff_costs_no_cpu(
    fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(random, "uniform", lambda low, high: high)  # the backoff at its ceiling
    fake.inject(Fault.http(500))
    async with PersonaClient([crun(fake)], backoff_initial=1.0, backoff_max=1.0) as client:
        cpu = time.process_time()
        with anyio.fail_after(5):
            await client.create_persona(req(0))
        cpu = time.process_time() - cpu
    assert fake.request_count == 2
    assert cpu < 0.5, f"{cpu:.2f} s of CPU for a 1 s wait: the lane spun instead of sleeping"


async def test_a_crun_request_lost_after_it_was_sent_says_where_to_look_and_how_to_resend(
    fake: FakeProvider,
) -> None:
    fake.inject(Fault.reset_after())
    async with PersonaClient([crun(fake, name="main")], retry=FAST_RETRY) as client:
        with pytest.raises(OutcomeUnknownError) as info:
            await client.create_persona(req(0))
    err = info.value
    assert (err.provider, err.audio_id, err.attempts) == ("main", "clip-0", 1)
    assert err.message.endswith(
        "; a persona may or may not exist. crun documents no duplicate detection, so it was not "
        "resent: check the provider's dashboard for this audio id, then resend it or set "
        "retry_ambiguous=True"
    ), err.message
    assert fake.request_count == 1


@pytest.mark.parametrize(
    "fault",
    [pytest.param(Fault.reset_before(), id="lost"), pytest.param(Fault.http(500), id="500")],
)
async def test_each_resend_waits_twice_as_long_as_the_one_before(
    fake: FakeProvider, monkeypatch: pytest.MonkeyPatch, fault: Fault
) -> None:
    # Full jitter draws each wait from [0, ceiling]; pinned at its ceiling, the waits are the
    # schedule itself: backoff_initial, then doubling (0.1 s, 0.2 s), whatever the failure.
    monkeypatch.setattr(random, "uniform", lambda low, high: high)
    fake.inject(fault, times=2)
    async with PersonaClient([kie(fake)], backoff_initial=0.1, backoff_max=10.0) as client:
        with anyio.fail_after(5):
            await client.create_persona(req(0))
    first, second, third = (r.arrived for r in fake.requests)
    assert 0.1 <= second - first < 0.2
    assert 0.2 <= third - second < 0.4
