"""The report page, the figures, the comparison and the verdict name the same strongest attack."""

from __future__ import annotations

import copy

from frontend.compare import build_comparison
from frontend.federated_view import build_federated_context
from frontend.figures import _data as D
from frontend.figures import build_figure
from frontend.report_html import build_context, render_report_html
from tests.frontend.sample_report import make_sample
from tests.frontend.test_federated_figures import make_federated_report
from worker.engine.report_model import Report, ranked_attacks, strongest_attack
from worker.engine.verdict import evaluate


def _tied_sample() -> tuple[dict, object, str]:
    """Two attacks tie on the AUC lower bound: the one with the better TPR bound is the strongest,
    although the other has the higher mean AUC (which the page once ranked by)."""
    report, features = make_sample(200)
    report = copy.deepcopy(report)
    ok = [a for a in report["attacks"] if a["status"] == "ok"]
    top = max(a["metrics"]["auc"]["ci_low"] for a in ok) + 0.02
    by_tpr, by_mean = ok[3], ok[5]
    for attack, tpr_low, mean in ((by_tpr, 0.30, top + 0.01), (by_mean, 0.20, top + 0.09)):
        attack["metrics"]["auc"].update(ci_low=top, mean=mean, ci_high=mean + 0.01)
        attack["metrics"]["tpr_at_fpr_0.01"].update(ci_low=tpr_low)
    report["verdict"] = evaluate(report["attacks"], utility=report["utility"])
    report["exposure"]["attack"] = report["verdict"]["strongest_attack"]
    Report.from_dict(report)
    return report, features, by_tpr["name"]


def test_verdict_page_figures_and_comparison_agree_on_the_strongest_attack() -> None:
    report, features, expected = _tied_sample()
    assert report["verdict"]["strongest_attack"] == expected == ranked_attacks(report)[0]["name"]
    assert D.attack_name(D.strongest_attack(report)) == expected
    context = build_context(report, features)
    assert context["verdict"]["strongest"] == expected
    assert [r["name"] for r in context["metrics_rows"] if r["strongest"]] == [expected]
    cells = [c for row in context["accuracy_table"]["rows"] for c in row["cells"] if c.get("strongest")]
    assert [c["name"] for c in cells] == [expected]
    fs, clf = expected.split("/")
    age = build_figure("accuracy_by_age", report, features)
    assert [t.name for t in age.data if t.type == "scatter"] == [f"{fs} · {clf} (strongest)"]
    roc = build_figure("roc_curves", report, features)
    assert roc.data[1].name.replace("<br>", " ").startswith(f"{fs} · {clf} (classifier, ")  # after the chance line
    assert [D.attack_name(a) for a in D.select_attacks(report, "all")] == [a["name"] for a in ranked_attacks(report)]
    view = build_comparison(report, copy.deepcopy(report), features, features)
    assert view["a"]["strongest"] == view["b"]["strongest"] == expected


def test_entry_points_take_a_typed_report() -> None:
    report, features = make_sample(200)
    typed = Report.from_dict(report)
    assert render_report_html(typed, features) == render_report_html(report, features)
    assert build_figure("roc_curves", typed, features).to_json() == build_figure("roc_curves", report, features).to_json()
    view = build_comparison(typed, report, features, features)
    assert view["n_significant"] == 0 and view["a"]["strongest"] == strongest_attack(typed).name
    federated, _ = make_federated_report()
    assert build_federated_context(Report.from_dict(federated)) == build_federated_context(federated)


def test_threat_model_is_the_engine_rule() -> None:
    """A feature set without a written threat model gets the engine's rule (the page once said
    black-box for any name without "grad" in it)."""
    report, features = make_sample(200)
    report = copy.deepcopy(report)
    attack = next(a for a in report["attacks"] if a["feature_set"] == "error" and a["status"] == "ok")
    attack.update(feature_set="activation+error", name="activation+error/" + attack["classifier"])
    attack.pop("threat_model")
    assert D.threat_model(attack) == "white-box"
    rows = {r["name"]: r for r in build_context(report, features)["metrics_rows"]}
    assert rows[attack["name"]]["threat"] == "white-box"


def test_federated_groups_are_ranked_by_the_verdicts_rule() -> None:
    report, _ = make_federated_report()
    report = copy.deepcopy(report)
    group = report["federated"]["final_round"]
    weaker = copy.deepcopy(group["attacks"][0])
    weaker["name"] = "final/error/logistic"
    weaker["overall"]["auc"].update(ci_low=0.70, mean=0.99)  # higher mean, lower bound below 0.72
    group["attacks"].append(weaker)
    group["strongest"] = weaker["name"]  # the page ranks by the one rule, whatever the section says
    assert build_federated_context(report)["final_round"]["attack"] == "final/error/threshold"
