"""A BIDS dataset as a manifest: subjects and ages from ``participants.tsv`` (and the sessions'
``sub-*/sub-*_sessions.tsv``), one scan per subject / session chosen by BIDS entities (derivatives
included), membership from a list of subject or subject + session IDs.

The dataset is read with pybids (``BIDSLayout``, no validation, no metadata index, derivatives
found under ``derivatives/<pipeline>/``). :func:`bids_manifest` writes the manifest CSV it derives
(``scan_id`` ``sub-01_ses-1`` or ``sub-01``, ``path`` relative to the dataset, ``age``, ``member``,
every other ``participants.tsv`` column and ``session``) and a ``<stem>.source.json`` saying where it
came from, then loads it with :func:`~worker.engine.manifest.load_manifest`: the result is an
ordinary :class:`~worker.engine.manifest.Manifest`, validated the same way.

Every problem is collected and raised together in one :class:`BidsError`, each naming the subject
(and the file): a subject with no age, a listed ID that is not in the dataset, a listed subject with
no matching scan, several matching scans for one subject / session (with the entities that tell
them apart).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.engine.bids_lists import IdList, parse_bids_filter, read_id_list
from worker.engine.csv_safety import neutralise_row
from worker.engine.errors import InputError
from worker.engine.manifest import Manifest, load_manifest, source_path

__all__ = ["BidsError", "BidsInput", "bids_manifest", "parse_bids_filter", "read_id_list"]

_RESERVED = {"scan_id", "path", "age", "member"}
_Group = tuple[str, "str | None"]


class BidsError(InputError):
    """A BIDS dataset that cannot become a manifest; ``problems`` lists each, naming the subject."""

    def __init__(self, root: object, problems: list[str]):
        self.root = root
        self.problems = list(problems)
        shown = "\n  ".join(self.problems[:50])
        more = f"\n  ... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        super().__init__(f"BIDS dataset {root}: {len(self.problems)} problem(s)\n  {shown}{more}")


@dataclass(frozen=True)
class BidsInput:
    """What selects the scans of a BIDS dataset.

    Attributes:
        root: the dataset folder (with ``participants.tsv``).
        members: the member list file.
        non_members: the non-member list file; None for every other matching scan.
        bids_filter: ``entity=value`` terms (text or mapping, see :func:`parse_bids_filter`).
    """

    root: Path
    members: Path
    non_members: Path | None = None
    bids_filter: str | Mapping[str, Any] | None = None


@dataclass
class _Subject:
    """One participant: its ``participants.tsv`` row and its sessions' ages."""

    line: int | None = None
    age: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    session_ages: dict[str, tuple[int, str]] = field(default_factory=dict)
    sessions: set[str] = field(default_factory=set)


def _missing(cell: Any) -> bool:
    return cell is None or str(cell).strip() in {"", "n/a"}


def _read_tsv(path: Path, key: str, problems: list[str], root: Path) -> list[tuple[int, dict[str, str]]] | None:
    """Rows (line number, cells) of a BIDS TSV with the column ``key``; None when unusable."""
    import pandas as pd

    rel = path.relative_to(root).as_posix()
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        problems.append(f"{rel}: not a readable TSV file: {exc}")
        return None
    frame.columns = [str(c).strip() for c in frame.columns]
    if key not in frame.columns:
        problems.append(f"{rel}: no '{key}' column (columns: {', '.join(frame.columns)})")
        return None
    return [(i + 2, {c: str(v).strip() for c, v in row.items()}) for i, row in enumerate(frame.to_dict("records"))]


def _participants(root: Path, problems: list[str]) -> tuple[dict[str, _Subject], list[str]]:
    """Subjects of ``participants.tsv`` by label, and its attribute columns."""
    path = root / "participants.tsv"
    if not path.is_file():
        problems.append("participants.tsv not found at the top of the dataset (it lists participant_id and age)")
        return {}, []
    rows = _read_tsv(path, "participant_id", problems, root)
    if rows is None:
        return {}, []
    columns = list(rows[0][1]) if rows else []
    age_col = next((c for c in columns if c.lower() == "age"), None)
    attrs = [c for c in columns if c != "participant_id" and c != age_col]
    subjects: dict[str, _Subject] = {}
    for line, cells in rows:
        pid = cells["participant_id"]
        label = pid[4:] if pid.startswith("sub-") else ""
        if not label:
            problems.append(f"participants.tsv line {line}: participant_id {pid!r} is not sub-<label>")
        elif label in subjects:
            problems.append(f"participants.tsv line {line}: {pid} listed twice (also line {subjects[label].line})")
        else:
            subjects[label] = _Subject(line, cells.get(age_col, "") if age_col else "",
                                       {c: "" if _missing(cells[c]) else cells[c] for c in attrs})
    return subjects, attrs


def _session_ages(root: Path, label: str, subject: _Subject, problems: list[str]) -> None:
    """Fill ``subject.session_ages`` and ``sessions`` from ``sub-<label>/sub-<label>_sessions.tsv``."""
    path = root / f"sub-{label}" / f"sub-{label}_sessions.tsv"
    if not path.is_file():
        return
    rows = _read_tsv(path, "session_id", problems, root)
    for line, cells in rows or []:
        session = cells["session_id"].removeprefix("ses-")
        subject.sessions.add(session)
        age = next((v for c, v in cells.items() if c.lower() == "age"), "")
        if not _missing(age):
            subject.session_ages[session] = (line, age)


def _layout(root: Path) -> Any:
    """The pybids layout of the dataset and its derivatives."""
    from bids import BIDSLayout, BIDSLayoutIndexer
    from bids.exceptions import PyBIDSError

    try:
        return BIDSLayout(root, validate=False, derivatives=True,
                          indexer=BIDSLayoutIndexer(validate=False, index_metadata=False))
    except (PyBIDSError, ValueError, OSError) as exc:  # e.g. a derivatives folder without dataset_description.json
        raise InputError(f"BIDS dataset {root}: cannot be read as BIDS: {exc}") from None


def _query(layout: Any, filters: dict[str, Any], root: Path) -> list[Any]:
    """The files matching ``filters`` (``scope`` picks raw / derivatives / a pipeline)."""
    from bids.layout import Query

    terms = dict(filters)
    scope = terms.pop("scope", "all")
    for key, value in terms.items():
        if isinstance(value, str) and value.lower() in ("none", "any"):
            terms[key] = Query.NONE if value.lower() == "none" else Query.ANY
    known = set(layout.get_entities(scope="all")) | {"extension", "suffix", "datatype"}
    unknown = sorted(set(terms) - known)
    if unknown:
        raise InputError(f"BIDS filter: unknown entit{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)} "
                         f"(known here: scope, {', '.join(sorted(known))})")
    try:
        files = layout.get(scope=scope, return_type="object", **terms)
    except ValueError as exc:
        raise InputError(f"BIDS filter: {exc}") from None
    return [f for f in files if Path(f.path).is_file() and Path(f.path).resolve() != root]


def _pipeline(path: Path, root: Path) -> str:
    """``raw`` or ``derivatives/<pipeline>`` for a file of the dataset."""
    parts = path.relative_to(root).parts
    return f"derivatives/{parts[1]}" if len(parts) > 2 and parts[0] == "derivatives" else "raw"


def _ambiguity(group: _Group, files: list[Any], root: Path) -> str:
    """The problem of several scans for one subject / session: which files, which entities differ."""
    entities = [dict(f.get_entities(), scope=_pipeline(Path(f.path), root)) for f in files]
    keys = sorted({k for e in entities for k in e})
    differ = {k: sorted({str(e.get(k, "none")) for e in entities}) for k in keys}
    differ = {k: v for k, v in differ.items() if len(v) > 1}
    names = ", ".join(Path(f.path).relative_to(root).as_posix() for f in files)
    hint = "; ".join(f"{k} ({' / '.join(v)})" for k, v in differ.items()) or "no entity (identical names)"
    example = next(iter(differ.items()), None)
    suggest = f": narrow the filter, e.g. {example[0]}={example[1][-1]}" if example else ""
    return f"{_scan_id(group)}: {len(files)} scans match the filter ({names}); they differ in {hint}{suggest}"


def _scan_id(group: _Group) -> str:
    return f"sub-{group[0]}" + (f"_ses-{group[1]}" if group[1] else "")


def _resolve(listed: IdList, what: str, groups: dict[_Group, list[Any]], subjects: dict[str, _Subject],
             problems: list[str]) -> set[_Group]:
    """The subject / session groups a list names; problems for IDs not in the dataset or with no scan."""
    chosen: set[_Group] = set()
    name = listed.path.name
    for item in listed.ids:
        subject = subjects.get(item.subject)
        in_files = [g for g in groups if g[0] == item.subject]
        if subject is None and not in_files:
            problems.append(f"{item} ({name} line {item.line}, {what}): not in the dataset "
                            "(no such participant_id in participants.tsv and no files)")
            continue
        if item.session is None:
            if not in_files:
                problems.append(f"{item} ({name} line {item.line}, {what}): no scan matches the filter")
            chosen.update(in_files)
            continue
        group = (item.subject, item.session)
        if group in groups:
            chosen.add(group)
        elif subject is not None and item.session in subject.sessions:
            problems.append(f"{item} ({name} line {item.line}, {what}): no scan of this session matches the filter")
        else:
            problems.append(f"{item} ({name} line {item.line}, {what}): no such session in the dataset")
    return chosen


def _age(group: _Group, subject: _Subject | None, problems: list[str]) -> float | None:
    """The age at a scan: the session's ``age`` (sessions.tsv) wins over participants.tsv's."""
    label, session = group
    sid = _scan_id(group)
    if subject is not None and session is not None and session in subject.session_ages:
        line, text = subject.session_ages[session]
        where = f"sub-{label}_sessions.tsv line {line}"
    elif subject is not None and not _missing(subject.age):
        text, where = subject.age, f"participants.tsv line {subject.line}"
    else:
        row = f"participants.tsv line {subject.line}" if subject is not None and subject.line else "not in participants.tsv"
        problems.append(f"{sid}: no age ({row}; no age in sub-{label}_sessions.tsv either)")
        return None
    try:
        age = float(text)
    except ValueError:
        age = math.nan
    if not math.isfinite(age) or age < 0:
        problems.append(f"{sid}: age {text!r} in {where} is not a non-negative number of years")
        return None
    return age


def _write(csv_path: Path, rows: list[list[Any]], header: list[str], source: dict[str, Any]) -> None:
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(neutralise_row(r) for r in rows)
    source_path(csv_path).write_text(json.dumps(source, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def bids_manifest(spec: BidsInput, csv_path: Path, *, confine: bool = False) -> Manifest:
    """The manifest of a BIDS dataset's member and non-member scans, written to ``csv_path``.

    Args:
        spec: the dataset, the member (and non-member) list and the scan filter.
        csv_path: where the derived manifest CSV goes (``<stem>.source.json`` beside it).
        confine: whether every scan must resolve inside the dataset (no link out of it).

    Returns:
        The loaded manifest; its ``source`` names the dataset, the filter and the lists' SHA-256,
        ``subjects_in_both``: subjects with member and non-member sessions (a non-member
        session of a subject the model saw is not an unseen brain; only an explicit non-member list
        puts one there), and ``sessions_left_out``: without a non-member list, the unlisted sessions
        of member subjects, which are neither (as non-members they would hide leakage).

    Raises:
        BidsError: every problem found, each naming the subject (and file).
        InputError: a dataset pybids cannot read, a bad filter or ID list.
    """
    root = Path(spec.root).resolve()
    if not root.is_dir():
        raise InputError(f"BIDS dataset {spec.root}: not a folder")
    filters = parse_bids_filter(spec.bids_filter)
    members = read_id_list(spec.members, "members")
    non_members = read_id_list(spec.non_members, "non-members") if spec.non_members is not None else None
    problems: list[str] = []
    subjects, attrs = _participants(root, problems)
    layout = _layout(root)
    groups: dict[_Group, list[Any]] = {}
    for f in _query(layout, filters, root):
        ents = f.get_entities()
        if "subject" in ents:
            groups.setdefault((str(ents["subject"]), str(ents["session"]) if "session" in ents else None), []).append(f)
    for label in {g[0] for g in groups} | set(subjects):
        _session_ages(root, label, subjects.setdefault(label, _Subject()), problems)
    for label, session in groups:
        if session is not None:
            subjects[label].sessions.add(session)
    chosen_members = _resolve(members, "members", groups, subjects, problems)
    if non_members is not None:
        chosen_non = _resolve(non_members, "non-members", groups, subjects, problems)
        for group in sorted(chosen_members & chosen_non, key=lambda g: (g[0], g[1] or "")):
            problems.append(f"{_scan_id(group)}: listed as a member and as a non-member")
        left_out: set[_Group] = set()
    else:
        # an unlisted session of a member subject is not an unseen brain: counted as a non-member it
        # would look like a member and hide leakage, so it is left out (an explicit list decides itself)
        member_subjects = {g[0] for g in chosen_members}
        left_out = {g for g in set(groups) - chosen_members if g[0] in member_subjects}
        chosen_non = set(groups) - chosen_members - left_out
    has_sessions = any(g[1] is not None for g in chosen_members | chosen_non)
    renamed = {a: (f"bids_{a}" if a.lower() in _RESERVED | {"session"} else a) for a in attrs}
    header = ["scan_id", "path", "age", "member", *renamed.values()] + (["session"] if has_sessions else [])
    rows: list[list[Any]] = []
    for group in sorted(chosen_members | chosen_non, key=lambda g: (g[0], g[1] or "")):
        files = groups[group]
        if len(files) > 1:
            problems.append(_ambiguity(group, files, root))
            continue
        subject = subjects.get(group[0])
        age = _age(group, subject if subject is not None and (subject.line or subject.session_ages) else None,
                   problems)
        if age is None:
            continue
        cells = subject.attributes if subject is not None else {}
        row = [_scan_id(group), Path(files[0].path).relative_to(root).as_posix(), repr(age),
               1 if group in chosen_members else 0, *(cells.get(a, "") for a in attrs)]
        rows.append(row + ([f"ses-{group[1]}" if group[1] else ""] if has_sessions else []))
    if problems:
        raise BidsError(root, problems)
    if not rows:
        raise BidsError(root, ["no scan matches the filter for the listed subjects"])
    source = {
        "kind": "bids",
        "dataset": root.name,
        "filter": {k: v for k, v in sorted(filters.items())},
        "members_file": members.path.name,
        "members_sha256": members.sha256,
        "non_members_file": non_members.path.name if non_members is not None else None,
        "non_members_sha256": non_members.sha256 if non_members is not None else None,
        "non_members_from": "list" if non_members is not None else "every other matching scan",
        "subjects_in_both": sorted({f"sub-{g[0]}" for g in chosen_members} & {f"sub-{g[0]}" for g in chosen_non}),
        "sessions_left_out": sorted(_scan_id(g) for g in left_out),
    }
    _write(Path(csv_path), rows, header, source)
    return load_manifest(csv_path, base_dir=root, confine=confine)
