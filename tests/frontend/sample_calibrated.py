"""Reference-model and quantile attack entries for the sample report, made by the engine's own functions.

Each entry is what :func:`worker.engine.attacks.scored.scored_attack_entry` writes for a score on
every scan of the sample's feature table (``n_train`` 0, ``n_test`` every scan, ``repeats`` 1),
with the keys the reference runner (``parameters``) and the quantile attacks (``calibration``
from :func:`worker.engine.quantile.calibration.calibration_table`) add; the provenance block is
shaped as :mod:`worker.engine.reference.run` records it. The scores are synthetic: a member's
error is smaller than a non-member's, as in the sample's table, so every attack finds members.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from worker.engine.attacks.scored import scored_attack_entry
from worker.engine.quantile.calibration import calibration_table
from worker.engine.reference.keep import balanced_keep, keep_hash
from worker.engine.reference.recipe import Recipe, recipe_hash

N_REFERENCES = 4
#: (name, method, feature set, threat model, noise of the score): the reference attacks of the sample.
REFERENCE_ATTACKS = (
    ("lira-online", "lira-online", "error", "black-box", 1.6),
    ("lira-offline", "lira-offline", "error", "black-box", 2.0),
    ("rmia", "rmia", "error", "black-box", 1.8),
    ("lira-offline:grad-norm", "lira-offline", "grad-norm", "white-box", 2.2),
)
QUANTILE_ATTACKS = (("qmia", "error", "black-box", 2.4),)
ALPHAS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5)
RECIPE = Recipe(arch="brain_age_3d", arch_kwargs={"channels": [8, 16, 32]}, lr=0.01, weight_decay=0.0,
                epochs=30, batch_size=4, schedule="cosine")
REFERENCE_MAES = (1.42, 1.51, 1.38, 1.47)
N_BOOT = 200


def _score(features: pd.DataFrame, noise: float, seed: int) -> np.ndarray:
    """A member score: minus the log absolute error, plus noise (higher = more member-like)."""
    rng = np.random.default_rng(seed)
    error = features["error"].to_numpy(dtype=float)
    return -np.log(np.abs(error) + 0.5) + rng.normal(0.0, noise / 2.0, len(error))


def _calibration(score: np.ndarray, members: np.ndarray, seed: int) -> list[dict]:
    """The calibration check of thresholds set on half of the non-members, checked on the other half."""
    rng = np.random.default_rng(seed)
    non = np.flatnonzero(members == 0)
    fit = rng.permutation(non)[: non.size // 2]
    held = np.ones(members.size, bool)
    held[fit] = False
    flagged, attainable = [], []
    for alpha in ALPHAS:
        reach = alpha * (fit.size + 1) >= 1.0
        cut = np.quantile(score[fit], 1.0 - alpha) if reach else np.inf
        flagged.append(score[held] > cut)
        attainable.append(reach)
    return calibration_table(ALPHAS, np.array(flagged), members[held], attainable)


def calibrated_entries(features: pd.DataFrame, attributes: list[str], *, seed: int = 0,
                       white_box: bool = True) -> list[dict]:
    """Reference-model entries (K = 4) and one quantile entry (``qmia``) on every scan of ``features``
    (``white_box`` False: the black-box attacks only)."""
    members = features["member"].to_numpy(dtype=int)
    entries = []
    for k, (name, method, fs, threat, noise) in enumerate(REFERENCE_ATTACKS):
        if threat == "white-box" and not white_box:
            continue
        score = _score(features, noise, seed + 10 + k)
        entry, _ = scored_attack_entry(
            features, name=name, feature_set=fs, method=method, family="reference", threat_model=threat,
            score=score, seed=seed, n_boot=N_BOOT, n_references=N_REFERENCES, attributes=attributes,
            n_features=7 if threat == "white-box" else 1, duration_s=0.05,
        )
        entry["parameters"] = {"tau": 2.41, "a": 0.3} if method == "rmia" else {}
        entries.append(entry)
    for k, (name, fs, threat, noise) in enumerate(QUANTILE_ATTACKS):
        score = _score(features, noise, seed + 20 + k)
        entry, _ = scored_attack_entry(
            features, name=name, feature_set=fs, method="qmia", family="quantile", threat_model=threat,
            score=score, threshold=float(np.median(score[members == 0])), seed=seed, n_boot=N_BOOT,
            attributes=attributes, n_features=3, duration_s=0.8,
        )
        entry["calibration"] = _calibration(score, members, seed + 30 + k)
        entries.append(entry)
    return entries


def references_provenance(n_scans: int, *, seed: int = 0, white_box: bool = True) -> dict:
    """``provenance.references`` of K = 4 references trained from the sample's recipe, one reused."""
    return {
        "source": "trained",
        "n_models": N_REFERENCES,
        "recipe": RECIPE.to_dict(),
        "models": None,
        "attacks": None,
        "seed": seed,
        "keep_hash": keep_hash(balanced_keep(N_REFERENCES, n_scans, seed)),
        "set_key": "0" * 64,
        "recipe_hash": recipe_hash(RECIPE),
        "reused": 1,
        "train_mae": list(REFERENCE_MAES),
        "layers": ["encoder.0.conv", "head.output"] if white_box else None,
    }
