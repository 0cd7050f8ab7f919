"""Training recipes: how the target was trained, so reference models can be trained the same way.

A recipe file is JSON or TOML, with the fields of :class:`Recipe` at the top level or under a
``recipe`` table; omitted fields keep the paper's defaults (Adam, lr 1e-4, weight decay 1e-4,
MSE). A model sidecar may carry the same fields as its ``recipe`` field, whose ``arch`` and
``arch_kwargs`` default to the sidecar's own. Example (TOML)::

    [recipe]
    arch = "brain_age_3d"
    arch_kwargs = {channels = [8, 16, 32, 64]}
    optimizer = "adam"
    lr = 1e-2
    weight_decay = 0.0
    epochs = 60
    batch_size = 4
    schedule = "cosine"
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from ..errors import InputError
from ..models import ARCHITECTURES, build_architecture
from ..models.metadata import sidecar_path
from ..table_files import read_table_file
from ..training import TrainingOptions

RECIPE_HASH_VERSION = 1
"""Bump when the meaning of a recipe field changes (old stored references are then not reused)."""


class Recipe(BaseModel):
    """How a brain-age model is trained (the defaults are the paper's).

    Attributes:
        arch: a registered architecture name (``brain_age_3d``, ``brain_age_slice_mean``...).
        arch_kwargs: its keyword arguments (``channels``, ``width``...). When ``mean_age`` and
            ``age_scale`` are not given, a built-in output layer starts at the mean and spread
            of the training ages, as in the demo.
        optimizer: ``adam``, ``adamw`` or ``sgd``.
        lr: learning rate.
        weight_decay: weight decay.
        momentum: SGD momentum (ignored by the other optimisers).
        schedule: ``constant`` or ``cosine`` (annealed to zero over the epochs).
        epochs: passes over the training scans.
        batch_size: scans per step.
        augment: ``none``, ``flip`` (left-right) or ``shift`` (up to 2 voxels per axis).
        loss: ``mse``, ``l1`` or ``huber`` (delta 1 year), or ``soft_label_kl`` (a target with
            age-bin outputs, as SFCN; its metadata's bins and sigma).
        seed: base seed; reference model ``i`` uses ``seed * 1000 + i``.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    arch: str = "brain_age_3d"
    arch_kwargs: dict[str, Any] = Field(default_factory=dict)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(default=1e-4, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(default=1e-4, ge=0, allow_inf_nan=False)
    momentum: float = Field(default=0.0, ge=0, lt=1, allow_inf_nan=False)
    schedule: Literal["constant", "cosine"] = "constant"
    epochs: int = Field(default=30, ge=1, le=100_000)
    batch_size: int = Field(default=8, ge=1, le=4096)
    augment: Literal["none", "flip", "shift"] = "none"
    loss: Literal["mse", "l1", "huber", "soft_label_kl"] = "mse"
    seed: int = Field(default=0, ge=0, le=2**31 // 1000 - 1)

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, value: str) -> str:
        if value not in ARCHITECTURES:
            raise ValueError(f"unknown architecture '{value}' (known: {', '.join(sorted(ARCHITECTURES))})")
        return value

    @field_validator("arch_kwargs")
    @classmethod
    def _arch_builds(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise ValueError("must hold only JSON values (numbers, strings, lists, tables)") from None
        arch = info.data.get("arch")
        if arch is not None:
            try:
                build_architecture(arch, **value)
            except InputError as exc:
                raise ValueError(str(exc)) from None
            except (ValueError, RuntimeError) as exc:
                raise ValueError(f"architecture '{arch}' cannot be built with {value}: {exc}") from None
        return value

    def training_options(self, seed: int, device: str = "cpu") -> TrainingOptions:
        """The :class:`TrainingOptions` of this recipe with a given (per-model) seed."""
        return TrainingOptions(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            seed=seed,
            device=device,
            cosine=self.schedule == "cosine",
            optimizer=self.optimizer,
            momentum=self.momentum,
            loss=self.loss,
            augment=self.augment,
        )

    @classmethod
    def from_options(cls, options: TrainingOptions, arch: str, arch_kwargs: Mapping[str, Any] | None = None) -> "Recipe":
        """The recipe of a model trained by :func:`~worker.engine.training.train_brain_age` with ``options``.

        Raises:
            InputError: options no recipe can express (an invalid field, named).
        """
        fields_ = {
            "arch": arch, "arch_kwargs": dict(arch_kwargs or {}), "optimizer": options.optimizer,
            "lr": float(options.lr), "weight_decay": float(options.weight_decay), "momentum": float(options.momentum),
            "schedule": "cosine" if options.cosine else "constant", "epochs": int(options.epochs),
            "batch_size": int(options.batch_size), "augment": options.augment, "loss": options.loss,
            "seed": int(options.seed),
        }
        return recipe_from_dict(fields_, "training options")

    def to_dict(self) -> dict[str, Any]:
        """The recipe as a JSON-ready dict (every field, defaults included)."""
        return self.model_dump(mode="json")


def _problems(exc: ValidationError, prefix: str = "") -> str:
    known = ", ".join(Recipe.model_fields)
    parts = []
    for err in exc.errors():
        loc = prefix + ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"field '{loc}': unknown recipe field (known: {known})")
        else:
            parts.append(f"field '{loc}': {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def recipe_from_dict(data: Any, source: str = "recipe", prefix: str = "") -> Recipe:
    """Validate a mapping of recipe fields.

    Args:
        data: the fields.
        source: what to name in errors (a file path).
        prefix: prepended to field names in errors (``recipe.`` for a sidecar's field).

    Raises:
        InputError: not a table, unknown or invalid field, named with ``source``.
    """
    if not isinstance(data, Mapping):
        raise InputError(f"{source}: a recipe must be a table of fields, got {type(data).__name__}")
    try:
        return Recipe.model_validate(dict(data))
    except ValidationError as exc:
        raise InputError(f"{source}: invalid recipe: {_problems(exc, prefix)}") from None


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe from a JSON (``.json``) or TOML (``.toml``) file.

    Raises:
        InputError: unreadable file, syntax error, unknown or invalid field (file and field named).
    """
    data = read_table_file(path, "recipe", "recipe")
    return recipe_from_dict(data, str(path))


def _read_sidecar(path: Path) -> tuple[dict[str, Any], Path]:
    side = path if path.suffix.lower() == ".json" else sidecar_path(path)
    try:
        loaded = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, side
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{side}: cannot read model metadata: {exc}") from None
    if not isinstance(loaded, dict):
        raise InputError(f"{side}: model metadata must be a JSON object")
    return loaded, side


def recipe_from_metadata(sidecar_or_metadata: str | Path | Mapping[str, Any] | Any) -> Recipe | None:
    """The recipe declared in a model's metadata (its sidecar's ``recipe`` field), or None.

    The recipe's ``arch`` and ``arch_kwargs`` default to the sidecar's ``arch`` and
    ``arch_kwargs``, so a sidecar need not repeat them.

    Args:
        sidecar_or_metadata: a model file (its sidecar ``<file>.json`` is read), a sidecar
            path, the sidecar's parsed dict, or an object with ``recipe`` (and ``arch``,
            ``arch_kwargs``) attributes such as a :class:`~worker.engine.models.ModelMetadata`.

    Raises:
        InputError: unreadable sidecar, or an unknown or invalid recipe field (``recipe.<field>``).
    """
    source = "model metadata"
    if isinstance(sidecar_or_metadata, (str, Path)):
        data, side = _read_sidecar(Path(sidecar_or_metadata))
        source = str(side)
    elif isinstance(sidecar_or_metadata, Mapping):
        data = dict(sidecar_or_metadata)
    else:
        data = {k: getattr(sidecar_or_metadata, k, None) for k in ("recipe", "arch", "arch_kwargs")}
    recipe = data.get("recipe")
    if recipe is None:
        return None
    if isinstance(recipe, BaseModel):
        recipe = recipe.model_dump()
    if not isinstance(recipe, Mapping):
        raise InputError(f"{source}: field 'recipe' must be a table of recipe fields, got {type(recipe).__name__}")
    merged = dict(recipe)
    if "arch" not in merged and data.get("arch"):
        merged["arch"] = data["arch"]
        if "arch_kwargs" not in merged and data.get("arch_kwargs"):
            merged["arch_kwargs"] = dict(data["arch_kwargs"])
    return recipe_from_dict(merged, source, prefix="recipe.")


def recipe_hash(recipe: Recipe) -> str:
    """Hex SHA-256 of the recipe's canonical JSON (sorted keys, every field, a version prefix).

    Equal recipes hash equal however they were written (field order, omitted defaults, ``1``
    or ``1.0``); any changed field changes the hash.
    """
    canonical = json.dumps(
        {"brainmia_recipe": RECIPE_HASH_VERSION, **recipe.to_dict()},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()
