"""Error types of the engine.

Every error a user can fix (bad manifest, unreadable scan, refused model file) is an
:class:`InputError`; the command line maps it to exit code 2.
"""

from __future__ import annotations

from dataclasses import dataclass


class BrainMIAError(Exception):
    """Base class of every error raised by the engine."""


class InputError(BrainMIAError):
    """Bad user input: a file, row or field that the user must fix."""


@dataclass(frozen=True)
class RowError:
    """One problem in one row of a tabular input.

    Attributes:
        line: 1-based line number in the file (the header is line 1).
        column: the column concerned, or None for the whole row.
        reason: plain-words description of the problem.
    """

    line: int
    column: str | None
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", column '{self.column}'" if self.column else "")
        return f"{where}: {self.reason}"


class ManifestError(InputError):
    """A manifest (or predictions table) with one or more bad rows."""

    def __init__(self, path: object, errors: list[RowError]):
        self.path = path
        self.errors = list(errors)
        lines = "\n".join(f"  {e}" for e in self.errors[:50])
        more = f"\n  ... and {len(self.errors) - 50} more" if len(self.errors) > 50 else ""
        super().__init__(f"{path}: {len(self.errors)} bad row(s)\n{lines}{more}")


class ScanError(InputError):
    """A scan file that cannot be read or conformed."""

    def __init__(self, path: object, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class ModelError(InputError):
    """A model file that cannot be loaded, is refused, or does not behave as a brain-age model."""

    def __init__(self, path: object, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")
