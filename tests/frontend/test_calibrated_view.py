"""Reference-model and quantile attacks on the report: marked by family and access, beside the paper's
attacks (not in the paper-comparison table), every scan tested, the qmia calibration check, and the
reference models' provenance."""

from __future__ import annotations

import copy
import html as html_lib
import re

import pytest

from frontend.figures import build_figure
from frontend.report_html import build_context, render_report_html
from tests.frontend.sample_calibrated import N_REFERENCES, REFERENCE_MAES
from tests.frontend.sample_report import make_sample
from worker.engine.report_model import Report


@pytest.fixture(scope="module")
def sample():
    return make_sample(400)


def _section(page: str, section_id: str) -> str:
    """The text of one <section> (tags dropped, whitespace collapsed, entities decoded)."""
    match = re.search(rf'<section id="{section_id}".*?</section>', page, re.S)
    assert match, section_id
    return " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", match.group(0))).split())


def _calibrated(report: dict) -> list[dict]:
    return [a for a in report["attacks"] if a.get("family") in ("reference", "quantile")]


def test_the_paper_table_and_chart_hold_only_the_classifier_attacks(sample):
    report, features = sample
    context = build_context(report, features)
    table = context["accuracy_table"]
    assert table["classifiers"] == ["threshold", "logistic", "mlp", "gbt"]
    names = {c["name"] for row in table["rows"] for c in row["cells"] if c.get("name")}
    assert names and not names & {a["name"] for a in _calibrated(report)}
    bars = build_figure("accuracy_bars", report, features)
    assert not any(t.name and ("lira" in t.name or "qmia" in t.name or "rmia" in t.name) for t in bars.data)
    page = render_report_html(report, features)
    assert "lira-online" not in _section(page, "accuracy").split("next section")[0]


def test_calibrated_attacks_beside_the_papers_with_family_access_and_every_scan(sample):
    report, features = sample
    context = build_context(report, features)
    rows = context["calibrated_rows"]
    assert [r["name"] for r in rows] == [a["name"] for a in _calibrated(report)]
    by_name = {r["name"]: r for r in rows}
    assert by_name["lira-online"]["family_label"] == "reference-based" and by_name["lira-online"]["threat"] == "black-box"
    assert by_name["lira-offline:grad-norm"]["threat"] == "white-box"
    assert by_name["qmia"]["family_label"] == "quantile" and by_name["qmia"]["n_references"] is None
    assert all(r["tested"] == "every scan tested (400)" for r in rows)
    assert by_name["lira-online"]["n_references"] == N_REFERENCES
    assert by_name["rmia"]["parameters"] == "tau = 2.41, a = 0.3"
    # one test of every scan: no std over repeats
    assert "±" not in by_name["lira-online"]["auc"]["main"] and by_name["lira-online"]["auc"]["ci"]
    page = render_report_html(report, features)
    text = _section(page, "calibrated")
    assert "Reference-model and quantile attacks" in text
    for name in ("lira-online", "lira-offline", "rmia", "lira-offline:grad-norm", "qmia"):
        assert name in text
    assert text.count("reference-based") >= 4 and "quantile" in text
    assert "white-box" in text and "black-box" in text
    assert 'href="#calibrated"' in page  # in the table of contents


def test_the_metrics_table_marks_every_attack_and_says_every_scan_tested(sample):
    report, features = sample
    rows = build_context(report, features)["metrics_rows"]
    families = [r["family"] for r in rows]
    assert families == sorted(families, key=["classifier", "reference", "quantile"].index)
    for r in rows:
        attack = next(a for a in report["attacks"] if a["name"] == r["name"])
        if attack.get("n_train") == 0:
            assert r["tested"] == f"every scan tested ({attack['n_test']})"
        elif r["ok"]:
            assert r["tested"] == f"{attack['n_test']} × {attack['repeats']}"
    text = _section(render_report_html(report, features), "auc")
    assert "every scan tested (400)" in text and "200 × 5" in text
    assert text.count("classifier") >= 20 and "reference-based" in text and "quantile" in text


def test_tpr_at_low_fpr_shown_wherever_the_entry_has_it(sample):
    report, features = copy.deepcopy(sample[0]), sample[1]
    lira = next(a for a in report["attacks"] if a["name"] == "lira-online")
    assert lira["metrics"]["tpr_at_fpr_0.001"]["mean"] is None  # 200 non-members: undefined
    row = next(r for r in build_context(report, features)["calibrated_rows"] if r["name"] == "lira-online")
    assert row["tpr001"]["na"] and not row["tpr01"]["na"]
    assert row["tpr01"]["main"] == f"{100 * lira['metrics']['tpr_at_fpr_0.01']['mean']:.2f}"
    lira["metrics"]["tpr_at_fpr_0.001"].update(mean=0.031, ci_low=0.01, ci_high=0.06)  # as with 1,000 non-members
    Report.from_dict(report)
    row = next(r for r in build_context(report, features)["calibrated_rows"] if r["name"] == "lira-online")
    assert row["tpr001"] == {"main": "3.10", "ci": "95% CI 1.00–6.00", "na": False}
    fig = build_figure("roc_curves_log", report, features)
    dots = next(t for t in fig.data if t.mode == "markers" and t.name.startswith("lira-online (reference"))
    assert sorted(dots.x) == [0.001, 0.01]


def test_roc_legends_name_family_and_access(sample):
    report, features = sample
    for name in ("roc_curves", "roc_curves_log"):
        fig = build_figure(name, report, features)
        legend = [t.name.replace("<br>", " ") for t in fig.data if t.showlegend is not False and "Chance" not in t.name]
        assert any(n.startswith("lira-online (reference, black-box), AUC") for n in legend)
        assert any(n.startswith("lira-offline:grad-norm (reference, white-box), AUC") for n in legend)
        assert any(n.startswith("qmia (quantile, black-box), AUC") for n in legend)
        assert all(re.search(r"\((classifier|reference|quantile), (black|white)-box\), AUC", n) for n in legend)
        # the best of each family and feature set is drawn; the reference attacks are not hidden
        # behind the classifier attacks of the same feature set
        shown = {t.name.split(" (")[0] for t in fig.data if t.visible is True and t.mode == "lines"}
        assert "qmia" in shown and any(n.startswith("lira") or n == "rmia" for n in shown)


def test_calibration_check_table(sample):
    report, features = copy.deepcopy(sample[0]), sample[1]
    qmia = next(a for a in report["attacks"] if a["name"] == "qmia")
    qmia["calibration"][3].update(calibrated=False)
    checks = build_context(report, features)["calibration_checks"]
    assert [c["name"] for c in checks] == ["qmia"]
    rows = checks[0]["rows"]
    assert [r["alpha"] for r in rows] == ["0.1%", "1%", "5%", "10%", "25%", "50%"]
    assert rows[0]["attainable"] is False and rows[0]["calibrated_text"] == "not attainable"
    assert rows[3]["calibrated_text"] == "no" and rows[2]["calibrated_text"] == "yes"
    first = qmia["calibration"][2]
    assert rows[2]["fpr"] == f"{100 * first['fpr']:.1f}%"
    assert rows[2]["ci"] == f"{100 * first['fpr_ci_low']:.1f}%–{100 * first['fpr_ci_high']:.1f}%"
    assert rows[2]["flagged"] == f"{first['n_flagged']} of {first['n_nonmembers']}"
    page = render_report_html(report, features)
    assert page.count('class="not-attainable"') == 1 and page.count('class="miscalibrated"') == 1
    text = _section(page, "calibrated")
    assert "Calibration check of qmia" in text and "alpha lies inside the interval" in text
    assert "not attainable" in text


def test_reference_models_provenance_block(sample):
    report, features = sample
    prov = build_context(report, features)["provenance"]
    assert ("references", "Reference models") in prov["blocks"]
    rows = dict(prov["references"])
    assert rows["Reference models (K)"] == str(N_REFERENCES)
    assert rows["Source"].startswith("trained by BrainMIA")
    assert rows["Recipe: epochs"] == "30" and rows["Recipe: arch_kwargs"] == "channels: 8, 16, 32"
    assert rows["Keep-matrix SHA-256"] == report["provenance"]["references"]["keep_hash"]
    assert rows["Reused from an earlier assessment"] == "1 of 4"
    mean = sum(REFERENCE_MAES) / len(REFERENCE_MAES)
    assert rows["Mean training MAE"].startswith(f"{mean:.2f} years")
    text = _section(render_report_html(report, features), "provenance")
    assert "Reference models" in text and report["provenance"]["references"]["keep_hash"] in text


def test_supplied_references_and_reports_without_them():
    report, features = make_sample(200, calibrated=False)
    context = build_context(report, features)
    assert context["calibrated_rows"] == [] and context["provenance"]["references"] == []
    assert "references" not in [k for k, _ in context["provenance"]["blocks"]]
    page = render_report_html(report, features)
    assert 'id="calibrated"' not in page and 'href="#calibrated"' not in page
    supplied, features = make_sample(200)
    supplied = copy.deepcopy(supplied)
    supplied["provenance"]["references"].update(source="supplied", recipe=None, reused=None, train_mae=None,
                                                keep_csv="keep.csv", models=["ref-a.pt", "ref-b.pt"])
    rows = dict(build_context(supplied, features)["provenance"]["references"])
    assert rows["Source"] == "supplied by the user, with keep.csv"
    assert rows["keep.csv"] == "keep.csv" and rows["Model files"] == "ref-a.pt, ref-b.pt"
    assert "Mean training MAE" not in rows and not any(k.startswith("Recipe:") for k in rows)


def test_an_errored_reference_attack_is_shown_with_its_reason(sample):
    report, features = copy.deepcopy(sample[0]), sample[1]
    lira = next(a for a in report["attacks"] if a["name"] == "lira-online")
    lira.update(status="error", error="reference models: too few OUT models for scan sub-0001", metrics={},
                roc=None, by_age_bin=[], by_attribute={}, n_train=None, n_test=None, repeats=None)
    context = build_context(report, features)
    row = next(r for r in context["calibrated_rows"] if r["name"] == "lira-online")
    assert not row["ok"] and "too few OUT models" in row["error"]
    assert context["n_errored"] == 1  # the paper table's own failure only
    assert "too few OUT models" in _section(render_report_html(report, features), "calibrated")


def test_the_glance_card_quotes_a_measured_tpr_when_the_strongest_cannot(sample):
    """On the demo the classifier attacks' test splits hold 50 unseen scans (TPR at 1% FPR undefined);
    the card then quotes the attack that measured it, named with its family and access."""
    report, features = copy.deepcopy(sample[0]), sample[1]
    for attack in report["attacks"]:
        if attack.get("family") is None and attack["status"] == "ok":
            attack["metrics"]["tpr_at_fpr_0.01"].update(mean=None, std=None, ci_low=None, ci_high=None, values=[])
    Report.from_dict(report)
    card = next(c for c in build_context(report, features)["glance"] if c["label"].startswith("Members found"))
    lira = next(a for a in report["attacks"] if a["name"] == "lira-offline:grad-norm")
    assert card["value"] == f"{100 * lira['metrics']['tpr_at_fpr_0.01']['mean']:.1f}%"
    assert "by lira-offline:grad-norm (reference-based, white-box)" in card["note"]
    full = next(c for c in build_context(*sample)["glance"] if c["label"].startswith("Members found"))
    assert " by " not in full["note"]  # the strongest attack's own, when it has one
