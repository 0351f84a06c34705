"""One request's journey through a lane: its encoded body, attempts, deadline, and whether
its caller still waits for it."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

from ._exceptions import PersonaError
from ._models import Persona, PersonaRequest
from ._ratelimit import Start

__all__ = ["Deliver", "OnSend", "OnSubmitted", "_Job"]

Deliver = Callable[["_Job", "Persona | None", "PersonaError | None"], None]
#: Called right before a request's first attempt; an awaitable it returns (a journal's sync) is
#: awaited before the request is sent.
OnSend = Callable[[PersonaRequest], "Awaitable[None] | None"]
#: Async-task providers: called with the provider's task id as soon as the submit is answered.
OnSubmitted = Callable[[PersonaRequest, str], None]


class _Job:
    """A request in a lane, from submission until ``deliver`` has been called once."""

    __slots__ = (
        "abandoned",
        "ambiguous",
        "armed",
        "attempts",
        "body",
        "deadline",
        "deliver",
        "done",
        "failures",
        "gone",
        "last_error",
        "last_start",
        "max_retries",
        "on_send",
        "on_submitted",
        "on_wire",
        "request",
        "since_maintenance",
        "start",
        "submitted",
        "tag",
    )

    def __init__(
        self,
        request: PersonaRequest,
        body: bytes,
        deliver: Deliver,
        tag: object,
        on_send: OnSend | None = None,
        on_submitted: OnSubmitted | None = None,
        *,
        now: float = 0.0,
        deadline: float = math.inf,
        min_attempt: float = 0.0,
        max_retries: int = 0,
    ) -> None:
        self.request = request
        self.on_send = on_send  # called once, right before the first attempt goes out
        self.on_submitted = on_submitted  # async-task providers: called with the task id
        self.last_error: PersonaError | None = None  # why the job is waiting to be retried
        self.body = body  # encoded once, resent as is
        self.deliver = deliver
        self.tag = tag  # the caller's bookkeeping (create_many's sequence number)
        self.attempts = 0  # requests actually sent
        self.failures = 0  # retried failures that count against max_retries
        self.max_retries = max_retries  # this call's, else the client's
        self.submitted = now  # on the lane's clock
        self.deadline = now + deadline  # the whole call, queueing and waits included
        self.last_start = self.deadline - min_attempt  # no attempt starts after this
        self.armed = False  # the lane's Deadlines will fail it at last_start if still unsent
        self.done = False  # deliver has been called
        self.gone = False  # done or abandoned: a queue holding it skips it
        self.ambiguous = False  # an earlier attempt was sent and lost: it may have succeeded
        self.abandoned = False  # the caller went away: never send it again
        self.on_wire = False  # an attempt is between the POST and its answer
        self.since_maintenance: float | None = None  # when this job first met a 455
        self.start: Start | None = None  # the rate limiter's record of the last attempt

    def abandon(self) -> None:
        """Never send this job again (its caller went away)."""
        self.abandoned = self.gone = True
