"""The per-scan feature table produced by feature extraction and consumed by attacks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..csv_safety import neutralise_frame
from ..errors import InputError

BASE_COLUMNS = ("scan_id", "member", "age", "prediction", "error")
GRAD_NORM_PREFIX = "grad_norm:"


@dataclass
class FeatureTable:
    """Per-scan features of one model on one scan list.

    Attributes:
        table: one row per scan, columns ``scan_id``, ``member`` (int 1/0, member is
            positive), ``age``, ``prediction``, ``error`` (prediction - age),
            ``grad_norm:<module path>`` for every parametrised module (white-box only),
            then the manifest attributes (``sex``, ``site``, ...).
        arrays: large per-scan vectors keyed by name, each of shape (n_scans, dim):
            ``"activation"`` (input of the output layer) and ``"grad:<module path>"`` (the
            flattened per-sample loss gradient of that module's weight and bias).
        layer_aliases: ``first_conv`` / ``last_conv`` / ``output`` -> module path.
        attributes: names of the manifest attribute columns kept in ``table``.
        gradient_method: the per-sample gradient method of the white-box features
            (:mod:`.methods`), once chosen; None for black-box ones or when not known.
    """

    table: pd.DataFrame
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    layer_aliases: dict[str, str] = field(default_factory=dict)
    attributes: list[str] = field(default_factory=list)
    gradient_method: str | None = None

    @property
    def white_box(self) -> bool:
        """Whether white-box features (gradients) are present."""
        return bool(self.grad_norm_columns)

    @property
    def grad_norm_columns(self) -> list[str]:
        """The ``grad_norm:<path>`` columns, in model order."""
        return [c for c in self.table.columns if c.startswith(GRAD_NORM_PREFIX)]

    @property
    def members(self) -> np.ndarray:
        """Membership labels as an int array (1 = member)."""
        return self.table["member"].to_numpy(dtype=int)

    def resolve_layer(self, name: str) -> str:
        """Map a layer alias (``first_conv``...) or module path to a module path."""
        return self.layer_aliases.get(name, name)

    def save(self, path: Path) -> Path:
        """Write the table as CSV (or parquet by suffix) and the arrays beside it as .npz.

        In the CSV, text cells a spreadsheet would run as formulas get a ``'`` in front
        (:mod:`worker.engine.csv_safety`); numbers are written as they are.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise InputError(
                    f"{path}: writing parquet needs pyarrow (pip install 'brainmia[parquet]'); use .csv otherwise"
                ) from None
            self.table.to_parquet(path, index=False)
        else:
            neutralise_frame(self.table).to_csv(path, index=False)
        if self.arrays:
            np.savez_compressed(path.with_suffix(".arrays.npz"), **self.arrays)
        return path
