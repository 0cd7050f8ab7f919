"""The attack tables: accuracy per feature set and classifier (the paper's attacks, beside the paper's
numbers), and every attack's metrics, each marked by family (classifier / reference-based / quantile)
and threat model."""

from __future__ import annotations

from ..figures import _data as D
from .formatting import auc_cell, metric_cell

#: Gupta et al. (MIDL 2021), centralised attack accuracy (%), for context in the table.
PAPER_ACCURACY = {
    "3D-CNN": {
        "activation": "56.63",
        "error": "59.90 ± 0.01",
        "grad-norm": "72.60 ± 0.45",
        "grad:first_conv": "71.01 ± 0.64",
        "grad:output": "76.65 ± 0.44",
        "grad:last_conv": "76.96 ± 0.57",
        "prediction+label": "76.45 ± 0.20",
        "prediction+label+grad:last_conv+grad:output": "78.05 ± 0.47",
    },
    "2D-slice-mean": {
        "error": "74.06 ± 0.00",
        "grad-norm": "78.34 ± 0.17",
        "grad:first_conv": "80.52 ± 0.40",
        "grad:output": "82.16 ± 0.29",
        "grad:last_conv": "82.89 ± 0.83",
        "prediction+label": "81.70 ± 0.29",
        "prediction+label+grad:last_conv+grad:output": "83.04 ± 0.50",
    },
}


def accuracy_table(report: dict) -> dict:
    """Accuracy per feature set (rows) and classifier (cells) of the classifier attacks (the
    paper's; reference-model and quantile attacks have their own table), the strongest attack
    marked, with the paper's accuracy for the model's architecture."""
    strongest = D.strongest_attack(report)
    report = D.paper_view(report)
    feature_sets = D.feature_set_order(report)
    classifiers = D.classifier_order(report)
    by_key: dict[tuple[str, str], dict] = {}
    for a in D.attacks(report):
        by_key.setdefault((str(a.get("feature_set")), str(a.get("classifier"))), a)
    arch = D.part(report, "provenance", "model").get("architecture")
    paper_col = "2D-slice-mean" if arch == "brain_age_slice_mean" else "3D-CNN"
    paper = PAPER_ACCURACY[paper_col]
    rows = []
    for fs in feature_sets:
        threat = next(
            (D.threat_model(a) for a in D.attacks(report) if str(a.get("feature_set")) == fs),
            D.feature_set_threat_model(fs),
        )
        cells = []
        for clf in classifiers:
            a = by_key.get((fs, clf))
            if a is None:
                cells.append({"status": "missing"})
            elif not D.is_ok(a):
                cells.append({"status": "error", "error": str(a.get("error") or "unknown error"),
                              "name": D.attack_name(a)})
            else:
                cell = metric_cell(a, "accuracy")
                cell.update(status="ok", strongest=a is strongest, name=D.attack_name(a))
                cells.append(cell)
        rows.append({
            "feature_set": fs,
            "description": D.FEATURE_SET_DESCRIPTIONS.get(fs, ""),
            "threat": threat,
            "paper": paper.get(fs, "–"),
            "cells": cells,
        })
    return {"classifiers": classifiers, "rows": rows, "paper_column": paper_col}


def tested_text(attack: dict) -> str:
    """How the attack was tested: ``"every scan tested (200)"`` for an attack that scored every
    scan once (``n_train`` 0), else ``"100 × 5"`` (test scans × repeats)."""
    n_test = attack.get("n_test") if attack.get("n_test") is not None else "n/a"
    if D.every_scan_tested(attack):
        return f"every scan tested ({n_test})"
    repeats = attack.get("repeats") if attack.get("repeats") is not None else "n/a"
    return f"{n_test} × {repeats}"


def family_fields(attack: dict) -> dict:
    """The family of an attack for the templates: ``family``, ``family_label``, ``family_title``."""
    fam = D.family(attack)
    return {"family": fam, "family_label": D.FAMILY_LABELS[fam], "family_title": D.FAMILY_DESCRIPTIONS[fam]}


def metrics_rows(report: dict) -> list[dict]:
    """One row per attack: the classifier attacks (feature-set, then classifier order), then the
    reference-based and the quantile ones (report order); AUC, TPR at low FPR, balanced accuracy."""
    fs_index = {f: i for i, f in enumerate(D.feature_set_order(report))}
    clf_index = {c: i for i, c in enumerate(D.classifier_order(report))}
    fam_index = {f: i for i, f in enumerate(D.FAMILIES)}
    order = {id(a): i for i, a in enumerate(D.attacks(report))}
    attacks = sorted(
        D.attacks(report),
        key=lambda a: (fam_index[D.family(a)],) + (
            (fs_index.get(str(a.get("feature_set")), 99), clf_index.get(str(a.get("classifier")), 99))
            if D.family(a) == "classifier" else (order[id(a)], 0)),
    )
    strongest = D.strongest_attack(report)
    rows = []
    for a in attacks:
        row = {
            "name": D.attack_name(a),
            "feature_set": str(a.get("feature_set", "")),
            "classifier": str(a.get("classifier", "")),
            "threat": D.threat_model(a),
            "ok": D.is_ok(a),
            "error": str(a.get("error") or "unknown error"),
            "strongest": a is strongest,
            "n_test": a.get("n_test") if a.get("n_test") is not None else "n/a",
            "repeats": a.get("repeats") if a.get("repeats") is not None else "n/a",
            "tested": tested_text(a),
            "n_references": a.get("n_references"),
            **family_fields(a),
        }
        if row["ok"]:
            row.update(
                auc=auc_cell(a),
                tpr001=metric_cell(a, "tpr_at_fpr_0.001", digits=2, ci_digits=2),
                tpr01=metric_cell(a, "tpr_at_fpr_0.01", digits=2, ci_digits=1),
                balanced=metric_cell(a, "balanced_accuracy", digits=1),
            )
        rows.append(row)
    return rows
