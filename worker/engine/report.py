"""The report document (``report.json``): provenance, utility, attacks, exposure, verdict, scan quality."""

from __future__ import annotations

import json
import math
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import BrainMIAError, InputError
from .features.table import FeatureTable
from .report_model import Report
from .version import package_version

SCHEMA_VERSION = "1.0"
TOP_EXPOSED = 50


class ReportSchemaError(BrainMIAError):
    """The engine assembled a report that does not match :class:`~worker.engine.report_model.Report`."""


def exposure_section(ft: FeatureTable, exposure: dict[str, list[dict]], attack: str | None) -> dict[str, Any]:
    """The most exposed scans under ``attack``, and their scores written into the feature table.

    Adds a ``membership_score`` column to ``ft.table`` (NaN for scans never tested).
    """
    scores = exposure.get(attack or "", [])
    by_id = {row["scan_id"]: row for row in scores}
    ft.table["membership_score"] = [
        (by_id[s]["score"] if s in by_id and by_id[s]["score"] is not None else math.nan)
        for s in ft.table["scan_id"]
    ]
    ranked = sorted((r for r in scores if r["score"] is not None), key=lambda r: -r["score"])
    return {"attack": attack, "scans": ranked[:TOP_EXPOSED]}


def provenance(
    *,
    model: dict[str, Any],
    manifest: dict[str, Any],
    settings: dict[str, Any],
    started: datetime,
    duration_s: float,
    references: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance section of a report (``references``: K, the recipe, the keep matrix's hash)."""
    out = {
        "model": model,
        "manifest": manifest,
        "package_version": package_version(),
        "settings": settings,
        "created_at": started.astimezone(timezone.utc).isoformat(timespec="seconds"),
        "duration_s": round(duration_s, 3),
        "host": platform.node(),
        "python": platform.python_version(),
        "pid": os.getpid(),
    }
    if references is not None:
        out["references"] = references
    return out


def _clean(value: Any) -> Any:
    """Replace NaN/Inf by None so the document is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _clean(value.item())
    return value


def build_report(
    *,
    provenance: dict[str, Any],
    utility: dict[str, Any],
    attacks: list[dict],
    exposure: dict[str, Any],
    verdict: dict[str, Any],
    scan_quality: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the versioned report document (strict JSON: no NaN); ``scan_quality`` is
    :func:`worker.engine.scan_qa.scan_qa_section`'s, absent when no scan QA ran."""
    document = {
        "schema_version": SCHEMA_VERSION,
        "provenance": provenance,
        "utility": utility,
        "attacks": attacks,
        "exposure": exposure,
        "verdict": verdict,
    }
    if scan_quality is not None:
        document["scan_quality"] = scan_quality
    return _clean(document)


def validate(report: dict[str, Any]) -> Report:
    """Check ``report`` against the typed model of report.json (:class:`~worker.engine.report_model.Report`).

    Raises:
        ReportSchemaError: the document does not match its schema (an engine bug), naming the field.
    """
    try:
        return Report.from_dict(report, source=f"report.json (schema {SCHEMA_VERSION}) as the engine assembled it")
    except InputError as exc:
        raise ReportSchemaError(str(exc)) from None


def write_json(report: dict[str, Any], path: Path) -> Path:
    """Validate ``report`` (:func:`validate`), then write it atomically as indented JSON.

    Raises:
        ReportSchemaError: nothing is written when the document does not match its schema.
    """
    validate(report)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
