"""The verdict: attack results judged against a :class:`~worker.engine.policy.Policy`.

Levels (:mod:`worker.engine.verdict_levels`): ``high`` / ``medium`` when an attack's lower
bound reaches the threshold, the lower bounds holding over all attacks together (Bonferroni,
:mod:`worker.engine.simultaneous`); ``low`` only when the data rule the medium thresholds out
(every upper bound below them, or a scan set with the power to see them and powered attacks
below them); ``inconclusive`` otherwise, with the reason and about how many more scans would
settle it. The *strongest attack* is the first of
:func:`~worker.engine.report_ranking.ranked_attacks`, the one definition the report page, the
figures and the command line use too, and is what the summary quotes.

Privacy in (epsilon, delta) terms: with the attacks' per-scan scores (``exposure``) the verdict
carries an empirical lower bound with its ceiling (:mod:`worker.engine.epsilon`); a model that
declares ``dp: {epsilon, delta}`` is checked against it, and a contradicted claim is a high
finding.

Errors. An attack that could not run is a finding (severity ``medium``) and makes the
assessment *incomplete* (``"incomplete": true``). The level stays what the completed attacks
measured, but an incomplete assessment never passes (unless the policy sets
``fail_on_error = false``); an assessment in which no attack completed never passes. An
``inconclusive`` verdict fails unless the policy sets ``fail_on_inconclusive = false``.

Threat models. Findings tell black-box leakage (predictions suffice: anyone with query
access can attack) from white-box-only leakage (gradients or activations: the weights must
not be shared).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .epsilon import check_dp_claim, empirical_epsilon
from .policy import DEFAULT_POLICY, LEVELS, Policy, load_policy
from .power import power_statement
from .report_ranking import is_completed, strongest_attack
from .scan_qa_policy import flagged_scans_note
from .simultaneous import ALPHA, CORRECTION, Bound
from .verdict_levels import (
    LevelDecision,
    bound_level,
    decide_level,
    metric_level,
    test_sizes,
    thresholds,
)

__all__ = ["DEFAULT_POLICY", "LEVELS", "Policy", "attack_level", "evaluate", "load_policy", "metric_level"]

TPR_METRIC = "tpr_at_fpr_0.01"
_ALARM_LEVELS = ("low", "medium", "high")

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
_RECOMMEND_MORE_SCANS = (
    "Do not read this as cleared: add members and non-members (or run the quantile and "
    "reference-model attacks, which test every scan) and re-assess."
)


def _rank(level: str) -> int:
    return LEVELS.index(level)


def _metric(attack: dict, name: str, key: str = "ci_low") -> float | None:
    value = ((attack.get("metrics") or {}).get(name) or {}).get(key)
    return None if value is None else float(value)


def _label(attack: dict) -> str:
    return f"{attack.get('feature_set')} with {attack.get('classifier')}"


def attack_level(attack: dict, policy: Policy = DEFAULT_POLICY,
                 bounds: Mapping[tuple[str, str], Bound] | None = None) -> tuple[str, str]:
    """The alarm level of one completed attack (``low`` / ``medium`` / ``high``) and its metric.

    Args:
        attack: the attack entry.
        policy: the thresholds.
        bounds: (attack, metric) -> its :class:`~worker.engine.simultaneous.Bound` (the verdict's
            simultaneous test); None to read the attack's own 95% ``ci_low`` (the tables' bound,
            uncorrected).

    Ties go to AUC.
    """
    def level(metric: str) -> str:
        if bounds is not None:
            b = bounds.get((attack.get("name"), metric))
            return "low" if b is None else bound_level(b, policy)
        return metric_level(_metric(attack, metric), *thresholds(metric, policy))

    auc, tpr = level("auc"), level(TPR_METRIC)
    i = _ALARM_LEVELS.index
    return (auc, "auc") if i(auc) >= i(tpr) else (tpr, TPR_METRIC)


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" if metric == "auc" else f"{100 * value:.1f}%"


def _comparison(metric: str, value: float | None, policy: Policy, level: str | None = None) -> tuple[str, float]:
    """Plain words comparing a lower bound with the thresholds (at ``level``), and the threshold concerned."""
    medium, high = thresholds(metric, policy)
    level = metric_level(value, medium, high) if level is None else level
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


def _severity(level: str) -> str:
    return "info" if level == "low" else level


def _tested_bound(bound: Bound, level: str, policy: Policy) -> float:
    """The simultaneous lower bound at the threshold that sets ``level`` (medium's below it)."""
    medium, high = thresholds(bound.metric, policy)
    return bound.lower(high if level == "high" else medium)


def _metric_finding(attack: dict, metric: str, bound: Bound, policy: Policy, lead: str,
                    recommendation: str, quiet: str) -> dict:
    level = bound_level(bound, policy)
    lo = _tested_bound(bound, level, policy)
    words, threshold = _comparison(metric, lo, policy, level)
    sev = _severity(level)
    return _finding(
        sev, attack, metric, lo, threshold,
        f"{lead} ({_label(attack)}{', ' + str(attack.get('threat_model')) if metric == 'auc' else ''}) "
        f"{_evidence(attack, metric)}; its simultaneous lower bound {_fmt(metric, lo)} {words}.",
        recommendation if sev != "info" else quiet,
    )


def _best_tpr(attacks: Sequence[dict], lows: Mapping) -> dict | None:
    """The attack with the highest simultaneous TPR@1%FPR lower bound (ties: the mean), or None."""
    scored = [a for a in attacks if (a["name"], TPR_METRIC) in lows]
    if not scored:
        return None
    return max(scored, key=lambda a: (lows[(a["name"], TPR_METRIC)], _metric(a, TPR_METRIC, "mean") or 0.0))


def _multiplicity(decision: LevelDecision) -> dict[str, Any]:
    m = len(decision.bounds)
    return {
        "correction": CORRECTION, "alpha": ALPHA, "m": m, "z": decision.z,
        "description": (
            f"Alarms (medium, high) use lower bounds that hold over all {m} attack metrics together "
            f"(Bonferroni: each one-sided at {100 * (1 - ALPHA / max(m, 1)):.3g}%, z = {decision.z:.2f}; "
            "Holm's step-down flags an alarm exactly when this does). 'Low' needs every attack's 95% "
            "upper bound below medium (an intersection-union test, valid without correction) or a scan "
            "set with the power to see medium leakage and its powered attacks below it."),
    }


def _power(ok: Sequence[dict], counts: tuple[int, int] | None, policy: Policy) -> dict[str, Any] | None:
    if not ok:
        return None
    t1, t0 = max((test_sizes(a, counts) for a in ok), key=min)
    n1, n0 = counts if counts else (t1, t0)
    return power_statement(n1, n0, policy, test_members=t1, test_nonmembers=t0)


def _inconclusive_finding(decision: LevelDecision, counts: tuple[int, int] | None,
                          ok: Sequence[dict]) -> dict:
    n1, n0 = counts if counts else max((test_sizes(a) for a in ok), key=min)
    parts = []
    for c in decision.clearances:
        if c.cleared:
            continue
        name = "AUC" if c.metric == "auc" else "TPR at 1% FPR"
        if c.worst is None:
            parts.append(f"the {name} could not be measured (it needs at least 100 non-members in a test set)")
        else:
            parts.append(f"the {name} of attack {c.worst} could be as high as {_fmt(c.metric, c.worst_high)}")
    more = ""
    if decision.scans_needed is not None:
        extra = max(decision.scans_needed - min(n1, n0), 1)
        more = f"; about {extra} more members and {extra} more non-members would settle it"
    msg = (f"Inconclusive: nothing reached the medium-risk thresholds, but with {n1} + {n0} scans "
           f"{' and '.join(parts)}{more}.")
    return _finding("low", None, None, None, None, msg, _RECOMMEND_MORE_SCANS)


def evaluate(
    attacks: Sequence[dict], policy: Policy = DEFAULT_POLICY, *, utility: dict | None = None,
    exposure: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    dp_claim: Mapping[str, Any] | None = None, counts: tuple[int, int] | None = None,
    scan_quality: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Judge attack results (``AttackRunResult.attacks``) against a policy.

    Args:
        attacks: attack entries as produced by :func:`~worker.engine.attacks.run_attacks`.
        policy: the thresholds.
        utility: optional :func:`~worker.engine.metrics.utility` dict, adds an info finding
            on the members / non-members error gap (and gives the scan counts).
        exposure: attack name -> per-scan scores, for the empirical epsilon.
        dp_claim: the model's declared ``{epsilon, delta}``, checked against the empirical bound.
        counts: (members, non-members) of the assessment (default: from ``utility``).
        scan_quality: the report's scan-QA section; scans it flagged add an info finding.

    Returns:
        ``level``, ``passed``, ``incomplete``, ``strongest_attack`` (the name of
        ``ranked_attacks(attacks)[0]``, None when no attack completed), ``summary`` (one
        sentence), ``findings`` (most severe first), ``levels_by_threat_model``, ``policy``,
        ``multiplicity`` (the correction used), ``power``, ``scans_needed`` (for
        ``inconclusive``), ``epsilon`` and ``dp_claim`` (None where not computed).
    """
    if counts is None and utility and utility.get("n_members") is not None:
        counts = (int(utility["n_members"]), int(utility["n_nonmembers"]))
    ok = [a for a in attacks if is_completed(a)]
    failed = [a for a in attacks if not is_completed(a)]
    decision = decide_level(ok, policy, counts=counts)
    lows = decision.lows
    findings: list[dict[str, Any]] = []

    by_pair = {(b.attack, b.metric): b for b in decision.bounds}
    levels = {a["name"]: attack_level(a, policy, by_pair) for a in ok}
    level = decision.level
    by_threat = {
        tm: max((levels[a["name"]][0] for a in ok if a.get("threat_model") == tm),
                key=_ALARM_LEVELS.index, default=None)
        for tm in ("black-box", "white-box")
    }
    strongest = strongest_attack(ok)
    black_box_leaks = by_threat["black-box"] is not None and by_threat["black-box"] != "low"
    recommendation = _RECOMMEND_BLACK_BOX if black_box_leaks else _RECOMMEND_WHITE_BOX

    if strongest is not None and (strongest["name"], "auc") in lows:
        findings.append(_metric_finding(
            strongest, "auc", by_pair[(strongest["name"], "auc")], policy,
            "The strongest attack", recommendation,
            "No action needed for this attack; re-assess after retraining or adding data."))
    best_tpr = _best_tpr(ok, lows)
    if best_tpr is not None:
        findings.append(_metric_finding(
            best_tpr, TPR_METRIC, by_pair[(best_tpr["name"], TPR_METRIC)], policy,
            "The attack with the best low-false-positive performance",
            recommendation, "No action needed: few members can be singled out with confidence."))
    if level == "inconclusive":
        findings.append(_inconclusive_finding(decision, counts, ok))

    findings.extend(_threat_model_findings(ok, levels, by_threat, policy, by_pair))

    epsilon = empirical_epsilon(exposure, delta=policy.delta) if exposure else None
    if epsilon is not None:
        findings.append(_finding("info", {"name": epsilon["attack"]}, "epsilon", epsilon["epsilon"], None,
                                 epsilon["message"], "An empirical bound can only show leakage, never prove "
                                 "privacy; formal guarantees need DP training (DP-SGD)."))
    dp = check_dp_claim(dp_claim, exposure or {}) if dp_claim else None
    if dp is not None:
        findings.append(_finding(
            "high" if dp["contradicted"] else "info", None, "dp_epsilon", dp["empirical_epsilon"],
            dp["claimed_epsilon"], dp["message"],
            "Check the DP training (noise multiplier, clipping, accounting) and the model card's claim."
            if dp["contradicted"] else "The claim stands only as far as these scans can tell."))
        if dp["contradicted"]:
            level = "high"

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
    flagged = flagged_scans_note(scan_quality) if scan_quality else None
    if flagged is not None:
        findings.append(_finding("info", None, "scan_qa_flagged", scan_quality["n_flagged"] / scan_quality["n_scans"],
                                 None, *flagged))

    incomplete = bool(failed) or not ok
    fails_level = level != "inconclusive" and _rank(level) >= _rank(policy.fail_at)
    fails_inconclusive = level == "inconclusive" and (policy.fail_on_inconclusive or policy.fail_at == "low")
    passed = (bool(ok) and not fails_level and not fails_inconclusive
              and not (incomplete and policy.fail_on_error))
    findings.sort(key=lambda f: ("high", "medium", "low", "info").index(f["severity"]))
    return {
        "level": level,
        "passed": passed,
        "incomplete": incomplete,
        "strongest_attack": strongest["name"] if strongest else None,
        "summary": _summary(level, passed, strongest, failed, ok, levels, policy, findings, dp),
        "findings": findings,
        "levels_by_threat_model": by_threat,
        "policy": policy.to_dict(),
        "multiplicity": _multiplicity(decision),
        "power": _power(ok, counts, policy),
        "scans_needed": decision.scans_needed,
        "epsilon": epsilon,
        "dp_claim": dp,
    }


def _threat_model_findings(ok: Sequence[dict], levels: dict[str, tuple[str, str]],
                           by_threat: dict[str, str | None], policy: Policy,
                           bounds: Mapping[tuple[str, str], Bound]) -> list[dict]:
    def top(tm: str) -> dict:
        cands = [a for a in ok if a.get("threat_model") == tm]
        return max(cands, key=lambda a: (_ALARM_LEVELS.index(levels[a["name"]][0]), _metric(a, "auc") or 0.0))

    bb, wb = by_threat["black-box"], by_threat["white-box"]
    for tm, lv in (("black-box", bb), ("white-box", wb)):
        if lv is None or lv == "low":
            continue
        a = top(tm)
        metric = levels[a["name"]][1]
        lo = _tested_bound(bounds[(a["name"], metric)], lv, policy)
        words, threshold = _comparison(metric, lo, policy, lv)
        if tm == "black-box":
            msg = (f"Black-box leakage: an attack that needs only the model's predictions and the true "
                   f"ages ({_label(a)}) {_evidence(a, metric)}; its simultaneous lower bound "
                   f"{_fmt(metric, lo)} {words}.")
            return [_finding(lv, a, metric, lo, threshold, msg, _RECOMMEND_BLACK_BOX)]
        bb_words = ("black-box attacks (predictions only) stay below the thresholds"
                    if bb is not None else "no black-box attack was run")
        msg = (f"White-box leakage only: an attack that needs the model's weights ({_label(a)}) "
               f"{_evidence(a, metric)}; its simultaneous lower bound {_fmt(metric, lo)} {words}, while "
               f"{bb_words}.")
        return [_finding(lv, a, metric, lo, threshold, msg, _RECOMMEND_WHITE_BOX)]
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
             ok: Sequence[dict], levels: dict[str, tuple[str, str]], policy: Policy,
             findings: Sequence[dict], dp: dict | None) -> str:
    outcome = "passes" if passed else "fails"
    policy_words = f"the policy '{policy.name}' (fails at {policy.fail_at} risk)"
    if not ok:
        return (f"No attack completed ({len(failed)} failed), so membership leakage was not "
                f"measured and the model {outcome} {policy_words}.")
    tail = ""
    if failed:
        tail = f", but {len(failed)} attack(s) failed to run, so the assessment is incomplete"
    if level == "inconclusive":
        reason = next(f["message"] for f in findings if f["message"].startswith("Inconclusive"))
        gate = "an inconclusive verdict does not clear a model" if policy.fail_on_inconclusive else \
            "the policy lets an inconclusive verdict pass"
        return f"{reason[:-1]}{tail}; the model {outcome} {policy_words}: {gate}."
    if dp is not None and dp["contradicted"] and all(lv != "high" for lv, _ in levels.values()):
        return f"High risk: {dp['message'][:-1]}{tail}; the model {outcome} {policy_words}."
    i = _ALARM_LEVELS.index
    deciding = max(ok, key=lambda a: (i(levels[a["name"]][0]), a is strongest))
    metric = levels[deciding["name"]][1]
    if levels[deciding["name"]][0] == "low" and strongest is not None:
        metric, deciding = "auc", strongest
    lead = (f"{level.capitalize()} membership-inference risk: "
            f"{'the strongest attack' if deciding is strongest else 'the attack'} "
            f"({_label(deciding)}) {_evidence(deciding, metric)}")
    return f"{lead}{tail}; the model {outcome} {policy_words}."
