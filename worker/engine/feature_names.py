"""Feature-set names and their threat model: the light part of :mod:`worker.engine.attacks.feature_sets`.

No numpy, torch or scikit-learn here, so the API process and the report's readers can name
feature sets and their threat models without loading the attack code. See
:mod:`worker.engine.attacks.feature_sets` for the components and their columns.
"""

from __future__ import annotations

from .errors import InputError

DEFAULT_FEATURE_SETS: tuple[str, ...] = (
    "activation",
    "error",
    "prediction+label",
    "grad-norm",
    "grad:first_conv",
    "grad:last_conv",
    "grad:output",
    "prediction+label+grad:last_conv+grad:output",
)
"""The feature sets of the paper's table, in its order."""

BLACK_BOX_COMPONENTS: frozenset[str] = frozenset({"prediction", "label", "error", "loss"})
"""Components computable from predictions and true ages alone."""

WHITE_BOX_COMPONENTS: frozenset[str] = frozenset({"activation", "grad-norm"})
"""White-box components besides ``grad:<layer>``."""

LAYER_ALIASES: tuple[str, ...] = ("first_conv", "last_conv", "output")
"""Layer aliases that feature extraction defines (see ``FeatureTable.layer_aliases``)."""

GRAD_PREFIX = "grad:"


def parse_feature_set(name: str) -> list[str]:
    """Split a feature-set name into its components and check each one.

    Args:
        name: e.g. ``"prediction+label+grad:last_conv"``.

    Returns:
        The components in order, duplicates removed.

    Raises:
        InputError: empty name, empty component or unknown component.
    """
    if not isinstance(name, str) or not name.strip():
        raise InputError("feature set name is empty")
    parts = [p.strip() for p in name.split("+")]
    out: list[str] = []
    for part in parts:
        if not part:
            raise InputError(f"feature set '{name}': empty component (check the '+' signs)")
        if part.startswith(GRAD_PREFIX):
            if not part[len(GRAD_PREFIX):].strip():
                raise InputError(f"feature set '{name}': 'grad:' needs a layer alias or module path")
        elif part not in BLACK_BOX_COMPONENTS and part not in WHITE_BOX_COMPONENTS:
            known = sorted(BLACK_BOX_COMPONENTS | WHITE_BOX_COMPONENTS) + ["grad:<layer>"]
            raise InputError(
                f"feature set '{name}': unknown component '{part}' (known: {', '.join(known)})"
            )
        if part not in out:
            out.append(part)
    return out


def threat_model(name: str) -> str:
    """``"black-box"`` if every component needs only predictions, else ``"white-box"``."""
    comps = parse_feature_set(name)
    return "black-box" if all(c in BLACK_BOX_COMPONENTS for c in comps) else "white-box"
