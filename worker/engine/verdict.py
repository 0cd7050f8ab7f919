"""The verdict: attack results judged against a :class:`~worker.engine.policy.Policy`.

Levels. Each completed attack gets a level from the lower bounds (``ci_low``) of its AUC
and of its TPR at 1% FPR: high when either reaches its high threshold, medium when either
reaches its medium threshold, else low. The verdict's level is the highest attack level
(so a weak-AUC attack that still singles out members at low FPR counts); the *strongest
attack* is the first of :func:`~worker.engine.report_ranking.ranked_attacks` (highest AUC
lower bound; ties by the TPR lower bound, the mean AUC, the name), the one definition the
report page, the figures and the command line use too, and is what the summary quotes.

Errors. An attack that could not run is a finding (severity ``medium``) and makes the
assessment *incomplete* (``"incomplete": true``). The level stays what the completed attacks
measured, but an incomplete assessment never passes (unless the policy sets
``fail_on_error = false``); an assessment in which no attack completed never passes.

Threat models. Findings tell black-box leakage (predictions suffice: anyone with query
access can attack) from white-box-only leakage (gradients or activations: the weights must
not be shared).
"""

from __future__ import annotations

from typing import Any, Sequence

from .policy import DEFAULT_POLICY, LEVELS, Policy, load_policy
from .report_ranking import is_completed, strongest_attack

__all__ = ["DEFAULT_POLICY", "LEVELS", "Policy", "attack_level", "evaluate", "load_policy", "metric_level"]

TPR_METRIC = "tpr_at_fpr_0.01"

_RECOMMEND_TRAINING = (
    "Reduce overfitting before release: stronger regularisation (weight decay, dropout, data "
    "augmentation), early stopping on a validation set, or training with differential "
    "privacy (DP-SGD, e.g. Opacus), then re-assess."
)
_RECOMMEND_BLACK_BOX = (
    "Anyone who can query the model can infer membership, so even an API that returns only "
    "predictions leaks. " + _RECOMMEND_TRAINING
)
_RECOMMEND_WHITE_BOX = (
    "Do not release or share the weights (this includes federated learning partners, who "
    "hold every round's model); serve predictions through an API only, or train with DP-SGD "
    "if the weights must be shared."
)


def _rank(level: str) -> int:
    return LEVELS.index(level)


def _metric(attack: dict, name: str, key: str = "ci_low") -> float | None:
    value = (attack.get("metrics") or {}).get(name, {}).get(key)
    return None if value is None else float(value)


def _label(attack: dict) -> str:
    return f"{attack.get('feature_set')} with {attack.get('classifier')}"


def metric_level(value: float | None, medium: float, high: float) -> str:
    """``"high"`` if ``value >= high``, ``"medium"`` if ``>= medium``, else ``"low"``."""
    if value is None:
        return "low"
    if value >= high:
        return "high"
    if value >= medium:
        return "medium"
    return "low"


def attack_level(attack: dict, policy: Policy = DEFAULT_POLICY) -> tuple[str, str]:
    """Level of one completed attack and the metric that sets it (``"auc"`` or the TPR).

    Ties go to AUC.
    """
    auc = metric_level(_metric(attack, "auc"), policy.auc_medium, policy.auc_high)
    tpr = metric_level(_metric(attack, TPR_METRIC), policy.tpr_at_1pct_fpr_medium,
                       policy.tpr_at_1pct_fpr_high)
    return (auc, "auc") if _rank(auc) >= _rank(tpr) else (tpr, TPR_METRIC)


def _thresholds(metric: str, policy: Policy) -> tuple[float, float]:
    if metric == "auc":
        return policy.auc_medium, policy.auc_high
    return policy.tpr_at_1pct_fpr_medium, policy.tpr_at_1pct_fpr_high


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" if metric == "auc" else f"{100 * value:.1f}%"


def _comparison(metric: str, value: float | None, policy: Policy) -> tuple[str, float]:
    """Plain words comparing a lower bound with the thresholds, and the threshold concerned."""
    medium, high = _thresholds(metric, policy)
    level = metric_level(value, medium, high)
    if level == "high":
        return f"reaches the high-risk threshold {_fmt(metric, high)}", high
    if level == "medium":
        return (f"reaches the medium-risk threshold {_fmt(metric, medium)} (high risk from "
                f"{_fmt(metric, high)})"), medium
    return f"is below the medium-risk threshold {_fmt(metric, medium)}", medium


def _evidence(attack: dict, metric: str) -> str:
    """What the attack achieves, as a verb phrase with the mean and the 95% CI."""
    mean, lo, hi = (_fmt(metric, _metric(attack, metric, k)) for k in ("mean", "ci_low", "ci_high"))
    if metric == "auc":
        return f"tells members from non-members with AUC {mean} (95% CI {lo}-{hi})"
    return (f"identifies {mean} of members while flagging only 1% of non-members "
            f"(95% CI {lo}-{hi})")


def _finding(severity: str, attack: dict | None, metric: str | None, value: float | None,
             threshold: float | None, message: str, recommendation: str) -> dict[str, Any]:
    return {
        "severity": severity,
        "attack": attack.get("name") if attack else None,
        "metric": metric,
        "value": value,
        "threshold": threshold,
        "message": message,
        "recommendation": recommendation,
    }


def _best_tpr(attacks: Sequence[dict]) -> dict | None:
    """The attack with the highest TPR@1%FPR lower bound (ties: the mean), or None."""
    scored = [a for a in attacks if _metric(a, TPR_METRIC) is not None]
    if not scored:
        return None
    return max(scored, key=lambda a: (_metric(a, TPR_METRIC), _metric(a, TPR_METRIC, "mean") or 0.0))


def _severity(level: str) -> str:
    return "info" if level == "low" else level


def evaluate(
    attacks: Sequence[dict], policy: Policy = DEFAULT_POLICY, *, utility: dict | None = None
) -> dict[str, Any]:
    """Judge attack results (``AttackRunResult.attacks``) against a policy.

    Args:
        attacks: attack entries as produced by :func:`~worker.engine.attacks.run_attacks`.
        policy: the thresholds.
        utility: optional :func:`~worker.engine.metrics.utility` dict, adds an info finding
            on the members / non-members error gap.

    Returns:
        ``level``, ``passed``, ``incomplete``, ``strongest_attack`` (the name of
        ``ranked_attacks(attacks)[0]``, None when no attack completed), ``summary`` (one
        sentence), ``findings`` (most severe first), ``levels_by_threat_model`` and
        ``policy``.
    """
    ok = [a for a in attacks if is_completed(a)]
    failed = [a for a in attacks if not is_completed(a)]
    findings: list[dict[str, Any]] = []

    levels = {a["name"]: attack_level(a, policy) for a in ok}
    level = max((lv for lv, _ in levels.values()), key=_rank, default="low")
    by_threat = {
        tm: max((levels[a["name"]][0] for a in ok if a.get("threat_model") == tm),
                key=_rank, default=None)
        for tm in ("black-box", "white-box")
    }
    strongest = strongest_attack(ok)
    black_box_leaks = by_threat["black-box"] is not None and _rank(by_threat["black-box"]) >= 1
    recommendation = _RECOMMEND_BLACK_BOX if black_box_leaks else _RECOMMEND_WHITE_BOX

    if strongest is not None and _metric(strongest, "auc") is not None:
        lo = _metric(strongest, "auc")
        words, threshold = _comparison("auc", lo, policy)
        sev = _severity(metric_level(lo, policy.auc_medium, policy.auc_high))
        findings.append(_finding(
            sev, strongest, "auc", lo, threshold,
            f"The strongest attack ({_label(strongest)}, {strongest.get('threat_model')}) "
            f"{_evidence(strongest, 'auc')}; its lower bound {_fmt('auc', lo)} {words}.",
            recommendation if sev != "info" else
            "No action needed for this attack; re-assess after retraining or adding data.",
        ))
    best_tpr = _best_tpr(ok)
    if best_tpr is not None:
        lo = _metric(best_tpr, TPR_METRIC)
        words, threshold = _comparison(TPR_METRIC, lo, policy)
        sev = _severity(metric_level(lo, policy.tpr_at_1pct_fpr_medium, policy.tpr_at_1pct_fpr_high))
        findings.append(_finding(
            sev, best_tpr, TPR_METRIC, lo, threshold,
            f"The attack with the best low-false-positive performance ({_label(best_tpr)}) "
            f"{_evidence(best_tpr, TPR_METRIC)}; its lower bound {_fmt(TPR_METRIC, lo)} {words}.",
            recommendation if sev != "info" else
            "No action needed: few members can be singled out with confidence.",
        ))

    findings.extend(_threat_model_findings(ok, levels, by_threat, policy))

    for a in failed:
        findings.append(_finding(
            "medium", a, None, None, None,
            f"The attack {_label(a)} could not be run ({a.get('error') or a.get('status')}); "
            "the assessment is incomplete, so it cannot pass the policy.",
            "Fix the cause and re-run the assessment; if this feature set does not apply to the "
            "model, leave it out of the assessment explicitly.",
        ))
    if not attacks:
        findings.append(_finding(
            "medium", None, None, None, None,
            "No attack was run, so membership leakage was not measured.",
            "Run the assessment with at least the default attacks.",
        ))
    if utility:
        findings.append(_utility_finding(utility))

    incomplete = bool(failed) or not ok
    fails_level = _rank(level) >= _rank(policy.fail_at)
    passed = bool(ok) and not fails_level and not (incomplete and policy.fail_on_error)
    findings.sort(key=lambda f: ("high", "medium", "low", "info").index(f["severity"]))
    return {
        "level": level,
        "passed": passed,
        "incomplete": incomplete,
        "strongest_attack": strongest["name"] if strongest else None,
        "summary": _summary(level, passed, strongest, failed, ok, levels, policy),
        "findings": findings,
        "levels_by_threat_model": by_threat,
        "policy": policy.to_dict(),
    }


def _threat_model_findings(ok: Sequence[dict], levels: dict[str, tuple[str, str]],
                           by_threat: dict[str, str | None], policy: Policy) -> list[dict]:
    def top(tm: str) -> dict | None:
        cands = [a for a in ok if a.get("threat_model") == tm]
        if not cands:
            return None
        return max(cands, key=lambda a: (_rank(levels[a["name"]][0]), _metric(a, "auc") or 0.0))

    bb, wb = by_threat["black-box"], by_threat["white-box"]
    if bb is not None and _rank(bb) >= _rank("medium"):
        a = top("black-box")
        metric = levels[a["name"]][1]
        lo = _metric(a, metric)
        words, threshold = _comparison(metric, lo, policy)
        return [_finding(
            bb, a, metric, lo, threshold,
            f"Black-box leakage: an attack that needs only the model's predictions and the true "
            f"ages ({_label(a)}) {_evidence(a, metric)}; its lower bound "
            f"{_fmt(metric, lo)} {words}.",
            _RECOMMEND_BLACK_BOX,
        )]
    if wb is not None and _rank(wb) >= _rank("medium"):
        a = top("white-box")
        metric = levels[a["name"]][1]
        lo = _metric(a, metric)
        words, threshold = _comparison(metric, lo, policy)
        bb_words = ("black-box attacks (predictions only) stay below the thresholds"
                    if bb is not None else "no black-box attack was run")
        return [_finding(
            wb, a, metric, lo, threshold,
            f"White-box leakage only: an attack that needs the model's weights ({_label(a)}) "
            f"{_evidence(a, metric)}; its lower bound {_fmt(metric, lo)} {words}, while "
            f"{bb_words}.",
            _RECOMMEND_WHITE_BOX,
        )]
    return []


def _utility_finding(utility: dict) -> dict:
    m, n, gap = utility.get("mae_members"), utility.get("mae_nonmembers"), utility.get("mae_gap")
    if m is None or n is None:
        msg = "The model's error could not be compared between members and non-members."
    else:
        msg = (f"The model's mean absolute error is {m:.2f} years on members and {n:.2f} years on "
               f"non-members (gap {gap:.2f} years).")
    return _finding(
        "info", None, "mae_gap", gap, None, msg,
        "A large gap means the model fits its training scans better than new ones: overfitting, "
        "the main driver of membership leakage.",
    )


def _summary(level: str, passed: bool, strongest: dict | None, failed: Sequence[dict],
             ok: Sequence[dict], levels: dict[str, tuple[str, str]], policy: Policy) -> str:
    outcome = "passes" if passed else "fails"
    policy_words = f"the policy '{policy.name}' (fails at {policy.fail_at} risk)"
    if not ok:
        return (f"No attack completed ({len(failed)} failed), so membership leakage was not "
                f"measured and the model {outcome} {policy_words}.")
    deciding = max(ok, key=lambda a: (_rank(levels[a["name"]][0]), a is strongest))
    metric = levels[deciding["name"]][1]
    if _rank(level) == 0 and strongest is not None:
        metric, deciding = "auc", strongest
    lead = (f"{level.capitalize()} membership-inference risk: "
            f"{'the strongest attack' if deciding is strongest else 'the attack'} "
            f"({_label(deciding)}) {_evidence(deciding, metric)}")
    tail = ""
    if failed:
        tail = (f", but {len(failed)} attack(s) failed to run, so the assessment is incomplete")
    return f"{lead}{tail}; the model {outcome} {policy_words}."
