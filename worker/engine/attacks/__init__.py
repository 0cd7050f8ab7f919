"""Membership-inference attacks: feature sets, attack classifiers, repeated balanced splits.

Typical use::

    from worker.engine.attacks import default_attack_specs, run_attacks

    result = run_attacks(feature_table, default_attack_specs(feature_table))
    result.attacks    # report.json attack entries
    result.exposure   # per-scan membership scores per attack
"""

from . import classifiers as _classifiers  # noqa: F401  (registers threshold, logistic, gbt)
from . import mlp as _mlp  # noqa: F401  (registers mlp)
from .classifiers import GradientBoostingAttack, LogisticAttack, ThresholdAttack
from .feature_sets import (
    BLACK_BOX_COMPONENTS,
    DEFAULT_FEATURE_SETS,
    attack_score,
    available_feature_sets,
    feature_matrix,
    has_attack_score,
    is_available,
    parse_feature_set,
    threat_model,
)
from .mlp import MLPAttack
from .registry import AttackClassifier, available_attacks, get_attack, make_attack, register_attack
from .runner import (
    DEFAULT_CLASSIFIERS,
    AttackCancelled,
    AttackRunResult,
    AttackSpec,
    default_attack_specs,
    run_attacks,
)
from .splits import Split, balanced_splits, split_sizes

__all__ = [
    "BLACK_BOX_COMPONENTS", "DEFAULT_CLASSIFIERS", "DEFAULT_FEATURE_SETS",
    "AttackCancelled", "AttackClassifier", "AttackRunResult", "AttackSpec",
    "GradientBoostingAttack", "LogisticAttack", "MLPAttack", "Split", "ThresholdAttack",
    "attack_score", "available_attacks", "available_feature_sets", "balanced_splits",
    "default_attack_specs", "feature_matrix", "get_attack", "has_attack_score", "is_available",
    "make_attack", "parse_feature_set", "register_attack", "run_attacks", "split_sizes",
    "threat_model",
]
