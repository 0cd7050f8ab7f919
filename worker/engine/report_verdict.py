"""The verdict part of report.json: level, findings, the correction, power and the empirical epsilon.

Typed like the other parts (:mod:`worker.engine.report_sections`); the fields added with the
four-level verdict are optional, so reports written before it still load.
"""

from __future__ import annotations

from pydantic import Field

from .report_sections import Finding, Level, Num, PolicySettings, ThreatLevels, _Open

__all__ = ["DPCheck", "EmpiricalEpsilon", "Multiplicity", "PowerStatement", "Verdict"]


class Multiplicity(_Open):
    """The correction that makes the verdict's bounds hold over all attacks together."""

    correction: str
    alpha: float
    m: int
    z: Num
    description: str


class PowerStatement(_Open):
    """What the scan set can detect at 80% power (:func:`worker.engine.power.power_statement`)."""

    n_members: int
    n_nonmembers: int
    test_members: int
    test_nonmembers: int
    min_detectable_auc: Num
    min_detectable_tpr: Num = Field(None, alias="min_detectable_tpr_at_fpr_0.01")
    adequate: bool
    warnings: list[str] = Field(default_factory=list)
    scans_needed: int | None = None
    message: str


class EmpiricalEpsilon(_Open):
    """The (epsilon, delta) lower bound the attacks prove, and the most these scans could show."""

    epsilon: Num
    ceiling: Num
    delta: float
    confidence: float
    attack: str | None
    correction: str
    n_members: int
    n_nonmembers: int
    message: str


class DPCheck(_Open):
    """A declared DP guarantee checked against the empirical bound at the claimed delta."""

    claimed_epsilon: float
    claimed_delta: float
    empirical_epsilon: Num
    ceiling: Num
    contradicted: bool
    testable: bool
    message: str


class Verdict(_Open):
    """The verdict: level, pass / fail, the strongest attack, findings and the policy used.

    Reports written before the four-level verdict lack ``multiplicity``, ``power``,
    ``scans_needed``, ``epsilon`` and ``dp_claim`` (None).
    """

    level: Level
    passed: bool
    incomplete: bool
    strongest_attack: str | None
    summary: str
    findings: list[Finding]
    levels_by_threat_model: ThreatLevels
    policy: PolicySettings  # type: ignore[valid-type]
    multiplicity: Multiplicity | None = None
    power: PowerStatement | None = None
    scans_needed: int | None = None
    epsilon: EmpiricalEpsilon | None = None
    dp_claim: DPCheck | None = None
