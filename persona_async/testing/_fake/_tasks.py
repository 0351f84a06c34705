"""The fake's async persona tasks (kie's market route, Evolink): submitted, then polled.

A task runs for ``seconds`` after its submit, then succeeds with the persona id reserved at
submit, or fails when its clip was marked to fail. Each contract renders a task's status its
own way (``status_reply`` on the contract's module).
"""

from __future__ import annotations

import time
from dataclasses import dataclass


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


class TaskBook:
    """Every task the fake was asked to make, by id."""

    __slots__ = ("_next", "tasks")

    def __init__(self) -> None:
        self.tasks: dict[str, FakeTask] = {}
        self._next = 1

    def submit(
        self, kind: str, audio_id: str, persona_id: str, seconds: float, fails: bool
    ) -> FakeTask:
        now = time.monotonic()
        task_id = f"{kind}-task-{self._next}"
        self._next += 1
        task = FakeTask(task_id, kind, audio_id, persona_id, now, now + seconds, fails)
        self.tasks[task_id] = task
        return task

    def polled(self, kind: str, task_id: str) -> FakeTask | None:
        """The task a status query of contract ``kind`` asks about (counted), or None."""
        task = self.tasks.get(task_id)
        if task is None or task.kind != kind:
            return None  # another contract's task is unknown here
        task.polls += 1
        return task

    def clear(self) -> None:
        self.tasks.clear()
