"""What every contract of the fake shares: reply envelopes, messages, the request record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final, Literal

import msgspec

DEFAULT_API_KEY: Final = "test-key"
DEFAULT_RATE_PERIOD: Final = 10.0

Kind = Literal[
    "crun",
    "family",
    "acedata",
    "gateway",
    "ttapi",
    "mountsea",
    "kie-jobs",
    "evolink",
    "kie-jobs-status",
    "evolink-status",
    "other",
]
FaultKind = Literal[
    "envelope",
    "http",
    "html",
    "truncated",
    "empty",
    "body",
    "reset_before",
    "reset_after",
    "slow",
    "redirect",
]

# Messages used when a fault or rejection does not name its own; worded like the providers'.
_MESSAGES: Final[Mapping[int, str]] = {
    200: "success",
    401: "unauthorized: invalid or missing api key",
    402: "insufficient credits",
    404: "not found",
    405: "rate limited",
    408: "request timeout",
    409: "Persona already exists for this music",
    422: "validation error",
    429: "rate limited",
    430: "call frequency too high",
    451: "failed to fetch the music data",
    455: "maintenance",
    500: "internal server error",
    501: "generation failed",
    505: "feature disabled",
}

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def _message_for(code: int) -> str:
    message = _MESSAGES.get(code)
    if message is not None:
        return message
    try:
        return HTTPStatus(code).phrase.lower()
    except ValueError:
        return "error"



@dataclass(slots=True)
class RequestRecord:
    """What the fake received on one request, and what it answered.

    Records are appended on arrival, before any fault or latency, so ``response_code`` and
    ``http_status`` stay ``None`` until the answer is sent, and forever for a reset.
    """

    method: str
    path: str
    #: ``"crun"`` or ``"family"`` for a POST to that contract's path, else ``"other"``.
    kind: Kind
    query_string: str
    #: All request headers, with ``Authorization``/``X-Api-Key``/``Proxy-Authorization``
    #: values replaced by ``"***"``.
    headers: dict[str, str]
    #: The key from the header this contract reads it from (``x-api-key`` for crun, the
    #: ``Bearer`` token for the family; for ``other``, the Bearer token else ``x-api-key``).
    #: Left out of ``repr()`` so a failing assertion does not print a key.
    api_key: str | None = field(repr=False)
    body: bytes
    #: The body parsed as a JSON object, or ``None`` if it is not one.
    json: dict[str, Any] | None
    #: :func:`time.monotonic` at arrival (the clock asyncio's ``loop.time()`` uses).
    arrived: float
    #: Envelope code sent, else the HTTP status for replies without an envelope.
    response_code: int | None = None
    http_status: int | None = None



# (HTTP status, envelope code, body, extra headers)
_Outcome = tuple[int, int, bytes, Mapping[str, str] | None]


def _envelope(message_key: str, code: int, message: str, data: Any = None) -> bytes:
    return _encode({"code": code, message_key: message, "data": data})


def _retry_after_headers(seconds: float | None) -> dict[str, str] | None:
    # HTTP wants whole seconds, but tests need sub-second waits; "%g" keeps "2" as "2".
    return None if seconds is None else {"Retry-After": f"{seconds:g}"}


def _nginx_page(status: int) -> bytes:
    try:
        title = f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        title = str(status)
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()


