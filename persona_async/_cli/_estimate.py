"""``validate``'s forecast: per lane, what a batch would send and how long that takes.

The time is the floor the configured limits set: ``rate_limit`` starts per ``rate_period``, the
first window's worth at once. Lanes run side by side, so the run takes as long as its slowest
lane; retries, 429s and maintenance windows only add to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .._providers import Provider
from ._input import Item
from ._journal import Resume, sent_again
from ._progress import duration

__all__ = ["Estimate"]


@dataclass(slots=True)
class _Lane:
    provider: Provider
    to_send: int = 0
    settled: int = 0

    def seconds(self) -> float:
        limit = self.provider.rate_limit
        if not limit or self.to_send <= limit:
            return 0.0
        return (self.to_send - limit) / limit * self.provider.rate_period


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
        return "\n".join(lines)

