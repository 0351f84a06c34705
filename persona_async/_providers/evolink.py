"""Evolink: ``POST /v1/audios/generations`` with ``model: "suno-persona"``, an async task
polled at ``GET /v1/tasks/{id}``, the endpoint that also answers for the source song
(https://docs.evolink.ai/en/api-manual/audio-series/suno/suno-persona-creation,
https://docs.evolink.ai/en/api-manual/task-management/get-task-detail). The persona id arrives as
``result_data.persona_id``; music tasks answer ``result_data`` as an array (docs/response-schema.md
in https://github.com/EvoLinkAI/awesome-suno-api; or, per Evolink's playground,
``result_data.songs[]``), so an array is read for a persona too (not documented for a persona;
assumed from the music tasks)."""

from __future__ import annotations

import msgspec

from .._exceptions import HTTP_STATUS_TO_EXCEPTION
from .._models import PersonaRequest
from ._base import Provider, Wire, request_struct
from ._status import Refusal, StatusRoute, TaskInfo, TaskState, duration, state_of, state_table
from ._styles import ErrorObject, ObjectReply

__all__ = ["EVOLINK_STATES", "EvolinkProvider"]

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


#: Evolink's task ``status``, as its task page (module docstring) lists it.
EVOLINK_STATES = state_table(
    {
        "pending": TaskState.RUNNING,
        "processing": TaskState.RUNNING,
        "completed": TaskState.READY,
        "failed": TaskState.FAILED,
    }
)


class _Item(msgspec.Struct):
    """An entry of ``result_data``: a song (``result_id``, ``duration``) or the persona."""

    result_id: str | None = None
    duration: float | str | None = None
    persona_id: str | None = None


class _Object(msgspec.Struct):
    persona_id: str | None = None
    songs: list[_Item] | None = None


class _Task(msgspec.Struct):
    status: str | None = None
    result_data: list[_Item] | _Object | None = None
    error: ErrorObject | str | None = None
    message: str | None = None


class _Status(msgspec.Struct):
    status: str


_task = msgspec.json.Decoder(_Task).decode
_status = msgspec.json.Decoder(_Status).decode  # names the missing field of a 200 without one


def decode_status(status: int, body: bytes) -> TaskInfo | Refusal:
    """``status``; the persona id at ``result_data`` (an object or an array), a song's clips at
    ``result_data[]`` or ``result_data.songs[]``."""
    task = _task(body)
    error = task.error if isinstance(task.error, ErrorObject) else ErrorObject(None, task.error)
    said = error.message or task.message or ""
    if status >= 400:
        code = "" if error.code is None else str(error.code)
        return Refusal(status, f"{code}: {said}" if code and said else code or said)
    word = task.status or _status(body).status
    data = task.result_data
    items = data.songs or [] if isinstance(data, _Object) else data or []
    found = [data.persona_id if isinstance(data, _Object) else None]
    persona_id = next((p for p in found + [i.persona_id for i in items] if p), None)
    clips = {i.result_id: duration(i.duration) for i in items if i.result_id} or None
    state = state_of(EVOLINK_STATES, word)
    return TaskInfo(state, word, clips, error.code, said, persona_id)


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
    documentation = "partly, Beta: its limits and model_params are not published"
    path = "/v1/audios/generations"
    wire = Wire(body=_Body, reply=ObjectReply())
    errors = HTTP_STATUS_TO_EXCEPTION
    mode = "task"
    estimated_time = 15.0
    vocal_window = (10.0, 30.0)
    vocal_pair = True
    source_status = StatusRoute("/v1/tasks/{task_id}", decode_status)

    __slots__ = ()

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}

    def encode(self, request: PersonaRequest) -> bytes:
        params = request_struct(_Params, request)
        return msgspec.json.encode(_Body(model=MODEL, model_params=params))
