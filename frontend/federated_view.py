"""The federated section of the report: pre-formatted numbers for the template and the command line.

:func:`build_federated_context` turns the ``federated`` section of report.json (see
:mod:`worker.engine.federated.report`) into strings and rows; the template
``_federated.html.j2`` shows them beside the three federated figures, whose blocks
:func:`federated_figures` makes with the report's figure maker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from worker.engine.report_model import strongest_attack

from .figures import _data as D
from .figures._style import finite

__all__ = ["UNSEEN_LABEL", "build_federated_context", "federated_figures", "fmt_metric", "learner_label", "metric_parts"]

UNSEEN_LABEL = "unseen scans"
"""How the scans no learner holds (the non-members) are named."""

_METRICS = ("accuracy", "auc", "tpr_at_fpr_0.01")


def learner_label(name: Any) -> str:
    """A learner's display name (None: the unseen scans)."""
    return UNSEEN_LABEL if name is None else str(name)


def metric_parts(summary: Mapping[str, Any] | None, metric: str) -> tuple[str, str]:
    """``("71.3%", "95% CI 64.0–78.1%")`` for rates, ``("0.781", "95% CI 0.700–0.850")`` for AUC.

    ``("n/a", "")`` when the metric is undefined; the interval is empty when it is.
    """
    summary = summary or {}
    mean = finite(summary.get("mean"))
    if mean is None:
        return "n/a", ""
    lo, hi = finite(summary.get("ci_low")), finite(summary.get("ci_high"))
    if metric == "auc":
        main, ci = f"{mean:.3f}", (f"95% CI {lo:.3f}–{hi:.3f}" if lo is not None and hi is not None else "")
    else:
        main = f"{100 * mean:.1f}%"
        ci = f"95% CI {100 * lo:.1f}–{100 * hi:.1f}%" if lo is not None and hi is not None else ""
    return main, ci


def fmt_metric(summary: Mapping[str, Any] | None, metric: str) -> str:
    """``"71.3% (95% CI 64.0–78.1%)"`` for rates, ``"0.781 (95% CI 0.700–0.850)"`` for AUC; ``"n/a"`` when undefined."""
    main, ci = metric_parts(summary, metric)
    return f"{main} ({ci})" if ci else main


def _metrics_row(metrics: Mapping[str, Any] | None) -> dict[str, str]:
    """Formatted ``accuracy``, ``auc``, ``tpr`` (value with CI), and ``accuracy_main`` / ``accuracy_ci`` apart."""
    metrics = metrics or {}
    main, ci = metric_parts(metrics.get("accuracy"), "accuracy")
    return {
        "accuracy": fmt_metric(metrics.get("accuracy"), "accuracy"),
        "accuracy_main": main,
        "accuracy_ci": ci,
        "auc": fmt_metric(metrics.get("auc"), "auc"),
        "tpr": fmt_metric(metrics.get("tpr_at_fpr_0.01"), "tpr_at_fpr_0.01"),
    }


def _group_best(section: Mapping[str, Any], group: str) -> dict[str, Any] | None:
    """The strongest attack of ``final_round`` or ``trajectory``, pre-formatted (None if none ran).

    Ranked on their federation-wide ``overall`` metrics by the verdict's rule
    (:func:`worker.engine.report_model.strongest_attack`).
    """
    members = [a for a in D.part(section, group).get("attacks") or [] if isinstance(a, dict)]
    best = strongest_attack([{**a, "metrics": a.get("overall") or {}} for a in members])
    if best is None:
        return None
    return {"attack": str(best.get("name")), **_metrics_row(best["metrics"])}


def _matrix_rows(section: Mapping[str, Any], learners: Sequence[str]) -> list[dict[str, Any]]:
    """The attacker x victim accuracy as table rows (the heatmap's text alternative)."""
    grid = D.part(section, "matrix").get("accuracy") or []
    rows = []
    for i, attacker in enumerate(learners):
        cells = []
        line = grid[i] if i < len(grid) and isinstance(grid[i], list) else []
        for j in range(len(learners)):
            value = finite(line[j]) if j < len(line) else None
            cells.append("–" if i == j else ("n/a" if value is None else f"{100 * value:.0f}%"))
        rows.append({"attacker": attacker, "cells": cells})
    return rows


def _learner_rows(section: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for item in section.get("learner_summary") or []:
        if not isinstance(item, dict):
            continue
        lo, hi, mean = finite(item.get("age_min")), finite(item.get("age_max")), finite(item.get("age_mean"))
        rows.append({
            "learner": learner_label(item.get("learner")),
            "unseen": item.get("learner") is None,
            "n_scans": int(item.get("n_scans") or 0),
            "age_mean": "n/a" if mean is None else f"{mean:.1f}",
            "age_range": "n/a" if lo is None or hi is None else f"{lo:.1f}–{hi:.1f}",
        })
    return rows


def _last_round(section: Mapping[str, Any]) -> dict[str, Any] | None:
    points = [p for p in section.get("per_round") or [] if isinstance(p, dict) and p.get("status") == "ok"]
    if not points:
        return None
    last = max(points, key=lambda p: int(p.get("round") or 0))
    return {"round": int(last.get("round") or 0), "attack": str(last.get("attack") or ""), **_metrics_row(last)}


def build_federated_context(report: D.ReportLike) -> dict[str, Any] | None:
    """The template's view of the ``federated`` section (of a report dict or a typed ``Report``),
    or None for a centralised report.

    Returns:
        ``learners``, ``n_learners``, ``n_rounds``, ``rounds_used`` (text), ``attack`` (the
        attack of the matrix), ``overall`` (accuracy / auc / tpr strings with CIs, over every
        attacker-victim pair), ``per_attacker`` rows (learner, victims, n_test and the
        metrics), ``final_round`` and ``trajectory`` (their strongest attack's overall
        numbers, or None), ``last_round`` (the per-round curve's final point, or None),
        ``matrix_rows`` (accuracy per cell as text, "–" on the diagonal) and ``learner_rows``
        (scans and ages per learner, the unseen scans last).
    """
    section = D.as_dict(report).get("federated")
    if not isinstance(section, dict):
        return None
    learners = [str(x) for x in section.get("learners") or []]
    used = [int(r) for r in section.get("rounds_used") or []]
    per_attacker = []
    for item in section.get("per_attacker") or []:
        if isinstance(item, dict):
            per_attacker.append({
                "learner": str(item.get("learner")),
                "n_victims": len(item.get("victims") or []),
                "n_test": item.get("n_test") if item.get("n_test") is not None else "n/a",
                **_metrics_row(item.get("metrics")),
            })
    return {
        "learners": learners,
        "n_learners": len(learners),
        "n_rounds": int(section.get("rounds") or 0),
        "rounds_used": ", ".join(str(r) for r in used),
        "attack": str(section.get("attack") or "none completed"),
        "has_matrix": bool(section.get("matrix")),
        "overall": _metrics_row(section.get("overall")),
        "per_attacker": per_attacker,
        "final_round": _group_best(section, "final_round"),
        "trajectory": _group_best(section, "trajectory"),
        "last_round": _last_round(section),
        "matrix_rows": _matrix_rows(section, learners),
        "learner_rows": _learner_rows(section),
    }


def federated_figures(make: Callable[..., Any]) -> dict[str, Any]:
    """The report's blocks of the three federated figures.

    Args:
        make: the report's figure maker
            (:class:`frontend.report_view.figure_blocks.FigureMaker`): called as
            ``make(name, alt=...)`` it returns a ``FigureBlock``, or one saying why the
            figure is unavailable.

    Returns:
        ``{"matrix", "rounds", "learners"}`` -> figure block.
    """
    return {
        "matrix": make("federated_matrix", alt=(
            "Heatmap of attack accuracy for every attacking learner (rows) against every victim learner "
            "(columns); the diagonal is empty. The table beside it holds the same numbers.")),
        "rounds": make("federated_rounds", alt=(
            "Line chart of the attack's accuracy against the federation round, with its 95% confidence "
            "band; the final round is marked.")),
        "learners": make("federated_learners", alt=(
            "Per learner: the number of training scans and the spread of their ages, beside the unseen "
            "scans.")),
    }
