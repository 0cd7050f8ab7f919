"""The user's side of a BIDS input: the scan filter (``space=...,desc=preproc``) and the lists of
member / non-member subject (or subject + session) IDs.

A list is a text file with one ID a line: a subject (``sub-01`` or ``01``), a subject and session
(``sub-01_ses-1``), or two columns (``sub-01 ses-1``, separated by a tab, comma or spaces). Blank
lines and ``#`` comments are ignored, and so is a header line (``participant_id``, ``subject``...).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.engine.errors import InputError

__all__ = ["DEFAULT_FILTER", "IdList", "ListedId", "parse_bids_filter", "read_id_list"]

DEFAULT_FILTER: dict[str, Any] = {"suffix": "T1w", "extension": [".nii", ".nii.gz"], "datatype": "anat"}
"""The scans taken when the filter does not say otherwise: anatomical T1w NIfTI files."""

SPECIAL_VALUES = {"none": "NONE", "any": "ANY"}
"""Filter values that mean "the entity is absent" / "the entity has any value" (pybids ``Query``)."""

_HEADER_WORDS = {"participant_id", "participant", "subject", "subject_id", "sub", "id", "scan_id"}
_LABEL = re.compile(r"[A-Za-z0-9]+")
_COMBINED = re.compile(r"(?:sub-)?([A-Za-z0-9]+)_ses-([A-Za-z0-9]+)")


def parse_bids_filter(value: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """The BIDS entity filter: the defaults updated by ``value``.

    Args:
        value: ``"space=MNI152NLin2009cAsym,desc=preproc,suffix=T1w"`` (``|`` separates
            alternatives: ``run=1|2``; ``none`` means the entity must be absent, ``any`` that it
            must be present; ``scope=raw`` / ``derivatives`` / a pipeline name picks where), or the
            same as a mapping (a list of alternatives per entity), or None for the defaults.

    Returns:
        Entity -> value or list of values, with :data:`DEFAULT_FILTER` filled in.

    Raises:
        InputError: a term that is not ``entity=value``, or an entity given twice.
    """
    result = dict(DEFAULT_FILTER)
    if value is None:
        return result
    given: dict[str, Any] = {}
    if isinstance(value, Mapping):
        for key, item in value.items():
            values = item if isinstance(item, (list, tuple)) else [item]
            if not values or not all(isinstance(v, str) and v.strip() for v in values):
                raise InputError(f"BIDS filter {key!r}: expected a value or a list of values (text)")
            given[str(key).strip()] = [v.strip() for v in values]
    else:
        for term in (t.strip() for t in str(value).split(",")):
            if not term:
                continue
            key, sep, text = term.partition("=")
            key = key.strip()
            values = [v.strip() for v in text.split("|") if v.strip()]
            if not sep or not key or not values:
                raise InputError(f"BIDS filter term {term!r}: expected entity=value, e.g. desc=preproc")
            if key in given:
                raise InputError(f"BIDS filter: entity {key!r} given twice (use | for alternatives: {key}=a|b)")
            given[key] = values
    for key, values in given.items():
        if key == "extension":
            values = [v if v.startswith(".") else "." + v for v in values]
        result[key] = values[0] if len(values) == 1 else values
    return result


@dataclass(frozen=True)
class ListedId:
    """One line of an ID list.

    Attributes:
        line: its line number in the file.
        subject: the subject label (``01`` for ``sub-01``).
        session: the session label, or None for every session of the subject.
    """

    line: int
    subject: str
    session: str | None = None

    def __str__(self) -> str:
        return f"sub-{self.subject}" + (f"_ses-{self.session}" if self.session else "")


@dataclass(frozen=True)
class IdList:
    """A member or non-member list: its file, the file's SHA-256 and its IDs."""

    path: Path
    sha256: str
    ids: list[ListedId]


def _label(text: str, prefix: str) -> str | None:
    """``01`` for ``sub-01`` or ``01`` (prefix ``sub-``); None when it is no BIDS label."""
    text = text.strip()
    if text.lower().startswith(prefix):
        text = text[len(prefix) :]
    return text if _LABEL.fullmatch(text) else None


def _parse_line(cells: list[str]) -> tuple[str | None, str | None, str | None]:
    """(subject, session, problem) of one line's cells."""
    if len(cells) == 1:
        combined = _COMBINED.fullmatch(cells[0])
        if combined:
            return combined.group(1), combined.group(2), None
        subject = _label(cells[0], "sub-")
        return subject, None, None if subject else f"{cells[0]!r} is not a subject ID (sub-01 or 01)"
    if len(cells) == 2:
        subject, session = _label(cells[0], "sub-"), _label(cells[1], "ses-")
        if subject and session:
            return subject, session, None
        return None, None, f"{' '.join(cells)!r} is not a subject and a session (sub-01 ses-1)"
    return None, None, f"expected one ID or a subject and a session, found {len(cells)} fields"


def read_id_list(path: Path, what: str = "members") -> IdList:
    """Read a list of subject or subject + session IDs.

    Args:
        path: the text file.
        what: ``members`` or ``non-members``, for error messages.

    Returns:
        The IDs in file order.

    Raises:
        InputError: an unreadable file, a line that is no ID (every one named by line), an ID
            listed twice, or a list with no ID.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
        text = data.decode("utf-8-sig")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} list: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: the {what} list is not UTF-8 text") from None
    ids: list[ListedId] = []
    problems: list[str] = []
    seen: dict[tuple[str, str | None], int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        cells = [c for c in re.split(r"[\t,; ]+", line) if c]
        if not cells:
            continue
        if not ids and not problems and cells[0].lower() in _HEADER_WORDS:
            continue  # a header line
        subject, session, problem = _parse_line(cells)
        if problem or subject is None:
            problems.append(f"line {number}: {problem}")
            continue
        key = (subject, session)
        if key in seen:
            problems.append(f"line {number}: {ListedId(number, subject, session)} listed twice (also line {seen[key]})")
            continue
        seen[key] = number
        ids.append(ListedId(number, subject, session))
    if problems:
        shown = "\n  ".join(problems[:50]) + (f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else "")
        raise InputError(f"{path}: {len(problems)} bad line(s) in the {what} list\n  {shown}")
    if not ids:
        raise InputError(f"{path}: the {what} list names no subject")
    return IdList(path=path, sha256=hashlib.sha256(data).hexdigest(), ids=ids)
