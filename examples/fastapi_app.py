"""Personas from a FastAPI handler: one client for the app, a deadline for each request.

Run it (``pip install fastapi uvicorn``; the key is read from ``CRUN_API_KEY``)::

    CRUN_API_KEY=... uvicorn examples.fastapi_app:app

    curl -X POST localhost:8000/personas -H 'content-type: application/json' \\
         -d '{"task_id": "task_123", "audio_id": "clip_abc", "name": "Neon Siren",
              "description": "Smoky late-night R&B vocalist"}'

The lifespan owns the client: every request shares its rate limit and connections, and it is
closed when the app stops. Each call gets ``HANDLER_DEADLINE`` seconds, queueing and waits
included. A provider in maintenance or throttling us becomes a 503 with ``Retry-After``, so
the caller's client can come back later instead of holding a connection open; a persona that
is created after its caller hung up is logged (and could be recorded in ``record_orphan``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from persona_async import (
    CrunProvider,
    MaintenanceError,
    Outcome,
    PersonaClient,
    PersonaError,
    PersonaExistsError,
    PersonaRequest,
    Provider,
    RateLimitError,
    ValidationError,
)

#: Seconds one request may take, from the moment the handler submits it.
HANDLER_DEADLINE = 10.0
#: Retry-After for a 503 when the provider gave none (a maintenance window usually lasts minutes).
DEFAULT_RETRY_AFTER = 60

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

    @app.post("/personas", status_code=201)
    async def create_persona(body: PersonaIn, request: Request) -> dict[str, str]:
        client: PersonaClient = request.app.state.personas
        persona = await client.create_persona(
            PersonaRequest(body.task_id, body.audio_id, body.name, body.description),
            deadline=deadline,
        )
        return {"persona_id": persona.persona_id, "provider": persona.provider}

    @app.exception_handler(PersonaError)
    async def persona_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, PersonaError)
        error = {"error": type(exc).__name__, "message": exc.message}
        if isinstance(exc, (MaintenanceError, RateLimitError)):
            wait = getattr(exc, "retry_after", None) or DEFAULT_RETRY_AFTER
            headers = {"Retry-After": str(math.ceil(wait))}
            return JSONResponse(error, status_code=503, headers=headers)
        if isinstance(exc, ValidationError):  # our rules, or the provider's (unknown task)
            return JSONResponse({**error, "field": getattr(exc, "field", None)}, status_code=422)
        if isinstance(exc, PersonaExistsError):
            return JSONResponse(error, status_code=409)
        return JSONResponse(error, status_code=502)

    return app


app = create_app()
