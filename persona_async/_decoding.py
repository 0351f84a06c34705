"""Provider decoding: a raw HTTP reply becomes a persona id or a typed ``PersonaError``.

The envelope ``code`` is the truth, then the HTTP status, then the message (for codes whose
meaning depends on it). Anything that is not the documented envelope is a
``MalformedResponseError`` with the status and a short, safe excerpt.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import msgspec

from ._exceptions import (
    CODE_TO_EXCEPTION,
    MalformedResponseError,
    PersonaError,
    RateLimitError,
    SourceNotReadyError,
    ValidationError,
    source_not_ready,
)
from ._providers import Provider
from ._retry import parse_retry_after
from ._transport import RawResponse, excerpt

__all__ = ["interpret"]

# Gateway pages in front of a provider: the provider may be fine a moment later.
_TRANSIENT_HTTP = frozenset({500, 502, 503, 504})


def interpret(provider: Provider, raw: RawResponse) -> str:
    """Return the persona id of a successful reply or raise the ``PersonaError`` it means."""
    status = raw.status
    if 300 <= status < 400:
        target = urlsplit(raw.location or "")
        where = f" to {target.scheme}://{target.hostname}" if target.hostname else ""
        raise MalformedResponseError(
            f"HTTP {status} redirect{where} refused: the SDK never follows redirects "
            "(is base_url right?)",
            http_status=status,
            provider=provider.name,
            retryable=False,
        )
    try:
        reply = provider.decode(raw.body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        if status == 429:
            raise RateLimitError(
                "HTTP 429 Too Many Requests",
                http_status=status,
                provider=provider.name,
                retry_after=parse_retry_after(raw.retry_after),
            ) from exc
        what = "empty reply" if not raw.body else f"reply is not the {provider.kind} envelope"
        raise MalformedResponseError(
            f"HTTP {status} {raw.content_type or 'no content type'}: {what} ({exc})",
            http_status=status,
            provider=provider.name,
            excerpt=excerpt(provider, raw.body),
            retryable=status in _TRANSIENT_HTTP,
        ) from exc
    if reply.code == 200:
        if reply.persona_id:
            return reply.persona_id
        if status < 400:
            raise MalformedResponseError(
                f"HTTP {status}: code 200 without a persona id",
                http_status=status,
                provider=provider.name,
                excerpt=excerpt(provider, raw.body),
            )
    # The provider's own number stays on the error; the class says what it means.
    code = reply.code if reply.code != 200 else status
    cls = CODE_TO_EXCEPTION.get(provider.classify(code, reply.message), PersonaError)
    message = provider.redact(reply.message) or f"provider answered code {reply.code}"
    if cls is ValidationError and source_not_ready(message):
        cls = SourceNotReadyError  # the song is still generating: a later resend can succeed
    if cls is RateLimitError:
        raise RateLimitError(
            message,
            code=code,
            http_status=status,
            provider=provider.name,
            retry_after=parse_retry_after(raw.retry_after),
        )
    raise cls(message, code=code, http_status=status, provider=provider.name)
