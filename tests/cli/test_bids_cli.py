"""``brainmia assess --bids`` and ``brainmia features --bids``: a BIDS dataset assessed end to end."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from backend.cli import app
from tests.bids_dataset import PREPROC, BidsCase, bids_case  # noqa: F401

runner = CliRunner()
QUICK = ["--feature-set", "error", "--feature-set", "grad-norm", "--classifier", "threshold", "--repeats", "2",
         "--no-quantile", "--no-cache", "-q"]


@pytest.mark.slow  # features, gradients and attacks of 60 scans: ~1 min on two shared cores
def test_assess_a_bids_dataset(bids_case: BidsCase, plain_model: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "out"
    result = runner.invoke(app, ["assess", "--bids", str(bids_case.root), "--members", str(bids_case.members),
                                 "--bids-filter", PREPROC, "--model", str(plain_model), "--out", str(out), *QUICK])
    assert result.exit_code in (0, 1), result.output
    report = json.loads((out / "report.json").read_text())
    manifest = report["provenance"]["manifest"]
    assert manifest["path"] == "bids-manifest.csv"
    assert (manifest["n_scans"], manifest["n_members"]) == (60, len(bids_case.member_ids))
    source = manifest["source"]
    assert source["kind"] == "bids" and source["dataset"] == "dataset" and source["filter"]["desc"] == "preproc"
    assert source["members_sha256"] == hashlib.sha256(bids_case.members.read_bytes()).hexdigest()
    assert {a["feature_set"] for a in report["attacks"]} >= {"error", "grad-norm"}
    table = pd.read_csv(out / "features.csv", keep_default_na=False)
    assert set(table["scan_id"]) == set(bids_case.ages)
    assert set(table.loc[table["member"] == 1, "scan_id"]) == bids_case.member_ids
    assert {"sex", "site", "session"} <= set(table.columns)
    assert set(table["session"]) == {"ses-1", "ses-2", ""}
    assert (out / "bids-manifest.csv").is_file() and (out / "bids-manifest.source.json").is_file()


def test_features_of_a_bids_dataset(bids_case: BidsCase, plain_model: Path, tmp_path: Path) -> None:  # noqa: F811
    members = tmp_path / "members.txt"
    members.write_text("sub-01\nsub-11\n")
    non_members = tmp_path / "non-members.txt"
    non_members.write_text("sub-02 ses-2\n12\n")
    out = tmp_path / "features.csv"
    result = runner.invoke(app, ["features", "--bids", str(bids_case.root), "--members", str(members),
                                 "--non-members", str(non_members), "--bids-filter", "scope=raw",
                                 "--model", str(plain_model), "--out", str(out), "--black-box", "--no-cache", "-q"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert dict(zip(table["scan_id"], table["member"], strict=True)) == {
        "sub-01_ses-1": 1, "sub-01_ses-2": 1, "sub-11": 1, "sub-02_ses-2": 0, "sub-12": 0}
    assert (tmp_path / "features.bids-manifest.csv").is_file()
    assert "member and non-member sessions" not in result.output


def test_a_subject_on_both_sides_is_noted(bids_case: BidsCase, plain_model: Path, tmp_path: Path) -> None:  # noqa: F811
    members = tmp_path / "members.txt"
    members.write_text("sub-01_ses-1\nsub-11\n")
    non_members = tmp_path / "non-members.txt"
    non_members.write_text("sub-01_ses-2\nsub-12\n")
    result = runner.invoke(app, ["features", "--bids", str(bids_case.root), "--members", str(members),
                                 "--non-members", str(non_members), "--bids-filter", "scope=raw",
                                 "--model", str(plain_model), "--out", str(tmp_path / "f.csv"), "--black-box",
                                 "--no-cache", "-q"])
    assert result.exit_code == 0, result.output
    assert "note: 1 subject(s) have member and non-member sessions (sub-01)" in result.output


def test_bids_errors_exit_2_naming_the_subject(bids_case: BidsCase, plain_model: Path, tmp_path: Path) -> None:  # noqa: F811
    root = tmp_path / "dataset"
    shutil.copytree(bids_case.root, root)
    tsv = root / "participants.tsv"
    tsv.write_text("\n".join(line if not line.startswith("sub-15\t") else "\t".join(["sub-15", "n/a", *line.split("\t")[2:]])
                             for line in tsv.read_text().splitlines()) + "\n")
    base = ["assess", "--bids", str(root), "--members", str(bids_case.members), "--model", str(plain_model),
            "--out", str(tmp_path / "out"), *QUICK]
    result = runner.invoke(app, [*base, "--bids-filter", PREPROC])
    assert result.exit_code == 2, result.output
    assert "sub-15: no age (participants.tsv line 16" in result.output
    result = runner.invoke(app, base)  # raw and preprocessed T1w both match
    assert result.exit_code == 2, result.output
    assert "sub-01_ses-1: 2 scans match the filter" in result.output
    assert "desc (none / preproc)" in result.output
    assert not (tmp_path / "out" / "report.json").exists()


def test_bids_option_combinations(bids_case: BidsCase, tmp_path: Path) -> None:  # noqa: F811
    out = ["--out", str(tmp_path), "--predictions", str(tmp_path / "p.csv")]
    cases = [
        ([*out], "give exactly one of --manifest or --bids"),
        ([*out, "--bids", str(bids_case.root), "--manifest", str(tmp_path / "m.csv")], "give exactly one of --manifest or --bids"),
        ([*out, "--bids", str(bids_case.root)], "--bids needs --members"),
        ([*out, "--manifest", str(tmp_path / "m.csv"), "--members", str(bids_case.members)], "--members goes with --bids"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["assess", *args])
        assert result.exit_code == 2, result.output
        assert message in result.output
