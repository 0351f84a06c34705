"""A lane stopped by a 401 or 402: it fails its queue at once, sends nothing more (a later 429 does
not start it again), and the other lanes go on.

Real :class:`FakeProvider` and a scripted loopback server. What is never sent, seen by the
provider: test_sending.py; the code-to-exception table: test_errors.py. Neighbours:
test_lane_window.py, test_lane_maintenance.py.
"""

from __future__ import annotations

import logging
import time

import anyio
import pytest
from _support import FAST_RETRY, Scripted, collect, crun, req

from persona_async import (
    AuthenticationError,
    CrunProvider,
    InsufficientCreditsError,
    LaneState,
    PersonaClient,
    PersonaError,
)
from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("status", "error"), [(401, AuthenticationError), (402, InsufficientCreditsError)]
)
async def test_401_or_402_stops_its_lane_and_fails_its_queue_while_others_go_on(
    status: int, error: type[PersonaError]
) -> None:
    async with FakeProvider() as bad, FakeProvider(latency=0.005) as good:
        if status == 401:
            broken = crun(bad, name="broken", api_key="revoked-key", max_concurrency=2)
        else:
            bad.inject(Fault.envelope(402), times=1000)
            broken = crun(bad, name="broken", max_concurrency=2)
        client = PersonaClient(
            [broken, crun(good, name="healthy", max_concurrency=4)], retry=FAST_RETRY
        )
        async with client:
            requests = [req(i, "broken" if i % 2 else "healthy") for i in range(60)]
            started = time.monotonic()
            outcomes = await collect(client, requests)
            sent_by_then = bad.request_count
            later = None
            try:
                await client.create_persona(req(1000, "broken"))
            except PersonaError as exc:
                later = exc
            stats = client.stats()

        by_lane = {"broken": [], "healthy": []}  # type: dict[str, list[Outcome]]
        for outcome in outcomes:
            assert outcome.request.provider is not None
            by_lane[outcome.request.provider].append(outcome)
        assert all(o.ok for o in by_lane["healthy"])
        assert len(by_lane["healthy"]) == 30
        assert [type(o.error) for o in by_lane["broken"]] == [error] * 30
        assert bad.request_count <= 2  # what was in flight when the first answer came back
        assert sum(o.attempts for o in by_lane["broken"]) == bad.request_count
        assert isinstance(later, error)
        assert later.attempts == 0
        assert bad.request_count == sent_by_then  # the stopped lane sent nothing more
        assert stats["broken"].state is LaneState.STOPPED
        assert stats["broken"].failed == {error.__name__: 31}
        assert stats["healthy"].state is LaneState.RUNNING
        assert stats["healthy"].succeeded == 30
        assert time.monotonic() - started < 2.0


async def test_a_retry_waiting_out_a_429_when_a_401_stops_the_lane_fails_at_once_unsent(
    fake: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    # Two requests go out together: one is told to come back in 5 s, the other that the key is
    # revoked. The first is waiting for its retry when the lane stops: it fails then, with
    # the 401, and is never resent.
    caplog.set_level(logging.WARNING, logger="persona_async")
    fake.inject(Fault.http(429, retry_after=5.0))
    fake.inject(Fault.envelope(401))
    async with PersonaClient([crun(fake, max_concurrency=2)], retry=FAST_RETRY) as client:
        started = time.monotonic()
        with anyio.fail_after(5):
            outcomes = await collect(client, [req(0), req(1)])
        elapsed = time.monotonic() - started
    assert [type(o.error) for o in outcomes] == [AuthenticationError] * 2
    assert sorted(o.request.audio_id for o in outcomes) == ["clip-0", "clip-1"]
    assert fake.request_count == 2
    assert elapsed < 2.0  # not after the 429's 5 s
    # The log says why nothing more is sent, naming the error, never the key.
    stopped = [r.getMessage() for r in caplog.records if "stopped" in r.getMessage()]
    assert stopped == ["lane crun stopped: AuthenticationError, nothing more is sent"]
    assert fake.api_key not in caplog.text


async def test_a_429_answered_after_a_401_stopped_the_lane_does_not_start_it_again() -> None:
    # The 401 comes back first; the 429 to the request sent with it, 0.05 s later. The lane
    # stays stopped: that request fails with the 401 at once, and nothing more is sent.
    async with Scripted((0.0, 401, None), (0.05, 429, 0.3)) as server:
        lane = CrunProvider(api_key="k", base_url=server.url, rate_limit=None, max_concurrency=2)
        async with PersonaClient([lane], retry=FAST_RETRY) as client:
            with anyio.fail_after(5):
                outcomes = await collect(client, [req(0), req(1)])
            await anyio.sleep(0.4)  # past the 429's Retry-After
            state = client.stats()["crun"].state
    assert [type(o.error) for o in outcomes] == [AuthenticationError] * 2
    assert len(server.arrived) == 2
    assert state is LaneState.STOPPED
