"""Predictions supplied by the user, for black-box assessments of a model they keep.

The file is a CSV with the columns ``scan_id`` and ``prediction`` (predicted age in
years; for a model with age-bin outputs, as SFCN, its expected age over the bins), one row
per scan of the manifest; other columns are ignored.
"""

from __future__ import annotations

import math
from pathlib import Path

from worker.engine.errors import ManifestError, RowError
from worker.engine.manifest import Manifest, read_table

__all__ = ["PREDICTION_COLUMNS", "load_predictions"]

PREDICTION_COLUMNS = ("scan_id", "prediction")

_MAX_LISTED = 20


def load_predictions(path: Path, manifest: Manifest) -> dict[str, float]:
    """Read and validate a predictions CSV against a manifest.

    Args:
        path: the predictions file.
        manifest: the manifest whose scans must all have a prediction.

    Returns:
        Predicted age by ``scan_id``, in the manifest's order.

    Raises:
        ManifestError: listing every bad row: missing columns, a prediction that is not
            a finite number, a duplicate or unknown ``scan_id``, and (line 1) the
            manifest's scans that have no prediction.
    """
    path = Path(path)
    errors: list[RowError] = []
    table = read_table(path, errors)
    if table is None:
        raise ManifestError(path, errors)
    columns: dict[str, int] = {}
    for i, name in enumerate(table.header):
        if name.lower() in PREDICTION_COLUMNS and name.lower() not in columns:
            columns[name.lower()] = i
    missing = [c for c in PREDICTION_COLUMNS if c not in columns]
    if missing:
        raise ManifestError(path, [RowError(1, c, f"missing required column '{c}'") for c in missing])

    known = manifest.by_id()
    found: dict[str, float] = {}
    first_line: dict[str, int] = {}
    width = len(table.header)
    for line, cells in table.rows:
        if len(cells) < width or any(cells[width:]):
            errors.append(RowError(line, None, f"expected {width} fields, found {len(cells)}"))
            continue
        scan_id = cells[columns["scan_id"]]
        cell = cells[columns["prediction"]]
        if not scan_id:
            errors.append(RowError(line, "scan_id", "missing scan_id"))
        elif scan_id in first_line:
            errors.append(
                RowError(line, "scan_id", f"duplicate scan_id {scan_id!r} (first on line {first_line[scan_id]})")
            )
            continue
        elif scan_id not in known:
            errors.append(RowError(line, "scan_id", f"scan_id {scan_id!r} is not in the manifest"))
        else:
            first_line[scan_id] = line
        try:
            value = float(cell)
        except ValueError:
            reason = "missing prediction" if not cell else f"prediction {cell!r} is not a number"
            errors.append(RowError(line, "prediction", reason))
            continue
        if not math.isfinite(value):
            errors.append(RowError(line, "prediction", f"prediction {cell!r} is not finite"))
            continue
        if scan_id in known:
            found[scan_id] = value

    absent = [sid for sid in known if sid not in first_line]
    if absent:
        listed = ", ".join(absent[:_MAX_LISTED]) + (f", ... ({len(absent)} in all)" if len(absent) > _MAX_LISTED else "")
        errors.append(RowError(1, "scan_id", f"{len(absent)} manifest scan(s) have no prediction: {listed}"))
    if errors:
        errors.sort(key=lambda e: e.line)
        raise ManifestError(path, errors)
    return {sid: found[sid] for sid in known}
