"""The verdict section and the at-a-glance cards: risk level, policy result, findings, headline numbers."""

from __future__ import annotations

from ..figures import _data as D
from ..figures._style import finite
from .formatting import fmt_num, fmt_pct, setting_value

#: Verdict levels (DESIGN.md), least severe first, as the pages name them. ``inconclusive``: nothing
#: reached medium, but the data cannot rule it out.
LEVEL_TEXT = {
    "low": "Low risk",
    "inconclusive": "Inconclusive",
    "medium": "Medium risk",
    "high": "High risk",
}
SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2, "info": 3}
METRIC_LABELS = {
    "auc": "AUC",
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "tpr_at_fpr_0.001": "TPR at 0.1% FPR",
    "tpr_at_fpr_0.01": "TPR at 1% FPR",
}
THREAT_LEVEL_LABELS = (
    ("black-box", "Someone who can only query the model (black-box)"),
    ("white-box", "Someone who holds the model file (white-box)"),
)


def _finding_detail(finding: dict) -> str:
    """The attack and the value the policy compared, as one line ("" when neither is given)."""
    detail = []
    metric = finding.get("metric")
    if finding.get("attack"):
        detail.append(f"attack {finding['attack']}")
    if metric:
        label = METRIC_LABELS.get(str(metric), str(metric))
        value, thr = finite(finding.get("value")), finite(finding.get("threshold"))
        if value is not None:
            detail.append(f"{label} value used by the policy {value:.3g}"
                          + (f", threshold {thr:.3g}" if thr is not None else ""))
    elif finite(finding.get("value")) is not None:
        thr = finite(finding.get("threshold"))
        detail.append(f"value {finite(finding.get('value')):.3g}"
                      + (f", threshold {thr:.3g}" if thr is not None else ""))
    return "; ".join(detail)


def _statistics(v: dict) -> dict:
    """The verdict's statistics in words: the correction, power, empirical epsilon, a DP claim's check."""
    mult, power, eps, dp = (D.part(v, k) for k in ("multiplicity", "power", "epsilon", "dp_claim"))
    out: dict = {"multiplicity": str(mult.get("description") or "") if isinstance(mult, dict) else "",
                 "power": str(power.get("message") or "") if isinstance(power, dict) else "",
                 "power_adequate": power.get("adequate") if isinstance(power, dict) else None,
                 "scans_needed": v.get("scans_needed"), "epsilon": None, "dp_claim": None}
    if isinstance(eps, dict) and finite(eps.get("epsilon")) is not None:
        out["epsilon"] = {"value": fmt_num(eps.get("epsilon"), ".2f"), "ceiling": fmt_num(eps.get("ceiling"), ".2f"),
                          "delta": f"{float(eps.get('delta') or 0):g}", "message": str(eps.get("message") or ""),
                          "correction": str(eps.get("correction") or "")}
    if isinstance(dp, dict) and dp.get("message"):
        out["dp_claim"] = {"contradicted": bool(dp.get("contradicted")), "message": str(dp["message"])}
    return out


def verdict_view(report: dict) -> dict:
    """The verdict section: level and its text, policy result, findings most severe first."""
    v = D.part(report, "verdict")
    level = str(v.get("level") or "").lower()
    if level not in LEVEL_TEXT:
        level = "unknown"
    passed = v.get("passed")
    findings = []
    for f in v.get("findings") or []:
        if not isinstance(f, dict):
            continue
        sev = str(f.get("severity") or "info").lower()
        findings.append({
            "severity": sev if sev in SEVERITY_ORDER else "info",
            "message": str(f.get("message") or ""),
            "recommendation": str(f.get("recommendation") or ""),
            "detail": _finding_detail(f),
        })
    findings.sort(key=lambda f: SEVERITY_ORDER[f["severity"]])
    policy = D.part(v, "policy")
    by_threat = D.part(v, "levels_by_threat_model")
    threat_levels = [
        {"threat": tm, "label": label, "level": str(by_threat[tm]).lower(),
         "level_text": LEVEL_TEXT.get(str(by_threat[tm]).lower(), str(by_threat[tm]))}
        for tm, label in THREAT_LEVEL_LABELS
        if isinstance(by_threat, dict) and by_threat.get(tm)
    ]
    return {
        "threat_levels": threat_levels,
        "incomplete": bool(v.get("incomplete")),
        "level": level,
        "level_text": LEVEL_TEXT.get(level, "Risk level unknown"),
        "passed": passed,
        "passed_text": "Passed the policy" if passed is True else
                       "Failed the policy" if passed is False else "Policy result unknown",
        "summary": str(v.get("summary") or ""),
        "strongest": v.get("strongest_attack"),
        "findings": findings,
        "policy": [(str(k), setting_value(val)) for k, val in policy.items()]
        if isinstance(policy, dict) else [],
        **_statistics(v),
    }


def _best_tpr_attack(report: dict) -> dict | None:
    """The completed attack with the highest lower bound (then mean) of its TPR at 1% FPR, among
    those where it is defined; None when no attack could measure it."""
    measured = [a for a in D.ok_attacks(report) if D.metric(a, "tpr_at_fpr_0.01") is not None]
    if not measured:
        return None
    return max(measured, key=lambda a: (D.metric(a, "tpr_at_fpr_0.01", "ci_low") or 0.0,
                                        D.metric(a, "tpr_at_fpr_0.01") or 0.0))


def glance_cards(report: dict) -> list[dict]:
    """A few headline numbers with a plain-language reading."""
    cards = []
    strongest = D.strongest_attack(report)
    if strongest is not None:
        acc = D.metric(strongest, "accuracy")
        auc = D.metric(strongest, "auc")
        tpr = D.metric(strongest, "tpr_at_fpr_0.01")
        cards.append({
            "label": "Strongest attack accuracy",
            "value": fmt_pct(acc),
            "note": "share of scans whose membership it guesses right; a coin toss gets 50%",
        })
        cards.append({
            "label": "Strongest attack AUC",
            "value": fmt_num(auc, ".2f"),
            "note": "0.5 = cannot tell members apart, 1.0 = always can",
        })
        note = "training scans identified while wrongly accusing only 1 in 100 others"
        if tpr is None:  # too few non-members in the strongest attack's test sets: the best measured one
            measured = _best_tpr_attack(report)
            if measured is not None:
                tpr = D.metric(measured, "tpr_at_fpr_0.01")
                note += (f", by {D.attack_name(measured)} ({D.FAMILY_LABELS[D.family(measured)]}, "
                         f"{D.threat_model(measured)}): the strongest attack tested too few unseen scans to measure it")
        cards.append({"label": "Members found at 1% false alarms", "value": fmt_pct(tpr), "note": note})
    eps = D.part(D.part(report, "verdict"), "epsilon")
    if isinstance(eps, dict) and finite(eps.get("epsilon")) is not None:
        cards.append({
            "label": "Empirical privacy (epsilon, lower bound)",
            "value": f"epsilon >= {float(eps['epsilon']):.2f}",
            "note": (f"at best this private (delta {float(eps.get('delta') or 0):g}); the most these scans could "
                     f"show is {fmt_num(eps.get('ceiling'), '.2f')}"),
        })
    u = D.part(report, "utility")
    if finite(u.get("mae_members")) is not None and finite(u.get("mae_nonmembers")) is not None:
        cards.append({
            "label": "Model error, training vs unseen scans",
            "value": f"{float(u['mae_members']):.1f} vs {float(u['mae_nonmembers']):.1f} years",
            "note": "a large gap means the model memorised its training scans",
        })
    return cards
