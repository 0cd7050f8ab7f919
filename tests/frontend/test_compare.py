"""Two reports side by side: changes are highlighted only beyond chance variation."""

from __future__ import annotations

import copy
import json

from frontend.compare import build_comparison
from frontend.figures.compare import comparison_accuracy
from tests.frontend.sample_report import make_sample


def _shift(report: dict, name: str, metric: str, by: float) -> None:
    attack = next(a for a in report["attacks"] if a["name"] == name)
    m = attack["metrics"][metric]
    for key in ("mean", "ci_low", "ci_high"):
        m[key] += by


def test_identical_reports_show_no_change() -> None:
    report, features = make_sample(200)
    view = build_comparison(report, copy.deepcopy(report), features, features)
    assert view["n_significant"] == 0 and view["same_manifest"]
    assert all(not r["acc"]["significant"] and not r["auc"]["significant"] for r in view["rows"])
    assert {h["direction"] for h in view["headline"]} <= {"same", "none", "info"}
    assert all(f["data"] is not None for f in view["figures"].values())


def test_a_change_beyond_the_intervals_is_highlighted_with_its_direction() -> None:
    before, features = make_sample(200)
    after = copy.deepcopy(before)
    strongest = before["verdict"]["strongest_attack"]
    _shift(after, strongest, "accuracy", -0.2)  # a defence: the strongest attack loses 20 points
    _shift(after, "activation/logistic", "accuracy", +0.001)  # inside its interval: not a change
    view = build_comparison(before, after, features, features)
    rows = {r["name"]: r for r in view["rows"]}
    assert rows[strongest]["acc"]["significant"] and rows[strongest]["acc"]["direction"] == "better"
    assert rows[strongest]["acc"]["text"] == "-20.0 pp"
    assert not rows["activation/logistic"]["acc"]["significant"]
    assert rows["activation/logistic"]["acc"]["direction"] == "same"
    assert view["n_significant"] == 1


def test_attacks_of_one_side_only_are_listed_and_the_figure_keeps_one_order() -> None:
    before, features = make_sample(200)
    after = copy.deepcopy(before)
    dropped = after["attacks"].pop(0)["name"]
    view = build_comparison(before, after, features, features)
    row = next(r for r in view["rows"] if r["name"] == dropped)
    assert row["b_acc"] == "–" and row["acc"]["text"] == "–"
    fig = comparison_accuracy(before, after, "A", "B")
    names = [r["name"] for r in view["rows"] if r["a_acc"] not in ("–", "failed", "n/a") or r["b_acc"] not in ("–", "failed", "n/a")]
    assert list(fig.layout.yaxis.categoryarray) == names
    json.loads(fig.to_json())


def test_inconclusive_ranks_between_low_and_medium() -> None:
    report, features = make_sample(200)

    def level(name: str) -> dict:
        out = copy.deepcopy(report)
        out["verdict"]["level"] = name
        return out

    def direction(a: str, b: str) -> tuple[str, str, str]:
        view = build_comparison(level(a), level(b), features, features)
        row = next(h for h in view["headline"] if h["label"] == "Risk level")
        return row["a"], row["b"], row["direction"]

    assert direction("low", "inconclusive") == ("Low risk", "Inconclusive", "worse")
    assert direction("inconclusive", "medium") == ("Inconclusive", "Medium risk", "worse")
    assert direction("inconclusive", "low")[2] == "better"
    assert direction("inconclusive", "inconclusive")[2] == "same"
    view = build_comparison(level("inconclusive"), report, features, features)
    assert view["a"]["level"] == "inconclusive"
