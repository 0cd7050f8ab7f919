"""The ``brainmia`` command line."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .progress import progress_bar, stderr

app = typer.Typer(
    name="brainmia",
    help="Measure how much a brain-age model leaks about who was in its training set.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2

ModelOpt = Annotated[Optional[Path], typer.Option("--model", help="Model file: TorchScript, torch.export (.pt2), safetensors or state dict.")]
ManifestOpt = Annotated[Path, typer.Option("--manifest", help="Manifest CSV: scan_id, path, age, member [, learner, attributes...].")]
ShapeOpt = Annotated[Optional[str], typer.Option("--input-shape", help="Model input grid, e.g. 91x109x91 (overrides the sidecar).")]
VoxelOpt = Annotated[Optional[float], typer.Option("--voxel-size", help="Model voxel size in mm (overrides the sidecar).")]
NormOpt = Annotated[Optional[str], typer.Option("--normalize", help="Intensity normalisation: zscore, none, minmax, robust.")]
ArchOpt = Annotated[Optional[str], typer.Option("--arch", help="Built-in architecture of a weights file: brain_age_3d, brain_age_slice_mean.")]
ArchKwOpt = Annotated[Optional[str], typer.Option("--arch-options", help='Architecture options as JSON, e.g. \'{"width": 0.5}\'.')]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="cpu, cuda, cuda:1... (default: CUDA when present).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Scans per vectorised pass.")]
LayersOpt = Annotated[Optional[list[str]], typer.Option("--layer", help="Layer whose full per-sample gradient is kept (repeatable; aliases first_conv, last_conv, output or a module path).")]
CacheOpt = Annotated[Optional[Path], typer.Option("--cache-dir", help="Conformed-volume cache (default: $BRAINMIA_CACHE_DIR or ~/.brainmia/cache/volumes).")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Do not cache conformed volumes.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


@app.callback()
def _configure() -> None:
    """Apply the settings every command shares (the bounds on scan volumes)."""
    from worker.engine.volume_bounds import set_volume_limits

    from .settings import get_settings

    with _errors_exit_2():
        set_volume_limits(get_settings().volume_limits)


@contextmanager
def _model_host(device: str) -> Iterator[Any]:
    """A confined model host (the settings' limits): a model file given to the CLI runs only there."""
    from .services.model_hosts import model_host

    from .settings import get_settings

    host = model_host(get_settings(), device)
    try:
        yield host
    finally:
        host.close()


def _fail(message: object) -> "typer.Exit":
    stderr.print("[bold red]error:[/]", str(message), highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_ERROR)


@contextmanager
def _errors_exit_2() -> Iterator[None]:
    """Report bad input and I/O errors on stderr and exit with code 2."""
    from worker.engine.errors import BrainMIAError

    try:
        yield
    except BrainMIAError as exc:
        raise _fail(exc) from None
    except (OSError, ValueError, RuntimeError) as exc:  # typer.Exit is raised outside this block
        raise _fail(f"{type(exc).__name__}: {exc}") from None


def _overrides(input_shape: str | None, voxel_size: float | None, normalize: str | None, arch: str | None, arch_options: str | None) -> dict[str, Any]:
    from worker.engine.errors import InputError
    from worker.engine.models import parse_shape

    kwargs = None
    if arch_options:
        try:
            kwargs = json.loads(arch_options)
        except json.JSONDecodeError as exc:
            raise InputError(f"--arch-options is not valid JSON: {exc}") from None
        if not isinstance(kwargs, dict):
            raise InputError("--arch-options must be a JSON object")
    return {
        "input_shape": parse_shape(input_shape) if input_shape else None,
        "voxel_size": voxel_size,
        "normalize": normalize,
        "arch": arch,
        "arch_kwargs": kwargs,
    }


def _cache(cache_dir: Path | None, no_cache: bool) -> Any:
    from worker.engine.cache import VolumeCache

    from .settings import get_settings

    if no_cache:
        return VolumeCache(None)
    return VolumeCache(cache_dir or get_settings().volume_cache_dir)


def _device(device: str | None) -> str:
    """The device to run on: the option, else ``BRAINMIA_DEVICE``, else CUDA when present."""
    from worker.engine.features import pick_device

    from .settings import get_settings

    return pick_device(device or get_settings().device)


def _extraction(device: str, batch_size: int, layers: list[str] | None, white_box: bool = True) -> Any:
    from worker.engine.features import DEFAULT_LAYERS, ExtractionOptions

    return ExtractionOptions(
        white_box=white_box,
        layers=tuple(layers) if layers else DEFAULT_LAYERS,
        batch_size=batch_size,
        device=device,
    )


def _show_inputs(manifest: Any, model: Any | None) -> None:
    stderr.print(
        f"manifest {manifest.path}: {len(manifest.records)} scans "
        f"({manifest.n_members} members, {manifest.n_nonmembers} non-members)",
        highlight=False,
    )
    if model is not None:
        meta = model.metadata
        stderr.print(
            f"model {model.path}: {model.format}, input {'x'.join(map(str, meta.input_shape))} at "
            f"{'/'.join(f'{v:g}' for v in meta.voxel_size)} mm, normalize={meta.normalize}",
            highlight=False,
        )


def _print_summary(report: dict[str, Any], paths: dict[str, Path]) -> None:
    verdict = report["verdict"]
    colour = {"low": "green", "medium": "yellow", "high": "red"}.get(verdict["level"], "white")
    stderr.print(
        f"verdict: [bold {colour}]{verdict['level'].upper()}[/] "
        f"({'passes' if verdict['passed'] else 'fails'} the policy) - {verdict.get('summary', '')}",
        highlight=False,
    )
    ok = [a for a in report["attacks"] if a["status"] == "ok"]
    best = sorted(ok, key=lambda a: -(a["metrics"]["accuracy"]["mean"] or 0))[:3]
    for attack in best:
        acc, auc = attack["metrics"]["accuracy"], attack["metrics"]["auc"]
        stderr.print(
            f"  {attack['name']:55s} accuracy {100 * acc['mean']:5.1f}%  AUC {auc['mean']:.3f} "
            f"[{auc['ci_low']:.3f}, {auc['ci_high']:.3f}]",
            highlight=False,
        )
    errored = [a["name"] for a in report["attacks"] if a["status"] != "ok"]
    if errored:
        stderr.print(f"  [red]attacks that failed:[/] {', '.join(errored)}", highlight=False)
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")


def _archive_extractor() -> Any:
    """The service's safe archive extraction, with the settings' limits."""
    from .archives import ArchiveLimits, extract_archive
    from .settings import get_settings

    settings = get_settings()
    limits = ArchiveLimits(
        max_total_bytes=settings.max_extracted_bytes,
        max_members=settings.max_archive_members,
        max_ratio=settings.max_compression_ratio,
    )
    return lambda archive, dest: extract_archive(archive, dest, limits)


def _federated_options(
    feature_set: list[str] | None,
    trajectory_set: list[str] | None,
    classifier: list[str] | None,
    repeats: int | None,
    max_rounds: int | None,
    seed: int,
    extraction: Any,
    policy: Path | None,
) -> Any:
    """The engine's federated attack options; None and empty lists keep its defaults."""
    from worker.engine.federated import FederatedAttackOptions
    from worker.engine.verdict import load_policy

    given: dict[str, Any] = {"seed": seed, "extraction": extraction}
    for key, value in (("feature_sets", feature_set), ("trajectory_sets", trajectory_set),
                       ("classifiers", classifier), ("repeats", repeats), ("max_rounds", max_rounds)):
        if value:
            given[key] = tuple(value) if isinstance(value, list) else value
    if policy is not None:
        given["policy"] = load_policy(policy)
    return FederatedAttackOptions(**given)


def _print_federated(report: dict[str, Any]) -> None:
    """The attacker x victim summary of a federated report, on stderr."""
    from frontend.federated_view import build_federated_context

    view = build_federated_context(report)
    if view is None:
        return
    stderr.print(
        f"federation: {view['n_learners']} learners, {view['n_rounds']} rounds; attack {view['attack']}",
        highlight=False,
    )
    stderr.print(f"  mean accuracy over attacker-victim pairs {view['overall']['accuracy']}", highlight=False)
    if view["final_round"]:
        stderr.print(f"  final round alone: {view['final_round']['accuracy']} ({view['final_round']['attack']})",
                     highlight=False)
    for row in view["per_attacker"]:
        stderr.print(f"  attacker {row['learner']}: accuracy {row['accuracy']}", highlight=False)


def _assess_federated(
    rounds: list[Path],
    federated: bool,
    manifest: Path,
    out: Path,
    *,
    model: Path | None,
    predictions: Path | None,
    train_size: int | None,
    overrides: tuple[Any, ...],
    feature_set: list[str] | None,
    trajectory_set: list[str] | None,
    classifier: list[str] | None,
    repeats: int,
    max_rounds: int | None,
    policy: Path | None,
    seed: int,
    device: str | None,
    batch_size: int,
    layer: list[str] | None,
    cache: tuple[Path | None, bool],
    quiet: bool,
) -> None:
    """``brainmia assess --federated ROUNDS``: the federated assessment; exits like ``assess``."""
    import tempfile

    from frontend.export import write_outputs
    from worker.engine.errors import InputError
    from worker.engine.federated import resolve_rounds, run_federated_assessment
    from worker.engine.manifest import load_manifest

    with _errors_exit_2(), tempfile.TemporaryDirectory(prefix="brainmia-rounds-") as tmp:
        if not federated:
            raise InputError("ROUNDS, --max-rounds and --trajectory-set go with --federated")
        for flag, value in (("--model", model), ("--predictions", predictions), ("--train-size", train_size)):
            if value is not None:
                raise InputError(f"{flag} does not go with --federated (the models are the ROUNDS; "
                                 "each attacker trains on its own scans)")
        device = _device(device)
        paths = resolve_rounds(rounds, extract=_archive_extractor(), workdir=Path(tmp) / "rounds")
        scans = load_manifest(manifest)
        options = _federated_options(feature_set, trajectory_set, classifier, repeats, max_rounds, seed,
                                     _extraction(device, batch_size, layer), policy)
        _show_inputs(scans, None)
        stderr.print(f"rounds: {len(paths)} community models, {paths[0].name} ... {paths[-1].name}", highlight=False)
        with progress_bar(not quiet) as bar, _model_host(device) as host:
            result = run_federated_assessment(
                paths, scans, options, overrides=_overrides(*overrides), cache=_cache(*cache), progress=bar,
                loader=host.load,
            )
        written = write_outputs(result, out)
    _print_federated(result.report)
    _print_summary(result.report, written)
    raise typer.Exit(EXIT_PASS if result.passed else EXIT_FAIL)


@app.command()
def assess(
    manifest: ManifestOpt,
    out: Annotated[Path, typer.Option("--out", help="Output folder for report.json, report.html, features.csv.")],
    rounds: Annotated[Optional[list[Path]], typer.Argument(help="With --federated: the community model of every round: a folder of round_<n>.<ext> files, an archive (.zip/.tar.gz) of them, or the model files in round order.", show_default=False)] = None,
    federated: Annotated[bool, typer.Option("--federated", help="Assess a federation: every learner attacks the others with every round's model (ROUNDS); the manifest's learner column names the learner of each member scan.")] = False,
    max_rounds: Annotated[Optional[int], typer.Option("--max-rounds", min=1, help="With --federated: rounds whose features are computed, evenly spaced, always the final one (default 20).")] = None,
    trajectory_set: Annotated[Optional[list[str]], typer.Option("--trajectory-set", help="With --federated: feature set spanning rounds (repeatable): loss-trajectory, grad-norm-trajectory (default both).")] = None,
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
    cache_dir: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run the full assessment: exit 0 when the verdict passes the policy, 1 when it fails, 2 on bad input or error."""
    from frontend.export import write_outputs
    from worker.engine.assessment import AssessmentOptions, run_assessment
    from worker.engine.errors import InputError
    from worker.engine.manifest import load_manifest
    from worker.engine.predictions import load_predictions
    from worker.engine.verdict import Policy, load_policy

    if federated or rounds or max_rounds is not None or trajectory_set:
        _assess_federated(
            rounds or [], federated, manifest, out, model=model, predictions=predictions, train_size=train_size,
            overrides=(input_shape, voxel_size, normalize, arch, arch_options),
            feature_set=feature_set, trajectory_set=trajectory_set, classifier=classifier, repeats=repeats,
            max_rounds=max_rounds, policy=policy, seed=seed, device=device, batch_size=batch_size, layer=layer,
            cache=(cache_dir, no_cache), quiet=quiet,
        )
    with _errors_exit_2(), ExitStack() as stack:
        device = _device(device)
        if (model is None) == (predictions is None):
            raise InputError("give exactly one of --model or --predictions")
        scans = load_manifest(manifest, check_files=model is not None)
        loaded = preds = None
        if model is not None:
            host = stack.enter_context(_model_host(device))
            loaded = host.load(model, _overrides(input_shape, voxel_size, normalize, arch, arch_options))
        else:
            preds = load_predictions(predictions, scans)  # type: ignore[arg-type]
        options = AssessmentOptions(
            feature_sets=feature_set or None,
            classifiers=classifier or None,
            repeats=repeats,
            train_size=train_size,
            seed=seed,
            extraction=_extraction(device, batch_size, layer, white_box=loaded is not None),
            policy=load_policy(policy) if policy else Policy(),
        )
        _show_inputs(scans, loaded)
        with progress_bar(not quiet) as bar:
            result = run_assessment(
                scans,
                model=loaded,
                predictions=preds,
                predictions_path=predictions,
                options=options,
                cache=_cache(cache_dir, no_cache),
                progress=bar,
            )
        paths = write_outputs(result, out)
    _print_summary(result.report, paths)
    raise typer.Exit(EXIT_PASS if result.passed else EXIT_FAIL)


@app.command()
def features(
    model: Annotated[Path, typer.Option("--model", help="Model file.")],
    manifest: ManifestOpt,
    out: Annotated[Path, typer.Option("--out", help="Feature table to write (.csv or .parquet); gradient arrays go beside it as .arrays.npz.")],
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
) -> None:
    """Compute the per-scan feature table only."""
    from worker.engine.features import extract_features
    from worker.engine.manifest import load_manifest

    with _errors_exit_2(), _model_host(_device(device)) as host:
        device = host.device
        scans = load_manifest(manifest)
        loaded = host.load(model, _overrides(input_shape, voxel_size, normalize, arch, arch_options))
        _show_inputs(scans, loaded)
        with progress_bar(not quiet) as bar:
            table = extract_features(
                loaded,
                scans,
                _extraction(device, batch_size, layer, white_box=not black_box),
                cache=_cache(cache_dir, no_cache),
                progress=bar.counter("features", len(scans.records)),
            )
        path = table.save(out)
    typer.echo(f"features: {path} ({len(table.table)} scans, {len(table.table.columns)} columns)")


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Output folder (scans/ and manifest.csv).")],
    subjects: Annotated[int, typer.Option("--subjects", min=2, help="Number of subjects.")] = 200,
    shape: Annotated[str, typer.Option("--shape", help="Grid, e.g. 91x109x91 (2 mm) or 45x54x45 (4 mm).")] = "91x109x91",
    voxel_size: Annotated[float, typer.Option("--voxel-size", help="Voxel size in mm.")] = 2.0,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    member_fraction: Annotated[float, typer.Option("--member-fraction", min=0.0, max=1.0)] = 0.5,
    federated: Annotated[bool, typer.Option("--federated", help="Deal the members out to learners: the manifest gets a learner column (empty for unseen scans).")] = False,
    learners: Annotated[Optional[int], typer.Option("--learners", min=1, help="With --federated: number of learners (default 8).")] = None,
    sizes: Annotated[Optional[str], typer.Option("--sizes", help="With --federated: learner sizes, uniform (default) or skewed.")] = None,
    ages: Annotated[Optional[str], typer.Option("--ages", help="With --federated: ages across learners, iid (default) or noniid (one contiguous age range per learner).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Write a synthetic cohort built from the MNI152 template: NIfTI files and manifest.csv."""
    from worker.engine.errors import InputError
    from worker.engine.federated import write_federated_cohort
    from worker.engine.models import parse_shape
    from worker.engine.synth import CohortSpec, generate_cohort

    with _errors_exit_2():
        if not federated and (learners is not None or sizes is not None or ages is not None):
            raise InputError("--learners, --sizes and --ages go with --federated")
        spec = CohortSpec(n_subjects=subjects, shape=parse_shape(shape), voxel_size=voxel_size, seed=seed, member_fraction=member_fraction)
        with progress_bar(not quiet) as bar:
            counter = bar.counter("subjects", subjects)
            if federated:
                path = write_federated_cohort(out, spec, learners or 8, sizes or "uniform", ages or "iid",
                                              unseen_fraction=1.0 - member_fraction, progress=counter)
            else:
                path = generate_cohort(out, spec, progress=counter)
    typer.echo(f"manifest: {path}")


@app.command()
def demo(
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default brainmia-demo, or brainmia-federated-demo with --federated).", show_default=False)] = None,
    subjects: Annotated[Optional[int], typer.Option("--subjects", min=8, help="Subjects in the synthetic cohort, half are members (default 200).")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Training epochs of the demo model (default 60).")] = None,
    repeats: Annotated[Optional[int], typer.Option("--repeats", min=1, help="Repeated attack splits (default 5; 3 per attacker with --federated).")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    federated: Annotated[bool, typer.Option("--federated", help="A federation instead: learners train one model with FedAvg, every round's model is saved, and every learner attacks the others.")] = False,
    learners: Annotated[int, typer.Option("--learners", min=2, help="With --federated: number of learners.")] = 8,
    rounds: Annotated[Optional[int], typer.Option("--rounds", min=1, help="With --federated: FedAvg rounds (default 100 short rounds).")] = None,
    sizes: Annotated[str, typer.Option("--sizes", help="With --federated: learner sizes, uniform or skewed.")] = "uniform",
    ages: Annotated[str, typer.Option("--ages", help="With --federated: ages across learners, iid or noniid.")] = "noniid",
    scans_per_learner: Annotated[Optional[int], typer.Option("--scans-per-learner", min=2, help="With --federated: mean training scans per learner (default 5).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Make a synthetic cohort, train a model that memorises its members, and assess it."""
    from frontend.export import write_outputs
    from worker.engine.assessment import AssessmentOptions, run_assessment
    from worker.engine.cache import VolumeCache
    from worker.engine.demo import DemoOptions, prepare_demo
    from worker.engine.models import load_model

    if federated:
        if subjects is not None or epochs is not None:
            raise _fail("--subjects and --epochs are for the centralised demo: with --federated use "
                        "--scans-per-learner and --rounds")
        _demo_federated(out or Path("brainmia-federated-demo"), learners=learners, rounds=rounds, sizes=sizes,
                        ages=ages, scans_per_learner=scans_per_learner, repeats=repeats, seed=seed, quiet=quiet)
        return
    if rounds is not None or scans_per_learner is not None:
        raise _fail("--rounds and --scans-per-learner go with --federated")
    out = out or Path("brainmia-demo")
    options = DemoOptions(subjects=subjects or 200, seed=seed)
    options.training.epochs = epochs or 60
    repeats = repeats or 5
    cache = VolumeCache(out / "cache")
    with _errors_exit_2():
        with progress_bar(not quiet) as bar:
            made = prepare_demo(out, options, cache=cache, progress=bar)
            stderr.print(
                f"demo model: MAE {made.train_mae:.2f} y on its {made.manifest.n_members} members (training scans), "
                f"{made.test_mae:.2f} y on {made.manifest.n_nonmembers} unseen scans",
                highlight=False,
            )
            model = load_model(made.model_path)
            result = run_assessment(
                made.manifest, model=model, options=AssessmentOptions(repeats=repeats, seed=seed), cache=cache, progress=bar
            )
        paths = write_outputs(result, out / "report")
    _print_summary(result.report, paths)
    typer.echo(f"Open the report: {paths['report_html'].resolve()}")


def _demo_federated(
    out: Path,
    *,
    learners: int,
    rounds: int | None,
    sizes: str,
    ages: str,
    scans_per_learner: int | None,
    repeats: int | None,
    seed: int,
    quiet: bool,
) -> None:
    """``brainmia demo --federated``: a synthetic federation trained with FedAvg, then assessed."""
    from frontend.export import write_outputs
    from worker.engine.cache import VolumeCache
    from worker.engine.federated import (
        FederatedAttackOptions,
        FederatedDemoOptions,
        prepare_federated_demo,
        run_federated_assessment,
    )

    demo_options = FederatedDemoOptions(seed=seed)
    if scans_per_learner is not None:
        demo_options.scans_per_learner = scans_per_learner
    attack_options = FederatedAttackOptions(seed=seed)
    if repeats is not None:
        attack_options.repeats = repeats
    cache = VolumeCache(out / "cache")
    with _errors_exit_2():
        with progress_bar(not quiet) as bar:
            made = prepare_federated_demo(out, learners, sizes=sizes, ages=ages, options=demo_options, cache=cache,
                                          progress=bar, **({"rounds": rounds} if rounds is not None else {}))
            last = made.history[-1]
            stderr.print(
                f"federation: {learners} learners ({sizes} sizes, {ages} ages), {len(made.model_paths)} FedAvg rounds; "
                f"final model MAE {last['mae_members']:.2f} y on the learners' scans, "
                f"{last['mae_unseen']:.2f} y on {made.manifest.n_nonmembers} unseen scans",
                highlight=False,
            )
            result = run_federated_assessment(made.model_paths, made.manifest, attack_options, cache=cache,
                                              progress=bar)
        paths = write_outputs(result, out / "report")
    _print_federated(result.report)
    _print_summary(result.report, paths)
    typer.echo(f"Open the report: {paths['report_html'].resolve()}")


@app.command()
def submit(
    model: Annotated[Path, typer.Option("--model", help="Model file to upload (TorchScript, .pt2, safetensors, state dict).")],
    server: Annotated[str, typer.Option("--server", envvar="BRAINMIA_SERVER", help="Base URL of the BrainMIA server, e.g. http://brainmia:8000 (or $BRAINMIA_SERVER).")],
    token: Annotated[Optional[str], typer.Option("--token", envvar="BRAINMIA_TOKEN", show_default=False, help="API token (or $BRAINMIA_TOKEN).")] = None,
    manifest: Annotated[Optional[Path], typer.Option("--manifest", help="Manifest CSV: it and the scans it lists are packed into a .tar.gz and uploaded.")] = None,
    archive: Annotated[Optional[Path], typer.Option("--archive", help="A .zip / .tar.gz holding manifest.csv and the scans, uploaded as it is.")] = None,
    metadata: Annotated[Optional[str], typer.Option("--metadata", help="Model metadata: a JSON file or JSON text (default: the model's sidecar <model>.json).")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the verdict (default), or print the assessment id and exit 0.")] = True,
    out: Annotated[Path, typer.Option("--out", help="Folder for report.json, report.html and features.csv.")] = Path("brainmia-report"),
    repeats: Annotated[Optional[int], typer.Option("--repeats", min=1, help="Repeated attack splits (server default: 5).")] = None,
    classifier: Annotated[Optional[list[str]], typer.Option("--classifier", help="Attack classifier (repeatable): threshold, logistic, mlp, gbt.")] = None,
    feature_set: Annotated[Optional[list[str]], typer.Option("--feature-set", help="Feature set to attack with (repeatable; default: all of the paper's).")] = None,
    policy: Annotated[Optional[Path], typer.Option("--policy", help="Policy file (JSON or TOML) overriding the server's default thresholds.")] = None,
    poll_interval: Annotated[float, typer.Option("--poll-interval", min=0.05, help="Seconds between progress polls.")] = 2.0,
    timeout: Annotated[Optional[float], typer.Option("--timeout", min=0.0, help="Give up waiting after this many seconds (exit 2; the job goes on).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Run an assessment on a BrainMIA server: exit 0 when the verdict passes the policy, 1 when it fails, 2 on bad input or error."""
    import tempfile

    from .client import ApiError, BrainMIAClient, JobFailed, load_metadata, pack_manifest, sidecar_metadata

    def api_failure(exc: ApiError, doing: str) -> typer.Exit:
        stderr.print(f"[bold red]error:[/] {doing}: {exc.lines()[0]}", highlight=False, soft_wrap=True)
        for line in exc.lines()[1:]:
            stderr.print(line, highlight=False, soft_wrap=True)
        return typer.Exit(EXIT_ERROR)

    if not token:
        raise _fail("an API token is required: --token or $BRAINMIA_TOKEN")
    if (manifest is None) == (archive is None):
        raise _fail("give exactly one of --manifest or --archive")
    scans = manifest if manifest is not None else archive
    assert scans is not None
    for label, path in (("--model", model), ("--manifest" if manifest else "--archive", scans)):
        if not path.is_file():
            raise _fail(f"{label}: {path} is not a file")
    try:
        meta = load_metadata(metadata) if metadata is not None else sidecar_metadata(model)
    except (OSError, ValueError) as exc:
        raise _fail(exc) from None
    options: dict[str, Any] = {}
    if repeats is not None:
        options["repeats"] = repeats
    if classifier:
        options["classifiers"] = classifier
    if feature_set:
        options["feature_sets"] = feature_set
    if policy is not None:
        try:
            text = policy.read_text(encoding="utf-8")
            if policy.suffix.lower() == ".toml":
                import tomllib

                options["policy"] = tomllib.loads(text)
            else:
                options["policy"] = json.loads(text)
        except (OSError, ValueError) as exc:
            raise _fail(f"--policy {policy}: {exc}") from None

    doing = "checking the token"
    with BrainMIAClient(server, token) as client, tempfile.TemporaryDirectory(prefix="brainmia-submit-") as tmp:
        try:
            client.me()
            with progress_bar(not quiet) as bar:

                def sent(label: str) -> Any:
                    return lambda done, total: bar("upload", done / total if total else 1.0, f"{label} {done / 1e6:.1f}/{total / 1e6:.1f} MB")

                doing = f"uploading the model {model}"
                model_row = client.upload_model(model, meta, progress=sent("model"))
                if manifest is not None:
                    doing = f"packing {manifest}"
                    bar("pack", 0.0, f"{manifest} and its scans")
                    archive = pack_manifest(manifest, Path(tmp) / "scans.tar.gz")
                assert archive is not None
                doing = f"uploading the scans {scans}"
                scan_set = client.upload_scan_set(archive, name=scans.name, progress=sent("scans"))
            stderr.print(
                f"scan set {scan_set['id']}: {scan_set.get('n_scans')} scans ({scan_set.get('n_members')} members, "
                f"{scan_set.get('n_nonmembers')} non-members); model {model_row['id']} ({model_row.get('format')})",
                highlight=False,
            )
            doing = "starting the assessment"
            job = client.start_assessment(model_row["id"], scan_set["id"], options)
            stderr.print(f"assessment {job['id']} {job.get('state', 'queued')} on {server}", highlight=False)
            if not wait:
                typer.echo(f"assessment: {job['id']}")
                raise typer.Exit(EXIT_PASS)
            doing = f"waiting for assessment {job['id']}"
            with progress_bar(not quiet) as bar:
                client.wait(
                    job["id"],
                    poll_interval=poll_interval,
                    timeout=timeout,
                    on_update=lambda j: bar(str(j.get("stage") or j.get("state")), float(j.get("progress") or 0.0), str(j.get("message") or "")),
                )
            doing = f"downloading the results of assessment {job['id']}"
            paths = {key: client.download(job["id"], name, out / name)
                     for key, name in (("report_json", "report.json"), ("report_html", "report.html"), ("features", "features.csv"))}
        except ApiError as exc:
            raise api_failure(exc, doing) from None
        except JobFailed as exc:
            stderr.print(f"[bold red]error:[/] assessment {exc.job.get('id')} {exc.job.get('state')}: {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_ERROR) from None
        except (TimeoutError, OSError, ValueError) as exc:
            raise _fail(f"{doing}: {exc}") from None
    try:
        report = json.loads(paths["report_json"].read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _fail(f"the downloaded report.json is unreadable: {exc}") from None
    _print_summary(report, paths)
    raise typer.Exit(EXIT_PASS if report["verdict"]["passed"] else EXIT_FAIL)


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option("--host", help="Address to listen on (default: $BRAINMIA_HOST or 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="Port (default: $BRAINMIA_PORT or 8000).")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
    demo: Annotated[bool, typer.Option("--demo", help="Also load the demo: a synthetic cohort and a model trained to memorise its members (made once, about 2 minutes on 2 CPU cores), with its assessment queued.")] = False,
) -> None:
    """Serve the dashboard and the API (embedded mode: database, storage and a worker in this process)."""
    import uvicorn

    from .app import create_app
    from .settings import get_settings

    settings = get_settings()
    with _errors_exit_2():
        application = create_app(settings)
        if settings.embedded:
            token = ensure_admin_token(application.state.sessionmaker)
            if token:
                typer.echo(f"Admin token (shown once): {token}")
                stderr.print("Keep it: sign in to the dashboard with it, or create more with `brainmia admin create-token`.")
        if demo:
            from .demo_seed import seed_demo

            stderr.print("Preparing the demo model and cohort (once; later starts reuse them)...")
            with progress_bar(True) as bar:
                seeded = seed_demo(application.state.sessionmaker, application.state.storage, settings, progress=bar)
            stderr.print(
                f"Demo assessment {seeded.assessment_id[:8]} {'queued' if seeded.created else 'already there'}: "
                "sign in and open it from the Assessments page.", highlight=False,
            )
    mode = "embedded" if settings.embedded else "distributed"
    stderr.print(f"BrainMIA ({mode} mode, data in {settings.data_dir}) on http://{host or settings.host}:{port or settings.port}", highlight=False)
    # proxy headers are the app's to trust (Settings.trusted_proxies), not uvicorn's default of 127.0.0.1
    uvicorn.run(application, host=host or settings.host, port=port or settings.port, log_level=log_level,
                proxy_headers=False)


def ensure_admin_token(factory: Any) -> str | None:
    """On a first start (no token at all), create an administrator token and return it."""
    from .auth import DEFAULT_ORG, create_token, has_tokens
    from .db.session import session_scope

    with session_scope(factory) as session:
        if has_tokens(session):
            return None
        return create_token(session, "admin", DEFAULT_ORG, admin=True)


@app.command("worker")
def worker_command(
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Jobs at a time: 1 runs them in this process (solo pool, one per GPU); more forks a pool.")] = 1,
    queues: Annotated[Optional[str], typer.Option("--queues", "-Q", help="Comma-separated queues to consume (default: brainmia).")] = None,
    hostname: Annotated[Optional[str], typer.Option("--hostname", "-n", help="Worker node name (default: brainmia@<host>).")] = None,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help="Celery log level.")] = "INFO",
) -> None:
    """Run a Celery worker for the distributed mode (needs BRAINMIA_DATABASE_URL and BRAINMIA_BROKER_URL)."""
    from .settings import get_settings

    settings = get_settings()
    if settings.embedded:
        raise _fail(
            "`brainmia worker` is for the distributed mode: set BRAINMIA_DATABASE_URL (e.g. "
            "postgresql+psycopg://...) and BRAINMIA_BROKER_URL (e.g. redis://redis:6379/0). "
            "In embedded mode `brainmia serve` runs its own worker."
        )
    from worker.celery_app import run_worker

    from .storage import Storage, clean_at_start

    clean_at_start(Storage(settings.storage_dir), settings)
    queue_list = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    raise typer.Exit(run_worker(settings, concurrency=concurrency, queues=queue_list, hostname=hostname, loglevel=loglevel))


admin_app = typer.Typer(help="Administration: database migrations and API tokens.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")


@admin_app.command("migrate")
def admin_migrate() -> None:
    """Create or upgrade the database tables (the API does it itself in embedded mode)."""
    from .db.migrate import upgrade_database
    from .settings import get_settings

    settings = get_settings()
    with _errors_exit_2():
        try:
            upgrade_database(settings.sqlalchemy_url)
        except Exception as exc:  # noqa: BLE001 - database errors of any driver: exit 2
            raise RuntimeError(f"cannot migrate the database: {exc}") from None
    typer.echo(f"database up to date: {_masked_url(settings.sqlalchemy_url)}")


@admin_app.command("create-token")
def admin_create_token(
    name: Annotated[str, typer.Option("--name", help="Who or what uses the token (shown in the audit log).")],
    org: Annotated[str, typer.Option("--org", help="Organisation (created when new).")] = "default",
    admin: Annotated[bool, typer.Option("--admin", help="May create tokens and read the audit log.")] = False,
) -> None:
    """Create an API token and print it (the only time it is shown)."""
    from sqlalchemy import select

    from .auth import create_token, hash_token
    from .db.migrate import upgrade_database
    from .db.models import ApiToken, AuditEvent
    from .db.session import make_engine, make_sessionmaker, session_scope
    from .settings import get_settings

    settings = get_settings()
    with _errors_exit_2():
        try:
            if settings.embedded:
                upgrade_database(settings.sqlalchemy_url)
            engine = make_engine(settings.sqlalchemy_url)
            try:
                with session_scope(make_sessionmaker(engine)) as session:
                    token = create_token(session, name, org, admin=admin)
                    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
                    session.add(AuditEvent(
                        org_id=row.org_id, actor="cli", action="create-token", object_type="token",
                        object_id=row.id, detail={"name": name, "is_admin": admin, "via": "brainmia admin create-token"},
                    ))
            finally:
                engine.dispose()
        except Exception as exc:  # noqa: BLE001 - database errors of any driver: exit 2
            raise RuntimeError(f"cannot create the token: {exc}") from None
    stderr.print(f"token for '{name}' of organisation '{org}'{' (administrator)' if admin else ''}; it is shown once:", highlight=False)
    typer.echo(token)


def _masked_url(url: str) -> str:
    """A database URL without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        stderr.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
