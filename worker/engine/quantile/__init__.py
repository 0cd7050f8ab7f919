"""Quantile-regression membership inference (QMIA) for regression models (issue 11, item 3).

Bertran et al., "Scalable Membership Inference Attacks via Quantile Regression" (NeurIPS 2023);
reference code amazon-science/quantile-mia and AI-SDC/SACRO-ML ``sacroml/attacks/qmia_attack.py``.
No reference models: a regressor fitted on non-members predicts each scan's own threshold.

Submodules:
    core: :func:`qmia` (cross-fitted, split-conformal quantile and Gaussian variants).
    calibration: the calibration check (observed FPR vs alpha, Clopper-Pearson interval).
    attacks: the report's ``qmia`` and ``qmia:grad-norm`` entries (:func:`run_qmia_attacks`).
"""

from .calibration import calibration_table, clopper_pearson
from .core import DEFAULT_ALPHAS, QmiaResult, conformal_quantile, qmia
from .attacks import QMIA_ATTACKS, attacker_features, qmia_entry, run_qmia_attacks

__all__ = [
    "DEFAULT_ALPHAS", "QMIA_ATTACKS", "QmiaResult", "attacker_features", "calibration_table", "clopper_pearson",
    "conformal_quantile", "qmia", "qmia_entry", "run_qmia_attacks",
]
