"""NginxLimiter: a real nginx ``limit_req`` in front of the fake, held to nginx's documented rules.

nginx admits a request when at least ``1/rate`` s passed since the last one it admitted (on its
millisecond clock), plus ``burst`` more: queued and spaced out at the rate, or with ``nodelay``
admitted at once. Everything past that is rejected, with 503 unless ``limit_req_status`` says.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import urllib.error
import urllib.request
from collections import Counter

import aiohttp
import pytest
from _support import free_port

import persona_async.testing.nginx as nginx_module
from persona_async.testing import FakeProvider
from persona_async.testing.nginx import NginxLimiter

CRUN = "/api/v1/client/job/suno-persona-generate"
BODY = {"task_id": "task-1", "suno_id": "clip-1", "name": "Neon", "description": "Smoky"}

# Rates measured in real time: these run one at a time on one worker (--dist loadgroup), so
# that they do not compete with each other for the CPU.
pytestmark = [pytest.mark.anyio, pytest.mark.xdist_group("real_time_rates")]


async def burst(url: str, fake: FakeProvider, n: int) -> list[tuple[int, float]]:
    """``n`` concurrent crun creates at ``url``: (status, seconds until answered) of each."""
    async with aiohttp.ClientSession() as session:

        async def one() -> tuple[int, float]:
            start = time.monotonic()
            headers = {"x-api-key": fake.api_key}
            async with session.post(url + CRUN, json=BODY, headers=headers) as response:
                await response.read()
                return response.status, time.monotonic() - start

        return await asyncio.gather(*(one() for _ in range(n)))


def statuses(replies: list[tuple[int, float]]) -> Counter[int]:
    return Counter(status for status, _ in replies)


def assert_one_instant(log: list[tuple[float, int]]) -> None:
    """The requests arrived inside one of nginx's 100 ms intervals, as the test means them to."""
    arrivals = [arrival for arrival, _ in log]
    assert max(arrivals) - min(arrivals) < 0.09, log


async def test_a_burst_gets_one_through_and_503_for_the_rest(fake: FakeProvider) -> None:
    async with NginxLimiter(fake.url, rate=10) as nginx:
        replies = await burst(nginx.url, fake, 8)
    assert statuses(replies) == {200: 1, 503: 7}
    log = nginx.log()  # complete once nginx stopped
    assert sorted(status for _, status in log) == [200] + [503] * 7
    assert_one_instant(log)
    # Only the admitted request reached the provider, with its key and body passed through.
    assert fake.request_count == 1
    [record] = fake.requests
    assert record.api_key == fake.api_key
    assert record.json == BODY
    assert record.response_code == 200


async def test_limit_req_status_sets_the_rejection_status(fake: FakeProvider) -> None:
    async with NginxLimiter(fake.url, rate=10, status=429) as nginx:
        replies = await burst(nginx.url, fake, 8)
    assert statuses(replies) == {200: 1, 429: 7}
    assert Counter(status for _, status in nginx.log()) == {200: 1, 429: 7}


async def test_burst_nodelay_admits_the_burst_at_once(fake: FakeProvider) -> None:
    async with NginxLimiter(fake.url, rate=10, burst=5, nodelay=True) as nginx:
        replies = await burst(nginx.url, fake, 8)
    assert statuses(replies) == {200: 6, 503: 2}
    # None was delayed (queued, the last would wait 500 ms).
    assert max(took for status, took in replies if status == 200) < 0.25
    assert_one_instant(nginx.log())
    assert fake.request_count == 6


async def test_burst_without_nodelay_spaces_the_burst_out_at_the_rate(fake: FakeProvider) -> None:
    async with NginxLimiter(fake.url, rate=10, burst=2) as nginx:
        replies = await burst(nginx.url, fake, 5)
    assert statuses(replies) == {200: 3, 503: 2}
    waits = sorted(took for status, took in replies if status == 200)
    # The first goes at once, the two queued after 100 and 200 ms (nginx's millisecond clock).
    assert waits[0] < 0.08, waits
    assert 0.08 <= waits[1] < 0.25, waits
    assert 0.18 <= waits[2] < 0.35, waits
    assert waits[2] - waits[1] >= 0.08, waits
    assert_one_instant(nginx.log())


async def test_requests_spaced_past_the_interval_are_all_admitted(fake: FakeProvider) -> None:
    async with NginxLimiter(fake.url, rate=10) as nginx:
        for i in range(6):
            if i:
                await asyncio.sleep(0.12)  # after the answer: 120 ms or more between arrivals
            assert statuses(await burst(nginx.url, fake, 1)) == {200: 1}, i
    log = nginx.log()
    assert [status for _, status in log] == [200] * 6
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(log)]
    assert all(gap > 0.1195 for gap in gaps), gaps  # arrival times to the millisecond
    assert fake.request_count == 6


async def test_requests_spaced_inside_the_interval_are_rejected(fake: FakeProvider) -> None:
    # The same spacing at rate=5 (one per 200 ms): every other request is turned away.
    async with NginxLimiter(fake.url, rate=5) as nginx:
        for i in range(4):
            if i:
                await asyncio.sleep(0.12)
            await burst(nginx.url, fake, 1)
    assert [status for _, status in nginx.log()] == [200, 503, 200, 503]


def test_sync_use_proxies_every_path_and_cleans_up() -> None:
    # Nothing listens upstream: an admitted request gets nginx's 502, a rejected one its 503.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with NginxLimiter(f"http://127.0.0.1:{free_port()}", rate=1) as nginx:
        codes = []
        for path in ("/any/path?x=1", "/other"):
            with pytest.raises(urllib.error.HTTPError) as caught:
                opener.open(nginx.url + path, timeout=5)
            codes.append(caught.value.code)
            caught.value.close()
        folder = nginx._dir
        assert folder is not None
        assert (folder / "access.log").exists()
    assert codes == [502, 503]
    assert [status for _, status in nginx.log()] == [502, 503]
    assert not folder.exists()
    with pytest.raises(RuntimeError, match="not started"):
        _ = nginx.url


async def test_a_failed_start_raises_with_the_error_log_and_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch, fake: FakeProvider
) -> None:
    monkeypatch.setattr(nginx_module, "_CONF", "no_such_directive {d};")
    limiter = NginxLimiter(fake.url, rate=10)
    with pytest.raises(RuntimeError, match='unknown directive "no_such_directive"'):
        await limiter.__aenter__()
    assert limiter._proc is None
    assert limiter._dir is None


def test_bad_arguments_are_refused() -> None:
    for upstream in ("https://127.0.0.1:1", "http://127.0.0.1:1/v1", "127.0.0.1:1"):
        with pytest.raises(ValueError, match="upstream"):
            NginxLimiter(upstream, rate=1)
    for options in ({"rate": 0}, {"rate": 1, "burst": -1}, {"rate": 1, "status": 200}):
        with pytest.raises(ValueError, match="rate >= 1"):
            NginxLimiter("http://127.0.0.1:1", **options)  # type: ignore[arg-type]
