"""The terminal summary of a report: the verdict, the strongest attacks and where the files are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ..progress import stderr

TOP_ATTACKS = 3
"""Attacks the summary lists, strongest first."""


def print_summary(report: dict[str, Any], paths: dict[str, Path]) -> None:
    """The verdict and the attacks of highest accuracy on stderr, then the written files on stdout."""
    verdict = report["verdict"]
    colour = {"low": "green", "medium": "yellow", "high": "red"}.get(verdict["level"], "white")
    stderr.print(
        f"verdict: [bold {colour}]{verdict['level'].upper()}[/] "
        f"({'passes' if verdict['passed'] else 'fails'} the policy) - {verdict.get('summary', '')}",
        highlight=False,
    )
    ok = [a for a in report["attacks"] if a["status"] == "ok"]
    best = sorted(ok, key=lambda a: -(a["metrics"]["accuracy"]["mean"] or 0))[:TOP_ATTACKS]
    for attack in best:
        acc, auc = attack["metrics"]["accuracy"], attack["metrics"]["auc"]
        stderr.print(
            f"  {attack['name']:55s} accuracy {100 * acc['mean']:5.1f}%  AUC {auc['mean']:.3f} "
            f"[{auc['ci_low']:.3f}, {auc['ci_high']:.3f}]",
            highlight=False,
        )
    errored = [a["name"] for a in report["attacks"] if a["status"] != "ok"]
    if errored:
        stderr.print(f"  [red]attacks that failed:[/] {', '.join(errored)}", highlight=False)
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")


def print_federated(report: dict[str, Any]) -> None:
    """The attacker x victim summary of a federated report, on stderr."""
    from frontend.federated_view import build_federated_context

    view = build_federated_context(report)
    if view is None:
        return
    stderr.print(
        f"federation: {view['n_learners']} learners, {view['n_rounds']} rounds; attack {view['attack']}",
        highlight=False,
    )
    stderr.print(f"  mean accuracy over attacker-victim pairs {view['overall']['accuracy']}", highlight=False)
    if view["final_round"]:
        stderr.print(f"  final round alone: {view['final_round']['accuracy']} ({view['final_round']['attack']})",
                     highlight=False)
    for row in view["per_attacker"]:
        stderr.print(f"  attacker {row['learner']}: accuracy {row['accuracy']}", highlight=False)
