"""One request's journey through a lane: its encoded body, attempts, deadline, and whether
its caller still waits for it."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import msgspec

from ._exceptions import PersonaError
from ._limiter import Start
from ._models import Persona, PersonaRequest

__all__ = ["Deliver", "OnSend", "OnSubmitted", "_Job"]

Deliver = Callable[["_Job", "Persona | None", "PersonaError | None"], None]
#: Called right before a request's first attempt; an awaitable it returns (a journal's sync) is
#: awaited before the request is sent.
OnSend = Callable[[PersonaRequest], "Awaitable[None] | None"]
#: Async-task providers: called with the provider's task id as soon as the submit is answered.
OnSubmitted = Callable[[PersonaRequest, str], None]


class _Job(msgspec.Struct, eq=False):
    """A request in a lane, from submission until ``deliver`` has been called once.

    A msgspec Struct (built in C, one per request); ``eq=False`` keeps identity equality and
    hashing, so a job can sit in sets and be removed from queues as itself.
    """

    request: PersonaRequest
    body: bytes  # encoded once, resent as is
    deliver: Deliver
    tag: object = None  # the caller's bookkeeping (create_many's sequence number)
    on_send: OnSend | None = None  # called once, right before the first attempt goes out
    on_submitted: OnSubmitted | None = None  # async-task providers: called with the task id
    submitted: float = 0.0  # on the lane's clock
    deadline: float = math.inf  # the whole call, queueing and waits included
    last_start: float = math.inf  # no attempt starts after this
    max_retries: int = 0  # this call's, else the client's
    last_error: PersonaError | None = None  # why the job is waiting to be retried
    attempts: int = 0  # requests actually sent
    failures: int = 0  # retried failures that count against max_retries
    armed: bool = False  # the lane's Deadlines will fail it at last_start if still unsent
    done: bool = False  # deliver has been called
    gone: bool = False  # done or abandoned: a queue holding it skips it
    ambiguous: bool = False  # an earlier attempt was sent and lost: it may have succeeded
    abandoned: bool = False  # the caller went away: never send it again
    on_wire: bool = False  # an attempt is between the POST and its answer
    since_maintenance: float | None = None  # when this job first met a 455
    start: Start | None = None  # the rate limiter's record of the last attempt

    def abandon(self) -> None:
        """Never send this job again (its caller went away)."""
        self.abandoned = self.gone = True
