"""Feature sets that span rounds: each scan's loss or gradient norm under every round's model.

A federated learner holds the community model of every round, so it can follow how each
scan's loss evolves: a member's loss falls as the federation trains on it, an unseen
scan's only as far as the model generalises. A trajectory set maps the per-round feature
tables (same scans, same order, one table per round used) to one feature per round.

Registered sets (Opacus-style decorator, :func:`register_trajectory_set`):

========================== ============ ==============================================
name                       threat model per round
========================== ============ ==============================================
``loss-trajectory``        black-box    ``log(1 + (prediction - age)^2)``
``error-trajectory``       black-box    ``prediction - age`` (signed)
``grad-norm-trajectory``   white-box    log of the total per-sample gradient norm
========================== ============ ==============================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..attacks import attack_score
from ..errors import InputError
from ..features.table import FeatureTable

__all__ = [
    "TRAJECTORY_SETS",
    "TrajectorySet",
    "get_trajectory_set",
    "is_trajectory_set",
    "register_trajectory_set",
    "trajectory_matrix",
]

TrajectoryFn = Callable[[Sequence[FeatureTable]], np.ndarray]
_LOG_FLOOR = 1e-30


@dataclass(frozen=True)
class TrajectorySet:
    """A registered trajectory feature set.

    Attributes:
        name: registry name (ends in ``-trajectory``).
        threat_model: ``black-box`` or ``white-box``.
        fn: per-round tables -> ``(n_scans, n_rounds)`` matrix.
    """

    name: str
    threat_model: str
    fn: TrajectoryFn

    @property
    def white_box(self) -> bool:
        """Whether the set needs gradient features."""
        return self.threat_model == "white-box"


TRAJECTORY_SETS: dict[str, TrajectorySet] = {}


def register_trajectory_set(name: str, *, threat_model: str) -> Callable[[TrajectoryFn], TrajectoryFn]:
    """Register a trajectory feature set under ``name``."""
    if threat_model not in ("black-box", "white-box"):
        raise ValueError(f"threat_model must be 'black-box' or 'white-box', got {threat_model!r}")

    def decorator(fn: TrajectoryFn) -> TrajectoryFn:
        TRAJECTORY_SETS[name] = TrajectorySet(name=name, threat_model=threat_model, fn=fn)
        return fn

    return decorator


def is_trajectory_set(name: str) -> bool:
    """Whether ``name`` is a registered trajectory set."""
    return name in TRAJECTORY_SETS


def get_trajectory_set(name: str) -> TrajectorySet:
    """The registered set of that name.

    Raises:
        InputError: unknown name.
    """
    try:
        return TRAJECTORY_SETS[name]
    except KeyError:
        raise InputError(
            f"unknown trajectory feature set '{name}' (known: {', '.join(sorted(TRAJECTORY_SETS))})"
        ) from None


def trajectory_matrix(tables: Sequence[FeatureTable], name: str) -> np.ndarray:
    """The ``(n_scans, n_rounds)`` matrix of a trajectory set over per-round tables.

    Raises:
        InputError: unknown set, no tables, tables of different scans, missing features.
    """
    spec = get_trajectory_set(name)
    if not tables:
        raise InputError(f"feature set '{name}' needs the feature tables of at least one round")
    ids = tables[0].table["scan_id"].tolist()
    for ft in tables[1:]:
        if ft.table["scan_id"].tolist() != ids:
            raise InputError(f"feature set '{name}': the rounds' feature tables list different scans")
    X = np.asarray(spec.fn(tables), dtype=np.float64)
    if X.shape != (len(ids), len(tables)):
        raise InputError(f"feature set '{name}' returned shape {X.shape}, expected {(len(ids), len(tables))}")
    if not np.isfinite(X).all():
        raise InputError(f"feature set '{name}': missing or non-finite values")
    return X


def _errors(tables: Sequence[FeatureTable]) -> np.ndarray:
    return np.stack([ft.table["error"].to_numpy(dtype=np.float64) for ft in tables], axis=1)


@register_trajectory_set("loss-trajectory", threat_model="black-box")
def loss_trajectory(tables: Sequence[FeatureTable]) -> np.ndarray:
    """``log(1 + loss)`` per round, loss = squared error in years^2 (the log tames its tail)."""
    return np.log1p(_errors(tables) ** 2)


@register_trajectory_set("error-trajectory", threat_model="black-box")
def error_trajectory(tables: Sequence[FeatureTable]) -> np.ndarray:
    """The signed error (prediction - age) per round."""
    return _errors(tables)


@register_trajectory_set("grad-norm-trajectory", threat_model="white-box")
def grad_norm_trajectory(tables: Sequence[FeatureTable]) -> np.ndarray:
    """Log of the total per-sample gradient norm (all layers) per round."""
    cols = [attack_score(ft, "grad-norm") for ft in tables]
    return np.log(np.maximum(np.stack(cols, axis=1), _LOG_FLOOR))
