"""The public values: what a caller asks for, what a provider makes, and how one request ended."""

from __future__ import annotations

import msgspec

from ._exceptions import PersonaError

__all__ = ["Outcome", "Persona", "PersonaRequest"]


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


class Outcome(msgspec.Struct, frozen=True):
    """How one request of a batch ended: exactly one of ``persona`` and ``error`` is set.

    ``attempts`` counts the requests actually sent (0 when the request failed before sending).
    """

    request: PersonaRequest
    persona: Persona | None = None
    error: PersonaError | None = None
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.persona is not None

    @property
    def provider_task_id(self) -> str | None:
        """The async-task provider's task id, when a task was submitted (success or not)."""
        if self.persona is not None:
            return self.persona.provider_task_id
        return self.error.provider_task_id if self.error is not None else None
