"""Registry of membership-inference attack classifiers.

Attack classifiers register under a short name (Opacus style)::

    @register_attack("logistic")
    class LogisticAttack(AttackClassifier):
        ...

and are built by name with :func:`make_attack`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, TypeVar

import numpy as np

from ..errors import InputError


class AttackClassifier(ABC):
    """A binary classifier that tells members (label 1, positive) from non-members (0).

    Subclasses implement :meth:`fit` and :meth:`score`. Any preprocessing (standardisation)
    is fitted inside :meth:`fit`, on the attacker's training split only.

    Attributes:
        univariate: True when the classifier takes one 1-D score per scan (the runner then
            feeds it :func:`~worker.engine.attacks.feature_sets.attack_score`).
    """

    univariate: bool = False

    @abstractmethod
    def fit(self, X: np.ndarray, y: np.ndarray, seed: int = 0) -> "AttackClassifier":
        """Fit on the attacker's training split (X: (n, d), y: 1 member / 0 non-member)."""

    @abstractmethod
    def score(self, X: np.ndarray) -> np.ndarray:
        """Membership score in [0, 1] per row; higher means more likely a member."""

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Hard membership predictions (1 = member): score >= 0.5."""
        return (self.score(X) >= 0.5).astype(int)


A = TypeVar("A", bound=type[AttackClassifier])

_ATTACKS: dict[str, type[AttackClassifier]] = {}


def register_attack(name: str) -> Callable[[A], A]:
    """Class decorator that registers an :class:`AttackClassifier` under ``name``."""

    def deco(cls: A) -> A:
        if name in _ATTACKS and _ATTACKS[name] is not cls:
            raise ValueError(f"attack classifier '{name}' is already registered")
        _ATTACKS[name] = cls
        cls.name = name  # type: ignore[attr-defined]
        return cls

    return deco


def available_attacks() -> list[str]:
    """Names of the registered attack classifiers."""
    return sorted(_ATTACKS)


def get_attack(name: str) -> type[AttackClassifier]:
    """The class registered under ``name``.

    Raises:
        InputError: no classifier of that name.
    """
    try:
        return _ATTACKS[name]
    except KeyError:
        raise InputError(
            f"unknown attack classifier '{name}' (available: {', '.join(available_attacks())})"
        ) from None


def make_attack(name: str, **kwargs: object) -> AttackClassifier:
    """A new, unfitted instance of the classifier registered under ``name``."""
    return get_attack(name)(**kwargs)
