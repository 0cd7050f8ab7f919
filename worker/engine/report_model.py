"""The typed model of report.json, for a centralised and a federated assessment.

pydantic and the standard library only (no numpy, torch, scikit-learn or plotly), so the API
process, the command line and the report's readers load it cheaply::

    from worker.engine.report_model import Report, ranked_attacks, strongest_attack

    report = Report.read("report.json")          # InputError names the first bad field
    best = strongest_attack(report)              # the verdict's rule (see report_ranking)
    report.to_dict() == json.load(open("report.json"))   # round-trips

Every key the engine writes is typed; every model also accepts keys it does not know
(``extra="allow"``), so a report from a newer engine still loads and keeps them. Metric values
that are undefined (NaN in the engine) are null in the file and None here; a NaN or infinity
given in a dict becomes None. :meth:`Report.to_dict` dumps only the keys that were given, so
``Report.from_dict(d).to_dict() == d`` for what the engine writes.

The parts of a report are in :mod:`worker.engine.report_sections`, the ranking of attacks and
the threat model of a feature set in :mod:`worker.engine.report_ranking`; both are re-exported
here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional

from pydantic import Field, ValidationError

from .errors import InputError
from .report_ranking import (
    attack_threat_model,
    feature_set_threat_model,
    is_completed,
    rank_key,
    ranked_attacks,
    strongest_attack,
)
from .report_sections import (
    AgeBin,
    Attack,
    AttackMetrics,
    AttributeGroup,
    ExposedScan,
    Exposure,
    Finding,
    Grid,
    Interval,
    ManifestProvenance,
    MetricSummary,
    ModelProvenance,
    Num,
    PolicySettings,
    Provenance,
    RequestProvenance,
    Roc,
    RoundModel,
    ScanQuality,
    ScanQualityFlag,
    Status,
    ThreatLevels,
    ThreatModel,
    Utility,
    _Open,
)
from .report_verdict import DPCheck, EmpiricalEpsilon, Multiplicity, PowerStatement, Verdict

__all__ = [
    "AgeBin", "Attack", "AttackGroup", "AttackMetrics", "AttributeGroup", "CiGrids", "ExposedScan", "Exposure",
    "FederatedAttackSection", "FederatedSection", "Finding", "Interval", "LearnerSummary", "ManifestProvenance",
    "MetricSummary", "ModelProvenance", "PerAttacker", "PolicySettings", "Provenance", "Report",
    "RequestProvenance", "Roc", "RoundModel", "RoundPoint", "ScanQuality", "ScanQualityFlag", "ThreatLevels", "ThreatModel", "Utility", "Verdict",
    "DPCheck", "EmpiricalEpsilon", "Multiplicity", "PowerStatement", "attack_threat_model", "feature_set_threat_model", "is_completed", "rank_key", "ranked_attacks",
    "strongest_attack",
]


# --------------------------------------------------------------------------- federated


class PerAttacker(_Open):
    """One attacking learner's metrics, the mean over its victims."""

    learner: str
    victims: list[str]
    n_test: int
    metrics: AttackMetrics


class CiGrids(_Open):
    """Lower and upper 95% bounds of an attacker x victim matrix."""

    low: Grid
    high: Grid


class FederatedAttackSection(_Open):
    """One federated attack: attacker x victim matrices and federation-wide metrics."""

    name: str
    scope: str
    feature_set: str
    classifier: str
    threat_model: Optional[ThreatModel]
    round: Optional[int] = None
    rounds: Optional[list[int]] = None
    status: Status
    error: Optional[str] = None
    matrix: Optional[dict[str, Grid]] = None
    matrix_ci: Optional[dict[str, CiGrids]] = None
    per_attacker: Optional[list[PerAttacker]] = None
    overall: Optional[AttackMetrics] = None


class AttackGroup(_Open):
    """The final-round or the trajectory attacks, and the strongest of them."""

    strongest: Optional[str]
    attacks: list[FederatedAttackSection]


class RoundPoint(_Open):
    """One point of the per-round curve."""

    round: int
    attack: str
    status: Status
    accuracy: Interval
    auc: Interval
    tpr_at_fpr_0_01: Interval = Field(alias="tpr_at_fpr_0.01")
    mae_members: Num
    mae_nonmembers: Num


class LearnerSummary(_Open):
    """Scans and ages of one learner (``learner`` None: the unseen scans)."""

    learner: Optional[str]
    n_scans: int
    age_mean: Num
    age_min: Num
    age_max: Num


class FederatedSection(_Open):
    """The ``federated`` section (see :mod:`worker.engine.federated.report`)."""

    learners: list[str]
    rounds: int
    rounds_used: list[int]
    attack: Optional[str]
    matrix: Optional[dict[str, Grid]]
    matrix_ci: Optional[dict[str, CiGrids]]
    per_attacker: list[PerAttacker]
    overall: Optional[AttackMetrics]
    per_round: list[RoundPoint]
    final_round: AttackGroup
    trajectory: AttackGroup
    learner_summary: list[LearnerSummary]
    settings: dict[str, Any]


# --------------------------------------------------------------------------- the report


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


class Report(_Open):
    """report.json (``federated`` only in a federated assessment)."""

    schema_version: str
    provenance: Provenance
    utility: Utility
    attacks: list[Attack]
    exposure: Exposure
    verdict: Verdict
    federated: Optional[FederatedSection] = None
    scan_quality: Optional[ScanQuality] = None

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "report") -> "Report":
        """Validate a report dict (as loaded from report.json).

        Raises:
            InputError: naming the first bad field (``attacks[2].metrics.auc.ci_low``) and why.
        """
        if not isinstance(data, Mapping):
            raise InputError(f"{source}: a report must be a JSON object, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            first = errors[0]
            more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
            raise InputError(f"{source}: field '{_where(first['loc'])}': {first['msg']}{more}") from None

    @classmethod
    def read(cls, path: str | Path) -> "Report":
        """Read and validate a report.json file.

        Raises:
            InputError: unreadable file, not JSON, or a bad field (named).
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError(f"{path}: cannot read the report ({exc.strerror or exc})") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: not a JSON report ({exc})") from None
        return cls.from_dict(data, source=str(path))

    def attack(self, name: str) -> Attack | None:
        """The attack entry called ``name``, or None."""
        return next((a for a in self.attacks if a.name == name), None)

    @property
    def is_federated(self) -> bool:
        """Whether this is the report of a federated assessment."""
        return self.federated is not None
