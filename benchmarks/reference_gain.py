"""Does calibration pay? The best reference-model attack against the best MIDL-2021 attack, on a
target with a modest train/test gap and on a null target that never saw the audit members.

A synthetic cohort is split three ways: A (the target's training scans, audited as members),
B (never trained on, audited as non-members) and C (the null target's training scans, not
audited). Both targets are trained with the same recipe; K reference models are trained once
on random halves of A + B (the keep matrix) and reused for the null assessment. The maximum
over many noisy attacks is biased upward, so the same maxima are reported for the null target.

Usage: ``python benchmarks/reference_gain.py --out /tmp/gain [--subjects 450 --references 8]
[--brain-age-gap 3]``.
The last line is ``reference_gain=X null_reference_gain=Y`` (best reference AUC minus best
classifier AUC, for the target and for the null target).

Measured on the 2-core VM (``--subjects 450 --references 8 --epochs 70``, about 7 minutes a run):
with the cosine schedule, ``reference_gain=0.084 null_reference_gain=-0.021`` (seed 0) and
``0.146`` / ``0.011`` (seed 1); with ``--schedule constant``, ``-0.023`` / ``-0.044`` (brain-age gap
3) and ``-0.025`` / ``-0.069`` (gap 6). A constant learning rate leaves each model a noisy snapshot
of its last steps: the spread between models on one scan then drowns the membership shift the
references calibrate against; annealed models agree, and calibration pays.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch

from worker.engine.assessment import AssessmentOptions, run_assessment
from worker.engine.cache import VolumeCache
from worker.engine.manifest import load_manifest
from worker.engine.models import BrainAge3D, ModelMetadata, load_model, write_sidecar
from worker.engine.reference.recipe import Recipe
from worker.engine.reference.run import ReferenceOptions
from worker.engine.synth import CohortSpec, generate_cohort
from worker.engine.training import load_volumes, predict, train_brain_age

SHAPE, VOXEL, CHANNELS = (23, 27, 23), 8.0, (8, 16, 32)


def _split(manifest_path: Path, out: Path, seed: int) -> tuple[Path, list]:
    """audit.csv (A members, B non-members) and the records of C (the null target's training set)."""
    records = load_manifest(manifest_path).records
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(records))
    third = len(records) // 3
    groups = {"A": [records[i] for i in order[:third]], "B": [records[i] for i in order[third:2 * third]],
              "C": [records[i] for i in order[2 * third:]]}
    audit = out / "audit.csv"
    with audit.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["scan_id", "path", "age", "member"])
        for group, member in (("A", 1), ("B", 0)):
            for r in groups[group]:
                writer.writerow([r.scan_id, str(r.path), r.age, member])
    return audit, groups["C"]


def _train(records: list, recipe: Recipe, metadata: ModelMetadata, cache: VolumeCache, path: Path,
           seed: int) -> tuple[Path, float]:
    spec = metadata.conform_spec()
    x = load_volumes(records, spec, cache)
    y = torch.tensor([r.age for r in records], dtype=torch.float32)
    torch.manual_seed(seed)
    model = BrainAge3D(channels=CHANNELS, mean_age=float(y.mean()), age_scale=float(y.std()))
    train_brain_age(model, x, y, recipe.training_options(seed))
    mae = float((predict(model, x) - y).abs().mean())
    torch.jit.save(torch.jit.script(model.cpu().eval()), str(path))
    write_sidecar(path, metadata.model_copy(update={"recipe": recipe.to_dict()}))
    return path, mae


def _best(report: dict, family: set[str]) -> tuple[str, float, float, float | None]:
    ok = [a for a in report["attacks"] if a["status"] == "ok" and (a.get("family") or "classifier") in family]
    best = max(ok, key=lambda a: a["metrics"]["auc"]["mean"])
    auc = best["metrics"]["auc"]
    return best["name"], auc["mean"], auc["ci_low"], best["metrics"]["tpr_at_fpr_0.01"]["mean"]


def _assess(name: str, audit: Path, model_path: Path, options: AssessmentOptions, cache: VolumeCache,
            out: Path) -> dict:
    start = time.perf_counter()
    result = run_assessment(load_manifest(audit), model=load_model(model_path), options=options, cache=cache)
    report = result.report
    (out / f"{name.replace(' ', '_')}_report.json").write_text(json.dumps(report, default=str))
    print(f"{name}: assessed in {time.perf_counter() - start:.0f} s; verdict {report['verdict']['level']} "
          f"({report['verdict']['strongest_attack']})", flush=True)
    for a in report["attacks"]:
        if a["status"] == "ok" and a.get("family") in ("quantile", "reference"):
            auc, tpr = a["metrics"]["auc"], a["metrics"]["tpr_at_fpr_0.01"]
            holds = "holds 0.5" if auc["ci_low"] <= 0.5 <= auc["ci_high"] else "EXCLUDES 0.5"
            print(f"    {a['name']:28s} AUC {auc['mean']:.3f} [{auc['ci_low']:.3f}, {auc['ci_high']:.3f}] {holds}; "
                  f"TPR@1%FPR {tpr.get('mean')} [{tpr.get('ci_low')}, {tpr.get('ci_high')}]", flush=True)
    for family in ("classifier", "quantile", "reference"):
        attack, mean, low, tpr = _best(report, {family})
        print(f"  best {family:10s} {attack:32s} AUC {mean:.3f} (lower bound {low:.3f}) TPR@1%FPR {tpr}", flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--subjects", type=int, default=450)
    parser.add_argument("--references", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--weight-decay", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--schedule", default="cosine", choices=["constant", "cosine"],
                        help="learning-rate schedule of the target, null and reference recipe (cosine: "
                             "annealed to zero, as brain-age models are usually trained)")
    parser.add_argument("--brain-age-gap", type=float, default=CohortSpec.brain_age_gap,
                        help="SD (years) of the subjects' brain age around their age: the per-scan difficulty "
                             "every model shares, which reference models calibrate away")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cache = VolumeCache(args.out / "cache")
    cohort = generate_cohort(args.out / "cohort", CohortSpec(n_subjects=args.subjects, shape=SHAPE, voxel_size=VOXEL,
                                                             seed=args.seed, brain_age_gap=args.brain_age_gap))
    audit, null_train = _split(cohort, args.out, args.seed)
    members = [r for r in load_manifest(audit).records if r.member]
    others = [r for r in load_manifest(audit).records if not r.member]
    metadata = ModelMetadata(input_shape=SHAPE, voxel_size=(VOXEL,) * 3, normalize="zscore", arch="brain_age_3d",
                             arch_kwargs={"channels": list(CHANNELS)})
    recipe = Recipe(arch="brain_age_3d", arch_kwargs={"channels": list(CHANNELS)}, optimizer="adam", lr=3e-3,
                    weight_decay=args.weight_decay, epochs=args.epochs, batch_size=8, augment="shift",
                    schedule=args.schedule, seed=args.seed)
    target, train_mae = _train(members, recipe, metadata, cache, args.out / "target.pt", args.seed)
    test_mae = float(np.mean([abs(p - r.age) for p, r in zip(
        predict(torch.jit.load(str(target)), load_volumes(others, metadata.conform_spec(), cache)).tolist(), others)]))
    print(f"target: train MAE {train_mae:.2f} y, test MAE {test_mae:.2f} y, ratio {train_mae / test_mae:.2f} "
          f"({len(members)} members, {len(others)} non-members, all tested)")
    null, null_mae = _train(null_train, recipe, metadata, cache, args.out / "null.pt", args.seed + 1)
    print(f"null target: trained on {len(null_train)} other scans (train MAE {null_mae:.2f} y)")
    options = AssessmentOptions(repeats=args.repeats, seed=args.seed, reference=ReferenceOptions(
        n_models=args.references, recipe=recipe, store_dir=args.out / "references", seed=args.seed))
    report = _assess("target", audit, target, options, cache, args.out)
    null_report = _assess("null target", audit, null, options, cache, args.out)
    gain = _best(report, {"reference"})[1] - _best(report, {"classifier"})[1]
    null_gain = _best(null_report, {"reference"})[1] - _best(null_report, {"classifier"})[1]
    print(f"reference_gain={gain:.3f} null_reference_gain={null_gain:.3f}")


if __name__ == "__main__":
    main()
