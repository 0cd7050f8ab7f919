"""The stages of ``benchmarks/assessment.py`` (see its docstring for what is timed and how).

Kept apart from that script because data-loader workers start from a fork server that re-runs the
main script's top level in every worker (``multiprocessing``'s main-module fix-up): with this
module's imports (torch, the engine, scikit-learn) at the script's top level, each loader added
about 2 s of start-up to every decode stage, which ``brainmia`` itself does not pay (its entry
point imports in 0.2 s).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from worker.engine.assessment import AssessmentOptions, run_assessment
from worker.engine.cache import VolumeCache
from worker.engine.dataset import ScanDataset, make_loader
from worker.engine.features import ExtractionOptions
from worker.engine.manifest import load_manifest
from worker.engine.models import BrainAge3D, ModelMetadata, load_model, write_sidecar

REAL_T1 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real-t1"
SHAPE_1MM = (182, 218, 182)
AFFINE_1MM = np.array([[-1.0, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])


def _seeds() -> list[tuple[np.ndarray, np.ndarray]]:
    """The real T1s as (int16 volume, affine), or one smooth synthetic head when absent."""
    files = sorted(REAL_T1.glob("*.nii.gz")) if REAL_T1.is_dir() else []
    seeds = []
    for path in files:
        img = nib.load(path)
        seeds.append((np.asarray(img.dataobj, dtype=np.int16), img.affine))
    if not seeds:
        grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE_1MM], indexing="ij"))
        radius = np.sqrt(((grid / np.array([0.8, 0.85, 0.8])[:, None, None, None]) ** 2).sum(0))
        head = np.where(radius < 1, 600 + 400 * np.cos(6 * radius), 0).astype(np.int16)
        seeds.append((head, AFFINE_1MM))
    return seeds


def write_scans(folder: Path, n: int, seed: int = 0) -> Path:
    """N scans and their manifest (ages 45-80, alternate members); returns the manifest path."""
    rng = np.random.default_rng(seed)
    seeds = _seeds()
    rows = []
    for i in range(n):
        base, affine = seeds[i % len(seeds)]
        mask = base > 0
        volume = base.astype(np.float32) * rng.uniform(0.9, 1.1)
        volume[mask] += rng.normal(0, 15, int(mask.sum())).astype(np.float32)
        nib.Nifti1Image(np.clip(volume, -32768, 32767).astype(np.int16), affine).to_filename(folder / f"s{i:04d}.nii.gz")
        rows.append(f"s{i:04d},s{i:04d}.nii.gz,{rng.uniform(45, 80):.1f},{i % 2}\n")
    manifest = folder / "manifest.csv"
    manifest.write_text("scan_id,path,age,member\n" + "".join(rows))
    return manifest


def write_model(folder: Path) -> Path:
    """The paper's 3D-CNN (random weights, output bias at the mean age) with its 2 mm sidecar."""
    torch.manual_seed(0)
    path = folder / "paper_3d.pt"
    torch.save(BrainAge3D(mean_age=62.0, age_scale=10.0).state_dict(), path)
    write_sidecar(path, ModelMetadata(input_shape=(91, 109, 91), voxel_size=(2.0, 2.0, 2.0), normalize="zscore",
                                      arch="brain_age_3d"))
    return path


def decode(manifest, spec, cache: VolumeCache, workers: int, batch_size: int) -> float:
    """Seconds to read and conform every scan through the loader."""
    start = time.perf_counter()
    for _ in make_loader(ScanDataset(manifest.records, spec, cache), batch_size=batch_size, num_workers=workers):
        pass
    return time.perf_counter() - start


def assess(model, manifest, cache: VolumeCache, workers: int, args: argparse.Namespace) -> dict[str, float]:
    """Stage times (features, attacks, report) of one assessment, from its progress calls."""
    marks: dict[str, float] = {}

    def progress(stage: str, _fraction: float, _message: str) -> None:
        marks.setdefault(stage, time.perf_counter())

    options = AssessmentOptions(repeats=args.repeats, extraction=ExtractionOptions(
        batch_size=args.batch_size, device=args.device, num_workers=workers))
    run_assessment(manifest, model=model, options=options, cache=cache, progress=progress)
    return {"features": marks["attacks"] - marks["features"], "attacks": marks["report"] - marks["attacks"],
            "report": marks["done"] - marks["report"]}


_SHARD_STATE: dict[str, object] = {}


def _shard_init(model_path: str, manifest_path: str, cache_dir: str, device: str, threads: int, batch_size: int) -> None:
    """A worker process: torch threads, the model and the manifest loaded once."""
    torch.set_num_threads(threads)
    model = load_model(Path(model_path), device=device)
    _SHARD_STATE.update(model=model, manifest=load_manifest(Path(manifest_path)), cache=VolumeCache(Path(cache_dir)),
                        device=device)
    _SHARD_STATE["computer"] = _choose_method(model, device, batch_size)


def _choose_method(model, device: str, batch_size: int):  # type: ignore[no-untyped-def]
    """The model's computer with its gradient method chosen (the one-off measurement, outside any timing)."""
    spec = model.metadata.conform_spec()
    computer = model.computer(device)
    while computer.chooser.method is None:
        computer.compute(torch.randn(batch_size, 1, *spec.shape), torch.full((batch_size,), 60.0), True,
                         list(computer.aliases.values()))
    return computer


def _shard_warm(_: int) -> int:
    time.sleep(0.5)  # one per process: every process has started and loaded the model
    return os.getpid()


def _shard_extract(start: int, stop: int, batch_size: int) -> float:
    """Extract the features of scans ``start:stop`` (one shard); seconds spent."""
    from worker.engine.features import extract_features

    begin = time.perf_counter()
    manifest = _SHARD_STATE["manifest"]
    extract_features(_SHARD_STATE["model"], replace(manifest, records=manifest.records[start:stop]),  # type: ignore[attr-defined]
                     ExtractionOptions(batch_size=batch_size, device=_SHARD_STATE["device"], num_workers=0),  # type: ignore[arg-type]
                     cache=_SHARD_STATE["cache"])  # type: ignore[arg-type]
    return time.perf_counter() - begin


def shard_scaling(model_path: Path, manifest_path: Path, cache_dir: Path, n: int, processes: int,
                  args: argparse.Namespace) -> float:
    """Wall seconds for ``processes`` warm worker processes to extract every shard of ``n`` scans."""
    threads = max(1, (os.cpu_count() or 1) // processes)
    context = multiprocessing.get_context("spawn")
    init = (str(model_path), str(manifest_path), str(cache_dir), args.device, threads, args.batch_size)
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_shard_init, initargs=init) as pool:
        list(pool.map(_shard_warm, range(processes)))
        start = time.perf_counter()
        size = args.shard_scans
        list(pool.map(_shard_extract, range(0, n, size), [min(i + size, n) for i in range(0, n, size)],
                      [args.batch_size] * math.ceil(n / size)))
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=sys.modules["__main__"].__doc__ or __doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scans", type=int, default=20, help="scans (20: the fewest the quantile attacks take)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="attack repeats")
    parser.add_argument("--decode-batch-size", type=int, default=2, help="loader batch of the decode stages")
    parser.add_argument("--workers", default="1,2", help="loader worker counts to compare")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--keep", type=Path, default=None, help="write the scans here (default: a temporary folder)")
    parser.add_argument("--shard-processes", default="", help="worker process counts taking feature shards, e.g. 1,2")
    parser.add_argument("--shard-scans", type=int, default=5, help="scans per feature shard")
    parser.add_argument("--decode-only", action="store_true",
                        help="time the decode stages only (no gradient-method choice, features or attacks)")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        manifest_path = write_scans(folder, args.scans)
        manifest = load_manifest(manifest_path)
        model_path = write_model(folder)
        model = load_model(model_path, device=args.device)
        print(f"wrote {args.scans} scans of {SHAPE_1MM} int16 and the model in {time.perf_counter() - start:.1f} s; "
              f"device={args.device} batch_size={args.batch_size} torch_threads={torch.get_num_threads()}")
        spec = model.metadata.conform_spec()
        if not args.decode_only:
            start = time.perf_counter()
            computer = _choose_method(model, args.device, args.batch_size)  # one-off, outside the stages
            print(f"gradient method {computer.chooser.method}, chosen in {time.perf_counter() - start:.1f} s")
        if max(counts) > 0:  # the loaders' fork server starts once per process (~1.5 s): not a stage
            start = time.perf_counter()
            decode(replace(manifest, records=manifest.records[:1]), spec, VolumeCache(Path(tmp) / "warm-up"), 1, 1)
            print(f"loader fork server started in {time.perf_counter() - start:.1f} s")
        results: dict[int, dict[str, float]] = {}
        for workers in counts:
            cache = VolumeCache(Path(tmp) / f"cache-{workers}")
            row = {"decode_cold": decode(manifest, spec, cache, workers, args.decode_batch_size),
                   "decode_warm": decode(manifest, spec, cache, workers, args.decode_batch_size)}
            if args.decode_only:
                results[workers] = row
                print(f"workers={workers} decode_cold={row['decode_cold']:.2f}s decode_warm={row['decode_warm']:.2f}s"
                      f" | decode cold {args.scans / row['decode_cold']:.1f} scans/s")
                continue
            row.update(assess(model, manifest, cache, workers, args))
            results[workers] = row
            total = row["features"] + row["attacks"] + row["report"]
            print(f"workers={workers} " + " ".join(f"{k}={v:.2f}s" for k, v in row.items())
                  + f" | decode cold {args.scans / row['decode_cold']:.1f} scans/s, warm "
                  f"{args.scans / row['decode_warm']:.1f} scans/s, features {args.scans / row['features']:.2f} scans/s, "
                  f"assessment (warm cache) {args.scans / total:.2f} scans/s")
        if args.shard_processes:
            walls = {p: shard_scaling(model_path, manifest_path, Path(tmp) / f"cache-{counts[-1]}", args.scans, p, args)
                     for p in (int(x) for x in args.shard_processes.split(","))}
            print(" ".join(f"shard_processes={p} features={w:.2f}s ({args.scans / w:.2f} scans/s)" for p, w in walls.items())
                  + f" shard_scans={args.shard_scans}")
            first, last = min(walls), max(walls)
            print(f"ratio_two_processes_to_one={walls[last] / walls[first]:.3f}")
    one, two = results[counts[0]], results[counts[-1]]
    print(f"ratio_two_workers_to_one={two['decode_cold'] / one['decode_cold']:.3f}"
          + ("" if args.decode_only else f" ratio_decode_to_features={two['decode_cold'] / two['features']:.3f}"))

