"""A realistic sample report dict and per-scan feature table, for the frontend tests.

The numbers follow Gupta et al. (MIDL 2021, 3D-CNN column): an overfitted brain-age model whose
training scans have small errors and small gradients. The report and the table are consistent
(same scan IDs, utility computed from the table, exposure scores from the errors). The verdict
is the engine's (:func:`worker.engine.verdict.evaluate` under the default policy), and every
report made here is validated by the engine's typed model of report.json
(:class:`worker.engine.report_model.Report`), so the dashboard tests cannot drift from what the
engine writes.

    report, features = make_sample(400)                     # white-box, one errored attack
    report, features = make_sample(400, white_box=False)    # black-box only
    report, features = make_sample(400, malicious=True)     # hostile IDs / values / paths
    report, features = make_sample(400, calibrated=False)   # the paper's classifier attacks only

By default the report also holds reference-model attacks (K = 4) and a quantile attack (``qmia``,
with its calibration check), scored on every scan by the engine's functions
(:mod:`tests.frontend.sample_calibrated`), and the reference models' provenance.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd
from scipy.stats import norm

from worker.engine.feature_names import DEFAULT_FEATURE_SETS, threat_model
from worker.engine.report_model import Report
from worker.engine.verdict import Policy, evaluate

from .sample_calibrated import calibrated_entries, references_provenance

FEATURE_SETS = DEFAULT_FEATURE_SETS
BLACK_BOX_SETS = tuple(fs for fs in FEATURE_SETS if threat_model(fs) == "black-box")
CLASSIFIERS = ("threshold", "logistic", "mlp", "gbt")
#: The univariate "threshold" attack only runs on feature sets with a natural score.
UNIVARIATE = {"threshold": ("error",)}
LAYERS = (
    "encoder.0.conv",
    "encoder.1.conv",
    "encoder.2.conv",
    "encoder.3.conv",
    "encoder.4.conv",
    "head.conv6",
    "head.output",
)
#: Paper accuracies (3D-CNN) per feature set.
BASE_ACCURACY = {
    "activation": 0.5663,
    "error": 0.5990,
    "prediction+label": 0.7645,
    "grad-norm": 0.7260,
    "grad:first_conv": 0.7101,
    "grad:last_conv": 0.7696,
    "grad:output": 0.7665,
    "prediction+label+grad:last_conv+grad:output": 0.7805,
}
N_FEATURES = {
    "activation": 64,
    "error": 1,
    "prediction+label": 2,
    "grad-norm": len(LAYERS),
    "grad:first_conv": 896,
    "grad:last_conv": 16448,
    "grad:output": 65,
    "prediction+label+grad:last_conv+grad:output": 16515,
}
CLASSIFIER_OFFSET = {"threshold": -0.004, "logistic": -0.025, "mlp": 0.0, "gbt": -0.012}
ERRORED = ("activation", "gbt")
ERROR_MESSAGE = (
    "ValueError: gbt could not be fitted on 'activation': Input X contains NaN "
    "(3 scans produced non-finite activations)"
)
MALICIOUS_ID = "<script>alert(1)</script>"
MALICIOUS_SITE = "<img src=x onerror=alert(2)>"
AGE_BINS = ((45, 55), (55, 65), (65, 75), (75, 85))


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_features(
    n_scans: int = 400, *, seed: int = 0, white_box: bool = True, malicious: bool = False
) -> pd.DataFrame:
    """The per-scan feature table: scan_id, member, age, prediction, error, grad_norm:*, sex, site."""
    rng = np.random.default_rng(seed)
    n_members = n_scans // 2
    member = np.r_[np.ones(n_members, int), np.zeros(n_scans - n_members, int)]
    width = max(4, len(str(n_scans)))
    scan_id = [f"sub-{i + 1:0{width}d}" for i in range(n_scans)]
    age = rng.uniform(45, 82, n_scans).round(1)
    error = np.where(member == 1, rng.normal(0.0, 1.5, n_scans), rng.normal(0.4, 6.5, n_scans))
    prediction = age + error
    data: dict[str, object] = {
        "scan_id": scan_id,
        "member": member,
        "age": age,
        "prediction": prediction.round(3),
        "error": (prediction - age).round(3),
    }
    if white_box:
        for k, layer in enumerate(LAYERS):
            mu = -1.2 + 0.35 * k
            shift = np.where(member == 1, -0.25 - 0.04 * k, 0.0)
            noise = rng.normal(0, np.where(member == 1, 0.3, 0.4))
            data[f"grad_norm:{layer}"] = 10 ** (mu + shift + 0.45 * np.log10(np.abs(error) + 0.2) + noise)
    data["sex"] = rng.choice(["F", "M"], n_scans)
    data["site"] = rng.choice(["site-A", "site-B", "site-C"], n_scans, p=[0.5, 0.3, 0.2])
    df = pd.DataFrame(data)
    if malicious:
        # The best-predicted member gets a hostile ID (it will top the exposure list).
        best = int(np.argmin(np.where(member == 1, np.abs(error), np.inf)))
        df.loc[best, "scan_id"] = MALICIOUS_ID
        df.loc[df.index[:5], "site"] = MALICIOUS_SITE
    return df


def _metric(values: np.ndarray) -> dict:
    values = np.clip(values, 0.0, 1.0)
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    half = 2.776 * std / math.sqrt(values.size) if values.size > 1 else 0.0
    return {
        "mean": round(mean, 5),
        "std": round(std, 5),
        "ci_low": round(max(0.0, mean - half), 5),
        "ci_high": round(min(1.0, mean + half), 5),
        "values": [round(float(v), 5) for v in values],
    }


def _attack(
    feature_set: str,
    classifier: str,
    features: pd.DataFrame,
    rng: np.random.Generator,
    *,
    repeats: int,
    n_train: int,
    attributes: list[str],
) -> dict:
    threat = threat_model(feature_set)
    entry = {
        "name": f"{feature_set}/{classifier}",
        "feature_set": feature_set,
        "threat_model": threat,
        "classifier": classifier,
        "status": "ok",
        "error": None,
        "n_features": N_FEATURES.get(feature_set, 1),
        "n_train": n_train,
        "n_test": len(features) - n_train,
        "repeats": repeats,
        "duration_s": round(float(rng.uniform(0.2, 30.0)), 2),
    }
    if (feature_set, classifier) == ERRORED:  # as the engine records a failed attack
        entry.update(status="error", error=ERROR_MESSAGE, n_features=None, n_train=None, n_test=None,
                     repeats=None, metrics={}, roc=None, by_age_bin=[], by_attribute={})
        return entry
    acc_true = BASE_ACCURACY[feature_set] + CLASSIFIER_OFFSET[classifier]
    accs = np.clip(acc_true + rng.normal(0, 0.006, repeats), 0.5, 0.99)
    dprime = 2 * norm.ppf(accs)
    aucs = norm.cdf(dprime / math.sqrt(2))
    d_mean = 2 * norm.ppf(acc_true)
    metrics = {
        "accuracy": _metric(accs),
        "balanced_accuracy": _metric(accs + rng.normal(0, 0.001, repeats)),
        "auc": _metric(aucs),
        "tpr_at_fpr_0.001": _metric(norm.cdf(dprime + norm.ppf(0.001))),
        "tpr_at_fpr_0.01": _metric(norm.cdf(dprime + norm.ppf(0.01))),
    }
    fpr = np.unique(np.r_[0.0, np.logspace(-3, 0, 40), np.linspace(0, 1, 51)])
    tpr = np.where(fpr > 0, norm.cdf(d_mean + norm.ppf(np.clip(fpr, 1e-12, 1))), 0.0)
    n_test = entry["n_test"]
    frac = n_test / len(features)
    by_age = []
    for low, high in AGE_BINS:
        n_bin = int(((features["age"] >= low) & (features["age"] < high)).sum() * frac)
        acc = float(np.clip(acc_true + 0.012 * (low - 60) / 10 + rng.normal(0, 0.015), 0, 1))
        by_age.append({"bin": f"{low}-{high}", "low": float(low), "high": float(high),
                       "accuracy": round(acc, 4) if n_bin else None, "n": n_bin,
                       "n_members": n_bin // 2})
    by_attr = {}
    for attr in attributes:
        counts = features[attr].value_counts(sort=False)
        by_attr[attr] = [
            {"value": str(value),
             "accuracy": round(float(np.clip(acc_true + rng.normal(0, 0.02), 0, 1)), 4),
             "n": int(count * frac), "n_members": int(count * frac) // 2}
            for value, count in sorted(counts.items(), key=lambda kv: str(kv[0]))
        ]
    entry.update(
        metrics=metrics,
        roc={"fpr": [round(float(v), 6) for v in fpr], "tpr": [round(float(v), 6) for v in tpr]},
        by_age_bin=by_age,
        by_attribute=by_attr,
    )
    return entry


def make_report(
    features: pd.DataFrame,
    *,
    seed: int = 0,
    white_box: bool = True,
    errored: bool = True,
    malicious: bool = False,
    calibrated: bool = True,
) -> dict:
    """A report dict consistent with ``features`` (``calibrated``: with reference and quantile attacks)."""
    rng = np.random.default_rng(seed + 1)
    n_scans = len(features)
    member = features["member"].to_numpy()
    n_members = int(member.sum())
    feature_sets = FEATURE_SETS if white_box else BLACK_BOX_SETS
    repeats = 5
    train_size = n_scans // 4
    attributes = ["sex", "site"]
    attacks = []
    for fs in feature_sets:
        for clf in CLASSIFIERS:
            if clf in UNIVARIATE and fs not in UNIVARIATE[clf]:
                continue
            if not errored and (fs, clf) == ERRORED:
                continue
            attacks.append(
                _attack(fs, clf, features, rng, repeats=repeats, n_train=2 * train_size,
                        attributes=attributes)
            )
    if calibrated:
        attacks += calibrated_entries(features, attributes, seed=seed, white_box=white_box)
    abs_err = np.abs(features["error"].to_numpy())
    mae_m, mae_n = float(abs_err[member == 1].mean()), float(abs_err[member == 0].mean())
    utility = {
        "mae_members": round(mae_m, 4),
        "mae_nonmembers": round(mae_n, 4),
        "n_members": n_members,
        "n_nonmembers": n_scans - n_members,
        "mae_gap": round(mae_n - mae_m, 4),
    }
    verdict = evaluate(attacks, Policy(), utility=utility)

    logit = 1.3 * (2.2 - abs_err) + rng.normal(0, 0.4, n_scans)
    score = 1 / (1 + np.exp(-logit))
    exposure_scans = [
        {"scan_id": str(sid), "member": int(m), "score": round(float(s), 4),
         "n_tested": int(rng.integers(1, repeats + 1))}
        for sid, m, s in zip(features["scan_id"], member, score)
    ]
    model_path = "models/<b>evil</b>.safetensors" if malicious else (
        "models/brain_age_3d.safetensors" if white_box else "predictions/brain_age_preds.csv")
    report = {
        "schema_version": "1.0",
        "provenance": {
            "model": {
                "path": model_path,
                "sha256": _sha(f"model-{seed}-{white_box}"),
                "format": "safetensors" if white_box else "predictions",
                "architecture": "brain_age_3d" if white_box else None,
                "metadata": {"input_shape": [91, 109, 91], "voxel_size": [2, 2, 2],
                             "normalize": "zscore"},
            },
            "manifest": {
                "path": "cohort/manifest.csv",
                "sha256": _sha(f"manifest-{seed}-{n_scans}"),
                "n_scans": n_scans,
                "n_members": n_members,
                "n_nonmembers": n_scans - n_members,
            },
            "package_version": "0.1.0",
            "settings": {
                "repeats": repeats,
                "train_size": train_size,
                "feature_sets": list(feature_sets),
                "classifiers": list(CLASSIFIERS),
                "device": "cpu",
                "batch_size": 8,
                "seed": seed,
            },
            "created_at": "2026-11-22T18:00:00+00:00",
            "duration_s": 123.4,
            "host": "assess-01",
        },
        "utility": utility,
        "attacks": attacks,
        "exposure": {"attack": verdict["strongest_attack"], "scans": exposure_scans},
        "verdict": verdict,
    }
    if calibrated:
        report["provenance"]["references"] = references_provenance(n_scans, seed=seed, white_box=white_box)
        report["provenance"]["settings"]["quantile"] = True
    Report.from_dict(report, source="sample report")  # what the engine would write
    return report


def make_sample(
    n_scans: int = 400,
    *,
    seed: int = 0,
    white_box: bool = True,
    errored: bool = True,
    malicious: bool = False,
    calibrated: bool = True,
) -> tuple[dict, pd.DataFrame]:
    """A consistent (report, features) pair."""
    features = make_features(n_scans, seed=seed, white_box=white_box, malicious=malicious)
    report = make_report(features, seed=seed, white_box=white_box, errored=errored,
                         malicious=malicious, calibrated=calibrated)
    return report, features
