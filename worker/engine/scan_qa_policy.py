"""What scan QA flags, and when it stops an assessment: the report's ``scan_quality`` section.

The values and their calibration are in :mod:`worker.engine.scan_qa`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from .errors import InputError
from .scan_qa import MAX_OUTSIDE_MASK, MIN_TEMPLATE_CORR, QA_COLUMNS, QaTemplate, scan_qa_values, template_for
from .volumes import ConformSpec, load_conformed

if TYPE_CHECKING:
    from .cache import VolumeCache
    from .manifest import ScanRecord

__all__ = ["QA_ADVICE", "QaMode", "ScanQaPolicy", "early_scan_qa", "scan_qa_section"]

QA_ADVICE = (
    "register to MNI152 (e.g. with ANTs or FSL flirt) and skull-strip (e.g. HD-BET, SynthStrip) before assessing"
)
"""What to do about a flagged scan."""

QaMode = Literal["fail", "warn", "off"]


@dataclass(frozen=True)
class ScanQaPolicy:
    """What scan QA flags and when it stops an assessment.

    Attributes:
        mode: ``fail`` (flagged scans are listed; the assessment fails when more than
            ``max_flagged_fraction`` of them are flagged), ``warn`` (listed only) or ``off``
            (no QA is computed).
        min_template_corr: a scan correlating less with the template is flagged.
        max_outside_mask: a scan with more of its signal outside the brain mask is flagged.
        max_flagged_fraction: the assessment fails when more than this fraction is flagged.
    """

    mode: QaMode = "fail"
    min_template_corr: float = MIN_TEMPLATE_CORR
    max_outside_mask: float = MAX_OUTSIDE_MASK
    max_flagged_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in ("fail", "warn", "off"):
            raise InputError(f"scan_qa must be 'fail', 'warn' or 'off', got {self.mode!r}")
        if not 0.0 <= self.max_flagged_fraction <= 1.0:
            raise InputError(f"scan_qa max_flagged_fraction must be in [0, 1], got {self.max_flagged_fraction!r}")

    def reasons(self, corr: float, outside: float) -> list[str]:
        """Why a scan with these QA values is flagged (empty: it is not)."""
        out = []
        if not np.isfinite(corr) or corr < self.min_template_corr:
            out.append(f"correlation with the MNI152 template {corr:.2f} < {self.min_template_corr:g}: not registered?")
        if not np.isfinite(outside) or outside > self.max_outside_mask:
            out.append(f"{100 * outside:.0f}% of the signal outside the brain mask (> {100 * self.max_outside_mask:g}%): "
                       "not skull-stripped, or not registered?")
        return out


def _stats(values: np.ndarray) -> dict[str, float | None]:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return {"min": None, "median": None, "max": None}
    return {"min": float(finite.min()), "median": float(np.median(finite)), "max": float(finite.max())}


def scan_qa_section(table: pd.DataFrame, policy: ScanQaPolicy, template: QaTemplate) -> dict[str, Any]:
    """The report's ``scan_quality`` section from a feature table's QA columns.

    Args:
        table: the per-scan feature table (``scan_id``, ``member`` and the :data:`QA_COLUMNS`).
        policy: the thresholds and the mode.
        template: the template of the model's grid (says whether the grid can be judged).

    Returns:
        The section: mode, whether the scans were judged (and why not), thresholds, counts, the
        spread of both values and the flagged scans with their reasons and :data:`QA_ADVICE`.

    Raises:
        InputError: in ``fail`` mode, when more than ``max_flagged_fraction`` of the scans are
            flagged; the message names the first flagged scans and says what to do.
    """
    corr = table[QA_COLUMNS[0]].to_numpy(dtype=np.float64)
    outside = table[QA_COLUMNS[1]].to_numpy(dtype=np.float64)
    not_judged = template.judgeable()
    flagged = []
    if not_judged is None:
        for row, c, o in zip(table.itertuples(index=False), corr, outside):
            reasons = policy.reasons(float(c), float(o))
            if reasons:
                flagged.append({"scan_id": row.scan_id, "member": int(row.member), "template_corr": float(c),
                                "outside_mask": float(o), "reasons": reasons})
    n = len(table)
    section = {
        "mode": policy.mode,
        "judged": not_judged is None,
        "not_judged_reason": not_judged,
        "thresholds": {"min_template_corr": policy.min_template_corr, "max_outside_mask": policy.max_outside_mask,
                       "max_flagged_fraction": policy.max_flagged_fraction},
        "grid": {"shape": list(template.shape), "voxel_size": list(template.voxel_size)},
        "n_scans": n,
        "n_flagged": len(flagged),
        "template_corr": _stats(corr),
        "outside_mask": _stats(outside),
        "flagged": flagged,
        "advice": QA_ADVICE if flagged else None,
        "failed": bool(policy.mode == "fail" and n and len(flagged) > policy.max_flagged_fraction * n),
    }
    if section["failed"]:
        names = ", ".join(str(f["scan_id"]) for f in flagged[:5]) + (", ..." if len(flagged) > 5 else "")
        raise InputError(
            f"scan QA: {len(flagged)} of {n} scans do not look like registered, skull-stripped MNI152 brains "
            f"(more than {100 * policy.max_flagged_fraction:g}%): {names} (e.g. {flagged[0]['scan_id']}: "
            f"{'; '.join(flagged[0]['reasons'])}). {QA_ADVICE[0].upper() + QA_ADVICE[1:]} "
            "(or assess anyway with scan_qa 'warn', --scan-qa warn on the command line)"
        )
    return section


def flagged_scans_note(section: Mapping[str, Any]) -> tuple[str, str] | None:
    """The verdict's finding on the scans that failed QA and were assessed anyway (``message``,
    ``recommendation``), or None when none was flagged.

    A scan that is not registered or not skull-stripped has a large error whether or not the model
    saw it: flagged members look like non-members, which can hide leakage.
    """
    k, n = int(section.get("n_flagged") or 0), int(section.get("n_scans") or 0)
    if not k:
        return None
    members = sum(int(f["member"]) for f in section.get("flagged") or [])
    message = (f"{k} of {n} scans ({members} member(s), {k - members} non-member(s)) do not look like "
               "registered, skull-stripped MNI152 brains (listed under scan quality); they were assessed as "
               "given. Such a scan's error is large whether or not the model saw it, so flagged members "
               "look like non-members: the leakage measured can be lower than the model's.")
    return message, f"{QA_ADVICE[0].upper() + QA_ADVICE[1:]} for the flagged scans, then re-assess."


EARLY_SAMPLE = 24
"""Scans checked before any feature is computed (a seeded random sample)."""


def early_scan_qa(records: Sequence[ScanRecord], spec: ConformSpec, policy: ScanQaPolicy, *,
                  cache: VolumeCache | None = None, sample: int = EARLY_SAMPLE, seed: int = 0,
                  confidence: float = 0.95) -> dict[str, Any] | None:
    """Check a random sample of the scans before any feature is computed; fail early only when sure.

    Every scan is checked later where it is conformed for the features (:func:`scan_qa_section`).
    This pre-check conforms ``sample`` scans drawn at random (seeded; they go into ``cache``, so
    the features reuse them) and, in ``fail`` mode, raises when the one-sided Clopper-Pearson
    lower bound of the flagged fraction (at ``confidence``) is above ``max_flagged_fraction``:
    then more than that fraction of all scans is flagged with that confidence (e.g. 24 of 24
    flagged: lower bound 0.88), and hours of feature extraction are not spent first.

    Returns:
        ``{"n_sampled", "n_flagged", "flagged_fraction_low"}``, or None when the grid is not
        judged or the mode is not ``fail``.

    Raises:
        InputError: the sample shows, at ``confidence``, that most scans are flagged.
    """
    from scipy.stats import beta

    template = template_for(spec)
    if policy.mode != "fail" or template.judgeable() is not None or not records:
        return None
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(records), size=min(sample, len(records)), replace=False).tolist())
    rows = []
    for i in chosen:
        record = records[i]
        volume = cache.get(record.path, spec) if cache is not None else load_conformed(record.path, spec)
        corr, outside = scan_qa_values(volume, template)
        rows.append({"scan_id": record.scan_id, "member": int(record.member), QA_COLUMNS[0]: corr, QA_COLUMNS[1]: outside})
    k, n = sum(bool(policy.reasons(r[QA_COLUMNS[0]], r[QA_COLUMNS[1]])) for r in rows), len(rows)
    low = float(beta.ppf(1 - confidence, k, n - k + 1)) if k else 0.0
    if low > policy.max_flagged_fraction:
        try:
            scan_qa_section(pd.DataFrame(rows), policy, template)
        except InputError as exc:
            raise InputError(f"{exc} [checked before computing any feature: {k} of a random {n} scans flagged, so "
                             f"more than {100 * policy.max_flagged_fraction:g}% of all {len(records)} are, "
                             f"at {100 * confidence:g}% confidence]") from None
    return {"n_sampled": n, "n_flagged": k, "flagged_fraction_low": low}
