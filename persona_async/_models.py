"""The public values: what a caller asks for, what a provider makes, and how one request ended."""

from __future__ import annotations

from typing import Literal, TypeAlias

import msgspec

from ._exceptions import PersonaError

__all__ = ["Created", "Failed", "Outcome", "Persona", "PersonaRequest", "outcome_of"]


# gc=False: these hold only strings and numbers, so they cannot be part of a reference cycle;
# untracked, the thousands of them a stream keeps in flight cost the garbage collector nothing.
class _RequiredFields(msgspec.Struct, frozen=True, gc=False):
    task_id: str
    audio_id: str
    name: str
    description: str


class PersonaRequest(_RequiredFields, frozen=True, kw_only=True, gc=False):
    """One persona to create.

    ``task_id`` is the music task that produced the clip and ``audio_id`` the Suno clip id
    (crun calls it ``suno_id``, the sunoapi.org family ``audioId``). ``provider`` names the lane
    that owns the task; it may be omitted when the client has exactly one provider. The vocal
    window is in seconds. Rules are checked by the provider before anything is sent::

        PersonaRequest("task_1", "clip_1", "Neon Siren", "Smoky late-night R&B", provider="crun")

    ``provider_task_id`` is for async-task providers (kie's market route, Evolink) only: the
    persona task an earlier run already submitted. The SDK then polls that task and never
    submits again (a resumed batch does this from its journal).
    """

    provider: str | None = None
    vocal_start: float | None = None
    vocal_end: float | None = None
    style: str | None = None
    provider_task_id: str | None = None


class Persona(msgspec.Struct, frozen=True, gc=False):
    """A persona the provider created. ``provider_task_id`` is the provider's own task id for
    async-task providers (kie's market route, Evolink), else None."""

    persona_id: str
    provider: str
    task_id: str
    audio_id: str
    name: str
    description: str
    provider_task_id: str | None = None


class Created(msgspec.Struct, frozen=True):
    """A request of a batch that made its persona: ``persona`` is set, ``error`` is None.

    ``attempts`` counts the requests actually sent.
    """

    request: PersonaRequest
    persona: Persona
    attempts: int = 0

    @property
    def ok(self) -> Literal[True]:
        return True

    @property
    def error(self) -> None:
        return None

    @property
    def provider_task_id(self) -> str | None:
        """The async-task provider's task id, when a task was submitted."""
        return self.persona.provider_task_id


class Failed(msgspec.Struct, frozen=True):
    """A request of a batch that made no persona (or none it can name): ``error`` says why,
    ``persona`` is None.

    ``attempts`` counts the requests actually sent (0 when the request failed before sending).
    """

    request: PersonaRequest
    error: PersonaError
    attempts: int = 0

    @property
    def ok(self) -> Literal[False]:
        return False

    @property
    def persona(self) -> None:
        return None

    @property
    def provider_task_id(self) -> str | None:
        """The async-task provider's task id, when a task was submitted."""
        return self.error.provider_task_id


#: How one request of a batch ended: ``Created`` or ``Failed``. ``outcome.ok``,
#: ``outcome.persona is not None``, ``outcome.error is None`` and ``isinstance`` each narrow it
#: for a type checker, so ``outcome.persona.persona_id`` needs no ``assert`` after ``if
#: outcome.ok:``. Both carry ``request``, ``persona``, ``error``, ``attempts`` and
#: ``provider_task_id``.
Outcome: TypeAlias = Created | Failed


def outcome_of(
    request: PersonaRequest, persona: Persona | None, error: PersonaError | None, attempts: int
) -> Outcome:
    """The ``Outcome`` of a request that ended with ``persona`` or else ``error``."""
    if persona is not None:
        return Created(request, persona, attempts)
    assert error is not None  # every request ends with one of the two
    return Failed(request, error, attempts)
