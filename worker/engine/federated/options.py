"""What a federated assessment attacks: the options and the attack specs they give."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .. import metrics as M
from ..attacks import get_attack, has_attack_score, parse_feature_set, threat_model
from ..errors import InputError
from ..features import ExtractionOptions
from ..verdict import Policy
from .trajectory import get_trajectory_set

__all__ = ["SCOPES", "FederatedAttackOptions", "FederatedAttackSpec", "attack_specs", "spaced"]

SCOPES = ("final", "trajectory", "round")
"""Attack scopes: the final round's model, features spanning rounds, one round's model."""


@dataclass(frozen=True)
class FederatedAttackSpec:
    """One federated attack.

    Attributes:
        scope: ``final``, ``trajectory`` or ``round``.
        feature_set: a centralised feature set (``error``...) or, for ``trajectory``, a
            trajectory set (``loss-trajectory``...).
        classifier: a registered attack classifier.
        round: the round (1-based) of a ``round`` attack.
    """

    scope: str
    feature_set: str
    classifier: str
    round: int | None = None

    @property
    def name(self) -> str:
        """``final/error/threshold``, ``trajectory/loss-trajectory/logistic``, ``round-003/...``."""
        scope = f"round-{self.round:03d}" if self.scope == "round" else self.scope
        return f"{scope}/{self.feature_set}/{self.classifier}"

    @property
    def threat_model(self) -> str | None:
        """``black-box`` or ``white-box`` (None for a malformed set)."""
        try:
            if self.scope == "trajectory":
                return get_trajectory_set(self.feature_set).threat_model
            return threat_model(self.feature_set)
        except InputError:
            return None


@dataclass
class FederatedAttackOptions:
    """What to attack, and how.

    Attributes:
        feature_sets: centralised feature sets attacked on the final round's model.
        trajectory_sets: feature sets spanning the rounds used.
        classifiers: attack classifiers; univariate ones (``threshold``) only where the set
            has a natural 1-D score (never for trajectory sets).
        curve: ``"<feature set>/<classifier>"`` run on each round for the per-round curve
            (default: the first final-round attack).
        rounds: 1-based rounds whose features are computed, for the curve and the
            trajectories (default: ``max_rounds`` evenly spaced rounds); the final round is
            always used.
        max_rounds: how many rounds the default ``rounds`` takes (None: every round).
        trajectory_points: how many of the rounds used (evenly spaced, always the first
            and the final one) a trajectory set spans. None: one per 10 scans of the
            smallest attacker-training set, between 2 and 8 (an attacker trains on its own
            few scans, and a long trajectory overfits them; with two points the first
            round's loss is a per-scan difficulty reference for the final one).
        repeats: draws per attacker (its unseen training and test scans).
        seed: base seed of the draws and classifiers.
        match_age: draw unseen scans nearest in age to the members of each set.
        attackers: learners that attack (default all).
        victims: learners attacked (default all).
        extraction: feature extraction (device, batch size, ``layers`` kept at the final
            round; other rounds keep only what their attacks need).
        n_boot: bootstrap draws of the confidence intervals.
        policy: verdict policy (None: the default).
    """

    feature_sets: Sequence[str] = ("error", "grad-norm")
    trajectory_sets: Sequence[str] = ("loss-trajectory", "grad-norm-trajectory")
    classifiers: Sequence[str] = ("threshold", "logistic")
    curve: str | None = None
    rounds: Sequence[int] | None = None
    max_rounds: int | None = 20
    trajectory_points: int | None = None
    repeats: int = 3
    seed: int = 0
    match_age: bool = True
    attackers: Sequence[str] | None = None
    victims: Sequence[str] | None = None
    extraction: ExtractionOptions = field(default_factory=ExtractionOptions)
    n_boot: int = M.N_BOOTSTRAP
    policy: Policy | None = None

    def rounds_used(self, n_rounds: int) -> list[int]:
        """The rounds whose features are computed, ascending; always includes the last.

        Raises:
            InputError: a round outside ``1..n_rounds``.
        """
        if n_rounds < 1:
            raise InputError("a federated assessment needs the model of at least one round")
        if self.rounds is not None:
            wanted = {int(r) for r in self.rounds}
        else:
            wanted = set(spaced(list(range(1, n_rounds + 1)), self.max_rounds))
        bad = sorted(r for r in wanted if not 1 <= r <= n_rounds)
        if bad:
            raise InputError(f"rounds {bad} are outside 1..{n_rounds} (the models given)")
        return sorted(wanted | {n_rounds})

    def trajectory_rounds(self, used: Sequence[int], n_train: int) -> list[int]:
        """The rounds a trajectory set spans, among the rounds used.

        Args:
            used: the rounds whose features are computed.
            n_train: scans in the smallest attacker-training set (both classes).
        """
        points = self.trajectory_points
        if points is None:
            points = min(max(n_train // 10, 2), 8)
        return spaced(sorted(used), points)

    def curve_attack(self) -> tuple[str, str] | None:
        """The (feature set, classifier) of the per-round curve, or None when there is none."""
        if self.curve:
            fs, sep, clf = self.curve.rpartition("/")
            if not sep or not fs or not clf:
                raise InputError(f"curve attack '{self.curve}' must be '<feature set>/<classifier>'")
            return fs, clf
        for spec in attack_specs(self, final_round=1):
            if spec.scope == "final":
                return spec.feature_set, spec.classifier
        return None

    def settings(self) -> dict[str, Any]:
        """The options as recorded in the report."""
        return {
            "feature_sets": list(self.feature_sets),
            "trajectory_sets": list(self.trajectory_sets),
            "classifiers": list(self.classifiers),
            "curve": self.curve,
            "rounds": list(self.rounds) if self.rounds is not None else None,
            "max_rounds": self.max_rounds,
            "trajectory_points": self.trajectory_points,
            "repeats": self.repeats,
            "seed": self.seed,
            "match_age": self.match_age,
            "attackers": list(self.attackers) if self.attackers else None,
            "victims": list(self.victims) if self.victims else None,
            "n_boot": self.n_boot,
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.extraction).items()},
        }


def spaced(rounds: list[int], n: int | None) -> list[int]:
    """At most ``n`` evenly spaced items of sorted ``rounds``: always the last, and the first when n > 1."""
    if n is None or len(rounds) <= n:
        return list(rounds)
    if n < 1:
        raise InputError(f"the number of rounds to use must be at least 1, got {n}")
    picks = np.unique(np.round(np.linspace(len(rounds) - 1, 0, n)).astype(int))
    return [rounds[i] for i in picks]


def attack_specs(options: FederatedAttackOptions, final_round: int) -> list[FederatedAttackSpec]:
    """The final-round and trajectory attacks of ``options``.

    Raises:
        InputError: an unknown classifier, feature set or trajectory set.
    """
    classes = {name: get_attack(name) for name in options.classifiers}
    specs = []
    for fs in dict.fromkeys(options.feature_sets):
        parse_feature_set(fs)
        for name, cls in classes.items():
            if cls.univariate and not has_attack_score(fs):
                continue
            specs.append(FederatedAttackSpec("final", fs, name, final_round))
    for fs in dict.fromkeys(options.trajectory_sets):
        get_trajectory_set(fs)
        for name, cls in classes.items():
            if not cls.univariate:
                specs.append(FederatedAttackSpec("trajectory", fs, name))
    return specs
