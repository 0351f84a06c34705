"""One provider contract as the fake needs to know it: field names, limits and state rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._wire import Kind


@dataclass(frozen=True, slots=True)
class _Contract:
    """The wire facts of one provider contract that the fake's handling depends on."""

    kind: Kind
    message_key: str
    persona_id_key: str
    task: str
    audio: str
    name: str
    description: str
    vocal_start: str
    vocal_end: str
    style: str
    max_lengths: Mapping[str, int]
    missing_task_message: str
    one_per_audio: bool
    #: The success reply repeats the persona's name and description next to its id.
    echoes_details: bool

    def validate(self, body: Mapping[str, Any]) -> str | None:
        """Return the 422 message for the first invalid field, or ``None`` if valid."""
        for name in (self.task, self.audio, self.name, self.description):
            value = body.get(name)
            if value is None:
                return f"{name} is required"
            if not isinstance(value, str) or not value:
                return f"{name} must be a non-empty string"
        for name in (self.vocal_start, self.vocal_end):
            value = body.get(name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value < 0
            ):
                return f"{name} must be a number >= 0"
        style = body.get(self.style)
        if style is not None and not isinstance(style, str):
            return f"{self.style} must be a string"
        for name, limit in self.max_lengths.items():
            value = body.get(name)
            if isinstance(value, str) and len(value) > limit:
                return f"{name} must be at most {limit} characters"
        return None

    def success_data(self, persona_id: str, body: Mapping[str, Any]) -> dict[str, str]:
        data = {self.persona_id_key: persona_id}
        if self.echoes_details:
            data["name"] = body[self.name]
            data["description"] = body[self.description]
        return data


