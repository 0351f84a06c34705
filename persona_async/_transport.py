"""The session pool: one long-lived aiohttp session per lane, and the only place aiohttp is touched.

Every aiohttp exception is translated here, by one ordered table, into a ``PersonaError`` that
says whether the request may have reached the provider (``sent``): a connect failure is always
safe to retry, a reset after sending is not.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NamedTuple

import aiohttp

from ._exceptions import (
    MalformedResponseError,
    PersonaError,
    ProviderConnectionError,
    ProviderTimeoutError,
    _MaybeSent,
)
from ._providers import Provider
from ._version import __version__

if TYPE_CHECKING:
    from aiohttp.client_reqrep import ClientRequest
    from aiohttp.connector import Connection
    from aiohttp.tracing import Trace

__all__ = [
    "EXCERPT_CHARS",
    "MAX_BODY_BYTES",
    "USER_AGENT",
    "RawResponse",
    "SessionPool",
    "excerpt",
    "hook_sends",
]

logger = logging.getLogger("persona_async")

USER_AGENT = f"persona-async/{__version__}"
#: A persona reply is a few hundred bytes; anything past this is not the documented envelope.
MAX_BODY_BYTES = 256 * 1024
#: Shorter than any common server idle timeout, so a pooled connection is not reused just as
#: the server drops it (which would turn a harmless stale socket into an ambiguous create).
KEEPALIVE_TIMEOUT = 10.0
#: Characters of a bad reply kept on ``MalformedResponseError``: enough to recognise it.
EXCERPT_CHARS = 160

# (aiohttp exception, our class, may the request have been sent?, retryable?)
# First match wins: subclasses come before their bases.
_EXCEPTION_TABLE: tuple[tuple[type[BaseException], type[_MaybeSent], bool, bool], ...] = (
    (aiohttp.ClientConnectorCertificateError, ProviderConnectionError, False, False),
    (aiohttp.ClientConnectorSSLError, ProviderConnectionError, False, False),
    (aiohttp.ConnectionTimeoutError, ProviderTimeoutError, False, True),
    (aiohttp.ClientConnectorError, ProviderConnectionError, False, True),
    (aiohttp.SocketTimeoutError, ProviderTimeoutError, True, True),
    (aiohttp.ServerTimeoutError, ProviderTimeoutError, True, True),
    (asyncio.TimeoutError, ProviderTimeoutError, True, True),
    (aiohttp.ServerDisconnectedError, ProviderConnectionError, True, True),
    (aiohttp.ClientPayloadError, ProviderConnectionError, True, True),
    (aiohttp.ClientResponseError, MalformedResponseError, True, False),
    (aiohttp.ClientError, ProviderConnectionError, True, True),
    (OSError, ProviderConnectionError, True, True),
)


def _scrub(exc: BaseException, provider: Provider) -> None:
    # aiohttp keeps the request's headers, key included, on response errors (in request_info
    # and args, both shown by repr); mask them before the error is chained to ours.
    if isinstance(exc, aiohttp.ClientResponseError):
        info = exc.request_info
        headers = info.headers.copy()
        for name in provider.auth_headers():
            if name in headers:
                headers[name] = "***"
        exc.request_info = info._replace(headers=type(info.headers)(headers))
        exc.args = (exc.request_info, exc.history)


#: What a failure to open a connection means, in our words (aiohttp's name the connection
#: "ssl:default" even for http://, and its class names mean nothing to a user). First match.
_CONNECT_WORDS: tuple[tuple[type[aiohttp.ClientConnectorError], str], ...] = (
    (aiohttp.ClientConnectorDNSError, "could not resolve the host name {host}"),
    (aiohttp.ClientConnectorCertificateError, "the TLS certificate of {host}:{port} was refused"),
    (aiohttp.ClientConnectorSSLError, "the TLS handshake with {host}:{port} failed"),
    (aiohttp.ClientConnectorError, "could not connect to {host}:{port}"),
)


def _translate(exc: BaseException, provider: Provider) -> PersonaError:
    _scrub(exc, provider)
    for foreign, ours, sent, retryable in _EXCEPTION_TABLE:
        if isinstance(exc, foreign):
            if isinstance(exc, aiohttp.ClientConnectorError):
                message = _connect_failure(exc, provider)
            else:
                what = type(exc).__name__
                detail = provider.redact(str(exc))[:200]
                when = "after the request was sent" if sent else "before the request was sent"
                message = f"{what} {when}" + (f": {detail}" if detail else "")
            return ours(message, sent=sent, retryable=retryable, provider=provider.name)
    raise exc


def _connect_failure(exc: aiohttp.ClientConnectorError, provider: Provider) -> str:
    """``could not connect to host:port (Connection refused): the request was not sent``."""
    words = next(text for cls, text in _CONNECT_WORDS if isinstance(exc, cls))
    cause = exc.os_error
    if isinstance(exc, aiohttp.ClientConnectorDNSError) or not cause.errno or cause.errno < 0:
        reason = cause.strerror or str(cause)  # the resolver's words
    else:
        reason = os.strerror(cause.errno)  # "Connection refused", not asyncio's "Connect call"
    reason = provider.redact(reason)[:200]
    said = words.format(host=exc.host, port=exc.port)
    return f"{said}" + (f" ({reason})" if reason else "") + ": the request was not sent"


def excerpt(provider: Provider, body: bytes) -> str:
    """A short, whitespace-collapsed prefix of ``body`` with the provider's key blanked out."""
    # Redact before cutting: a key straddling the cut would leave its prefix behind.
    text = " ".join(provider.redact(body.decode("utf-8", "replace")).split())
    return text[:EXCERPT_CHARS] + ("..." if len(text) > EXCERPT_CHARS else "")


#: The current attempt's ``on_sent``: set by ``post`` for the connector below, in the task that
#: sends (aiohttp obtains the connection in the request's own task).
_ON_SENT: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "persona_async_on_sent", default=None
)


def hook_sends(on_sent: Callable[[], None]) -> None:
    """Bind ``on_sent`` to the current task for good: for a long-lived task that sends many
    requests with the same hook (a lane's worker), so ``post`` need not set the context for
    each (a new context, token and map per request, all work for the garbage collector)."""
    _ON_SENT.set(on_sent)


class _StampingConnector(aiohttp.TCPConnector):
    """A TCP connector that says when a request is about to leave.

    aiohttp writes a request as soon as it has a connection. A request that first has to open
    one (a TLS handshake to a distant host) leaves well after it was admitted; calling
    ``on_sent`` once the connection is there stamps it with the moment it goes out. This costs
    a context-variable read per request, where aiohttp's request tracing costs about 15 us.
    """

    async def connect(
        self, req: ClientRequest, traces: list[Trace], timeout: aiohttp.ClientTimeout
    ) -> Connection:
        conn = await super().connect(req, traces, timeout)
        on_sent = _ON_SENT.get()
        if on_sent is not None:
            on_sent()
        return conn


class RawResponse(NamedTuple):
    """A reply as the SDK reads it: status, body, and its headers (read only when needed)."""

    status: int
    body: bytes
    headers: Mapping[str, str]  # case-insensitive for aiohttp's replies

    @property
    def retry_after(self) -> str | None:
        return self.headers.get("Retry-After")

    @property
    def location(self) -> str | None:
        return self.headers.get("Location")

    @property
    def content_type(self) -> str:
        """The media type as sent (for error messages), without parameters."""
        return self.headers.get("Content-Type", "").partition(";")[0].strip()


async def _read(provider: Provider, resp: aiohttp.ClientResponse) -> RawResponse:
    """The reply's status, body (at most ``MAX_BODY_BYTES``) and headers."""
    content = resp.content
    payload = await content.read(MAX_BODY_BYTES + 1)
    if len(payload) > MAX_BODY_BYTES or not content.at_eof():
        payload = await _read_rest(provider, resp, payload)
    return _raw((resp.status, payload, resp.headers))


#: ``RawResponse`` from a tuple, without the Python-level ``__new__`` a NamedTuple call costs.
_raw: Callable[[tuple[int, bytes, Mapping[str, str]]], RawResponse] = functools.partial(
    tuple.__new__, RawResponse
)


async def _read_rest(provider: Provider, resp: aiohttp.ClientResponse, payload: bytes) -> bytes:
    # A reply that did not come in one read: a long one, or one still arriving.
    length = resp.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise _too_large(
            provider, resp, f"reply of {length} bytes exceeds {MAX_BODY_BYTES}",
            payload[: EXCERPT_CHARS * 8],
        )  # fmt: skip
    while len(payload) <= MAX_BODY_BYTES and not resp.content.at_eof():
        payload += await resp.content.read(MAX_BODY_BYTES + 1 - len(payload))
    if len(payload) > MAX_BODY_BYTES:
        raise _too_large(provider, resp, f"reply exceeds {MAX_BODY_BYTES} bytes", payload)
    return payload


def _too_large(
    provider: Provider, resp: aiohttp.ClientResponse, message: str, payload: bytes
) -> MalformedResponseError:
    # A 2xx the client cannot read is the provider taking the request (a provider echoing a
    # huge description): an unknown outcome, so it is retryable as a lost reply is, and the
    # lane treats it as one (a resend where duplicates are detected, OutcomeUnknownError else).
    taken = 200 <= resp.status < 300
    return MalformedResponseError(
        message + ("; the provider accepted the request, so a persona may exist" if taken else ""),
        http_status=resp.status,
        provider=provider.name,
        excerpt=excerpt(provider, payload),
        retryable=taken,
    )


def _timeout(provider: Provider, seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=seconds, connect=min(provider.connect_timeout, seconds))


class SessionPool:
    """Owns one ``aiohttp.ClientSession`` per lane, created lazily inside the running loop.

    Each session's connector is sized to the lane's ``max_concurrency`` with keep-alive on.
    Redirects are never followed, TLS is always verified, the key rides only in the lane's own
    default headers. ``aclose()`` is idempotent.
    """

    __slots__ = ("_closed", "_lanes")

    def __init__(self) -> None:
        #: lane name -> its session and its usual attempt timeout (the provider's own)
        self._lanes: dict[str, tuple[aiohttp.ClientSession, aiohttp.ClientTimeout]] = {}
        self._closed = False

    def _open(self, provider: Provider) -> tuple[aiohttp.ClientSession, aiohttp.ClientTimeout]:
        """The lane's session and usual timeout, made on its first request."""
        if self._closed:
            raise RuntimeError("the client is closed")
        connector = _StampingConnector(
            limit=provider.max_concurrency,
            limit_per_host=0,
            keepalive_timeout=KEEPALIVE_TIMEOUT,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            headers={
                "User-Agent": USER_AGENT,
                "Content-Type": "application/json",
                "Accept": "application/json",
                **provider.auth_headers(),
            },
            # Per-attempt timeouts come from post(); no cookies: nothing here needs them.
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )
        lane = self._lanes[provider.name] = (session, _timeout(provider, provider.timeout))
        return lane

    async def post(
        self,
        provider: Provider,
        body: bytes | None,
        timeout: float,
        on_sent: Callable[[], None] | None = None,
        *,
        method: str = "POST",
        url: str | None = None,
    ) -> RawResponse:
        """POST ``body`` to the provider; raise a translated ``PersonaError`` on transport failure.

        ``timeout`` bounds the whole attempt; the connect phase is bounded separately so that a
        connect timeout (nothing sent) can be told apart from a reply timeout (maybe created).
        ``on_sent`` is called when the request is about to be written to its connection, once
        that connection is open. (``query`` passes another ``method`` and ``url``.)
        """
        session, usual = self._lanes.get(provider.name) or self._open(provider)
        token = None if _ON_SENT.get() is on_sent else _ON_SENT.set(on_sent)
        try:
            async with session.request(
                method,
                provider.url if url is None else url,
                data=body,
                allow_redirects=False,
                # `total` bounds the reply too (a sock_read timer would only cost a timer).
                timeout=usual if timeout == provider.timeout else _timeout(provider, timeout),
            ) as resp:
                return await _read(provider, resp)
        except PersonaError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise _translate(exc, provider) from exc
        finally:
            if token is not None:
                _ON_SENT.reset(token)

    async def query(
        self, provider: Provider, url: str, *, timeout: float, body: bytes | None = None
    ) -> RawResponse:
        """A status query: GET ``url`` (POST ``body`` when given) on the lane's session.

        ``url`` must be under the provider's ``base_url`` (the session carries its key). Status
        queries are safe to repeat, so no ``on_sent`` tracing; failures are translated exactly
        as for ``post``.
        """
        if not url.startswith(provider.base_url + "/"):
            raise ValueError("a status query must stay on the provider's base_url")
        # A poll may run in a task made from a lane worker's context: it stamps nothing.
        method = "GET" if body is None else "POST"
        return await self.post(provider, body, timeout, None, method=method, url=url)

    async def aclose(self) -> None:
        self._closed = True
        lanes, self._lanes = list(self._lanes.values()), {}
        for session, _ in lanes:
            await session.close()

    def __del__(self, _warn: type[Warning] = ResourceWarning) -> None:
        if self._lanes:
            warnings.warn(
                "persona_async client was not closed; use 'async with PersonaClient(...)' "
                "or 'await client.aclose()'",
                _warn,
                stacklevel=1,
            )
