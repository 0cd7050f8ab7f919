"""A realistic sample report dict and per-scan feature table, for the frontend tests.

The numbers follow Gupta et al. (MIDL 2021, 3D-CNN column): an overfitted brain-age model whose
training scans have small errors and small gradients. The report and the table are consistent
(same scan IDs, utility computed from the table, exposure scores from the errors).

    report, features = make_sample(400)                     # white-box, one errored attack
    report, features = make_sample(400, white_box=False)    # black-box only
    report, features = make_sample(400, malicious=True)     # hostile IDs / values / paths
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd
from scipy.stats import norm

from worker.engine.attacks.feature_sets import DEFAULT_FEATURE_SETS

FEATURE_SETS = DEFAULT_FEATURE_SETS
BLACK_BOX_SETS = ("error", "prediction+label")
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
    threat = "black-box" if feature_set in BLACK_BOX_SETS else "white-box"
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
    if (feature_set, classifier) == ERRORED:
        entry.update(status="error", error=ERROR_MESSAGE, metrics={}, roc=None, by_age_bin=[],
                     by_attribute={})
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
        by_age.append({"bin": f"{low}-{high}", "low": low, "high": high,
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
) -> dict:
    """A report dict consistent with ``features``."""
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
    ok = [a for a in attacks if a["status"] == "ok"]
    strongest = max(ok, key=lambda a: a["metrics"]["auc"]["mean"])
    best_bb = max((a for a in ok if a["threat_model"] == "black-box"),
                  key=lambda a: a["metrics"]["auc"]["mean"])
    abs_err = np.abs(features["error"].to_numpy())
    mae_m, mae_n = float(abs_err[member == 1].mean()), float(abs_err[member == 0].mean())

    logit = 1.3 * (2.2 - abs_err) + rng.normal(0, 0.4, n_scans)
    score = 1 / (1 + np.exp(-logit))
    exposure_scans = [
        {"scan_id": str(sid), "member": int(m), "score": round(float(s), 4),
         "n_tested": int(rng.integers(1, repeats + 1))}
        for sid, m, s in zip(features["scan_id"], member, score)
    ]

    policy = {"max_auc": 0.6, "max_accuracy": 0.6, "max_tpr_at_fpr_0.01": 0.05, "max_mae_gap": 2.0}
    auc = strongest["metrics"]["auc"]["mean"]
    level = "high" if auc >= 0.75 else "medium" if auc >= policy["max_auc"] else "low"
    tpr01 = strongest["metrics"]["tpr_at_fpr_0.01"]["mean"]
    findings = [
        {
            "severity": "high",
            "attack": strongest["name"],
            "metric": "auc",
            "value": auc,
            "threshold": policy["max_auc"],
            "message": f"The strongest attack ({strongest['name']}) tells training scans from "
                       f"unseen scans with AUC {auc:.2f}, above the policy limit of "
                       f"{policy['max_auc']:.2f}.",
            "recommendation": "Do not share the model weights as they are. Retrain with stronger "
                              "regularisation (weight decay, early stopping, augmentation) or with "
                              "differentially private training (DP-SGD), then assess again.",
        },
        {
            "severity": "high" if best_bb["metrics"]["auc"]["mean"] >= 0.75 else "medium",
            "attack": best_bb["name"],
            "metric": "auc",
            "value": best_bb["metrics"]["auc"]["mean"],
            "threshold": policy["max_auc"],
            "message": "Even an attacker who only sees the model's predicted ages can infer "
                       f"membership (AUC {best_bb['metrics']['auc']['mean']:.2f}).",
            "recommendation": "Do not expose exact predictions through a public service; round "
                              "or aggregate the outputs, or serve only a retrained model.",
        },
        {
            "severity": "medium",
            "attack": strongest["name"],
            "metric": "tpr_at_fpr_0.01",
            "value": tpr01,
            "threshold": policy["max_tpr_at_fpr_0.01"],
            "message": f"With 1% false alarms the attack identifies {100 * tpr01:.0f}% of the "
                       "training scans with confidence.",
            "recommendation": "Treat the training cohort as identifiable from the model; check the "
                              "consent and data-sharing terms before release.",
        },
        {
            "severity": "info",
            "attack": None,
            "metric": None,
            "value": mae_n - mae_m,
            "threshold": policy["max_mae_gap"],
            "message": f"The model's error is {mae_m:.1f} years on its training scans and "
                       f"{mae_n:.1f} years on unseen scans: it has memorised its training data.",
            "recommendation": "Quote the unseen-scan error as the model's accuracy.",
        },
    ]
    if errored and any(a["status"] == "error" for a in attacks):
        findings.append({
            "severity": "info",
            "attack": "/".join(ERRORED),
            "metric": None,
            "value": None,
            "threshold": None,
            "message": f"The attack {'/'.join(ERRORED)} failed; its result is missing from this "
                       "assessment.",
            "recommendation": "See the error in the accuracy table; the verdict rests on the "
                              "other attacks.",
        })
    model_path = "models/<b>evil</b>.safetensors" if malicious else (
        "models/brain_age_3d.safetensors" if white_box else "predictions/brain_age_preds.csv")
    return {
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
        "utility": {
            "mae_members": round(mae_m, 4),
            "mae_nonmembers": round(mae_n, 4),
            "n_members": n_members,
            "n_nonmembers": n_scans - n_members,
            "mae_gap": round(mae_n - mae_m, 4),
        },
        "attacks": attacks,
        "exposure": {"attack": strongest["name"], "scans": exposure_scans},
        "verdict": {
            "level": level,
            "passed": level == "low",
            "strongest_attack": strongest["name"],
            "summary": f"High membership-inference risk: the strongest attack "
                       f"({strongest['name']}) identifies training scans with AUC {auc:.2f} "
                       f"(policy limit {policy['max_auc']:.2f})." if level == "high" else
                       f"Membership-inference risk is {level}: strongest attack AUC {auc:.2f}.",
            "findings": findings,
            "policy": policy,
            "incomplete": errored,
            "levels_by_threat_model": {"black-box": "high" if best_bb["metrics"]["auc"]["mean"] >= 0.75
                                       else "medium", "white-box": level} if white_box
            else {"black-box": level},
        },
    }


def make_sample(
    n_scans: int = 400,
    *,
    seed: int = 0,
    white_box: bool = True,
    errored: bool = True,
    malicious: bool = False,
) -> tuple[dict, pd.DataFrame]:
    """A consistent (report, features) pair."""
    features = make_features(n_scans, seed=seed, white_box=white_box, malicious=malicious)
    report = make_report(features, seed=seed, white_box=white_box, errored=errored,
                         malicious=malicious)
    return report, features
