"""The report page's verdict statistics: the correction, power, the empirical epsilon and a DP claim."""

from __future__ import annotations

import numpy as np

from frontend.report_html import render_report_html
from frontend.report_view.verdict import glance_cards, verdict_view
from tests.frontend.sample_report import make_sample
from worker.engine.report_model import Report
from worker.engine.verdict import Policy, evaluate


def _exposure(report: dict, features) -> dict:
    """Per-scan scores of the strongest attack: members score higher (a leaky model)."""
    rng = np.random.default_rng(0)
    member = features["member"].to_numpy().astype(bool)
    score = member * 2.5 + rng.normal(size=member.size)
    return {report["verdict"]["strongest_attack"]: [
        {"scan_id": str(i), "member": int(m), "score": float(s), "n_tested": 1} for i, (m, s) in enumerate(zip(member, score))]}


def test_epsilon_power_and_dp_claim_are_shown():
    report, features = make_sample(400, errored=False)
    ok = [a for a in report["attacks"] if a["status"] == "ok"]
    report["verdict"] = evaluate(ok, Policy(), utility=report["utility"], exposure=_exposure(report, features),
                                 dp_claim={"epsilon": 1.0, "delta": 1e-5})
    Report.model_validate(report)  # the typed report accepts the new verdict fields
    assert report["verdict"]["level"] == "high" and report["verdict"]["dp_claim"]["contradicted"]
    view = verdict_view(report)
    assert "Bonferroni" in view["multiplicity"] and "80% power" in view["power"]
    assert view["epsilon"]["ceiling"] and view["dp_claim"]["contradicted"]
    assert any(c["label"].startswith("Empirical privacy") for c in glance_cards(report))
    html = render_report_html(report, features)
    assert "How sure is this verdict?" in html and "the most these" in html
    assert "The DP claim is contradicted" in html


def test_inconclusive_report_says_how_many_scans_would_settle_it():
    report, features = make_sample(400, errored=False)
    for a in report["attacks"]:
        if a["status"] == "ok":
            a["metrics"]["auc"].update(mean=0.52, ci_low=0.40, ci_high=0.64)
            a["metrics"]["tpr_at_fpr_0.01"].update(mean=0.01, ci_low=0.0, ci_high=0.05)
    ok = [a for a in report["attacks"] if a["status"] == "ok"]
    report["verdict"] = evaluate(ok, Policy(), utility=report["utility"])
    assert report["verdict"]["level"] == "inconclusive" and report["verdict"]["passed"] is False
    html = render_report_html(report, features)
    assert "Inconclusive" in html and "would settle it" in html
    # an older report without the new fields still renders
    for key in ("multiplicity", "power", "scans_needed", "epsilon", "dp_claim"):
        report["verdict"].pop(key)
    assert "How sure is this verdict?" not in render_report_html(report, features)


def test_compare_page_shows_both_empirical_epsilons():
    from frontend.compare import build_comparison

    report, features = make_sample(400, errored=False)
    ok = [a for a in report["attacks"] if a["status"] == "ok"]
    before = dict(report, verdict=evaluate(ok, Policy(), utility=report["utility"],
                                           exposure=_exposure(report, features)))
    after = dict(report, verdict=evaluate(ok, Policy(), utility=report["utility"]))  # no per-scan scores
    row = next(h for h in build_comparison(before, after, features, features)["headline"]
               if h["label"].startswith("Empirical epsilon"))
    assert row["a"].startswith(">= ") and "measurable" in row["a"] and row["b"] == "n/a" and row["delta"] == "–"
