"""The rules a request is checked against before anything is sent, as a provider declares them.

A provider states its documented limits as class variables (lengths, the vocal window, its step,
fields its API does not take); ``validate`` raises ``InvalidRequestError`` naming the field and
the rule. ``Provider`` inherits them; nothing here does I/O.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import msgspec

from .._exceptions import InvalidRequestError
from .._models import PersonaRequest

__all__ = ["OPTIONAL_FIELDS", "RequestRules"]

#: The optional request fields, for ``unsupported_fields``.
OPTIONAL_FIELDS: frozenset[str] = frozenset({"vocal_start", "vocal_end", "style"})


class RequestRules:
    """The checks before sending; a ``Provider`` sets the class variables it documents."""

    __slots__ = ()

    #: The lane name errors carry, and whether the provider answers with a task (``Provider``).
    name: str
    mode: ClassVar[str]

    #: Longest allowed value per request field (documented limits only).
    max_lengths: ClassVar[Mapping[str, int]] = MappingProxyType({})
    #: Allowed ``vocal_end - vocal_start`` in seconds, with the defaults used when one is omitted.
    vocal_window: ClassVar[tuple[float, float] | None] = None
    vocal_defaults: ClassVar[tuple[float, float]] = (0.0, 30.0)
    #: The step vocal_start and vocal_end must be multiples of (kie, sunoapi.org: 0.01): the
    #: values are rounded to it before they are checked and sent. None: sent as given.
    vocal_step: ClassVar[float | None] = None
    #: Optional request fields the provider's API does not document: refused, never dropped.
    unsupported_fields: ClassVar[frozenset[str]] = frozenset()
    #: Why, when it is more than "its API documents no such field".
    unsupported_note: ClassVar[str] = ""
    #: True when vocal_start and vocal_end must be given together or not at all.
    vocal_pair: ClassVar[bool] = False

    #: ``max_lengths`` of task_id, audio_id, name and description (no limit: ``sys.maxsize``),
    #: for ``validate``'s common case; None when a limit applies to another field.
    _plain_limits: ClassVar[tuple[int, int, int, int] | None] = (sys.maxsize,) * 4

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        plain = ("task_id", "audio_id", "name", "description")
        cls._plain_limits = (
            tuple(cls.max_lengths.get(f, sys.maxsize) for f in plain)  # type: ignore[assignment]
            if set(cls.max_lengths) <= {*plain, "style"}
            else None
        )

    def stepped(self, request: PersonaRequest) -> PersonaRequest:
        """``request`` with its vocal window rounded to ``vocal_step`` (when there is one)."""
        step = self.vocal_step
        start, end = request.vocal_start, request.vocal_end
        if step is None or (start is None and end is None):
            return request
        return msgspec.structs.replace(
            request, vocal_start=_round(start, step), vocal_end=_round(end, step)
        )

    def _invalid(self, request: PersonaRequest, field: str, rule: str) -> InvalidRequestError:
        return InvalidRequestError(
            f"{field} {rule}",
            field=field,
            provider=self.name,
            task_id=request.task_id if isinstance(request.task_id, str) else None,
            audio_id=request.audio_id if isinstance(request.audio_id, str) else None,
            attempts=0,
        )

    def validate(self, request: PersonaRequest) -> None:
        """Raise ``InvalidRequestError`` naming the field and the rule, or return."""
        # The common request, four non-blank strings within their limits and nothing else, is
        # accepted here in one expression; anything else takes the full rules below.
        t, a, n, d = request.task_id, request.audio_id, request.name, request.description
        limits = self._plain_limits
        if (
            limits is not None
            and type(t) is str
            and type(a) is str
            and type(n) is str
            and type(d) is str
            and 0 < len(t) <= limits[0]
            and 0 < len(a) <= limits[1]
            and 0 < len(n) <= limits[2]
            and 0 < len(d) <= limits[3]
            and not (t.isspace() or a.isspace() or n.isspace() or d.isspace())
            and request.provider_task_id is None
            and request.vocal_start is None
            and request.vocal_end is None
            and request.style is None
        ):
            return
        self._validate_fully(request)

    def _validate_fully(self, request: PersonaRequest) -> None:
        task = request.provider_task_id
        if task is not None and self.mode != "task":
            raise self._invalid(
                request,
                "provider_task_id",
                f"is only for async-task providers; {type(self).__name__} answers at once",
            )
        if task is not None and (not isinstance(task, str) or not task.strip()):
            raise self._invalid(
                request, "provider_task_id", "must be a non-empty string (the provider's task id)"
            )
        for field, value in (
            ("task_id", request.task_id),
            ("audio_id", request.audio_id),
            ("name", request.name),
            ("description", request.description),
        ):
            if type(value) is not str or not value or value.isspace():
                if not isinstance(value, str):
                    raise self._invalid(
                        request, field, f"must be a string, got {type(value).__name__}"
                    )
                if not value.strip():
                    raise self._invalid(request, field, "must not be empty")
        extras = [
            f
            for f, v in (
                ("vocal_start", request.vocal_start),
                ("vocal_end", request.vocal_end),
                ("style", request.style),
            )
            if v is not None
        ]
        if not extras and not self.max_lengths:
            return  # the common request: four strings, checked above
        for field in extras:
            if field in self.unsupported_fields:
                why = self.unsupported_note or f"its API documents no {field}"
                raise self._invalid(
                    request,
                    field,
                    f"is not supported by {type(self).__name__} ({why}); remove it rather "
                    "than have it dropped",
                )
        if self.vocal_pair and ("vocal_start" in extras) != ("vocal_end" in extras):
            given, missing = ("vocal_start", "vocal_end")
            if "vocal_end" in extras:
                given, missing = missing, given
            raise self._invalid(
                request, missing, f"must be given together with {given} ({type(self).__name__})"
            )
        if "style" in extras and not isinstance(request.style, str):
            raise self._invalid(
                request, "style", f"must be a string, got {type(request.style).__name__}"
            )
        for field, limit in self.max_lengths.items():
            value = getattr(request, field)
            if isinstance(value, str) and len(value) > limit:
                raise self._invalid(
                    request, field, f"must be at most {limit} characters, got {len(value)}"
                )
        for field in ("vocal_start", "vocal_end"):
            value = getattr(request, field)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self._invalid(
                    request, field, f"must be a number of seconds, got {type(value).__name__}"
                )
            if not math.isfinite(value) or value < 0:
                raise self._invalid(request, field, f"must be a finite number >= 0, got {value!r}")
        stepped = self.stepped(request)  # checked as it will be sent
        start, end = stepped.vocal_start, stepped.vocal_end
        if start is not None and end is not None and not end > start:
            raise self._invalid(
                request, "vocal_end", f"must be greater than vocal_start ({end!r} <= {start!r})"
            )
        if self.vocal_window is not None and (start is not None or end is not None):
            lo, hi = self.vocal_window
            start = self.vocal_defaults[0] if start is None else start
            end = self.vocal_defaults[1] if end is None else end
            if not lo <= end - start <= hi:
                raise self._invalid(
                    request,
                    "vocal_end",
                    f"minus vocal_start must be between {lo:g} and {hi:g} seconds, "
                    f"got {end - start:g}",
                )


def _round(value: float | None, step: float) -> float | None:
    # To the nearest step, then round() again to drop the float noise of the product.
    return None if value is None else round(round(value / step) * step, 10)
