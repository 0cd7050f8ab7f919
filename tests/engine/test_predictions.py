"""Tests of user-supplied prediction tables."""

from __future__ import annotations

import pytest

from worker.engine.errors import InputError, ManifestError
from worker.engine.manifest import load_manifest
from worker.engine.predictions import load_predictions


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("scan_id,path,age,member\na,a.nii,50,1\nb,b.nii,60,0\nc,c.nii,70,1\n")
    return load_manifest(path, check_files=False)


def write(tmp_path, text):
    path = tmp_path / "predictions.csv"
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(path, manifest):
    with pytest.raises(ManifestError) as info:
        load_predictions(path, manifest)
    assert isinstance(info.value, InputError) and info.value.path == path and str(path) in str(info.value)
    return {(e.line, e.column): e.reason for e in info.value.errors}


def test_good(tmp_path, manifest):
    path = write(tmp_path, "\ufeffprediction , scan_id,note\n 61.5 ,b,x\n52,a,\n\n70.25,c,y\n\n")
    preds = load_predictions(path, manifest)
    assert preds == {"a": 52.0, "b": 61.5, "c": 70.25}
    assert list(preds) == ["a", "b", "c"]  # manifest order


def test_missing_columns(tmp_path, manifest):
    errs = errors_of(write(tmp_path, "scan_id,age\na,50\n"), manifest)
    assert errs == {(1, "prediction"): "missing required column 'prediction'"}


def test_empty_file(tmp_path, manifest):
    errs = errors_of(write(tmp_path, ""), manifest)
    assert (1, None) in errs and "empty" in errs[(1, None)]


def test_row_errors(tmp_path, manifest):
    text = (
        "scan_id,prediction\n"  # 1
        "a,50\n"  # 2
        "a,51\n"  # 3 duplicate
        "b,abc\n"  # 4 not a number
        "c,nan\n"  # 5 not finite
        "zzz,40\n"  # 6 unknown scan
        "b\n"  # 7 wrong width
        "q,\n"  # 8 unknown scan and missing prediction
        "c,inf\n"  # 9 duplicate (c on line 5)
        ",3\n"  # 10 missing scan_id
    )
    errs = errors_of(write(tmp_path, text), manifest)
    assert "duplicate scan_id 'a' (first on line 2)" in errs[(3, "scan_id")]
    assert "'abc' is not a number" in errs[(4, "prediction")]
    assert "not finite" in errs[(5, "prediction")]
    assert "'zzz' is not in the manifest" in errs[(6, "scan_id")]
    assert "expected 2 fields, found 1" in errs[(7, None)]
    assert "missing prediction" in errs[(8, "prediction")] and (8, "scan_id") in errs
    assert "duplicate scan_id 'c' (first on line 5)" in errs[(9, "scan_id")]
    assert "missing scan_id" in errs[(10, "scan_id")]
    assert (2, "scan_id") not in errs and (2, "prediction") not in errs


def test_missing_predictions_listed_on_line_1(tmp_path, manifest):
    errs = errors_of(write(tmp_path, "scan_id,prediction\nb,60\n"), manifest)
    assert list(errs) == [(1, "scan_id")]
    assert "2 manifest scan(s) have no prediction: a, c" in errs[(1, "scan_id")]


def test_many_missing_predictions_abbreviated(tmp_path):
    rows = "".join(f"s{i},x.nii,50,1\n" for i in range(30))
    mpath = tmp_path / "m.csv"
    mpath.write_text("scan_id,path,age,member\n" + rows)
    m = load_manifest(mpath, check_files=False)
    errs = errors_of(write(tmp_path, "scan_id,prediction\n"), m)
    assert "(30 in all)" in errs[(1, "scan_id")]
