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
    OverloadedError,
    PersonaError,
    PersonaExistsError,
    ProviderConnectionError,
    ProviderTimeoutError,
    RateLimitError,
    RedisUnavailableError,
    ServerError,
    SourceFailedError,
    SourceNotReadyError,
    ValidationError,
)
from ._lane import LaneState, LaneStats
from ._models import Created, Failed, Outcome, Persona, PersonaRequest
from ._polling import PollPolicy
from ._providers import (
    AceDataProvider,
    ApiBoxProvider,
    ApikleyProvider,
    CometApiProvider,
    CrunProvider,
    DeerApiProvider,
    EvolinkProvider,
    KieJobsProvider,
    KieProvider,
    MountSeaProvider,
    Provider,
    SunoApiProvider,
    TtapiProvider,
)
from ._retry import RetryPolicy
from ._stream import OutcomeStream
from ._version import __version__

__all__ = [
    "CODE_TO_EXCEPTION",
    "AceDataProvider",
    "ApiBoxProvider",
    "ApikleyProvider",
    "AuthenticationError",
    "CometApiProvider",
    "Created",
    "CrunProvider",
    "DeerApiProvider",
    "EvolinkProvider",
    "Failed",
    "FeatureDisabledError",
    "GenerationFailedError",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "KieJobsProvider",
    "KieProvider",
    "LaneState",
    "LaneStats",
    "MaintenanceError",
    "MalformedResponseError",
    "MountSeaProvider",
    "MusicAccessError",
    "NotFoundError",
    "Outcome",
    "OutcomeStream",
    "OutcomeUnknownError",
    "OverloadedError",
    "Persona",
    "PersonaClient",
    "PersonaError",
    "PersonaExistsError",
    "PersonaRequest",
    "PollPolicy",
    "Provider",
    "ProviderConnectionError",
    "ProviderTimeoutError",
    "RateLimitError",
    "RedisUnavailableError",
    "RetryPolicy",
    "ServerError",
    "SourceFailedError",
    "SourceNotReadyError",
    "SunoApiProvider",
    "TtapiProvider",
    "ValidationError",
    "__version__",
]
