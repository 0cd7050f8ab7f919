"""The per-scan signals of the reference-model attacks: the target's and each reference model's
predictions on the same audit scans, which reference trained on which scan, and (white-box) the
per-layer gradient norms.

The attacks (:mod:`.calibrated`, :mod:`.lira`, :mod:`.rmia`) read a :class:`ReferenceSignals`
only; it holds no membership label of the target model, so nothing computed from it alone can
use the answer it is scored against. The fit signal of a regression model is the residual
``age - prediction`` (signed) or its square (the loss); there is no softmax.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import InputError

GRADNORM_FLOOR = 1e-30
"""Gradient norms below this are taken as this before the log (an exactly zero gradient)."""


def _floats(name: str, value: object, ndim: int) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"reference signals: '{name}' must be numbers") from None
    if arr.ndim != ndim:
        raise InputError(f"reference signals: '{name}' must have {ndim} dimension(s), got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(
            f"reference signals: '{name}' has {int(bad.sum())} missing or infinite value(s), first at {where}")
    arr.setflags(write=False)
    return arr


def _bools(name: str, value: object, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(value)
    if arr.shape != shape:
        raise InputError(f"reference signals: '{name}' must have shape {shape}, got {arr.shape}")
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise InputError(f"reference signals: '{name}' must be True/False (or 1/0)")
        arr = arr.astype(bool)
    arr = arr.copy()
    arr.setflags(write=False)
    return arr


def _shape(name: str, arr: np.ndarray, shape: tuple[int, ...]) -> None:
    if arr.shape != shape:
        raise InputError(f"reference signals: '{name}' must have shape {shape}, got {arr.shape}")


@dataclass(frozen=True)
class ReferenceSignals:
    """What the reference-model attacks see (N audit scans, K reference models, L layers).

    Arrays are copied, converted (float64, bool) and made read-only on construction.

    Attributes:
        age: true age of each scan, ``(N,)``.
        target_pred: the target model's prediction of each scan, ``(N,)``.
        ref_pred: each reference model's prediction of each scan, ``(K, N)``.
        keep: ``(K, N)`` bool, True where reference ``k`` trained on scan ``n`` (IN).
        target_gradnorm: white-box, the target's per-layer gradient norm of each scan's loss,
            ``(N, L)``, non-negative; None for black-box.
        ref_gradnorm: white-box, the same for each reference, ``(K, N, L)``; None for black-box.
        scored: ``(N,)`` bool, the scans that are scored (the audit scans with a member label);
            None for all. Unscored scans (an extra population) are never scored but may serve
            as RMIA comparison scans.
        comparison: ``(N,)`` bool, the scans RMIA may compare against (scans known not to have
            trained the target: its non-members and the population); None for every scan. A scan
            is never compared with itself.
    """

    age: np.ndarray
    target_pred: np.ndarray
    ref_pred: np.ndarray
    keep: np.ndarray
    target_gradnorm: np.ndarray | None = None
    ref_gradnorm: np.ndarray | None = None
    scored: np.ndarray | None = None
    comparison: np.ndarray | None = None

    def __post_init__(self) -> None:
        age = _floats("age", self.age, 1)
        n = age.shape[0]
        if n < 2:
            raise InputError(f"reference signals: 'age' needs at least 2 scans, got {n}")
        target_pred = _floats("target_pred", self.target_pred, 1)
        _shape("target_pred", target_pred, (n,))
        ref_pred = _floats("ref_pred", self.ref_pred, 2)
        k = ref_pred.shape[0]
        if k < 1:
            raise InputError("reference signals: 'ref_pred' needs at least one reference model")
        _shape("ref_pred", ref_pred, (k, n))
        keep = _bools("keep", self.keep, (k, n))
        set_ = object.__setattr__
        set_(self, "age", age)
        set_(self, "target_pred", target_pred)
        set_(self, "ref_pred", ref_pred)
        set_(self, "keep", keep)
        if (self.target_gradnorm is None) != (self.ref_gradnorm is None):
            missing = "ref_gradnorm" if self.ref_gradnorm is None else "target_gradnorm"
            raise InputError(f"reference signals: '{missing}' is missing (give both gradient norms or neither)")
        if self.target_gradnorm is not None:
            tg = _floats("target_gradnorm", self.target_gradnorm, 2)
            if tg.shape[0] != n or tg.shape[1] < 1:
                raise InputError(f"reference signals: 'target_gradnorm' must have shape ({n}, L), got {tg.shape}")
            rg = _floats("ref_gradnorm", self.ref_gradnorm, 3)
            _shape("ref_gradnorm", rg, (k, n, tg.shape[1]))
            for name, arr in (("target_gradnorm", tg), ("ref_gradnorm", rg)):
                if (arr < 0).any():
                    raise InputError(f"reference signals: '{name}' has negative gradient norms")
            set_(self, "target_gradnorm", tg)
            set_(self, "ref_gradnorm", rg)
        scored = _bools("scored", np.ones(n, bool) if self.scored is None else self.scored, (n,))
        if not scored.any():
            raise InputError("reference signals: 'scored' selects no scan")
        set_(self, "scored", scored)
        comparison = _bools("comparison", np.ones(n, bool) if self.comparison is None else self.comparison, (n,))
        set_(self, "comparison", comparison)

    # ------------------------------------------------------------------ sizes

    @property
    def n_scans(self) -> int:
        """N, the scans (scored or not)."""
        return int(self.age.shape[0])

    @property
    def n_references(self) -> int:
        """K, the reference models."""
        return int(self.ref_pred.shape[0])

    @property
    def n_layers(self) -> int:
        """L, the layers with gradient norms (0 for black-box)."""
        return 0 if self.target_gradnorm is None else int(self.target_gradnorm.shape[1])

    @property
    def white_box(self) -> bool:
        """Whether gradient norms are present."""
        return self.target_gradnorm is not None

    # ------------------------------------------------------------------ derived signals

    @property
    def target_residual(self) -> np.ndarray:
        """``age - target_pred``, ``(N,)``."""
        return self.age - self.target_pred

    @property
    def ref_residual(self) -> np.ndarray:
        """``age - ref_pred``, ``(K, N)``."""
        return self.age[None, :] - self.ref_pred

    def log_gradnorms(self) -> tuple[np.ndarray, np.ndarray]:
        """``log`` of the target's ``(N, L)`` and the references' ``(K, N, L)`` gradient norms.

        Raises:
            InputError: no gradient norms (black-box signals).
        """
        if self.target_gradnorm is None or self.ref_gradnorm is None:
            raise InputError("this attack is white-box: it needs 'target_gradnorm' and 'ref_gradnorm'")
        return (np.log(np.maximum(self.target_gradnorm, GRADNORM_FLOOR)),
                np.log(np.maximum(self.ref_gradnorm, GRADNORM_FLOOR)))

    # ------------------------------------------------------------------ a reference as the target

    def as_target(self, k: int) -> tuple["ReferenceSignals", np.ndarray]:
        """Reference ``k`` plays the target, the other K - 1 references stay references.

        Used to tune parameters and choose thresholds without the target's labels (as ML Privacy
        Meter tunes RMIA on a paired reference model). Every scan is scored and labelled by
        ``keep[k]``; the RMIA comparison scans are those reference ``k`` did not train on.

        Returns:
            The signals, and the member labels ``keep[k]`` ``(N,)`` (bool).

        Raises:
            InputError: fewer than 2 references, or ``k`` out of range.
        """
        if self.n_references < 2:
            raise InputError("a reference model can play the target only with at least 2 reference models")
        if not 0 <= k < self.n_references:
            raise InputError(f"reference model {k} does not exist (there are {self.n_references})")
        others = np.arange(self.n_references) != k
        labels = self.keep[k].copy()
        white = self.white_box
        sig = replace(
            self,
            target_pred=self.ref_pred[k],
            ref_pred=self.ref_pred[others],
            keep=self.keep[others],
            target_gradnorm=self.ref_gradnorm[k] if white else None,  # type: ignore[index]
            ref_gradnorm=self.ref_gradnorm[others] if white else None,  # type: ignore[index]
            scored=np.ones(self.n_scans, bool),
            comparison=~labels,
        )
        return sig, labels


__all__ = ["GRADNORM_FLOOR", "ReferenceSignals"]
