"""create_many against a real fake provider: lazy pull, bounded read-ahead, order, clean stops.

``filterwarnings = error`` is part of every test here: a session, task or coroutine leaked by a
stream that was broken out of or cancelled fails the test that leaked it.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import pytest
from _support import FAST_RETRY, crun, req

from persona_async import (
    Created,
    Failed,
    InvalidRequestError,
    Outcome,
    OutcomeStream,
    PersonaClient,
    PersonaRequest,
)
from persona_async.testing import FakeProvider, Fault

pytestmark = pytest.mark.anyio

class Endless:
    """An endless async source of requests that counts how far it was pulled."""

    def __init__(self) -> None:
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[PersonaRequest]:
        for i in itertools.count():
            self.pulled += 1
            yield req(i)


def endless_sync(counter: list[int]) -> Iterator[PersonaRequest]:
    for i in itertools.count():
        counter[0] += 1
        yield req(i)


async def drain(outcomes: OutcomeStream, into: list[Outcome]) -> None:
    async for outcome in outcomes:
        into.append(outcome)


async def until(condition: Callable[[], bool], within: float = 3.0) -> None:
    for _ in range(int(within / 0.01)):
        if condition():
            return
        await anyio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def settle(fake: FakeProvider, seconds: float = 0.3) -> None:
    """Give anything that might still be sent the time to reach the fake."""
    await anyio.sleep(seconds)
    assert fake.in_flight == 0


# -- lazy pull, bounded read-ahead ------------------------------------------------------------


async def test_an_endless_async_generator_is_pulled_only_as_far_as_the_consumer_reads() -> None:
    source = Endless()
    async with FakeProvider(latency=0.002) as fake:
        async with PersonaClient([crun(fake, max_concurrency=4)], retry=FAST_RETRY) as client:
            taken = 0
            ahead = []
            async with client.create_many(source, max_pending=10) as outcomes:
                async for outcome in outcomes:
                    assert outcome.ok
                    taken += 1
                    ahead.append(source.pulled - taken)
                    stats = client.stats()["crun"]
                    assert stats.in_flight + stats.queued <= 10
                    if taken == 100:
                        break
                    if taken % 10 == 0:
                        await anyio.sleep(0.02)  # a slow consumer: the input must wait

        assert max(ahead) <= 10
        assert source.pulled <= 100 + 10
        assert fake.max_concurrent <= 4


async def test_default_read_ahead_is_a_few_per_unit_of_concurrency_not_the_input() -> None:
    counter = [0]
    async with (
        FakeProvider() as fake,
        PersonaClient([crun(fake, max_concurrency=3)], retry=FAST_RETRY) as client,
        client.create_many(endless_sync(counter)) as outcomes,
    ):
        first = await outcomes.__anext__()
        await anyio.sleep(0.2)  # the consumer dawdles; the feeder must stop
        pulled = counter[0]

        assert first.ok
        assert pulled <= 1 + 4 * 3


async def test_a_sync_iterable_is_pulled_lazily_too() -> None:
    counter = [0]
    async with FakeProvider() as fake:
        async with PersonaClient([crun(fake, max_concurrency=2)], retry=FAST_RETRY) as client:
            taken = 0
            async with client.create_many(endless_sync(counter), max_pending=4) as outcomes:
                async for outcome in outcomes:
                    assert outcome.ok
                    taken += 1
                    assert counter[0] - taken <= 4
                    if taken == 30:
                        break

        assert counter[0] <= 30 + 4


async def test_a_finite_list_yields_one_outcome_per_request() -> None:
    async with FakeProvider() as fake:
        async with PersonaClient([crun(fake)], retry=FAST_RETRY) as client:
            outcomes = [o async for o in client.create_many([req(i) for i in range(50)])]

        assert sorted(o.request.task_id for o in outcomes) == sorted(f"task-{i}" for i in range(50))
        assert all(o.ok and o.attempts == 1 for o in outcomes)
        assert len(fake.personas) == 50


# -- order ------------------------------------------------------------------------------------


async def test_ordered_yields_input_order_though_the_first_request_finishes_last() -> None:
    async with FakeProvider() as fake:
        async with PersonaClient([crun(fake, max_concurrency=4)], retry=FAST_RETRY) as client:
            fake.inject(Fault.slow(0.2))
            unordered = [
                o.request.task_id async for o in client.create_many([req(i) for i in range(8)])
            ]
            fake.inject(Fault.slow(0.2))
            ordered = [
                o.request.task_id
                async for o in client.create_many([req(i) for i in range(8, 16)], ordered=True)
            ]

        assert unordered[0] != "task-0"  # completion order: the slow one came last
        assert unordered[-1] == "task-0"
        assert ordered == [f"task-{i}" for i in range(8, 16)]


async def test_ordered_mode_stops_pulling_when_its_reorder_window_is_full() -> None:
    source = Endless()
    async with FakeProvider() as fake:
        async with PersonaClient([crun(fake, max_concurrency=8)], retry=FAST_RETRY) as client:
            fake.inject(Fault.slow(0.4))
            async with client.create_many(source, ordered=True, max_pending=5) as outcomes:
                head = await outcomes.__anext__()
                sent_while_head_was_slow = fake.request_count
                pulled_while_head_was_slow = source.pulled
                rest = [await outcomes.__anext__() for _ in range(9)]

        assert head.request.task_id == "task-0"
        assert [o.request.task_id for o in rest] == [f"task-{i}" for i in range(1, 10)]
        # Four finished behind the slow head and waited in the reorder window; nothing more.
        assert pulled_while_head_was_slow <= 5 + 1
        assert sent_while_head_was_slow <= 5 + 1


# -- per-item failures and input failures ------------------------------------------------------


async def test_an_invalid_request_in_the_middle_is_an_outcome_and_the_rest_go_on() -> None:
    requests: list[Any] = [req(i) for i in range(10)]
    requests[3] = req(3, name="   ")
    requests[5] = {"task_id": "task-5"}  # not a PersonaRequest at all
    requests[7] = req(7, lane="nowhere")
    async with FakeProvider() as fake, PersonaClient([crun(fake)], retry=FAST_RETRY) as client:
        outcomes = [o async for o in client.create_many(requests)]

    assert len(outcomes) == 10
    by_input = [next(o for o in outcomes if o.request is r) for r in requests]
    bad = {3: "name", 5: "request", 7: "provider"}
    for i, field in bad.items():
        outcome = by_input[i]
        assert isinstance(outcome.error, InvalidRequestError)
        assert outcome.error.field == field
        assert (outcome.persona, outcome.attempts, outcome.ok) == (None, 0, False)
    assert all(o.ok for i, o in enumerate(by_input) if i not in bad)
    assert fake.request_count == 7


async def test_an_exception_from_the_async_input_reaches_the_consumer() -> None:
    async def broken() -> AsyncIterator[PersonaRequest]:
        for i in range(5):
            yield req(i)
        raise LookupError("the export file ended mid-row")

    async with FakeProvider() as fake, PersonaClient([crun(fake)], retry=FAST_RETRY) as client:
        received: list[Outcome] = []
        with pytest.raises(LookupError, match="mid-row"):
            await drain(client.create_many(broken()), received)
        await settle(fake)

    # The five requests pulled before the failure were sent: their outcomes are not lost.
    assert fake.request_count == 5
    assert sorted(o.request.task_id for o in received) == [f"task-{i}" for i in range(5)]


async def test_an_exception_from_a_sync_input_reaches_the_consumer() -> None:
    def broken() -> Iterator[PersonaRequest]:
        yield req(0)
        yield req(1)
        raise ValueError("bad row 3")

    async with FakeProvider() as fake, PersonaClient([crun(fake)], retry=FAST_RETRY) as client:
        received: list[Outcome] = []
        with pytest.raises(ValueError, match="bad row 3"):
            await drain(client.create_many(broken()), received)

    assert len(received) == 2


# -- stopping early ---------------------------------------------------------------------------


async def test_break_stops_the_stream_nothing_is_sent_after_it_and_no_task_is_left() -> None:
    source = Endless()
    tasks_before = asyncio.all_tasks()
    async with FakeProvider(latency=0.01) as fake:
        async with PersonaClient([crun(fake, max_concurrency=4)], retry=FAST_RETRY) as client:
            async for outcome in client.create_many(source):
                assert outcome.ok
                if int(outcome.request.task_id.split("-")[1]) >= 20:
                    break
            sent, pulled = client.stats()["crun"].sent, source.pulled
            await settle(fake)

            assert client.stats()["crun"].sent == sent
            assert fake.request_count == sent  # only what was on the wire at the break
            assert source.pulled == pulled
            assert client.stats()["crun"].queued == 0
        gc.collect()
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - tasks_before == set()


async def test_cancelling_the_consumer_stops_the_stream_like_a_break() -> None:
    source = Endless()
    tasks_before = asyncio.all_tasks()
    async with FakeProvider(latency=0.01) as fake:
        async with PersonaClient([crun(fake, max_concurrency=4)], retry=FAST_RETRY) as client:
            received = 0
            with anyio.move_on_after(0.15) as scope:
                async for outcome in client.create_many(source):
                    assert outcome.ok
                    received += 1
            assert scope.cancelled_caught
            sent, pulled = client.stats()["crun"].sent, source.pulled
            await settle(fake)

            assert received > 0
            assert client.stats()["crun"].sent == sent
            assert fake.request_count == sent
            assert source.pulled == pulled
        gc.collect()
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - tasks_before == set()


async def test_leaving_async_with_closes_the_stream() -> None:
    source = Endless()
    async with (
        FakeProvider(latency=0.05) as fake,
        PersonaClient([crun(fake, max_concurrency=1)], retry=FAST_RETRY) as client,
    ):
        async with client.create_many(source, max_pending=4) as outcomes:
            first = await outcomes.__anext__()
            # Named, the stream outlives a loop; it is the `async with` that closes it.
        sent, pulled = client.stats()["crun"].sent, source.pulled
        await settle(fake)

        assert first.ok
        assert client.stats()["crun"].sent == sent  # the queued ones were never sent
        assert fake.request_count == sent
        assert source.pulled == pulled
        with pytest.raises(StopAsyncIteration):
            await outcomes.__anext__()


async def test_closing_the_client_under_a_running_stream_ends_it_with_outcomes() -> None:
    async with FakeProvider() as fake:
        fake.inject(Fault.slow(5.0), times=2)
        client = PersonaClient([crun(fake, max_concurrency=2)], retry=FAST_RETRY)
        received: list[Outcome] = []

        async def consume() -> None:
            with anyio.fail_after(5):  # a stream left waiting for an answer would hang here
                async for outcome in client.create_many([req(i) for i in range(6)]):
                    received.append(outcome)

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await until(lambda: fake.in_flight == 2)
            with anyio.fail_after(3):
                await client.aclose()

    assert fake.request_count == 2
    # The two on the wire may have made personas; the four queued were never sent.
    errors = sorted(type(o.error).__name__ for o in received)
    assert errors == ["OutcomeUnknownError"] * 2 + ["PersonaError"] * 4


async def test_an_outcome_is_created_with_a_persona_or_failed_with_an_error(
    fake: FakeProvider,
) -> None:
    async with PersonaClient([crun(fake)], retry=FAST_RETRY) as client:
        outcomes = [o async for o in client.create_many([req(0), req(1, name="")], ordered=True)]
    created, failed = outcomes
    assert isinstance(created, Created)
    assert isinstance(created, Outcome)
    assert (created.ok, created.error, created.attempts) == (True, None, 1)
    assert created.persona.persona_id in fake.personas
    assert isinstance(failed, Failed)
    assert (failed.ok, failed.persona, failed.attempts) == (False, None, 0)
    assert isinstance(failed.error, InvalidRequestError)
