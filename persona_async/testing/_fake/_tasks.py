"""The fake's async persona tasks (kie's market route, Evolink): submitted, then polled.

A task runs for ``seconds`` after its submit, then succeeds with the persona id reserved at
submit, or fails when its clip was marked to fail. Each contract renders a task's status its
own way (``status_reply`` on the contract's module).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._contract import _Contract


@dataclass(slots=True)
class FakeTask:
    """One submitted persona task, as the fake keeps it."""

    task_id: str
    kind: str
    audio_id: str
    persona_id: str
    submitted: float
    ready_at: float
    fails: bool
    #: Status queries answered for this task.
    polls: int = 0

    def state(self, now: float) -> str:
        """``"running"``, ``"succeeded"`` or ``"failed"`` at ``now`` (``time.monotonic``)."""
        if now < self.ready_at:
            return "running"
        return "failed" if self.fails else "succeeded"


# (HTTP status, table code, body) of a status reply; the task is None when it is unknown.
StatusReply = Callable[["FakeTask | None", float], tuple[int, int, bytes]]
# Finds (contract, task id) in a status request's path and query, or None.
StatusRoute = Callable[[str, Mapping[str, str]], "str | None"]


class TaskBook:
    """Every task the fake was asked to make, by id."""

    __slots__ = ("_next", "tasks")

    def __init__(self) -> None:
        self.tasks: dict[str, FakeTask] = {}
        self._next = 1

    def submit(
        self, contract: _Contract, audio_id: str, persona_id: str, seconds: float, fails: bool
    ) -> FakeTask:
        now = time.monotonic()
        task_id = f"{contract.kind}-task-{self._next}"
        self._next += 1
        task = FakeTask(task_id, contract.kind, audio_id, persona_id, now, now + seconds, fails)
        self.tasks[task_id] = task
        return task

    def status(self, contract: _Contract, task_id: str) -> tuple[int, int, bytes]:
        assert contract.status_reply is not None
        task = self.tasks.get(task_id)
        if task is not None and task.kind != contract.kind:
            task = None  # another contract's task is unknown here
        if task is not None:
            task.polls += 1
        return contract.status_reply(task, time.monotonic())

    def clear(self) -> None:
        self.tasks.clear()
