"""One provider contract as the fake needs to know it: field names, limits, state rules, how its
replies look (a code inside HTTP 200, real HTTP statuses, a bare object...) and its status
endpoint. Each contract's module builds one ``_Contract``; ``_registry`` lists them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from aiohttp import web

from ._song import Song
from ._tasks import FakeTask
from ._wire import Kind, RequestRecord, _decode, _encode, _envelope

# The task id a request on a status path asks about (path, query, JSON body), or None.
TaskOf = Callable[[str, Mapping[str, str], Any], "str | None"]
# (HTTP status, table code, body) of a persona task's status; the task is None when unknown.
TaskReply = Callable[["FakeTask | None", float], tuple[int, int, bytes]]


@dataclass(frozen=True, slots=True)
class StatusEndpoint:
    """A contract's status endpoint: where it is asked, how it answers for a song (the 200
    body at a phase, and an error reply), and, for an async contract, for a persona task."""

    method: str
    #: Where it is asked, as ``--help`` shows it (``/suno/fetch/{task_id}``).
    where: str
    task_of: TaskOf
    song: Callable[[Song, float], bytes]
    error: Callable[[int, str], tuple[int, bytes]]
    task: TaskReply | None = None

    def fail(self, code: int, message: str) -> tuple[int, int, bytes, None]:
        status, body = self.error(code, message)
        return status, code, body, None


def param(path: str, name: str) -> TaskOf:
    """A status endpoint at ``path`` with the task id in the query parameter ``name``."""
    return lambda p, q, j: q.get(name, "") if p == path else None


def tail(prefix: str) -> TaskOf:
    """A status endpoint whose path ends with the task id."""
    return lambda p, q, j: p[len(prefix) :] if p.startswith(prefix) else None


def envelope_error(key: str) -> Callable[[int, str], tuple[int, bytes]]:
    """Errors in the code envelope inside HTTP 200 (a 429 as a real 429)."""
    return lambda code, message: ((429 if code == 429 else 200), _envelope(key, code, message))


Style = Literal["code", "acedata", "status", "object"]

# Where a style with real HTTP statuses puts the fake's table codes. 422 is a 400 there;
# a maintenance window (455) is a 503, as the providers without a 455 would send it.
_HTTP_FOR_CODE: Mapping[int, int] = {422: 400, 455: 503}
# AceData's string codes (AceDataCloud/Docs responses.mdx) for the fake's table codes.
_ACEDATA_CODES: Mapping[int, tuple[int, str]] = {
    401: (401, "invalid_token"),
    402: (403, "used_up"),
    404: (404, "no_api"),
    422: (400, "bad_request"),
    429: (429, "too_many_requests"),
    455: (503, "api_error"),
    500: (500, "api_error"),
    504: (504, "timeout"),
}


@dataclass(frozen=True, slots=True)
class _Contract:
    """The wire facts of one provider contract that the fake's handling depends on."""

    kind: Kind
    path: str
    #: The header carrying the key; ``"authorization"`` means ``Bearer KEY``.
    auth_header: str
    style: Style
    message_key: str
    persona_id_key: str
    #: ``None`` for contracts that name no source task (the clip id is enough).
    task: str | None
    audio: str
    name: str
    description: str
    vocal_start: str | None
    vocal_end: str | None
    style_field: str | None
    max_lengths: Mapping[str, int]
    missing_task_message: str
    one_per_audio: bool
    #: The success reply repeats the persona's name and description next to its id.
    echoes_details: bool
    #: Required fields beyond the persona's own, with the JSON type each must have.
    extra_required: Mapping[str, type] = field(default_factory=dict)
    #: False where the contract documents the description as optional.
    description_required: bool = True
    #: Where and how the contract answers "is task X done?" (songs, and persona tasks).
    status: StatusEndpoint | None = None
    #: Async-task contracts: the key holding the fields (``input``, ``model_params``) and the
    #: ``model`` the body must name.
    wrap: str | None = None
    model: str | None = None
    #: Async-task contracts whose submit is not answered by ``success``: the submit reply.
    submit_reply: Callable[[FakeTask], bytes] | None = None

    def fields_of(self, body: Mapping[str, Any]) -> Mapping[str, Any] | str:
        """The persona fields of ``body``, or the 422 message if the wrapping is wrong."""
        if self.model is not None and body.get("model") != self.model:
            return f"model must be {self.model!r}"
        if self.wrap is None:
            return body
        inner = body.get(self.wrap)
        return inner if isinstance(inner, dict) else f"{self.wrap} must be an object"
    success_status: int = 200

    def validate(self, body: Mapping[str, Any]) -> str | None:
        """Return the 422 message for the first invalid field, or ``None`` if valid."""
        described = self.description if self.description_required else None
        required = [f for f in (self.task, self.audio, self.name, described) if f is not None]
        for name in required:
            value = body.get(name)
            if value is None:
                return f"{name} is required"
            if not isinstance(value, str) or not value:
                return f"{name} must be a non-empty string"
        for name, kind in self.extra_required.items():
            if not isinstance(body.get(name), kind):
                return f"{name} is required and must be a {kind.__name__}"
        for optional in (self.vocal_start, self.vocal_end):
            value = body.get(optional) if optional else None
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value < 0
            ):
                return f"{optional} must be a number >= 0"
        for optional in (self.style_field, None if self.description_required else self.description):
            value = body.get(optional) if optional else None
            if value is not None and not isinstance(value, str):
                return f"{optional} must be a string"
        for name, limit in self.max_lengths.items():
            value = body.get(name)
            if isinstance(value, str) and len(value) > limit:
                return f"{name} must be at most {limit} characters"
        return None

    def fields(self) -> tuple[tuple[str | None, str], ...]:
        """(wire name, request name) of the optional fields the fake records."""
        return (
            (self.vocal_start, "vocal_start"),
            (self.vocal_end, "vocal_end"),
            (self.style_field, "style"),
        )

    def success_data(self, persona_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = {self.persona_id_key: persona_id}
        if self.echoes_details:
            data["name"] = body[self.name]
            data["description"] = body.get(self.description)
        return data

    def success(self, persona_id: str, body: Mapping[str, Any]) -> tuple[int, bytes]:
        """(HTTP status, body) of a successful create (for an async contract, of a submit:
        ``persona_id`` is then the task id)."""
        data = self.success_data(persona_id, body)
        if self.style == "code":
            return 200, _encode({"code": 200, self.message_key: "success", "data": data})
        if self.style == "acedata":
            return 200, _encode({"success": True, "task_id": f"t-{persona_id}", "data": data})
        if self.style == "status":
            return 200, _encode({"status": "SUCCESS", "message": "success", "data": data})
        return self.success_status, _encode(data)

    def error(self, code: int, message: str, status: int | None = None) -> tuple[int, bytes]:
        """(HTTP status, body) of an error with the fake's table ``code``, in this style.

        ``status`` forces the HTTP status (a ``Fault.http``); by default the code-envelope
        style answers in HTTP 200 and the others in the status the code stands for.
        """
        if self.style == "code":
            body = {"code": code, self.message_key: message, "data": None}
            return (200 if status is None else status), _encode(body)
        natural = _HTTP_FOR_CODE.get(code, code)
        if self.style == "acedata":
            natural, name = _ACEDATA_CODES.get(code, (natural, "api_error"))
            body = {"error": {"code": name, "message": message}, "trace_id": "trace-fake"}
        elif self.style == "status":
            body = {"status": "FAILED", "message": message, "data": None}
        else:
            body = {"error": {"code": str(code), "message": message, "type": "fake_error"}}
        return (natural if status is None else status), _encode(body)


def find_status(
    contracts: tuple[_Contract, ...], method: str, path: str, query: Mapping[str, str], body: Any
) -> tuple[_Contract, str] | None:
    """The contract whose status endpoint a request is, and the task id it asks about."""
    for contract in contracts:
        status = contract.status
        if status is not None and status.method == method:
            task_id = status.task_of(path, query, body)
            if task_id is not None:
                return contract, task_id
    return None


_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "tt-api-key", "proxy-authorization"})


def _api_key(contract: _Contract | None, headers: Mapping[str, str]) -> str | None:
    if contract is not None and contract.auth_header != "authorization":
        return headers.get(contract.auth_header)
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if contract is not None:
        return None
    return headers.get("x-api-key") or headers.get("tt-api-key")  # crun's, TTAPI's status


def _record(
    request: web.Request, body: bytes, kind: Kind, arrived: float, contract: _Contract | None
) -> RequestRecord:
    """What the fake keeps of one request: secrets in headers masked, the body parsed."""
    parsed: Any = None
    if body:
        try:
            parsed = _decode(body)
        except msgspec.DecodeError:
            parsed = None
    headers = request.headers
    return RequestRecord(
        method=request.method,
        path=request.path,
        kind=kind,
        query_string=request.query_string,
        headers={k: "***" if k.lower() in _SECRET_HEADERS else v for k, v in headers.items()},
        api_key=_api_key(contract, headers),
        body=body,
        json=parsed if isinstance(parsed, dict) else None,
        arrived=arrived,
    )
