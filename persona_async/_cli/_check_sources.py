"""``validate --check-sources``: is each line's source song ready? Status queries only, no create.

Each distinct (lane, task_id) is asked once, through the lane's poll budget (its own
``PollPolicy``), with 429s and transient failures polled through as a waiting lane would; then
every line is judged against its task the way ``wait_for_source`` judges a request (clip among
the task's clips, ``vocal_end`` within the clip).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .._exceptions import PersonaError
from .._polling import Poller, Running
from .._providers import Provider
from .._sources import SourceInfo, SourceState, lookup, verdict
from .._transport import SessionPool
from ._items import Item

__all__ = ["LOOKUP_DEADLINE", "SourceLine", "check_sources"]

#: How long one task's lookup may take, 429s and retries included.
LOOKUP_DEADLINE = 60.0


@dataclass(frozen=True, slots=True)
class SourceLine:
    """One line's verdict: ``state`` is ready, running, failed or unknown."""

    item: Item
    state: str
    detail: str


async def check_sources(
    providers: Mapping[str, Provider], items: Sequence[Item]
) -> list[SourceLine]:
    """A verdict per item, in input order."""
    pool = SessionPool()
    pollers = {name: Poller(p.poll) for name, p in providers.items()}
    limits = {name: asyncio.Semaphore(p.max_concurrency) for name, p in providers.items()}
    found: dict[tuple[str, str], SourceInfo | PersonaError | str] = {}

    async def one(lane: str, task_id: str) -> None:
        provider = providers[lane]
        if provider.source_status is None:
            found[lane, task_id] = f"{provider.kind} has no status endpoint"
            return

        async def query() -> SourceInfo | Running:
            return await lookup(provider, pool, task_id)

        def expired(last: Running | None, err: PersonaError | None) -> PersonaError:
            return err or PersonaError("no answer in time", provider=lane)

        async with limits[lane]:
            try:
                found[lane, task_id] = await pollers[lane].wait(
                    (lane, task_id),
                    query,
                    deadline=time.monotonic() + LOOKUP_DEADLINE,
                    expired=expired,
                )
            except PersonaError as exc:
                found[lane, task_id] = exc

    try:
        wanted = dict.fromkeys((item.lane, item.request.task_id) for item in items)
        await asyncio.gather(*(one(lane, task_id) for lane, task_id in wanted))
    finally:
        for poller in pollers.values():
            await poller.aclose()
        await pool.aclose()
    return [_judge(item, found[item.lane, item.request.task_id]) for item in items]


def _judge(item: Item, info: SourceInfo | PersonaError | str) -> SourceLine:
    if isinstance(info, str):
        return SourceLine(item, "unknown", info)
    if isinstance(info, PersonaError):
        return SourceLine(item, "unknown", f"status query failed: {info}")
    if info.state is SourceState.RUNNING:
        return SourceLine(item, "running", info.status)
    if info.state is SourceState.UNKNOWN:
        return SourceLine(item, "unknown", f"undocumented status {info.status!r}")
    refused = verdict(item.request, info, item.lane)
    if refused is None:
        return SourceLine(item, "ready", info.status)
    return SourceLine(item, "failed", refused.message)
