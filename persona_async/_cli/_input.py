"""The batch input: JSONL or CSV, streamed line by line, each line an ``Item`` or an ``Invalid``.

A line's fields are ``provider``, ``task_id``, ``audio_id``, ``name``, ``description``, optional
``vocal_start``, ``vocal_end``, ``style`` and ``id``. An item's identity is its ``id`` when given,
else ``(provider, task_id, audio_id)`` (``_items`` holds the values a line becomes). A line that
is not a valid request (bad JSON, a missing or mistyped field, a provider rule broken, an unknown
provider) is an ``Invalid`` naming the line and the field; reading goes on.
"""

from __future__ import annotations

import codecs
import csv
import math
import os
import sys
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import IO, Any, Literal

import msgspec

from .._exceptions import InvalidRequestError
from .._models import PersonaRequest
from .._providers import Provider
from ._columns import (
    FIELDS,
    REQUIRED,
    SAVE_AS_UTF8,
    header_problems,
    is_utf16,
    quoted,
    with_guess,
)
from ._items import Invalid, Item, identity_key
from ._pipe import BlockingLines, may_block

__all__ = ["Input", "InputError", "InputReadError", "open_input"]

Format = Literal["jsonl", "csv"]

_EXTENSIONS: Mapping[str, Format] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
}

_decode_json = msgspec.json.Decoder().decode


class InputError(Exception):
    """The input as a whole is unusable (missing file, unknown format, bad CSV header): exit 2."""


class InputReadError(InputError):
    """The input failed while being read (an I/O error, a terminal that hung up): exit 2. The
    lines before it were read whole."""


class Input:
    """An opened input: iterate for ``Item``/``Invalid`` in line order; ``close()`` when done."""

    def __init__(
        self,
        name: str,
        file: IO[bytes],
        fmt: Format,
        lanes: Mapping[str, Provider],
        *,
        owns_file: bool,
        skip_columns: Collection[str] = (),
    ) -> None:
        self.name = name
        self._owned = file
        #: Set when a read may wait for a writer (a pipe, a terminal, a FIFO): then the lines
        #: are read with ``os.read``, and ``Batch`` reads them off the event loop.
        self.blocking_lines = BlockingLines(file.fileno()) if _may_block(file) else None
        self._file: Iterable[bytes] = self.blocking_lines or file
        self.format: Format = fmt
        self._lanes = lanes
        self._owns_file = owns_file
        #: Columns (CSV) or fields (JSONL) the user named as extra: read past, never sent.
        self._skip = frozenset(skip_columns)
        required = sorted(self._skip.intersection(REQUIRED))
        if required:
            raise InputError(
                f"--skip-columns names {quoted(required)}: a persona needs "
                f"{'it' if len(required) == 1 else 'them'}"
            )
        if self.blocking_lines is None and fmt == "jsonl" and hasattr(file, "peek"):
            try:
                start = file.peek(4)[:4]
            except OSError as exc:
                raise self._read_error(0, exc) from None
            _check_encoding(name, start)  # a regular file: said before anything is sent
        # CSV only: the column names, the row reader, and the lines that were not UTF-8.
        self._header: list[str] = []
        self._reader = csv.reader(self._lines())
        self._bad_utf8: set[int] = set()
        self._line = 0  # physical lines the CSV reader has taken so far
        if fmt == "csv":
            self._read_header()

    def close(self) -> None:
        if self._owns_file:
            self._owned.close()

    def count(self) -> int | None:
        """Items in the file, by a cheap count of its non-blank lines (None for stdin, a pipe)."""
        if self.name == "-" or self.blocking_lines is not None:
            return None
        lines = 0
        try:
            with open(self.name, "rb") as again:
                for raw in again:
                    if raw.strip():
                        lines += 1
        except OSError:
            return None
        return max(0, lines - (1 if self.format == "csv" else 0))

    def __iter__(self) -> Iterator[Item | Invalid]:
        if self.format == "csv":
            yield from self._csv()
        else:
            yield from self._jsonl()

    # -- JSONL ---------------------------------------------------------------------------------

    def _jsonl(self) -> Iterator[Item | Invalid]:
        number = 0
        try:
            for number, raw in enumerate(self._file, start=1):
                if number == 1:
                    _check_encoding(self.name, raw)
                if not raw.strip():
                    continue
                try:
                    value = _decode_json(raw)
                except msgspec.DecodeError as exc:
                    yield Invalid(number, None, f"not valid JSON: {exc}")
                    continue
                if not isinstance(value, dict):
                    yield Invalid(number, None, f"not a JSON object (got {_kind(value)})")
                    continue
                if self._skip:
                    for name in self._skip:
                        value.pop(name, None)
                yield self._entry(number, value)
        except OSError as exc:  # only the file's reads raise it: parsing raises none
            raise self._read_error(number, exc) from None

    def _read_error(self, lines: int, exc: OSError) -> InputReadError:
        where = f"after line {lines}" if lines else "at its first line"
        return InputReadError(
            f"{self.name}: reading the input failed {where}: {exc.strerror or exc}"
        )

    # -- CSV -----------------------------------------------------------------------------------

    def _lines(self) -> Iterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8-sig")()
        try:
            for raw in self._file:
                self._line += 1
                if self._line == 1:
                    _check_encoding(self.name, raw)
                try:
                    text = decoder.decode(raw)
                except UnicodeDecodeError:
                    self._bad_utf8.add(self._line)
                    decoder.reset()
                    text = raw.decode("utf-8", "replace")
                yield text
        except OSError as exc:
            raise self._read_error(self._line, exc) from None

    def _read_header(self) -> None:
        try:
            header = next(self._reader)
        except StopIteration:
            raise InputError(f"{self.name}: empty CSV file (a header line is needed)") from None
        except csv.Error as exc:
            raise InputError(f"{self.name}: line 1: not a valid CSV header: {exc}") from None
        names = [name.strip() for name in header]
        problems = header_problems(names, self._skip)
        if problems is not None:
            raise InputError(f"{self.name}: {problems}")
        self._header = names

    def _csv(self) -> Iterator[Item | Invalid]:
        header = self._header
        skip = self._skip
        while True:
            start = self._line + 1
            try:
                row = next(self._reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield Invalid(start, None, f"not valid CSV: {exc}")
                continue
            if not any(cell.strip() for cell in row):
                continue
            if any(n in self._bad_utf8 for n in range(start, self._line + 1)):
                yield Invalid(
                    start, None, "not valid UTF-8: save the file as UTF-8 (in Excel: 'CSV UTF-8 "
                    "(Comma delimited)')",
                )  # fmt: skip
                continue
            if len(row) != len(header):
                yield Invalid(
                    start,
                    None,
                    f"has {_fields(len(row))}, the header has {_fields(len(header))}",
                )
                continue
            fields: dict[str, Any] = {}
            bad: str | None = None  # the first cell that is not a number where one must be
            for name, cell in zip(header, row, strict=True):
                if name in skip:
                    continue
                if name in REQUIRED:
                    fields[name] = cell
                elif cell.strip() == "":
                    continue  # an empty optional cell is an absent field
                elif name in ("vocal_start", "vocal_end"):
                    try:
                        fields[name] = float(cell)
                    except ValueError:
                        bad = bad or name
                else:
                    fields[name] = cell
            if bad is not None:
                yield self._entry(start, fields, bad=(bad, f"{bad} must be a number of seconds"))
            else:
                yield self._entry(start, fields)

    # -- both ----------------------------------------------------------------------------------

    def _entry(
        self, line: int, fields: dict[str, Any], *, bad: tuple[str, str] | None = None
    ) -> Item | Invalid:
        """The line's item, or its ``Invalid`` (``bad``: a field already found wrong) with the
        identity fields the line has, so its record names them."""

        def ident(name: str) -> str | None:
            value = fields.get(name)
            return value if isinstance(value, str) else None

        def invalid(field: str, message: str) -> Invalid:
            return Invalid(
                line,
                field,
                message,
                id=_id_of(fields.get("id")),
                provider=ident("provider"),
                task_id=ident("task_id"),
                audio_id=ident("audio_id"),
            )

        for name in fields:
            if name not in FIELDS:
                return invalid(
                    name,
                    f"unknown field {with_guess(name)}; allowed: {', '.join(FIELDS)} (an extra "
                    f"field is read past with --skip-columns {name})",
                )
        raw_id = fields.get("id")
        if raw_id is not None and not _id_of(raw_id):
            return invalid("id", "id must be a non-empty string or an integer")
        provider = fields.get("provider")
        if provider is None:
            if len(self._lanes) != 1:
                return invalid("provider", f"provider is required: one of {self._lane_names()}")
            provider = next(iter(self._lanes))
            fields["provider"] = provider
        if not isinstance(provider, str):
            return invalid("provider", f"provider must be a string, got {_kind(provider)}")
        lane = self._lanes.get(provider)
        if lane is None:
            return invalid(
                "provider", f"provider {provider!r} is not in the config: {self._lane_names()}"
            )
        if bad is not None:
            return invalid(*bad)
        for name in REQUIRED:
            if name not in fields or fields[name] is None:
                return invalid(name, f"{name} is missing")
            if not isinstance(fields[name], str):
                return invalid(name, f"{name} must be a string, got {_kind(fields[name])}")
        for name in ("vocal_start", "vocal_end"):
            value = fields.get(name)
            if isinstance(value, bool) or not isinstance(value, (int, float, type(None))):
                return invalid(name, f"{name} must be a number of seconds, got {_kind(value)}")
            if isinstance(value, float) and not math.isfinite(value):
                return invalid(name, f"{name} must be a finite number")
        style = fields.get("style")
        if style is not None and not isinstance(style, str):
            return invalid("style", f"style must be a string, got {_kind(style)}")
        request = PersonaRequest(
            fields["task_id"],
            fields["audio_id"],
            fields["name"],
            fields["description"],
            provider=provider,
            vocal_start=fields.get("vocal_start"),
            vocal_end=fields.get("vocal_end"),
            style=style,
        )
        try:
            lane.validate(request)
        except InvalidRequestError as err:
            return invalid(err.field or "request", err.message)
        item_id = _id_of(raw_id)
        key = identity_key(item_id, provider, request.task_id, request.audio_id)
        return Item(line, item_id, request, key)

    def _lane_names(self) -> str:
        return ", ".join(self._lanes)


def open_input(
    name: str,
    lanes: Mapping[str, Provider],
    fmt: Format | None = None,
    *,
    skip_columns: Collection[str] = (),
) -> Input:
    """Open ``name`` (``-`` for JSONL on stdin); the format comes from the extension or ``fmt``.
    ``skip_columns``: extra CSV columns (or JSONL fields) to read past."""
    if name == "-":
        return Input(
            "-", sys.stdin.buffer, fmt or "jsonl", lanes, owns_file=False,
            skip_columns=skip_columns,
        )  # fmt: skip
    if fmt is None:
        fmt = _EXTENSIONS.get(os.path.splitext(name)[1].lower())
        if fmt is None:
            raise InputError(
                f"{name}: cannot tell the format from the extension; use .jsonl or .csv, "
                "or pass --format"
            )
    try:
        file = open(name, "rb")  # noqa: SIM115 - Input owns it and closes it
    except OSError as exc:
        raise InputError(f"{name}: cannot read the input: {exc.strerror or exc}") from None
    try:
        return Input(name, file, fmt, lanes, owns_file=True, skip_columns=skip_columns)
    except BaseException:
        file.close()
        raise


def _check_encoding(name: str, start: bytes) -> None:
    if is_utf16(start):
        raise InputError(f"{name}: the file is UTF-16; UTF-8 is needed: {SAVE_AS_UTF8}")


def _may_block(file: IO[bytes]) -> bool:
    try:
        fd = file.fileno()
    except (OSError, ValueError):  # not a real file (a test's BytesIO): never waits
        return False
    return may_block(fd)


def _id_of(value: object) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _kind(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def _fields(count: int) -> str:
    return f"{count} field" if count == 1 else f"{count} fields"
