"""The likelihood-ratio attack (LiRA) for regression models, offline and online, black- and white-box.

Carlini et al., "Membership Inference Attacks From First Principles" (IEEE S&P 2022); reference
code tensorflow/privacy ``research/mi_lira_2021`` (``plot.py``: ``generate_ours``,
``generate_ours_offline``). The multi-signal (per-layer) combination follows aidotse/LeakPro
``leakpro/attacks/mia_attacks/multi_signal_lira.py``: one Gaussian per signal, the per-signal log
likelihood ratios summed (the signals taken as independent).

Adapted to regression (no softmax, no logit scaling):

- online: per scan, an IN and an OUT Gaussian of the signed residual ``age - prediction`` over the
  references that did / did not train on it; score ``log N(r | IN) - log N(r | OUT)``.
- offline: per scan, an OUT Gaussian of the fit statistic ``log max(|r|, floor)``; one-sided test
  "the target fits this scan better than the OUT models do": score ``-log Phi((t - mu) / sigma)``,
  the minus log of the p-value (members have smaller statistics).
- white-box: the same on each layer's log gradient norm (members have SMALLER norms), summed over
  layers (offline: the per-layer one-sided ``-log p``, Fisher's combination).

Variance. With few references the per-scan spread is too noisy (Carlini et al. fix it below 64
models; LeakPro's ``individual_carlini`` per side below 32). Here each side (IN, OUT) of each scan
uses its own standard deviation when that side has at least ``fixed_variance_below`` (32) models
for that scan, else the side's shared standard deviation: the IN spread for IN and the OUT spread
for OUT. (TF-privacy's ``fix_variance`` branch uses the IN spread for OUT too, ``std_out =
np.std(dat_in)``; that is a bug, not copied.) The shared spread is pooled WITHIN scans (squared
deviations from each scan's own side mean over the sum of ``n - 1``), not the raw spread of all
values (TF-privacy, LeakPro), which would add the between-scan spread of the means (the scan
difficulty) to the noise. Only when no scan has two models on a side (K = 2) does the raw pooled
spread of that side stand in. Means are arithmetic means (TF-privacy takes medians).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.stats import norm

from ..errors import InputError
from .signals import ReferenceSignals

FIXED_VARIANCE_BELOW = 32
"""Fewer models than this on one side of a scan: that side uses the shared standard deviation."""

RESIDUAL_FLOOR = 1e-3
"""Floor (years) of ``|age - prediction|`` before the log of the offline fit statistic."""

_REL_STD_FLOOR = 1e-6


@dataclass(frozen=True)
class SideFit:
    """Gaussians of one side (IN or OUT) of each scan, over D signals.

    Attributes:
        mean: ``(N, D)``, NaN where the side has no model.
        std: ``(N, D)``, the standard deviation used (per-scan or shared), NaN where no model.
        count: ``(N,)`` models on this side of each scan.
        shared_std: ``(D,)`` the side's shared (pooled within-scan) standard deviation.
    """

    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray
    shared_std: np.ndarray


def fit_side(values: np.ndarray, mask: np.ndarray, *,
             fixed_variance_below: int = FIXED_VARIANCE_BELOW) -> SideFit:
    """Per-scan Gaussians of ``values`` over the models selected by ``mask``.

    Args:
        values: ``(K, N)`` or ``(K, N, D)`` signal of each model on each scan.
        mask: ``(K, N)`` bool, the models of this side for each scan.
        fixed_variance_below: below this many models on the side of a scan, the shared spread.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 2:
        v = v[:, :, None]
    m = np.asarray(mask, dtype=bool)[:, :, None]
    count = m[:, :, 0].sum(axis=0)
    n = count[:, None].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(m, v, 0.0).sum(axis=0) / n
        dev2 = np.where(m, (v - mean[None]) ** 2, 0.0).sum(axis=0)
        own = np.sqrt(dev2 / (n - 1.0))
    several = count >= 2
    if several.any():
        shared = np.sqrt(dev2[several].sum(axis=0) / (count[several] - 1).sum())
    elif m.sum() >= 2:  # one model a side (K = 2): the raw spread of the side's values
        shared = np.array([np.std(v[:, :, d][m[:, :, 0]], ddof=1) for d in range(v.shape[2])])
    else:
        shared = np.full(v.shape[2], np.nan)
    floor = np.where(np.isfinite(shared) & (shared > 0), _REL_STD_FLOOR * shared, 1e-12)
    use_own = (count >= max(int(fixed_variance_below), 2))[:, None]
    std = np.where(use_own, own, shared[None, :])
    std = np.where(np.isfinite(std), np.maximum(std, floor[None, :]), np.nan)
    std = np.where(count[:, None] > 0, std, np.nan)
    return SideFit(mean=mean, std=std, count=count, shared_std=shared)


def require_models(signals: ReferenceSignals, *, online: bool, what: str) -> None:
    """Refuse when a scored scan has no OUT reference (or, online, no IN reference).

    Raises:
        InputError: naming how many scans and the first one (by position).
    """
    n_in = signals.keep.sum(axis=0)
    n_out = signals.n_references - n_in
    need = (n_out < 1) | ((n_in < 1) if online else False)
    bad = np.flatnonzero(need & signals.scored)
    if bad.size:
        side = "an IN and an OUT" if online else "an OUT"
        raise InputError(
            f"{what}: {bad.size} scored scan(s) (first: position {int(bad[0])}) have no {side} reference "
            f"model; each scored scan needs at least one (use a balanced keep matrix, K >= 2)")


def _unscored_nan(signals: ReferenceSignals, score: np.ndarray) -> np.ndarray:
    return np.where(signals.scored, score, np.nan)


def online_llr(target: np.ndarray, values: np.ndarray, keep: np.ndarray, *,
               fixed_variance_below: int = FIXED_VARIANCE_BELOW) -> np.ndarray:
    """Summed per-signal ``log N(t | IN) - log N(t | OUT)`` per scan.

    Args:
        target: ``(N,)`` or ``(N, D)`` the target's signal.
        values: ``(K, N)`` or ``(K, N, D)`` the references' signal.
        keep: ``(K, N)`` IN mask.
    """
    t = np.asarray(target, dtype=np.float64).reshape(len(target), -1)
    fin = fit_side(values, keep, fixed_variance_below=fixed_variance_below)
    fout = fit_side(values, ~np.asarray(keep, bool), fixed_variance_below=fixed_variance_below)
    llr = norm.logpdf(t, fin.mean, fin.std) - norm.logpdf(t, fout.mean, fout.std)
    return llr.sum(axis=1)


def offline_logp(target: np.ndarray, values: np.ndarray, keep: np.ndarray, *,
                 fixed_variance_below: int = FIXED_VARIANCE_BELOW) -> np.ndarray:
    """Summed per-signal ``-log Phi((t - mu_out) / sigma_out)``: large when ``t`` is low for OUT."""
    t = np.asarray(target, dtype=np.float64).reshape(len(target), -1)
    fout = fit_side(values, ~np.asarray(keep, bool), fixed_variance_below=fixed_variance_below)
    return (-norm.logcdf((t - fout.mean) / fout.std)).sum(axis=1)


def fit_statistic(residual: np.ndarray, floor: float = RESIDUAL_FLOOR) -> np.ndarray:
    """The offline fit statistic ``log max(|r|, floor)`` (smaller = fits better)."""
    return np.log(np.maximum(np.abs(residual), floor))


def lira_online(signals: ReferenceSignals, *, fixed_variance_below: int = FIXED_VARIANCE_BELOW,
                check: bool = True) -> np.ndarray:
    """Online LiRA on the signed residual: ``log N(r | IN) - log N(r | OUT)`` per scan.

    Args:
        signals: the signals.
        fixed_variance_below: see the module docstring.
        check: refuse scored scans without IN or OUT references (False: they score NaN).

    Returns:
        ``(N,)`` member score, NaN for unscored scans.
    """
    if check:
        require_models(signals, online=True, what="lira-online")
    s = online_llr(signals.target_residual, signals.ref_residual, signals.keep,
                   fixed_variance_below=fixed_variance_below)
    return _unscored_nan(signals, s)


def lira_offline(signals: ReferenceSignals, *, floor: float = RESIDUAL_FLOOR,
                 fixed_variance_below: int = FIXED_VARIANCE_BELOW, check: bool = True) -> np.ndarray:
    """Offline LiRA: one-sided test of ``log |r|`` against the OUT Gaussian of each scan.

    Returns:
        ``(N,)`` member score ``-log p`` (p = P_OUT(statistic <= target's)), NaN for unscored scans.
    """
    if check:
        require_models(signals, online=False, what="lira-offline")
    s = offline_logp(fit_statistic(signals.target_residual, floor), fit_statistic(signals.ref_residual, floor),
                     signals.keep, fixed_variance_below=fixed_variance_below)
    return _unscored_nan(signals, s)


def _gradnorm(signals: ReferenceSignals, statistic: Callable[..., np.ndarray], *, online: bool, what: str,
              fixed_variance_below: int, check: bool) -> np.ndarray:
    if check:
        require_models(signals, online=online, what=what)
    tg, rg = signals.log_gradnorms()
    return _unscored_nan(signals, statistic(tg, rg, signals.keep, fixed_variance_below=fixed_variance_below))


def lira_online_gradnorm(signals: ReferenceSignals, *, fixed_variance_below: int = FIXED_VARIANCE_BELOW,
                         check: bool = True) -> np.ndarray:
    """Online LiRA on each layer's log gradient norm, log likelihood ratios summed over layers."""
    return _gradnorm(signals, online_llr, online=True, what="lira-online:grad-norm",
                     fixed_variance_below=fixed_variance_below, check=check)


def lira_offline_gradnorm(signals: ReferenceSignals, *, fixed_variance_below: int = FIXED_VARIANCE_BELOW,
                          check: bool = True) -> np.ndarray:
    """Offline LiRA on each layer's log gradient norm (members smaller), ``-log p`` summed over layers."""
    return _gradnorm(signals, offline_logp, online=False, what="lira-offline:grad-norm",
                     fixed_variance_below=fixed_variance_below, check=check)


__all__ = [
    "FIXED_VARIANCE_BELOW", "RESIDUAL_FLOOR", "SideFit", "fit_side", "fit_statistic", "lira_offline",
    "lira_offline_gradnorm", "lira_online", "lira_online_gradnorm", "offline_logp", "online_llr",
    "require_models",
]
