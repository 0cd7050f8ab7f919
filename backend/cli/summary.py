"""The terminal summary of a report: the verdict, the strongest attacks and where the files are."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ..progress import stderr

TOP_ATTACKS = 3
"""Attacks the summary lists, strongest first."""


def print_summary(report: dict[str, Any], paths: dict[str, Path]) -> None:
    """The verdict and the strongest attacks on stderr, then the written files on stdout.

    The attacks are ranked by the verdict's rule (``ranked_attacks``): the first, marked, is the
    report's ``verdict.strongest_attack``.
    """
    from worker.engine.report_model import ranked_attacks

    verdict = report["verdict"]
    colour = {"low": "green", "inconclusive": "magenta", "medium": "yellow", "high": "red"}.get(verdict["level"], "white")
    stderr.print(
        f"verdict: [bold {colour}]{verdict['level'].upper()}[/] "
        f"({'passes' if verdict['passed'] else 'fails'} the policy) - {verdict.get('summary', '')}",
        highlight=False,
    )
    _verdict_details(verdict)
    for rank, attack in enumerate(ranked_attacks(report)[:TOP_ATTACKS]):
        acc, auc = attack["metrics"].get("accuracy") or {}, attack["metrics"].get("auc") or {}
        stderr.print(
            f"  {attack['name']:55s} accuracy {_number(acc.get('mean'), '5.1f', 100)}%  "
            f"AUC {_number(auc.get('mean'), '.3f')} "
            f"[{_number(auc.get('ci_low'), '.3f')}, {_number(auc.get('ci_high'), '.3f')}]"
            f"{'  (strongest)' if rank == 0 else ''}",
            highlight=False,
        )
    errored = [a["name"] for a in report["attacks"] if a["status"] != "ok"]
    if errored:
        stderr.print(f"  [red]attacks that failed:[/] {', '.join(errored)}", highlight=False)
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")


def print_power(n_members: int, n_nonmembers: int, options: Any) -> None:
    """Before a run: the smallest AUC and TPR at 1% FPR the scan set can detect, warned in yellow when too large."""
    from worker.engine.power import planned_power

    stmt = planned_power(n_members, n_nonmembers, options.policy, every_scan=bool(options.quantile or options.reference),
                         train_size=options.train_size)
    colour = "green" if stmt["adequate"] else "yellow"
    stderr.print(f"power: [{colour}]{stmt['message']}[/]", highlight=False)


def _verdict_details(verdict: dict[str, Any]) -> None:
    """The correction, the inconclusive reason, the empirical epsilon and a DP claim's check."""
    multiplicity = verdict.get("multiplicity")
    if multiplicity:
        stderr.print(f"  bounds over all attacks: {multiplicity['correction']} over {multiplicity['m']} attack metrics "
                     f"(z = {multiplicity['z']:.2f})", highlight=False)
    if verdict.get("level") == "inconclusive" and verdict.get("scans_needed"):
        stderr.print(f"  [magenta]inconclusive:[/] about {verdict['scans_needed']} members and as many non-members "
                     "in all would settle it", highlight=False)
    eps = verdict.get("epsilon")
    if eps:
        stderr.print(f"  empirical privacy: {eps['message']}", highlight=False)
    dp = verdict.get("dp_claim")
    if dp:
        stderr.print(f"  {'[red]' if dp['contradicted'] else ''}DP claim: {dp['message']}{'[/]' if dp['contradicted'] else ''}",
                     highlight=False)


def _number(value: float | None, spec: str, scale: float = 1.0) -> str:
    """``value`` (times ``scale``) formatted by ``spec``; ``n/a`` when there is none."""
    return "n/a" if value is None else format(scale * value, spec)


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
