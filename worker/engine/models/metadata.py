"""Model metadata: the input grid, voxel size and normalisation a model expects.

Metadata comes from a sidecar ``<model file>.json`` and/or explicit overrides (command-line
options), the overrides winning. Example sidecar::

    {"input_shape": [91, 109, 91], "voxel_size": 2, "normalize": "zscore",
     "arch": "brain_age_3d", "arch_kwargs": {"width": 1.0}}
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ..errors import InputError


class DPClaim(BaseModel):
    """A declared differential-privacy guarantee, ``(epsilon, delta)``, checked against the empirical bound."""

    model_config = ConfigDict(extra="forbid")

    epsilon: float = Field(gt=0, allow_inf_nan=False)
    delta: float = Field(1e-5, ge=0, lt=1)


class OutputSpec(BaseModel):
    """What the model's output is: one age per scan, or scores over age bins.

    Attributes:
        kind: ``age`` (one age per scan, the default) or ``bins`` (one score per age bin; the
            prediction is the expected age, ``sum softmax(scores) * centers``).
        centers: the bins' centres in years; or ``start``, ``width`` and ``count`` (centres
            ``start + width / 2 + i * width``, as SFCN's 40 one-year bins from 42 years).
        scores: ``log_probs`` (the model ends in a log-softmax, as SFCN) or ``logits``.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["age", "bins"] = "age"
    centers: tuple[float, ...] | None = None
    start: float | None = Field(None, allow_inf_nan=False)
    width: float | None = Field(None, gt=0)
    count: int | None = Field(None, gt=1)
    scores: Literal["log_probs", "logits"] = "log_probs"

    @model_validator(mode="before")
    @classmethod
    def _named(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _bins_given(self) -> OutputSpec:
        spaced = (self.start, self.width, self.count)
        if self.kind == "age":
            if self.centers is not None or any(v is not None for v in spaced):
                raise ValueError("bin centres are given only with kind 'bins'")
        elif self.centers is not None:
            if any(v is not None for v in spaced):
                raise ValueError("give either 'centers' or 'start', 'width' and 'count', not both")
            if len(self.centers) < 2:
                raise ValueError("'centers' needs at least two bins")
            if any(not math.isfinite(c) for c in self.centers):
                raise ValueError("every bin centre must be a finite number of years")
            if any(b <= a for a, b in zip(self.centers, self.centers[1:])):
                raise ValueError("bin 'centers' must increase strictly (soft labels take bin edges halfway between them)")
        elif any(v is None for v in spaced):
            raise ValueError("kind 'bins' needs 'centers', or 'start', 'width' and 'count'")
        return self

    def bin_centers(self) -> list[float]:
        """The bins' centres in years (empty for an age output)."""
        if self.kind == "age":
            return []
        if self.centers is not None:
            return [float(c) for c in self.centers]
        assert self.start is not None and self.width is not None and self.count is not None
        return [self.start + self.width / 2 + i * self.width for i in range(self.count)]

    @property
    def size(self) -> int:
        """Output values per scan."""
        return 1 if self.kind == "age" else len(self.bin_centers())


class LossSpec(BaseModel):
    """The loss whose per-sample gradients are the white-box features (as the model was trained).

    Attributes:
        name: ``mse`` (squared error of the predicted age, the default) or ``soft_label_kl``
            (KL divergence from a Gaussian soft label over the age bins, as SFCN trains; needs a
            ``bins`` output).
        sigma: the soft label's standard deviation in years.
    """

    model_config = ConfigDict(extra="forbid")

    name: Literal["mse", "soft_label_kl"] = "mse"
    sigma: float = Field(1.0, gt=0, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _named(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class ModelMetadata(BaseModel):
    """What a model declares about its input, and its architecture for weights files.

    Attributes:
        input_shape: the conformed grid (X, Y, Z) in voxels.
        voxel_size: voxel size in mm per axis (a single number means isotropic).
        normalize: intensity normalisation name (see ``worker.engine.normalize``).
        arch: built-in architecture name, required for safetensors / state-dict files.
        arch_kwargs: keyword arguments of the architecture (``width``, ``channels``...).
        recipe: how the model was trained (the fields of
            :class:`worker.engine.reference.recipe.Recipe`), so that reference models can be
            trained the same way; checked when references are trained.
        dp: the model's declared DP guarantee (``{"epsilon": 1, "delta": 1e-5}``), if it was
            trained with differential privacy; the verdict checks it against the attacks.
        output: ``age`` (default) or age bins (``{"kind": "bins", "start": 42, "width": 1,
            "count": 40}``); see :class:`OutputSpec`.
        loss: the loss of the white-box gradients, ``mse`` (default) or ``soft_label_kl``
            (``{"name": "soft_label_kl", "sigma": 1}``); see :class:`LossSpec`.
    """

    model_config = ConfigDict(extra="forbid")

    input_shape: tuple[int, int, int] = (91, 109, 91)
    voxel_size: tuple[float, float, float] = (2.0, 2.0, 2.0)
    normalize: str = "zscore"
    arch: str | None = None
    arch_kwargs: dict[str, Any] = {}
    recipe: dict[str, Any] | None = None
    dp: DPClaim | None = None
    output: OutputSpec = OutputSpec()
    loss: LossSpec = LossSpec()

    @field_validator("voxel_size", mode="before")
    @classmethod
    def _isotropic(cls, value: Any) -> Any:
        if isinstance(value, (int, float)):
            return (float(value),) * 3
        return value

    @field_validator("input_shape")
    @classmethod
    def _positive_shape(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        from ..volume_bounds import check_grid

        if any(v <= 0 for v in value):
            raise ValueError("every dimension must be positive")
        check_grid(value)  # no larger than a scan may be
        return value

    @field_validator("voxel_size")
    @classmethod
    def _positive_voxels(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(v <= 0 for v in value):
            raise ValueError("every voxel size must be positive")
        return value

    @model_validator(mode="after")
    def _loss_fits_output(self) -> ModelMetadata:
        if self.loss.name == "soft_label_kl" and self.output.kind != "bins":
            raise ValueError("loss 'soft_label_kl' needs an output of age bins (output: {\"kind\": \"bins\", ...})")
        return self

    def conform_spec(self) -> Any:
        """The :class:`~worker.engine.volumes.ConformSpec` scans are conformed to."""
        from ..volumes import ConformSpec

        return ConformSpec(shape=self.input_shape, voxel_size=self.voxel_size, normalize=self.normalize)


def sidecar_path(model_path: Path) -> Path:
    """Where the sidecar of ``model_path`` lives: ``<model file>.json``."""
    return model_path.with_name(model_path.name + ".json")


def parse_shape(text: str) -> tuple[int, int, int]:
    """Parse ``91x109x91`` into a shape tuple.

    Raises:
        InputError: not three positive integers.
    """
    try:
        parts = tuple(int(p) for p in text.lower().replace(",", "x").split("x"))
    except ValueError:
        parts = ()
    if len(parts) != 3 or any(p <= 0 for p in parts):
        raise InputError(f"bad shape '{text}': expected three positive integers like 91x109x91")
    return parts  # type: ignore[return-value]


def _validate(data: dict[str, Any], source: str) -> ModelMetadata:
    try:
        return ModelMetadata.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(p) for p in err['loc'])}': {err['msg']}" for err in exc.errors()
        )
        raise InputError(f"{source}: invalid model metadata: {problems}") from None


def resolve_metadata(model_path: Path | None, overrides: dict[str, Any] | None = None) -> ModelMetadata:
    """Combine the sidecar of ``model_path`` (if any) with explicit overrides.

    Args:
        model_path: the model file; its sidecar ``<file>.json`` is read when present.
        overrides: fields given explicitly (``None`` values are ignored); they win.

    Raises:
        InputError: unreadable sidecar or invalid field, named.
    """
    data: dict[str, Any] = {}
    if model_path is not None:
        side = sidecar_path(Path(model_path))
        if side.exists():
            try:
                loaded = json.loads(side.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise InputError(f"{side}: cannot read model metadata: {exc}") from None
            if not isinstance(loaded, dict):
                raise InputError(f"{side}: model metadata must be a JSON object")
            data.update(_validate(loaded, str(side)).model_dump(exclude_unset=True))
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return _validate(data, "model metadata")


def write_sidecar(model_path: Path, metadata: ModelMetadata) -> Path:
    """Write ``metadata`` as the sidecar of ``model_path``."""
    path = sidecar_path(Path(model_path))
    path.write_text(metadata.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path
