"""The exception tree shared by every package of the engine.

    TwinError                      root: catch this to catch anything the engine raises on purpose
    ├── ConfigError (ValueError)   a bad input file; the message names file, line and field path
    │   └── LineFileError          one or more problems in a line file (all listed, one per line)
    └── SimulationError            a model the process core cannot run as asked

``scenes`` imports no other package of the engine, so the root lives here and the other packages
re-export it.
"""

from __future__ import annotations

from dataclasses import dataclass


class TwinError(Exception):
    """Root of every error the engine raises on purpose."""


class ConfigError(TwinError, ValueError):
    """A configuration or input file is invalid."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One problem found in an input file.

    ``line`` is 1-based (0 when unknown); ``path`` is the field path such as
    ``stations[2].failures.mttr`` (empty for the whole document).
    """

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where} {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class LineFileError(ConfigError):
    """A line file has problems; ``problems`` lists each, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.path))
        super().__init__("\n".join(str(p) for p in self.problems))


class SimulationError(TwinError):
    """The process core cannot run a model as asked."""
