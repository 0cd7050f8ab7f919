"""Reading a succeeded assessment's result files (cached by modification time)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any


def _stamp(folder: Path) -> int:
    report = folder / "report.json"
    return report.stat().st_mtime_ns if report.is_file() else 0


@lru_cache(maxsize=8)
def _load(result_dir: str, mtime_ns: int) -> tuple[dict[str, Any], Any]:
    import pandas as pd

    folder = Path(result_dir)
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    from worker.engine.csv_safety import restore_frame

    features = pd.read_csv(folder / "features.csv") if (folder / "features.csv").is_file() else None
    return report, (restore_frame(features) if features is not None else None)


def load_results(result_dir: str | Path) -> tuple[dict[str, Any], Any]:
    """report.json as a dict and features.csv as a DataFrame (None when absent), its cells as
    they were before the CSV's formula guard (:func:`worker.engine.csv_safety.restore_frame`).

    Raises:
        FileNotFoundError: the folder has no report.json.
    """
    folder = Path(result_dir)
    stamp = _stamp(folder)
    if not stamp:
        raise FileNotFoundError(folder / "report.json")
    return _load(str(folder), stamp)


@lru_cache(maxsize=8)
def _context(result_dir: str, mtime_ns: int) -> dict[str, Any]:
    from frontend.report_html import build_context

    report, features = _load(result_dir, mtime_ns)
    return build_context(report, features)


def report_context(result_dir: str | Path) -> dict[str, Any]:
    """The report template's context (figures built once per result folder and reused)."""
    folder = Path(result_dir)
    stamp = _stamp(folder)
    if not stamp:
        raise FileNotFoundError(folder / "report.json")
    return _context(str(folder), stamp)
