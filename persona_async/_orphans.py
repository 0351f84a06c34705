"""Orphans: answers that came back after their caller left.

A ``create_persona`` caller may be cancelled (its HTTP client went away, an ``asyncio.timeout``
fired) while its request is on the wire. The attempt runs to its end, since cutting it would
only make the outcome unknown, and whatever it made must not vanish in silence: a persona
created for nobody, or an outcome nobody can know, is logged at WARNING on the
``persona_async`` logger with the lane, task id, audio id and persona id, and handed to the
client's ``on_orphan`` hook. A request that was never sent, or that the provider refused, made
nothing and is not an orphan.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ._exceptions import OutcomeUnknownError, PersonaError, _MaybeSent
from ._job import _Job
from ._models import Outcome, Persona, outcome_of

__all__ = ["OnOrphan", "report_orphan"]

logger = logging.getLogger("persona_async")

#: ``on_orphan(lane, outcome)``: ``outcome.persona`` is set when a persona was made, else
#: ``outcome.error`` says why the outcome is unknown.
OnOrphan = Callable[[str, Outcome], None]


def report_orphan(
    lane: str,
    job: _Job,
    persona: Persona | None,
    error: PersonaError | None,
    hook: OnOrphan | None,
) -> None:
    """Log and hand on the answer of a request whose caller left, if it may have made a persona."""
    request = job.request
    if persona is not None:
        logger.warning(
            "lane %s: persona %s was created for task_id=%r audio_id=%r after its caller left",
            lane,
            persona.persona_id,
            request.task_id,
            request.audio_id,
        )
    elif job.attempts and (
        job.ambiguous
        or isinstance(error, OutcomeUnknownError)
        or (isinstance(error, _MaybeSent) and error.sent)
    ):
        logger.warning(
            "lane %s: outcome unknown for task_id=%r audio_id=%r after its caller left "
            "(%s); a persona may exist",
            lane,
            request.task_id,
            request.audio_id,
            type(error).__name__ if error is not None else "no answer",
        )
    else:
        return  # never sent, or refused: nothing was made
    if hook is not None:
        try:
            hook(lane, outcome_of(request, persona, error, job.attempts))
        except Exception:
            # The hook is the application's; a bug there must not cost the lane anything.
            logger.exception("lane %s: the on_orphan hook raised", lane)
