"""What every provider states: where it lives, how it authenticates, its rules and its wire.

A provider is configuration plus two pure functions (``encode`` and ``decode``); it does no I/O.
Subclasses declare their differences as class variables, so a new provider is one small file.
"""

from __future__ import annotations

import ipaddress
import operator
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import msgspec

from .._exceptions import CODE_TO_EXCEPTION, PersonaError
from .._models import PersonaRequest
from .._polling import DEFAULT_POLL_POLICY, PollPolicy
from ._rules import OPTIONAL_FIELDS, RequestRules
from ._status import StatusRoute
from ._styles import Reply, ReplyStyle

if TYPE_CHECKING:
    from .._limiter import SharedLimiter

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_RATE_LIMIT",
    "DEFAULT_RATE_PERIOD",
    "DEFAULT_TIMEOUT",
    "OPTIONAL_FIELDS",
    "Provider",
    "PublicFlagProvider",
    "Reply",
    "Wire",
]

#: Published by sunoapi.org and kie.ai (20 per 10 s); crun and apikley publish none, so the
#: same conservative figure is the default everywhere. Pass ``rate_limit=None`` for no limit.
DEFAULT_RATE_LIMIT = 20
DEFAULT_RATE_PERIOD = 10.0
DEFAULT_MAX_CONCURRENCY = 16
#: Seconds for one attempt, from connecting to the last byte of the reply.
DEFAULT_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 10.0


_REQUEST_FIELDS = (
    "task_id",
    "audio_id",
    "name",
    "description",
    "vocal_start",
    "vocal_end",
    "style",
)


class Wire:
    """A provider's wire format: a msgspec ``body`` Struct and a reply style, built once.

    ``body`` has the request's field names as attributes (any of ``task_id``, ``audio_id``,
    ``name``, ``description``, ``vocal_start``, ``vocal_end``, ``style``), renamed on the wire
    as the provider spells them; a field the contract does not take is simply not declared.
    Values the request does not carry (``is_public``, ``clips``) come in as ``extra``.
    ``reply`` is one of the styles in ``_styles.py``.
    """

    __slots__ = ("_body", "_encode", "_fields", "_positional", "_values", "decode", "reply")

    def __init__(self, *, body: type[Any], reply: ReplyStyle) -> None:
        self._body = body
        fields = tuple(f for f in body.__struct_fields__ if f in _REQUEST_FIELDS)
        self._fields = fields
        #: The request's values of those fields as one tuple, in one C call per request.
        self._values: Callable[[PersonaRequest], tuple[Any, ...]] = _getter(fields)
        #: When they lead the body, they are passed positionally: no dict per request.
        self._positional = body.__struct_fields__[: len(fields)] == fields
        self._encode = msgspec.json.Encoder().encode
        self.reply = reply
        #: ``(status, body) -> Reply``: the style's decoder, bound once (it runs per reply).
        self.decode: Callable[[int, bytes], Reply] = reply.decode

    def encode(self, request: PersonaRequest, **extra: Any) -> bytes:
        if self._positional:
            return self._encode(self._body(*self._values(request), **extra))
        values = dict(zip(self._fields, self._values(request), strict=True))
        return self._encode(self._body(**values, **extra))


def _getter(fields: tuple[str, ...]) -> Callable[[PersonaRequest], tuple[Any, ...]]:
    if len(fields) > 1:
        return operator.attrgetter(*fields)
    return lambda request: tuple(getattr(request, f) for f in fields)


def request_struct(cls: type[Any], request: PersonaRequest, **extra: Any) -> Any:
    """``cls`` (a wire Struct) built from the request fields it declares, plus ``extra``: for a
    contract that nests them (kie's ``input``, Evolink's ``model_params``)."""
    fields = cls.__struct_fields__
    return cls(**{f: getattr(request, f) for f in _REQUEST_FIELDS if f in fields}, **extra)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_base_url(base_url: str, owner: str) -> str:
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError(f"{owner}: base_url must be an http(s) URL with a host")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ValueError(f"{owner}: plain http:// is only allowed for loopback hosts; use https://")
    if parts.username or parts.password or parts.query or parts.fragment:
        # Credentials or tokens in a URL end up in logs; the key belongs in its header.
        raise ValueError(f"{owner}: base_url must not carry credentials, a query or a fragment")
    return base_url.rstrip("/")


class Provider(RequestRules):
    """Base of every provider. Keyword-only configuration, defaults visible in the signature.

    ``name`` is the lane name (defaults to ``kind``), so two accounts at one provider can coexist
    as two lanes. ``rate_limit`` requests at most start in any ``rate_period`` seconds
    (``DEFAULT_RATE_PERIOD`` when a limit is given without one). ``rate_limit=None`` learns the
    provider's limit from its 429s; without a ``rate_period`` too, it also measures the window
    the provider counts over, rather than assume one.
    ``retry_ambiguous`` lets the SDK resend a request whose first attempt may have succeeded;
    it only matters for providers without duplicate detection. ``limiter`` shares the rate
    limit with other processes using the same key (see ``persona_async.redis``).
    ``wait_for_source`` (seconds, providers with a status endpoint only) makes the lane wait for
    the request's source song to finish before creating; ``poll`` paces those status queries.
    """

    #: Short identifier used in config files and as the default lane name.
    kind: ClassVar[str]
    #: Environment variable the key is read from when ``api_key`` is not given.
    api_key_env: ClassVar[str]
    default_base_url: ClassVar[str]
    #: How much of the contract the provider's own docs publish: "in full", or "partly: what is
    #: missing" (as read from its public pages), for the README and ``persona-async --help``.
    documentation: ClassVar[str]
    path: ClassVar[str]
    wire: ClassVar[Wire]
    #: True when a repeated create is answered with 409 instead of a second persona.
    detects_duplicates: ClassVar[bool] = False
    #: Provider code (an int, or a string code such as AceData's) -> the error it means.
    errors: ClassVar[Mapping[Any, type[PersonaError]]] = CODE_TO_EXCEPTION
    #: ``"sync"``: the reply carries the persona id; ``"task"``: it carries a task to poll.
    mode: ClassVar[str] = "sync"
    # Request rules (max_lengths, vocal_window, vocal_step, unsupported_fields, ...): _rules.py.
    #: Async-task providers: seconds from submit to the first status query (their estimate).
    estimated_time: ClassVar[float] = 0.0
    #: The provider's task status endpoint: asked whether a source song is finished
    #: (``wait_for_source``) and, for an async-task provider, for its persona task. None when it
    #: has none, and then ``wait_for_source`` is refused.
    source_status: ClassVar[StatusRoute | None] = None
    #: Seconds a task may answer a state word its contract does not document before the SDK
    #: stops waiting on it as "still running" (``MalformedResponseError``).
    unknown_state_patience: ClassVar[float] = 300.0

    __slots__ = (
        "_api_key",
        "base_url",
        "connect_timeout",
        "limiter",
        "max_concurrency",
        "measures_window",
        "name",
        "poll",
        "rate_limit",
        "rate_period",
        "retry_ambiguous",
        "timeout",
        "url",
        "wait_for_source",
    )

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        name: str | None = None,
        rate_limit: int | None = DEFAULT_RATE_LIMIT,
        rate_period: float | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        retry_ambiguous: bool = False,
        limiter: SharedLimiter | None = None,
        wait_for_source: float | None = None,
        poll: PollPolicy = DEFAULT_POLL_POLICY,
    ) -> None:
        owner = type(self).__name__
        if name is not None and not name.strip():
            raise ValueError(f"{owner}: name must be a non-empty lane name (or None: the kind)")
        key = api_key if api_key is not None else os.environ.get(self.api_key_env, "")
        if not key:
            raise ValueError(f"{owner}: no API key; pass api_key= or set {self.api_key_env}")
        if any(c in key for c in "\r\n"):
            raise ValueError(f"{owner}: the API key contains a line break")
        if (rate_limit is not None and rate_limit < 1) or (
            rate_period is not None and not rate_period > 0
        ):
            raise ValueError(f"{owner}: rate_limit must be >= 1 and rate_period > 0")
        if max_concurrency < 1 or not timeout > 0 or not connect_timeout > 0:
            raise ValueError(f"{owner}: max_concurrency must be >= 1 and timeouts > 0")
        self._api_key = key  # never in a repr, log line, URL or error
        # e.g. CRUN_BASE_URL: a test or staging endpoint without touching the code.
        env_url = os.environ.get(f"{self.env_prefix()}_BASE_URL")
        self.base_url = _check_base_url(base_url or env_url or self.default_base_url, owner)
        self.url = self.base_url + self.path
        self.name = name or self.kind
        self.rate_limit = rate_limit
        self.rate_period = float(DEFAULT_RATE_PERIOD if rate_period is None else rate_period)
        #: No limit and no window given: the lane measures the provider's window on its first
        #: 429 (``_discovery``) instead of assuming ``rate_period``.
        self.measures_window = rate_limit is None and rate_period is None
        self.max_concurrency = max_concurrency
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.retry_ambiguous = retry_ambiguous
        self.limiter = limiter  # shared across processes; None: this process's own window
        if wait_for_source is not None and self.source_status is None:
            raise ValueError(f"{owner}: wait_for_source needs a status endpoint; it has none")
        if wait_for_source is not None and not wait_for_source > 0:
            raise ValueError(f"{owner}: wait_for_source must be > 0 seconds (or None)")
        self.wait_for_source = wait_for_source  # seconds to wait for the source song, or None
        self.poll = poll  # status queries: their own budget and schedule

    @classmethod
    def env_prefix(cls) -> str:
        """``kind`` as a shell can spell it, the prefix of this provider's environment
        variables: upper case, ``-`` turned to ``_`` (``kie-jobs``: ``KIE_JOBS``)."""
        return cls.kind.upper().replace("-", "_")

    def __repr__(self) -> str:
        rate = f"{self.rate_limit}/{self.rate_period:g}s" if self.rate_limit else "unlimited"
        return (
            f"{type(self).__name__}(name={self.name!r}, base_url={self.base_url!r}, "
            f"rate={rate}, max_concurrency={self.max_concurrency}, api_key='***')"
        )

    def __reduce__(self) -> Any:
        raise TypeError(f"{type(self).__name__} holds an API key and is not picklable")

    @property
    def key_fingerprint(self) -> str:
        """A stable, non-reversible id of the key: for sharing state without the key itself."""
        import hashlib

        digest = hashlib.sha256(f"{self.kind}\0{self._api_key}".encode()).hexdigest()
        return digest[:24]

    # -- the wire: subclasses implement -------------------------------------------------------

    def auth_headers(self) -> dict[str, str]:
        """The headers that carry the key; sent only to ``base_url``."""
        raise NotImplementedError

    def encode(self, request: PersonaRequest) -> bytes:
        """The JSON body for ``request`` (already validated)."""
        return self.wire.encode(request)

    def decode(self, status: int, body: bytes) -> Reply:
        """Parse a reply; raise msgspec's ``ValidationError``/``DecodeError`` if it is not the
        provider's shape."""
        return self.wire.decode(status, body)

    def task_url(self, task_id: str) -> str:
        """The status URL of a task (a source song, or an async-task provider's persona)."""
        if self.source_status is None:
            raise NotImplementedError(f"{type(self).__name__} has no status endpoint")
        return self.source_status.url(self.base_url, task_id)

    def classify(self, code: int | str, message: str) -> int | str:
        """The table code a reply stands for; providers with code quirks override this."""
        return code

    def redact(self, text: str) -> str:
        """``text`` with this provider's key blanked out (for messages echoed by providers)."""
        return text.replace(self._api_key, "***") if self._api_key in text else text


class PublicFlagProvider(Provider):
    """A provider whose create takes ``is_public`` (the gateways, MountSea). It defaults to
    False: a persona stays private on the upstream account unless asked."""

    __slots__ = ("is_public",)

    def __init__(self, *, is_public: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        if not isinstance(is_public, bool):
            raise ValueError(f"{type(self).__name__}: is_public must be True or False")
        self.is_public = is_public

    def encode(self, request: PersonaRequest) -> bytes:
        return self.wire.encode(request, is_public=self.is_public)
