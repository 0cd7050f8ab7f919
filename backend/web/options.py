"""What the new-assessment form offers, taken from the engine's registries and defaults."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

CLASSIFIER_TEXT = {
    "threshold": "Threshold on one score (error or gradient magnitude), as in the paper",
    "logistic": "Logistic regression",
    "mlp": "Small neural network (multi-layer perceptron)",
    "gbt": "Gradient-boosted trees (slower)",
}
DEFAULT_REPEATS = 5
RECIPE_EXAMPLE = ('{"arch": "brain_age_3d", "optimizer": "adam", "lr": 0.0001, "weight_decay": 0.0001,\n'
                  ' "epochs": 30, "batch_size": 8, "augment": "none", "loss": "mse", "seed": 0}')
"""What the recipe box shows before anything is typed (DESIGN.md, Reference models)."""


def reference_form() -> dict[str, Any]:
    """The reference-model choices: how many to train (even, with its bounds) and the recipe's shape."""
    from ..services.options import ReferenceOptionsIn

    models = ReferenceOptionsIn.model_fields["models"]
    bounds = {type(m).__name__: m for m in models.metadata}
    return {
        "models": models.default,
        "min": bounds["Ge"].ge if "Ge" in bounds else 2,
        "max": bounds["Le"].le if "Le" in bounds else 256,
        "recipe_example": RECIPE_EXAMPLE,
    }


def assessment_form() -> dict[str, Any]:
    """Feature sets, classifiers, repeats and policy fields with their defaults."""
    from frontend.figures import FEATURE_SET_DESCRIPTIONS
    from worker.engine.attacks import available_attacks
    from worker.engine.attacks.feature_sets import DEFAULT_FEATURE_SETS, threat_model
    from worker.engine.attacks.runner import DEFAULT_CLASSIFIERS
    from worker.engine.verdict import Policy

    from ..services.options import AssessmentOptionsIn

    policy = asdict(Policy())
    return {
        "feature_sets": [
            {"name": fs, "threat": threat_model(fs), "description": FEATURE_SET_DESCRIPTIONS.get(fs, "")}
            for fs in DEFAULT_FEATURE_SETS
        ],
        "classifiers": [
            {"name": c, "description": CLASSIFIER_TEXT.get(c, c), "default": c in DEFAULT_CLASSIFIERS}
            for c in sorted(available_attacks(), key=lambda c: (c not in DEFAULT_CLASSIFIERS, c))
        ],
        "repeats": DEFAULT_REPEATS,
        "policy": {k: v for k, v in policy.items() if k != "name"},
        "levels": ("low", "medium", "high"),
        "reference": reference_form(),
        "quantile": AssessmentOptionsIn.model_fields["quantile"].default,
        "scan_qa": AssessmentOptionsIn.model_fields["scan_qa"].default,
    }
