"""How fast this server trains reference models, from the models it trained before.

The new-assessment page estimates a reference training before it starts: K models times the
recipe's epochs times about half the scan set's scans, at the rate this organisation's finished
reference-model tasks ran. The rate is per scan, epoch and input voxel (a conv net's step time
grows about linearly with the voxels of its grid), the median over the latest models, so one
model slowed by another job does not set it. The job measures its own steps again before it trains
(:mod:`worker.engine.reference.estimate`) and says that estimate in its log.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.models import Assessment, ModelRecord, ReferenceTask, ScanSet, as_utc
from .job_states import ReferenceState

LATEST = 50
"""The finished models the rate is taken from, newest first."""


@dataclass(frozen=True)
class TrainingRate:
    """Measured reference-training speed of one worker.

    Attributes:
        seconds_per_unit: median seconds per scan, epoch and input voxel.
        n_models: the finished models it was measured on.
    """

    seconds_per_unit: float
    n_models: int

    def seconds(self, *, n_models: int, epochs: int, n_train: int, voxels: int) -> float:
        """Estimated seconds for ``n_models`` models, one after another on one worker."""
        return self.seconds_per_unit * n_models * epochs * n_train * voxels


def model_voxels(metadata: dict[str, Any]) -> int | None:
    """Voxels of a model's input grid (None when its metadata has no grid)."""
    shape = metadata.get("input_shape")
    if not shape:
        return None
    return int(math.prod(int(v) for v in shape))


def recipe_epochs(options: dict[str, Any], metadata: dict[str, Any]) -> int | None:
    """The epochs of an assessment's reference recipe: the options' own, else the model sidecar's."""
    reference = options.get("reference") or {}
    recipe = reference.get("recipe") or metadata.get("recipe") or {}
    epochs = recipe.get("epochs")
    return int(epochs) if isinstance(epochs, (int, float)) and epochs >= 1 else None


def training_rate(session: Session, org_id: str) -> TrainingRate | None:
    """The organisation's measured reference-training rate (None before its first trained model)."""
    rows = session.execute(
        select(ReferenceTask.started_at, ReferenceTask.finished_at, Assessment.options, ModelRecord.model_metadata,
               ScanSet.n_scans)
        .join(Assessment, Assessment.id == ReferenceTask.assessment_id)
        .join(ModelRecord, ModelRecord.id == Assessment.model_id)
        .join(ScanSet, ScanSet.id == Assessment.scan_set_id)
        .where(Assessment.org_id == org_id, ReferenceTask.kind == "reference",
               ReferenceTask.state == ReferenceState.SUCCEEDED.value,
               ReferenceTask.started_at.is_not(None), ReferenceTask.finished_at.is_not(None))
        .order_by(ReferenceTask.finished_at.desc())
        .limit(LATEST)
    ).all()
    rates = []
    for started, finished, options, metadata, n_scans in rows:
        epochs, voxels = recipe_epochs(options or {}, metadata or {}), model_voxels(metadata or {})
        seconds = (as_utc(finished) - as_utc(started)).total_seconds()
        if epochs and voxels and n_scans and seconds > 0:
            rates.append(seconds / (epochs * max(1, n_scans // 2) * voxels))
    if not rates:
        return None
    return TrainingRate(seconds_per_unit=statistics.median(rates), n_models=len(rates))
