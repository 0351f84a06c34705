"""kie.ai's market route: ``POST /api/v1/jobs/createTask`` with ``model:
"ai-music-api/generate-persona"``, an async task polled at ``GET /api/v1/jobs/recordInfo``, the
endpoint that also answers for the source song (https://docs.kie.ai/suno-api/generate-persona,
https://docs.kie.ai/market/common/get-task-detail).

kie marks the legacy ``generate-persona`` route (``KieProvider``) as the old version; its V6
models ride only this one. kie does not publish the submit reply in full nor the key of the
persona id in ``resultJson`` (a JSON *string*): other clients accept a persona id straight in the
submit reply, and read ``persona_id`` or ``personaId`` at the top of ``resultJson`` or under its
``data``, an object or (as kie's music results are) an array. All of these are read.
"""

from __future__ import annotations

import msgspec

from .._models import PersonaRequest
from ._base import Provider, Wire, request_struct
from ._status import (
    Refusal,
    StatusRoute,
    TaskInfo,
    TaskState,
    duration,
    envelope_refusal,
    state_of,
    state_table,
)
from ._styles import CodeEnvelopeReply, code_envelope
from .kie import KIE_ERRORS

__all__ = ["KIE_JOBS_STATES", "KieJobsProvider"]

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


_envelope = code_envelope("msg")

#: recordInfo's ``state``, as kie's task-detail page lists it; ``failed`` and ``error`` are
#: failure too, as other clients of the route read them (``_status.FAILURE_WORDS``).
KIE_JOBS_STATES = state_table(
    {
        "waiting": TaskState.RUNNING,
        "queuing": TaskState.RUNNING,
        "generating": TaskState.RUNNING,
        "success": TaskState.READY,
        "fail": TaskState.FAILED,
    }
)


class _Record(msgspec.Struct):
    state: str
    resultJson: str | None = None
    failCode: str | int | None = None
    failMsg: str | None = None


class _Item(msgspec.Struct):
    """An entry of ``resultJson``'s ``data``: a clip of a song, or the persona."""

    id: str | None = None
    duration: float | str | None = None
    persona_id: str | None = None
    personaId: str | None = None


class _Result(msgspec.Struct):
    persona_id: str | None = None
    personaId: str | None = None
    data: list[_Item] | _Item | None = None


_record = msgspec.json.Decoder(_Record).decode
_result = msgspec.json.Decoder(_Result).decode


def decode_status(status: int, body: bytes) -> TaskInfo | Refusal:
    """recordInfo, for a persona task and a music task alike: ``data.state``; on success the
    persona id, or the song's clips at ``resultJson``'s ``data[]`` (``id``, ``duration``)."""
    envelope = _envelope(body)
    if (refusal := envelope_refusal(envelope, status)) is not None:
        return refusal
    record = _record(envelope.data)
    state = state_of(KIE_JOBS_STATES, record.state)
    persona_id, clips = None, None
    if state is TaskState.READY and record.resultJson:
        result = _result(record.resultJson)
        items = [result.data] if isinstance(result.data, _Item) else result.data or []
        found = [result.persona_id, result.personaId]
        found += [i.persona_id or i.personaId for i in items]
        persona_id = next((p for p in found if p), None)
        clips = {i.id: duration(i.duration) for i in items if i.id} or None
    code = record.failCode or None
    if isinstance(code, str) and code.isdigit():
        code = int(code)  # kie sends its numeric codes as strings ("501")
    return TaskInfo(state, record.state, clips, code, record.failMsg or "", persona_id)


class KieJobsProvider(Provider):
    """kie.ai's current persona route (api.kie.ai): submit a task, then poll it.

    The submit answers ``data.taskId`` (or the persona id itself, which then is the answer);
    the SDK polls ``recordInfo`` (kie allows about 3 status queries per second per task; polls
    have their own budget, ``poll=``) until the task's ``state`` is ``success`` or a failure
    (``fail``, ``failed``, ``error``), any case. A task that fails raises its ``failCode`` and
    ``failMsg``. No duplicate detection is documented for this route, so a lost submit (or a
    408) is an ``OutcomeUnknownError`` unless ``retry_ambiguous=True``::

        KieJobsProvider(api_key="...", rate_limit=20, rate_period=10)
    """

    kind = "kie-jobs"
    api_key_env = "KIE_API_KEY"
    default_base_url = "https://api.kie.ai"
    documentation = (
        "partly: its submit reply and persona id key are not published; kie's current route"
    )
    path = "/api/v1/jobs/createTask"
    wire = Wire(
        body=_Body,
        reply=CodeEnvelopeReply(
            message_key="msg", id_key="taskId", finished_keys=("persona_id", "personaId")
        ),
    )
    errors = KIE_ERRORS
    mode = "task"
    estimated_time = 2.0
    vocal_window = (10.0, 30.0)
    vocal_step = 0.01
    source_status = StatusRoute("/api/v1/jobs/recordInfo?taskId={task_id}", decode_status)

    __slots__ = ()

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}

    def encode(self, request: PersonaRequest) -> bytes:
        inner = request_struct(_Input, self.stepped(request))
        return msgspec.json.encode(_Body(model=MODEL, input=inner))
