"""The robust membership-inference attack (RMIA), offline, for regression models.

Zarifzadeh et al., "Low-Cost High-Power Membership Inference Attacks" (ICML 2024); reference code
privacytrustlab/ml_privacy_meter ``modules/mia/attacks/rmia.py`` (``run_rmia``,
``get_out_ref_signals``, ``tune_offline_a``).

Adapted to regression: the model's "probability of the right answer" is a Gaussian likelihood of
the residual, ``P(x | theta) = exp(-(age - f(x))^2 / (2 tau^2))`` (in (0, 1], as a softmax output
is). Offline, ``P(x)`` (the mean over models that did and did not train on ``x``) is approximated
from the OUT references only, ``P(x) = ((1 + a) mean_OUT P(x | theta_k) + (1 - a)) / 2`` (ML
Privacy Meter's a-mixing); ``LR(x) = P(x | theta_target) / P(x)``. The score of ``x`` is the share
of comparison scans ``z`` (scans known not to have trained the target; never ``x`` itself) with
``LR(x) / LR(z) > gamma``. Everything is computed in logs (no underflow for small ``tau``).

Tuning. ``tau`` (years) and ``a`` are chosen from a small grid (``tau`` = the median absolute
reference residual times 0.25 ... 4; ``a`` = 0, 0.1, ..., 1) by the AUC of RMIA against one
reference model playing the target, with its IN scans as members and its OUT scans as
non-members and comparison scans, using the other references only (as ML Privacy Meter tunes
``offline_a`` on a paired model). The target model's predictions and labels take no part. With
fewer than 4 references nothing can be tuned (see :data:`MIN_TUNING_REFERENCES`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp
from sklearn.metrics import roc_auc_score

from ..errors import InputError
from .lira import require_models
from .signals import ReferenceSignals

A_GRID: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))
"""Offline mixing coefficients tried when tuning ``a``."""

TAU_FACTORS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
"""``tau`` candidates as multiples of the median absolute reference residual."""

MIN_TUNING_REFERENCES = 4
"""Fewer references than this (K = 2): no reference can play the target with both members and
non-members the others calibrate, so ``tau`` = the median absolute reference residual and ``a`` =
:data:`DEFAULT_A` (ML Privacy Meter's default ``offline_a``), untuned."""

DEFAULT_A = 0.3


@dataclass(frozen=True)
class RmiaTuning:
    """The chosen RMIA parameters and how they were chosen.

    Attributes:
        tau: likelihood width (years).
        a: offline mixing coefficient.
        auc: AUC of the reference model playing the target with these parameters (None: untuned).
        model: index of that reference model (None: untuned, fewer than 4 references).
        grid: every ``(tau, a, auc)`` tried, in grid order.
    """

    tau: float
    a: float
    auc: float | None
    model: int | None
    grid: tuple[tuple[float, float, float], ...]


def log_ratio(signals: ReferenceSignals, tau: float, a: float) -> np.ndarray:
    """``log LR(x) = log P(x | target) - log P(x)`` per scan (NaN where no OUT reference).

    Args:
        signals: the signals.
        tau: likelihood width (years), > 0.
        a: offline mixing coefficient in [0, 1].
    """
    if not tau > 0:
        raise InputError(f"rmia: tau must be positive, got {tau}")
    if not 0.0 <= a <= 1.0:
        raise InputError(f"rmia: a must be in [0, 1], got {a}")
    log_target = -signals.target_residual ** 2 / (2.0 * tau ** 2)
    log_ref = -signals.ref_residual ** 2 / (2.0 * tau ** 2)
    out = ~signals.keep
    n_out = out.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_mean_out = logsumexp(np.where(out, log_ref, -np.inf), axis=0) - np.log(n_out)
        mixed = np.log((1.0 + a) / 2.0) + log_mean_out
        log_px = mixed if a >= 1.0 else np.logaddexp(mixed, np.log((1.0 - a) / 2.0))
    return np.where(n_out > 0, log_target - log_px, np.nan)


def pairwise_scores(log_lr: np.ndarray, comparison: np.ndarray, scored: np.ndarray,
                    gamma: float = 1.0) -> np.ndarray:
    """Share of comparison scans ``z != x`` with ``LR(x) / LR(z) > gamma``, per scored scan.

    Args:
        log_lr: ``(N,)`` log likelihood ratios (NaN: unusable, neither scored nor compared).
        comparison: ``(N,)`` bool, the scans ``z`` may come from.
        scored: ``(N,)`` bool, the scans to score.
        gamma: the ratio a scan must beat, > 0.

    Returns:
        ``(N,)`` scores in [0, 1], NaN where not scored (or no comparison scan is left).
    """
    if not gamma > 0:
        raise InputError(f"rmia: gamma must be positive, got {gamma}")
    ok = np.isfinite(log_lr)
    comp = comparison & ok
    z = np.sort(log_lr[comp])
    lg = np.log(gamma)
    out = np.full(log_lr.shape, np.nan)
    rows = np.flatnonzero(scored & ok)
    x = log_lr[rows]
    count = np.searchsorted(z, x - lg, side="left").astype(np.float64)  # z < x - log gamma
    self_in = comp[rows]
    if lg < 0:  # x beats itself when gamma < 1: take it out
        count -= self_in
    denom = z.size - self_in.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[rows] = np.where(denom > 0, count / denom, np.nan)
    return out


def tau_grid(signals: ReferenceSignals, factors: tuple[float, ...] = TAU_FACTORS) -> tuple[float, ...]:
    """``tau`` candidates: ``factors`` times the median absolute reference residual."""
    scale = float(np.median(np.abs(signals.ref_residual)))
    if not scale > 0:
        scale = 1.0
    return tuple(float(f * scale) for f in factors)


def tune(signals: ReferenceSignals, *, model: int = 0, taus: tuple[float, ...] | None = None,
         a_grid: tuple[float, ...] | None = None, gamma: float = 1.0) -> RmiaTuning:
    """Choose ``tau`` and ``a`` by the AUC of reference ``model`` playing the target.

    Only ``signals.ref_pred``, ``keep`` and ``age`` are read: the target's predictions and the
    comparison mask (which comes from the target's labels) take no part.

    Raises:
        InputError: the played target leaves no members or no non-members to evaluate (a keep
            matrix that is not balanced). With fewer than 4 references: the untuned defaults.
    """
    taus = tau_grid(signals) if taus is None else tuple(float(t) for t in taus)
    a_grid = A_GRID if a_grid is None else tuple(float(a) for a in a_grid)
    if signals.n_references < MIN_TUNING_REFERENCES:
        tau = taus[0] if len(taus) == 1 else tau_grid(signals, (1.0,))[0]
        a = a_grid[0] if len(a_grid) == 1 else DEFAULT_A
        return RmiaTuning(tau=tau, a=a, auc=None, model=None, grid=())
    played, labels = signals.as_target(model)
    grid: list[tuple[float, float, float]] = []
    best: tuple[float, float, float] | None = None
    for tau in taus:
        for a in a_grid:
            ll = log_ratio(played, tau, a)
            s = pairwise_scores(ll, played.comparison, played.scored, gamma)
            ok = np.isfinite(s)
            if len(np.unique(labels[ok])) < 2:
                raise InputError(
                    f"rmia: reference model {model} playing the target has no members or no non-members "
                    "among the scans the other references can calibrate; RMIA cannot be tuned")
            auc = float(roc_auc_score(labels[ok], s[ok]))
            grid.append((tau, a, auc))
            if best is None or auc > best[2]:
                best = (tau, a, auc)
    assert best is not None
    return RmiaTuning(tau=best[0], a=best[1], auc=best[2], model=model, grid=tuple(grid))


def rmia_params(signals: ReferenceSignals, *, tau: float | None = None, a: float | None = None,
                gamma: float = 1.0, tune_model: int = 0, **_: object) -> dict[str, float]:
    """``{"tau", "a"}``: those given, the others tuned on reference ``tune_model`` (see :func:`tune`)."""
    if tau is not None and a is not None:
        return {"tau": float(tau), "a": float(a)}
    t = tune(signals, model=tune_model, taus=None if tau is None else (tau,),
             a_grid=None if a is None else (a,), gamma=gamma)
    return {"tau": t.tau, "a": t.a}


def rmia(signals: ReferenceSignals, *, tau: float | None = None, a: float | None = None,
         gamma: float = 1.0, tune_model: int = 0, check: bool = True) -> np.ndarray:
    """Offline RMIA score per scan (share of comparison scans beaten), tuning what is not given.

    Args:
        signals: the signals.
        tau: likelihood width (years); None: tuned.
        a: offline mixing coefficient; None: tuned.
        gamma: the likelihood-ratio margin (1 in the paper's default).
        tune_model: the reference model that plays the target when tuning.
        check: refuse scored scans without an OUT reference (False: they score NaN).

    Returns:
        ``(N,)`` scores in [0, 1], NaN for unscored scans.
    """
    if check:
        require_models(signals, online=False, what="rmia")
    if tau is None or a is None:
        p = rmia_params(signals, tau=tau, a=a, gamma=gamma, tune_model=tune_model)
        tau, a = p["tau"], p["a"]
    ll = log_ratio(signals, tau, a)
    return pairwise_scores(ll, signals.comparison, signals.scored, gamma)


__all__ = ["A_GRID", "RmiaTuning", "TAU_FACTORS", "log_ratio", "pairwise_scores", "rmia", "rmia_params",
           "tau_grid", "tune"]
