"""The reference-model attack statistics (issue 11) against answers known by construction.

Simulation: each scan n has a difficulty, a spread s_n (log-uniform over 1..20 years) and a bias
b_n = s_n * N(0, bias) (a scan that every model mispredicts the same way). A model that did not
train on the scan (OUT) has residual age - prediction ~ N(b_n, s_n^2); one that did (IN) fits it
better, ~ N(c b_n, (c s_n)^2) with c < 1. The target is a model like the references: IN for its
members, OUT for its non-members (a null target: OUT for every scan).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import chi2, norm
from sklearn.metrics import roc_auc_score

from tests.engine.test_feature_sets import make_table
from worker.engine.attacks.runner import AttackSpec, run_attacks
from worker.engine.attacks.scored import balanced_threshold, scored_attack_entry
from worker.engine.errors import InputError, ManifestError
from worker.engine.metrics import utility
from worker.engine.reference import calibrated as C
from worker.engine.reference import rmia as R
from worker.engine.reference.keep import balanced_keep, keep_hash, read_keep_csv
from worker.engine.reference.lira import fit_side
from worker.engine.reference.signals import ReferenceSignals
from worker.engine.report import build_report, exposure_section, provenance, validate
from worker.engine.report_model import Attack
from worker.engine.verdict import evaluate

ATTACKS = ["calibrated-loss", "calibrated-loss:grad-norm", "lira-offline", "lira-offline:grad-norm",
           "lira-online", "lira-online:grad-norm", "rmia"]


@dataclass
class Sim:
    signals: ReferenceSignals
    member: np.ndarray
    residual: np.ndarray  # the target's
    s: np.ndarray
    b: np.ndarray
    c: float

    def analytic_llr(self) -> np.ndarray:
        c, b, s, r = self.c, self.b, self.s, self.residual
        return norm.logpdf(r, c * b, c * s) - norm.logpdf(r, b, s)

    def table(self):
        import pandas as pd

        n = len(self.member)
        return pd.DataFrame({"scan_id": [f"s{i}" for i in range(n)], "member": self.member.astype(int),
                             "age": self.signals.age})


def simulate(n: int, k: int, *, c: float = 0.5, bias: float = 2.0, smax: float = 20.0, seed: int = 0,
             null: bool = False, layers: int = 0) -> Sim:
    rng = np.random.default_rng(seed)
    s = np.exp(rng.uniform(0.0, np.log(smax), n))
    b = rng.normal(0.0, bias, n) * s
    keep = balanced_keep(k, n, seed + 1000)
    member = rng.permutation(np.r_[np.ones(n // 2, bool), np.zeros(n - n // 2, bool)])

    def draw(inside: np.ndarray) -> np.ndarray:
        return np.where(inside, rng.normal(c * b, c * s), rng.normal(b, s))

    age = rng.uniform(20.0, 85.0, n)
    ref_res = np.stack([draw(keep[j]) for j in range(k)])
    res = draw(np.zeros(n, bool) if null else member)
    grads = {}
    if layers:
        # per-layer gradient norm 2 |r| ||d f / d theta_l||: a per-scan, per-layer Jacobian size
        # (difficulty of its own) and model-to-model noise
        jac = rng.normal(0.0, 1.0, (n, layers))
        noise = lambda shape: rng.normal(0.0, 0.3, shape)  # noqa: E731
        grads = {
            "target_gradnorm": 2 * np.abs(res)[:, None] * np.exp(jac + noise((n, layers))),
            "ref_gradnorm": 2 * np.abs(ref_res)[:, :, None] * np.exp(jac[None] + noise((k, n, layers))),
        }
    sig = ReferenceSignals(age=age, target_pred=age - res, ref_pred=age[None, :] - ref_res, keep=keep, **grads)
    return Sim(sig, member, res, s, b, c)


def neyman_pearson_tpr(mi, si, mo, so, alpha: float) -> float:
    """TPR at FPR ``alpha`` of the optimal test between per-scan Gaussians IN N(mi, si), OUT N(mo, so)
    (si < so), each scan equally likely: reject OUT where the per-scan LLR exceeds one threshold t;
    that region is an interval of r per scan (a concave quadratic in r)."""
    A = 1 / (2 * so ** 2) - 1 / (2 * si ** 2)
    B = mi / si ** 2 - mo / so ** 2
    C0 = mo ** 2 / (2 * so ** 2) - mi ** 2 / (2 * si ** 2) + np.log(so / si)

    def rates(t: float) -> tuple[float, float]:
        D = B ** 2 - 4 * A * (C0 - t)
        ok = D > 0
        root = np.sqrt(np.where(ok, D, 0.0))
        r1, r2 = (-B + root) / (2 * A), (-B - root) / (2 * A)
        lo, hi = np.minimum(r1, r2), np.maximum(r1, r2)
        p_in = np.where(ok, norm.cdf((hi - mi) / si) - norm.cdf((lo - mi) / si), 0.0)
        p_out = np.where(ok, norm.cdf((hi - mo) / so) - norm.cdf((lo - mo) / so), 0.0)
        return float(p_in.mean()), float(p_out.mean())

    t = brentq(lambda t: rates(t)[1] - alpha, -200.0, 200.0)
    return rates(t)[0]


def entry_for(sim: Sim, name: str, *, n_boot: int = 200, seed: int = 0) -> dict:
    sig = sim.signals
    score, params = C.score_reference_attack(name, sig)
    ts, tl = C.reference_target_scores(name, sig, model=0, **params)
    attack = C.get_reference_attack(name)
    entry, _ = scored_attack_entry(
        sim.table(), name=name, feature_set=attack.feature_set, method=attack.method, family="reference",
        threat_model=attack.threat_model, score=score, threshold_score=ts, threshold_labels=tl, seed=seed,
        n_boot=n_boot, n_references=sig.n_references, n_features=max(sig.n_layers, 1) if attack.white_box else 1)
    return entry


# --------------------------------------------------------------------------- LiRA against its formula


def test_lira_online_is_the_gaussian_llr_of_the_fitted_in_and_out_models():
    sim = simulate(300, 64, seed=1)
    sig = sim.signals
    r, R_ = sig.target_residual, sig.ref_residual
    expected = np.empty(sig.n_scans)
    for n in range(sig.n_scans):
        inn, out = R_[sig.keep[:, n], n], R_[~sig.keep[:, n], n]
        assert len(inn) == len(out) == 32  # per-scan variance from 32 models a side
        expected[n] = (norm.logpdf(r[n], inn.mean(), inn.std(ddof=1))
                       - norm.logpdf(r[n], out.mean(), out.std(ddof=1)))
    got, _ = C.score_reference_attack("lira-online", sig)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("k, median_rel, rtol", [(64, 0.15, None), (1024, 0.05, 0.3)])
def test_lira_online_converges_to_the_analytic_llr(k, median_rel, rtol):
    sim = simulate(500, k, seed=2)
    got, _ = C.score_reference_attack("lira-online", sim.signals)
    ana = sim.analytic_llr()
    rel = np.abs(got - ana) / (1.0 + np.abs(ana))
    assert np.median(rel) < median_rel
    assert np.corrcoef(got, ana)[0, 1] > 0.9
    if rtol is not None:
        np.testing.assert_allclose(got, ana, rtol=rtol, atol=rtol)


def test_neyman_pearson_helper_matches_the_closed_form():
    # zero means: LLR > t  <=>  (r / s)^2 < q, the same q for every scan: TPR = F_chi2(q / c^2)
    c, alpha = 0.3, 0.01
    s = np.exp(np.random.default_rng(0).uniform(0, 3, 50))
    q = chi2.ppf(alpha, 1)
    assert neyman_pearson_tpr(0 * s, c * s, 0 * s, s, alpha) == pytest.approx(chi2.cdf(q / c ** 2, 1), abs=1e-6)


def test_lira_online_tpr_at_1pct_fpr_matches_neyman_pearson():
    sim = simulate(5000, 64, seed=3)
    entry = entry_for(sim, "lira-online", n_boot=50)
    measured = entry["metrics"]["tpr_at_fpr_0.01"]["mean"]
    optimum = neyman_pearson_tpr(sim.c * sim.b, sim.c * sim.s, sim.b, sim.s, 0.01)
    assert optimum == pytest.approx(0.116, abs=0.01)
    assert measured == pytest.approx(optimum, abs=0.035)
    ci = entry["metrics"]["tpr_at_fpr_0.01"]
    assert ci["ci_low"] <= measured <= ci["ci_high"]


def test_shared_variance_is_per_side_and_pooled_within_scans():
    # 4 models a side: below 32, each side uses its own pooled spread (IN: 1, OUT: 3), whatever the
    # scan means (which differ by 100s: a raw pooled spread would be ~100)
    rng = np.random.default_rng(0)
    n, k = 400, 8
    keep = balanced_keep(k, n, 0)
    means = rng.uniform(-300, 300, n)
    vals = np.where(keep, rng.normal(means, 1.0, (k, n)), rng.normal(means, 3.0, (k, n)))
    fin, fout = fit_side(vals, keep), fit_side(vals, ~keep)
    assert fin.shared_std[0] == pytest.approx(1.0, rel=0.05)
    assert fout.shared_std[0] == pytest.approx(3.0, rel=0.05)
    assert np.allclose(fin.std[:, 0], fin.shared_std[0]) and np.allclose(fout.std[:, 0], fout.shared_std[0])
    # 40 models a side: per-scan spread
    keep = balanced_keep(80, 50, 1)
    vals = rng.normal(0, 1, (80, 50))
    f = fit_side(vals, keep)
    own = np.array([vals[keep[:, j], j].std(ddof=1) for j in range(50)])
    np.testing.assert_allclose(f.std[:, 0], own)


def test_two_references_work_with_the_raw_spread_fallback():
    sim = simulate(400, 2, seed=4)
    for name in ("lira-online", "lira-offline", "calibrated-loss", "rmia"):
        score, _ = C.score_reference_attack(name, sim.signals)
        assert np.isfinite(score).all()
        # the one reference left is OUT exactly where the played one is IN: no threshold from it
        ts, tl = C.reference_target_scores(name, sim.signals, model=1)
        assert len(ts) == len(tl) == 0
    tuned = R.tune(sim.signals)
    assert (tuned.a, tuned.auc, tuned.model) == (R.DEFAULT_A, None, None)
    assert tuned.tau == pytest.approx(np.median(np.abs(sim.signals.ref_residual)))


# --------------------------------------------------------------------------- null target, calibration


def test_null_target_auc_intervals_contain_one_half():
    """A target that never saw its members: every attack's AUC interval holds 0.5 in most repetitions.

    The bootstrap interval's own false-alarm rate is about 6.7% (measured: 20 of 300 null targets
    for calibrated-loss, N = 400), so over 20 repetitions 2 or 3 exclusions are ordinary (P(X >= 3)
    is about 0.15 per attack) and the attacks, sharing one target per repetition, fail together.
    The bound is 4 of 20 per attack (P(X >= 5) about 0.01) and, pooled over every attack and
    repetition, at most 12%; the mean AUC over the repetitions is 0.5 within 3 standard errors.
    """
    excluded = {name: 0 for name in ATTACKS}
    aucs: dict[str, list[float]] = {name: [] for name in ATTACKS}
    for rep in range(20):
        sim = simulate(400, 16, seed=100 + rep, null=True, layers=2)
        for name in ATTACKS:
            auc = entry_for(sim, name, seed=rep)["metrics"]["auc"]
            excluded[name] += not (auc["ci_low"] <= 0.5 <= auc["ci_high"])
            aucs[name].append(auc["mean"])
    assert all(v <= 4 for v in excluded.values()), excluded
    assert sum(excluded.values()) <= 0.12 * 20 * len(ATTACKS), excluded
    for name in ATTACKS:
        assert np.mean(aucs[name]) == pytest.approx(0.5, abs=0.02), name


def test_calibrated_attacks_beat_the_uncalibrated_loss_when_difficulty_varies():
    sim = simulate(3000, 16, seed=5, layers=3)
    uncalibrated = roc_auc_score(sim.member, -sim.residual ** 2)
    aucs = {name: roc_auc_score(sim.member, C.score_reference_attack(name, sim.signals)[0]) for name in ATTACKS}
    assert uncalibrated < 0.68
    for name, auc in aucs.items():
        assert auc > uncalibrated + 0.04, (name, auc, uncalibrated)


def test_white_box_variants_see_smaller_gradient_norms_of_members():
    sim = simulate(2000, 16, seed=6, layers=3, bias=0.0)
    for name in ("calibrated-loss:grad-norm", "lira-offline:grad-norm", "lira-online:grad-norm"):
        assert roc_auc_score(sim.member, C.score_reference_attack(name, sim.signals)[0]) > 0.6


# --------------------------------------------------------------------------- RMIA


def test_rmia_tuned_beats_chance_and_tuning_uses_no_target_labels():
    sim = simulate(2000, 16, seed=7)
    sig = sim.signals
    # comparison scans: the target's non-members, as the assessment passes them
    with_labels = ReferenceSignals(age=sig.age, target_pred=sig.target_pred, ref_pred=sig.ref_pred,
                                   keep=sig.keep, comparison=~sim.member)
    tuned = R.tune(with_labels)
    score, params = C.score_reference_attack("rmia", with_labels)
    assert params == {"tau": tuned.tau, "a": tuned.a}
    assert roc_auc_score(sim.member, score) > 0.6
    assert len(tuned.grid) == len(R.TAU_FACTORS) * len(R.A_GRID)
    permuted = np.random.default_rng(0).permutation(sim.member)
    garbage = np.random.default_rng(1).normal(50, 20, sig.n_scans)
    for comparison, target_pred in ((~permuted, sig.target_pred), (~sim.member, garbage)):
        other = ReferenceSignals(age=sig.age, target_pred=target_pred, ref_pred=sig.ref_pred, keep=sig.keep,
                                 comparison=comparison)
        again = R.tune(other)
        assert (again.tau, again.a, again.auc) == (tuned.tau, tuned.a, tuned.auc)


def test_rmia_pairwise_score_counts_comparison_scans_and_never_itself():
    ll = np.array([0.0, 1.0, 2.0, 3.0, np.nan])
    comp = np.array([True, True, False, True, True])
    s = R.pairwise_scores(ll, comp, np.ones(5, bool), gamma=1.0)
    np.testing.assert_allclose(s[:4], [0 / 2, 1 / 2, 2 / 3, 2 / 2])
    assert np.isnan(s[4])
    s = R.pairwise_scores(ll, comp, np.ones(5, bool), gamma=np.exp(1.5))  # LR(x) > 4.48 LR(z)
    np.testing.assert_allclose(s[:4], [0, 0, 1 / 3, 2 / 2])


def test_population_scans_are_compared_but_not_scored():
    sim = simulate(600, 8, seed=8)
    sig = sim.signals
    scored = np.arange(600) < 500
    pop = ReferenceSignals(age=sig.age, target_pred=sig.target_pred, ref_pred=sig.ref_pred, keep=sig.keep,
                           scored=scored, comparison=~scored)
    for name in ("rmia", "lira-online", "calibrated-loss"):
        score, _ = C.score_reference_attack(name, pop)
        assert np.isfinite(score[:500]).all() and np.isnan(score[500:]).all()
    score, _ = C.score_reference_attack("rmia", pop, tau=5.0, a=0.3)
    ll = R.log_ratio(pop, 5.0, 0.3)
    np.testing.assert_allclose(score[:500], (ll[:500, None] > ll[None, 500:]).mean(axis=1))


# --------------------------------------------------------------------------- registry and inputs


def test_registry_names_and_errors():
    assert C.available_reference_attacks() == sorted(ATTACKS)
    a = C.get_reference_attack("lira-online:grad-norm")
    assert (a.white_box, a.online, a.method, a.feature_set, a.threat_model) == (
        True, True, "lira-online", "grad-norm", "white-box")
    assert C.get_reference_attack("rmia").threat_model == "black-box"
    with pytest.raises(InputError, match="unknown reference attack 'lira'.*rmia"):
        C.get_reference_attack("lira")
    sim = simulate(100, 4, seed=9)
    with pytest.raises(InputError, match="white-box"):
        C.score_reference_attack("lira-offline:grad-norm", sim.signals)


def test_signals_validation_names_the_field():
    age, pred = np.arange(4.0) + 50, np.arange(4.0) + 51
    ref = np.stack([pred, pred])
    keep = np.array([[1, 0, 1, 0], [0, 1, 0, 1]], bool)
    ok = ReferenceSignals(age=age, target_pred=pred, ref_pred=ref, keep=keep)
    assert (ok.n_scans, ok.n_references, ok.n_layers, ok.white_box) == (4, 2, 0, False)
    assert not ok.age.flags.writeable
    bad_ref = ref.copy()
    bad_ref[1, 2] = np.nan
    cases = [
        (dict(ref_pred=bad_ref), "'ref_pred' has 1 missing.*\\(1, 2\\)"),
        (dict(keep=keep[:, :3]), "'keep' must have shape \\(2, 4\\)"),
        (dict(keep=keep * 2), "'keep' must be True/False"),
        (dict(target_pred=pred[:3]), "'target_pred' must have shape"),
        (dict(target_gradnorm=np.ones((4, 2))), "'ref_gradnorm' is missing"),
        (dict(target_gradnorm=-np.ones((4, 2)), ref_gradnorm=np.ones((2, 4, 2))), "'target_gradnorm' has negative"),
        (dict(target_gradnorm=np.ones((4, 2)), ref_gradnorm=np.ones((2, 4, 3))), "'ref_gradnorm' must have shape"),
        (dict(scored=np.zeros(4, bool)), "'scored' selects no scan"),
    ]
    for change, message in cases:
        args = dict(age=age, target_pred=pred, ref_pred=ref, keep=keep) | change
        with pytest.raises(InputError, match=message):
            ReferenceSignals(**args)


def test_a_scan_no_reference_left_out_is_refused():
    sim = simulate(50, 4, seed=10)
    keep = sim.signals.keep.copy()
    keep[:, 7] = True  # every reference trained on scan 7: nothing to calibrate it against
    sig = ReferenceSignals(age=sim.signals.age, target_pred=sim.signals.target_pred,
                           ref_pred=sim.signals.ref_pred, keep=keep)
    for name in ("calibrated-loss", "lira-offline", "lira-online", "rmia"):
        with pytest.raises(InputError, match="1 scored scan.*position 7.*OUT reference"):
            C.score_reference_attack(name, sig)


# --------------------------------------------------------------------------- keep matrix and keep.csv


def test_balanced_keep():
    k, n = 8, 1001
    keep = balanced_keep(k, n, seed=3)
    assert keep.shape == (k, n) and keep.dtype == bool
    assert (keep.sum(axis=0) == k // 2).all()
    per_model = keep.sum(axis=1)
    assert np.all(np.abs(per_model - n / 2) < 5 * np.sqrt(n / 4))
    assert np.array_equal(keep, balanced_keep(k, n, seed=3))
    assert not np.array_equal(keep, balanced_keep(k, n, seed=4))
    for bad in (0, 1, 3, 7):
        with pytest.raises(InputError, match="even and at least 2"):
            balanced_keep(bad, n, seed=0)


def test_keep_hash_is_stable():
    keep = np.array([[1, 0, 1], [0, 1, 0]], bool)
    h = keep_hash(keep)
    assert h == keep_hash(keep.astype(int)) == keep_hash(keep.copy())
    assert h == "411aeb73a2fb76023f05df0828e58b3ca6d83e19bfcdb86c8efb054847d8bf2c"
    flipped = keep.copy()
    flipped[1, 2] = True
    assert len({h, keep_hash(flipped), keep_hash(keep.T), keep_hash(keep[:, :2])}) == 4


def _write(tmp_path, text: str):
    p = tmp_path / "keep.csv"
    p.write_text(text)
    return p


def test_read_keep_csv(tmp_path):
    scans, models = ["a", "b", "c", "d"], ["ref_a", "ref_b", "ref_c"]
    p = _write(tmp_path, "ref_b,scan_id,ref_a\n1,a,0\n0, b ,1\n1,d,1\n")
    keep = read_keep_csv(p, scans, models)
    np.testing.assert_array_equal(keep, [
        [0, 1, 0, 1],  # ref_a
        [1, 0, 0, 1],  # ref_b
        [0, 0, 0, 0],  # ref_c: no column, OUT everywhere
    ])  # scan c: no row, OUT for every model


@pytest.mark.parametrize("text, expected", [
    ("scan_id,ref_a\na,1\nzz,0\n", [(3, "scan_id", "not an audit scan")]),
    ("scan_id,ref_a\na,1\nb,0\na,1\n", [(4, "scan_id", "repeats line 2")]),
    ("scan_id,ref_a,ref_b\na,1,0\nb,2,yes\n", [(3, "ref_a", "'2' is not 0 or 1"), (3, "ref_b", "'yes'")]),
    ("scan_id,ref_a,ref_x\na,1,0\n", [(1, "ref_x", "names no reference model")]),
    ("id,ref_a\na,1\n", [(1, "scan_id", "no scan_id column"), (1, "id", "names no reference model")]),
    ("scan_id,ref_a\na,1\nb\n", [(3, None, "1 cells")]),
])
def test_read_keep_csv_names_the_row_and_column(tmp_path, text, expected):
    with pytest.raises(ManifestError) as info:
        read_keep_csv(_write(tmp_path, text), ["a", "b", "c"], ["ref_a", "ref_b"])
    got = [(e.line, e.column, e.reason) for e in info.value.errors]
    assert len(got) == len(expected)
    for (line, column, reason), (eline, ecolumn, ereason) in zip(got, expected):
        assert (line, column) == (eline, ecolumn) and ereason in reason
    eline, ecolumn, _ = expected[0]
    assert f"line {eline}" + (f", column '{ecolumn}'" if ecolumn else "") in str(info.value)


# --------------------------------------------------------------------------- the report entry


def test_balanced_threshold():
    score = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    labels = np.array([0, 0, 1, 0, 1, 1])
    assert balanced_threshold(score, labels) == pytest.approx(0.15 + 0.1)  # between 0.2 and 0.3
    assert balanced_threshold(np.ones(4), [0, 1, 0, 1]) == 1.0
    with pytest.raises(InputError, match="members and non-members"):
        balanced_threshold(score, np.ones(6))


def test_scored_entry_has_the_classifier_keys_and_validates_in_a_report():
    ft = make_table(150, 150, white_box=False, seed=1)
    run = run_attacks(ft, [AttackSpec("error", "threshold")], repeats=1, n_boot=20)
    classifier_entry = run.attacks[0]
    n = len(ft.table)
    rng = np.random.default_rng(0)
    score = -np.abs(ft.table["error"].to_numpy()) + rng.normal(0, 0.1, n)
    ref_score, ref_labels = rng.normal(size=200), rng.random(200) < 0.5
    entry, scans = scored_attack_entry(
        ft, name="lira-online", feature_set="error", method="lira-online", family="reference",
        threat_model="black-box", score=score, threshold_score=ref_score, threshold_labels=ref_labels,
        seed=0, n_boot=50, age_bins=None, n_references=8, duration_s=0.5)
    assert set(entry) == set(classifier_entry) | {"family", "n_references"}
    assert (entry["classifier"], entry["family"], entry["n_references"]) == ("lira-online", "reference", 8)
    assert (entry["n_train"], entry["n_test"], entry["repeats"]) == (0, n, 1)
    assert entry["by_attribute"].keys() == {"sex", "site"}
    assert entry["metrics"]["auc"]["mean"] == pytest.approx(roc_auc_score(ft.members, score))
    cut = balanced_threshold(ref_score, ref_labels)
    assert entry["metrics"]["accuracy"]["mean"] == pytest.approx(np.mean((score > cut) == (ft.members == 1)))
    assert all(0 < s["score"] < 1 and s["n_tested"] == 1 for s in scans)
    attack = Attack.model_validate(entry)
    assert attack.completed and attack.family == "reference" and attack.n_references == 8
    assert attack.model_extra == {}
    attacks = [classifier_entry, entry]
    verdict = evaluate(attacks)
    from datetime import datetime, timezone

    report = build_report(
        provenance=provenance(model={"path": None, "sha256": None, "format": "predictions", "architecture": None,
                                     "metadata": None},
                              manifest={"path": None, "sha256": None, "n_scans": n, "n_members": 150,
                                        "n_nonmembers": 150},
                              settings={}, started=datetime.now(timezone.utc), duration_s=1.0),
        utility=utility(ft), attacks=attacks,
        exposure=exposure_section(ft, {**run.exposure, "lira-online": scans}, verdict.get("strongest_attack")),
        verdict=verdict)
    typed = validate(report)
    assert typed.attacks[1].family == "reference"


def test_scored_entry_without_a_reference_threshold_uses_the_median_and_a_mask():
    sim = simulate(400, 8, seed=11)
    score, _ = C.score_reference_attack("lira-online", sim.signals)
    scored = np.arange(400) >= 100
    entry, scans = scored_attack_entry(
        sim.table(), name="lira-online", feature_set="error", method="lira-online", family="reference",
        threat_model="black-box", score=np.where(scored, score, np.nan), scored=scored, seed=0, n_boot=20)
    assert entry["n_test"] == 300 and sum(s["n_tested"] for s in scans) == 300
    pred = score[scored] > np.median(score[scored])
    assert entry["metrics"]["accuracy"]["mean"] == pytest.approx(np.mean(pred == sim.member[scored]))
    with pytest.raises(InputError, match="no finite score"):
        scored_attack_entry(sim.table(), name="x", feature_set="error", method="x", family="reference",
                            threat_model="black-box", score=np.where(scored, score, np.nan), n_boot=20)
