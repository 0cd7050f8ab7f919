"""Quantile-regression membership inference (QMIA) for regression models, cross-fitted.

Bertran et al., "Scalable Membership Inference Attacks via Quantile Regression" (NeurIPS 2023);
reference code amazon-science/quantile-mia (``tabular_QMIA/qmia_ACS.py``: a Gaussian mean and
log-sigma fitted on public non-members) and AI-SDC/SACRO-ML ``sacroml/attacks/qmia_attack.py``
(a ``HistGradientBoostingRegressor(loss="quantile", quantile=1 - alpha)`` on non-member scores).

A regressor fitted on NON-MEMBERS ONLY predicts, from what the attacker knows of a scan (``X``),
the (1 - alpha) quantile of the non-member *score* (higher = fits better = more member-like);
a scan is flagged at level alpha when its score exceeds its own predicted quantile, so that a
fraction alpha of non-members is flagged at every X. No reference model is trained.

Variants:
    ``quantile``: one HistGradientBoosting pinball-loss regressor per alpha.
    ``gaussian``: the non-member score's mean mu(X) (squared error) and spread sigma(X) (a
        Poisson-loss regressor, log link, on the absolute residual: sigma = E|r| sqrt(pi/2));
        z = (score - mu) / sigma is the continuous member score (full ROC) and the threshold at
        alpha is mu + sigma t_alpha, t_alpha = Phi^-1(1 - alpha) (plain) or the conformal level.

Split-conformal thresholds (default, ``conformal=True``): out-of-sample, a regressor's tail
quantiles are too tight (its leaves hold a few dozen scans, and a fitted spread is noisy), so the
plain rule flags more than alpha of new non-members: on the heteroscedastic simulation of the
tests (1000 non-members), 2.2% (quantile) and 2.0% (Gaussian) at alpha = 1%, 6.8% (Gaussian) at
alpha = 5%; with the conformal step 1.0% and 5.0-5.1%. Each fold therefore
keeps one further fold aside to calibrate: the regressors are fitted on the remaining folds, and
each alpha's threshold is shifted by the conformal quantile of the calibration scans' exceedance
(conformalised quantile regression, Romano, Patterson and Candes, NeurIPS 2019; for the
Gaussian variant the normalised residual z, Lei et al., JASA 2018), which bounds the expected
FPR on new non-members by alpha. An alpha below 1 / (calibration scans + 1) cannot be reached
and flags nothing (``attainable`` False in the calibration check).

Cross-fitting: the non-members are split into ``folds`` (seeded, balanced); each non-member is
scored by regressors fitted on other folds only. Members are scored, by default
(``member_scoring="fold"``), by one fold's regressors, the fold drawn at random (seeded,
balanced): a member and a held-out non-member of the same fold are then scored by the same
regressor that saw neither, so when members are drawn like non-members (a model that never saw
them) the two groups' scores are exchangeable and the null AUC is exactly 0.5 in expectation.
``member_scoring="average"`` averages the fold regressors' thresholds instead (smoother member
thresholds, slightly less dispersed member scores under the null). No scan's score ever comes
from a regressor that was fitted on it.

Pitfall avoided: LeakPro's quantile attack casts a continuous target to an integer; scores here
stay float64 throughout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from scipy.stats import norm
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from ..errors import InputError
from .calibration import calibration_table

DEFAULT_ALPHAS: tuple[float, ...] = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5)
"""The alpha grid of the calibration check (target false-positive rates)."""

Variant = Literal["quantile", "gaussian"]
MemberScoring = Literal["fold", "average"]

HGB_PARAMS: dict = {
    "max_iter": 100,
    "learning_rate": 0.05,
    "max_depth": 3,
    "min_samples_leaf": 20,
    "l2_regularization": 1.0,
    "early_stopping": False,
}
"""Settings of every regressor: small, regularised trees; early stopping off (determinism)."""

_SIGMA_FLOOR = 1e-6  # in units of the fit set's standard deviation
_HALF_NORMAL = math.sqrt(math.pi / 2.0)  # sigma = E|r| * sqrt(pi / 2) for r ~ N(0, sigma^2)


@dataclass
class QmiaResult:
    """The cross-fitted outcome of :func:`qmia`, one value per scan in input order.

    Attributes:
        variant: ``quantile`` or ``gaussian``.
        alphas: the alpha grid.
        score: the input score (higher = more member-like).
        members: the membership labels (1 member).
        thresholds: (n_alphas, n_scans) each scan's predicted non-member (1 - alpha) quantile
            (+inf where the level cannot be reached).
        flagged: (n_alphas, n_scans) ``score > threshold``.
        calibration: :func:`~.calibration.calibration_table` of the flags, one row per alpha.
        folds: per scan, the fold whose regressors scored it (-1: a member scored by the
            average of all folds).
        mu: per-scan predicted non-member mean (gaussian), else None.
        sigma: per-scan predicted non-member spread (gaussian), else None.
        member_scoring: ``fold`` or ``average``.
        conformal: whether the thresholds are split-conformal.
    """

    variant: str
    alphas: tuple[float, ...]
    score: np.ndarray
    members: np.ndarray
    thresholds: np.ndarray
    flagged: np.ndarray
    calibration: list[dict]
    folds: np.ndarray
    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None
    member_scoring: str = "fold"
    conformal: bool = True

    @property
    def z(self) -> np.ndarray:
        """The Gaussian variant's standardised score (score - mu) / sigma."""
        if self.mu is None or self.sigma is None:
            raise ValueError("z is defined for the gaussian variant only")
        return (self.score - self.mu) / self.sigma

    @property
    def member_score(self) -> np.ndarray:
        """The continuous member score: z (gaussian); the number of alphas flagged (quantile)."""
        if self.variant == "gaussian":
            return self.z
        return self.flagged.sum(axis=0).astype(np.float64)

    def flag(self, alpha: float) -> np.ndarray:
        """The quantile rule at ``alpha`` (one of :attr:`alphas`)."""
        hits = [i for i, a in enumerate(self.alphas) if math.isclose(a, alpha)]
        if not hits:
            raise KeyError(f"alpha {alpha} is not in the grid {list(self.alphas)}")
        return self.flagged[hits[0]]


def _hgb(seed: int, categorical: np.ndarray | None, **kw: object) -> HistGradientBoostingRegressor:
    cat = categorical if categorical is not None and categorical.any() else None
    params = {**HGB_PARAMS, **kw}
    return HistGradientBoostingRegressor(**params, categorical_features=cat, random_state=seed)


def balanced_folds(n: int, folds: int, rng: np.random.Generator) -> np.ndarray:
    """A seeded fold id in ``0..folds-1`` per item, fold sizes differing by at most one."""
    out = np.empty(n, dtype=int)
    out[rng.permutation(n)] = np.arange(n) % folds
    return out


def _check_inputs(
    features_X: np.ndarray, score: np.ndarray, members: np.ndarray, alphas: Sequence[float],
    folds: int, variant: str, member_scoring: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.asarray(features_X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    s = np.asarray(score, dtype=np.float64).ravel()
    y = np.asarray(members).ravel()
    if X.ndim != 2 or X.shape[1] == 0:
        raise InputError("qmia needs a 2-D features_X (n_scans, n_features) with at least one feature")
    if not (len(X) == len(s) == len(y)):
        raise InputError(f"qmia: features_X, score and members differ in length ({len(X)}, {len(s)}, {len(y)})")
    if not np.isfinite(s).all():
        raise InputError(f"qmia: the score has {int((~np.isfinite(s)).sum())} missing or non-finite values")
    if not np.isin(y, (0, 1)).all():
        raise InputError("qmia: members must be 1 (member) or 0 (non-member)")
    if variant not in ("quantile", "gaussian"):
        raise InputError(f"qmia: unknown variant '{variant}' (quantile, gaussian)")
    if member_scoring not in ("fold", "average"):
        raise InputError(f"qmia: unknown member_scoring '{member_scoring}' (fold, average)")
    if not alphas or not all(0.0 < float(a) < 1.0 for a in alphas):
        raise InputError(f"qmia: every alpha must lie strictly between 0 and 1, got {list(alphas)}")
    if int(folds) != folds or folds < 2:
        raise InputError(f"qmia: folds must be an integer of at least 2, got {folds}")
    n0 = int((y == 0).sum())
    if n0 < 2 * folds:
        raise InputError(
            f"qmia needs at least {2 * folds} non-members (2 x folds = {folds}) to fit its "
            f"cross-fitted regressors on the attacker's public data; got {n0}"
        )
    return X, s, y.astype(int)


def conformal_quantile(conformity: np.ndarray, alpha: float) -> float:
    """Split-conformal threshold: exceeded by a new exchangeable value with probability <= alpha.

    The ceil((1 - alpha)(n + 1))-th smallest of the n calibration values (Lei et al., JASA 2018;
    Romano et al., NeurIPS 2019), +inf when that rank exceeds n (too few values for this alpha:
    nothing is flagged).
    """
    values = np.sort(np.asarray(conformity, dtype=np.float64))
    rank = math.ceil((1.0 - alpha) * (len(values) + 1) - 1e-12)
    return float(values[rank - 1]) if 1 <= rank <= len(values) else math.inf


def _fit_fold(
    X_fit: np.ndarray, s_fit: np.ndarray, X_cal: np.ndarray | None, s_cal: np.ndarray | None,
    X_out: np.ndarray, alphas: Sequence[float], variant: str, seed: int, cat: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """One fold's regressors, fitted on (X_fit, s_fit), applied to X_out.

    The score is standardised by the fit set's mean and standard deviation first, so that the
    regressors' fixed regularisation acts alike on any score scale (squared years, log norms).
    With a calibration set (X_cal, s_cal), each alpha's threshold is shifted by the conformal
    quantile of the calibration scans' exceedance (quantile: s - q(X), conformalised quantile
    regression; gaussian: z, the normalised residual); without one, the raw regressor thresholds.

    Returns:
        thresholds (n_alphas, len(X_out)), mu and sigma (gaussian) or None, in score units.
    """
    centre = float(np.mean(s_fit))
    unit = float(np.std(s_fit))
    unit = unit if math.isfinite(unit) and unit > 0 else 1.0
    thr, mu, sigma = _fit_standardised(
        X_fit, (s_fit - centre) / unit, X_cal, None if s_cal is None else (s_cal - centre) / unit,
        X_out, alphas, variant, seed, cat,
    )
    with np.errstate(invalid="ignore"):
        thr = centre + unit * thr
    if mu is None or sigma is None:
        return thr, None, None
    return thr, centre + unit * mu, unit * sigma


def _fit_standardised(
    X_fit: np.ndarray, s_fit: np.ndarray, X_cal: np.ndarray | None, s_cal: np.ndarray | None,
    X_out: np.ndarray, alphas: Sequence[float], variant: str, seed: int, cat: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    X_all = X_out if X_cal is None else np.concatenate([X_cal, X_out])
    n_cal = 0 if X_cal is None else len(X_cal)
    if variant == "quantile":
        q = np.stack([
            _hgb(seed, cat, loss="quantile", quantile=1.0 - float(a)).fit(X_fit, s_fit).predict(X_all)
            for a in alphas
        ])
        if n_cal:
            shift = [conformal_quantile(s_cal - q[i, :n_cal], a) for i, a in enumerate(alphas)]
            q = q + np.asarray(shift)[:, None]
        return q[:, n_cal:], None, None
    mean = _hgb(seed, cat, loss="squared_error").fit(X_fit, s_fit)
    abs_res = np.abs(s_fit - mean.predict(X_fit))
    if float(abs_res.max()) <= _SIGMA_FLOOR:  # a constant score: no spread to learn
        sigma = np.full(len(X_all), _SIGMA_FLOOR)
    else:
        scale = _hgb(seed, cat, loss="poisson").fit(X_fit, abs_res)
        sigma = np.maximum(scale.predict(X_all) * _HALF_NORMAL, _SIGMA_FLOOR)
    mu = mean.predict(X_all)
    if n_cal:
        z_cal = (s_cal - mu[:n_cal]) / sigma[:n_cal]
        level = np.asarray([conformal_quantile(z_cal, a) for a in alphas])
    else:
        level = norm.ppf(1.0 - np.asarray(alphas, dtype=np.float64))
    mu, sigma = mu[n_cal:], sigma[n_cal:]
    with np.errstate(invalid="ignore"):
        thr = mu[None, :] + sigma[None, :] * level[:, None]
    return thr, mu, sigma


def qmia(
    features_X: np.ndarray,
    score: np.ndarray,
    members: np.ndarray,
    *,
    alpha_grid: Sequence[float] = DEFAULT_ALPHAS,
    seed: int = 0,
    folds: int = 5,
    variant: Variant = "quantile",
    member_scoring: MemberScoring = "fold",
    conformal: bool = True,
    categorical: Sequence[bool] | None = None,
) -> QmiaResult:
    """Cross-fitted quantile-regression membership inference (Bertran et al., NeurIPS 2023).

    Args:
        features_X: (n_scans, d) what the attacker knows of each scan, independent of the target
            model's output (e.g. the true age and manifest attributes); NaN allowed (missing).
        score: (n_scans,) the member score, higher = more member-like (e.g. -(y - f(x))^2).
        members: (n_scans,) 1 member / 0 non-member; only the non-members are fitted on.
        alpha_grid: target false-positive rates; each gives a threshold and a calibration row.
        seed: seeds the fold assignment and the regressors (deterministic).
        folds: number of cross-fitting folds of the non-members (at least 2; 3 with
            ``conformal``).
        variant: ``quantile`` (pinball-loss regressor per alpha) or ``gaussian`` (mean and
            spread; continuous score z).
        member_scoring: ``fold`` (one random fold's regressors per member) or ``average``.
        conformal: split-conformal thresholds: fold k's regressors are fitted on the folds other
            than k and k + 1 (mod folds), and fold k + 1 shifts each alpha's threshold so that at
            most a fraction alpha of exchangeable non-members exceeds it; False: the regressors
            fitted on every fold but k, thresholds as they predict them (plain QMIA).
        categorical: per column of ``features_X``, whether it holds category codes.

    Returns:
        :class:`QmiaResult`.

    Raises:
        InputError: mismatched or non-finite inputs, bad alpha / folds / variant, or fewer than
            ``2 * folds`` non-members.
    """
    X, s, y = _check_inputs(features_X, score, members, alpha_grid, folds, variant, member_scoring)
    if conformal and folds < 3:
        raise InputError(f"qmia: conformal thresholds need folds >= 3 (fit, calibrate, test), got {folds}")
    alphas = tuple(float(a) for a in alpha_grid)
    cat = None if categorical is None else np.asarray(categorical, dtype=bool)
    if cat is not None and cat.shape != (X.shape[1],):
        raise InputError(f"qmia: categorical has {cat.size} entries for {X.shape[1]} features")
    with threadpool_limits(limits=1, user_api="openmp"):  # small data: threads only add overhead
        return _qmia(X, s, y, alphas, int(seed), int(folds), variant, member_scoring, bool(conformal), cat)


def _qmia(
    X: np.ndarray, s: np.ndarray, y: np.ndarray, alphas: tuple[float, ...], seed: int, folds: int,
    variant: str, member_scoring: str, conformal: bool, cat: np.ndarray | None,
) -> QmiaResult:
    rng = np.random.default_rng(seed)
    nonmem, mem = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    fold_of = np.full(len(y), -1, dtype=int)
    fold_of[nonmem] = balanced_folds(len(nonmem), folds, rng)
    if member_scoring == "fold" and len(mem):
        fold_of[mem] = balanced_folds(len(mem), folds, rng)
    average = member_scoring == "average"
    gaussian = variant == "gaussian"
    n = len(y)
    thresholds = np.zeros((len(alphas), n))
    mu = np.zeros(n) if gaussian else None
    sigma = np.zeros(n) if gaussian else None
    nonmem_fold = fold_of[nonmem]
    reach = np.ones(len(alphas), dtype=bool)
    for k in range(folds):
        cal_fold = (k + 1) % folds if conformal else -1
        fit = nonmem[(nonmem_fold != k) & (nonmem_fold != cal_fold)]
        cal = nonmem[nonmem_fold == cal_fold] if conformal else None
        scored = nonmem[nonmem_fold == k]
        if not average:
            scored = np.concatenate([scored, mem[fold_of[mem] == k]])
        out = np.concatenate([scored, mem]) if average else scored
        if cal is not None:
            reach &= np.asarray([math.ceil((1.0 - a) * (len(cal) + 1) - 1e-12) <= len(cal) for a in alphas])
        thr, m_k, s_k = _fit_fold(
            X[fit], s[fit], None if cal is None else X[cal], None if cal is None else s[cal],
            X[out], alphas, variant, seed + k, cat,
        )
        n_sc = len(scored)
        thresholds[:, scored] = thr[:, :n_sc]
        if gaussian:
            mu[scored], sigma[scored] = m_k[:n_sc], s_k[:n_sc]
        if average and len(mem):
            thresholds[:, mem] += thr[:, n_sc:] / folds
            if gaussian:
                mu[mem] += m_k[n_sc:] / folds
                sigma[mem] += s_k[n_sc:] / folds
    flagged = s[None, :] > thresholds
    return QmiaResult(
        variant=variant, alphas=alphas, score=s, members=y, thresholds=thresholds, flagged=flagged,
        calibration=calibration_table(alphas, flagged, y, reach), folds=fold_of, mu=mu, sigma=sigma,
        member_scoring=member_scoring, conformal=conformal,
    )


__all__ = ["DEFAULT_ALPHAS", "HGB_PARAMS", "QmiaResult", "balanced_folds", "conformal_quantile", "qmia"]
