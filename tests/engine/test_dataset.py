"""Tests of the scan dataset and its loader."""

from __future__ import annotations

import multiprocessing
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.engine.conftest_scans import real_t1_dir, write_phantom  # noqa: F401  (fixture)
from worker.engine.cache import VolumeCache
from worker.engine.dataset import (
    MAX_LOADER_WORKERS,
    ScanDataset,
    default_loader_workers,
    in_flight_batches,
    loader_workers,
    make_loader,
)
from worker.engine.errors import ScanError
from worker.engine.manifest import load_manifest
from worker.engine.volumes import ConformSpec, load_conformed

SPEC = ConformSpec(shape=(20, 24, 18), voxel_size=(4.0, 4.0, 4.0))


@pytest.fixture
def manifest(tmp_path):
    rows = []
    for i in range(5):
        write_phantom(tmp_path / f"s{i}.nii.gz", seed=i)
        rows.append(f"s{i},s{i}.nii.gz,{40 + i},{i % 2}\n")
    path = tmp_path / "manifest.csv"
    path.write_text("scan_id,path,age,member\n" + "".join(rows))
    return load_manifest(path)


def test_items(manifest):
    ds = ScanDataset(manifest.records, SPEC)
    assert len(ds) == 5
    x, i = ds[3]
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.shape == (1, *SPEC.shape)
    assert i == 3 and isinstance(i, int)
    np.testing.assert_array_equal(x[0].numpy(), load_conformed(manifest.records[3].path, SPEC))


def test_loader_keeps_order_and_last_batch(manifest, tmp_path):
    cache = VolumeCache(tmp_path / "cache")
    ds = ScanDataset(manifest.records, SPEC, cache)
    batches = list(make_loader(ds, batch_size=2))
    assert [b[0].shape for b in batches] == [(2, 1, *SPEC.shape)] * 2 + [(1, 1, *SPEC.shape)]
    assert torch.cat([b[1] for b in batches]).tolist() == [0, 1, 2, 3, 4]
    for x, idx in batches:
        for row, k in zip(x, idx.tolist()):
            np.testing.assert_array_equal(row[0].numpy(), ds[k][0][0].numpy())
    assert cache.stats.misses == 5
    list(make_loader(ds, batch_size=5))
    assert cache.stats.hits >= 5


def test_loader_with_workers(manifest):
    ds = ScanDataset(manifest.records, SPEC)
    loader = make_loader(ds, batch_size=2, num_workers=2)
    assert isinstance(loader, torch.utils.data.DataLoader) and len(loader) == 3
    batches = list(loader)
    assert torch.cat([b[1] for b in batches]).tolist() == [0, 1, 2, 3, 4]
    serial = list(make_loader(ds, batch_size=2))
    for (x, _), (y, _) in zip(batches, serial):
        assert torch.equal(x, y)


def test_bad_batch_size(manifest):
    with pytest.raises(ValueError):
        make_loader(ScanDataset(manifest.records, SPEC), batch_size=0)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_unreadable_scan_raises_scan_error(manifest, num_workers):
    manifest.records[2].path.write_bytes(b"broken")
    ds = ScanDataset(manifest.records, SPEC, VolumeCache(None))
    with pytest.raises(ScanError) as info:
        list(make_loader(ds, batch_size=2, num_workers=num_workers))
    assert info.value.path == manifest.records[2].path
    assert "not a readable NIfTI" in info.value.reason


def test_real_scans_dataset(real_t1_dir):  # noqa: F811
    m = load_manifest(real_t1_dir / "manifest.csv")
    x, i = ScanDataset(m.records[:1], ConformSpec())[0]
    assert x.shape == (1, 91, 109, 91) and i == 0 and torch.isfinite(x).all()


def test_loader_workers_rule(monkeypatch):
    assert default_loader_workers() == max(0, min(len(os.sched_getaffinity(0)) - 1, MAX_LOADER_WORKERS))
    assert loader_workers(None, 100, 8) == min(default_loader_workers(), 13)
    assert loader_workers(3, 100, 8) == 3
    assert loader_workers(8, 20, 8) == 3  # no more workers than batches
    assert loader_workers(4, 8, 8) == 0  # one batch: nothing to overlap
    assert loader_workers(0, 100, 8) == 0
    with pytest.raises(ValueError, match="loader workers must be 0 or more"):
        loader_workers(-1, 100, 8)
    # a Celery prefork child is daemonic and may not start processes: decode in process
    monkeypatch.setattr(multiprocessing, "current_process", lambda: SimpleNamespace(daemon=True))
    assert loader_workers(3, 100, 8) == 0


def test_in_flight_batches_are_bounded():
    assert in_flight_batches(0) == 1
    assert [in_flight_batches(w) for w in (1, 2, 3)] == [2, 4, 6]
    assert in_flight_batches(MAX_LOADER_WORKERS) == MAX_LOADER_WORKERS


def test_workers_share_the_cache_and_report_its_counts(manifest, tmp_path):
    cache = VolumeCache(tmp_path / "cache")
    ds = ScanDataset(manifest.records, SPEC, cache)
    cold = list(make_loader(ds, batch_size=2, num_workers=2))
    assert (cache.stats.misses, cache.stats.hits) == (5, 0)  # counted in the workers, added here
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 5
    warm = list(make_loader(ds, batch_size=2, num_workers=2))
    assert (cache.stats.misses, cache.stats.hits) == (5, 5)
    for (x, _), (y, _) in zip(cold, warm):
        assert torch.equal(x, y)


def test_concurrent_writers_of_one_entry(tmp_path):
    """Workers conforming the same scan at once (copies: the cache keys by content) all write its
    entry: atomic renames leave one whole entry and no temporary files."""
    write_phantom(tmp_path / "same.nii.gz", seed=7)
    for i in range(6):
        (tmp_path / f"copy{i}.nii.gz").write_bytes((tmp_path / "same.nii.gz").read_bytes())
    rows = "".join(f"c{i},copy{i}.nii.gz,{50 + i},{i % 2}\n" for i in range(6))
    (tmp_path / "manifest.csv").write_text("scan_id,path,age,member\n" + rows)
    records = load_manifest(tmp_path / "manifest.csv").records
    cache = VolumeCache(tmp_path / "cache")
    batches = list(make_loader(ScanDataset(records, SPEC, cache), batch_size=1, num_workers=3))
    expected = load_conformed(tmp_path / "same.nii.gz", SPEC)
    for x, _ in batches:
        np.testing.assert_array_equal(x[0, 0].numpy(), expected)
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].suffix == ".npy" and not files[0].name.startswith(".tmp")
    np.testing.assert_array_equal(np.load(files[0]), expected)


_MAIN_SCRIPT = '''
import sys
from pathlib import Path

with open(sys.argv[1] if __name__ == "__main__" else Path(__file__).with_suffix(".log"), "a") as log:
    log.write(__name__ + "\\n")  # one line each time this script's top level runs

if __name__ == "__main__":
    from worker.engine.dataset import ScanDataset, make_loader
    from worker.engine.manifest import load_manifest
    from worker.engine.volumes import ConformSpec

    records = load_manifest(Path(sys.argv[2])).records
    for _ in range(3):  # three extractions, one loader worker each
        assert len(list(make_loader(ScanDataset(records, ConformSpec((20, 24, 18), (4.0,) * 3)), 2, 1))) == 3
'''


def test_the_main_script_runs_once_in_the_fork_server_not_once_per_loader_worker(manifest, tmp_path):
    """A loader worker starts from the fork server, which holds the parent's main script: a worker
    does not run it again (about 1 s for the command line, once per worker of every extraction)."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "main_script.py"
    script.write_text(_MAIN_SCRIPT)
    log = tmp_path / "main_script.log"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    subprocess.run([sys.executable, str(script), str(log), str(tmp_path / "manifest.csv")], check=True, env=env,
                   cwd=tmp_path, timeout=120)
    assert log.read_text().split() == ["__main__", "__mp_main__"]  # the parent, then the fork server only
