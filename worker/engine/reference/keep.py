"""The keep matrix: which reference model trained on which audit scan.

``keep[k, n]`` is True when reference model ``k`` trained on scan ``n`` (IN), False when not (OUT).

- :func:`balanced_keep` builds it for references BrainMIA trains, as LiRA does (Carlini et al.
  2022; tensorflow/privacy ``research/mi_lira_2021/train.py``: per scan, a random order of the
  models, the first half IN), so that each scan is IN exactly K/2 models and OUT of the others:
  online (IN and OUT) and offline (OUT) attacks are both possible for every scan.
- :func:`read_keep_csv` reads it for references the user trained (DESIGN.md): a ``scan_id``
  column and one 0/1 column per reference model, named by the model file's stem.
- :func:`keep_hash` names it in the report's provenance.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError, ManifestError, RowError

logger = logging.getLogger(__name__)

SCAN_ID = "scan_id"


def balanced_keep(n_models: int, n_scans: int, seed: int) -> np.ndarray:
    """A seeded ``(K, N)`` keep matrix with each scan IN exactly K/2 models.

    For each scan the models are put in a random order and the first K/2 take it, so each model
    trains on about half of the scans (N/2 on average, binomial spread).

    Args:
        n_models: K, even and at least 2.
        n_scans: N, at least 1.
        seed: the random seed (the same seed gives the same matrix).

    Raises:
        InputError: K odd or below 2, N below 1.
    """
    k, n = int(n_models), int(n_scans)
    if k < 2 or k % 2:
        raise InputError(f"the number of reference models must be even and at least 2, got {n_models}")
    if n < 1:
        raise InputError(f"a keep matrix needs at least one scan, got {n_scans}")
    rng = np.random.default_rng(seed)
    order = rng.random((k, n)).argsort(axis=0)  # per scan, a random permutation of the models
    return order < k // 2


def keep_hash(keep: np.ndarray) -> str:
    """sha256 (hex) of the keep matrix: its shape, then its bits packed row by row."""
    arr = np.asarray(keep)
    if arr.ndim != 2:
        raise InputError(f"a keep matrix has 2 dimensions, got shape {arr.shape}")
    h = hashlib.sha256(f"keep:{arr.shape[0]}x{arr.shape[1]}:".encode())
    h.update(np.packbits(arr.astype(bool), axis=1).tobytes())
    return h.hexdigest()


def read_keep_csv(path: str | Path, scan_ids: Sequence[object], model_stems: Sequence[str]) -> np.ndarray:
    """The ``(K, N)`` keep matrix of user-supplied references from ``keep.csv``.

    Rows of the result follow ``model_stems``, columns ``scan_ids``. Scan ids are compared as
    text (stripped). Cells are ``0`` or ``1`` (stripped).

    Choices: a model with no column is OUT for every scan (DESIGN.md); an audit scan with no row
    is OUT for every model (logged as a warning): both are silent gaps a user may intend (a model
    trained on other data only). Refused, every problem listed with its line (the header is line
    1) and column: no ``scan_id`` column, a column named twice, a column that names no model, an
    empty, unknown or repeated scan id, a cell that is not 0/1, a row with too many or too few
    cells.

    Args:
        path: the CSV file.
        scan_ids: the audit scans (the manifest's order).
        model_stems: the reference models' file stems.

    Raises:
        InputError: unreadable file, duplicate model stems.
        ManifestError: the rows and columns at fault (an :class:`InputError`).
    """
    path = Path(path)
    stems = [str(s) for s in model_stems]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})
        raise InputError(f"reference models with the same file stem: {', '.join(dup)}")
    ids = [str(s).strip() for s in scan_ids]
    position = {sid: i for i, sid in enumerate(ids)}
    keep = np.zeros((len(stems), len(ids)), dtype=bool)
    errors: list[RowError] = []
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise ManifestError(path, [RowError(1, None, "the file is empty (no header)")])
            header = [h.strip() for h in header]
            seen: set[str] = set()
            for h in header:
                if h in seen:
                    errors.append(RowError(1, h, "column named twice"))
                seen.add(h)
            if SCAN_ID not in header:
                errors.append(RowError(1, SCAN_ID, "no scan_id column"))
            model_row = {s: i for i, s in enumerate(stems)}
            columns: list[tuple[int, str, int]] = []  # (cell index, name, model row)
            for j, h in enumerate(header):
                if h == SCAN_ID:
                    continue
                if h not in model_row:
                    errors.append(RowError(1, h, f"names no reference model (models: {', '.join(stems) or 'none'})"))
                else:
                    columns.append((j, h, model_row[h]))
            if errors:
                raise ManifestError(path, errors)
            id_col = header.index(SCAN_ID)
            first_line: dict[str, int] = {}
            for row in reader:
                line = reader.line_num
                if not any(c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    errors.append(RowError(line, None, f"{len(row)} cells, the header has {len(header)}"))
                    continue
                sid = row[id_col].strip()
                if not sid:
                    errors.append(RowError(line, SCAN_ID, "empty scan id"))
                    continue
                if sid in first_line:
                    errors.append(RowError(line, SCAN_ID, f"scan id '{sid}' repeats line {first_line[sid]}"))
                    continue
                first_line[sid] = line
                n = position.get(sid)
                if n is None:
                    errors.append(RowError(line, SCAN_ID, f"scan id '{sid}' is not an audit scan"))
                for j, name, k in columns:
                    cell = row[j].strip()
                    if cell not in ("0", "1"):
                        errors.append(RowError(line, name, f"'{row[j]}' is not 0 or 1"))
                    elif n is not None:
                        keep[k, n] = cell == "1"
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read the keep file: {exc}") from None
    if errors:
        raise ManifestError(path, errors)
    missing_models = [s for s in stems if s not in {c[1] for c in columns}]
    if missing_models:
        logger.info("%s: no column for %d reference model(s) (%s): OUT for every scan",
                    path, len(missing_models), ", ".join(missing_models[:5]))
    missing = [sid for sid in ids if sid not in first_line]
    if missing:
        logger.warning("%s: %d audit scan(s) have no row (first: %s): OUT for every reference model",
                       path, len(missing), missing[0])
    return keep


__all__ = ["SCAN_ID", "balanced_keep", "keep_hash", "read_keep_csv"]
