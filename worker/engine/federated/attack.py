"""Membership inference inside a federation: every learner attacks every other learner.

The setting of Gupta et al. (MIDL 2021): each learner holds the community model of every
round, trains a membership-inference attack on its own private scans (members) and unseen
scans (non-members), and attacks the other learners' scans (see :mod:`.draws` for the
draws and their invariants). Features are computed per round with
:func:`~worker.engine.features.extract_features` on each round's model; attacks come in
three scopes:

* ``final``: a feature set of the centralised assessment on the final round's model;
* ``trajectory``: a feature set spanning rounds (:mod:`.trajectory`, e.g. each scan's loss
  under every round's model);
* ``round``: one feature set and classifier (the ``curve`` attack) on each round's model
  alone, for the curve of attack accuracy over rounds.

Per attack, each attacker fits one classifier per repeat (registered classifiers,
:func:`~worker.engine.attacks.make_attack`) and scores each victim's test set with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import metrics as M
from ..attacks import attack_score, feature_matrix, get_attack, make_attack
from ..errors import BrainMIAError, InputError
from ..features import FeatureTable
from ..manifest import Manifest
from ..report_ranking import strongest_attack
from ..verdict import Policy, evaluate
from .bootstrap import ScanBootstrap
from .draws import AttackerDraw, draw_attacks, federation_labels
from .options import FederatedAttackOptions, FederatedAttackSpec, attack_specs
from .report import attack_entry, attack_section, error_entry, learner_summary, round_point
from .trajectory import trajectory_matrix

__all__ = ["AttacksCancelled", "FederatedAttackResult", "run_federated_attacks"]

ProgressFn = Callable[[str, float, str], None]


class AttacksCancelled(BrainMIAError):
    """The federated attacks were stopped by the caller."""


@dataclass
class FederatedAttackResult:
    """The outcome of :func:`run_federated_attacks`.

    Attributes:
        section: the ``federated`` section of report.json.
        attacks: report.json attack entries of the final-round and trajectory attacks.
        exposure: attack name -> per-scan scores (scans tested as victims or unseen).
        verdict: :func:`worker.engine.verdict.evaluate` of ``attacks``.
        features: the final round's feature table.
        draws: the attackers' training and test rows.
    """

    section: dict[str, Any]
    attacks: list[dict[str, Any]]
    exposure: dict[str, list[dict]]
    verdict: dict[str, Any]
    features: FeatureTable
    draws: list[AttackerDraw]


def _matrix(spec: FederatedAttackSpec, tables: dict[int, FeatureTable], span: Sequence[int]) -> np.ndarray:
    if spec.scope == "trajectory":
        return trajectory_matrix([tables[r] for r in span], spec.feature_set)
    ft = tables[spec.round or max(tables)]
    if get_attack(spec.classifier).univariate:
        return attack_score(ft, spec.feature_set)[:, None]
    return feature_matrix(ft, spec.feature_set)


def _run_draws(
    X: np.ndarray, labels: np.ndarray, draws: Sequence[AttackerDraw], classifier: str
) -> dict[tuple[str, str], list[M.RepeatOutcome]]:
    """Fit each draw's attack and score its victims: the outcomes of each pair, one per repeat."""
    pairs: dict[tuple[str, str], list[M.RepeatOutcome]] = {}
    for d in draws:
        clf = make_attack(classifier)
        clf.fit(X[d.train], labels[d.train], seed=d.seed)
        for victim, test in d.tests.items():
            score = np.asarray(clf.score(X[test]), dtype=np.float64).ravel()
            if score.shape[0] != len(test) or not np.isfinite(score).all():
                raise RuntimeError(f"classifier '{classifier}' returned non-finite scores")
            pred = np.asarray(clf.predict(X[test])).astype(int).ravel()
            pairs.setdefault((d.attacker, victim), []).append(M.RepeatOutcome(test, labels[test], score, pred, d.seed))
    return pairs


def run_federated_attacks(
    tables: dict[int, FeatureTable],
    manifest: Manifest,
    options: FederatedAttackOptions | None = None,
    *,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FederatedAttackResult:
    """Every learner attacks every other learner, per attack, scope and round.

    Args:
        tables: round -> feature table (:func:`round_features`); the highest round is final.
        manifest: the federated manifest the tables were computed on.
        options: what to attack.
        progress: called with (stage, fraction 0-1, message).
        should_stop: polled between attacks; True raises :class:`AttacksCancelled`.

    Returns:
        the report section, the attack entries, per-scan exposure, the verdict.

    Raises:
        InputError: a manifest that is not federated, too few scans, bad options.
    """
    options = options or FederatedAttackOptions()
    learners, learner_of = federation_labels(manifest)
    labels = np.array([x is not None for x in learner_of], dtype=int)
    ages = np.array([r.age for r in manifest.records], dtype=np.float64)
    rounds = sorted(tables)
    final = rounds[-1]
    ft_final = tables[final]
    ft_final.table["member"] = labels
    draws = draw_attacks(learner_of, ages, attackers=options.attackers, victims=options.victims,
                         repeats=options.repeats, seed=options.seed, match_age=options.match_age)
    span = options.trajectory_rounds(rounds, min(len(d.train) for d in draws))
    test_rows = np.concatenate([t for d in draws for t in d.tests.values()])
    boot = ScanBootstrap(test_rows, labels[test_rows], options.n_boot, options.seed)

    specs = attack_specs(options, final)
    curve = options.curve_attack()
    curve_specs = [FederatedAttackSpec("round", curve[0], curve[1], r) for r in rounds] if curve else []
    total = len(specs) + len(curve_specs)
    n_train = int(np.median([len(d.train) for d in draws]))
    n_test = int(np.median([len(t) for d in draws for t in d.tests.values()]))

    sections: dict[str, dict[str, Any]] = {}
    entries: list[dict[str, Any]] = []
    exposure: dict[str, list[dict]] = {}
    for done, spec in enumerate([*specs, *curve_specs]):
        if should_stop is not None and should_stop():
            raise AttacksCancelled(f"cancelled after {done} of {total} attacks")
        if progress is not None:
            progress("attacks", done / total, f"attack {done + 1}/{total}: {spec.name}")
        info = {
            "name": spec.name, "scope": spec.scope, "feature_set": spec.feature_set,
            "classifier": spec.classifier, "threat_model": spec.threat_model,
            "round": spec.round, "rounds": span if spec.scope == "trajectory" else [spec.round],
        }
        start = time.perf_counter()
        try:
            X = _matrix(spec, tables, span)
            pairs = _run_draws(X, labels, draws, spec.classifier)
            section = attack_section(info, learners, pairs, boot, matrix=spec.scope != "round")
            if spec.scope != "round":
                flat = [o for outs in pairs.values() for o in outs]
                entries.append(attack_entry(section, n_features=X.shape[1], n_train=n_train, n_test=n_test,
                                            repeats=options.repeats, pooled=flat, features=ft_final,
                                            duration_s=time.perf_counter() - start))
                exposure[spec.name] = M.exposure(ft_final.table["scan_id"].tolist(), labels, flat)
        except Exception as exc:  # noqa: BLE001 - recorded as a finding, never dropped
            message = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
            section = {**info, "status": "error", "error": message}
            if spec.scope != "round":
                entries.append(error_entry(info, message))
        sections[spec.name] = section

    policy = options.policy or Policy()
    verdict = evaluate(entries, policy, utility=M.utility(ft_final))
    section = _federated_section(
        learners, learner_of, ages, rounds, specs, curve_specs, sections, tables, verdict, options)
    if progress is not None:
        progress("attacks", 1.0, f"{total} attacks done")
    return FederatedAttackResult(section=section, attacks=entries, exposure=exposure, verdict=verdict,
                                 features=ft_final, draws=draws)


def _strongest(sections: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The strongest completed attack section, or None.

    Ranked on its federation-wide ``overall`` metrics by the engine's one rule
    (:func:`~worker.engine.report_ranking.strongest_attack`, as the verdict's strongest).
    """
    views = [{**s, "metrics": s.get("overall") or {}} for s in sections]
    top = strongest_attack(views)
    return next((s for s, v in zip(sections, views) if v is top), None)


def _group(sections: Sequence[dict[str, Any]]) -> dict[str, Any]:
    top = _strongest(sections)
    return {"strongest": top["name"] if top else None, "attacks": list(sections)}


def _federated_section(
    learners: list[str],
    learner_of: np.ndarray,
    ages: np.ndarray,
    rounds: list[int],
    specs: Sequence[FederatedAttackSpec],
    curve_specs: Sequence[FederatedAttackSpec],
    sections: dict[str, dict[str, Any]],
    tables: dict[int, FeatureTable],
    verdict: dict[str, Any],
    options: FederatedAttackOptions,
) -> dict[str, Any]:
    final_sections = [sections[s.name] for s in specs if s.scope == "final"]
    trajectory_sections = [sections[s.name] for s in specs if s.scope == "trajectory"]
    named = verdict.get("strongest_attack")
    top = sections.get(named) if named else None
    if top is None or top.get("status") != "ok":
        top = _strongest([*final_sections, *trajectory_sections])
    return {
        "learners": learners,
        "rounds": max(rounds),
        "rounds_used": rounds,
        "attack": top["name"] if top else None,
        "matrix": top["matrix"] if top else None,
        "matrix_ci": top["matrix_ci"] if top else None,
        "per_attacker": top["per_attacker"] if top else [],
        "overall": top["overall"] if top else None,
        "per_round": [round_point(s.round or 0, sections[s.name], tables[s.round or 0]) for s in curve_specs],
        "final_round": _group(final_sections),
        "trajectory": _group(trajectory_sections),
        "learner_summary": learner_summary(learners, learner_of, ages),
        "settings": options.settings(),
    }
