"""The end-to-end assessment: model + manifest -> features -> attacks -> verdict -> report."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .attacks import default_attack_specs, run_attacks
from .cache import VolumeCache, file_sha256
from .errors import InputError
from .features import ExtractionOptions, FeatureTable, extract_features, features_from_predictions
from .manifest import Manifest
from .metrics import utility
from .models.loading import LoadedModel
from .quantile.attacks import QMIA_ATTACKS, run_qmia_attacks
from .reference.run import ReferenceOptions, run_reference_attacks
from .report import build_report, exposure_section, provenance
from .scan_qa import QA_COLUMNS, template_for
from .scan_qa_policy import ScanQaPolicy, early_scan_qa, scan_qa_section
from .verdict import Policy, evaluate

# share of the progress bar per stage (without / with reference models to train)
_FEATURES_SHARE, _ATTACKS_SHARE = 0.6, 0.38
_REF_FEATURES_SHARE, _REF_SHARE, _REF_ATTACKS_SHARE = 0.15, 0.65, 0.18

ProgressFn = Callable[[str, float, str], None]


@dataclass
class AssessmentOptions:
    """What to run.

    Attributes:
        feature_sets: feature-set names (None: every default set the features support).
        classifiers: attack classifier names (None: the defaults).
        repeats: repeated attacker-training / test splits.
        train_size: members (= non-members) in each attacker-training split (None: half of
            the smaller group).
        seed: base seed of the splits and classifiers.
        extraction: feature-extraction options (device, batch size, layers).
        policy: the verdict policy (None: the default policy).
        quantile: run the quantile-regression attacks (``qmia``, and ``qmia:grad-norm`` on a
            white-box assessment), which need no reference models.
        reference: reference models and their attacks (None: none).
        scan_qa: scan QA of the model's scans (:mod:`worker.engine.scan_qa`): its mode
            (``fail`` by default) and thresholds.
    """

    feature_sets: Sequence[str] | None = None
    classifiers: Sequence[str] | None = None
    repeats: int = 5
    train_size: int | None = None
    seed: int = 0
    extraction: ExtractionOptions = field(default_factory=ExtractionOptions)
    policy: Policy | None = None
    quantile: bool = True
    reference: ReferenceOptions | None = None
    scan_qa: ScanQaPolicy = field(default_factory=ScanQaPolicy)

    def settings(self) -> dict[str, Any]:
        """The options as recorded in the report's provenance."""
        return {
            "feature_sets": list(self.feature_sets) if self.feature_sets else None,
            "classifiers": list(self.classifiers) if self.classifiers else None,
            "repeats": self.repeats,
            "train_size": self.train_size,
            "seed": self.seed,
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.extraction).items()},
            "quantile": self.quantile,
            "reference": self.reference.settings() if self.reference is not None else None,
            "scan_qa": asdict(self.scan_qa),
        }


@dataclass
class AssessmentResult:
    """The report document and the per-scan feature table it was computed from."""

    report: dict[str, Any]
    features: FeatureTable

    @property
    def passed(self) -> bool:
        """Whether the verdict passes the policy."""
        return bool(self.report["verdict"]["passed"])


def _manifest_provenance(manifest: Manifest) -> dict[str, Any]:
    return {
        "path": manifest.path.name,  # no server path in a report
        "sha256": manifest.sha256,
        "n_scans": len(manifest.records),
        "n_members": manifest.n_members,
        "n_nonmembers": manifest.n_nonmembers,
        **({"source": dict(manifest.source)} if manifest.source else {}),
    }


def _check_manifest(manifest: Manifest) -> None:
    if manifest.n_members < 2 or manifest.n_nonmembers < 2:
        raise InputError(
            f"{manifest.path}: an assessment needs at least 2 members and 2 non-members "
            f"(got {manifest.n_members} and {manifest.n_nonmembers})"
        )


def run_assessment(
    manifest: Manifest,
    *,
    model: LoadedModel | None = None,
    predictions: dict[str, float] | None = None,
    predictions_path: Path | None = None,
    options: AssessmentOptions | None = None,
    cache: VolumeCache | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    reference_loader: Callable[[Path], Any] | None = None,
    features: FeatureTable | None = None,
) -> AssessmentResult:
    """Run a full membership-inference assessment.

    Args:
        manifest: the member and non-member scans.
        model: the loaded model (white-box and black-box feature sets).
        predictions: instead of a model, scan_id -> predicted age (black-box sets only).
        predictions_path: the file the predictions came from (for provenance).
        options: what to run.
        cache: conformed-volume cache.
        progress: called with (stage, fraction 0-1, message).
        should_stop: polled between batches and attacks; True cancels.
        reference_loader: loads a user-supplied reference model (the job's confined model host).
        features: the model's features on ``manifest``, computed beforehand (feature shards merged
            in manifest order): not extracted again; ``model`` still gives provenance and metadata.

    Returns:
        the report and the per-scan feature table.
    """
    if (model is None) == (predictions is None):
        raise InputError("give either a model or a predictions table, not both or neither")
    options = options or AssessmentOptions()
    policy = options.policy or Policy()
    _check_manifest(manifest)
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()

    def report_progress(stage: str, fraction: float, message: str) -> None:
        if progress is not None:
            progress(stage, min(max(fraction, 0.0), 1.0), message)

    with_refs = options.reference is not None
    features_share = _REF_FEATURES_SHARE if with_refs else _FEATURES_SHARE
    attacks_share = _REF_ATTACKS_SHARE if with_refs else _ATTACKS_SHARE

    if features is not None:
        if model is None or list(features.table["scan_id"]) != [r.scan_id for r in manifest.records]:
            raise InputError("precomputed features need the model and one row per manifest scan, in manifest order")
        model_provenance = model.provenance()
    elif model is not None:
        report_progress("features", 0.0, "scan QA of a random sample of the scans")
        early_scan_qa(manifest.records, model.metadata.conform_spec(), options.scan_qa, cache=cache, seed=options.seed)
        report_progress("features", 0.0, f"features of {len(manifest.records)} scans")
        features = extract_features(
            model,
            manifest,
            replace(options.extraction, scan_qa=options.scan_qa.mode != "off"),
            cache=cache,
            progress=lambda done, total: report_progress(
                "features", features_share * done / total, f"features {done}/{total} scans"
            ),
            should_stop=should_stop,
        )
        model_provenance = model.provenance()
    else:
        assert predictions is not None
        features = features_from_predictions(manifest, predictions)
        model_provenance = {
            "path": Path(predictions_path).name if predictions_path else None,
            "sha256": _sha256_or_none(predictions_path),
            "format": "predictions",
            "architecture": None,
            "metadata": None,
        }

    scan_quality = None  # InputError when most scans look unregistered or not skull-stripped
    if model is not None and options.scan_qa.mode != "off" and set(QA_COLUMNS) <= set(features.table.columns):
        scan_quality = scan_qa_section(features.table, options.scan_qa, template_for(model.metadata.conform_spec()))
    specs = default_attack_specs(features, options.classifiers, feature_sets=options.feature_sets)
    report_progress("attacks", features_share, f"{len(specs)} attacks x {options.repeats} repeats")
    run = run_attacks(
        features,
        specs,
        repeats=options.repeats,
        train_size=options.train_size,
        seed=options.seed,
        progress=lambda done, total, label: report_progress(
            "attacks", features_share + attacks_share * done / total, f"attack {done}/{total}: {label}"
        ),
        should_stop=should_stop,
    )
    if options.quantile:
        names = [n for n, a in QMIA_ATTACKS.items() if features.white_box or a.threat_model == "black-box"]
        run.attacks.extend(run_qmia_attacks(features, names, seed=options.seed, exposure=run.exposure))
    reference_provenance = None
    if options.reference is not None:
        refs = run_reference_attacks(
            features, manifest, options.reference, metadata=model.metadata if model is not None else None,
            device=options.extraction.device, batch_size=options.extraction.batch_size, cache=cache,
            loader=reference_loader, should_stop=should_stop, seed=options.seed,
            progress=lambda stage, fraction, message: report_progress(
                stage, features_share + attacks_share + _REF_SHARE * fraction, message),
        )
        run.attacks.extend(refs.attacks)
        run.exposure.update(refs.exposure)
        reference_provenance = refs.provenance
    report_progress("report", 0.98, "verdict and report")
    dp = getattr(model.metadata, "dp", None) if model is not None else None
    verdict = evaluate(run.attacks, policy, utility=utility(features), exposure=run.exposure,
                       dp_claim=dp.model_dump() if dp is not None else None, scan_quality=scan_quality)
    exposure = exposure_section(features, run.exposure, verdict.get("strongest_attack"))
    report = build_report(
        provenance=provenance(
            model=model_provenance,
            manifest=_manifest_provenance(manifest),
            settings={**options.settings(), "gradient_method_used": features.gradient_method,
                      "policy": verdict.get("policy")},
            references=reference_provenance,
            started=started,
            duration_s=time.perf_counter() - t0,
        ),
        utility=utility(features),
        attacks=run.attacks,
        exposure=exposure,
        verdict=verdict,
        scan_quality=scan_quality,
    )
    report_progress("done", 1.0, "done")
    return AssessmentResult(report=report, features=features)


def _sha256_or_none(path: Path | None) -> str | None:
    if path is None:
        return None
    return file_sha256(Path(path))
