"""What the end of a batch says under its summary table, and on stderr, in words.

``Batch`` counts; this module only phrases. Every sentence here is read by people deciding what
to do next and by scripts grepping for it (``exists, id unknown: N``), so each says what
happened and what running the same command again will do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ._input import InputError, InputReadError
from ._items import Invalid
from ._summary import Tally

__all__ = ["Report", "journal_error"]


@dataclass(slots=True)
class Report:
    """The facts of one run that the summary's notes put in words."""

    tally: Tally
    #: The input as the user named it (``-``: stdin) and its format.
    input_name: str
    input_format: str
    #: Items read this run (settled ones included): 0 means the input had none.
    lines_read: int = 0
    #: Requests on the wire when a second signal aborted the run.
    aborted_in_flight: int = 0
    #: The run stopped early (a signal, the journal): the items it left unsent, and whether the
    #: rest of the input could be counted (not on stdin).
    stopped: bool = False
    not_sent: int = 0
    rest_uncounted: bool = False
    signalled: bool = False
    #: The input failed mid-read (or is in the wrong encoding): the reading stopped there.
    unreadable: InputError | None = None
    #: The first invalid lines of this run.
    invalid_shown: Sequence[Invalid] = field(default_factory=tuple)

    def notes(self) -> list[str]:
        """The lines under the table, most pressing first."""
        tally = self.tally
        notes = []
        if self.aborted_in_flight:
            notes.append(
                f"aborted with {self.aborted_in_flight} request(s) in flight: their records "
                "stay 'pending'. On resume the sunoapi.org family sends them again (a 409 then "
                "reads 'exists'); crun reports them as OutcomeUnknownError unless you pass "
                "--resend-unknown."
            )
        running = sum(t.running for t in tally.lanes.values())
        if running:
            notes.append(
                f"{running} item(s) were submitted and are still running at their provider "
                "(async tasks): the run stopped before their results came; running the same "
                "command again polls them, never submits them again."
            )
        if self.stopped and self.rest_uncounted:
            notes.append(
                f"{self.not_sent} item(s) read were not sent and the rest of the input was not "
                "read, because the run stopped."
            )
        elif self.stopped and self.not_sent:
            notes.append(f"{self.not_sent} item(s) were not sent because the run stopped.")
        unknown = tally.unknown + tally.skipped["unknown"]
        if unknown:
            notes.append(
                f"{unknown} item(s) have an unknown outcome (OutcomeUnknownError): a persona may "
                "or may not exist. Check the provider's dashboard for their audio ids (in the "
                "journal); to send them again, run the same command with --resend-unknown."
            )
        notes.extend(self._invalid_lines())
        if not self.lines_read and self.unreadable is None and not self.stopped:
            notes.append(f"no items in {self._input_label()}: {self._empty_what()}")
        if tally.exists_no_id:
            notes.append(
                f"exists, id unknown: {tally.exists_no_id} (the provider said 'already "
                "exists' without naming the persona and has no lookup by audio_id, and this "
                "journal records none; find them on the provider's dashboard by audio_id: "
                "their 'exists' records have persona_id null)"
            )
        if self.signalled:
            notes.append("interrupted: run the same command again to continue.")
        return notes

    def input_error(self) -> str | None:
        """The stderr line for an input that could not be read to its end."""
        if self.unreadable is None:
            return None
        said = f"persona-async: error: {self.unreadable}"
        if isinstance(self.unreadable, InputReadError):
            said += (
                ". The lines before it were handled (see the summary); nothing after it was "
                "read. Fix the input, then run the same command again: the journal skips what "
                "is settled."
            )
        return said

    def _input_label(self) -> str:
        return "stdin" if self.input_name == "-" else self.input_name

    def _empty_what(self) -> str:
        if self.input_format == "csv":
            return "it has a header and no rows; nothing was sent."
        return "it is empty or has only blank lines; nothing was sent."

    def _invalid_lines(self) -> list[str]:
        """The first invalid lines of this run, by line number, and where the rest are."""
        shown = self.invalid_shown
        if not shown:
            return []
        total = sum(t.invalid for t in self.tally.lanes.values())
        name = self.input_name
        lines = [f"invalid line(s): {total}, first:" if total > len(shown) else "invalid:"]
        lines += [
            f"  {name}:{entry.line}:{f' {entry.field}:' if entry.field else ''} {entry.message}"
            for entry in shown
        ]
        lines.append(
            "  each has an 'invalid' record in the journal; `persona-async validate` with the "
            "same INPUT and --config lists them all"
        )
        return lines


def journal_error(path: str, failed: OSError, lost: int) -> str:
    """The stderr line for a journal that stopped accepting records."""
    return (
        f"persona-async: error: the journal {path} could not be written: "
        f"{failed.strerror or failed}"
        + (f" ({lost} record(s) lost)" if lost else "")
        + "; it is whole up to there. Fix that (free space, another disk: move the journal "
        "there and point --out at it), then run the same command to continue."
    )
