"""``validate``'s forecast: per lane, what a batch would send and how long that takes.

The time is the floor the configured limits set: ``rate_limit`` starts per ``rate_period``, the
first window's worth at once; for an async-task lane (kie-jobs, Evolink), also the wait before a
task's first status query and the lane's poll budget (one query per task at least). Lanes run
side by side, so the run takes as long as its slowest lane; retries, 429s and maintenance windows
only add to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .._providers import Provider
from ._items import Item
from ._journal_records import Resume, sent_again
from ._progress import duration

__all__ = ["Estimate"]


@dataclass(slots=True)
class _Lane:
    provider: Provider
    to_send: int = 0
    settled: int = 0

    def seconds(self) -> float:
        provider = self.provider
        creates = _at(self.to_send, provider.rate_limit, provider.rate_period)
        if provider.mode != "task" or not self.to_send:
            return creates
        # An async task is done no sooner than its first status query, which waits the
        # provider's estimate (as ``TaskFlow`` does), and every task needs one query of the
        # lane's poll budget: the last result comes after both.
        poll = provider.poll
        first = min(provider.estimated_time, poll.max_interval)
        return first + max(creates, _at(self.to_send, poll.rate_limit, poll.rate_period))


def _at(count: int, limit: int | None, period: float) -> float:
    """Seconds before the last of ``count`` starts at ``limit`` per ``period``: a window's worth
    at once, the next worth a period later (30 at 20 per 10 s: the last one at 10 s, not 5)."""
    if not limit or count <= limit:
        return 0.0
    return math.ceil((count - limit) / limit) * period


class Estimate:
    """Add each valid, first-seen item; ``render()`` the table."""

    def __init__(self, providers: Sequence[Provider], resume: Resume | None) -> None:
        self._lanes = {p.name: _Lane(p) for p in providers}
        self._resume = resume
        self.valid = 0

    def add(self, item: Item) -> None:
        self.valid += 1
        lane = self._lanes[item.lane]
        provider = lane.provider
        resends = provider.detects_duplicates or provider.retry_ambiguous
        if self._resume is not None and not sent_again(
            self._resume.peek(item.key), resends_pending=resends
        ):
            lane.settled += 1
        else:
            lane.to_send += 1

    def render(self) -> str:
        header = ("lane", "kind", "to send", "settled", "time at the limits", "limit")
        rows = [
            (
                name,
                lane.provider.kind,
                str(lane.to_send),
                str(lane.settled) if self._resume is not None else "-",
                duration(lane.seconds()),
                f"{lane.provider.rate_limit} per {lane.provider.rate_period:g}s"
                if lane.provider.rate_limit
                else "none",
            )
            for name, lane in self._lanes.items()
        ]
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
        lines = [
            "  ".join(
                cell.ljust(width) if i in (0, 1, 5) else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
            for row in (header, *rows)
        ]
        longest = max((lane.seconds() for lane in self._lanes.values()), default=0.0)
        lines.append(
            f"at least {duration(longest)} in all (lanes run side by side; retries, 429s and "
            "maintenance windows add to it)"
        )
        tasks = [lane.provider for lane in self._lanes.values() if lane.provider.mode == "task"]
        if tasks:
            lines.append(
                "async-task lanes include the wait before a task's first status query ("
                + ", ".join(
                    f"{p.name} {min(p.estimated_time, p.poll.max_interval):g}s" for p in tasks
                )
                + ") and one status query per task within the lane's poll budget"
            )
        return "\n".join(lines)

