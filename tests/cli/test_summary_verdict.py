"""The terminal summary of the four-level verdict: power before running, the correction, epsilon, DP claims."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from worker.engine.assessment import AssessmentOptions
from worker.engine.verdict import evaluate


def _entry(name: str, mean: float, lo: float, hi: float, n_test: int = 160) -> dict:
    def m(a: float, b: float, c: float) -> dict:
        return {"mean": a, "std": 0.01, "ci_low": b, "ci_high": c, "values": [a]}

    return {"name": name, "feature_set": "error", "threat_model": "black-box", "classifier": "threshold",
            "status": "ok", "n_train": 0, "n_test": n_test, "repeats": 1,
            "metrics": {"accuracy": m(0.6, 0.5, 0.7), "auc": m(mean, lo, hi),
                        "tpr_at_fpr_0.01": {"mean": None, "std": None, "ci_low": None, "ci_high": None}}}


@pytest.fixture()
def captured(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    from backend.cli import summary

    out = io.StringIO()
    monkeypatch.setattr(summary, "stderr", Console(file=out, width=400))
    return out


def test_inconclusive_summary_names_the_correction_and_the_scans(captured: io.StringIO) -> None:
    from backend.cli import summary

    rng = np.random.default_rng(0)
    member = np.r_[np.ones(80, int), np.zeros(80, int)]
    exposure = {"error/threshold": [{"scan_id": str(i), "member": int(m), "score": float(s), "n_tested": 1}
                                    for i, (m, s) in enumerate(zip(member, rng.normal(size=160) + 4 * member))]}
    verdict = evaluate([_entry("error/threshold", 0.62, 0.47, 0.77)], counts=(80, 80), exposure=exposure,
                       dp_claim={"epsilon": 0.5, "delta": 1e-5})
    summary.print_summary({"verdict": verdict, "attacks": []}, {})
    text = captured.getvalue()
    assert verdict["level"] == "high" and "DP claim: The DP claim is contradicted" in text  # the claim decides
    verdict = evaluate([_entry("error/threshold", 0.62, 0.47, 0.77)], counts=(80, 80))
    captured.truncate(0)
    summary.print_summary({"verdict": verdict, "attacks": []}, {})
    text = captured.getvalue()
    assert "verdict: INCONCLUSIVE (fails the policy)" in text
    assert "bounds over all attacks: bonferroni over 1 attack metrics" in text
    assert f"about {verdict['scans_needed']} members and as many non-members in all would settle it" in text


def test_power_is_printed_before_a_run(captured: io.StringIO) -> None:
    from backend.cli import summary

    summary.print_power(80, 80, AssessmentOptions())
    assert "power: With 80 members and 80 non-members tested" in captured.getvalue()
    assert "Warning" in captured.getvalue()
    captured.truncate(0)
    summary.print_power(2000, 2000, AssessmentOptions(quantile=False))  # the classifier attacks test half
    assert "With 1000 members and 1000 non-members tested" in captured.getvalue()
    assert "Warning" not in captured.getvalue()
