"""Header bombs: a NIfTI file claiming more voxels than allowed, or than it holds, is refused unread."""

from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from worker.engine.errors import InputError, ScanError
from worker.engine.models.metadata import ModelMetadata, resolve_metadata
from worker.engine.volume_bounds import DEFAULT_MAX_VOXELS, VolumeLimits, check_header
from worker.engine.volumes import read_nifti

MiB = 1 << 20


def header_bomb(path: Path, shape: tuple[int, ...], dtype: type = np.float32, nifti2: bool = False,
                endian: str = "<") -> Path:
    """A file holding only a header that claims ``shape`` voxels of ``dtype`` (gzipped for .gz)."""
    header = (nib.Nifti2Header if nifti2 else nib.Nifti1Header)(endianness=endian)
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_zooms((1.0,) * len(shape))
    header["vox_offset"] = 352 if not nifti2 else 544
    block = header.binaryblock + b"\0" * 4
    path.write_bytes(gzip.compress(block, 9) if path.name.endswith(".gz") else block)
    return path


def _peak_while(fn) -> int:  # type: ignore[no-untyped-def]
    """Peak bytes traced by tracemalloc (numpy included) while ``fn`` runs."""
    tracemalloc.start()
    try:
        fn()
    except ScanError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def test_86_byte_gz_claiming_800_cubed_float32_is_refused_without_allocating(tmp_path: Path) -> None:
    bomb = header_bomb(tmp_path / "bomb.nii.gz", (800, 800, 800))
    assert bomb.stat().st_size < 100
    with pytest.raises(ScanError) as info:
        read_nifti(bomb)
    assert "bomb.nii.gz" in str(info.value)
    assert "512000000 voxels" in info.value.reason and "limit" in info.value.reason
    assert _peak_while(lambda: read_nifti(bomb)) < 4 * MiB


def test_gz_within_the_voxel_limit_but_too_small_to_hold_it_is_refused(tmp_path: Path) -> None:
    """300^3 float32 (108 MB) is under the voxel limit; 86 bytes of gzip cannot expand to it."""
    bomb = header_bomb(tmp_path / "small.nii.gz", (300, 300, 300))
    assert 300**3 < DEFAULT_MAX_VOXELS
    with pytest.raises(ScanError, match="compressed file can hold") as info:
        read_nifti(bomb)
    assert "small.nii.gz" in str(info.value)
    assert _peak_while(lambda: read_nifti(bomb)) < 4 * MiB


def test_uncompressed_file_shorter_than_its_header_claims_is_refused(tmp_path: Path) -> None:
    bomb = header_bomb(tmp_path / "short.nii", (300, 300, 300), np.int16)
    with pytest.raises(ScanError, match="truncated: the header declares 54000352 bytes") as info:
        read_nifti(bomb)
    assert "short.nii" in str(info.value)
    assert _peak_while(lambda: read_nifti(bomb)) < 4 * MiB


@pytest.mark.parametrize("name", ["n2.nii.gz", "n2.nii"])
def test_nifti2_header_with_huge_64_bit_dimensions_is_refused(tmp_path: Path, name: str) -> None:
    bomb = header_bomb(tmp_path / name, (100_000, 100_000, 100_000), nifti2=True)
    with pytest.raises(ScanError, match="more than the limit"):
        read_nifti(bomb)


def test_big_endian_and_4d_headers_count_every_dimension(tmp_path: Path) -> None:
    bomb = header_bomb(tmp_path / "be.nii.gz", (256, 256, 256, 4), endian=">")
    with pytest.raises(ScanError, match="256x256x256x4 = 67108864 voxels"):
        read_nifti(bomb)


def test_garbage_instead_of_a_header_is_refused_by_name(tmp_path: Path) -> None:
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(gzip.compress(b"\xff" * 600))
    with pytest.raises(ScanError, match="not a readable NIfTI file .no NIfTI-1 or NIfTI-2 header") as info:
        read_nifti(junk)
    assert "junk.nii.gz" in str(info.value)


def test_limit_is_exact_and_configurable(tmp_path: Path) -> None:
    path = tmp_path / "cube.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((10, 10, 10), np.float32), np.eye(4)), path)
    assert check_header(path, VolumeLimits(max_voxels=1000)) == (10, 10, 10)
    assert read_nifti(path, VolumeLimits(max_voxels=1000)).shape == (10, 10, 10)
    with pytest.raises(ScanError, match="1000 voxels, more than the limit of 999"):
        read_nifti(path, VolumeLimits(max_voxels=999))


def test_an_all_zero_1mm_volume_compressed_to_the_limit_is_still_accepted(tmp_path: Path) -> None:
    """The ratio is deflate's own maximum: the most compressible real file still passes."""
    plain, path = tmp_path / "zeros.nii", tmp_path / "zeros.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((182, 218, 182), np.float32), np.eye(4)), plain)
    path.write_bytes(gzip.compress(plain.read_bytes(), 9))
    ratio = (182 * 218 * 182 * 4) / path.stat().st_size
    assert ratio > 1000  # as extreme as deflate gets
    assert read_nifti(path).shape == (182, 218, 182)


def test_model_input_grid_is_bounded_like_a_scan(tmp_path: Path) -> None:
    assert ModelMetadata(input_shape=(256, 256, 256)).input_shape == (256, 256, 256)
    with pytest.raises(ValueError, match="more than the limit"):
        ModelMetadata(input_shape=(2000, 2000, 2000))
    with pytest.raises(InputError, match="input_shape.*more than the limit"):
        resolve_metadata(None, {"input_shape": (800, 800, 800)})


def test_a_few_huge_voxels_resampled_to_a_fine_grid_are_refused_before_resampling(tmp_path: Path) -> None:
    """8^3 voxels of 200 mm at 2 mm would be 800^3 voxels (2 GB) before the crop."""
    from worker.engine.volumes import ConformSpec, load_conformed

    path = tmp_path / "coarse.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.diag([200.0, 200.0, 200.0, 1.0])), path)
    with pytest.raises(ScanError, match="resampled to .* 800x800x800 has 512000000 voxels") as info:
        load_conformed(path, ConformSpec())
    assert "coarse.nii.gz" in str(info.value)
    assert _peak_while(lambda: load_conformed(path, ConformSpec())) < 4 * MiB
