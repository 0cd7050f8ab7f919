"""Scan QA through an assessment: the report's typed section, the HTML view, and `brainmia assess` exit 2."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from backend.cli import app
from tests.conftest import TINY_CHANNELS, save_tiny_model
from tests.engine.conftest_scans import real_t1_paths
from tests.engine.test_scan_qa import GRID_2MM, _table, shifted
from worker.engine import scan_qa, scan_qa_policy
from worker.engine.assessment import AssessmentOptions, run_assessment
from worker.engine.features import ExtractionOptions
from worker.engine.errors import InputError
from worker.engine.manifest import ScanRecord, load_manifest
from worker.engine.models import BrainAge3D, load_model
from worker.engine.report import validate
from worker.engine.report_model import Report

runner = CliRunner()


def test_the_report_carries_a_typed_scan_quality_section_and_the_html_shows_it(tiny_cohort: Path, tmp_path: Path) -> None:
    from frontend.report_html import render_report_html

    torch.manual_seed(0)
    model = load_model(save_tiny_model(BrainAge3D(channels=TINY_CHANNELS, mean_age=60.0), tmp_path / "m.pt"))
    options = AssessmentOptions(repeats=1, quantile=False, feature_sets=["error"], classifiers=["threshold"],
                                extraction=ExtractionOptions(white_box=False, num_workers=0))
    result = run_assessment(load_manifest(tiny_cohort), model=model, options=options)
    qa = result.report["scan_quality"]
    assert qa["n_scans"] == len(result.features.table) and qa["mode"] == "fail"
    assert not qa["judged"] and "8 mm" in qa["not_judged_reason"]  # the tiny grid is recorded, not judged
    assert result.report["provenance"]["settings"]["scan_qa"]["mode"] == "fail"
    typed = validate(result.report)
    assert typed.scan_quality is not None and typed.to_dict() == result.report
    assert set(scan_qa.QA_COLUMNS) <= set(result.features.table.columns)
    html = render_report_html(result.report, result.features.table)
    assert 'id="scan-quality"' in html and "were not judged" in html and 'href="#scan-quality"' in html

    # a report whose scans were flagged (warn mode) lists them with what to do
    bad = (0.41, 0.31)
    flagged = scan_qa_policy.scan_qa_section(_table([bad, (0.93, 0.0), bad, (0.95, 0.0)]), scan_qa_policy.ScanQaPolicy(mode="warn"),
                                      scan_qa.template_for(GRID_2MM))
    report = dict(result.report, scan_quality=flagged)
    assert Report.from_dict(report).scan_quality.flagged[0].scan_id == "s0"
    html = render_report_html(report, result.features.table)
    assert "2 of 4 scans do not look like registered" in html and "<code>s2</code>" in html
    assert "HD-BET, SynthStrip" in html and "31.0%" in html

    off = run_assessment(load_manifest(tiny_cohort), model=model,
                         options=AssessmentOptions(**{**options.__dict__, "scan_qa": scan_qa_policy.ScanQaPolicy(mode="off")}))
    assert "scan_quality" not in off.report and "qa_template_corr" not in off.features.table.columns
    assert 'id="scan-quality"' not in render_report_html(off.report, off.features.table)


def test_assess_exits_2_when_most_real_scans_are_shifted(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    rows = []
    for index, path in enumerate(real_t1_paths()):
        img = nib.load(path)
        data = img.get_fdata(dtype=np.float32)
        moved = shifted(data, 1, 18) if index < 3 else data  # three of four moved 18 mm forward
        nib.save(nib.Nifti1Image(moved, img.affine), tmp_path / path.name)
        rows.append({"scan_id": path.name.split(".")[0], "path": path.name, "age": 50 + index, "member": index % 2})
    with open(tmp_path / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    torch.manual_seed(0)
    weights = tmp_path / "brain_age_3d.safetensors"
    save_file(BrainAge3D().state_dict(), str(weights))
    command = ["assess", "--model", str(weights), "--manifest", str(tmp_path / "manifest.csv"), "--arch", "brain_age_3d",
               "--input-shape", "91x109x91", "--voxel-size", "2", "--normalize", "zscore", "--batch-size", "2",
               "--no-cache", "-q", "--loader-workers", "0", "--repeats", "1", "--no-quantile"]
    result = runner.invoke(app, [*command, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "scan QA: 3 of 4 scans" in text and "subject1" in text and "subject4" not in text
    assert "Register to MNI152" in text and "skull-strip" in text
    assert not (tmp_path / "out" / "report.json").exists()

    # assessed anyway (warn): the verdict says the flagged scans can hide leakage, and what to do
    warned = runner.invoke(app, [*command, "--out", str(tmp_path / "warn"), "--scan-qa", "warn",
                                 "--feature-set", "error", "--classifier", "threshold"])
    assert warned.exit_code in (0, 1), warned.output
    report = Report.read(tmp_path / "warn" / "report.json")
    finding = next(f for f in report.verdict.findings if f.metric == "scan_qa_flagged")
    assert finding.severity == "info" and finding.value == 0.75
    assert finding.message.startswith("3 of 4 scans (1 member(s), 2 non-member(s)) do not look like registered")
    assert "lower than the model's" in finding.message and "skull-strip" in finding.recommendation


def test_the_scan_qa_flag_reaches_the_report_and_a_bad_value_exits_2(tiny_cohort: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = save_tiny_model(BrainAge3D(channels=TINY_CHANNELS, mean_age=60.0), tmp_path / "m.pt")
    common = ["assess", "--model", str(model), "--manifest", str(tiny_cohort), "--no-cache", "-q", "--repeats", "1",
              "--no-quantile", "--feature-set", "error", "--classifier", "threshold", "--loader-workers", "0"]
    bad = runner.invoke(app, [*common, "--out", str(tmp_path / "bad"), "--scan-qa", "strict"])
    assert bad.exit_code == 2 and "--scan-qa" in bad.output
    warn = runner.invoke(app, [*common, "--out", str(tmp_path / "warn"), "--scan-qa", "warn"])
    assert warn.exit_code in (0, 1), warn.output
    report = Report.read(tmp_path / "warn" / "report.json")
    assert report.scan_quality is not None and report.scan_quality.mode == "warn"


def _shifted_real_scans(folder: Path, n: int) -> list[ScanRecord]:
    """``n`` real T1 scans, each moved 18 mm along some axis (every one of them looks unregistered)."""
    records = []
    for i in range(n):
        path = real_t1_paths()[i % 4]
        img = nib.load(path)
        out = folder / f"moved{i}.nii.gz"
        nib.save(nib.Nifti1Image(shifted(img.get_fdata(dtype=np.float32), i % 3, 18), img.affine), out)
        records.append(ScanRecord(scan_id=f"moved{i}", path=out, age=50.0 + i, member=bool(i % 2), line=i + 2))
    return records


def test_most_scans_flagged_in_a_random_sample_fail_before_any_feature(tmp_path: Path) -> None:
    """Six of six sampled scans flagged: the 95% lower bound of the flagged share (0.61) is above
    one half, so the assessment stops before extracting features; with four of four (0.47) it cannot
    be sure and leaves it to the check of every scan."""
    records = _shifted_real_scans(tmp_path, 6)
    policy = scan_qa_policy.ScanQaPolicy()
    with pytest.raises(InputError, match="checked before computing any feature: 6 of a random 6 scans flagged"):
        scan_qa_policy.early_scan_qa(records, GRID_2MM, policy)
    four = scan_qa_policy.early_scan_qa(records[:4], GRID_2MM, policy)
    assert four is not None and four["n_flagged"] == 4 and 0.45 < four["flagged_fraction_low"] < 0.5
    assert scan_qa_policy.early_scan_qa(records, GRID_2MM, scan_qa_policy.ScanQaPolicy(mode="warn")) is None
    originals = [ScanRecord(scan_id=f"s{i}", path=p, age=50.0, member=True, line=i + 2)
                 for i, p in enumerate(real_t1_paths())]
    assert scan_qa_policy.early_scan_qa(originals, GRID_2MM, policy)["n_flagged"] == 0
