"""Tests of the conformed-volume cache."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from tests.engine.conftest_scans import write_phantom
from worker.engine import volumes
from worker.engine.cache import CACHE_FORMAT_VERSION, VolumeCache, file_sha256
from worker.engine.errors import ScanError
from worker.engine.volumes import ConformSpec, load_conformed

SPEC = ConformSpec(shape=(20, 24, 18), voxel_size=(4.0, 4.0, 4.0))


@pytest.fixture
def count_reads(monkeypatch):
    """Count calls of read_nifti (the decoding step)."""
    calls = []
    real = volumes.read_nifti

    def counting(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(volumes, "read_nifti", counting)
    return calls


def test_file_sha256_streams(tmp_path):
    import hashlib

    path = tmp_path / "blob"
    data = os.urandom(3 * 1024 + 17)
    path.write_bytes(data)
    assert file_sha256(path, chunk_size=1000) == hashlib.sha256(data).hexdigest()


def test_hit_after_miss_and_second_run(tmp_path, count_reads):
    scan = write_phantom(tmp_path / "s.nii.gz")
    root = tmp_path / "cache"
    cache = VolumeCache(root)
    first = cache.get(scan, SPEC)
    assert (cache.stats.hits, cache.stats.misses) == (0, 1) and len(count_reads) == 1
    np.testing.assert_array_equal(first, load_conformed(scan, SPEC))
    count_reads.clear()
    again = cache.get(scan, SPEC)
    assert (cache.stats.hits, cache.stats.misses, cache.stats.hashes) == (1, 1, 1)
    np.testing.assert_array_equal(again, first)
    assert again.dtype == np.float32 and again.flags.c_contiguous and again.shape == SPEC.shape
    # a second run (new process, new cache object) reads the entry and does not decode
    second_run = VolumeCache(root)
    np.testing.assert_array_equal(second_run.get(scan, SPEC), first)
    assert second_run.stats.hits == 1 and second_run.stats.misses == 0
    assert count_reads == []


def test_entry_layout(tmp_path):
    scan = write_phantom(tmp_path / "s.nii")
    cache = VolumeCache(tmp_path / "cache")
    cache.get(scan, SPEC)
    entries = list((tmp_path / "cache").rglob("*"))
    files = [p for p in entries if p.is_file()]
    assert len(files) == 1
    entry = files[0]
    assert entry.suffix == ".npy" and entry.parent.name == entry.stem[:2] and len(entry.stem) == 64
    assert entry == cache.entry_path(scan, SPEC)
    assert not [p for p in files if p.name.startswith(".tmp")]
    assert CACHE_FORMAT_VERSION >= 1


def test_key_is_content_not_path(tmp_path, count_reads):
    scan = write_phantom(tmp_path / "a.nii.gz")
    copy = tmp_path / "elsewhere" / "renamed.nii.gz"
    copy.parent.mkdir()
    shutil.copy(scan, copy)
    cache = VolumeCache(tmp_path / "cache")
    cache.get(scan, SPEC)
    cache.get(copy, SPEC)
    assert cache.stats.hits == 1 and len(count_reads) == 1


def test_changed_content_misses(tmp_path):
    scan = tmp_path / "s.nii.gz"
    root = tmp_path / "cache"
    write_phantom(scan, seed=0)
    a = VolumeCache(root).get(scan, SPEC)
    write_phantom(scan, seed=1)  # same size class, different bytes
    cache = VolumeCache(root)
    b = cache.get(scan, SPEC)
    assert cache.stats.misses == 1 and cache.stats.hits == 0
    assert not np.array_equal(a, b)


def test_changed_content_same_cache_object(tmp_path):
    scan = tmp_path / "s.nii"
    write_phantom(scan, seed=0)
    cache = VolumeCache(tmp_path / "cache")
    cache.get(scan, SPEC)
    st = os.stat(scan)
    write_phantom(scan, seed=1)
    os.utime(scan, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # coarse clocks: force a new mtime
    cache.get(scan, SPEC)
    assert cache.stats.misses == 2 and cache.stats.hashes == 2


def test_changed_spec_misses(tmp_path):
    scan = write_phantom(tmp_path / "s.nii")
    cache = VolumeCache(tmp_path / "cache")
    cache.get(scan, SPEC)
    cache.get(scan, ConformSpec(shape=SPEC.shape, voxel_size=SPEC.voxel_size, normalize="minmax"))
    cache.get(scan, ConformSpec(shape=(10, 12, 9), voxel_size=(8.0, 8.0, 8.0)))
    assert cache.stats.misses == 3 and cache.stats.hits == 0
    assert cache.stats.hashes == 1  # memoised: the file is hashed once


@pytest.mark.parametrize("damage", ["garbage", "truncate", "wrong_shape", "empty"])
def test_corrupt_entry_is_recomputed(tmp_path, damage):
    scan = write_phantom(tmp_path / "s.nii")
    root = tmp_path / "cache"
    good = VolumeCache(root).get(scan, SPEC)
    entry = VolumeCache(root).entry_path(scan, SPEC)
    if damage == "garbage":
        entry.write_bytes(b"not numpy at all")
    elif damage == "truncate":
        entry.write_bytes(entry.read_bytes()[:200])
    elif damage == "wrong_shape":
        np.save(entry, np.zeros((2, 2, 2), np.float32))
    else:
        entry.write_bytes(b"")
    cache = VolumeCache(root)
    out = cache.get(scan, SPEC)
    np.testing.assert_array_equal(out, good)
    assert cache.stats.misses == 1
    again = VolumeCache(root)
    again.get(scan, SPEC)
    assert again.stats.hits == 1  # the entry was rewritten


def test_no_caching(tmp_path, count_reads):
    scan = write_phantom(tmp_path / "s.nii")
    cache = VolumeCache(None)
    cache.get(scan, SPEC)
    cache.get(scan, SPEC)
    assert cache.stats.misses == 2 and cache.stats.hits == 0 and len(count_reads) == 2
    assert list(tmp_path.iterdir()) == [scan]


def test_unwritable_root_still_returns_volume(tmp_path):
    scan = write_phantom(tmp_path / "s.nii")
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    out = VolumeCache(blocker).get(scan, SPEC)
    assert out.shape == SPEC.shape


def test_errors_name_the_file(tmp_path):
    cache = VolumeCache(tmp_path / "cache")
    with pytest.raises(ScanError, match="missing.nii"):
        cache.get(tmp_path / "missing.nii", SPEC)
    bad = tmp_path / "bad.nii"
    bad.write_bytes(b"\0" * 10)
    with pytest.raises(ScanError) as info:
        cache.get(bad, SPEC)
    assert info.value.path == bad
    assert not list((tmp_path / "cache").rglob("*.npy"))
