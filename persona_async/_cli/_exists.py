"""Persona ids for ``exists`` outcomes, from the journal's own ``created`` records.

A 409 ("this audio already has a persona") names no persona, and no provider documents a lookup
by audio id (nor an idempotency key). The one place the id can be is the journal itself: a
``created`` record for the same lane and audio id, written under another identity (the same
clip listed twice with different ``id``s, an input regenerated with new task ids) by this run or
an earlier one. A lane is one account, and the sunoapi.org family allows one persona per audio
id per account, so that persona is the one the 409 means.

At the end of a run that recorded ``exists`` without an id, the journal is read three times in a
thread: this run's records for the (lane, audio id) pairs wanted, the whole file for their
``created`` records, and this run's records again for each ``exists`` record that can be named;
those are then appended, with the id, as the items' new last records. The run itself keeps
nothing per item.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

import anyio
import msgspec

from ._journal import Journal
from ._journal_records import Record

__all__ = ["Known", "known_persona_ids", "name_existing"]

#: (lane, audio id) -> (persona id, input line of its ``created`` record).
Known = dict[tuple[str, str], tuple[str, int | None]]

_decode = msgspec.json.Decoder(Record).decode


def _records(path: str, start: int, end: int | None, status: bytes) -> Iterator[Record]:
    """The records with ``status`` between the byte offsets ``start`` and ``end`` of ``path``."""
    needle = b'"status":"' + status + b'"'
    with open(path, "rb") as file:
        file.seek(start)
        for raw in file:
            start += len(raw)
            if end is not None and start > end:
                return
            if needle not in raw:  # most records: skipped without parsing
                continue
            try:
                yield _decode(raw)
            except msgspec.DecodeError:
                continue  # a torn last line: what it says is not known


def known_persona_ids(path: str, wanted: Collection[tuple[str, str]]) -> Known:
    """The persona id the journal at ``path`` recorded as ``created`` for each of ``wanted``
    that has one (the first such record). Blocking: run it off the event loop."""
    found: Known = {}
    for record in _records(path, 0, None, b"created"):
        key = (record.provider or "", record.audio_id or "")
        if record.persona_id is not None and key in wanted and key not in found:
            found[key] = (record.persona_id, record.line)
    return found


def _unnamed(path: str, since: int, end: int | None) -> Iterator[Record]:
    for record in _records(path, since, end, b"exists"):
        if record.persona_id is None:
            yield record


def _named(path: str, since: int, end: int) -> list[Record]:
    """The new last records of the ``exists`` records between ``since`` and ``end`` that the
    journal can name."""
    wanted = {(r.provider or "", r.audio_id or "") for r in _unnamed(path, since, end)}
    known = known_persona_ids(path, wanted)
    named = []
    for record in _unnamed(path, since, end):
        found = known.get((record.provider or "", record.audio_id or ""))
        if found is None:
            continue
        persona_id, line = found
        error = record.error
        if error is not None:
            error = msgspec.structs.replace(
                error,
                message=f"{error.message}; its persona id is from this journal's created record "
                f"of input line {line} (same provider and audio_id)",
            )
        named.append(msgspec.structs.replace(record, persona_id=persona_id, error=error))
    return named


async def name_existing(journal: Journal, since: int) -> int:
    """Give each ``exists`` record this run wrote (from byte ``since`` of the journal) without
    a persona id the id of the journal's ``created`` record for its lane and audio id, in a new
    last record; return how many were named (0 if the journal cannot be read)."""
    try:
        named = await anyio.to_thread.run_sync(_named, journal.path, since, journal.size)
    except OSError:
        return 0  # the ids stay unknown, as the summary says
    return sum(journal.write(record) for record in named)  # written here, on the loop
