"""Named feature sets: which per-scan features an attack classifier sees.

A feature set is a ``+``-joined list of components (``prediction+label+grad:output``):

============== ============ ==========================================================
component      threat model columns
============== ============ ==========================================================
``prediction`` black-box    the predicted age
``label``      black-box    the true age (``age`` column)
``error``      black-box    prediction - age (signed)
``loss``       black-box    squared error, (prediction - age)^2
``activation`` white-box    the input of the output layer (``arrays["activation"]``)
``grad-norm``  white-box    log of every layer's per-sample gradient norm
                            (``grad_norm:*`` columns, one feature per layer)
``grad:<l>``   white-box    the flattened per-sample loss gradient of layer ``<l>``, an
                            alias (``first_conv``, ``last_conv``, ``output``) or a module
                            path (``arrays["grad:<path>"]``)
============== ============ ==========================================================

A set is black-box when all of its components are black-box (they need only the model's
predictions), white-box otherwise (they need the weights).

``grad-norm`` is log-transformed: gradient norms are positive and heavy-tailed (members
close to zero, non-members orders of magnitude larger), the log makes them near-Gaussian
for the linear and MLP attacks; it is monotone, so the threshold and tree attacks are
unaffected. :func:`attack_score` keeps the raw norm.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..feature_names import (
    BLACK_BOX_COMPONENTS,
    DEFAULT_FEATURE_SETS,
    GRAD_PREFIX,
    LAYER_ALIASES,
    WHITE_BOX_COMPONENTS,
    parse_feature_set,
    threat_model,
)
from ..features.table import GRAD_NORM_PREFIX, FeatureTable

_COMPONENT_COLUMNS = {"prediction": "prediction", "label": "age", "error": "error", "loss": "error"}
_LOG_FLOOR = 1e-30


def _available_layers(ft: FeatureTable) -> list[str]:
    paths = [k[len(GRAD_PREFIX):] for k in ft.arrays if k.startswith(GRAD_PREFIX)]
    aliases = [a for a, p in ft.layer_aliases.items() if f"{GRAD_PREFIX}{p}" in ft.arrays]
    return aliases + paths


def _column(ft: FeatureTable, col: str, set_name: str) -> np.ndarray:
    if col not in ft.table.columns:
        raise InputError(f"feature set '{set_name}' needs the '{col}' column, which the table lacks")
    return ft.table[col].to_numpy(dtype=np.float64)


def _grad_norm_columns(ft: FeatureTable, set_name: str) -> list[str]:
    cols = ft.grad_norm_columns
    if not cols:
        raise InputError(
            f"feature set '{set_name}' is white-box and needs per-layer gradient norms "
            "(grad_norm:* columns); this table has none (predictions only?)"
        )
    return cols


def _grad_array(ft: FeatureTable, layer: str, set_name: str) -> np.ndarray:
    path = ft.resolve_layer(layer)
    key = f"{GRAD_PREFIX}{path}"
    if key in ft.arrays:
        return np.asarray(ft.arrays[key])
    available = _available_layers(ft)
    if not available:
        raise InputError(
            f"feature set '{set_name}' is white-box and needs per-sample gradients of layer "
            f"'{layer}'; this table has no gradient arrays (predictions only?)"
        )
    if path != layer:
        what = f"layer '{layer}' (module '{path}')"
    elif layer in LAYER_ALIASES:
        what = f"layer alias '{layer}' (the model defines no such alias)"
    else:
        what = f"module path '{layer}'"
    raise InputError(
        f"feature set '{set_name}': no per-sample gradients for {what}; "
        f"available: {', '.join(available)}"
    )


def _component(ft: FeatureTable, comp: str, set_name: str) -> np.ndarray:
    """One component as an (N, k) array."""
    if comp == "prediction":
        return _column(ft, "prediction", set_name)[:, None]
    if comp == "label":
        return _column(ft, "age", set_name)[:, None]
    if comp == "error":
        return _column(ft, "error", set_name)[:, None]
    if comp == "loss":
        return (_column(ft, "error", set_name) ** 2)[:, None]
    if comp == "activation":
        if "activation" not in ft.arrays:
            raise InputError(
                f"feature set '{set_name}' is white-box and needs the activations "
                "(arrays['activation']); this table has none (predictions only?)"
            )
        arr = np.asarray(ft.arrays["activation"])
        return arr.reshape(arr.shape[0], -1)
    if comp == "grad-norm":
        cols = _grad_norm_columns(ft, set_name)
        norms = ft.table[cols].to_numpy(dtype=np.float64)
        return np.log(np.maximum(norms, _LOG_FLOOR))
    if comp.startswith(GRAD_PREFIX):
        arr = _grad_array(ft, comp[len(GRAD_PREFIX):].strip(), set_name)
        return arr.reshape(arr.shape[0], -1)
    raise InputError(f"feature set '{set_name}': unknown component '{comp}'")  # pragma: no cover


def feature_matrix(ft: FeatureTable, name: str) -> np.ndarray:
    """The (N, d) feature matrix of a feature set, one row per scan of ``ft.table``.

    Columns are the components in the order named. Small components are float64; when a
    gradient or activation array is float32 the matrix is float32 (memory: a 16k-dim
    gradient of 1000 scans is 64 MB in float32).

    Raises:
        InputError: unknown component, missing feature (white-box set on a predictions-only
            table, unknown layer), wrong row count or non-finite values.
    """
    comps = parse_feature_set(name)
    n = len(ft.table)
    blocks = [_component(ft, c, name) for c in comps]
    for comp, block in zip(comps, blocks):
        if block.shape[0] != n:
            raise InputError(
                f"feature set '{name}': component '{comp}' has {block.shape[0]} rows, "
                f"the table has {n} scans"
            )
    narrow = any(np.issubdtype(b.dtype, np.floating) and b.dtype.itemsize <= 4 for b in blocks)
    dtype = np.float32 if narrow else np.float64
    X = np.concatenate([b.astype(dtype, copy=False) for b in blocks], axis=1)
    bad = ~np.isfinite(X)
    if bad.any():
        rows = int(bad.any(axis=1).sum())
        raise InputError(f"feature set '{name}': {rows} scan(s) have missing or non-finite values")
    return X


def is_available(ft: FeatureTable, name: str) -> bool:
    """Whether ``ft`` has every feature that the set needs (no matrix is built)."""
    try:
        comps = parse_feature_set(name)
    except InputError:
        return False
    for comp in comps:
        column = _COMPONENT_COLUMNS.get(comp)
        if column is not None and column not in ft.table.columns:
            return False
        if comp == "activation" and "activation" not in ft.arrays:
            return False
        if comp == "grad-norm" and not ft.grad_norm_columns:
            return False
        if comp.startswith(GRAD_PREFIX):
            path = ft.resolve_layer(comp[len(GRAD_PREFIX):].strip())
            if f"{GRAD_PREFIX}{path}" not in ft.arrays:
                return False
    return True


def available_feature_sets(ft: FeatureTable) -> list[str]:
    """The :data:`DEFAULT_FEATURE_SETS` that ``ft`` supports, in their order."""
    return [name for name in DEFAULT_FEATURE_SETS if is_available(ft, name)]


def has_attack_score(name: str) -> bool:
    """Whether a feature set has a natural 1-D score (see :func:`attack_score`)."""
    try:
        comps = parse_feature_set(name)
    except InputError:
        return False
    return len(comps) == 1 and comps[0] != "activation"


def attack_score(ft: FeatureTable, name: str) -> np.ndarray:
    """The 1-D score of a feature set, used by the ``threshold`` attack.

    ``error`` and ``loss``: squared error; ``grad-norm``: total gradient norm, the square
    root of the sum of the squared layer norms; ``grad:<layer>``: that layer's gradient norm
    (its ``grad_norm:`` column, else the norm of the gradient array); ``prediction`` and
    ``label``: the column itself. The direction (which end is members) is left to the attack.

    Raises:
        InputError: the set has no natural 1-D score (several components, activations) or a
            feature is missing.
    """
    comps = parse_feature_set(name)
    if not has_attack_score(name):
        raise InputError(
            f"feature set '{name}' has no natural 1-D score for the threshold attack; "
            "use a multivariate classifier (logistic, mlp, gbt)"
        )
    comp = comps[0]
    if comp in ("error", "loss"):
        s = _column(ft, "error", name) ** 2
    elif comp == "prediction":
        s = _column(ft, "prediction", name)
    elif comp == "label":
        s = _column(ft, "age", name)
    elif comp == "grad-norm":
        cols = _grad_norm_columns(ft, name)
        s = np.sqrt((ft.table[cols].to_numpy(dtype=np.float64) ** 2).sum(axis=1))
    else:  # grad:<layer>
        layer = comp[len(GRAD_PREFIX):].strip()
        col = f"{GRAD_NORM_PREFIX}{ft.resolve_layer(layer)}"
        if col in ft.table.columns:
            s = ft.table[col].to_numpy(dtype=np.float64)
        else:
            arr = _grad_array(ft, layer, name)
            s = np.linalg.norm(arr.reshape(arr.shape[0], -1).astype(np.float64), axis=1)
    if not np.isfinite(s).all():
        raise InputError(f"feature set '{name}': missing or non-finite scores")
    return s
