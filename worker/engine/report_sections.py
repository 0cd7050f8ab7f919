"""The parts of report.json: metrics, attacks, verdict, provenance, utility and exposure.

Typed pydantic models (pydantic and the standard library only); :mod:`worker.engine.report_model`
assembles them into the :class:`~worker.engine.report_model.Report` and re-exports them. Every
model keeps the keys it does not know (``extra="allow"``); :meth:`_Open.to_dict` dumps the keys
that were given, under their report.json names.
"""

from __future__ import annotations

import math
import typing
from dataclasses import fields as dataclass_fields
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, model_validator

from .errors import InputError
from .policy import Policy
from .report_ranking import attack_threat_model, is_completed

__all__ = [
    "AgeBin", "Attack", "AttackFamily", "AttackMetrics", "AttributeGroup", "CalibrationRow", "ExposedScan",
    "Exposure", "Finding", "Grid", "Interval", "Level", "ManifestProvenance", "MetricSummary", "ModelProvenance",
    "Num", "PolicySettings", "Provenance", "ReferencesProvenance", "RequestProvenance", "Roc", "RoundModel",
    "Scalar", "ScanQuality", "ScanQualityFlag", "Severity", "Status", "ThreatLevels", "ThreatModel", "Utility",
]


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


Num = Annotated[Optional[float], AfterValidator(_finite)]
"""A number or None (NaN and infinity become None)."""
ThreatModel = Literal["black-box", "white-box"]
AttackFamily = Literal["classifier", "reference", "quantile"]
"""How an attack decides (``family`` of an entry; absent means ``classifier``): a classifier trained on
part of the scans (the paper's), a calibration against reference models, or a quantile regressor."""
Level = Literal["low", "inconclusive", "medium", "high"]
"""Verdict levels (DESIGN.md), the engine's :data:`~worker.engine.policy.LEVELS`."""
Severity = Literal["high", "medium", "low", "info"]
Status = Literal["ok", "error"]
Scalar = Union[str, int, float, bool, None]
Grid = list[list[Num]]


class _Open(BaseModel):
    """A report part: typed keys, unknown keys kept."""

    model_config = ConfigDict(extra="allow")

    def to_dict(self) -> dict[str, Any]:
        """The part as JSON data, with the keys it was given (original names)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


# --------------------------------------------------------------------------- metrics


class Interval(_Open):
    """A metric's mean and 95% confidence interval (None where undefined)."""

    mean: Num
    ci_low: Num
    ci_high: Num


class MetricSummary(Interval):
    """A metric over the repeats: mean, std, 95% CI and the value of each repeat."""

    std: Num
    values: list[Num] = []


class AttackMetrics(_Open):
    """The metrics of one attack (none for an attack that failed)."""

    accuracy: Optional[MetricSummary] = None
    balanced_accuracy: Optional[MetricSummary] = None
    auc: Optional[MetricSummary] = None
    tpr_at_fpr_0_001: Optional[MetricSummary] = Field(None, alias="tpr_at_fpr_0.001")
    tpr_at_fpr_0_01: Optional[MetricSummary] = Field(None, alias="tpr_at_fpr_0.01")

    def get(self, name: str) -> MetricSummary | None:
        """The summary of metric ``name`` as report.json names it (``"tpr_at_fpr_0.01"``), or None."""
        value = getattr(self, name.replace(".", "_"), None)
        if value is None:
            value = (self.model_extra or {}).get(name)
        return value if isinstance(value, MetricSummary) else None


# --------------------------------------------------------------------------- attacks


class Roc(_Open):
    """The mean ROC curve on a fixed FPR grid."""

    fpr: list[Num]
    tpr: list[Num]


class AgeBin(_Open):
    """Attack accuracy in one age bin (``low`` / ``high`` None for open bins)."""

    bin: str
    low: Num
    high: Num
    accuracy: Num
    n: int
    n_members: int


class AttributeGroup(_Open):
    """Attack accuracy among the scans with one value of a manifest attribute."""

    value: Scalar
    accuracy: Num
    n: int
    n_members: int


class CalibrationRow(_Open):
    """One row of a quantile attack's calibration check: the observed FPR on held-out non-members at
    a target ``alpha``, its 95% Clopper-Pearson interval, and whether alpha lies in it."""

    alpha: float
    fpr: Num
    fpr_ci_low: Num
    fpr_ci_high: Num
    tpr: Num = None
    calibrated: bool
    attainable: bool = True
    n_nonmembers: Optional[int] = None
    n_flagged: Optional[int] = None
    n_members: Optional[int] = None


class Attack(_Open):
    """One attack entry of ``attacks`` (centralised; federated entries add ``scope``, ``round(s)``).

    Reference-model and quantile attacks (``family``) score every audit scan once: ``n_train`` 0,
    ``n_test`` every scan, ``repeats`` 1; ``classifier`` is then the method (``lira-online``).
    """

    name: str
    feature_set: str
    threat_model: Optional[ThreatModel]
    classifier: str
    status: Status
    error: Optional[str]
    n_features: Optional[int]
    n_train: Optional[int]
    n_test: Optional[int]
    repeats: Optional[int]
    metrics: AttackMetrics
    roc: Optional[Roc]
    by_age_bin: list[AgeBin]
    by_attribute: dict[str, list[AttributeGroup]]
    duration_s: Num = None
    scope: Optional[str] = None
    round: Optional[int] = None
    rounds: Optional[list[int]] = None
    family: Optional[AttackFamily] = None
    n_references: Optional[int] = None
    parameters: Optional[dict[str, Any]] = None
    calibration: Optional[list[CalibrationRow]] = None
    calibration_gaussian: Optional[list[CalibrationRow]] = None

    @model_validator(mode="after")
    def _ok_has_metrics(self) -> "Attack":
        if self.status == "ok":
            missing = [m for m in ("accuracy", "balanced_accuracy", "auc", "tpr_at_fpr_0.001", "tpr_at_fpr_0.01")
                       if self.metrics.get(m) is None]
            if missing:
                raise ValueError(f"a completed attack needs metrics {', '.join(missing)}")
        return self

    def metric(self, name: str, key: str = "mean") -> float | None:
        """One field (``mean``, ``std``, ``ci_low``, ``ci_high``) of one metric, or None."""
        summary = self.metrics.get(name)
        return None if summary is None else getattr(summary, key, None)

    @property
    def completed(self) -> bool:
        """Whether the attack ran (``status`` ok, with metrics)."""
        return is_completed(self)

    @property
    def threat(self) -> str:
        """The attack's threat model (see :func:`attack_threat_model`)."""
        return attack_threat_model(self)


# --------------------------------------------------------------------------- verdict


class _PolicyChecked(_Open):
    @model_validator(mode="after")
    def _valid_policy(self) -> "_PolicyChecked":
        try:
            Policy(**{f.name: getattr(self, f.name) for f in dataclass_fields(Policy)})
        except InputError as exc:
            raise ValueError(str(exc)) from None
        return self


_POLICY_ADDED = frozenset({"fail_on_inconclusive", "delta"})
"""Policy fields added after reports were first written: older reports take their defaults."""


def _policy_model() -> type[_Open]:
    """The policy as the verdict records it: the fields of :class:`~worker.engine.policy.Policy`, checked by it."""
    hints = typing.get_type_hints(Policy)
    spec: dict[str, Any] = {f.name: (hints[f.name], f.default if f.name in _POLICY_ADDED else ...)
                            for f in dataclass_fields(Policy)}
    return create_model("PolicySettings", __base__=_PolicyChecked, __doc__="The policy used by the verdict.", **spec)


PolicySettings = _policy_model()


class Finding(_Open):
    """One finding of the verdict."""

    severity: Severity
    attack: Optional[str]
    metric: Optional[str]
    value: Num
    threshold: Num
    message: str
    recommendation: str


class ThreatLevels(_Open):
    """The highest attack level per threat model (None: no completed attack of that model)."""

    black_box: Optional[Level] = Field(alias="black-box")
    white_box: Optional[Level] = Field(alias="white-box")


# --------------------------------------------------------------------------- provenance, utility, exposure


class RoundModel(_Open):
    """One round's model file of a federated assessment."""

    round: int
    path: Optional[str]
    sha256: Optional[str]
    format: Optional[str]


class ModelProvenance(_Open):
    """The assessed model (``format`` ``predictions`` for a predictions table)."""

    path: Optional[str]
    sha256: Optional[str]
    format: Optional[str]
    architecture: Optional[str]
    metadata: Optional[dict[str, Any]]
    rounds: Optional[list[RoundModel]] = None


class ManifestProvenance(_Open):
    """The scan list (``n_learners`` in a federated assessment; ``source`` when it was derived, e.g.
    from a BIDS dataset: the dataset, the entity filter, the member lists' SHA-256, sessions left out)."""

    path: Optional[str]
    sha256: Optional[str]
    n_scans: int
    n_members: int
    n_nonmembers: int
    n_learners: Optional[int] = None
    source: Optional[dict[str, Any]] = None


class RequestProvenance(_Open):
    """Who asked for a server-side assessment, and when (added by the job runner)."""

    assessment_id: str
    requested_by: str
    organisation: Optional[str]
    requested_at: Optional[str]


class ReferencesProvenance(_Open):
    """The reference models of the reference-model attacks (``provenance.references``).

    Attributes:
        source: ``trained`` (by BrainMIA from ``recipe``) or ``supplied`` (the user's, with keep.csv).
        n_models: K, the reference models used.
        recipe: the training recipe (trained references).
        keep_hash: SHA-256 of the keep matrix (which scans each reference trained on).
        reused: trained references taken from the store instead of trained again.
        train_mae: each trained reference's MAE on its own training scans.
        layers: the layers of the white-box (``:grad-norm``) variants.
        estimated_s: the training time estimated from a short measured run before training
            (None when every model was reused).
        training_s: the measured wall time of obtaining the trained references.
    """

    source: Optional[Literal["trained", "supplied"]] = None
    n_models: Optional[int] = None
    recipe: Optional[dict[str, Any]] = None
    keep_hash: Optional[str] = None
    reused: Optional[int] = None
    train_mae: Optional[list[Num]] = None
    layers: Optional[list[str]] = None
    estimated_s: Optional[Num] = None
    training_s: Optional[Num] = None


class Provenance(_Open):
    """Where the report comes from: inputs, package, settings, time and host."""

    model: ModelProvenance
    manifest: ManifestProvenance
    package_version: str
    settings: dict[str, Any]
    created_at: str
    duration_s: Num
    host: str
    python: Optional[str] = None
    pid: Optional[int] = None
    request: Optional[RequestProvenance] = None
    references: Optional[ReferencesProvenance] = None


class Utility(_Open):
    """Mean absolute error on members and non-members, and the gap (non-members minus members)."""

    mae_members: Num
    mae_nonmembers: Num
    n_members: int
    n_nonmembers: int
    mae_gap: Num


class ExposedScan(_Open):
    """One scan's mean membership score under the exposure attack."""

    scan_id: Scalar
    member: int
    score: Num
    n_tested: int


class Exposure(_Open):
    """The most exposed scans under one attack (the verdict's strongest)."""

    attack: Optional[str]
    scans: list[ExposedScan]


class ScanQualityFlag(_Open):
    """A scan that scan QA flagged, with its values and why."""

    scan_id: Scalar
    member: int
    template_corr: Num
    outside_mask: Num
    reasons: list[str]


class ScanQuality(_Open):
    """Scan QA (worker.engine.scan_qa): correlation with the MNI152 template and signal outside its brain mask."""

    mode: Literal["fail", "warn", "off"]
    judged: bool
    not_judged_reason: Optional[str] = None
    thresholds: dict[str, Num]
    grid: Optional[dict[str, list[Union[int, float]]]] = None
    n_scans: int
    n_flagged: int
    template_corr: dict[str, Num]
    outside_mask: dict[str, Num]
    flagged: list[ScanQualityFlag]
    advice: Optional[str] = None
    failed: bool = False
