"""Scan manifests: the CSV that lists scans, their ages and their membership.

A manifest is a CSV file with a header row and the columns ``scan_id`` (unique),
``path`` (relative to ``base_dir``, by default the manifest's folder; absolute paths
are accepted), ``age`` (years) and ``member`` (``1``/``0``, ``true``/``false``,
``yes``/``no``, ``member``/``non-member``; member is the positive class). An optional
``learner`` column names the federated learner that holds the scan; every other column
(``sex``, ``site``, ...) is kept as a slicing attribute. A manifest written for another source
(a BIDS dataset: :mod:`worker.engine.bids`) may have ``<stem>.source.json`` beside it, a JSON
object saying where its rows came from; it is kept as :attr:`Manifest.source` for the report.

Parsing is all-or-nothing: every bad row is collected and one :class:`ManifestError`
lists them all, each with its line number and column.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.engine.csv_safety import restore_cell
from worker.engine.errors import ManifestError, RowError

__all__ = [
    "REQUIRED_COLUMNS",
    "CsvTable",
    "Manifest",
    "ScanRecord",
    "load_manifest",
    "parse_member",
    "read_table",
]

REQUIRED_COLUMNS = ("scan_id", "path", "age", "member")
"""Columns every manifest must have (matched case-insensitively)."""

LEARNER_COLUMN = "learner"

_MEMBER_TRUE = frozenset({"1", "true", "yes", "member"})
_MEMBER_FALSE = frozenset({"0", "false", "no", "non-member", "non_member", "nonmember"})
_MEMBER_SPELLINGS = "1/0, true/false, yes/no, member/non-member"


@dataclass(frozen=True)
class ScanRecord:
    """One row of a manifest.

    Attributes:
        scan_id: unique identifier of the scan.
        path: absolute, resolved path of the NIfTI file.
        age: age at scan, in years.
        member: True for a training-set member, False for a non-member, None only when
            membership was not required and the cell is empty.
        line: line number of the row in the CSV (the header is line 1).
        learner: federated learner holding the scan, or None.
        attributes: every extra column (``sex``, ``site``, ...) by its original name.
    """

    scan_id: str
    path: Path
    age: float
    member: bool | None
    line: int
    learner: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass
class Manifest:
    """A parsed, validated manifest.

    Attributes:
        path: the manifest file.
        sha256: hex digest of the manifest file bytes.
        records: one record per row, in file order.
        attribute_names: the extra columns, in file order (excludes ``scan_id``,
            ``path``, ``age``, ``member`` and ``learner``).
        source: where the rows came from when the manifest was derived (``kind`` ``bids``:
            dataset, filter, the member list's SHA-256), from ``<stem>.source.json``; empty
            for a manifest written by hand.
    """

    path: Path
    sha256: str
    records: list[ScanRecord]
    attribute_names: list[str] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def n_members(self) -> int:
        """Number of member scans."""
        return sum(1 for r in self.records if r.member is True)

    @property
    def n_nonmembers(self) -> int:
        """Number of non-member scans."""
        return sum(1 for r in self.records if r.member is False)

    def by_id(self) -> dict[str, ScanRecord]:
        """Records keyed by ``scan_id``."""
        return {r.scan_id: r for r in self.records}

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[ScanRecord]:
        return iter(self.records)


def parse_member(value: str) -> bool:
    """Parse a membership cell.

    Args:
        value: ``1``/``0``, ``true``/``false``, ``yes``/``no``, ``member``/``non-member``
            (also ``non_member``, ``nonmember``); case-insensitive, whitespace stripped.

    Returns:
        True for a member, False for a non-member.

    Raises:
        ValueError: for any other value.
    """
    key = str(value).strip().lower()
    if key in _MEMBER_TRUE:
        return True
    if key in _MEMBER_FALSE:
        return False
    raise ValueError(f"unknown membership value {value.strip()!r} (expected {_MEMBER_SPELLINGS})")


@dataclass
class CsvTable:
    """A CSV file split into a header and rows, with line numbers."""

    header: list[str]
    rows: list[tuple[int, list[str]]]
    sha256: str


def read_table(path: Path, errors: list[RowError]) -> CsvTable | None:
    """Read a CSV file into stripped header and row cells, with line numbers.

    Handles a UTF-8 byte-order mark, surrounding whitespace and blank lines. Problems
    with the file as a whole are appended to ``errors``.

    Args:
        path: the CSV file.
        errors: list that receives problems found.

    Returns:
        The table, or None when the file cannot be read as CSV at all.

    Raises:
        ManifestError: when the file does not exist or cannot be read.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ManifestError(path, [RowError(1, None, f"cannot read file: {exc.strerror or exc}")]) from exc
    digest = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        errors.append(RowError(line, None, "not UTF-8 text (save the file as UTF-8 CSV)"))
        return None
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True, strict=True)
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    next_line = 1
    try:
        for cells in reader:
            line = next_line
            next_line = reader.line_num + 1
            cells = [restore_cell(c.strip()) for c in cells]  # undo the formula guard of BrainMIA's CSVs
            if not any(cells):
                continue  # blank line
            if header is None:
                while cells and not cells[-1]:
                    cells.pop()  # unnamed trailing columns (spreadsheet exports)
                header = cells
            else:
                rows.append((line, cells))
    except csv.Error as exc:
        errors.append(RowError(next_line, None, f"malformed CSV: {exc}"))
        return None
    if header is None:
        errors.append(RowError(1, None, "empty file: expected a header row"))
        return None
    return CsvTable(header=header, rows=rows, sha256=digest)


def _locate_columns(
    header: list[str], required: tuple[str, ...], optional: tuple[str, ...], errors: list[RowError]
) -> dict[str, int] | None:
    """Map required and optional column names (case-insensitive) to their index."""
    index: dict[str, int] = {}
    seen: dict[str, int] = {}
    for i, name in enumerate(header):
        if not name:
            continue
        key = name.lower()
        if key in seen:
            errors.append(RowError(1, name, f"duplicate column name (also column {seen[key] + 1})"))
            continue
        seen[key] = i
        if key in required or key in optional:
            index[key] = i
    for name in required:
        if name not in index:
            errors.append(RowError(1, name, f"missing required column '{name}'"))
    if any(e.line == 1 for e in errors):
        return None
    return index


def _check_width(line: int, cells: list[str], header: list[str], errors: list[RowError]) -> bool:
    """Check the number of fields of a row; unnamed trailing columns must be empty."""
    if len(cells) != len(header):
        # Tolerate missing or extra *empty* trailing cells (spreadsheet exports).
        extra = cells[len(header) :]
        if len(cells) > len(header) and not any(extra):
            del cells[len(header) :]
        else:
            errors.append(RowError(line, None, f"expected {len(header)} fields, found {len(cells)}"))
            return False
    for i, name in enumerate(header):
        if not name and cells[i]:
            errors.append(RowError(line, None, f"value {cells[i]!r} in column {i + 1}, which has no name"))
            return False
    return True


def _parse_age(line: int, cell: str, errors: list[RowError]) -> float | None:
    if not cell:
        errors.append(RowError(line, "age", "missing age"))
        return None
    try:
        age = float(cell)
    except ValueError:
        errors.append(RowError(line, "age", f"age {cell!r} is not a number"))
        return None
    if not math.isfinite(age):
        errors.append(RowError(line, "age", f"age {cell!r} is not finite"))
        return None
    if age < 0:
        errors.append(RowError(line, "age", f"age {cell!r} is negative"))
        return None
    return age


def load_manifest(
    path: Path,
    *,
    base_dir: Path | None = None,
    check_files: bool = True,
    require_member: bool = True,
    confine: bool = False,
) -> Manifest:
    """Parse and validate a manifest CSV.

    Args:
        path: the manifest file.
        base_dir: folder that relative scan paths are resolved against; defaults to the
            manifest's folder.
        check_files: whether every scan path must name an existing file.
        require_member: whether the ``member`` cell must be filled; when False an empty
            cell gives ``member=None``. The column itself is always required.
        confine: whether every scan path must resolve inside ``base_dir`` (no absolute
            paths, no ``..`` or links out of it), e.g. for an uploaded archive.

    Returns:
        The manifest, records in file order.

    Raises:
        ManifestError: listing every bad row (line, column, reason).
    """
    path = Path(path).resolve()
    base = Path(base_dir).resolve() if base_dir is not None else path.parent
    errors: list[RowError] = []
    table = read_table(path, errors)
    if table is None:
        raise ManifestError(path, errors)
    header = table.header
    index = _locate_columns(header, REQUIRED_COLUMNS, (LEARNER_COLUMN,), errors)
    if index is None:
        raise ManifestError(path, errors)
    known = set(index.values())
    attribute_cols = [(i, name) for i, name in enumerate(header) if name and i not in known]
    if not table.rows:
        raise ManifestError(path, [RowError(1, None, "no rows: the manifest lists no scans")])

    records: list[ScanRecord] = []
    first_line_of_id: dict[str, int] = {}
    for line, cells in table.rows:
        if not _check_width(line, cells, header, errors):
            continue
        n_before = len(errors)
        scan_id = cells[index["scan_id"]]
        if not scan_id:
            errors.append(RowError(line, "scan_id", "missing scan_id"))
        elif scan_id in first_line_of_id:
            errors.append(
                RowError(line, "scan_id", f"duplicate scan_id {scan_id!r} (first on line {first_line_of_id[scan_id]})")
            )
        else:
            first_line_of_id[scan_id] = line

        raw_path = cells[index["path"]]
        scan_path: Path | None = None
        if not raw_path:
            errors.append(RowError(line, "path", "missing path"))
        else:
            scan_path = (base / raw_path).resolve()
            if confine and not scan_path.is_relative_to(base):
                errors.append(RowError(line, "path", f"path {raw_path!r} is outside the folder {base}"))
                scan_path = None
            elif check_files and not scan_path.is_file():
                reason = "not a file" if scan_path.exists() else "file not found"
                errors.append(RowError(line, "path", f"{reason}: {scan_path}"))

        age = _parse_age(line, cells[index["age"]], errors)

        member: bool | None = None
        member_cell = cells[index["member"]]
        if member_cell:
            try:
                member = parse_member(member_cell)
            except ValueError as exc:
                errors.append(RowError(line, "member", str(exc)))
        elif require_member:
            errors.append(RowError(line, "member", f"missing membership value (expected {_MEMBER_SPELLINGS})"))

        learner = cells[index[LEARNER_COLUMN]] if LEARNER_COLUMN in index else ""
        if len(errors) > n_before or scan_path is None or age is None:
            continue
        records.append(
            ScanRecord(
                scan_id=scan_id,
                path=scan_path,
                age=age,
                member=member,
                line=line,
                learner=learner or None,
                attributes={name: cells[i] for i, name in attribute_cols},
            )
        )

    errors.extend(_membership_conflicts(records))
    if errors:
        errors.sort(key=lambda e: e.line)
        raise ManifestError(path, errors)
    return Manifest(
        path=path,
        sha256=table.sha256,
        records=records,
        attribute_names=[name for _, name in attribute_cols],
        source=read_source(path),
    )


def source_path(manifest_path: Path) -> Path:
    """The ``<stem>.source.json`` beside a manifest: where a derived manifest's rows came from."""
    return manifest_path.with_name(manifest_path.stem + ".source.json")


def read_source(manifest_path: Path) -> dict[str, Any]:
    """The manifest's ``<stem>.source.json`` object, or ``{}`` when there is none.

    Raises:
        ManifestError: a source file that is not a JSON object.
    """
    path = source_path(manifest_path)
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(path, [RowError(1, None, f"not a readable JSON file: {exc}")]) from None
    if not isinstance(value, dict):
        raise ManifestError(path, [RowError(1, None, "expected a JSON object")])
    return value


def _membership_conflicts(records: list[ScanRecord]) -> list[RowError]:
    """Errors for files listed both as a member and as a non-member."""
    first: dict[Path, ScanRecord] = {}
    errors: list[RowError] = []
    for rec in records:
        if rec.member is None:
            continue
        prev = first.setdefault(rec.path, rec)
        if prev is not rec and prev.member is not rec.member:
            errors.append(
                RowError(
                    rec.line,
                    "member",
                    f"scan listed as member and non-member (lines {prev.line} and {rec.line}): {rec.path}",
                )
            )
    return errors
