"""Writing an assessment's files: report.json, the self-contained report.html, features.csv."""

from __future__ import annotations

import os
from pathlib import Path

from worker.engine.assessment import AssessmentResult
from worker.engine.report import write_json

from .report_html import render_report_html


def write_outputs(result: AssessmentResult, out_dir: Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.html`` and ``features.csv`` (+ arrays) into ``out_dir``.

    Every file is written to a temporary name first and renamed, so a reader never sees a
    half-written file.

    Returns:
        name -> path of every file written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "features": result.features.save(out_dir / "features.csv"),
        "report_json": write_json(result.report, out_dir / "report.json"),
    }
    html_path = out_dir / "report.html"
    tmp = html_path.with_name(".report.html.tmp")
    tmp.write_text(render_report_html(result.report, result.features.table), encoding="utf-8")
    os.replace(tmp, html_path)
    paths["report_html"] = html_path
    return paths
