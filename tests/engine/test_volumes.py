"""Tests of NIfTI reading, conforming and intensity normalisation."""

from __future__ import annotations

import gzip
import struct
import time

import nibabel as nib
import numpy as np
import pytest

from tests.engine.conftest_scans import (
    phantom,
    ras_affine,
    real_t1_paths,
    to_lps,
    to_permuted,
    write_nifti,
    write_phantom,
)
from worker.engine.errors import InputError, ScanError
from worker.engine.normalize import (
    NORMALIZATIONS,
    brain_mask,
    get_normalization,
    register_normalization,
)
from worker.engine.volumes import ConformSpec, conform, crop_or_pad, load_conformed, read_nifti

SHAPE = (40, 48, 36)
SPEC = ConformSpec(shape=(20, 24, 18), voxel_size=(4.0, 4.0, 4.0))


# ---------------------------------------------------------------- ConformSpec


def test_spec_defaults_and_key():
    spec = ConformSpec()
    assert spec.shape == (91, 109, 91) and spec.voxel_size == (2.0, 2.0, 2.0) and spec.normalize == "zscore"
    assert spec.key() == ConformSpec(shape=[91, 109, 91], voxel_size=(2, 2, 2)).key()
    assert spec.key() != ConformSpec(normalize="none").key()
    assert spec.key() != ConformSpec(voxel_size=(2.0, 2.0, 2.5)).key()
    assert spec.key() != ConformSpec(shape=(91, 109, 90)).key()
    assert hash(spec) == hash(ConformSpec())


@pytest.mark.parametrize(
    "kwargs",
    [{"shape": (0, 2, 2)}, {"shape": (2, 2)}, {"voxel_size": (0.0, 1.0, 1.0)}, {"voxel_size": (1.0, float("nan"), 1.0)}],
)
def test_spec_rejects_bad_values(kwargs):
    with pytest.raises(InputError):
        ConformSpec(**kwargs)


def test_spec_rejects_unknown_normalization():
    with pytest.raises(InputError, match="zscore"):
        ConformSpec(normalize="nope")


# ---------------------------------------------------------------- read_nifti


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("nifti2", [False, True])
def test_read_nifti_formats(tmp_path, suffix, nifti2):
    data = phantom(SHAPE)
    path = write_nifti(tmp_path / f"s{suffix}", data, ras_affine(SHAPE, 2.0), dtype=np.float32, nifti2=nifti2)
    img = read_nifti(path)
    assert isinstance(img, nib.Nifti2Image if nifti2 else nib.Nifti1Image)
    np.testing.assert_allclose(img.get_fdata(dtype=np.float32), data, atol=1e-4)


def test_read_nifti_caches_data(tmp_path):
    path = write_phantom(tmp_path / "s.nii.gz", SHAPE)
    img = read_nifti(path)
    assert img.get_fdata(dtype=np.float32) is img.get_fdata(dtype=np.float32)


def test_read_nifti_squeezes_trailing_singleton(tmp_path):
    data = phantom(SHAPE)
    path = write_nifti(tmp_path / "s4d.nii.gz", data[..., None], ras_affine(SHAPE, 2.0), dtype=np.float32)
    img = read_nifti(path)
    assert img.shape == SHAPE
    np.testing.assert_allclose(img.get_fdata(dtype=np.float32), data, atol=1e-4)
    ref = write_nifti(tmp_path / "s3d.nii.gz", data, ras_affine(SHAPE, 2.0), dtype=np.float32)
    np.testing.assert_array_equal(load_conformed(path, SPEC), load_conformed(ref, SPEC))


def _assert_names_file(exc_info, path, *words):
    err = exc_info.value
    assert isinstance(err, InputError)
    assert err.path == path
    assert str(path) in str(err)
    for w in words:
        assert w in err.reason, err.reason


def test_read_nifti_rejects_4d(tmp_path):
    data = np.stack([phantom(SHAPE)] * 3, axis=-1)
    path = write_nifti(tmp_path / "fmri.nii.gz", data, ras_affine(SHAPE, 2.0), dtype=np.float32)
    with pytest.raises(ScanError) as info:
        read_nifti(path)
    _assert_names_file(info, path, "3D", "(40, 48, 36, 3)")


def test_read_nifti_rejects_2d(tmp_path):
    path = write_nifti(tmp_path / "slice.nii", np.ones((10, 12), np.float32), np.eye(4))
    with pytest.raises(ScanError) as info:
        read_nifti(path)
    _assert_names_file(info, path, "3D")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_read_nifti_rejects_non_finite(tmp_path, bad):
    data = phantom(SHAPE).astype(np.float32)
    data[3, 4, 5] = bad
    data[6, 7, 8] = bad
    path = write_nifti(tmp_path / "nan.nii.gz", data, ras_affine(SHAPE, 2.0))
    with pytest.raises(ScanError) as info:
        read_nifti(path)
    _assert_names_file(info, path, "2 voxel(s)", "NaN or infinite")


def test_read_nifti_rejects_garbage(tmp_path):
    path = tmp_path / "garbage.nii"
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(ScanError) as info:
        read_nifti(path)
    _assert_names_file(info, path, "not a readable NIfTI")


def test_read_nifti_rejects_text_file(tmp_path):
    path = tmp_path / "notes.nii.gz"
    path.write_text("scan_id,path\n")
    with pytest.raises(ScanError) as info:
        read_nifti(path)
    _assert_names_file(info, path, "not a readable NIfTI")


def test_read_nifti_rejects_bad_header_size(tmp_path):
    path = write_phantom(tmp_path / "hdr.nii", SHAPE)
    raw = bytearray(path.read_bytes())
    raw[0:4] = (1234).to_bytes(4, "little")  # sizeof_hdr must be 348
    raw[344:348] = b"xxxx"  # magic
    path.write_bytes(bytes(raw))
    with pytest.raises(ScanError) as info:
        read_nifti(path)
    _assert_names_file(info, path)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_read_nifti_rejects_truncated(tmp_path, suffix):
    path = write_phantom(tmp_path / f"cut{suffix}", SHAPE)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ScanError) as info:
        read_nifti(path)
    _assert_names_file(info, path)


def test_read_nifti_rejects_truncated_header(tmp_path):
    path = tmp_path / "tiny.nii.gz"
    path.write_bytes(gzip.compress(b"\x5c\x01\x00\x00" + b"\x00" * 40))
    with pytest.raises(ScanError) as info:
        read_nifti(path)
    _assert_names_file(info, path)


@pytest.mark.parametrize("keep_sform", [False, True])
def test_read_nifti_rejects_zero_voxel_size(tmp_path, keep_sform):
    path = write_phantom(tmp_path / "flat.nii", SHAPE)
    raw = bytearray(path.read_bytes())
    raw[84:88] = struct.pack("<f", 0.0)  # pixdim[2]
    if not keep_sform:
        raw[252:256] = struct.pack("<hh", 0, 0)  # qform_code, sform_code: affine from pixdim
    path.write_bytes(bytes(raw))
    with pytest.raises(ScanError) as info:
        read_nifti(path)
    _assert_names_file(info, path, "voxel size")


def test_read_nifti_rejects_other_suffix_and_missing(tmp_path):
    other = tmp_path / "scan.mgz"
    other.write_bytes(b"")
    with pytest.raises(ScanError) as info:
        read_nifti(other)
    _assert_names_file(info, other, ".nii")
    missing = tmp_path / "missing.nii.gz"
    with pytest.raises(ScanError) as info:
        read_nifti(missing)
    _assert_names_file(info, missing, "not found")


# ---------------------------------------------------------------- conform


def test_conform_output_contract(tmp_path):
    path = write_phantom(tmp_path / "s.nii.gz", SHAPE)
    out = load_conformed(path, SPEC)
    assert out.shape == SPEC.shape and out.dtype == np.float32 and out.flags.c_contiguous
    assert np.isfinite(out).all()


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float64, np.float32, np.int32])
def test_conform_dtypes_agree(tmp_path, dtype):
    data = np.round(phantom(SHAPE) / 2)  # integral and within uint8 range
    assert data.max() < 255
    aff = ras_affine(SHAPE, 2.0)
    ref = load_conformed(write_nifti(tmp_path / "ref.nii", data, aff, dtype=np.float32), SPEC)
    path = write_nifti(tmp_path / f"s_{np.dtype(dtype).name}.nii.gz", data, aff, dtype=dtype)
    assert read_nifti(path).get_data_dtype() == np.dtype(dtype)
    np.testing.assert_allclose(load_conformed(path, SPEC), ref, atol=1e-5)


def test_conform_applies_scaling(tmp_path):
    data = phantom(SHAPE)
    aff = ras_affine(SHAPE, 2.0)
    spec = ConformSpec(shape=SHAPE, voxel_size=(2.0, 2.0, 2.0), normalize="none")
    path = write_nifti(tmp_path / "scaled.nii", data, aff, dtype=np.int16, slope=0.25, inter=0.0)
    raw = np.asanyarray(nib.load(str(path)).dataobj.get_unscaled())
    assert raw.dtype == np.int16 and raw.max() > 500  # stored as int16 * 4
    out = load_conformed(path, spec)
    np.testing.assert_allclose(out, data, atol=0.13)
    # with an intercept the background is no longer 0
    path2 = write_nifti(tmp_path / "scaled2.nii", data, aff, dtype=np.int16, slope=0.5, inter=-10.0)
    np.testing.assert_allclose(load_conformed(path2, spec), data, atol=0.26)


@pytest.mark.parametrize("reorient", [to_lps, to_permuted])
def test_conform_orientation_invariant(tmp_path, reorient):
    data, aff = phantom(SHAPE), ras_affine(SHAPE, 2.0)
    ras = write_nifti(tmp_path / "ras.nii.gz", data, aff, dtype=np.float32)
    other_data, other_aff = reorient(data, aff)
    assert nib.aff2axcodes(other_aff) != ("R", "A", "S")
    other = write_nifti(tmp_path / "other.nii.gz", other_data, other_aff, dtype=np.float32)
    for spec in (SPEC, ConformSpec(shape=(41, 47, 37), voxel_size=(2.0, 2.0, 2.0)), ConformSpec(shape=(17, 19, 15), voxel_size=(3.0, 3.5, 3.0))):
        np.testing.assert_array_equal(load_conformed(ras, spec), load_conformed(other, spec))


def test_conform_reorients_to_ras(tmp_path):
    # a bright marker at the right-anterior-superior corner ends at the high indices
    data = np.zeros(SHAPE, np.float32)
    data[-4:, -4:, -4:] = 1.0
    data[:2, :2, :2] = 0.5
    aff = ras_affine(SHAPE, 2.0)
    lps_data, lps_aff = to_lps(data, aff)
    spec = ConformSpec(shape=SHAPE, voxel_size=(2.0, 2.0, 2.0), normalize="none")
    out = conform(nib.Nifti1Image(lps_data, lps_aff), spec)
    np.testing.assert_array_equal(out, data)


@pytest.mark.parametrize("voxel", [1.0, 1.5, 3.0])
def test_conform_voxel_sizes_agree(tmp_path, voxel):
    # the same object sampled at different resolutions conforms to nearly the same array
    fov = np.array(SHAPE) * 2.0
    shape = tuple(int(round(f / voxel)) for f in fov)
    spec = ConformSpec(shape=SPEC.shape, voxel_size=SPEC.voxel_size, normalize="none")
    ref = load_conformed(write_phantom(tmp_path / "ref.nii", SHAPE, 2.0), spec)
    out = load_conformed(write_phantom(tmp_path / f"v{voxel}.nii", shape, voxel), spec)
    assert out.shape == spec.shape
    assert np.corrcoef(ref.ravel(), out.ravel())[0, 1] > 0.97
    np.testing.assert_allclose(np.argwhere(out > 50).mean(0), np.argwhere(ref > 50).mean(0), atol=0.3)


def test_conform_anisotropic_voxels(tmp_path):
    data = phantom((40, 48, 18))
    path = write_nifti(tmp_path / "aniso.nii", data, ras_affine((40, 48, 18), (2.0, 2.0, 4.0)), dtype=np.float32)
    spec = ConformSpec(shape=(40, 48, 36), voxel_size=(2.0, 2.0, 2.0), normalize="none")
    out = load_conformed(path, spec)
    assert out.shape == (40, 48, 36)
    np.testing.assert_allclose(out[:, :, 1::2].mean(), data.mean(), rtol=0.05)


def test_conform_factor_two_is_block_mean(tmp_path):
    data = phantom(SHAPE, voxel=1.0)
    spec = ConformSpec(shape=(20, 24, 18), voxel_size=(2.0, 2.0, 2.0), normalize="none")
    out = conform(nib.Nifti1Image(data.astype(np.float32), ras_affine(SHAPE, 1.0)), spec)
    block = data.reshape(20, 2, 24, 2, 18, 2).mean(axis=(1, 3, 5))
    np.testing.assert_allclose(out, block, rtol=1e-5, atol=1e-4)


def test_conform_pads_and_crops_centred():
    data = np.zeros((10, 10, 10), np.float32)
    data[4:6, 4:6, 4:6] = 1.0
    spec = ConformSpec(shape=(16, 6, 11), voxel_size=(1.0, 1.0, 1.0), normalize="none")
    out = conform(nib.Nifti1Image(data, np.eye(4)), spec)
    assert out.shape == (16, 6, 11)
    idx = np.argwhere(out > 0)
    assert idx.min(0).tolist() == [7, 2, 4] and idx.max(0).tolist() == [8, 3, 5]
    assert out.sum() == 8


def test_crop_or_pad_odd():
    a = np.arange(5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3)
    out = crop_or_pad(a, (4, 7, 3))
    assert out.shape == (4, 7, 3)
    np.testing.assert_array_equal(out[:, 1:5, :], a[0:4])  # crop 1 from the high end, pad 1 low + 2 high
    assert (out[:, 0] == 0).all() and (out[:, 5:] == 0).all()


def test_conform_zscore_default(tmp_path):
    out = load_conformed(write_phantom(tmp_path / "s.nii", SHAPE), ConformSpec(shape=SHAPE, voxel_size=(2.0,) * 3))
    brain = out != 0
    assert 0.2 < brain.mean() < 0.8
    assert abs(out[brain].mean()) < 1e-4 and abs(out[brain].std() - 1) < 1e-4


def test_conform_rejects_non_finite_in_memory():
    data = phantom(SHAPE).astype(np.float32)
    data[0, 0, 0] = np.nan
    with pytest.raises(ScanError, match="memory-scan"):
        conform(nib.Nifti1Image(data, np.eye(4)), SPEC, source="memory-scan")


# ---------------------------------------------------------------- normalisations


def test_registry_contents_and_unknown():
    assert {"zscore", "none", "minmax", "robust"} <= set(NORMALIZATIONS)
    with pytest.raises(InputError) as info:
        get_normalization("histogram")
    for name in ("zscore", "none", "minmax", "robust"):
        assert name in str(info.value)


def test_register_normalization():
    @register_normalization("test-double")
    def double(volume, mask=None):
        return (volume * 2).astype(np.float32)

    try:
        assert get_normalization("test-double") is double
        spec = ConformSpec(shape=(4, 4, 4), voxel_size=(1.0,) * 3, normalize="test-double")
        out = conform(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), spec)
        assert (out == 2).all()
        with pytest.raises(ValueError):
            register_normalization("test-double")(lambda v, m=None: v)
    finally:
        NORMALIZATIONS.pop("test-double")


def _volume_with_background():
    rng = np.random.default_rng(1)
    v = np.zeros((20, 20, 20), np.float32)
    v[5:15, 5:15, 5:15] = rng.normal(300, 40, (10, 10, 10))
    return v


def test_zscore_over_brain_background_kept():
    v = _volume_with_background()
    out = get_normalization("zscore")(v, None)
    brain = v != 0
    assert out.dtype == np.float32
    assert abs(out[brain].mean()) < 1e-5 and abs(out[brain].std() - 1) < 1e-5
    assert (out[~brain] == 0).all()


def test_zscore_without_background_uses_all_voxels():
    v = np.random.default_rng(2).normal(50, 5, (10, 10, 10)).astype(np.float32)
    out = get_normalization("zscore")(v, None)
    assert abs(out.mean()) < 1e-5 and abs(out.std() - 1) < 1e-5


def test_zscore_constant_only_centres():
    v = np.full((5, 5, 5), 7.0, np.float32)
    out = get_normalization("zscore")(v, None)
    assert np.isfinite(out).all() and (out == 0).all()
    z = get_normalization("zscore")(np.zeros((4, 4, 4), np.float32), None)
    assert (z == 0).all()


def test_zscore_explicit_mask():
    v = np.random.default_rng(3).normal(50, 5, (10, 10, 10)).astype(np.float32)
    mask = np.zeros(v.shape, bool)
    mask[:5] = True
    out = get_normalization("zscore")(v, mask)
    assert abs(out[mask].mean()) < 1e-5 and abs(out[mask].std() - 1) < 1e-5
    assert (out[~mask] == 0).all()
    with pytest.raises(ValueError):
        brain_mask(v, mask[:5])


def test_none_normalization():
    v = _volume_with_background()
    out = get_normalization("none")(v.astype(np.float64), None)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, v)


def test_minmax():
    v = _volume_with_background() + 0.0
    out = get_normalization("minmax")(v, None)
    assert out.min() == 0.0 and out.max() == pytest.approx(1.0)
    assert (out[v == 0] == 0).all()
    assert (get_normalization("minmax")(np.full((3, 3, 3), 4.0), None) == 0).all()


def test_robust():
    v = _volume_with_background()
    brain = v != 0
    v[7, 7, 7] = 1e6  # an outlier hardly moves the robust statistics
    out = get_normalization("robust")(v, None)
    q25, med, q75 = np.percentile(out[brain], [25, 50, 75])
    assert abs(med) < 1e-4 and q75 - q25 == pytest.approx(1.0, abs=1e-4)
    assert (out[~brain] == 0).all()


# ---------------------------------------------------------------- real scans


def test_real_scans_conform():
    paths = real_t1_paths()
    spec = ConformSpec()
    centre = (np.array(spec.shape) - 1) / 2
    for path in paths:
        img = read_nifti(path)
        assert img.shape == (182, 218, 182) and img.get_data_dtype() == np.int16
        assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
        start = time.perf_counter()
        out = conform(img, spec, source=path)
        elapsed = time.perf_counter() - start
        assert out.shape == (91, 109, 91) and out.dtype == np.float32 and out.flags.c_contiguous
        assert np.isfinite(out).all()
        brain = out != 0
        assert 0.1 < brain.mean() < 0.6
        assert abs(out[brain].mean()) < 1e-3 and abs(out[brain].std() - 1) < 1e-3
        com = np.argwhere(brain).mean(axis=0)
        # MNI space: the brain is centred left-right and within a few voxels of the grid centre
        assert abs(com[0] - centre[0]) < 2, com
        assert np.all(np.abs(com - centre) < 6), com
        # superior is at high z: the top slab holds less brain than the middle
        assert brain[:, :, 80:].sum() < brain[:, :, 40:50].sum()
        assert elapsed < 2.0


def test_real_scan_lps_equals_ras_copy(tmp_path):
    path = real_t1_paths()[0]
    img = nib.load(str(path))
    ras = nib.as_closest_canonical(img)
    assert nib.aff2axcodes(ras.affine) == ("R", "A", "S")
    copy = tmp_path / "ras.nii.gz"
    nib.save(nib.Nifti1Image(np.asanyarray(ras.dataobj), ras.affine, ras.header), str(copy))
    np.testing.assert_array_equal(load_conformed(copy, ConformSpec()), load_conformed(path, ConformSpec()))


def test_real_scans_missing_fails_in_ci(tmp_path, monkeypatch):
    from tests.engine import conftest_scans

    monkeypatch.setattr(conftest_scans, "REAL_T1_DIR", tmp_path / "absent")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="real T1 scans not found"):
        conftest_scans.real_t1_paths()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        conftest_scans.real_t1_paths()


def test_conform_does_not_alias_input():
    data = np.ones((4, 4, 4), np.float32)
    img = nib.Nifti1Image(data, np.eye(4))
    out = conform(img, ConformSpec(shape=(4, 4, 4), voxel_size=(1.0,) * 3, normalize="none"))
    out[0, 0, 0] = 5.0
    assert data[0, 0, 0] == 1.0


def test_conform_rejects_degenerate_affine():
    aff = np.eye(4)
    aff[2, 2] = 0.0
    img = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), None)
    img._affine = aff  # nibabel refuses such an affine in the constructor
    with pytest.raises(ScanError, match="voxel size"):
        conform(img, SPEC, source="degenerate")
