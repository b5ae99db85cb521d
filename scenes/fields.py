"""Reading fields of a YAML document while collecting located problems.

:class:`FieldReader` is what every file format of the engine reads with (line files in
:mod:`scenes.lineparse`, design spaces, scenarios): it walks a :class:`scenes.yamlpos.Located`
document, converts fields, and records each problem with the file, the line and the field path
instead of stopping at the first. Rule: a method that returns ``None`` for a value that was
present has reported a problem.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from . import yamlpos
from .errors import Problem
from .yamlpos import PathKey, format_path

T = TypeVar("T")


def read_text(path: Path, error: Callable[[list[Problem]], Exception]) -> str:
    """A file's text (UTF-8), or ``error([problem])`` raised with what went wrong, located at the
    file (line 0): the OS's message, or that it is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = exc.strerror or str(exc)
        raise error([Problem(file=str(path), line=0, path="", message=msg)]) from exc
    except UnicodeDecodeError as exc:
        msg = f"not UTF-8 text: {exc.reason}"
        raise error([Problem(file=str(path), line=0, path="", message=msg)]) from exc


def type_name(value: Any) -> str:
    """How a problem message names a value's type (``a string ('x')``, ``a mapping``...)."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def hint(text: str, choices: Iterable[str], *, label: str = "allowed") -> str:
    """``did you mean 'x'?`` when one choice is close, else the list of choices."""
    options = list(choices)
    close = difflib.get_close_matches(text, options, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return f"{label}: {', '.join(options) or 'none'}"


class FieldReader:
    """Converts fields of ``doc`` (from ``filename``) and collects :attr:`problems`; duplicate
    keys are problems from the start."""

    def __init__(self, doc: yamlpos.Located, filename: str) -> None:
        self.doc = doc
        self.file = filename
        self.problems: list[Problem] = [
            Problem(file=filename, line=line, path=format_path(dup), message="duplicate key")
            for dup, line in doc.duplicates
        ]
        #: (mapping path, field) pairs that an unknown-field problem suggested already.
        self.suggested: set[tuple[PathKey, str]] = set()

    def error(self, path: PathKey, message: str) -> None:
        self.problems.append(
            Problem(
                file=self.file, line=self.doc.line(path), path=format_path(path), message=message
            )
        )

    def mapping(
        self, value: Any, path: PathKey, allowed: Iterable[str], what: str | None = None
    ) -> dict[Any, Any] | None:
        """``value`` as a mapping; unknown keys are reported (with a did-you-mean) and kept."""
        if not isinstance(value, dict):
            kind = f"a mapping ({what})" if what else "a mapping"
            self.error(path, f"must be {kind}, got {type_name(value)}")
            return None
        allowed = tuple(allowed)
        for key in value:
            if key not in allowed:
                self.error((*path, str(key)), f"unknown field; {hint(str(key), allowed)}")
                close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                if close:
                    self.suggested.add((path, close[0]))
        return value

    def missing(self, path: PathKey, key: str) -> None:
        """Report a missing required field, unless a misspelt key was already pointed at it."""
        if (path, key) not in self.suggested:
            self.error(path, f"missing required field '{key}'")

    def field(
        self,
        m: Mapping[Any, Any],
        key: str,
        path: PathKey,
        read: Callable[[Any, PathKey], T | None],
    ) -> T | None:
        """Read required field ``key`` of ``m`` with ``read``; report it if missing."""
        if key not in m:
            self.missing(path, key)
            return None
        return read(m[key], (*path, key))

    def number(
        self,
        value: Any,
        path: PathKey,
        *,
        gt: float | None = None,
        ge: float | None = None,
        lt: float | None = None,
        le: float | None = None,
    ) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(path, f"must be a number, got {type_name(value)}")
            return None
        try:
            v = float(value)
        except OverflowError:
            v = math.inf
        if not math.isfinite(v):
            self.error(path, "must be a finite number")
            return None
        failed = (
            (">", gt)
            if gt is not None and not v > gt
            else (">=", ge)
            if ge is not None and not v >= ge
            else ("<", lt)
            if lt is not None and not v < lt
            else ("<=", le)
            if le is not None and not v <= le
            else None
        )
        if failed is not None:
            word, bound = failed
            self.error(path, f"must be {word} {bound:g}, got {v:g}")
            return None
        return v

    def positive(self, value: Any, path: PathKey) -> float | None:
        return self.number(value, path, gt=0)

    def integer(self, value: Any, path: PathKey, *, ge: int) -> int | None:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(path, f"must be a whole number, got {type_name(value)}")
            return None
        if value < ge:
            self.error(path, f"must be >= {ge}, got {value}")
            return None
        return value

    def string(self, value: Any, path: PathKey) -> str | None:
        if not isinstance(value, str) or not value:
            self.error(path, f"must be a non-empty string, got {type_name(value)}")
            return None
        return value
