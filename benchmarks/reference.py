"""Reference-model training throughput, and the wall time of K models on 1 and on 2 worker processes.

Each reference model is one unit of work (one Celery task in distributed mode), so K models on
two workers should take about half the time of one worker when two devices (or cores) are free.
This measures it in one run with the engine's own ``train_reference``, on random volumes of the
demo grid (the numbers do not depend on the images' content): every worker process gets an equal
share of the machine's cores (torch threads) and trains its share of the K models.

Usage: ``python benchmarks/reference.py [--models 4 --scans 64 --epochs 2 --shape 23x27x23]``.
The last line is ``ratio_two_workers_to_one=X`` (target <= 0.6 with two devices or cores to spare).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import numpy as np
import torch

from worker.engine.models import ModelMetadata
from worker.engine.reference.keep import balanced_keep
from worker.engine.reference.recipe import Recipe
from worker.engine.reference.training import train_reference


def _job(args: tuple) -> float:
    indices, shape, scans, epochs, channels, threads, device = args
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    volumes = torch.from_numpy(rng.standard_normal((scans, 1, *shape)).astype(np.float32))
    ages = torch.from_numpy(rng.uniform(20, 80, scans).astype(np.float32))
    keep = balanced_keep(max(2, len(indices) * 2), scans, 0)
    metadata = ModelMetadata(input_shape=shape, voxel_size=8.0, arch="brain_age_3d", arch_kwargs={"channels": channels})
    recipe = Recipe(arch="brain_age_3d", arch_kwargs={"channels": channels}, epochs=epochs, batch_size=8, lr=1e-3)
    start = time.perf_counter()
    for i, k in enumerate(indices):
        train_reference(recipe, volumes, ages, keep[i % keep.shape[0]], metadata=metadata, model_index=k, device=device)
    return time.perf_counter() - start


def _wall(workers: int, n_models: int, common: tuple, cores: int) -> float:
    shares = [list(range(n_models))[w::workers] for w in range(workers)]
    threads = max(1, cores // workers)
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(workers) as pool:
        pool.map(_job, [(share, *common[:4], threads, common[4]) for share in shares])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--scans", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--shape", default="23x27x23")
    parser.add_argument("--channels", default="8,16,32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split("x"))
    channels = [int(c) for c in args.channels.split(",")]
    cores = os.cpu_count() or 1
    common = (shape, args.scans, args.epochs, channels, args.device)
    one = _wall(1, args.models, common, cores)
    two = _wall(2, args.models, common, cores)
    trained = args.models * args.epochs * args.scans / 2  # each model trains on about half the scans
    print(f"device={args.device} cores={cores} models={args.models} scans={args.scans} epochs={args.epochs} "
          f"grid={args.shape}")
    print(f"one_worker_s={one:.1f} two_workers_s={two:.1f} "
          f"scans_per_s_one={trained / one:.1f} scans_per_s_two={trained / two:.1f}")
    print(f"ratio_two_workers_to_one={two / one:.3f}")


if __name__ == "__main__":
    main()
