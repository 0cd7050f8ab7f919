"""The one mapping of assessment options: what a user asks for -> the job row -> the engine.

The API's request body, ``brainmia submit``, ``brainmia assess``, the demo seed and the job
runner all go through :class:`AssessmentOptionsIn`: it is the request's ``options`` field,
the JSON stored in the job row, and (with :func:`engine_options`) the engine's
``AssessmentOptions`` / ``FederatedAttackOptions``. Policy files are read by one loader,
:func:`policy_from_file`, for every entry point.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from worker.engine.errors import InputError
from worker.engine.feature_names import parse_feature_set
from worker.engine.policy import Policy, load_policy

from ..fields import GradientMethod, Id, Text, no_nul

DEFAULT_REPEATS = 5
"""Repeated attacker-training / test splits of a centralised assessment."""


class OptionError(InputError):
    """An option the engine cannot run, with the request field it came from.

    Attributes:
        field: dotted path of the field (``options.policy.auc_high``).
        reason: what is wrong with it.
    """

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class PolicyOptions(BaseModel):
    """Verdict policy fields (omitted ones keep their defaults); see the README's Policy."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"auc_high": 0.65, "fail_at": "high"}]})

    name: Annotated[str, Field(max_length=200), AfterValidator(no_nul)] | None = None
    auc_medium: float | None = None
    auc_high: float | None = None
    tpr_at_1pct_fpr_medium: float | None = None
    tpr_at_1pct_fpr_high: float | None = None
    fail_at: Literal["low", "medium", "high"] | None = None
    fail_on_error: bool | None = None
    fail_on_inconclusive: bool | None = None
    delta: float | None = Field(None, gt=0, lt=1, description="Delta of the empirical (epsilon, delta) bound (default 1e-5).")


assert set(PolicyOptions.model_fields) == {f.name for f in fields(Policy)}, "PolicyOptions must mirror Policy"


class FederatedOptionsIn(BaseModel):
    """Options of a federated assessment (a model uploaded with ``kind=federated_rounds``)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"max_rounds": 40}]})

    max_rounds: int | None = Field(
        None, ge=2, le=10_000,
        description="Rounds whose features are computed, evenly spaced, the final one included (default 20).",
    )
    trajectory_sets: list[Annotated[Text, Field(max_length=100)]] | None = Field(
        None, max_length=16, description="Feature sets spanning the rounds (default: loss-trajectory, grad-norm-trajectory).",
        examples=[["loss-trajectory"]],
    )


class ReferenceOptionsIn(BaseModel):
    """Reference models for LiRA, RMIA and the calibrated loss: K that BrainMIA trains the way the
    target was trained (``models``, ``recipe``), or your own (``reference_set_id``, an uploaded
    reference set of the assessment's scan set; then ``models`` and ``recipe`` are not given)."""

    model_config = ConfigDict(extra="forbid",
                              json_schema_extra={"examples": [{"models": 8}, {"reference_set_id": "5b1c0e2f9a"}]})

    models: int = Field(8, ge=2, le=256, multiple_of=2,
                        description="Reference models to train on random halves of the audit scans (even).")
    recipe: dict[str, Any] | None = Field(
        None, description="How the target was trained (arch, arch_kwargs, optimizer, lr, weight_decay, epochs, "
                          "batch_size, augment, loss, seed); default: the 'recipe' of the model's metadata.",
        examples=[{"arch": "brain_age_3d", "optimizer": "adam", "lr": 0.0001, "epochs": 30, "batch_size": 8}],
    )
    attacks: list[Annotated[Text, Field(max_length=64)]] | None = Field(
        None, max_length=16, description="Reference attacks (default: every one the model allows): calibrated-loss, "
                                         "lira-offline, lira-online, rmia, and their ':grad-norm' variants.",
    )
    reference_set_id: Id | None = Field(
        None, description="Your own reference models instead of trained ones: a reference set (POST "
                          "/reference-sets) of the assessment's scan set. Excludes `models` and `recipe`.",
    )

    @model_validator(mode="after")
    def _supplied_or_trained(self) -> ReferenceOptionsIn:
        if self.reference_set_id is not None and (self.recipe is not None or "models" in self.model_fields_set):
            raise ValueError("reference_set_id (your own reference models) does not go with models or recipe "
                             "(references BrainMIA trains): give one or the other")
        return self


class AssessmentOptionsIn(BaseModel):
    """What to run; omitted fields take the engine's defaults."""

    model_config = ConfigDict(extra="forbid")

    feature_sets: list[Annotated[Text, Field(max_length=500)]] | None = Field(
        None,
        max_length=64, description="Feature sets to attack with (default: every one of the paper's the model supports).",
        examples=[["error", "grad-norm", "grad:output"]],
    )
    classifiers: list[Annotated[Text, Field(max_length=64)]] | None = Field(
        None,
        max_length=16, description="Attack classifiers: threshold, logistic, mlp, gbt (default: threshold, logistic, mlp).",
        examples=[["threshold", "logistic"]],
    )
    repeats: int = Field(DEFAULT_REPEATS, ge=1, le=50, description="Repeated attacker-training / test splits.")
    train_size: int | None = Field(None, ge=1, le=10**9, description="Members (= non-members) per attacker-training split.")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    device: str | None = Field(None, description="cpu, cuda, cuda:1... (default: the worker's; CUDA when present).")
    batch_size: int | None = Field(None, ge=1, le=1024, description="Scans per vectorised pass (default: the worker's).")
    gradient_method: GradientMethod | None = Field(
        None, description="How per-sample gradients are computed (default: the worker's, auto): auto times the "
                          "exact methods on the first batches and keeps the fastest; vmap, loop or hooks use that "
                          "one for every batch (the same values however the job is split into shards).")
    policy: PolicyOptions | None = None
    federated: FederatedOptionsIn | None = Field(
        None, description="For a federation's rounds on a scan set with learners; ignored otherwise."
    )
    quantile: bool = Field(True, description="Run the quantile-regression attacks (qmia), which need no "
                                             "reference models.")
    reference: ReferenceOptionsIn | None = Field(
        None, description="Train reference models and run the reference-model attacks (none when omitted)."
    )
    scan_qa: Literal["fail", "warn", "off"] = Field(
        "fail", description="Scan QA against the MNI152 template: fail the job when most scans look unregistered "
                            "or not skull-stripped (fail), only list them in the report (warn), or skip it (off).")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"cpu|mps|cuda(:\d+)?", value):
            raise ValueError("must be cpu, cuda, cuda:<index> or mps")
        return value

    def engine_policy(self) -> Policy:
        """The verdict policy these options ask for (the default policy when none)."""
        return Policy.from_dict(self.policy.model_dump(exclude_none=True)) if self.policy else Policy()


def policy_from_file(path: str | Path) -> PolicyOptions:
    """A policy file (JSON or TOML; fields at the top level or under a ``policy`` table) as
    request options: the one loader of ``assess --policy``, ``submit --policy`` and the API.

    Raises:
        InputError: unreadable file, syntax error, unknown or invalid field (named).
    """
    return PolicyOptions(**load_policy(path).to_dict())


def _check_names(options: AssessmentOptionsIn) -> None:
    from worker.engine.attacks import get_attack

    for name in options.classifiers or []:
        try:
            get_attack(name)
        except InputError as exc:
            raise OptionError("options.classifiers", str(exc)) from None
    for name in options.feature_sets or []:
        try:
            parse_feature_set(name)
        except InputError as exc:
            raise OptionError("options.feature_sets", str(exc)) from None
    if options.reference is not None:
        _check_reference(options.reference)
    if options.federated and options.federated.trajectory_sets:
        from worker.engine.federated import TRAJECTORY_SETS

        unknown = sorted(set(options.federated.trajectory_sets) - set(TRAJECTORY_SETS))
        if unknown:
            raise OptionError("options.federated.trajectory_sets",
                              f"unknown: {', '.join(unknown)}; available: {', '.join(sorted(TRAJECTORY_SETS))}")


def _check_reference(reference: ReferenceOptionsIn) -> None:
    from worker.engine.reference.calibrated import get_reference_attack
    from worker.engine.reference.recipe import recipe_from_dict

    for name in reference.attacks or []:
        try:
            get_reference_attack(name)
        except InputError as exc:
            raise OptionError("options.reference.attacks", str(exc)) from None
    if reference.recipe is not None:
        try:
            recipe_from_dict(reference.recipe, source="options.reference.recipe")
        except InputError as exc:
            raise OptionError("options.reference.recipe", str(exc)) from None


def reference_options(options: AssessmentOptionsIn, store_dir: Path | None,
                      supplied: tuple[Sequence[Path], Path] | None = None) -> Any:
    """The engine's ``ReferenceOptions`` for ``options`` (None when no reference models are asked for).

    Args:
        options: the request / stored options.
        store_dir: where trained references are kept and reused.
        supplied: for ``reference.reference_set_id``, the reference set's model files and its
            keep.csv (:func:`backend.services.reference_sets.supplied_reference_files`).

    Raises:
        InputError: a reference set is named but its files are not given.
    """
    if options.reference is None:
        return None
    from worker.engine.reference.recipe import recipe_from_dict
    from worker.engine.reference.run import ReferenceOptions

    ref = options.reference
    if ref.reference_set_id is not None:
        if supplied is None:
            raise InputError(f"options.reference.reference_set_id: the files of reference set "
                             f"'{ref.reference_set_id}' were not resolved")
        models, keep_csv = supplied
        return ReferenceOptions(models=[Path(p) for p in models], keep_csv=Path(keep_csv),
                                attacks=tuple(ref.attacks) if ref.attacks else None, seed=options.seed)
    recipe = recipe_from_dict(ref.recipe, source="options.reference.recipe") if ref.recipe is not None else None
    return ReferenceOptions(n_models=ref.models, recipe=recipe, store_dir=store_dir,
                            attacks=tuple(ref.attacks) if ref.attacks else None, seed=options.seed)


def check_options(options: AssessmentOptionsIn, *, n_members: int | None = None,
                  n_nonmembers: int | None = None) -> dict[str, Any]:
    """Engine-level checks of ``options`` for a scan set of that many members / non-members.

    Returns:
        the options as stored in the job row (JSON).

    Raises:
        OptionError: an option the engine cannot run, naming its field.
    """
    _check_names(options)
    if options.train_size is not None and n_members is not None and n_nonmembers is not None:
        smaller = min(n_members, n_nonmembers)
        if options.train_size > smaller - 1:
            raise OptionError(
                "options.train_size",
                f"must be at most {smaller - 1}: the scan set's smaller group has {smaller} scans "
                "and at least one of each must remain for testing",
            )
    try:
        options.engine_policy()
    except InputError as exc:
        match = re.search(r"field '([^']+)'", str(exc))
        raise OptionError(f"options.policy.{match.group(1)}" if match else "options.policy", str(exc)) from None
    return stored_options(options)


def stored_options(options: AssessmentOptionsIn) -> dict[str, Any]:
    """The options as the job row keeps them (policy and federated without unset fields)."""
    stored = options.model_dump(exclude={"policy", "federated", "reference"})
    stored["policy"] = options.policy.model_dump(exclude_none=True) if options.policy else None
    stored["federated"] = options.federated.model_dump(exclude_none=True) if options.federated else None
    ref = options.reference
    stored["reference"] = (ref.model_dump(exclude_none=True, exclude={"models"} if ref.reference_set_id else None)
                           if ref else None)
    return stored


def read_stored(stored: Mapping[str, Any] | None) -> AssessmentOptionsIn:
    """A job row's options as :class:`AssessmentOptionsIn`.

    Raises:
        InputError: the stored options are not valid (named field).
    """
    try:
        return AssessmentOptionsIn.model_validate(dict(stored or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"the job's options are not valid: options.{where}: {first['msg']}") from None


def engine_options(options: AssessmentOptionsIn, *, extraction: Any, federated: bool = False,
                   reference_store: Path | None = None,
                   supplied_references: tuple[Sequence[Path], Path] | None = None) -> Any:
    """The engine's options for ``options``.

    Args:
        options: the request / stored options.
        extraction: the engine's ``ExtractionOptions`` (device, batch size, layers), which
            depend on where the job runs.
        federated: a federated assessment (``FederatedAttackOptions``) instead of a
            centralised one (``AssessmentOptions``).
        reference_store: where trained reference models are kept and reused.
        supplied_references: the model files and keep.csv of ``options.reference.reference_set_id``
            (:func:`backend.services.reference_sets.supplied_reference_files`).

    Raises:
        InputError: ``train_size`` for a federated assessment; an invalid policy.
    """
    policy = options.engine_policy()
    if federated:
        from worker.engine.federated.options import FederatedAttackOptions

        if options.train_size is not None:
            raise InputError("train_size does not apply to a federated assessment: each attacker trains on its "
                             "own scans and as many unseen scans")
        if options.reference is not None:
            raise InputError("reference models do not apply to a federated assessment (yet): assess the final "
                             "round on a scan set without learners to use them")
        given: dict[str, Any] = {}
        if options.feature_sets:
            given["feature_sets"] = tuple(options.feature_sets)
        if options.classifiers:
            given["classifiers"] = tuple(options.classifiers)
        if options.federated and options.federated.max_rounds:
            given["max_rounds"] = options.federated.max_rounds
        if options.federated and options.federated.trajectory_sets:
            given["trajectory_sets"] = tuple(options.federated.trajectory_sets)
        return FederatedAttackOptions(**given, repeats=options.repeats, seed=options.seed,
                                      extraction=extraction, policy=policy)
    from worker.engine.assessment import AssessmentOptions
    from worker.engine.scan_qa_policy import ScanQaPolicy

    return AssessmentOptions(
        feature_sets=tuple(options.feature_sets) if options.feature_sets else None,
        classifiers=tuple(options.classifiers) if options.classifiers else None,
        repeats=options.repeats,
        train_size=options.train_size,
        seed=options.seed,
        extraction=extraction,
        policy=policy,
        quantile=options.quantile,
        reference=reference_options(options, reference_store, supplied_references),
        scan_qa=ScanQaPolicy(mode=options.scan_qa),
    )
