"""Two per-scan feature tables of the same model on the same scans, compared: identical
(:func:`assert_identical_features`: both runs used one gradient method), or within the methods'
exactness (:func:`assert_same_features`).

Everything but the model's float outputs must be identical (rows in manifest order, ids, labels,
ages, attributes, array names and shapes). The float outputs are compared within the engine's
exactness bounds for its gradient methods (``tests/engine/test_gradient_methods.py``): each
process times its first batches with each exact method (:mod:`worker.engine.features.methods`)
and keeps that batch's result, so a shard extracted first in another worker process may have
used another exact method than the same scans in an unsharded run (float32, a few ulps).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

OUTPUTS = ("prediction", "error")
DERIVED = ("membership_score",)


def assert_same_features(got: tuple[pd.DataFrame, dict[str, np.ndarray]],
                         want: tuple[pd.DataFrame, dict[str, np.ndarray]]) -> None:
    """``(table, arrays)`` pairs: the same scans and columns, the model's outputs equal to float32 exactness."""
    table, arrays = got
    expected, expected_arrays = want
    assert list(table.columns) == list(expected.columns)
    # the model's outputs and what follows from them (the report's per-scan membership score)
    floats = [c for c in expected.columns if c in OUTPUTS or c.startswith("grad_norm:") or c in DERIVED]
    assert "prediction" in floats and any(c.startswith("grad_norm:") for c in floats)
    pd.testing.assert_frame_equal(table.drop(columns=floats), expected.drop(columns=floats), check_exact=True)
    for column in floats:
        np.testing.assert_allclose(table[column], expected[column], rtol=1e-4, atol=1e-4, err_msg=column)
    assert sorted(arrays) == sorted(expected_arrays) and expected_arrays
    for name, array in expected_arrays.items():
        assert arrays[name].shape == array.shape and arrays[name].dtype == array.dtype, name
        scale = float(np.abs(array).max()) or 1.0
        np.testing.assert_allclose(arrays[name], array, rtol=1e-4, atol=1e-5 * scale, err_msg=name)


def assert_identical_features(got: tuple[pd.DataFrame, dict[str, np.ndarray]],
                              want: tuple[pd.DataFrame, dict[str, np.ndarray]]) -> None:
    """``(table, arrays)`` pairs equal value for value (the same model, scans, batches and method)."""
    table, arrays = got
    expected, expected_arrays = want
    pd.testing.assert_frame_equal(table, expected, check_exact=True)
    assert sorted(arrays) == sorted(expected_arrays) and expected_arrays
    for name, array in expected_arrays.items():
        assert arrays[name].dtype == array.dtype, name
        np.testing.assert_array_equal(arrays[name], array, err_msg=name)
