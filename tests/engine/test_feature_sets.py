"""Feature-set names, matrices, threat models and 1-D attack scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from worker.engine.attacks.feature_sets import (
    BLACK_BOX_COMPONENTS,
    DEFAULT_FEATURE_SETS,
    attack_score,
    available_feature_sets,
    feature_matrix,
    has_attack_score,
    parse_feature_set,
    threat_model,
)
from worker.engine.errors import InputError
from worker.engine.features.table import FeatureTable

LAYERS = {"first_conv": "features.0.conv", "last_conv": "head.conv6", "output": "head.out"}


def make_table(
    n_members: int = 200,
    n_nonmembers: int = 200,
    *,
    leak: float = 1.0,
    seed: int = 0,
    white_box: bool = True,
    dims: dict[str, int] | None = None,
    activation_dim: int = 16,
) -> FeatureTable:
    """A synthetic FeatureTable; members have smaller errors and gradients when ``leak`` > 0.

    ``leak=0`` gives members and non-members identical distributions.
    """
    rng = np.random.default_rng(seed)
    n = n_members + n_nonmembers
    member = np.r_[np.ones(n_members, int), np.zeros(n_nonmembers, int)]
    age = rng.uniform(42, 88, n)
    shrink = np.where(member == 1, np.exp(-leak), 1.0)  # members fitted better
    error = rng.normal(0, 5.0, n) * shrink
    table = pd.DataFrame({
        "scan_id": [f"s{i:04d}" for i in range(n)],
        "member": member,
        "age": age,
        "prediction": age + error,
        "error": error,
    })
    arrays: dict[str, np.ndarray] = {}
    aliases: dict[str, str] = {}
    if white_box:
        dims = dims or {"features.0.conv": 24, "head.conv6": 40, "head.out": 8}
        for path, d in dims.items():
            norm = np.exp(rng.normal(0, 0.5, n)) * np.abs(error) + 1e-3
            g = rng.normal(size=(n, d))
            g *= (norm / np.linalg.norm(g, axis=1))[:, None]
            arrays[f"grad:{path}"] = g.astype(np.float32)
            table[f"grad_norm:{path}"] = np.linalg.norm(g, axis=1)
        act = rng.normal(size=(n, activation_dim)) + 0.3 * leak * member[:, None]
        arrays["activation"] = act.astype(np.float32)
        aliases = {a: p for a, p in LAYERS.items() if p in dims}
    table["sex"] = rng.choice(["F", "M"], n)
    table["site"] = rng.choice([1, 2, 3], n)
    return FeatureTable(table=table, arrays=arrays, layer_aliases=aliases, attributes=["sex", "site"])


def test_default_names_and_order():
    assert DEFAULT_FEATURE_SETS == (
        "activation", "error", "prediction+label", "grad-norm", "grad:first_conv",
        "grad:last_conv", "grad:output", "prediction+label+grad:last_conv+grad:output",
    )
    assert BLACK_BOX_COMPONENTS == {"prediction", "label", "error", "loss"}


def test_parse_and_threat_model():
    assert parse_feature_set("prediction+label+grad:last_conv") == ["prediction", "label", "grad:last_conv"]
    assert threat_model("error") == "black-box"
    assert threat_model("prediction+label") == "black-box"
    assert threat_model("loss+error") == "black-box"
    assert threat_model("activation") == "white-box"
    assert threat_model("grad-norm") == "white-box"
    assert threat_model("prediction+label+grad:output") == "white-box"
    assert threat_model("grad:features.3.conv.weight") == "white-box"
    for bad in ["", "prediction++label", "foo", "grad:", "prediction+bar"]:
        with pytest.raises(InputError):
            parse_feature_set(bad)


def test_matrices_shapes_and_columns():
    ft = make_table(30, 20)
    n = 50
    X = feature_matrix(ft, "prediction+label")
    assert X.shape == (n, 2) and X.dtype == np.float64
    np.testing.assert_allclose(X[:, 0], ft.table["prediction"])
    np.testing.assert_allclose(X[:, 1], ft.table["age"])
    np.testing.assert_allclose(feature_matrix(ft, "error")[:, 0], ft.table["error"])
    np.testing.assert_allclose(feature_matrix(ft, "loss")[:, 0], ft.table["error"] ** 2)
    assert feature_matrix(ft, "activation").shape == (n, 16)
    gn = feature_matrix(ft, "grad-norm")
    assert gn.shape == (n, 3)
    np.testing.assert_allclose(gn, np.log(ft.table[ft.grad_norm_columns].to_numpy()))  # log-transformed
    assert feature_matrix(ft, "grad:first_conv").shape == (n, 24)
    assert feature_matrix(ft, "grad:head.conv6").shape == (n, 40)
    combo = feature_matrix(ft, "prediction+label+grad:last_conv+grad:output")
    assert combo.shape == (n, 2 + 40 + 8) and combo.dtype == np.float32
    np.testing.assert_allclose(combo[:, 2:42], ft.arrays["grad:head.conv6"])


def test_available_feature_sets():
    assert available_feature_sets(make_table(10, 10)) == list(DEFAULT_FEATURE_SETS)
    black = make_table(10, 10, white_box=False)
    assert available_feature_sets(black) == ["error", "prediction+label"]
    partial = make_table(10, 10, dims={"features.0.conv": 5, "head.out": 3})
    assert "grad:last_conv" not in available_feature_sets(partial)
    assert "grad:output" in available_feature_sets(partial)


def test_missing_features_raise_named_input_error():
    black = make_table(10, 10, white_box=False)
    with pytest.raises(InputError, match=r"'grad-norm'.*predictions only"):
        feature_matrix(black, "grad-norm")
    with pytest.raises(InputError, match=r"'activation'"):
        feature_matrix(black, "activation")
    with pytest.raises(InputError, match=r"'grad:output'.*no gradient arrays"):
        feature_matrix(black, "grad:output")
    ft = make_table(10, 10)
    with pytest.raises(InputError, match=r"grad:features\.9\.conv.*available: .*head\.conv6"):
        feature_matrix(ft, "grad:features.9.conv")
    ft.table.loc[3, "error"] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        feature_matrix(ft, "error")


def test_attack_scores():
    ft = make_table(20, 20)
    np.testing.assert_allclose(attack_score(ft, "error"), ft.table["error"] ** 2)
    norms = ft.table[ft.grad_norm_columns].to_numpy()
    np.testing.assert_allclose(attack_score(ft, "grad-norm"), np.sqrt((norms ** 2).sum(1)))
    np.testing.assert_allclose(attack_score(ft, "grad:output"), ft.table["grad_norm:head.out"])
    np.testing.assert_allclose(attack_score(ft, "prediction"), ft.table["prediction"])
    # no grad_norm column: norm of the array
    ft.table = ft.table.drop(columns=["grad_norm:head.out"])
    np.testing.assert_allclose(
        attack_score(ft, "grad:output"), np.linalg.norm(ft.arrays["grad:head.out"], axis=1), rtol=1e-6
    )
    assert has_attack_score("error") and has_attack_score("grad-norm") and has_attack_score("grad:output")
    assert not has_attack_score("prediction+label") and not has_attack_score("activation")
    with pytest.raises(InputError, match="no natural 1-D score"):
        attack_score(ft, "prediction+label")
