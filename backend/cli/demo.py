"""``brainmia demo`` (a synthetic cohort, a model that memorises its members, its assessment)
and ``brainmia synth`` (a synthetic cohort only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..progress import progress_bar, stderr
from .common import QuietOpt, errors_exit_2, fail, requested_options
from .summary import print_federated, print_summary

DEFAULT_REFERENCES = 4
"""``brainmia demo --references``: as ``worker.engine.demo.DEMO_REFERENCES`` (not imported: ``--help`` stays light)."""


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

    with errors_exit_2():
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


def demo(
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default brainmia-demo, or brainmia-federated-demo with --federated).", show_default=False)] = None,
    subjects: Annotated[Optional[int], typer.Option("--subjects", min=8, help="Subjects in the synthetic cohort, half are members (default 200: 100 non-members, enough to measure TPR at 1% FPR).")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Training epochs of the demo model and of its reference models (default 80).")] = None,
    references: Annotated[int, typer.Option("--references", min=0, help="Reference models trained with the demo model's recipe for the reference-model attacks (LiRA, RMIA, calibrated loss): an even number, 0 for none.")] = DEFAULT_REFERENCES,
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
    if federated:
        if subjects is not None or epochs is not None:
            raise fail("--subjects and --epochs are for the centralised demo: with --federated use "
                       "--scans-per-learner and --rounds")
        if references != DEFAULT_REFERENCES:
            raise fail("--references is for the centralised demo: reference models do not apply to a federation")
        federation = Federation(learners=learners, rounds=rounds, sizes=sizes, ages=ages,
                                scans_per_learner=scans_per_learner)
        _demo_federated(out or Path("brainmia-federated-demo"), federation, repeats=repeats, seed=seed, quiet=quiet)
        return
    if rounds is not None or scans_per_learner is not None:
        raise fail("--rounds and --scans-per-learner go with --federated")
    if references == 1 or references % 2:
        raise fail(f"--references must be 0 (none) or an even number of reference models, got {references}: "
                   "each scan trains half of them")
    _demo_centralised(out or Path("brainmia-demo"), subjects=subjects, epochs=epochs, repeats=repeats, seed=seed,
                      references=references, quiet=quiet)



def _demo_centralised(out: Path, *, subjects: int | None, epochs: int | None, repeats: int | None, seed: int,
                      references: int, quiet: bool) -> None:
    """``brainmia demo``: a synthetic cohort, a demo model trained on its members, its assessment
    (with ``references`` reference models trained from the demo model's own recipe, its sidecar's)."""
    from frontend.export import write_outputs
    from worker.engine.assessment import run_assessment
    from worker.engine.cache import VolumeCache
    from worker.engine.demo import DemoOptions, prepare_demo
    from worker.engine.features import ExtractionOptions
    from worker.engine.models import load_model

    from ..services.options import DEFAULT_REPEATS, engine_options

    options = DemoOptions(subjects=subjects or 200, seed=seed)
    if epochs is not None:
        options.training.epochs = epochs
    cache = VolumeCache(out / "cache")
    with errors_exit_2():
        requested = requested_options(repeats=repeats or DEFAULT_REPEATS, seed=seed,
                                      reference={"models": references} if references else None)
        # the references follow the recipe in the demo model's sidecar; kept in the demo's folder
        attack_options = engine_options(requested, extraction=ExtractionOptions(),
                                        reference_store=out / "references")
        with progress_bar(not quiet) as bar:
            made = prepare_demo(out, options, cache=cache, progress=bar)
            stderr.print(
                f"demo model: MAE {made.train_mae:.2f} y on its {made.manifest.n_members} members (training scans), "
                f"{made.test_mae:.2f} y on {made.manifest.n_nonmembers} unseen scans",
                highlight=False,
            )
            model = load_model(made.model_path)
            result = run_assessment(made.manifest, model=model, options=attack_options, cache=cache, progress=bar)
        paths = write_outputs(result, out / "report")
    print_summary(result.report, paths)
    if references:
        stderr.print(_reference_line(result.report), highlight=False)
    typer.echo(f"Open the report: {paths['report_html'].resolve()}")


def _reference_line(report: dict) -> str:
    """The demo summary's line on the reference-model attacks: K, the best AUC, each TPR at 1% FPR."""
    from worker.engine.report_model import ranked_attacks

    refs = [a for a in ranked_attacks(report) if a.get("family") == "reference"]
    k = (report["provenance"].get("references") or {}).get("n_models")
    if not refs:
        return f"reference-model attacks ({k} reference models): none completed"

    def pct(attack: dict) -> str:
        tpr = attack["metrics"].get("tpr_at_fpr_0.01") or {}
        if tpr.get("mean") is None:
            return "n/a"
        low = "" if tpr.get("ci_low") is None else f" (CI low {100 * tpr['ci_low']:.0f}%)"
        return f"{100 * tpr['mean']:.0f}%{low}"

    auc = refs[0]["metrics"]["auc"]
    return (f"reference-model attacks ({k} reference models, every scan tested): strongest {refs[0]['name']} "
            f"AUC {auc['mean']:.3f}; TPR at 1% FPR: " + ", ".join(f"{a['name']} {pct(a)}" for a in refs))


@dataclass(frozen=True)
class Federation:
    """The synthetic federation of ``brainmia demo --federated``.

    Attributes:
        learners: number of learners.
        rounds: FedAvg rounds (None: the engine's default).
        sizes: learner sizes, ``uniform`` or ``skewed``.
        ages: ages across learners, ``iid`` or ``noniid``.
        scans_per_learner: mean training scans per learner (None: the engine's default).
    """

    learners: int
    rounds: int | None
    sizes: str
    ages: str
    scans_per_learner: int | None


def _demo_federated(out: Path, federation: Federation, *, repeats: int | None, seed: int, quiet: bool) -> None:
    """``brainmia demo --federated``: a synthetic federation trained with FedAvg, then assessed."""
    from frontend.export import write_outputs
    from worker.engine.cache import VolumeCache
    from worker.engine.federated import (
        FederatedAttackOptions,
        FederatedDemoOptions,
        prepare_federated_demo,
        run_federated_assessment,
    )
    from worker.engine.features import ExtractionOptions

    from ..services.options import engine_options

    demo_options = FederatedDemoOptions(seed=seed)
    if federation.scans_per_learner is not None:
        demo_options.scans_per_learner = federation.scans_per_learner
    cache = VolumeCache(out / "cache")
    with errors_exit_2():
        requested = requested_options(repeats=repeats or FederatedAttackOptions.repeats, seed=seed)
        attack_options = engine_options(requested, extraction=ExtractionOptions(), federated=True)
        with progress_bar(not quiet) as bar:
            made = prepare_federated_demo(
                out, federation.learners, sizes=federation.sizes, ages=federation.ages, options=demo_options,
                cache=cache, progress=bar, **({"rounds": federation.rounds} if federation.rounds is not None else {}),
            )
            last = made.history[-1]
            stderr.print(
                f"federation: {federation.learners} learners ({federation.sizes} sizes, {federation.ages} ages), "
                f"{len(made.model_paths)} FedAvg rounds; "
                f"final model MAE {last['mae_members']:.2f} y on the learners' scans, "
                f"{last['mae_unseen']:.2f} y on {made.manifest.n_nonmembers} unseen scans",
                highlight=False,
            )
            result = run_federated_assessment(made.model_paths, made.manifest, attack_options, cache=cache,
                                              progress=bar)
        paths = write_outputs(result, out / "report")
    print_federated(result.report)
    print_summary(result.report, paths)
    typer.echo(f"Open the report: {paths['report_html'].resolve()}")
