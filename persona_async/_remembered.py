"""The personas a client made recently, returned to the same request without sending.

A persona is kept ``remember_for`` seconds under its request's identity (the lane and the
encoded body), for at most ``remember_max`` requests, the least recently used out first, so
memory stays bounded however many requests pass. Only personas are kept: a failure is never
an answer to the next call.

Example::

    memory = RememberedPersonas(remember_for=3600.0, remember_max=10_000)
    memory.remember("crun", body, persona)
    assert memory.recall("crun", body, request) == persona
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

import msgspec

from ._models import Persona, PersonaRequest

__all__ = ["DEFAULT_REMEMBER_FOR", "DEFAULT_REMEMBER_MAX", "RememberedPersonas", "as_asked"]

#: Seconds a created persona is returned to an identical call without sending: long enough
#: for a web client's retries, a form submitted twice, a pipeline step run again.
DEFAULT_REMEMBER_FOR = 3600.0
#: Personas remembered at most, per client: the least recently used go first.
DEFAULT_REMEMBER_MAX = 10_000


class RememberedPersonas:
    """A bounded, expiring map of (lane, body) to the persona that request made."""

    __slots__ = ("_clock", "_made", "remember_for", "remember_max")

    def __init__(
        self,
        remember_for: float = DEFAULT_REMEMBER_FOR,
        remember_max: int = DEFAULT_REMEMBER_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(remember_for, bool) or not remember_for >= 0 or remember_for == math.inf:
            raise ValueError(f"remember_for must be >= 0 seconds (0: off), got {remember_for!r}")
        if isinstance(remember_max, bool) or not isinstance(remember_max, int) or remember_max < 1:
            raise ValueError(f"remember_max must be an int >= 1, got {remember_max!r}")
        self.remember_for = remember_for
        self.remember_max = remember_max
        self._clock = clock
        #: (lane, body) -> (when it is forgotten, the persona), least recently used first
        self._made: OrderedDict[tuple[str, bytes], tuple[float, Persona]] = OrderedDict()

    def recall(self, lane: str, body: bytes, request: PersonaRequest) -> Persona | None:
        """The persona an identical request made, if it is still remembered."""
        made = self._made
        if not made:
            return None
        key = (lane, body)
        entry = made.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del made[key]
            return None
        made.move_to_end(key)
        return as_asked(entry[1], request)

    def remember(self, lane: str, body: bytes, persona: Persona) -> None:
        if not self.remember_for:
            return
        made = self._made
        key = (lane, body)
        if key in made:
            made.move_to_end(key)  # a new key goes to the end already
        made[key] = (self._clock() + self.remember_for, persona)
        if len(made) > self.remember_max:
            made.popitem(last=False)


def as_asked(persona: Persona, request: PersonaRequest) -> Persona:
    """``persona`` as the answer to ``request`` (identical on the wire, maybe not in its ids)."""
    if (
        persona.task_id == request.task_id
        and persona.audio_id == request.audio_id
        and persona.name == request.name
        and persona.description == request.description
    ):
        return persona
    return msgspec.structs.replace(
        persona,
        task_id=request.task_id,
        audio_id=request.audio_id,
        name=request.name,
        description=request.description,
    )
