"""The scan-quality section: how the scans compare with the MNI152 template, and the flagged ones."""

from __future__ import annotations

from typing import Any

from ..figures import _data as D
from .formatting import fmt_num, fmt_pct


def scan_quality_view(report: dict) -> dict[str, Any] | None:
    """The section's text and rows, or None when the report has no scan QA (a predictions table,
    QA turned off, or a report from before scan QA).

    Returns:
        ``summary`` (one sentence), ``status`` (``ok``, ``flagged``, ``not-judged``), ``advice``,
        ``ranges`` ((label, text) rows: correlation and outside-mask spread, thresholds) and
        ``flagged`` (rows of scan ID, member, correlation, outside fraction, reasons).
    """
    qa = D.part(report, "scan_quality")
    if not qa:
        return None
    n, n_flagged = int(qa.get("n_scans") or 0), int(qa.get("n_flagged") or 0)
    thresholds, corr, outside = D.part(qa, "thresholds"), D.part(qa, "template_corr"), D.part(qa, "outside_mask")
    if not qa.get("judged"):
        status = "not-judged"
        summary = f"The scans were not judged: {qa.get('not_judged_reason') or 'the grid cannot be judged'}; their values are recorded."
    elif n_flagged:
        status = "flagged"
        summary = (f"{n_flagged} of {n} scans do not look like registered, skull-stripped MNI152 brains; "
                   "their features, and the attacks on them, may mean little.")
    else:
        status = "ok"
        summary = f"All {n} scans look registered to MNI152 and skull-stripped."
    if qa.get("mode") == "warn" and n_flagged:
        summary += " Scan QA was set to warn, so the assessment ran anyway."
    ranges = [
        ("Correlation with the MNI152 template",
         (f"{fmt_num(corr.get('min'))} to {fmt_num(corr.get('max'))} (median {fmt_num(corr.get('median'))}); "
          f"flagged below {fmt_num(thresholds.get('min_template_corr'))}")),
        ("Signal outside the brain mask",
         (f"{fmt_pct(outside.get('min'))} to {fmt_pct(outside.get('max'))} (median {fmt_pct(outside.get('median'))}); "
          f"flagged above {fmt_pct(thresholds.get('max_outside_mask'))}")),
        ("The job fails when more than", f"{fmt_pct(thresholds.get('max_flagged_fraction'), 0)} of the scans are flagged"
         + (" (scan QA set to warn: it never fails)" if qa.get("mode") == "warn" else "")),
    ]
    flagged = [
        {"scan_id": f.get("scan_id"), "member": "member" if f.get("member") else "non-member",
         "corr": fmt_num(f.get("template_corr")), "outside": fmt_pct(f.get("outside_mask")),
         "reasons": "; ".join(f.get("reasons") or [])}
        for f in qa.get("flagged") or []
    ]
    return {"status": status, "summary": summary, "advice": qa.get("advice"), "ranges": ranges, "flagged": flagged}
