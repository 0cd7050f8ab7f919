"""The reference-model attack statistics and their registry.

Each attack maps :class:`~.signals.ReferenceSignals` to one member score per scan (higher = more
likely a member; NaN for scans that are not scored) and is registered by its report name::

    @register_reference_attack("calibrated-loss")
    def calibrated_loss(signals): ...

    scores, params = score_reference_attack("lira-online", signals)

Attacks (DESIGN.md names; ``:grad-norm`` = the white-box variant on each layer's log gradient norm):

- ``calibrated-loss``: difficulty calibration, Watson et al., "On the Importance of Difficulty
  Calibration in Membership Inference Attacks" (ICLR 2022); reference code
  facebookresearch/calibration_membership ``attacks/privacy_attacks.py`` (``get_calibrated_losses``:
  target loss minus reference loss). Here: mean OUT-reference squared error minus the target's.
  ``:grad-norm``: the sum over layers of (mean OUT log norm - target log norm) / the layer's OUT
  spread (pooled within scans), so layers of any scale weigh alike.
- ``lira-offline``, ``lira-online`` (+ ``:grad-norm``): :mod:`.lira`.
- ``rmia``: :mod:`.rmia` (black-box only).

Thresholds and tuning never use the target's labels: :func:`reference_target_scores` scores a
reference model playing the target (labels: its own keep row), from which the caller picks a
threshold (:func:`worker.engine.attacks.scored.balanced_threshold`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

import numpy as np

from ..errors import InputError
from . import lira, rmia as _rmia
from .signals import ReferenceSignals

AttackFn = Callable[..., np.ndarray]
F = TypeVar("F", bound=AttackFn)

GRAD_NORM_SUFFIX = ":grad-norm"


@dataclass(frozen=True)
class ReferenceAttack:
    """A registered reference-model attack.

    Attributes:
        name: report name (``lira-online``, ``lira-online:grad-norm``).
        fn: ``fn(signals, **params) -> (N,) scores``.
        white_box: whether it reads gradient norms.
        online: whether it needs IN references (else OUT only).
        tune: ``tune(signals, **given) -> params`` for parameters chosen on a reference model
            (``given``: the parameters the caller passed), or None.
    """

    name: str
    fn: AttackFn
    white_box: bool
    online: bool
    tune: Callable[..., dict] | None = None

    @property
    def method(self) -> str:
        """The name without the ``:grad-norm`` suffix."""
        return self.name.removesuffix(GRAD_NORM_SUFFIX)

    @property
    def feature_set(self) -> str:
        """The signal's feature-set name: ``grad-norm`` (white-box) or ``error``."""
        return "grad-norm" if self.white_box else "error"

    @property
    def threat_model(self) -> str:
        """``white-box`` or ``black-box``."""
        return "white-box" if self.white_box else "black-box"


REFERENCE_ATTACKS: dict[str, ReferenceAttack] = {}


def register_reference_attack(name: str, *, online: bool = False,
                              tune: Callable[..., dict] | None = None) -> Callable[[F], F]:
    """Register an attack function under ``name`` (white-box when it ends in ``:grad-norm``).

    Args:
        name: the report name.
        online: whether the attack needs IN references.
        tune: optional parameter tuning on a reference model (see :class:`ReferenceAttack`).
    """

    def deco(fn: F) -> F:
        if name in REFERENCE_ATTACKS and REFERENCE_ATTACKS[name].fn is not fn:
            raise ValueError(f"reference attack '{name}' is already registered")
        REFERENCE_ATTACKS[name] = ReferenceAttack(
            name=name, fn=fn, white_box=name.endswith(GRAD_NORM_SUFFIX), online=online, tune=tune)
        return fn

    return deco


def available_reference_attacks() -> list[str]:
    """Names of the registered reference-model attacks."""
    return sorted(REFERENCE_ATTACKS)


def get_reference_attack(name: str) -> ReferenceAttack:
    """The attack registered under ``name``.

    Raises:
        InputError: no attack of that name.
    """
    try:
        return REFERENCE_ATTACKS[name]
    except KeyError:
        raise InputError(
            f"unknown reference attack '{name}' (available: {', '.join(available_reference_attacks())})"
        ) from None


def _prepared(name: str, signals: ReferenceSignals, params: dict) -> tuple[ReferenceAttack, dict]:
    """The attack and its parameters: those given, plus those it tunes on the signals."""
    attack = get_reference_attack(name)
    if attack.white_box and not signals.white_box:
        raise InputError(f"{name} is white-box: it needs the gradient norms of the target and the references")
    used = dict(params)
    if attack.tune is not None:
        used = {**used, **attack.tune(signals, **used)}
    return attack, used


def score_reference_attack(name: str, signals: ReferenceSignals, **params: object) -> tuple[np.ndarray, dict]:
    """Run attack ``name`` on the target: scores, and the parameters used (tuned ones included).

    Returns:
        ``(N,)`` scores (NaN for unscored scans) and the parameters passed or tuned.

    Raises:
        InputError: unknown attack, white-box attack on black-box signals, a scored scan the
            references cannot calibrate, or a non-finite score.
    """
    attack, used = _prepared(name, signals, params)
    score = np.asarray(attack.fn(signals, **used), dtype=np.float64)
    if score.shape != (signals.n_scans,):
        raise RuntimeError(f"reference attack '{name}' returned shape {score.shape}, not ({signals.n_scans},)")
    bad = signals.scored & ~np.isfinite(score)
    if bad.any():
        raise InputError(f"{name}: {int(bad.sum())} scored scan(s) got no finite score "
                         f"(first: position {int(np.flatnonzero(bad)[0])})")
    return score, used


def reference_target_scores(name: str, signals: ReferenceSignals, *, model: int = 0,
                            **params: object) -> tuple[np.ndarray, np.ndarray]:
    """Scores of reference ``model`` playing the target, and its member labels, for thresholds.

    The other K - 1 references are the references; parameters that the attack tunes are tuned
    on the full signals first (:func:`score_reference_attack`'s rule) unless given. Scans the
    other references cannot calibrate (no OUT, or online no IN model) are left out.

    Returns:
        ``(scores, labels)`` over the usable scans (labels bool, True = reference ``model`` trained on it).
        Empty when the usable scans are not both members and non-members of the played target
        (K = 2: the one reference left is OUT exactly where the played target is IN); the caller
        then has no reference threshold (see
        :func:`worker.engine.attacks.scored.scored_attack_entry` for the fallback).
    """
    attack, used = _prepared(name, signals, params)
    played, labels = signals.as_target(model)
    score = np.asarray(attack.fn(played, check=False, **used), dtype=np.float64)
    ok = np.isfinite(score)
    if len(np.unique(labels[ok])) < 2:
        return np.empty(0), np.empty(0, dtype=bool)
    return score[ok], labels[ok]


# --------------------------------------------------------------------------- calibrated loss


@register_reference_attack("calibrated-loss")
def calibrated_loss(signals: ReferenceSignals, *, check: bool = True) -> np.ndarray:
    """Mean OUT-reference squared error minus the target's, per scan (Watson et al.)."""
    if check:
        lira.require_models(signals, online=False, what="calibrated-loss")
    out = ~signals.keep
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_out = np.where(out, signals.ref_residual ** 2, 0.0).sum(axis=0) / out.sum(axis=0)
    return np.where(signals.scored, mean_out - signals.target_residual ** 2, np.nan)


@register_reference_attack("calibrated-loss:grad-norm")
def calibrated_loss_gradnorm(signals: ReferenceSignals, *, check: bool = True) -> np.ndarray:
    """Sum over layers of (mean OUT log norm - target log norm) / the layer's pooled OUT spread."""
    if check:
        lira.require_models(signals, online=False, what="calibrated-loss:grad-norm")
    tg, rg = signals.log_gradnorms()
    fout = lira.fit_side(rg, ~signals.keep)
    spread = np.where(np.isfinite(fout.shared_std) & (fout.shared_std > 0), fout.shared_std, 1.0)
    s = ((fout.mean - tg) / spread[None, :]).sum(axis=1)
    return np.where(signals.scored, s, np.nan)


# --------------------------------------------------------------------------- LiRA and RMIA

register_reference_attack("lira-offline")(lira.lira_offline)
register_reference_attack("lira-online", online=True)(lira.lira_online)
register_reference_attack("lira-offline:grad-norm")(lira.lira_offline_gradnorm)
register_reference_attack("lira-online:grad-norm", online=True)(lira.lira_online_gradnorm)
register_reference_attack("rmia", tune=_rmia.rmia_params)(_rmia.rmia)


__all__ = [
    "GRAD_NORM_SUFFIX", "REFERENCE_ATTACKS", "ReferenceAttack", "available_reference_attacks",
    "calibrated_loss", "calibrated_loss_gradnorm", "get_reference_attack", "reference_target_scores",
    "register_reference_attack", "score_reference_attack",
]
