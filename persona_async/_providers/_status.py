"""Task status in one vocabulary: what a provider's status endpoint says about one task.

A source song is a music task; kie's market route and Evolink make personas as tasks too. Both
are asked at one endpoint per contract, so each provider module holds one ``StatusRoute``: the
URL, an optional POST body, and one decoder from ``(HTTP status, body)`` to a :class:`TaskInfo`
(or a :class:`Refusal`: the query itself was refused, with the provider's code). The decoders are
pure; turning a refusal or an undecodable reply into a typed error is the caller's
(``_decoding``, ``_sources``).

State words are matched without regard to case (crun's TaskInfo is seen answering ``SUCCESS``),
and ``fail``, ``failed`` and ``error`` mean failure in every contract unless it says otherwise;
any other word it does not document is ``UNKNOWN``, waited on as running for a bounded time.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple
from urllib.parse import quote

__all__ = [
    "FAILURE_WORDS",
    "Refusal",
    "StatusRoute",
    "TaskInfo",
    "TaskState",
    "clips_of",
    "duration",
    "envelope_refusal",
    "state_of",
    "state_table",
]


class TaskState(str, enum.Enum):
    READY = "ready"  # terminal success: the persona is made, or the song's clips are usable
    RUNNING = "running"  # still working
    FAILED = "failed"  # terminal failure: nothing will help
    UNKNOWN = "unknown"  # a word the contract does not document: waited on as running, bounded


#: Read as failure in every contract: other clients of kie's market route treat all three so
#: (kie's own task-detail page, https://docs.kie.ai/market/common/get-task-detail, names only
#: ``fail``), and none of the contracts uses one for anything else.
FAILURE_WORDS = ("fail", "failed", "error")


def state_table(words: Mapping[str, TaskState]) -> Mapping[str, TaskState]:
    """A contract's documented state words, casefolded, with ``FAILURE_WORDS`` added."""
    table = dict.fromkeys(FAILURE_WORDS, TaskState.FAILED)
    table.update((word.casefold(), state) for word, state in words.items())
    return MappingProxyType(table)


def state_of(table: Mapping[str, TaskState], word: str) -> TaskState:
    return table.get(word.casefold(), TaskState.UNKNOWN)


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """What a status endpoint said about one task.

    ``status`` is the provider's own word. ``clips`` maps each clip id of a finished music task
    to its duration in seconds (None when not given); ``clips`` is None when the reply lists no
    clips, and then the audio id cannot be checked. ``persona_id`` is set on a finished persona
    task. ``code``/``message`` are the provider's words on a failed task.
    """

    state: TaskState
    status: str
    clips: Mapping[str, float | None] | None = None
    code: int | str | None = None
    message: str = ""
    persona_id: str | None = None


class Refusal(NamedTuple):
    """The status query was refused: the provider's code (an int, or a string code such as
    AceData's ``used_up``; the HTTP status where the body has none) and its message."""

    code: int | str
    message: str


def envelope_refusal(envelope: Any, status: int) -> Refusal | None:
    """The refusal a ``{code, message, data}`` reply (``code_envelope``) says: its code unless
    200, else an error HTTP status; None when the query was answered."""
    if envelope.code != 200 or status >= 400:
        return Refusal(envelope.code if envelope.code != 200 else status, envelope.message or "")
    return None


Decode = Callable[[int, bytes], "TaskInfo | Refusal"]


@dataclass(frozen=True, slots=True)
class StatusRoute:
    """How to ask one contract about a task: ``path`` is appended to the base URL, its
    ``{task_id}`` replaced by the URL-quoted task id; ``post`` builds a POST body (AceData)."""

    path: str
    decode: Decode
    post: Callable[[str], bytes] | None = None

    def url(self, base_url: str, task_id: str) -> str:
        return base_url + self.path.format(task_id=quote(task_id, safe=""))

    def body(self, task_id: str) -> bytes | None:
        return None if self.post is None else self.post(task_id)


def duration(value: object) -> float | None:
    """Seconds as a number (most) or a numeric string (TTAPI); anything else is unknown."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def clips_of(items: Iterable[object] | None, id_key: str = "id") -> dict[str, float | None] | None:
    """``{clip id: duration}`` from decoded clip structs with ``id_key`` and ``duration``."""
    if not items:
        return None
    return {getattr(c, id_key): duration(getattr(c, "duration", None)) for c in items}
