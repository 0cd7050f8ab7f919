"""Attack classifiers, the registry, balanced splits and the attack runner."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from tests.engine.test_feature_sets import make_table
from worker.engine.attacks import (
    AttackCancelled,
    AttackClassifier,
    AttackSpec,
    available_attacks,
    balanced_splits,
    default_attack_specs,
    get_attack,
    make_attack,
    register_attack,
    run_attacks,
    split_sizes,
)
from worker.engine.errors import InputError

ATTACK_KEYS = {
    "name", "feature_set", "threat_model", "classifier", "status", "error", "n_features",
    "n_train", "n_test", "repeats", "metrics", "roc", "by_age_bin", "by_attribute", "duration_s",
}


def _problem(n: int, d: int, separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.r_[np.ones(n // 2, int), np.zeros(n - n // 2, int)])
    X = rng.normal(size=(n, d))
    X[:, 0] += separation * (2 * y - 1)
    return X, y


def test_registry():
    assert {"threshold", "logistic", "mlp", "gbt"} <= set(available_attacks())
    assert get_attack("threshold").univariate and not get_attack("mlp").univariate
    with pytest.raises(InputError, match="unknown attack classifier 'svm'.*logistic"):
        get_attack("svm")

    @register_attack("constant-test")
    class Constant(AttackClassifier):
        def fit(self, X, y, seed=0):
            return self

        def score(self, X):
            return np.full(len(X), 0.5)

    assert isinstance(make_attack("constant-test"), Constant)


@pytest.mark.parametrize("name", ["threshold", "logistic", "mlp", "gbt"])
def test_classifier_learns_separable_and_not_noise(name):
    d = 1 if name == "threshold" else 4
    X, y = _problem(400, d, 2.0, seed=1)
    Xt, yt = _problem(400, d, 2.0, seed=2)
    clf = make_attack(name).fit(X, y, seed=0)
    s = clf.score(Xt)
    assert s.shape == (400,) and np.all((s >= 0) & (s <= 1))
    assert accuracy_score(yt, clf.predict(Xt)) > 0.9
    assert roc_auc_score(yt, s) > 0.95  # member (1) is positive: higher score = member
    # label noise: no signal -> chance
    Xn, yn = _problem(400, d, 0.0, seed=3)
    Xnt, ynt = _problem(400, d, 0.0, seed=4)
    noisy = make_attack(name).fit(Xn, yn, seed=0)
    assert abs(accuracy_score(ynt, noisy.predict(Xnt)) - 0.5) < 0.1
    assert abs(roc_auc_score(ynt, noisy.score(Xnt)) - 0.5) < 0.1


@pytest.mark.parametrize("name", ["threshold", "logistic", "mlp"])
def test_flipped_membership_is_learned_in_the_other_direction(name):
    d = 1 if name == "threshold" else 3
    X, y = _problem(300, d, 2.0, seed=5)
    Xt, yt = _problem(300, d, 2.0, seed=6)
    s = make_attack(name).fit(X, 1 - y, seed=0).score(Xt)
    assert roc_auc_score(yt, s) < 0.05 and roc_auc_score(1 - yt, s) > 0.95


def test_threshold_chooses_direction_and_cut_on_train():
    X = np.array([[0.1], [0.2], [0.3], [1.0], [1.1], [1.2]])
    clf = make_attack("threshold").fit(X, np.array([1, 1, 1, 0, 0, 0]))
    assert clf.sign_ == -1 and clf.cut_ == pytest.approx(0.65) and clf.train_accuracy_ == 1.0
    s = clf.score(np.array([[0.0], [0.64], [0.66], [5.0]]))
    assert np.all(np.diff(s) < 0) and s[1] > 0.5 > s[2]
    with pytest.raises(InputError, match="one score"):
        make_attack("threshold").fit(np.zeros((6, 2)), np.array([1, 1, 1, 0, 0, 0]))


def test_mlp_wide_input_is_reduced_and_deterministic():
    X, y = _problem(300, 3000, 1.0, seed=7)
    X[:, :20] += 0.5 * (2 * y[:, None] - 1)
    a = make_attack("mlp", max_epochs=15).fit(X, y, seed=3)
    b = make_attack("mlp", max_epochs=15).fit(X, y, seed=3)
    assert a.net_[0].out_features == 128  # dimension-reducing first layer for d > 1024
    Xt, _ = _problem(50, 3000, 1.0, seed=8)
    np.testing.assert_array_equal(a.score(Xt), b.score(Xt))
    c = make_attack("mlp", max_epochs=15).fit(X, y, seed=4)
    assert not np.array_equal(a.score(Xt), c.score(Xt))


def test_mlp_trains_wide_inputs_on_a_gpu_when_present_and_narrow_ones_on_the_cpu():
    import torch

    X, y = _problem(200, 2000, 1.0, seed=5)
    X[:, :20] += 0.5 * (2 * y[:, None] - 1)
    wide = make_attack("mlp", max_epochs=5).fit(X, y, seed=1)
    narrow = make_attack("mlp", max_epochs=5).fit(X[:, :8], y, seed=1)
    gpu = torch.cuda.is_available()
    assert next(wide.net_.parameters()).device.type == ("cuda" if gpu else "cpu")
    assert next(narrow.net_.parameters()).device.type == "cpu"
    on_cpu = make_attack("mlp", max_epochs=5, device="cpu").fit(X, y, seed=1)
    scores = wide.score(X)
    assert scores.dtype == np.float64 and np.all((scores >= 0) & (scores <= 1))
    if gpu:  # another device's dropout draws: another network, as good (both learn the shift)
        assert np.corrcoef(scores, on_cpu.score(X))[0, 1] > 0.5
        again = make_attack("mlp", max_epochs=5).fit(X, y, seed=1)
        np.testing.assert_allclose(again.score(X), scores, rtol=1e-5, atol=1e-6)  # seeded on the GPU too
    else:
        np.testing.assert_array_equal(scores, on_cpu.score(X))


def test_splits_balanced_disjoint_and_sized():
    members = np.r_[np.ones(60, int), np.zeros(45, int)]
    assert split_sizes(members) == (22, 23)  # default: half of the smaller group
    splits = balanced_splits(members, repeats=4, seed=10)
    assert [s.seed for s in splits] == [10, 11, 12, 13]
    for s in splits:
        assert members[s.train].sum() == 22 and (members[s.train] == 0).sum() == 22
        assert members[s.test].sum() == 23 and (members[s.test] == 0).sum() == 23
        assert not set(s.train) & set(s.test)
        assert len(set(s.train)) == len(s.train) and len(set(s.test)) == len(s.test)
    assert not np.array_equal(splits[0].train, splits[1].train)
    again = balanced_splits(members, repeats=4, seed=10)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(splits, again))
    custom = balanced_splits(members, repeats=1, train_size=40)
    assert len(custom[0].train) == 80 and len(custom[0].test) == 10
    for bad in (0, 45, 100):
        with pytest.raises(InputError, match="train_size"):
            balanced_splits(members, train_size=bad)
    with pytest.raises(InputError, match="at least 2 members"):
        balanced_splits(np.r_[np.ones(10, int), np.zeros(1, int)])
    with pytest.raises(InputError, match="repeats"):
        balanced_splits(members, repeats=0)


def test_default_attack_specs():
    ft = make_table(20, 20)
    names = [s.name for s in default_attack_specs(ft)]
    assert names[:5] == ["activation/logistic", "activation/mlp", "error/threshold",
                         "error/logistic", "error/mlp"]
    assert "grad-norm/threshold" in names and "grad:output/threshold" in names
    assert "prediction+label/threshold" not in names
    assert len(names) == 8 * 2 + 5
    black = make_table(20, 20, white_box=False)
    assert [s.name for s in default_attack_specs(black, ["logistic"])] == [
        "error/logistic", "prediction+label/logistic"]
    with pytest.raises(InputError, match="svm"):
        default_attack_specs(ft, ["svm"])
    chosen = default_attack_specs(black, ["threshold", "mlp"], feature_sets=["grad:output", "loss"])
    assert [s.name for s in chosen] == ["grad:output/threshold", "grad:output/mlp",
                                        "loss/threshold", "loss/mlp"]  # kept: run records errors
    with pytest.raises(InputError, match="unknown component"):
        default_attack_specs(ft, feature_sets=["error+bogus"])


def test_run_attacks_result_contract_and_leakage():
    ft = make_table(100, 90, leak=1.5, seed=1)
    specs = [AttackSpec("error", "threshold"), AttackSpec("grad-norm", "logistic"),
             AttackSpec("prediction+label+grad:output", "mlp"),
             AttackSpec("grad:features.9", "logistic"), AttackSpec("error", "svm")]
    seen = []
    res = run_attacks(ft, specs, repeats=3, seed=2, progress=lambda d, t, n: seen.append((d, t, n)))
    assert seen == [(i + 1, 5, s.name) for i, s in enumerate(specs)]
    json.dumps({"a": res.attacks, "e": res.exposure}, allow_nan=False)
    by = {a["name"]: a for a in res.attacks}
    assert [a["name"] for a in res.attacks] == [s.name for s in specs]
    for a in res.attacks:
        assert set(a) == ATTACK_KEYS
    ok = by["error/threshold"]
    assert ok["status"] == "ok" and ok["error"] is None and ok["threat_model"] == "black-box"
    assert (ok["n_features"], ok["n_train"], ok["n_test"], ok["repeats"]) == (1, 90, 90, 3)
    assert ok["metrics"]["auc"]["ci_low"] > 0.6  # members have much smaller errors
    assert len(ok["metrics"]["accuracy"]["values"]) == 3
    assert set(ok["by_attribute"]) == {"sex", "site"}
    assert sum(b["n"] for b in ok["by_age_bin"]) == 3 * 90
    assert by["grad-norm/logistic"]["metrics"]["auc"]["mean"] > 0.65
    assert by["prediction+label+grad:output/mlp"]["n_features"] == 2 + 8
    assert by["prediction+label+grad:output/mlp"]["threat_model"] == "white-box"
    for name, pattern in [("grad:features.9/logistic", "available"), ("error/svm", "svm")]:
        bad = by[name]
        assert bad["status"] == "error" and pattern in bad["error"]
        assert bad["metrics"] == {} and bad["roc"] is None
        assert name not in res.exposure
    scans = res.exposure["error/threshold"]
    assert len(scans) == 190 and sum(s["n_tested"] for s in scans) == 3 * 90
    tested = [s for s in scans if s["n_tested"]]
    assert all(0 <= s["score"] <= 1 for s in tested)
    assert np.mean([s["score"] for s in tested if s["member"]]) > np.mean(
        [s["score"] for s in tested if not s["member"]])


def test_run_attacks_null_table_ci_contains_chance():
    covered = 0
    for seed in range(4):
        ft = make_table(150, 150, leak=0.0, seed=seed)
        res = run_attacks(ft, [AttackSpec("error", "threshold"), AttackSpec("grad-norm", "logistic")],
                          repeats=3, seed=seed)
        for a in res.attacks:
            auc = a["metrics"]["auc"]
            covered += auc["ci_low"] <= 0.5 <= auc["ci_high"]
    assert covered >= 7


def test_white_box_sets_on_black_box_table_are_errors_not_drops():
    ft = make_table(30, 30, white_box=False)
    res = run_attacks(ft, [AttackSpec("grad-norm", "logistic"), AttackSpec("error", "logistic")],
                      repeats=2)
    assert [a["status"] for a in res.attacks] == ["error", "ok"]
    assert "predictions only" in res.attacks[0]["error"]


def test_run_attacks_cancel_and_bad_sizes():
    ft = make_table(20, 20)
    calls = iter([False, True])
    with pytest.raises(AttackCancelled, match="after 1 of 2"):
        run_attacks(ft, [AttackSpec("error", "threshold")] * 2, repeats=1,
                    should_stop=lambda: next(calls))
    with pytest.raises(InputError, match="train_size"):
        run_attacks(ft, [AttackSpec("error", "threshold")], train_size=50)


def test_logistic_uses_error_magnitude():
    # members fitted well, non-members poorly, both unbiased: only |error| separates them
    ft = make_table(200, 200, leak=2.0, seed=3, white_box=False)
    res = run_attacks(ft, [AttackSpec("error", "logistic"), AttackSpec("prediction+label", "logistic")],
                      repeats=2)
    for a in res.attacks:
        assert a["metrics"]["auc"]["mean"] > 0.8, a["name"]
