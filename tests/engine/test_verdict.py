"""Verdict levels, findings, incomplete assessments and policy files."""

from __future__ import annotations

import json

import pytest

from worker.engine.errors import InputError
from worker.engine.verdict import DEFAULT_POLICY, Policy, attack_level, evaluate, load_policy


def attack(name: str = "error/threshold", auc_low: float = 0.5, tpr_low: float = 0.0,
           threat: str | None = None, auc_mean: float | None = None) -> dict:
    fs, clf = name.split("/")
    threat = threat or ("black-box" if fs in ("error", "prediction+label") else "white-box")

    def summ(lo: float, mean: float) -> dict:
        return {"mean": mean, "std": 0.01, "ci_low": lo, "ci_high": mean + (mean - lo), "values": [mean]}

    return {
        "name": name, "feature_set": fs, "threat_model": threat, "classifier": clf,
        "status": "ok", "error": None, "n_features": 1, "n_train": 100, "n_test": 100, "repeats": 5,
        "metrics": {
            "accuracy": summ(auc_low - 0.05, auc_low), "balanced_accuracy": summ(auc_low - 0.05, auc_low),
            "auc": summ(auc_low, auc_mean if auc_mean is not None else auc_low + 0.04),
            "tpr_at_fpr_0.001": summ(0.0, 0.001), "tpr_at_fpr_0.01": summ(tpr_low, tpr_low + 0.02),
        },
        "roc": {"fpr": [0, 1], "tpr": [0, 1]}, "by_age_bin": [], "by_attribute": {}, "duration_s": 0.1,
    }


def errored(name: str = "grad:output/mlp") -> dict:
    a = attack(name)
    a.update(status="error", error="RuntimeError: out of memory", metrics={}, roc=None)
    return a


@pytest.mark.parametrize("auc_low,tpr_low,level", [
    (0.70, 0.0, "high"), (0.6999, 0.0, "medium"), (0.55, 0.0, "medium"), (0.5499, 0.0, "low"),
    (0.5, 0.10, "high"), (0.5, 0.0999, "medium"), (0.5, 0.03, "medium"), (0.5, 0.0299, "low"),
])
def test_levels_at_threshold_boundaries(auc_low, tpr_low, level):
    v = evaluate([attack(auc_low=auc_low, tpr_low=tpr_low)], DEFAULT_POLICY)
    assert v["level"] == level
    assert v["passed"] is (level == "low")  # fails at medium by default
    assert attack_level(attack(auc_low=auc_low, tpr_low=tpr_low))[0] == level


def test_fail_at_high_lets_medium_pass():
    v = evaluate([attack(auc_low=0.6)], Policy(fail_at="high"))
    assert v["level"] == "medium" and v["passed"] is True
    assert v["policy"]["fail_at"] == "high"


def test_strongest_attack_and_findings():
    attacks = [attack("error/threshold", 0.58), attack("grad:output/mlp", 0.77, auc_mean=0.81),
               attack("grad-norm/logistic", 0.6, tpr_low=0.12)]
    v = evaluate(attacks)
    json.dumps(v, allow_nan=False)
    assert v["strongest_attack"] == "grad:output/mlp"
    assert v["level"] == "high" and not v["passed"] and not v["incomplete"]
    first = v["findings"][0]
    assert first["severity"] == "high" and first["attack"] == "grad:output/mlp" and first["metric"] == "auc"
    assert first["value"] == 0.77 and first["threshold"] == 0.70
    assert "AUC 0.81 (95% CI 0.77-0.85)" in first["message"]
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
    v = evaluate([attack(auc_low=0.5), errored()])
    assert v["level"] == "low" and v["incomplete"] is True and v["passed"] is False
    f = next(f for f in v["findings"] if f["attack"] == "grad:output/mlp")
    assert f["severity"] == "medium"
    assert "could not be run" in f["message"] and "out of memory" in f["message"]
    assert "incomplete" in v["summary"]
    # a policy may accept partial assessments on purpose, but never one with no completed attack
    assert evaluate([attack(auc_low=0.5), errored()], Policy(fail_on_error=False))["passed"] is True
    assert evaluate([errored()], Policy(fail_on_error=False))["passed"] is False
    empty = evaluate([])
    assert empty["passed"] is False and empty["strongest_attack"] is None and empty["findings"]


def test_low_risk_summary_and_utility_finding():
    v = evaluate([attack(auc_low=0.45)], utility={"mae_members": 3.0, "mae_nonmembers": 3.4,
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
