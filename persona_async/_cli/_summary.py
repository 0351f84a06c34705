"""Counting a batch as it runs, and the summary table printed at the end."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .._lane import LaneStats

__all__ = ["LaneTally", "Tally", "render_summary"]

#: Seconds a run must last before the summary shows a rate.
_RATE_AFTER = 1.0
#: The row for lines whose provider is missing or unknown.
NO_LANE = "-"


@dataclass(slots=True)
class LaneTally:
    """What one lane did in this run."""

    kind: str = ""
    created: int = 0
    exists: int = 0
    failed: Counter[str] = field(default_factory=Counter)  # by error type
    invalid: int = 0
    #: Pulled from the input but not sent because the run was interrupted.
    not_sent: int = 0
    #: Submitted to an async-task provider, whose task still ran when the run stopped.
    running: int = 0


@dataclass(slots=True)
class Tally:
    """This run's counts. ``done`` counts input items settled (for progress), skipped included."""

    lanes: dict[str, LaneTally]
    #: Items an earlier run settled: "done" (created/exists), "failed", "unknown", "invalid".
    skipped: Counter[str] = field(default_factory=Counter)
    done: int = 0
    #: Items recorded this run as OutcomeUnknownError that no run resends by itself.
    unknown: int = 0
    #: Async tasks submitted (this run or an earlier one) whose result has not come yet.
    tasks_running: int = 0
    #: ``exists`` outcomes of this run with no persona id (a 409 names none).
    exists_no_id: int = 0
    #: Outcomes of requests that reached a provider, for the rate.
    answered: int = 0
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def for_lanes(cls, kinds: Mapping[str, str]) -> Tally:
        return cls({name: LaneTally(kind=kind) for name, kind in kinds.items()})

    def lane(self, name: str | None) -> LaneTally:
        key = name if name in self.lanes else NO_LANE
        if key not in self.lanes:
            self.lanes[key] = LaneTally()
        return self.lanes[key]

    @property
    def all_succeeded(self) -> bool:
        """Every item seen is ``created`` or ``exists`` (this run or an earlier one)."""
        bad = sum(
            sum(t.failed.values()) + t.invalid + t.not_sent + t.running
            for t in self.lanes.values()
        )
        bad += self.skipped["failed"] + self.skipped["unknown"] + self.skipped["invalid"]
        return bad == 0


def render_summary(
    tally: Tally,
    stats: Mapping[str, LaneStats],
    *,
    elapsed: float,
    journal: str,
    notes: Sequence[str] = (),
) -> str:
    """The end-of-run table: one row per lane, failures by type below it, then the notes."""
    header = (
        "lane", "kind", "created", "exists", "failed", "invalid", "retries", "elapsed", "items/s"
    )
    rows: list[tuple[str, ...]] = []
    totals = LaneTally()
    retries_total = 0
    for name, t in tally.lanes.items():
        lane_stats = stats.get(name)
        retries = lane_stats.retries if lane_stats is not None else 0
        retries_total += retries
        failed = sum(t.failed.values())
        answered = t.created + t.exists + failed
        rows.append(
            (
                name,
                t.kind or "-",
                str(t.created),
                str(t.exists),
                str(failed),
                str(t.invalid),
                str(retries) if lane_stats is not None else "-",
                f"{elapsed:.1f}s",
                _rate(answered, elapsed),
            )
        )
        totals.created += t.created
        totals.exists += t.exists
        totals.failed.update(t.failed)
        totals.invalid += t.invalid
    if len(rows) > 1:
        failed = sum(totals.failed.values())
        answered = totals.created + totals.exists + failed
        rows.append(
            (
                "total",
                "",
                str(totals.created),
                str(totals.exists),
                str(failed),
                str(totals.invalid),
                str(retries_total),
                f"{elapsed:.1f}s",
                _rate(answered, elapsed),
            )
        )
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = [_row(header, widths)] + [_row(row, widths) for row in rows]
    for name, t in tally.lanes.items():
        if t.failed:
            kinds = ", ".join(f"{kind} {n}" for kind, n in t.failed.most_common())
            lines.append(f"failed on {name}: {kinds}")
    for lane_stats in stats.values():
        if lane_stats.advice is not None:  # the provider allows less than the config says
            lines.append(f"rate limit learned on {lane_stats.advice}")
    skipped = tally.skipped
    if sum(skipped.values()):
        parts = [
            f"{skipped[what]} {label}"
            for what, label in (
                ("done", "created or exists"),
                ("failed", "failed"),
                ("unknown", "outcome unknown"),
                ("invalid", "invalid"),
            )
            if skipped[what]
        ]
        lines.append("skipped, settled by an earlier run: " + ", ".join(parts))
    lines.extend(notes)
    lines.append(f"journal: {journal}")
    return "\n".join(lines)


def _rate(answered: int, elapsed: float) -> str:
    # Under a second, a rate is a guess from a handful of answers (8 in 0.05 s is not 160/s).
    return f"{answered / elapsed:.1f}" if elapsed >= _RATE_AFTER else "-"


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    # Names left-aligned, numbers right-aligned.
    out = [
        cell.ljust(width) if i < 2 else cell.rjust(width)
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
    ]
    return "  ".join(out).rstrip()
