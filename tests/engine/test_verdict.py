"""Verdict levels, findings, incomplete assessments and policy files."""

from __future__ import annotations

import json

import pytest

from worker.engine.errors import InputError
from worker.engine.verdict import (
    DEFAULT_POLICY,
    Policy,
    evaluate,
    load_policy,
)


def attack(name: str = "error/threshold", auc_low: float = 0.5, tpr_low: float = 0.0,
           threat: str | None = None, auc_mean: float | None = None, *, auc_high: float | None = None,
           tpr_high: float | None = None, n_test: int = 200) -> dict:
    """An attack entry; by default its upper bounds are mirrored about the mean (mean + (mean - low))."""
    fs, clf = name.split("/")
    threat = threat or ("black-box" if fs in ("error", "prediction+label") else "white-box")

    def summ(lo: float, mean: float, hi: float | None = None) -> dict:
        return {"mean": mean, "std": 0.01, "ci_low": lo, "ci_high": mean + (mean - lo) if hi is None else hi,
                "values": [mean]}

    return {
        "name": name, "feature_set": fs, "threat_model": threat, "classifier": clf,
        "status": "ok", "error": None, "n_features": 1, "n_train": 100, "n_test": n_test, "repeats": 5,
        "metrics": {
            "accuracy": summ(auc_low - 0.05, auc_low), "balanced_accuracy": summ(auc_low - 0.05, auc_low),
            "auc": summ(auc_low, auc_mean if auc_mean is not None else auc_low + 0.04, auc_high),
            "tpr_at_fpr_0.001": summ(0.0, 0.001), "tpr_at_fpr_0.01": summ(tpr_low, tpr_low + 0.02, tpr_high),
        },
        "roc": {"fpr": [0, 1], "tpr": [0, 1]}, "by_age_bin": [], "by_attribute": {}, "duration_s": 0.1,
    }


def clean(name: str = "error/threshold", **kw) -> dict:
    """An attack whose 95% upper bounds are below the medium thresholds (AUC < 0.55, TPR < 3%)."""
    return attack(name, auc_low=0.45, auc_mean=0.5, auc_high=0.54, tpr_low=0.0, tpr_high=0.025, **kw)


def errored(name: str = "grad:output/mlp") -> dict:
    a = attack(name)
    a.update(status="error", error="RuntimeError: out of memory", metrics={}, roc=None)
    return a


# One attack: two measured metrics, so the Bonferroni bound is the 95% interval's own lower end (on a
# test set large enough, 10000 + 10000, that the model standard error at the threshold does not
# bind) and the alarm edges are those of the tables; 'low' needs both upper bounds below medium on
# a test set too small (100 + 100) for the power route.
BIG, SMALL = 20000, 200


@pytest.mark.parametrize("auc,tpr,n_test,level", [
    ((0.70, 0.74, 0.78), (0.0, 0.01, 0.02), BIG, "high"),
    ((0.6999, 0.74, 0.78), (0.0, 0.01, 0.02), BIG, "medium"),
    ((0.55, 0.60, 0.65), (0.0, 0.01, 0.02), BIG, "medium"),
    ((0.5499, 0.58, 0.61), (0.0, 0.01, 0.02), SMALL, "inconclusive"),  # upper bound above medium
    ((0.45, 0.50, 0.55), (0.0, 0.01, 0.02), SMALL, "inconclusive"),    # upper bound at medium: not ruled out
    ((0.45, 0.50, 0.5499), (0.0, 0.01, 0.0299), SMALL, "low"),          # both upper bounds below medium
    ((0.45, 0.50, 0.5499), (0.0, 0.01, 0.03), SMALL, "inconclusive"),
    ((0.45, 0.50, 0.54), (0.10, 0.12, 0.14), BIG, "high"),
    ((0.45, 0.50, 0.54), (0.0999, 0.12, 0.14), BIG, "medium"),
    ((0.45, 0.50, 0.54), (0.03, 0.05, 0.07), BIG, "medium"),
    ((0.45, 0.50, 0.54), (0.0299, 0.05, 0.07), SMALL, "inconclusive"),
    # the same interval on 100 + 100 scans: the model standard error at 0.70 (0.037) is larger
    # than the interval's (0.020), so the bound is 0.74 - 1.96 * 0.037 = 0.67: medium, not high
    ((0.70, 0.74, 0.78), (0.0, 0.01, 0.02), SMALL, "medium"),
])
def test_level_table_at_its_edges(auc, tpr, n_test, level):
    a = attack(auc_low=auc[0], auc_mean=auc[1], auc_high=auc[2], tpr_low=tpr[0], n_test=n_test)
    a["metrics"]["tpr_at_fpr_0.01"].update(ci_low=tpr[0], mean=tpr[1], ci_high=tpr[2])
    v = evaluate([a], DEFAULT_POLICY)
    assert v["level"] == level
    assert v["passed"] is (level == "low")  # fails at medium and when inconclusive by default
    assert v["multiplicity"]["correction"] == "bonferroni" and v["multiplicity"]["m"] == 2
    if level == "inconclusive":
        assert v["scans_needed"] is not None and "would settle it" in v["summary"]


def test_unmeasurable_tpr_is_inconclusive_and_the_gate_is_configurable():
    a = clean()
    a["metrics"]["tpr_at_fpr_0.01"] = {"mean": None, "std": None, "ci_low": None, "ci_high": None, "values": [None]}
    v = evaluate([a])
    assert v["level"] == "inconclusive" and not v["passed"]
    assert "could not be measured" in v["summary"] and "does not clear" in v["summary"]
    lenient = evaluate([a], Policy(fail_on_inconclusive=False))
    assert lenient["level"] == "inconclusive" and lenient["passed"] is True
    assert evaluate([a], Policy(fail_on_inconclusive=False, fail_at="low"))["passed"] is False


def test_power_route_clears_a_well_powered_assessment():
    # 1200 + 1200 tested: a medium leak would be seen at 80% power, and the 80% upper bounds are below medium
    powered = attack(auc_low=0.48, auc_mean=0.52, auc_high=0.56, tpr_low=0.0, tpr_high=0.035, n_test=2400)
    powered["metrics"]["tpr_at_fpr_0.01"]["mean"] = 0.012
    v = evaluate([powered])
    assert v["level"] == "low" and v["passed"] and v["power"]["adequate"] is True
    # the same intervals on 100 + 100 scans: no power, and the upper bounds do not rule medium out
    assert evaluate([dict(powered, n_test=200)])["level"] == "inconclusive"
    # powered, but the estimate sits near the threshold: its 80% upper bound is above it
    near = attack(auc_low=0.50, auc_mean=0.54, auc_high=0.58, tpr_low=0.0, tpr_high=0.02, n_test=2400)
    assert evaluate([near])["level"] == "inconclusive"


def test_bounds_hold_over_all_attacks_together():
    one = attack("grad:output/mlp", auc_low=0.56, auc_mean=0.60, auc_high=0.64, n_test=BIG)
    assert evaluate([one])["level"] == "medium"
    many = [attack(f"grad:output/mlp{i}", auc_low=0.56, auc_mean=0.60, auc_high=0.64, n_test=BIG) for i in range(30)]
    for i, a in enumerate(many):
        a["name"] = f"grad:output/mlp-{i}"
    v = evaluate(many)
    # 60 measured metrics: each Bonferroni lower bound 0.60 - z(1 - 0.05/60) * 0.0204 < 0.55
    assert v["multiplicity"]["m"] == 60 and v["multiplicity"]["z"] == pytest.approx(3.14, abs=0.01)
    assert v["level"] == "inconclusive"
    assert "Bonferroni" in v["multiplicity"]["description"]


def test_fail_at_high_lets_medium_pass():
    v = evaluate([attack(auc_low=0.6)], Policy(fail_at="high"))
    assert v["level"] == "medium" and v["passed"] is True
    assert v["policy"]["fail_at"] == "high"


def test_strongest_attack_and_findings():
    attacks = [attack("error/threshold", 0.58, n_test=BIG), attack("grad:output/mlp", 0.77, auc_mean=0.81),
               attack("grad-norm/logistic", 0.6, tpr_low=0.12, n_test=BIG)]
    v = evaluate(attacks)
    json.dumps(v, allow_nan=False)
    assert v["strongest_attack"] == "grad:output/mlp"
    assert v["level"] == "high" and not v["passed"] and not v["incomplete"]
    first = v["findings"][0]
    assert first["severity"] == "high" and first["attack"] == "grad:output/mlp" and first["metric"] == "auc"
    # 3 attacks x 2 metrics: the Bonferroni bound at 0.70 is 0.81 - z(1 - 0.05/6) * se, se the larger
    # of the interval's 0.04 / 1.96 and the Hanley-McNeil 0.0374 of an AUC of 0.70 on 100 + 100 scans
    assert first["value"] == pytest.approx(0.81 - 2.394 * 0.0374, abs=2e-3) and first["threshold"] == 0.70
    assert "AUC 0.81 (95% CI 0.77-0.85)" in first["message"] and "simultaneous lower bound 0.72" in first["message"]
    assert "high-risk threshold 0.70" in first["message"]
    tpr = next(f for f in v["findings"] if f["metric"] == "tpr_at_fpr_0.01")
    assert tpr["attack"] == "grad-norm/logistic" and tpr["severity"] == "high" and tpr["threshold"] == 0.10
    for f in v["findings"]:
        assert set(f) == {"severity", "attack", "metric", "value", "threshold", "message", "recommendation"}
        assert f["severity"] in ("high", "medium", "low", "info")
    severities = [f["severity"] for f in v["findings"]]
    assert severities == sorted(severities, key=["high", "medium", "low", "info"].index)
    # black-box error attack crosses medium: even API access leaks
    assert any("Black-box" in f["message"] and "query" in f["recommendation"] for f in v["findings"])
    assert v["levels_by_threat_model"] == {"black-box": "medium", "white-box": "high"}


def test_white_box_only_leakage_recommends_not_sharing_weights():
    v = evaluate([attack("error/threshold", 0.5), attack("grad:output/mlp", 0.72)])
    wb = [f for f in v["findings"] if f["message"].startswith("White-box leakage only")]
    assert len(wb) == 1 and "Do not release or share the weights" in wb[0]["recommendation"]
    assert not any(f["message"].startswith("Black-box") for f in v["findings"])


def test_errored_attack_is_a_finding_and_never_passes():
    v = evaluate([clean(), errored()])
    assert v["level"] == "low" and v["incomplete"] is True and v["passed"] is False
    f = next(f for f in v["findings"] if f["attack"] == "grad:output/mlp")
    assert f["severity"] == "medium"
    assert "could not be run" in f["message"] and "out of memory" in f["message"]
    assert "incomplete" in v["summary"]
    # a policy may accept partial assessments on purpose, but never one with no completed attack
    assert evaluate([clean(), errored()], Policy(fail_on_error=False))["passed"] is True
    assert evaluate([errored()], Policy(fail_on_error=False))["passed"] is False
    empty = evaluate([])
    assert empty["passed"] is False and empty["strongest_attack"] is None and empty["findings"]


def test_low_risk_summary_and_utility_finding():
    v = evaluate([clean()], utility={"mae_members": 3.0, "mae_nonmembers": 3.4,
                                                   "n_members": 10, "n_nonmembers": 10, "mae_gap": 0.4})
    assert v["passed"] and v["level"] == "low"
    assert v["summary"].startswith("Low membership-inference risk") and "passes" in v["summary"]
    assert any(f["metric"] == "mae_gap" and f["severity"] == "info" for f in v["findings"])


def test_policy_files(tmp_path):
    j = tmp_path / "p.json"
    j.write_text(json.dumps({"name": "strict", "auc_high": 0.65, "fail_at": "high"}))
    p = load_policy(j)
    assert p.name == "strict" and p.auc_high == 0.65 and p.auc_medium == 0.55 and p.fail_at == "high"
    t = tmp_path / "p.toml"
    t.write_text('[policy]\nauc_medium = 0.6\ntpr_at_1pct_fpr_high = 0.2\nfail_on_error = false\n')
    p = load_policy(t)
    assert p.auc_medium == 0.6 and p.tpr_at_1pct_fpr_high == 0.2 and p.fail_on_error is False
    assert Policy.from_dict(DEFAULT_POLICY.to_dict()) == DEFAULT_POLICY


@pytest.mark.parametrize("content,pattern", [
    ({"auc_hihg": 0.7}, "auc_hihg"),
    ({"auc_high": "high"}, "'auc_high' must be a number"),
    ({"auc_high": 1.5}, "'auc_high' must be between 0 and 1"),
    ({"auc_medium": 0.8}, "'auc_medium'.*must not exceed"),
    ({"fail_at": "critical"}, "'fail_at' must be one of"),
    ({"fail_on_error": "no"}, "'fail_on_error'"),
    ({"fail_on_inconclusive": 1}, "'fail_on_inconclusive' must be true or false"),
    ({"fail_at": "inconclusive"}, "'fail_at' must be one of low, medium, high"),
    ({"delta": 0}, "'delta' must be a number between 0 and 1"),
    ([0.7], "table of fields"),
])
def test_bad_policy_fields_are_named(tmp_path, content, pattern):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(InputError, match=pattern):
        load_policy(path)


def test_bad_policy_files(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        load_policy(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("auc_high = \n")
    with pytest.raises(InputError, match="not valid TOML"):
        load_policy(bad)
    yaml = tmp_path / "p.yaml"
    yaml.write_text("auc_high: 0.7")
    with pytest.raises(InputError, match=r"\.json or \.toml"):
        load_policy(yaml)
