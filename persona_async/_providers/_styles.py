"""Reply styles: the envelope shapes providers answer in, one decoder each, built once.

Every style turns ``(HTTP status, body)`` into a :class:`Reply` whose ``code`` is 200 for
success (``id`` then set) or the provider's own code (an int, or a string code such as
AceData's ``used_up``) for an error. A body that is not the style's shape raises msgspec's
``ValidationError``/``DecodeError``; the caller turns that into ``MalformedResponseError``.

``REPLY_STYLES`` lists every style the SDK decodes; each provider names its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, Protocol

import msgspec

__all__ = [
    "REPLY_STYLES",
    "AceDataReply",
    "CodeEnvelopeReply",
    "ObjectReply",
    "Reply",
    "ReplyStyle",
    "StatusReply",
    "TaskStatus",
]


class Reply(msgspec.Struct, frozen=True, gc=False):
    """A decoded reply. ``id`` is set only when ``code`` is 200: the persona id, or for an
    async-task submit the provider's task id. (A Struct: made per reply, in C.)"""

    code: int | str
    message: str
    id: str | None = None


class TaskStatus(NamedTuple):
    """A decoded status reply of an async persona task.

    ``code`` is the status query's own outcome (200: answered; else an error code as in
    ``Reply``). ``state`` is ``"running"``, ``"succeeded"`` or ``"failed"``; ``word`` is the
    provider's own word for it. A failed task carries the provider's ``fail_code`` (as text) and
    its message in ``message``.
    """

    code: int | str
    message: str
    state: str = ""
    word: str = ""
    persona_id: str | None = None
    fail_code: str = ""


class ReplyStyle(Protocol):
    def decode(self, status: int, body: bytes) -> Reply: ...


def _id_struct(key: str) -> Any:
    return msgspec.defstruct("Data", [("id", str, msgspec.field(name=key))])


def _id_decoder(key: str) -> Any:
    return msgspec.json.Decoder(_id_struct(key)).decode


class CodeEnvelopeReply:
    """``{code: int, msg|message, data: {<id_key>}}``, business code inside HTTP 200
    (crun, the sunoapi.org family, kie's market route)."""

    __slots__ = ("_data", "_envelope", "_success")

    def __init__(self, *, message_key: str = "message", id_key: str = "persona_id") -> None:
        self._envelope: Any = msgspec.json.Decoder(
            msgspec.defstruct(
                "Envelope",
                [
                    ("code", int),
                    ("message", str | None, msgspec.field(default=None, name=message_key)),
                    # Raw: decoded only on success, so an error reply with an odd `data` is read.
                    ("data", msgspec.Raw, msgspec.Raw(b"null")),
                ],
            )
        ).decode
        self._data = _id_decoder(id_key)
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
        return Reply(200, message, self._data(envelope.data).id)


class _AceError(msgspec.Struct):
    code: str
    message: str = ""


class _AceEnvelope(msgspec.Struct):
    success: bool = False
    data: msgspec.Raw = msgspec.Raw(b"null")
    error: _AceError | None = None


class AceDataReply:
    """``{success: true, task_id, data: {persona_id}}``; errors ``{error: {code: str,
    message}, trace_id}`` with a real HTTP status (AceData Cloud)."""

    __slots__ = ("_data", "_envelope")

    def __init__(self, *, id_key: str = "persona_id") -> None:
        self._envelope = msgspec.json.Decoder(_AceEnvelope).decode
        self._data = _id_decoder(id_key)

    def decode(self, status: int, body: bytes) -> Reply:
        envelope = self._envelope(body)
        if envelope.error is not None:
            return Reply(envelope.error.code, envelope.error.message)
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


class _ObjectError(msgspec.Struct):
    code: int | str | None = None
    message: str | None = None


class _Object(msgspec.Struct):
    id: str | None = None
    error: _ObjectError | str | None = None
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
        if isinstance(error, _ObjectError):
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
