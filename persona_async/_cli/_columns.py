"""The fields an input line may have, and what to say about names and bytes that do not fit.

A CSV header comes from a spreadsheet, and is fixed in one go: every problem of it is named at
once, a misspelt name with the field it may mean. Columns that look like no field may be extra
ones of the user's (``notes``) and are offered to ``--skip-columns``; a misspelt optional column
never is, since skipping it would drop its values in silence.
"""

from __future__ import annotations

import codecs
import difflib
from collections.abc import Collection, Iterable, Sequence

__all__ = [
    "FIELDS",
    "REQUIRED",
    "SAVE_AS_UTF8",
    "header_problems",
    "is_utf16",
    "quoted",
    "with_guess",
]

#: The fields every line must have, then all the fields a line may have.
REQUIRED = ("task_id", "audio_id", "name", "description")
FIELDS = ("provider", *REQUIRED, "vocal_start", "vocal_end", "style", "id")

#: How to get the UTF-8 this reader needs out of a spreadsheet.
SAVE_AS_UTF8 = (
    "save it as UTF-8 (in Excel: 'CSV UTF-8 (Comma delimited)'), or convert it: "
    "iconv -f UTF-16 -t UTF-8 FILE > NEW"
)
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def is_utf16(start: bytes) -> bool:
    """The first bytes of a UTF-16 file: a byte order mark, or NULs between ASCII letters
    (which would otherwise decode to mojibake line after line)."""
    return start.startswith(_UTF16_BOMS) or b"\0" in start


def header_problems(names: Sequence[str], skip: Collection[str]) -> str | None:
    """Everything wrong with a CSV header, in one sentence, with what to do; None if nothing."""
    problems = []
    unknown = [name for name in names if name not in FIELDS and name not in skip]
    if unknown:
        problems.append(
            f"unknown column{'s' if len(unknown) > 1 else ''} "
            + ", ".join(with_guess(name) for name in unknown)
        )
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        problems.append(f"no {quoted(missing)} column{'s' if len(missing) > 1 else ''}")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        problems.append(f"{quoted(twice)} appear{'s' if len(twice) == 1 else ''} twice")
    if not problems:
        return None
    extra = [name for name in unknown if _guess(name) is None]
    are = "are extra columns" if len(extra) > 1 else "is an extra column"
    hint = (
        f". If {quoted(extra)} {are} (notes, a spreadsheet's own), pass "
        f"--skip-columns {','.join(extra)}"
        if extra
        else ""
    )
    return f"the header has {'; '.join(problems)}. Columns read: {', '.join(FIELDS)}{hint}"


def quoted(names: Iterable[str]) -> str:
    return ", ".join(repr(name) for name in names)


def with_guess(name: str) -> str:
    """``name`` quoted, with the field it may be a misspelling of."""
    guess = _guess(name)
    return f"{name!r} (did you mean {guess!r}?)" if guess else repr(name)


def _guess(name: str) -> str | None:
    close = difflib.get_close_matches(name.lower(), FIELDS, n=1, cutoff=0.75)
    return close[0] if close else None
