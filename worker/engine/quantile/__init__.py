"""Quantile-regression membership inference (QMIA) for regression models (issue 11, item 3).

Bertran et al., "Scalable Membership Inference Attacks via Quantile Regression" (NeurIPS 2023);
reference code amazon-science/quantile-mia and AI-SDC/SACRO-ML ``sacroml/attacks/qmia_attack.py``.
No reference models: a regressor fitted on non-members predicts each scan's own threshold.

Submodules:
    core: :func:`qmia` (cross-fitted, split-conformal quantile and Gaussian variants).
    calibration: the calibration check (observed FPR vs alpha, Clopper-Pearson interval).
"""

from .calibration import calibration_table, clopper_pearson
from .core import DEFAULT_ALPHAS, QmiaResult, conformal_quantile, qmia

__all__ = ["DEFAULT_ALPHAS", "QmiaResult", "calibration_table", "clopper_pearson", "conformal_quantile", "qmia"]
