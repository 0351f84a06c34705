"""Persona ids for ``exists`` outcomes, from the journal's own ``created`` records.

A 409 ("this audio already has a persona") names no persona, and no provider documents a lookup
by audio id (PROVIDERS-MORE.md, 13a). The one place the id can be is the journal itself: a
``created`` record for the same lane and audio id, written under another identity (the same
clip listed twice with different ``id``s, an input regenerated with new task ids) by this run or
an earlier one. A lane is one account, and the sunoapi.org family allows one persona per audio
id per account, so that persona is the one the 409 means.

The journal is read once, at the end of a run that saw such an outcome, keeping only the ids
asked for: no memory per item for a run that never needs it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import anyio
import msgspec

from ._input import Item
from ._journal import ErrorInfo, Journal

__all__ = ["Known", "known_persona_ids", "name_existing"]

#: (lane, audio id) -> (persona id, input line of its ``created`` record).
Known = dict[tuple[str, str], tuple[str, int | None]]


class _Created(msgspec.Struct):
    status: str
    provider: str | None = None
    audio_id: str | None = None
    persona_id: str | None = None
    line: int | None = None


_decode = msgspec.json.Decoder(_Created).decode


def known_persona_ids(path: str, wanted: Collection[tuple[str, str]]) -> Known:
    """The persona id the journal at ``path`` recorded as ``created`` for each of ``wanted``
    that has one (the first such record). Blocking: run it off the event loop."""
    found: Known = {}
    with open(path, "rb") as file:
        for raw in file:
            if b'"created"' not in raw:  # most records: skipped without parsing
                continue
            try:
                record = _decode(raw)
            except msgspec.DecodeError:
                continue  # a torn last line: what it says is not known
            if record.status != "created" or record.persona_id is None:
                continue
            key = (record.provider or "", record.audio_id or "")
            if key in wanted and key not in found:
                found[key] = (record.persona_id, record.line)
    return found


async def name_existing(journal: Journal, exists: Sequence[tuple[Item, ErrorInfo, int]]) -> int:
    """Give each ``exists`` outcome (item, its error, attempts) the persona id the journal's own
    ``created`` record for its lane and audio id has, in a new last record; return how many
    were named."""
    wanted = {(item.lane, item.request.audio_id) for item, _, _ in exists}
    try:
        known = await anyio.to_thread.run_sync(known_persona_ids, journal.path, wanted)
    except OSError:
        return 0  # the ids stay unknown, as the summary says
    named = 0
    for item, info, attempts in exists:
        found = known.get((item.lane, item.request.audio_id))
        if found is None:
            continue
        persona_id, line = found
        info.message += (
            f"; its persona id is from this journal's created record of input line {line} "
            "(same provider and audio_id)"
        )
        journal.outcome(item, "exists", persona_id=persona_id, error=info, attempts=attempts)
        named += 1
    return named
