"""Reply styles: the envelope shapes providers answer in, one decoder each, built once.

Every style turns ``(HTTP status, body)`` into a :class:`Reply` whose ``code`` is 200 for
success (``id`` then set) or the provider's own code (an int, or a string code such as
AceData's ``used_up``) for an error. A body that is not the style's shape raises msgspec's
``ValidationError``/``DecodeError``; the caller turns that into ``MalformedResponseError``.

``REPLY_STYLES`` lists every style the SDK decodes; each provider names its own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Literal, Protocol

import msgspec

__all__ = [
    "REPLY_STYLES",
    "AceDataReply",
    "CodeEnvelopeReply",
    "ObjectReply",
    "Reply",
    "ReplyStyle",
    "ErrorObject",
    "FinishedSubmit",
    "StatusReply",
    "code_envelope",
]


class Reply(msgspec.Struct, frozen=True, gc=False):
    """A decoded reply. ``id`` is set only when ``code`` is 200: the persona id, or for an
    async-task submit the provider's task id, or a ``FinishedSubmit`` when the submit answered
    with the persona id itself. (A Struct: made per reply, in C.)"""

    code: int | str
    message: str
    id: str | None = None


class FinishedSubmit(str):
    """The persona id an async-task provider's submit answered with, instead of a task id
    (kie's market route may): there is no task to poll, the request is done. (A ``str``, so the
    one id a reply carries needs no second field on the hot path.)"""

    __slots__ = ()


class ErrorObject(msgspec.Struct):
    """An ``error`` object: AceData's, Evolink's, the gateways', TTAPI's and MountSea's."""

    code: str | int | None = None
    message: str | None = None


@functools.cache
def code_envelope(message_key: str) -> Callable[[bytes], Any]:
    """The decoder of ``{code: int, <message_key>: str, data}`` (crun, the sunoapi.org family,
    kie's market route, on every endpoint): ``.code``, ``.message``, ``.data`` kept raw, so an
    error reply with an odd ``data`` is still read."""
    return msgspec.json.Decoder(
        msgspec.defstruct(
            "CodeEnvelope",
            [
                ("code", int),
                ("message", str | None, msgspec.field(default=None, name=message_key)),
                ("data", msgspec.Raw, msgspec.Raw(b"null")),
            ],
        )
    ).decode


class ReplyStyle(Protocol):
    def decode(self, status: int, body: bytes) -> Reply: ...


def _id_struct(key: str) -> Any:
    return msgspec.defstruct("Data", [("id", str, msgspec.field(name=key))])


def _id_decoder(key: str) -> Any:
    return msgspec.json.Decoder(_id_struct(key)).decode


class CodeEnvelopeReply:
    """``{code: int, msg|message, data: {<id_key>}}``, business code inside HTTP 200
    (crun, the sunoapi.org family, kie's market route). ``finished_keys``: keys of ``data``
    that, instead of ``id_key``, name the persona itself (a ``FinishedSubmit``)."""

    __slots__ = ("_data", "_envelope", "_finished", "_success")

    def __init__(
        self,
        *,
        message_key: str = "message",
        id_key: str = "persona_id",
        finished_keys: tuple[str, ...] = (),
    ) -> None:
        self._envelope = code_envelope(message_key)
        self._data = _id_decoder(id_key)
        #: An async submit's ``data`` keys that hold the persona itself (the task is over).
        self._finished = tuple(_id_decoder(key) for key in finished_keys)
        # A success read in one pass; anything else fails it and takes the two steps above.
        self._success: Any = msgspec.json.Decoder(
            msgspec.defstruct(
                "Success",
                [
                    ("code", Literal[200]),
                    ("data", _id_struct(id_key)),
                    ("message", str | None, msgspec.field(default=None, name=message_key)),
                ],
            )
        ).decode

    def decode(self, status: int, body: bytes) -> Reply:
        try:
            success = self._success(body)
        except msgspec.ValidationError:
            pass  # an error reply, or not the envelope: read it in two steps to say which
        else:
            return Reply(200, success.message or "", success.data.id)
        envelope = self._envelope(body)
        message: str = envelope.message or ""
        if envelope.code != 200:
            return Reply(envelope.code, message)
        for finished in self._finished:
            try:
                return Reply(200, message, FinishedSubmit(finished(envelope.data).id))
            except msgspec.ValidationError:
                continue
        return Reply(200, message, self._data(envelope.data).id)


class _AceEnvelope(msgspec.Struct):
    success: bool = False
    data: msgspec.Raw = msgspec.Raw(b"null")
    error: ErrorObject | None = None


class AceDataReply:
    """``{success: true, task_id, data: {persona_id}}``; errors ``{error: {code: str,
    message}, trace_id}`` with a real HTTP status (AceData Cloud)."""

    __slots__ = ("_data", "_envelope")

    def __init__(self, *, id_key: str = "persona_id") -> None:
        self._envelope = msgspec.json.Decoder(_AceEnvelope).decode
        self._data = _id_decoder(id_key)

    def decode(self, status: int, body: bytes) -> Reply:
        envelope = self._envelope(body)
        error = envelope.error
        if error is not None:
            if error.code is None and status < 400:
                raise msgspec.ValidationError("`error` without a `code` in a 2xx reply")
            return Reply(status if error.code is None else error.code, error.message or "")
        if not envelope.success:
            if status >= 400:
                return Reply(status, "")
            raise msgspec.ValidationError("`success` is false and there is no `error`")
        return Reply(200, "", self._data(envelope.data).id)


class _StatusEnvelope(msgspec.Struct):
    status: str
    message: str | None = None
    data: msgspec.Raw = msgspec.Raw(b"null")


class StatusReply:
    """``{status: "SUCCESS"|"FAILED", message, data: {<id_key>}}`` with real HTTP statuses
    (TTAPI). A FAILED inside HTTP 200 has the code ``"FAILED"``."""

    __slots__ = ("_data", "_envelope")

    def __init__(self, *, id_key: str = "persona_id") -> None:
        self._envelope = msgspec.json.Decoder(_StatusEnvelope).decode
        self._data = _id_decoder(id_key)

    def decode(self, status: int, body: bytes) -> Reply:
        envelope = self._envelope(body)
        message = envelope.message or ""
        verdict = envelope.status.upper()
        if status >= 400:
            return Reply(status, message)
        if verdict == "SUCCESS":
            return Reply(200, message, self._data(envelope.data).id)
        if verdict == "FAILED":
            return Reply("FAILED", message)
        raise msgspec.ValidationError(f"status {envelope.status!r} is not an outcome")


class _Object(msgspec.Struct):
    id: str | None = None
    error: ErrorObject | str | None = None
    message: str | None = None
    msg: str | None = None


class ObjectReply:
    """A bare object whose ``id`` is the answer, HTTP 2xx (200 or 201); errors are the HTTP
    status with ``{error: {code, message}}``, ``{error: "..."}`` or ``{message}`` (the Suno-API
    gateways, MountSea, Evolink's task object). A string ``error.code`` joins the message."""

    __slots__ = ("_envelope",)

    def __init__(self) -> None:
        self._envelope = msgspec.json.Decoder(_Object).decode

    def decode(self, status: int, body: bytes) -> Reply:
        obj = self._envelope(body)
        error = obj.error
        if isinstance(error, ErrorObject):
            message = error.message or ""
            if isinstance(error.code, str) and error.code:
                message = f"{error.code}: {message}" if message else error.code
        else:
            message = error or ""
        message = message or obj.message or obj.msg or ""
        if status >= 400:
            return Reply(status, message)
        if error is not None:
            raise msgspec.ValidationError(f"HTTP {status} with an error: {message}")
        return Reply(200, message, obj.id)


#: Each style the SDK speaks -> the decoder class for it.
REPLY_STYLES: Mapping[str, type[ReplyStyle]] = MappingProxyType(
    {
        "{code:int, msg, data}": CodeEnvelopeReply,
        "{code:int, message, data}": CodeEnvelopeReply,
        "{success, task_id, data} / {error:{code:str,message}}": AceDataReply,
        "bare task object / {error:{code,message}}": ObjectReply,
        '{status:"SUCCESS"/"FAILED", message, data}': StatusReply,
        "raw persona object (gateways)": ObjectReply,
        "raw object, HTTP 201": ObjectReply,
    }
)
