"""Federated figures, the federated view and its report partial."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from frontend.federated_view import build_federated_context, federated_figures, fmt_metric
from frontend.figures import (
    FIGURE_INFO,
    FIGURES,
    MEMBER_COLOR,
    NONMEMBER_COLOR,
    FigureUnavailable,
    build_figure,
)
from tests.frontend.sample_report import make_sample
from worker.engine.report_model import Report

NAMES = ("federated_matrix", "federated_rounds", "federated_learners")
LEARNERS = ["site-A", "site-B", "site-C", "<b>site-D</b>"]


def _summary(mean: float, low: float, high: float) -> dict:
    return {"mean": mean, "std": 0.02, "ci_low": low, "ci_high": high, "values": [mean]}


def _grid(rng: np.random.Generator, n: int, base: float) -> list[list[float | None]]:
    return [[None if i == j else float(np.round(base + rng.uniform(-0.1, 0.2), 3)) for j in range(n)] for i in range(n)]


def make_federated_report(n_rounds: int = 40) -> tuple[dict, pd.DataFrame]:
    """A report with a ``federated`` section shaped as the engine writes it, and its feature table."""
    rng = np.random.default_rng(3)
    n = len(LEARNERS)
    acc, auc = _grid(rng, n, 0.65), _grid(rng, n, 0.7)
    tpr = [[None] * n for _ in range(n)]
    ci = {
        "accuracy": {"low": [[None if v is None else v - 0.1 for v in row] for row in acc],
                     "high": [[None if v is None else v + 0.1 for v in row] for row in acc]},
        "auc": {"low": [[None if v is None else v - 0.05 for v in row] for row in auc],
                "high": [[None if v is None else v + 0.05 for v in row] for row in auc]},
        "tpr_at_fpr_0.01": {"low": tpr, "high": tpr},
    }
    metrics = {"accuracy": _summary(0.71, 0.66, 0.76), "auc": _summary(0.78, 0.72, 0.84),
               "tpr_at_fpr_0.01": _summary(None, None, None)}  # type: ignore[arg-type]
    final = {"name": "final/error/threshold", "scope": "final", "feature_set": "error", "classifier": "threshold",
             "threat_model": "black-box", "round": n_rounds, "rounds": [n_rounds], "status": "ok", "matrix":
             {"accuracy": acc, "auc": auc, "tpr_at_fpr_0.01": tpr}, "matrix_ci": ci, "overall": metrics,
             "per_attacker": []}
    other_acc = [[None if i == j else 0.5 for j in range(n)] for i in range(n)]
    trajectory = {"name": "trajectory/loss-trajectory/logistic", "scope": "trajectory",
                  "feature_set": "loss-trajectory", "classifier": "logistic", "threat_model": "black-box",
                  "round": None, "rounds": [1, n_rounds], "status": "ok",
                  "matrix": {"accuracy": other_acc, "auc": other_acc, "tpr_at_fpr_0.01": tpr}, "matrix_ci": {},
                  "overall": {"accuracy": _summary(0.6, 0.55, 0.65), "auc": _summary(0.62, 0.57, 0.67),
                              "tpr_at_fpr_0.01": _summary(None, None, None)}}  # type: ignore[arg-type]
    rounds = [1, 10, 20, 30, 40][: max(1, n_rounds // 10 + 1)]
    per_round = [{"round": r, "attack": f"round-{r:03d}/error/threshold", "status": "ok",
                  "accuracy": {"mean": 0.5 + r / 200, "ci_low": 0.45 + r / 200, "ci_high": 0.55 + r / 200},
                  "auc": {"mean": 0.5 + r / 150, "ci_low": 0.44 + r / 150, "ci_high": 0.56 + r / 150},
                  "tpr_at_fpr_0.01": {"mean": None, "ci_low": None, "ci_high": None},
                  "mae_members": 9 - r / 10, "mae_nonmembers": 9.5 - r / 40} for r in reversed(rounds)]
    sizes = [4, 6, 8, 10]
    ages = {name: rng.uniform(45 + 8 * k, 52 + 8 * k, size) for k, (name, size) in enumerate(zip(LEARNERS, sizes))}
    ages[None] = rng.uniform(45, 80, 28)
    summary = [{"learner": k, "n_scans": len(v), "age_mean": float(v.mean()), "age_min": float(v.min()),
                "age_max": float(v.max())} for k, v in ages.items()]
    section = {
        "learners": LEARNERS, "rounds": n_rounds, "rounds_used": rounds, "attack": final["name"],
        "matrix": final["matrix"], "matrix_ci": ci, "overall": metrics,
        "per_attacker": [{"learner": a, "victims": [v for v in LEARNERS if v != a], "n_test": 12,
                          "metrics": {"accuracy": _summary(0.6 + k / 20, 0.5, 0.8), "auc": _summary(0.7, 0.6, 0.8),
                                      "tpr_at_fpr_0.01": _summary(None, None, None)}}  # type: ignore[arg-type]
                         for k, a in enumerate(LEARNERS)],
        "per_round": per_round,
        "final_round": {"strongest": final["name"], "attacks": [final]},
        "trajectory": {"strongest": trajectory["name"], "attacks": [trajectory]},
        "learner_summary": summary,
        "settings": {"repeats": 3, "classifiers": ["threshold", "logistic"]},
    }
    report, _ = make_sample(60)
    report = {**report, "federated": section}
    Report.from_dict(report, source="federated sample report")  # shaped as the engine writes it
    features = pd.DataFrame({
        "scan_id": [f"s{i}" for i in range(sum(len(v) for v in ages.values()))],
        "learner": [k for k, v in ages.items() for _ in v],
        "age": np.concatenate(list(ages.values())),
    })
    features["member"] = features["learner"].notna().astype(int)
    return report, features


@pytest.fixture(scope="module")
def federated():
    return make_federated_report()


def test_registered_with_captions():
    for name in NAMES:
        assert name in FIGURES and FIGURE_INFO[name].title and len(FIGURE_INFO[name].caption) > 100


@pytest.mark.parametrize("name", NAMES)
def test_unavailable_without_a_federated_section(name):
    report, features = make_sample(60)
    with pytest.raises(FigureUnavailable, match="not a federated assessment"):
        build_figure(name, report, features)
    placeholder = build_figure(name, report, features, on_unavailable="placeholder")
    assert "not a federated assessment" in placeholder.layout.annotations[0].text


@pytest.mark.parametrize("name", NAMES)
def test_builds_labelled_serialisable_and_pure(federated, name):
    report, features = federated
    before, features_before = copy.deepcopy(report), features.copy()
    fig = build_figure(name, report, features)
    assert isinstance(fig, go.Figure) and len(fig.data) > 0 and fig.layout.title.text
    layout = fig.to_plotly_json()["layout"]
    assert any(v.get("title", {}).get("text") for k, v in layout.items() if k.startswith("xaxis"))
    assert any(v.get("title", {}).get("text") for k, v in layout.items() if k.startswith("yaxis"))
    text = fig.to_json()
    json.loads(text)
    assert "<b>site-D</b>" not in text.replace("\\u003c", "<").replace("\\u003e", ">")  # learner names escaped
    assert report == before and features.equals(features_before)


def test_matrix_cells_diagonal_and_confidence_intervals(federated):
    report, features = federated
    section = report["federated"]
    heat = build_figure("federated_matrix", report, features).data[0]
    assert heat.type == "heatmap"
    assert [list(row) for row in heat.z] == section["matrix"]["accuracy"]
    assert all(heat.z[i][i] is None and heat.hovertext[i][i] == "" for i in range(len(LEARNERS)))
    value, low, high = (section["matrix"]["accuracy"][0][2], section["matrix_ci"]["accuracy"]["low"][0][2],
                        section["matrix_ci"]["accuracy"]["high"][0][2])
    hover = heat.hovertext[0][2]
    assert "site-A" in hover and "site-C" in hover
    assert f"{100 * value:.1f}%" in hover and f"95% CI {100 * low:.1f}% to {100 * high:.1f}%" in hover
    auc = build_figure("federated_matrix", report, features, metric="auc").data[0]
    assert [list(row) for row in auc.z] == section["matrix"]["auc"] and f"{section['matrix']['auc'][1][0]:.3f}" in auc.hovertext[1][0]
    with pytest.raises(FigureUnavailable, match="100 unseen scans"):
        build_figure("federated_matrix", report, features, metric="tpr_at_fpr_0.01")
    with pytest.raises(ValueError, match="unknown metric") as info:
        build_figure("federated_matrix", report, features, metric="precision")
    assert not isinstance(info.value, FigureUnavailable)


def test_matrix_of_another_attack(federated):
    report, _ = federated
    fig = build_figure("federated_matrix", report, attack="trajectory/loss-trajectory/logistic")
    assert fig.data[0].z[0][1] == 0.5 and "loss-trajectory" in fig.layout.title.text
    with pytest.raises(ValueError, match="no attack"):
        build_figure("federated_matrix", report, attack="final/nothing/threshold")


def test_rounds_curve_band_and_final_round(federated):
    report, features = federated
    fig = build_figure("federated_rounds", report, features)
    band, curve, star = fig.data[0], fig.data[1], fig.data[2]
    points = sorted(report["federated"]["per_round"], key=lambda p: p["round"])
    assert list(curve.x) == [p["round"] for p in points]  # sorted, whatever the report's order
    assert np.allclose(curve.y, [100 * p["accuracy"]["mean"] for p in points])
    assert np.allclose(sorted(band.y), sorted([100 * p["accuracy"]["ci_high"] for p in points]
                                              + [100 * p["accuracy"]["ci_low"] for p in points]))
    assert band.fill == "toself" and list(star.x) == [40] and "final round 40" in star.text[0]
    assert "error/threshold" in fig.layout.title.text and "round-0" not in fig.layout.title.text
    mae = [t for t in fig.data if t.name and t.name.startswith("Model error")]
    assert {t.line.color for t in mae} == {MEMBER_COLOR, NONMEMBER_COLOR}
    without = build_figure("federated_rounds", report, features, show_mae="false")
    assert not [t for t in without.data if t.name and t.name.startswith("Model error")]
    auc = build_figure("federated_rounds", report, features, metric="auc").data[1]
    assert np.allclose(auc.y, [p["auc"]["mean"] for p in points])


def test_rounds_unavailable_without_per_round_points(federated):
    report, _ = federated
    empty = {**report, "federated": {**report["federated"], "per_round": []}}
    with pytest.raises(FigureUnavailable, match="per-round"):
        build_figure("federated_rounds", empty)


def test_rounds_without_the_final_round_has_no_final_marker(federated):
    report, _ = federated
    early = {**report, "federated": {**report["federated"], "rounds": 50}}
    assert not any((t.name or "").startswith("Final round") for t in build_figure("federated_rounds", early).data)


def test_learners_sizes_ages_and_member_colours(federated):
    report, features = federated
    fig = build_figure("federated_learners", report, features)
    bars = [t for t in fig.data if t.type == "bar"]
    assert [t.marker.color for t in bars] == [MEMBER_COLOR, NONMEMBER_COLOR]
    assert list(bars[0].x) == [4, 6, 8, 10] and list(bars[1].x) == [28] and list(bars[1].y) == ["unseen scans"]
    boxes = [t for t in fig.data if t.type == "box"]
    assert len(boxes) == len(LEARNERS) + 1 and boxes[-1].marker.color == NONMEMBER_COLOR
    assert all(b.marker.color == MEMBER_COLOR for b in boxes[:-1])
    first = features.loc[features["learner"] == "site-A", "age"].to_numpy()
    assert np.allclose(sorted(boxes[0].x), sorted(first))
    # from a CSV round trip (empty learner cells are NaN) the unseen scans are still found
    csv = pd.read_csv(pd.io.common.StringIO(features.to_csv(index=False)))
    assert len([t for t in build_figure("federated_learners", report, csv).data if t.type == "box"]) == len(LEARNERS) + 1


def test_learners_without_features_show_age_ranges(federated):
    report, _ = federated
    fig = build_figure("federated_learners", report, None)
    ranges = [t for t in fig.data if t.type == "scatter" and t.mode == "lines"]
    summary = report["federated"]["learner_summary"]
    assert len(ranges) == len(summary)
    assert np.allclose(ranges[0].x, [summary[0]["age_min"], summary[0]["age_max"]])
    assert ranges[-1].line.color == NONMEMBER_COLOR


# ------------------------------------------------------------------ the view and the partial


def test_context_formats_the_section(federated):
    report, _ = federated
    view = build_federated_context(report)
    assert view is not None
    assert view["n_learners"] == 4 and view["n_rounds"] == 40 and view["rounds_used"] == "1, 10, 20, 30, 40"
    assert view["overall"] == {"accuracy": "71.0% (95% CI 66.0–76.0%)", "accuracy_main": "71.0%",
                               "accuracy_ci": "95% CI 66.0–76.0%", "auc": "0.780 (95% CI 0.720–0.840)", "tpr": "n/a"}
    assert [r["learner"] for r in view["per_attacker"]] == LEARNERS and view["per_attacker"][0]["n_victims"] == 3
    assert view["final_round"]["attack"] == "final/error/threshold"
    assert view["trajectory"]["accuracy"].startswith("60.0%")
    assert view["last_round"]["round"] == 40 and view["last_round"]["accuracy"].startswith("70.0%")
    cells = [row["cells"] for row in view["matrix_rows"]]
    assert all(cells[i][i] == "–" for i in range(4))
    assert cells[0][1] == f"{100 * report['federated']['matrix']['accuracy'][0][1]:.0f}%"
    assert [r["learner"] for r in view["learner_rows"]] == [*LEARNERS, "unseen scans"]
    assert view["learner_rows"][-1]["unseen"] and view["learner_rows"][-1]["n_scans"] == 28
    assert build_federated_context(make_sample(60)[0]) is None


def test_fmt_metric_handles_missing_values():
    assert fmt_metric(None, "accuracy") == "n/a"
    assert fmt_metric({"mean": 0.5}, "accuracy") == "50.0%"
    assert fmt_metric({"mean": 0.61, "ci_low": 0.5, "ci_high": 0.7}, "auc") == "0.610 (95% CI 0.500–0.700)"


def _render(report: dict, features: pd.DataFrame | None) -> str:
    from frontend import report_html as R

    maker = R._FigureMaker(report, features, "no gradients")
    view = build_federated_context(report)
    blocks = federated_figures(maker) if view else {}
    return R.template_env().get_template("_federated.html.j2").render(federated=view, federated_figures=blocks)


def test_partial_renders_the_section_with_its_figures(federated):
    report, features = federated
    html = _render(report, features)
    assert '<section id="federated"' in html
    for name in NAMES:
        assert f'-{name.replace("_", "-")}-data' in html, name  # each figure embedded as JSON
    assert html.count('class="unavailable"') == 0
    assert "&lt;b&gt;site-D&lt;/b&gt;" in html and "<b>site-D</b>" not in html
    assert ">71.0%</span>" in html and "95% CI 66.0–76.0%" in html  # the overall mean and its interval
    assert len(re.findall(r'<tr[^>]*><th scope="row">', html)) == 3 * len(LEARNERS) + 1  # matrix, attackers, learners + unseen
    assert _render(make_sample(60)[0], None).strip() == ""


def test_partial_says_why_a_figure_is_missing(federated):
    report, features = federated
    report = {**report, "federated": {**report["federated"], "per_round": []}}
    html = _render(report, features)
    assert html.count('class="unavailable"') == 1 and "No per-round attack results" in html
