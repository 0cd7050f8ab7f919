"""The risk policy: thresholds that turn attack metrics into a verdict.

A policy file is JSON or TOML, with the fields of :class:`Policy` at the top level or under
a ``policy`` table; omitted fields keep their defaults. Example (TOML)::

    name = "release-review"
    auc_high = 0.65
    fail_at = "high"
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from .errors import InputError
from .table_files import read_table_file

LEVELS: tuple[str, ...] = ("low", "inconclusive", "medium", "high")
"""Verdict levels, in increasing order (``inconclusive``: nothing reached medium, but the data
cannot rule it out; see :mod:`worker.engine.verdict_levels`)."""
FAIL_AT_LEVELS: tuple[str, ...] = ("low", "medium", "high")
"""The levels ``fail_at`` may name (``inconclusive`` is governed by ``fail_on_inconclusive``)."""


@dataclass(frozen=True)
class Policy:
    """Thresholds of the membership-inference risk verdict.

    A threshold is reached when an attack's lower bound reaches it (``>=``), the bounds
    holding over all attacks together (:mod:`worker.engine.simultaneous`); the verdict is
    ``low`` only when the data rule the medium thresholds out, and ``inconclusive`` when they
    cannot (:mod:`worker.engine.verdict_levels`).

    Attributes:
        name: a label for the policy, copied into the report.
        auc_medium: AUC lower bound from which an attack is medium risk (0.5 = chance).
        auc_high: AUC lower bound from which an attack is high risk.
        tpr_at_1pct_fpr_medium: lower bound of the true-positive rate at 1% false-positive
            rate from which an attack is medium risk: the share of members an attacker
            identifies while wrongly accusing only 1% of non-members (chance: 0.01).
        tpr_at_1pct_fpr_high: the same, for high risk.
        fail_at: the lowest level that fails the policy (``"low"``, ``"medium"``,
            ``"high"``); ``"low"`` fails every model.
        fail_on_error: an attack that could not run makes the assessment incomplete, and an
            incomplete assessment fails. Set False only to accept a partial assessment on
            purpose (a run in which no attack completed always fails).
        fail_on_inconclusive: an ``inconclusive`` verdict (the scans could not rule medium
            risk out) does not clear the model (default). Set False to let it pass.
        delta: the delta of the empirical (epsilon, delta) lower bound (0 < delta < 1).
    """

    name: str = "default"
    auc_medium: float = 0.55
    auc_high: float = 0.70
    tpr_at_1pct_fpr_medium: float = 0.03
    tpr_at_1pct_fpr_high: float = 0.10
    fail_at: str = "medium"
    fail_on_error: bool = True
    fail_on_inconclusive: bool = True
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise InputError(f"policy field 'name' must be a string, got {self.name!r}")
        for f in ("auc_medium", "auc_high", "tpr_at_1pct_fpr_medium", "tpr_at_1pct_fpr_high"):
            value = getattr(self, f)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"policy field '{f}' must be a number, got {value!r}")
            if not 0.0 <= value <= 1.0:
                raise InputError(f"policy field '{f}' must be between 0 and 1, got {value}")
            object.__setattr__(self, f, float(value))
        for kind in ("auc", "tpr_at_1pct_fpr"):
            if getattr(self, f"{kind}_medium") > getattr(self, f"{kind}_high"):
                raise InputError(
                    f"policy field '{kind}_medium' ({getattr(self, f'{kind}_medium')}) must not "
                    f"exceed '{kind}_high' ({getattr(self, f'{kind}_high')})"
                )
        if self.fail_at not in FAIL_AT_LEVELS:
            raise InputError(
                f"policy field 'fail_at' must be one of {', '.join(FAIL_AT_LEVELS)}, got {self.fail_at!r}"
            )
        for f in ("fail_on_error", "fail_on_inconclusive"):
            if not isinstance(getattr(self, f), bool):
                raise InputError(f"policy field '{f}' must be true or false, got {getattr(self, f)!r}")
        d = self.delta
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 < d < 1.0:
            raise InputError(f"policy field 'delta' must be a number between 0 and 1 (exclusive), got {d!r}")
        object.__setattr__(self, "delta", float(d))

    def to_dict(self) -> dict[str, Any]:
        """The policy as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Policy":
        """Build a policy from a mapping; unknown fields are refused by name.

        Raises:
            InputError: unknown or invalid field.
        """
        if not isinstance(data, Mapping):
            raise InputError(f"a policy must be a table of fields, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(
                f"unknown policy field(s) {', '.join(repr(u) for u in unknown)} "
                f"(known: {', '.join(sorted(known))})"
            )
        return cls(**dict(data))


DEFAULT_POLICY = Policy()
"""The default policy (high: AUC lower bound >= 0.70 or TPR@1%FPR lower bound >= 0.10;
medium: >= 0.55 or >= 0.03; fails at medium and when inconclusive; delta 1e-5)."""


def load_policy(path: str | Path) -> Policy:
    """Read a policy from a JSON (``.json``) or TOML (``.toml``) file.

    Raises:
        InputError: unreadable file, syntax error, unknown or invalid field.
    """
    data = read_table_file(path, "policy", "policy")
    try:
        return Policy.from_dict(data)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
