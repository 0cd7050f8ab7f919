"""Formula injection: every CSV BrainMIA writes keeps hostile text inert, numbers as numbers."""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from worker.engine.csv_safety import neutralise_cell, neutralise_frame, restore_cell, restore_frame

HOSTILE = [
    '=HYPERLINK("http://x","y")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "-",
    "=",
]
HARMLESS = ["sub-0001", "F", "site A", "a=b", "", "#1", "'quoted", "-3.2", "+1e5", "-0.5", "12"]


@pytest.mark.parametrize("value", HOSTILE)
def test_formula_cells_get_a_quote_and_come_back(value: str) -> None:
    assert neutralise_cell(value) == "'" + value
    assert neutralise_cell(neutralise_cell(value)) == "'" + value  # applying it twice changes nothing
    assert restore_cell(neutralise_cell(value)) == value


@pytest.mark.parametrize("value", HARMLESS)
def test_other_text_and_plain_numbers_are_unchanged(value: str) -> None:
    assert neutralise_cell(value) == value
    assert restore_cell(value) == value


@pytest.mark.parametrize("value", [-3.2, -1, 0, np.float64(-7.5), None, np.nan, True])
def test_non_text_values_are_never_touched(value: object) -> None:
    assert neutralise_cell(value) is value


def _table() -> pd.DataFrame:
    return pd.DataFrame({
        "scan_id": ['=HYPERLINK("http://x","y")', "sub-2", "-1"],
        "member": [1, 0, 1],
        "age": [60.5, 61.0, 70.25],
        "error": [-3.2, 2.5, -0.75],
        "site": ["+cmd", "A", None],
        "=evil_column": ["x", "@y", "z"],
    })


def test_frame_numbers_stay_numbers_text_is_neutralised_and_restored(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    neutralise_frame(_table()).to_csv(path, index=False)
    rows = list(csv.reader(path.open(newline="")))
    assert rows[0] == ["scan_id", "member", "age", "error", "site", "'=evil_column"]
    assert rows[1][0] == "'=HYPERLINK(\"http://x\",\"y\")" and rows[1][3] == "-3.2" and rows[1][4] == "'+cmd"
    assert rows[2][5] == "'@y" and rows[3][0] == "-1" and rows[3][3] == "-0.75"
    back = restore_frame(pd.read_csv(path))
    pd.testing.assert_frame_equal(back, _table().fillna(np.nan))


def test_features_csv_written_by_the_engine_is_safe_and_read_back_by_the_pages(tmp_path: Path) -> None:
    from backend.services.results import load_results
    from worker.engine.features.table import FeatureTable

    frame = _table().drop(columns=["=evil_column"]).assign(prediction=[57.3, 63.5, 69.5])
    table = FeatureTable(table=frame, attributes=["site"])
    table.save(tmp_path / "features.csv")
    text = (tmp_path / "features.csv").read_text()
    assert "\n'=HYPERLINK" not in text  # quoted by the CSV writer, but with the guard inside the quotes
    assert '"\'=HYPERLINK(""http://x"",""y"")"' in text and ",'+cmd," in text and ",-3.2," in text
    (tmp_path / "report.json").write_text("{}")
    _, features = load_results(tmp_path)
    assert features["scan_id"][0] == '=HYPERLINK("http://x","y")' and features["site"][0] == "+cmd"
    assert features["error"][0] == -3.2


def test_manifests_written_by_the_product_are_safe_and_read_back_unchanged(tmp_path: Path) -> None:
    from worker.engine.manifest import load_manifest
    from worker.engine.synth.cohort import write_manifest_csv

    rows = [{"scan_id": "=1+1", "path": "s1.nii.gz", "age": 60.0, "member": 1, "site": "+cmd"},
            {"scan_id": "sub-2", "path": "s2.nii.gz", "age": 61.0, "member": 0, "site": "-3.5"}]
    path = write_manifest_csv(tmp_path / "manifest.csv", ["scan_id", "path", "age", "member", "site"], rows)
    assert path.read_text().splitlines()[1] == "'=1+1,s1.nii.gz,60.0,1,'+cmd"
    manifest = load_manifest(path, check_files=False)
    assert [r.scan_id for r in manifest.records] == ["=1+1", "sub-2"]
    assert [r.attributes["site"] for r in manifest.records] == ["+cmd", "-3.5"]


def test_the_manifest_submit_packs_is_safe(tmp_path: Path) -> None:
    from backend.client import pack_manifest

    outside = tmp_path / "elsewhere" / "a.nii.gz"
    outside.parent.mkdir()
    outside.write_bytes(b"x")
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "manifest.csv").write_text(f"scan_id,path,age,member,site\n@evil,{outside},60,1,=cmd\n")
    archive = pack_manifest(folder / "manifest.csv", tmp_path / "out.tar.gz")
    with tarfile.open(archive) as tar:
        packed = tar.extractfile("manifest.csv").read().decode()  # type: ignore[union-attr]
    row = next(csv.DictReader(io.StringIO(packed)))
    assert row["scan_id"] == "'@evil" and row["site"] == "'=cmd" and row["age"] == "60"
