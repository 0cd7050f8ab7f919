"""Model metadata: the input grid, voxel size and normalisation a model expects.

Metadata comes from a sidecar ``<model file>.json`` and/or explicit overrides (command-line
options), the overrides winning. Example sidecar::

    {"input_shape": [91, 109, 91], "voxel_size": 2, "normalize": "zscore",
     "arch": "brain_age_3d", "arch_kwargs": {"width": 1.0}}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import InputError


class DPClaim(BaseModel):
    """A declared differential-privacy guarantee, ``(epsilon, delta)``, checked against the empirical bound."""

    model_config = ConfigDict(extra="forbid")

    epsilon: float = Field(gt=0, allow_inf_nan=False)
    delta: float = Field(1e-5, ge=0, lt=1)


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
    """

    model_config = ConfigDict(extra="forbid")

    input_shape: tuple[int, int, int] = (91, 109, 91)
    voxel_size: tuple[float, float, float] = (2.0, 2.0, 2.0)
    normalize: str = "zscore"
    arch: str | None = None
    arch_kwargs: dict[str, Any] = {}
    recipe: dict[str, Any] | None = None
    dp: DPClaim | None = None

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
