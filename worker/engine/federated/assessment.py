"""The federated assessment: round models + federated manifest -> features -> attacks -> report."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..cache import VolumeCache, file_sha256
from ..features import FeatureTable
from ..manifest import Manifest
from ..metrics import utility
from ..models import LoadedModel, detect_format, load_model
from ..report import exposure_section, provenance
from .attack import run_federated_attacks
from .draws import federation_labels
from .options import FederatedAttackOptions
from .report import federated_report
from .rounds import ModelLoader, ModelRef, round_features

__all__ = ["FederatedAssessmentResult", "run_federated_assessment"]

# share of the progress bar per stage
_FEATURES_SHARE, _ATTACKS_SHARE = 0.7, 0.28


@dataclass
class FederatedAssessmentResult:
    """The report document (with its ``federated`` section) and the final round's feature table."""

    report: dict[str, Any]
    features: FeatureTable

    @property
    def section(self) -> dict[str, Any]:
        """The ``federated`` section of the report."""
        return self.report["federated"]

    @property
    def passed(self) -> bool:
        """Whether the verdict passes the policy."""
        return bool(self.report["verdict"]["passed"])


def _models_provenance(models: Sequence[ModelRef], overrides: dict[str, Any] | None,
                       loader: ModelLoader = load_model) -> dict[str, Any]:
    rounds = []
    for r, ref in enumerate(models, start=1):
        if isinstance(ref, LoadedModel):
            rounds.append({"round": r, "path": ref.path.name, "sha256": ref.sha256, "format": ref.format})
        else:
            path = Path(ref)
            rounds.append({"round": r, "path": path.name, "sha256": file_sha256(path), "format": detect_format(path)})
    last = models[-1]
    final = last if isinstance(last, LoadedModel) else loader(Path(last), overrides, check=False)
    return {**final.provenance(), "rounds": rounds}


def _manifest_provenance(manifest: Manifest) -> dict[str, Any]:
    learners = sorted({r.learner for r in manifest.records if r.learner is not None})
    return {
        "path": manifest.path.name,
        "sha256": manifest.sha256,
        "n_scans": len(manifest.records),
        "n_members": manifest.n_members,
        "n_nonmembers": manifest.n_nonmembers,
        "n_learners": len(learners),
        **({"source": dict(manifest.source)} if manifest.source else {}),
    }


def run_federated_assessment(
    models: Sequence[ModelRef],
    manifest: Manifest,
    options: FederatedAttackOptions | None = None,
    *,
    overrides: dict[str, Any] | None = None,
    cache: VolumeCache | None = None,
    progress: Callable[[str, float, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    loader: ModelLoader = load_model,
) -> FederatedAssessmentResult:
    """Assess the membership leakage of a federation from its round models.

    Args:
        models: every round's community model, round 1 first (loaded, or paths such as
            :func:`~worker.engine.federated.list_rounds` gives).
        manifest: the federated manifest: members carry their ``learner``, unseen scans
            (non-members) none.
        options: what to attack.
        overrides: model metadata overrides (input grid, voxel size...) for model paths.
        cache: conformed-volume cache.
        progress: called with (stage, fraction 0-1, message).
        should_stop: polled between batches and attacks; True cancels.
        loader: loads a round's model file (default in this process; an untrusted federation is
            loaded by :meth:`worker.engine.sandbox.ModelHost.load`, in the confined host).

    Returns:
        the report (report.json with a ``federated`` section; ``attacks`` holds the
        final-round and trajectory attacks, scored over the whole federation) and the final
        round's feature table.

    Raises:
        InputError: a manifest that is not federated, no models, bad options or inputs.
    """
    options = options or FederatedAttackOptions()
    federation_labels(manifest)  # fail fast, before the features
    options.rounds_used(len(models))
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()

    def tell(stage: str, fraction: float, message: str) -> None:
        if progress is not None:
            progress(stage, min(max(fraction, 0.0), 1.0), message)

    tables = round_features(
        models, manifest, options, overrides=overrides, cache=cache, should_stop=should_stop, loader=loader,
        progress=lambda stage, f, msg: tell(stage, _FEATURES_SHARE * f, msg),
    )
    result = run_federated_attacks(
        tables, manifest, options, should_stop=should_stop,
        progress=lambda stage, f, msg: tell(stage, _FEATURES_SHARE + _ATTACKS_SHARE * f, msg),
    )
    tell("report", _FEATURES_SHARE + _ATTACKS_SHARE, "verdict and report")
    exposure = exposure_section(result.features, result.exposure, result.verdict.get("strongest_attack"))
    report = federated_report(
        provenance=provenance(
            model=_models_provenance(models, overrides, loader),
            manifest=_manifest_provenance(manifest),
            settings={**options.settings(), "policy": result.verdict.get("policy"), "federated": True},
            started=started,
            duration_s=time.perf_counter() - t0,
        ),
        utility=utility(result.features),
        attacks=result.attacks,
        exposure=exposure,
        verdict=result.verdict,
        federated=result.section,
    )
    tell("done", 1.0, "done")
    return FederatedAssessmentResult(report=report, features=result.features)
