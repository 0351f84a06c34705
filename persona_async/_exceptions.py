"""Every error the SDK raises, and the table that maps provider codes to them.

The tree::

    PersonaError                        code=None unless the provider sent one
    ├── AuthenticationError             401  the key is missing or wrong
    ├── InsufficientCreditsError        402  (and the family's 429 "credits" message)
    ├── NotFoundError                   404
    ├── PersonaExistsError              409  this audio already has a persona
    ├── ValidationError                 422  the provider rejected the request
    │   ├── InvalidRequestError              rejected *before* sending (also a ValueError)
    │   └── SourceNotReadyError              the source song is still generating (retryable)
    ├── RateLimitError                  429  (and the family's legacy 405/430)
    ├── MusicAccessError                451  the provider could not fetch the audio
    ├── MaintenanceError                455
    ├── ServerError                     500
    │   └── OverloadedError             503  refused for load: not processed
    ├── GenerationFailedError           501
    ├── FeatureDisabledError            505
    ├── MalformedResponseError               a reply that is not the documented envelope
    ├── ProviderConnectionError              also an OSError
    ├── ProviderTimeoutError                 also a TimeoutError
    ├── OutcomeUnknownError                  the request may or may not have made a persona
    ├── SourceFailedError                    the source song's music task failed for good
    └── RedisUnavailableError                a shared limiter's Redis is down: nothing was sent

Every error carries ``code``, ``http_status``, ``provider``, ``message``, ``retryable``,
``task_id``, ``audio_id``, ``attempts`` and ``provider_task_id`` (async-task providers), never an
API key, and survives ``pickle``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

__all__ = [
    "CODE_TO_EXCEPTION",
    "HTTP_STATUS_TO_EXCEPTION",
    "LANE_STOPPERS",
    "AuthenticationError",
    "FeatureDisabledError",
    "GenerationFailedError",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "MaintenanceError",
    "MalformedResponseError",
    "MusicAccessError",
    "NotFoundError",
    "OutcomeUnknownError",
    "OverloadedError",
    "PersonaError",
    "PersonaExistsError",
    "ProviderConnectionError",
    "ProviderTimeoutError",
    "RateLimitError",
    "RedisUnavailableError",
    "SOURCE_NOT_READY_WORDINGS",
    "THROTTLES",
    "ServerError",
    "SourceFailedError",
    "SourceNotReadyError",
    "ValidationError",
    "source_not_ready",
]


class PersonaError(Exception):
    """Root of every error this package raises.

    ``retryable`` says whether the same request could succeed if sent again; whether the SDK
    *does* resend it also depends on whether the first attempt may already have made a persona
    (see ``OutcomeUnknownError``).
    """

    code: int | None
    #: The code this class stands for in ``CODE_TO_EXCEPTION`` (None for client-side errors).
    default_code: ClassVar[int | None] = None
    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        http_status: int | None = None,
        provider: str | None = None,
        task_id: str | None = None,
        audio_id: str | None = None,
        retryable: bool | None = None,
        attempts: int = 1,
        provider_task_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = self.default_code if code is None else code
        self.http_status = http_status
        self.provider = provider
        self.task_id = task_id
        self.audio_id = audio_id
        self.retryable = self.default_retryable if retryable is None else retryable
        self.attempts = attempts
        #: The async-task provider's task this error is about (look it up there), or None.
        self.provider_task_id = provider_task_id

    def __str__(self) -> str:
        where = f"[{self.provider}] " if self.provider else ""
        code = f"{self.code} " if self.code is not None else ""
        ids = ", ".join(
            f"{name}={value!r}"
            for name, value in (("task_id", self.task_id), ("audio_id", self.audio_id))
            if value is not None
        )
        return f"{where}{code}{self.message}" + (f" ({ids})" if ids else "")

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, code={self.code!r}, "
            f"http_status={self.http_status!r}, provider={self.provider!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception pickles as cls(*args); our keyword-only fields travel in the state dict.
        return (type(self), (self.message,), self.__dict__)

    def for_request(self, task_id: str | None, audio_id: str | None) -> PersonaError:
        """A copy of this error for another request of the same lane (used when a lane stops)."""
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.args = self.args
        clone.task_id, clone.audio_id, clone.attempts = task_id, audio_id, 0
        clone.provider_task_id = None
        return clone


class AuthenticationError(PersonaError):
    """401: the API key is missing, wrong or revoked. The lane stops."""

    default_code = 401


class InsufficientCreditsError(PersonaError):
    """402: the account has no credits left. The lane stops."""

    default_code = 402


class NotFoundError(PersonaError):
    """404: the resource or endpoint does not exist (often a wrong ``base_url``)."""

    default_code = 404


class PersonaExistsError(PersonaError):
    """409: this audio id already has a persona (the sunoapi.org family allows one per audio).

    ``after_ambiguous_attempt`` is True when an earlier attempt of *this* call was sent and then
    lost (timeout, reset): that attempt may be the one that created the persona.
    """

    default_code = 409

    def __init__(self, message: str, *, after_ambiguous_attempt: bool = False, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.after_ambiguous_attempt = after_ambiguous_attempt

    def after_ambiguous_attempt_error(self) -> PersonaExistsError:
        """This 409, as the answer to a resend of a request whose earlier attempt was lost."""
        return PersonaExistsError(
            f"{self.message}; an earlier attempt of this request was sent and lost, "
            "so that attempt may have created this persona",
            after_ambiguous_attempt=True,
            code=self.code,
            http_status=self.http_status,
            provider=self.provider,
        )


class ValidationError(PersonaError):
    """422: the provider rejected the parameters; often "task not found / not ready"."""

    default_code: ClassVar[int | None] = 422


class InvalidRequestError(ValidationError, ValueError):
    """The request broke a documented rule and was **not sent**. ``field`` names the field."""

    default_code: ClassVar[int | None] = None

    def __init__(self, message: str, *, field: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.field = field


class SourceNotReadyError(ValidationError):
    """The source song (the request's ``task_id``) is not fully generated yet: a 422 whose
    message says so (see ``SOURCE_NOT_READY_WORDINGS``), or a ``wait_for_source`` wait that ran
    out. Retryable: the same request can succeed once the song is done, so a CLI rerun sends it
    again; the lane does not resend it by itself (a song takes minutes, not a backoff)."""

    default_retryable = True


class RateLimitError(PersonaError):
    """429 (or the family's legacy 405/430): too many requests. ``retry_after`` in seconds."""

    default_code = 429
    default_retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class MusicAccessError(PersonaError):
    """451: the provider could not fetch the source audio; retrying the same audio won't help."""

    default_code = 451


class MaintenanceError(PersonaError):
    """455: the provider is down for maintenance."""

    default_code = 455
    default_retryable = True


class ServerError(PersonaError):
    """500: the provider failed unexpectedly."""

    default_code = 500
    default_retryable = True


class OverloadedError(ServerError):
    """503, or a gateway's 502/504 page with a ``Retry-After``: the provider, or a limiter in front
    of it (nginx's ``limit_req`` answers 503 unless told otherwise), refused the request for load
    and did not process it. The lane slows down as for a 429 and resends it; ``retry_after`` in
    seconds when given. Only a provider that answers nothing else for a while fails a call with
    it, as a ``ServerError``."""

    default_code = 503

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class GenerationFailedError(PersonaError):
    """501: the provider tried and failed to generate the persona."""

    default_code = 501


class FeatureDisabledError(PersonaError):
    """505: the provider has switched this feature off."""

    default_code = 505


class _MaybeSent(PersonaError):
    # `sent` is True when the request may have reached the provider before the failure, so a
    # persona may exist; a failure with sent=False is always safe to retry.
    def __init__(self, message: str, *, sent: bool = True, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.sent = sent


class MalformedResponseError(_MaybeSent):
    """The reply was not the documented envelope: HTML gateway pages, empty or truncated bodies,
    JSON of the wrong shape, oversized bodies, redirects. ``excerpt`` is a short, safe prefix."""

    def __init__(self, message: str, *, excerpt: str = "", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.excerpt = excerpt


class ProviderConnectionError(_MaybeSent, OSError):
    """The connection failed. ``sent`` tells whether the request may have reached the provider."""


class ProviderTimeoutError(_MaybeSent, TimeoutError):
    """No reply in time. ``sent`` tells whether the request may have reached the provider."""


class OutcomeUnknownError(PersonaError):
    """The request was sent and then lost; a persona may or may not exist. Not retried by
    default for providers without duplicate detection (crun). ``request`` is what was sent;
    ``__cause__`` is the transport error."""

    def __init__(self, message: str, *, request: Any = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.request = request


class SourceFailedError(PersonaError):
    """The source song's music task failed (``wait_for_source`` read it on the provider's status
    endpoint): no persona can be made from it, so nothing was sent. ``code`` and ``message``
    carry what the provider said about the failure; ``status`` is its status word."""

    def __init__(self, message: str, *, status: str = "", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.status = status


class RedisUnavailableError(PersonaError):
    """The Redis behind a shared rate limiter (``persona_async.redis``) could not be used, so
    the request was **not sent**: the lane fails closed rather than drop its rate guarantee.
    ``url`` names the server with any password replaced by ``***``. Retryable once Redis is
    back."""

    default_retryable = True

    def __init__(self, message: str, *, url: str = "", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.url = url


def _table(*classes: type[PersonaError]) -> Mapping[int, type[PersonaError]]:
    return MappingProxyType({cls.default_code: cls for cls in classes if cls.default_code})


#: Provider code -> exception class, for every code crun and the sunoapi.org family document.
CODE_TO_EXCEPTION: Mapping[int, type[PersonaError]] = _table(
    AuthenticationError,
    InsufficientCreditsError,
    NotFoundError,
    PersonaExistsError,
    ValidationError,
    RateLimitError,
    MusicAccessError,
    MaintenanceError,
    ServerError,
    GenerationFailedError,
    FeatureDisabledError,
)

#: HTTP status -> exception class, for providers whose errors are real HTTP statuses (AceData,
#: Evolink, TTAPI, the Suno-API gateways, MountSea). A 504 with a body is a gateway timeout:
#: the provider may have made the persona, so it is an ambiguous ``ProviderTimeoutError``.
HTTP_STATUS_TO_EXCEPTION: Mapping[int, type[PersonaError]] = MappingProxyType(
    {
        **CODE_TO_EXCEPTION,
        400: ValidationError,
        502: ServerError,
        503: OverloadedError,
        504: ProviderTimeoutError,
    }
)

#: How providers word "the source song is not finished yet" in a 422 (lowercase substrings):
#: the family's persona page ("If the music is still generating, this endpoint will return a
#: failure"; "ensure the music generation task is fully completed"), kie's sibling endpoints
#: ("record status is not success"), and "not complete", as users have met it. crun's "task_id
#: not found" is NOT here: it also means a wrong task id, and only the status endpoint
#: (``wait_for_source``) can tell the two apart.
SOURCE_NOT_READY_WORDINGS: tuple[str, ...] = (
    "still generating",
    "fully complete",
    "not complete",
    "not success",
)


def source_not_ready(message: str) -> bool:
    """True when a 422's ``message`` says the source song is still being generated."""
    text = message.lower()
    return any(wording in text for wording in SOURCE_NOT_READY_WORDINGS)


#: A provider's "slow down": the lane cools, a status poll slows, and neither counts as a failure.
THROTTLES: tuple[type[RateLimitError], type[OverloadedError]] = (RateLimitError, OverloadedError)
#: Errors about the account, not the request: the lane stops and sends nothing more.
LANE_STOPPERS: tuple[type[AuthenticationError], type[InsufficientCreditsError]] = (
    AuthenticationError,
    InsufficientCreditsError,
)
