"""Provider decoding: a raw HTTP reply becomes a persona id or a typed ``PersonaError``.

The provider's reply style (``_providers/_styles.py``) reads the reply into a code and a
message; the provider's table (``Provider.errors``) says which error the code is. The envelope
``code`` is the truth where there is one, then the HTTP status, then the message (for codes whose
meaning depends on it). Anything that is not the documented reply is a
``MalformedResponseError`` with the status and a short, safe excerpt.
"""

from __future__ import annotations

from typing import NoReturn
from urllib.parse import urlsplit

import msgspec

from ._exceptions import (
    GenerationFailedError,
    MalformedResponseError,
    OverloadedError,
    PersonaError,
    RateLimitError,
    ServerError,
    SourceNotReadyError,
    ValidationError,
    _MaybeSent,
    source_not_ready,
)
from ._polling import Running
from ._providers import Provider
from ._providers._status import Refusal, TaskState
from ._retry import parse_retry_after
from ._transport import RawResponse, excerpt

__all__ = ["interpret", "interpret_task"]


# Gateway pages in front of a provider: the provider may be fine a moment later.
_TRANSIENT_HTTP = frozenset({500, 502, 503, 504})
# A gateway page with these statuses and a Retry-After is a load shed, not a failure.
_GATEWAY_BUSY = frozenset({502, 504})


def interpret(provider: Provider, raw: RawResponse) -> str:
    """Return the persona id of a successful reply (for an async-task provider's submit, its
    task id) or raise the ``PersonaError`` it means."""
    status = raw.status
    if 300 <= status < 400:
        _refuse_redirect(provider, raw)
    try:
        reply = provider.decode(status, raw.body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        _undecodable(provider, raw, exc)
    if reply.code == 200:
        if reply.id:
            return reply.id
        if status < 400:
            what = "a task id" if provider.mode == "task" else "a persona id"
            raise MalformedResponseError(
                f"HTTP {status}: success without {what}",
                http_status=status,
                provider=provider.name,
                excerpt=excerpt(provider, raw.body),
            )
    _raise_for(provider, raw, reply.code if reply.code != 200 else status, reply.message)


def interpret_task(provider: Provider, raw: RawResponse, task_id: str) -> str | Running:
    """Return the persona id of a finished task, ``Running`` while it runs (``undocumented``
    when its state word is not the contract's), or raise the ``PersonaError`` the status reply
    (or the failed task) means."""
    status = raw.status
    if 300 <= status < 400:
        _refuse_redirect(provider, raw)
    assert provider.source_status is not None  # an async-task provider has its status route
    try:
        task = provider.source_status.decode(status, raw.body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        _undecodable(provider, raw, exc)
    if isinstance(task, Refusal):
        _raise_for(provider, raw, task.code, task.message)
    if task.state is TaskState.RUNNING:
        return Running(task.status)
    if task.state is TaskState.UNKNOWN:
        return Running(task.status, undocumented=True)
    if task.state is TaskState.FAILED:
        said = provider.redact(task.message)
        fail = "" if task.code is None else str(task.code)
        code = int(fail) if fail.isdigit() else None
        cls = provider.errors.get(fail if code is None else code, GenerationFailedError)
        if cls.default_retryable or issubclass(cls, _MaybeSent):
            cls = GenerationFailedError  # the task is over: polling again will not change it
        raise cls(
            f"task {task_id} failed"
            + (f" ({fail})" if fail else "")
            + (f": {said}" if said else ""),
            code=code,
            http_status=status,
            provider=provider.name,
            provider_task_id=task_id,
            retryable=False,
        )
    if task.persona_id:
        return task.persona_id
    raise MalformedResponseError(
        f"HTTP {status}: task {task_id} succeeded without a persona id",
        http_status=status,
        provider=provider.name,
        excerpt=excerpt(provider, raw.body),
        provider_task_id=task_id,
        retryable=False,
    )


def _refuse_redirect(provider: Provider, raw: RawResponse) -> NoReturn:
    status = raw.status
    target = urlsplit(raw.location or "")
    where = f" to {target.scheme}://{target.hostname}" if target.hostname else ""
    raise MalformedResponseError(
        f"HTTP {status} redirect{where} refused: the SDK never follows redirects "
        "(is base_url right?)",
        http_status=status,
        provider=provider.name,
        retryable=False,
    )


def _undecodable(provider: Provider, raw: RawResponse, exc: Exception) -> NoReturn:
    """The reply is not the provider's shape: a 429 still says "too fast", a 503 (or a gateway
    page that says when to come back) "not now", else it is malformed."""
    status = raw.status
    if status == 429:
        raise RateLimitError(
            "HTTP 429 Too Many Requests",
            http_status=status,
            provider=provider.name,
            retry_after=parse_retry_after(raw.retry_after),
        ) from exc
    if status == 503 or (status in _GATEWAY_BUSY and raw.retry_after is not None):
        raise _overloaded(provider, raw, f"HTTP {status} from a gateway or limiter") from exc
    maybe = provider.errors.get(status)
    if maybe is not None and issubclass(maybe, _MaybeSent):
        # A timeout page the provider documents (CometAPI's Cloudflare 524): the request was
        # taken and may have made the persona.
        raise maybe(
            f"HTTP {status} {raw.content_type or 'no content type'}: a timeout page; the "
            "persona may exist",
            code=status,
            http_status=status,
            provider=provider.name,
            retryable=True,
        ) from exc
    what = "empty reply" if not raw.body else f"reply is not the {provider.kind} envelope"
    raise MalformedResponseError(
        f"HTTP {status} {raw.content_type or 'no content type'}: {what} ({exc})",
        http_status=status,
        provider=provider.name,
        excerpt=excerpt(provider, raw.body),
        retryable=status in _TRANSIENT_HTTP,
    ) from exc


def _raise_for(provider: Provider, raw: RawResponse, code: int | str, said: str) -> NoReturn:
    status = raw.status
    # The provider's own number stays on the error; the class says what it means. A string
    # code (AceData's `used_up`) leads the message, and the HTTP status is the number.
    cls = provider.errors.get(provider.classify(code, said), PersonaError)
    said = provider.redact(said)
    if isinstance(code, str):
        message = f"{code}: {said}" if said else code
        code = status
    else:
        message = said or f"provider answered code {code}"
    if issubclass(cls, _MaybeSent):
        # A gateway timeout with a body (TTAPI's and AceData's 504): the persona may exist.
        raise cls(message, code=code, http_status=status, provider=provider.name, retryable=True)
    if cls is ValidationError and source_not_ready(message):
        cls = SourceNotReadyError  # the song is still generating: a later resend can succeed
    if status == 503 and cls in (PersonaError, ServerError):
        raise _overloaded(provider, raw, message, code=code)
    if cls is OverloadedError:  # a provider's own 503 code under another HTTP status
        raise _overloaded(provider, raw, message, code=code)
    if cls is RateLimitError:
        raise RateLimitError(
            message,
            code=code,
            http_status=status,
            provider=provider.name,
            retry_after=parse_retry_after(raw.retry_after),
        )
    raise cls(message, code=code, http_status=status, provider=provider.name)


def _overloaded(
    provider: Provider, raw: RawResponse, message: str, *, code: int | None = None
) -> OverloadedError:
    """Refused for load, not processed: the lane slows down and resends it."""
    return OverloadedError(
        message,
        code=code,
        http_status=raw.status,
        provider=provider.name,
        retry_after=parse_retry_after(raw.retry_after),
    )
