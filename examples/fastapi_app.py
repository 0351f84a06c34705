"""Personas from a FastAPI handler: one client for the app, a deadline for each request.

Run it (``pip install fastapi uvicorn``; the key is read from ``CRUN_API_KEY``)::

    CRUN_API_KEY=... uvicorn examples.fastapi_app:app

    curl -X POST localhost:8000/personas -H 'content-type: application/json' \\
         -d '{"task_id": "task_123", "audio_id": "clip_abc", "name": "Neon Siren",
              "description": "Smoky late-night R&B vocalist"}'

The lifespan owns the client: every request shares its rate limit and connections, and it is
closed when the app stops. Each call gets ``HANDLER_DEADLINE`` seconds, queueing and waits
included. A provider in maintenance or throttling us, or a request the lane could not send in
time, becomes a 503 with ``Retry-After``, so the caller's client can come back later instead
of holding a connection open.

uvicorn does not cancel a handler whose client hung up: the handler watches for the hang-up
itself and cancels its call. A request not yet sent is then never sent; one already sent runs
to its end, and the persona it makes for nobody goes to ``record_orphan``. The same POST sent
again joins that request, or gets the persona it made, instead of making a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from persona_async import (
    CrunProvider,
    MaintenanceError,
    Outcome,
    OverloadedError,
    PersonaClient,
    PersonaError,
    PersonaExistsError,
    PersonaRequest,
    Provider,
    ProviderTimeoutError,
    RateLimitError,
    RedisUnavailableError,
    ValidationError,
)

#: Seconds one request may take, from the moment the handler submits it.
HANDLER_DEADLINE = 10.0
#: Retry-After for a 503 when the provider gave none (a maintenance window usually lasts minutes).
DEFAULT_RETRY_AFTER = 60
#: Retry-After for a 503 when the request was not sent in time (a busy queue): come back soon.
BUSY_RETRY_AFTER = 5
#: The status of an answer nobody reads (nginx's "client closed request").
CLIENT_CLOSED = 499

T = TypeVar("T")

logger = logging.getLogger("persona_app")


class PersonaIn(BaseModel):
    task_id: str
    audio_id: str
    name: str
    description: str


def record_orphan(lane: str, outcome: Outcome) -> None:
    """A persona made (or maybe made) for a caller that hung up: keep it for a later claim."""
    persona_id = outcome.persona.persona_id if outcome.persona else None
    logger.warning("orphan on %s: %s -> %s", lane, outcome.request.audio_id, persona_id)


def create_app(
    providers: Callable[[], Sequence[Provider]] = lambda: [CrunProvider()],
    *,
    deadline: float = HANDLER_DEADLINE,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with PersonaClient(providers(), on_orphan=record_orphan) as client:
            app.state.personas = client
            yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/personas", status_code=201, response_model=None)
    async def create_persona(body: PersonaIn, request: Request) -> dict[str, str] | Response:
        client: PersonaClient = request.app.state.personas
        persona = await unless_hung_up(
            request,
            client.create_persona(
                PersonaRequest(body.task_id, body.audio_id, body.name, body.description),
                deadline=deadline,
            ),
        )
        if persona is None:  # nobody is listening; a persona made goes to record_orphan
            return Response(status_code=CLIENT_CLOSED)
        return {"persona_id": persona.persona_id, "provider": persona.provider}

    @app.exception_handler(PersonaError)
    async def persona_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PersonaError)
        error = {"error": type(exc).__name__, "message": exc.message}
        if isinstance(exc, (MaintenanceError, RateLimitError, OverloadedError)):
            wait = getattr(exc, "retry_after", None) or DEFAULT_RETRY_AFTER
            headers = {"Retry-After": str(math.ceil(wait))}
            return JSONResponse(error, status_code=503, headers=headers)
        if isinstance(exc, (ProviderTimeoutError, RedisUnavailableError)) and exc.retryable:
            # Not sent in time (or still in flight for another caller): the same POST later
            # is sent, or joins that request, or gets the persona it made.
            headers = {"Retry-After": str(BUSY_RETRY_AFTER)}
            return JSONResponse(error, status_code=503, headers=headers)
        if isinstance(exc, ValidationError):  # our rules, or the provider's (unknown task)
            return JSONResponse({**error, "field": getattr(exc, "field", None)}, status_code=422)
        if isinstance(exc, PersonaExistsError):
            return JSONResponse(error, status_code=409)
        return JSONResponse(error, status_code=502)

    return app


async def unless_hung_up(request: Request, call: Awaitable[T]) -> T | None:
    """``call``'s result, or None if the HTTP client hung up first: ``call`` is then cancelled.

    uvicorn tells a hang-up only through ``receive()``: once the body is read, the next
    message is ``http.disconnect``, when the client closes its connection.
    """
    task = asyncio.ensure_future(call)
    watch = asyncio.ensure_future(_hang_up(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()  # unsent: never sent; sent: runs on, what it makes reaches on_orphan
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return None if task.cancelled() else task.result()


async def _hang_up(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


app = create_app()
