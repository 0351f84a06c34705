"""Evolink: ``POST /v1/audios/generations`` with ``model: "suno-persona"``, an async task
polled at ``GET /v1/tasks/{id}``; the persona id arrives as ``result_data.persona_id``."""

from __future__ import annotations

from urllib.parse import quote

import msgspec

from .._exceptions import HTTP_STATUS_TO_EXCEPTION
from .._models import PersonaRequest
from .._sources_more import EvolinkStatus
from ._base import Provider, Wire, request_struct
from ._styles import ObjectReply, TaskStatus

__all__ = ["EvolinkProvider"]

MODEL = "suno-persona"


class _Params(msgspec.Struct, omit_defaults=True):
    task_id: str = msgspec.field(name="source_task_id")
    audio_id: str = msgspec.field(name="result_id")
    name: str
    description: str
    vocal_start: float | None = None
    vocal_end: float | None = None
    style: str | None = None


class _Body(msgspec.Struct):
    model: str
    model_params: _Params


class _Error(msgspec.Struct):
    code: str | int | None = None
    message: str | None = None


class _ResultData(msgspec.Struct):
    persona_id: str | None = None


class _Task(msgspec.Struct):
    status: str | None = None
    result_data: _ResultData | None = None
    error: _Error | str | None = None
    message: str | None = None


_decode_task = msgspec.json.Decoder(_Task).decode
_RUNNING = frozenset({"pending", "processing"})


def _said(error: _Error | str | None) -> tuple[str, str]:
    if isinstance(error, _Error):
        return ("" if error.code is None else str(error.code)), error.message or ""
    return "", error or ""


class EvolinkProvider(Provider):
    """Evolink (api.evolink.ai), Beta: submit a task, then poll it.

    The clip is sent as ``result_id`` and the source task as ``source_task_id`` inside
    ``model_params``; the vocal window must be given with both ends, 10 to 30 s apart. The first
    status query waits Evolink's estimate (15 s for a persona), then backs off. Evolink allows
    one persona per song, so a resent submit cannot make a second one; still, a lost submit is
    an ``OutcomeUnknownError`` by default (its task id is lost with the reply): pass
    ``retry_ambiguous=True`` to resend, and read a refusal of the resend as "the first attempt
    made it"::

        EvolinkProvider(api_key="...")
    """

    kind = "evolink"
    api_key_env = "EVOLINK_API_KEY"
    default_base_url = "https://api.evolink.ai"
    path = "/v1/audios/generations"
    wire = Wire(body=_Body, reply=ObjectReply())
    errors = HTTP_STATUS_TO_EXCEPTION
    mode = "task"
    estimated_time = 15.0
    vocal_window = (10.0, 30.0)
    vocal_pair = True
    source_status = EvolinkStatus()

    __slots__ = ()

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}

    def encode(self, request: PersonaRequest) -> bytes:
        params = request_struct(_Params, request)
        return msgspec.json.encode(_Body(model=MODEL, model_params=params))

    def task_url(self, task_id: str) -> str:
        return f"{self.base_url}/v1/tasks/{quote(task_id, safe='')}"

    def decode_task(self, status: int, body: bytes) -> TaskStatus:
        task = _decode_task(body)
        code, said = _said(task.error)
        said = said or task.message or ""
        if status >= 400:
            return TaskStatus(status, f"{code}: {said}" if code and said else code or said)
        if task.status in _RUNNING:
            return TaskStatus(200, said, "running", task.status or "")
        if task.status == "completed":
            persona_id = task.result_data.persona_id if task.result_data else None
            return TaskStatus(200, said, "succeeded", task.status, persona_id)
        if task.status == "failed":
            return TaskStatus(200, said, "failed", task.status, None, code)
        raise msgspec.ValidationError(f"unknown task status {task.status!r}")
