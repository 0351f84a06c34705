"""kie.ai's market route: ``POST /api/v1/jobs/createTask`` with ``model:
"ai-music-api/generate-persona"``, an async task polled at ``GET /api/v1/jobs/recordInfo``.

kie marks the legacy ``generate-persona`` route (``KieProvider``) as the old version; its V6
models ride only this one. The persona id arrives in ``resultJson``, a JSON *string*, under a key
kie does not document: ``persona_id`` or ``personaId``, at its top level or under ``data``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import msgspec

from .._models import PersonaRequest
from .._sources_more import KieJobsStatus
from ._base import Provider, Wire, request_struct
from ._styles import CodeEnvelopeReply, TaskStatus

__all__ = ["KieJobsProvider"]

MODEL = "ai-music-api/generate-persona"


class _Input(msgspec.Struct, omit_defaults=True):
    task_id: str
    audio_id: str
    name: str
    description: str
    vocal_start: float | None = None
    vocal_end: float | None = None
    style: str | None = None


class _Body(msgspec.Struct):
    model: str
    input: _Input


class _Record(msgspec.Struct):
    state: str
    resultJson: str | None = None  # kie's spellings
    failCode: str | int | None = None
    failMsg: str | None = None


class _RecordEnvelope(msgspec.Struct):
    code: int
    msg: str | None = None
    data: msgspec.Raw = msgspec.Raw(b"null")


class _PersonaKeys(msgspec.Struct):
    persona_id: str | None = None
    personaId: str | None = None


class _Result(_PersonaKeys):
    data: _PersonaKeys | None = None


_decode_envelope = msgspec.json.Decoder(_RecordEnvelope).decode
_decode_record = msgspec.json.Decoder(_Record).decode
_decode_result = msgspec.json.Decoder(_Result).decode
_RUNNING = frozenset({"waiting", "queuing", "generating"})


def _persona_id(result_json: str | None) -> str | None:
    if not result_json:
        return None
    result: Any = _decode_result(result_json)
    for where in (result, result.data):
        if where is not None and (where.persona_id or where.personaId):
            return str(where.persona_id or where.personaId)
    return None


class KieJobsProvider(Provider):
    """kie.ai's current persona route (api.kie.ai): submit a task, then poll it.

    The submit answers ``data.taskId`` at once; the SDK polls ``recordInfo`` (kie allows about
    3 status queries per second per task; polls have their own budget, ``poll=``) until the
    task's ``state`` is ``success`` or ``fail``. A task that fails raises its ``failCode`` and
    ``failMsg``. No duplicate detection is documented for this route, so a lost submit is an
    ``OutcomeUnknownError`` unless ``retry_ambiguous=True``::

        KieJobsProvider(api_key="...", rate_limit=20, rate_period=10)
    """

    kind = "kie-jobs"
    api_key_env = "KIE_API_KEY"
    default_base_url = "https://api.kie.ai"
    path = "/api/v1/jobs/createTask"
    wire = Wire(body=_Body, reply=CodeEnvelopeReply(message_key="msg", id_key="taskId"))
    mode = "task"
    estimated_time = 2.0
    vocal_window = (10.0, 30.0)
    source_status = KieJobsStatus()

    __slots__ = ()

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}

    def encode(self, request: PersonaRequest) -> bytes:
        return msgspec.json.encode(_Body(model=MODEL, input=request_struct(_Input, request)))

    def task_url(self, task_id: str) -> str:
        return f"{self.base_url}/api/v1/jobs/recordInfo?taskId={quote(task_id, safe='')}"

    def decode_task(self, status: int, body: bytes) -> TaskStatus:
        envelope = _decode_envelope(body)
        message = envelope.msg or ""
        if envelope.code != 200:
            return TaskStatus(envelope.code, message)
        record = _decode_record(envelope.data)
        if record.state in _RUNNING:
            return TaskStatus(200, message, "running", record.state)
        if record.state == "success":
            persona_id = _persona_id(record.resultJson)
            return TaskStatus(200, message, "succeeded", record.state, persona_id)
        if record.state == "fail":
            fail_code = "" if record.failCode is None else str(record.failCode)
            return TaskStatus(200, record.failMsg or "", "failed", record.state, None, fail_code)
        raise msgspec.ValidationError(f"unknown task state {record.state!r}")
