"""``brainmia assess`` (centralised and ``--federated``) and ``brainmia features``: the
assessment of a model without a server."""

from __future__ import annotations

import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..progress import progress_bar, stderr
from .common import (
    EXIT_FAIL,
    EXIT_PASS,
    ArchKwOpt,
    ArchOpt,
    BatchOpt,
    BidsFilterOpt,
    BidsOpt,
    CacheOpt,
    DeviceOpt,
    LayersOpt,
    GradientMethodOpt,
    LoaderWorkersOpt,
    ManifestOpt,
    MembersOpt,
    ModelFlags,
    ModelOpt,
    NoCacheOpt,
    NonMembersOpt,
    NormOpt,
    QuietOpt,
    RunFlags,
    ScanFlags,
    ShapeOpt,
    VoxelOpt,
    confined_model_host,
    errors_exit_2,
    pick_device,
    requested_options,
    show_inputs,
)
from .references import ReferenceFlags, show_training_estimate
from .summary import print_federated, print_power, print_summary

if TYPE_CHECKING:
    from ..services.options import AssessmentOptionsIn


@dataclass(frozen=True)
class AssessInputs:
    """What the centralised and the federated assessment share.

    Attributes:
        scans: the manifest CSV, or the BIDS dataset and its member list.
        out: the output folder (a BIDS dataset's derived manifest goes there too).
        options: the requested options (the one mapping to the engine's).
        model: overrides of the model sidecars.
        run: device, batch size, layers, cache and progress display.
    """

    scans: ScanFlags
    out: Path
    options: AssessmentOptionsIn
    model: ModelFlags
    run: RunFlags
    references: ReferenceFlags | None = None


BIDS_MANIFEST = "bids-manifest.csv"
"""The manifest derived from a ``--bids`` dataset, written into the output folder."""


def assess(
    out: Annotated[Path, typer.Option("--out", help="Output folder for report.json, report.html, features.csv (and a --bids dataset's bids-manifest.csv).")],
    manifest: ManifestOpt = None,
    rounds: Annotated[Optional[list[Path]], typer.Argument(help="With --federated: the community model of every round: a folder of round_<n>.<ext> files, an archive (.zip/.tar.gz) of them, or the model files in round order.", show_default=False)] = None,
    federated: Annotated[bool, typer.Option("--federated", help="Assess a federation: every learner attacks the others with every round's model (ROUNDS); the manifest's learner column names the learner of each member scan.")] = False,
    max_rounds: Annotated[Optional[int], typer.Option("--max-rounds", min=2, help="With --federated: rounds whose features are computed, evenly spaced, always the final one (default 20).")] = None,
    trajectory_set: Annotated[Optional[list[str]], typer.Option("--trajectory-set", help="With --federated: feature set spanning rounds (repeatable): loss-trajectory, grad-norm-trajectory (default both).")] = None,
    bids: BidsOpt = None,
    members: MembersOpt = None,
    non_members: NonMembersOpt = None,
    bids_filter: BidsFilterOpt = None,
    model: ModelOpt = None,
    predictions: Annotated[Optional[Path], typer.Option("--predictions", help="CSV scan_id,prediction in place of --model: black-box feature sets only.")] = None,
    input_shape: ShapeOpt = None,
    voxel_size: VoxelOpt = None,
    normalize: NormOpt = None,
    arch: ArchOpt = None,
    arch_options: ArchKwOpt = None,
    feature_set: Annotated[Optional[list[str]], typer.Option("--feature-set", help="Feature set to attack with (repeatable; default: all of the paper's).")] = None,
    classifier: Annotated[Optional[list[str]], typer.Option("--classifier", help="Attack classifier (repeatable): threshold, logistic, mlp, gbt.")] = None,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Repeated attack splits.")] = 5,
    train_size: Annotated[Optional[int], typer.Option("--train-size", min=1, help="Members (= non-members) in each attacker-training split.")] = None,
    policy: Annotated[Optional[Path], typer.Option("--policy", help="Policy file (JSON or TOML) overriding the default thresholds.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: DeviceOpt = None,
    batch_size: BatchOpt = 8,
    layer: LayersOpt = None,
    reference: Annotated[Optional[int], typer.Option("--reference", min=2, help="Train this many reference models (even) the way the target was trained (--recipe, or the model sidecar's recipe) and run the reference-model attacks (LiRA, RMIA, calibrated loss).")] = None,
    recipe: Annotated[Optional[Path], typer.Option("--recipe", help="Training recipe of the target (JSON or TOML): how the reference models are trained (default 8 of them).")] = None,
    reference_models: Annotated[Optional[Path], typer.Option("--reference-models", help="A folder of reference models you trained (any supported format), with --keep.")] = None,
    keep: Annotated[Optional[Path], typer.Option("--keep", help="keep.csv of --reference-models: scan_id and one 0/1 column per model file stem (1 = trained on that scan).")] = None,
    reference_attack: Annotated[Optional[list[str]], typer.Option("--reference-attack", help="Reference attack (repeatable): calibrated-loss, lira-offline, lira-online, rmia, and their :grad-norm variants (default all).")] = None,
    no_quantile: Annotated[bool, typer.Option("--no-quantile", help="Skip the quantile-regression attacks (qmia).")] = False,
    scan_qa: Annotated[Optional[str], typer.Option("--scan-qa", help="Scan QA against the MNI152 template: fail (default; exit 2 when most scans look unregistered or not skull-stripped), warn (flagged scans only listed in the report) or off.")] = None,
    cache_dir: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    quiet: QuietOpt = False,
    loader_workers: LoaderWorkersOpt = None,
    gradient_method: GradientMethodOpt = None,
) -> None:
    """Run the full assessment: exit 0 when the verdict passes the policy, 1 when it fails, 2 on bad input or error."""
    from worker.engine.errors import InputError

    model_flags = ModelFlags(input_shape, voxel_size, normalize, arch, arch_options)
    run = RunFlags(device, batch_size, layer, cache_dir, no_cache, quiet, loader_workers, gradient_method)
    scans = ScanFlags(manifest, bids, members, non_members, bids_filter)
    with errors_exit_2():
        scans.check()
    asked = {"feature_sets": feature_set, "classifiers": classifier, "repeats": repeats, "seed": seed,
             "quantile": False if no_quantile else None, "scan_qa": scan_qa}
    references = ReferenceFlags(reference, recipe, reference_models, keep, reference_attack)
    if federated or rounds or max_rounds is not None or trajectory_set:
        with errors_exit_2():
            if not federated:
                raise InputError("ROUNDS, --max-rounds and --trajectory-set go with --federated")
            for flag, value in (("--model", model), ("--predictions", predictions), ("--train-size", train_size)):
                if value is not None:
                    raise InputError(f"{flag} does not go with --federated (the models are the ROUNDS; "
                                     "each attacker trains on its own scans)")
            if references.given:
                raise InputError("reference models do not go with --federated")
            options = requested_options(**asked, policy=policy,
                                        federated={"max_rounds": max_rounds, "trajectory_sets": trajectory_set})
        passed = _assess_federated(AssessInputs(scans, out, options, model_flags, run), rounds or [])
    else:
        with errors_exit_2():
            if (model is None) == (predictions is None):
                raise InputError("give exactly one of --model or --predictions")
            options = requested_options(**asked, train_size=train_size, policy=policy, reference=references.request())
        inputs = AssessInputs(scans, out, options, model_flags, run, references)
        passed = _assess_centralised(inputs, model, predictions)
    raise typer.Exit(EXIT_PASS if passed else EXIT_FAIL)


def _assess_centralised(inputs: AssessInputs, model: Path | None, predictions: Path | None) -> bool:
    """``brainmia assess --model M`` or ``--predictions CSV``; True when the verdict passes."""
    from frontend.export import write_outputs
    from worker.engine.assessment import run_assessment
    from worker.engine.predictions import load_predictions

    from ..services.options import engine_options

    with errors_exit_2(), ExitStack() as stack:
        device = pick_device(inputs.run.device)
        scans = inputs.scans.load(inputs.out / BIDS_MANIFEST, check_files=model is not None)
        loaded = preds = None
        if model is not None:
            host = stack.enter_context(confined_model_host(device))
            loaded = host.load(model, inputs.model.overrides())
        else:
            preds = load_predictions(predictions, scans)  # type: ignore[arg-type]
        options = engine_options(inputs.options, extraction=inputs.run.extraction(device, white_box=loaded is not None),
                                 reference_store=inputs.run.reference_store())
        if inputs.references is not None:
            options = inputs.references.supplied(options)
        show_inputs(scans, loaded)
        print_power(scans.n_members, scans.n_nonmembers, options)
        show_training_estimate(scans, options, loaded.metadata if loaded is not None else None,
                               cache=inputs.run.cache(), device=device)
        with progress_bar(not inputs.run.quiet) as bar:
            result = run_assessment(
                scans,
                model=loaded,
                predictions=preds,
                predictions_path=predictions,
                options=options,
                cache=inputs.run.cache(),
                progress=bar,
                reference_loader=(lambda path: host.load(path, inputs.model.overrides())) if loaded is not None else None,
            )
        paths = write_outputs(result, inputs.out)
    print_summary(result.report, paths)
    return bool(result.passed)


def _assess_federated(inputs: AssessInputs, rounds: list[Path]) -> bool:
    """``brainmia assess --federated ROUNDS``: every learner attacks the others; True when the verdict passes."""
    from frontend.export import write_outputs
    from worker.engine.federated import resolve_rounds, run_federated_assessment

    from ..services.options import engine_options
    from .common import archive_extractor

    with errors_exit_2(), tempfile.TemporaryDirectory(prefix="brainmia-rounds-") as tmp:
        device = pick_device(inputs.run.device)
        paths = resolve_rounds(rounds, extract=archive_extractor(), workdir=Path(tmp) / "rounds")
        scans = inputs.scans.load(inputs.out / BIDS_MANIFEST)
        options = engine_options(inputs.options, extraction=inputs.run.extraction(device), federated=True)
        show_inputs(scans, None)
        stderr.print(f"rounds: {len(paths)} community models, {paths[0].name} ... {paths[-1].name}", highlight=False)
        with progress_bar(not inputs.run.quiet) as bar, confined_model_host(device) as host:
            result = run_federated_assessment(
                paths, scans, options, overrides=inputs.model.overrides(), cache=inputs.run.cache(), progress=bar,
                loader=host.load,
            )
        written = write_outputs(result, inputs.out)
    print_federated(result.report)
    print_summary(result.report, written)
    return bool(result.passed)


def features(
    model: Annotated[Path, typer.Option("--model", help="Model file.")],
    out: Annotated[Path, typer.Option("--out", help="Feature table to write (.csv or .parquet); gradient arrays go beside it as .arrays.npz (a --bids dataset's manifest as .bids-manifest.csv).")],
    manifest: ManifestOpt = None,
    bids: BidsOpt = None,
    members: MembersOpt = None,
    non_members: NonMembersOpt = None,
    bids_filter: BidsFilterOpt = None,
    input_shape: ShapeOpt = None,
    voxel_size: VoxelOpt = None,
    normalize: NormOpt = None,
    arch: ArchOpt = None,
    arch_options: ArchKwOpt = None,
    black_box: Annotated[bool, typer.Option("--black-box", help="Predictions only, no gradients.")] = False,
    device: DeviceOpt = None,
    batch_size: BatchOpt = 8,
    layer: LayersOpt = None,
    cache_dir: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    quiet: QuietOpt = False,
    loader_workers: LoaderWorkersOpt = None,
    gradient_method: GradientMethodOpt = None,
) -> None:
    """Compute the per-scan feature table only."""
    from worker.engine.features import extract_features

    run = RunFlags(device, batch_size, layer, cache_dir, no_cache, quiet, loader_workers, gradient_method)
    flags = ScanFlags(manifest, bids, members, non_members, bids_filter)
    with errors_exit_2():
        flags.check()
    with errors_exit_2(), confined_model_host(pick_device(device)) as host:
        scans = flags.load(out.with_name(out.stem + "." + BIDS_MANIFEST))
        loaded = host.load(model, ModelFlags(input_shape, voxel_size, normalize, arch, arch_options).overrides())
        show_inputs(scans, loaded)
        with progress_bar(not quiet) as bar:
            table = extract_features(
                loaded,
                scans,
                run.extraction(host.device, white_box=not black_box),
                cache=run.cache(),
                progress=bar.counter("features", len(scans.records)),
            )
        path = table.save(out)
    typer.echo(f"features: {path} ({len(table.table)} scans, {len(table.table.columns)} columns)")
