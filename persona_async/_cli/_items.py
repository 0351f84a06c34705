"""One line of the batch input, read: an ``Item`` to send or an ``Invalid`` to record.

An item's identity is its ``id`` when given, else ``(provider, task_id, audio_id)``;
``identity_key`` turns either into a 16-byte digest, the only thing the journal keeps in memory
per item. ``_input`` reads the lines; the journal and the run use these values.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .._models import PersonaRequest

__all__ = ["Invalid", "Item", "duplicate", "identity_key"]


def identity_key(
    id: str | None, provider: str | None, task_id: str | None, audio_id: str | None
) -> bytes:
    """The 16-byte digest of an item's identity, stable across runs and machines."""
    text = f"id\0{id}" if id is not None else f"k\0{provider}\0{task_id}\0{audio_id}"
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


@dataclass(slots=True)
class Item:
    """A valid line: the request to send and who it is."""

    line: int
    id: str | None
    request: PersonaRequest
    key: bytes
    #: An earlier run sent this item and recorded no outcome (set by the batch on resume).
    sent_before: bool = False
    #: Its ``pending`` record is in the journal: from here on it may reach the provider.
    sent: bool = False
    #: An async-task provider took it (this run or an earlier one): its task is polled.
    polled: bool = False

    @property
    def lane(self) -> str:
        assert self.request.provider is not None  # filled in by the reader
        return self.request.provider


@dataclass(slots=True)
class Invalid:
    """A line that cannot be sent; ``field`` is None when the line is not an object at all."""

    line: int
    field: str | None
    message: str
    id: str | None = None
    provider: str | None = None
    task_id: str | None = None
    audio_id: str | None = None

    @property
    def key(self) -> bytes | None:
        """The identity, when the line has one (a duplicate, a broken rule)."""
        if self.id is None and None in (self.provider, self.task_id, self.audio_id):
            return None
        return identity_key(self.id, self.provider, self.task_id, self.audio_id)

    def detached(self) -> Invalid:
        """The same, without the identity (``provider`` kept, for the summary's lane row):
        the record of a line whose identity belongs to another line's item."""
        return Invalid(self.line, self.field, self.message, provider=self.provider)


def duplicate(item: Item, first_line: int) -> Invalid:
    """The ``invalid`` entry of a line whose identity ``first_line`` already had. It carries no
    identity: the item of ``first_line`` keeps its own state."""
    if item.id is not None:
        field, what = "id", f"id {item.id!r}"
    else:
        field, what = "audio_id", "provider, task_id and audio_id"
    return Invalid(
        item.line,
        field,
        f"duplicate of line {first_line}: it has the same {what}; only line {first_line} is sent",
        provider=item.lane,
    )
