"""Attack classifiers built on scikit-learn, and the one-score threshold attack.

The PyTorch MLP (the paper's deep binary classifier) lives in :mod:`.mlp`.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from threadpoolctl import threadpool_limits

from ..errors import InputError
from .registry import AttackClassifier, register_attack


def _check_xy(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X)
    if X.ndim == 1:
        X = X[:, None]
    y = np.asarray(y).astype(int).ravel()
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}")
    if set(np.unique(y)) != {0, 1}:
        raise InputError("the attacker's training split needs both members and non-members")
    return X, y


def _magnitude_terms(W: np.ndarray) -> np.ndarray:
    """Columns ``W``, ``|W|`` and the pairwise products ``W_i * W_j`` (i < j)."""
    i, j = np.triu_indices(W.shape[1], k=1)
    return np.hstack([W, np.abs(W), W[:, i] * W[:, j]])


def _softsign01(z: np.ndarray) -> np.ndarray:
    """Strictly increasing map of the real line onto (0, 1), 0 -> 0.5, with no saturation."""
    return 0.5 * (1.0 + z / (1.0 + np.abs(z)))


@register_attack("threshold")
class ThresholdAttack(AttackClassifier):
    """Threshold on one score (squared error, gradient norm...), as in Yeom et al.

    Both the direction (members above or below) and the cut point are chosen on the
    attacker's training split to maximise its accuracy; cut points are midpoints between
    consecutive distinct training scores. The membership score is a strictly increasing
    map of ``sign * (score - cut) / scale`` onto (0, 1) (``scale`` = training standard
    deviation), so it is 0.5 at the cut and ranks scans exactly as the raw score does.

    Attributes:
        sign_: +1 when members score above the cut, -1 when below.
        cut_: the chosen cut point.
        train_accuracy_: accuracy of the rule on the training split.
    """

    univariate = True

    def fit(self, X: np.ndarray, y: np.ndarray, seed: int = 0) -> "ThresholdAttack":
        X, y = _check_xy(X, y)
        if X.shape[1] != 1:
            raise InputError(
                f"the threshold attack takes one score per scan, got {X.shape[1]} features"
            )
        s = X[:, 0].astype(np.float64)
        order = np.argsort(s, kind="mergesort")
        ss, yy = s[order], y[order]
        n = len(ss)
        # Rule "member iff s > t" with t between ss[k-1] and ss[k] (k = 0..n): correct are the
        # non-members among the first k and the members among the rest.
        cum_non = np.concatenate([[0], np.cumsum(1 - yy)])
        cum_mem = np.concatenate([[0], np.cumsum(yy)])
        correct_up = cum_non + (cum_mem[-1] - cum_mem)
        correct_down = n - correct_up  # rule "member iff s < t"
        valid = np.ones(n + 1, dtype=bool)
        valid[1:n] = ss[1:] > ss[:-1]
        up = np.where(valid, correct_up, -1)
        down = np.where(valid, correct_down, -1)
        k_up, k_down = int(np.argmax(up)), int(np.argmax(down))
        if up[k_up] >= down[k_down]:
            self.sign_, k, best = 1.0, k_up, up[k_up]
        else:
            self.sign_, k, best = -1.0, k_down, down[k_down]
        scale = float(np.std(ss))
        self.scale_ = scale if np.isfinite(scale) and scale > 0 else 1.0
        if k == 0:
            self.cut_ = float(ss[0] - self.scale_)
        elif k == n:
            self.cut_ = float(ss[-1] + self.scale_)
        else:
            self.cut_ = float((ss[k - 1] + ss[k]) / 2)
        self.train_accuracy_ = float(best) / n
        return self

    def score(self, X: np.ndarray) -> np.ndarray:
        s = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
        if s.shape[1] != 1:
            raise InputError(f"the threshold attack takes one score per scan, got {s.shape[1]}")
        return _softsign01(self.sign_ * (s[:, 0] - self.cut_) / self.scale_)


@register_attack("logistic")
class LogisticAttack(AttackClassifier):
    """L2-regularised logistic regression on standardised features (scikit-learn).

    Inputs with at most ``expand_up_to`` features are whitened (PCA) and get magnitude
    and interaction terms (absolute values and pairwise products of the components,
    standardised again): membership signal in black-box features is mostly in the error's
    magnitude, which a linear model of ``error`` or of ``prediction`` and ``label`` cannot
    use. Whitening turns the small ``prediction - label`` direction of two highly
    correlated columns into a component of its own, whose absolute value is then one
    feature (absolute values rather than squares: less dominated by a few large errors
    when the attacker trains on few scans). Wider inputs stay linear.

    Fits on one BLAS thread: the lbfgs matrix-vector products are small and memory-bound,
    and a multi-threaded BLAS on a busy host was measured 10-40x slower.

    Args:
        C: inverse regularisation strength.
        max_iter: iteration cap of the lbfgs solver.
        expand_up_to: widest input that gets the magnitude and interaction terms (0: always
            linear).
    """

    def __init__(self, C: float = 1.0, max_iter: int = 2000, expand_up_to: int = 16):
        self.C = C
        self.max_iter = max_iter
        self.expand_up_to = expand_up_to

    def fit(self, X: np.ndarray, y: np.ndarray, seed: int = 0) -> "LogisticAttack":
        X, y = _check_xy(X, y)
        steps: list = [StandardScaler()]
        if X.shape[1] <= self.expand_up_to:
            steps += [
                PCA(n_components=0.999999, whiten=True, svd_solver="full"),
                FunctionTransformer(_magnitude_terms),
                StandardScaler(),
            ]
        steps.append(LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=seed))
        self.model_: Pipeline = make_pipeline(*steps)
        with threadpool_limits(1):
            self.model_.fit(X, y)
        return self

    def score(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X).reshape(len(X), -1)
        with threadpool_limits(1):
            return self.model_.predict_proba(X)[:, 1]


@register_attack("gbt")
class GradientBoostingAttack(AttackClassifier):
    """Histogram gradient-boosted trees (scikit-learn).

    No standardisation: trees are invariant to monotone per-feature scaling. Early stopping
    on 15% of the training split when it has at least 100 scans. One OpenMP thread (see
    :class:`LogisticAttack`). Slow on very wide inputs
    (tens of thousands of gradient dimensions); prefer ``mlp`` there.

    Args:
        max_iter: maximum number of boosting iterations.
        learning_rate: shrinkage.
        max_leaf_nodes: tree size.
    """

    def __init__(self, max_iter: int = 200, learning_rate: float = 0.1, max_leaf_nodes: int = 15):
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes

    def fit(self, X: np.ndarray, y: np.ndarray, seed: int = 0) -> "GradientBoostingAttack":
        X, y = _check_xy(X, y)
        self.model_ = HistGradientBoostingClassifier(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            early_stopping=len(y) >= 100,
            validation_fraction=0.15,
            n_iter_no_change=10,
            random_state=seed,
        )
        with threadpool_limits(1):
            self.model_.fit(X, y)
        return self

    def score(self, X: np.ndarray) -> np.ndarray:
        with threadpool_limits(1):
            return self.model_.predict_proba(np.asarray(X).reshape(len(X), -1))[:, 1]
