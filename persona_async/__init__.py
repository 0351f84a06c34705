"""persona_async: create Suno personas through third-party Suno API providers, asyncio-first.

One request, and many across providers within each provider's rate limit (inside an
``async def``, run with ``asyncio.run``)::

    async with PersonaClient([CrunProvider(), KieProvider()]) as client:
        persona = await client.create_persona(
            PersonaRequest(task_id, audio_id, name, description, provider="crun")
        )
        async for outcome in client.create_many(requests):
            ...
"""

from ._client import PersonaClient
from ._exceptions import (
    CODE_TO_EXCEPTION,
    AuthenticationError,
    FeatureDisabledError,
    GenerationFailedError,
    InsufficientCreditsError,
    InvalidRequestError,
    MaintenanceError,
    MalformedResponseError,
    MusicAccessError,
    NotFoundError,
    OutcomeUnknownError,
    PersonaError,
    PersonaExistsError,
    ProviderConnectionError,
    ProviderTimeoutError,
    RateLimitError,
    RedisUnavailableError,
    ServerError,
    ValidationError,
)
from ._lane import LaneState, LaneStats
from ._models import Outcome, Persona, PersonaRequest
from ._providers import (
    ApiBoxProvider,
    ApikleyProvider,
    CrunProvider,
    KieProvider,
    Provider,
    SunoApiProvider,
)
from ._stream import OutcomeStream
from ._version import __version__

__all__ = [
    "CODE_TO_EXCEPTION",
    "ApiBoxProvider",
    "ApikleyProvider",
    "AuthenticationError",
    "CrunProvider",
    "FeatureDisabledError",
    "GenerationFailedError",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "KieProvider",
    "LaneState",
    "LaneStats",
    "MaintenanceError",
    "MalformedResponseError",
    "MusicAccessError",
    "NotFoundError",
    "Outcome",
    "OutcomeStream",
    "OutcomeUnknownError",
    "Persona",
    "PersonaClient",
    "PersonaError",
    "PersonaExistsError",
    "PersonaRequest",
    "Provider",
    "ProviderConnectionError",
    "ProviderTimeoutError",
    "RateLimitError",
    "RedisUnavailableError",
    "ServerError",
    "SunoApiProvider",
    "ValidationError",
    "__version__",
]
