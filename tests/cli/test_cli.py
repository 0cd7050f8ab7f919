"""End-to-end tests of the brainmia command line on small synthetic cohorts and the real scans."""

from __future__ import annotations

import csv
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from backend.cli import app
from tests.conftest import TINY_CHANNELS, TINY_SHAPE, TINY_VOXEL, save_tiny_model
from worker.engine.manifest import load_manifest
from worker.engine.models import BrainAge3D
from worker.engine.synth import CohortSpec, generate_cohort
from worker.engine.training import TrainingOptions, load_volumes, train_brain_age

runner = CliRunner()


def _train(records: list, epochs: int, seed: int = 0) -> BrainAge3D:
    from worker.engine.volumes import ConformSpec

    spec = ConformSpec(shape=TINY_SHAPE, voxel_size=(TINY_VOXEL,) * 3, normalize="zscore")
    x = load_volumes(records, spec)
    y = torch.tensor([r.age for r in records], dtype=torch.float32)
    torch.manual_seed(seed)
    model = BrainAge3D(channels=TINY_CHANNELS, mean_age=float(y.mean()), age_scale=float(y.std()))
    return train_brain_age(model, x, y, TrainingOptions(epochs=epochs, batch_size=4, lr=1e-2, weight_decay=0.0, seed=seed))


@pytest.fixture(scope="module")
def overfit_model(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained on the members of the tiny cohort until it memorises them."""
    members = [r for r in load_manifest(tiny_cohort).records if r.member]
    return save_tiny_model(_train(members, epochs=80), tmp_path_factory.mktemp("overfit") / "model.pt")


@pytest.fixture(scope="module")
def unseen_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained on another cohort: it never saw the tiny cohort's 'members'."""
    other = generate_cohort(
        tmp_path_factory.mktemp("other_cohort"),
        CohortSpec(n_subjects=40, shape=TINY_SHAPE, voxel_size=TINY_VOXEL, seed=99),
    )
    return save_tiny_model(_train(load_manifest(other).records, epochs=40), tmp_path_factory.mktemp("unseen") / "model.pt")


def _assess(manifest: Path, model: Path, out: Path, *extra: str) -> tuple[int, dict]:
    result = runner.invoke(
        app,
        ["assess", "--model", str(model), "--manifest", str(manifest), "--out", str(out), "--no-cache", "-q", *extra],
    )
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    return result.exit_code, report | {"_output": result.output}


def test_overfit_model_fails_the_policy(tiny_cohort: Path, overfit_model: Path, tmp_path: Path) -> None:
    code, report = _assess(tiny_cohort, overfit_model, tmp_path, "--classifier", "threshold", "--classifier", "logistic")
    assert code == 1, report["_output"]
    assert report["schema_version"] == "1.0"
    assert report["verdict"]["level"] == "high"
    assert report["verdict"]["passed"] is False
    assert report["utility"]["mae_members"] < report["utility"]["mae_nonmembers"]
    by_name = {a["name"]: a for a in report["attacks"]}
    assert by_name["prediction+label/logistic"]["threat_model"] == "black-box"
    assert by_name["grad-norm/threshold"]["threat_model"] == "white-box"
    assert by_name["error/threshold"]["metrics"]["accuracy"]["mean"] >= 0.65
    for name in ("report.json", "report.html", "features.csv", "features.arrays.npz"):
        assert (tmp_path / name).exists(), name
    table = pd.read_csv(tmp_path / "features.csv")
    assert {"scan_id", "member", "age", "prediction", "error", "sex", "site", "membership_score"} <= set(table.columns)
    assert any(c.startswith("grad_norm:") for c in table.columns)
    provenance = report["provenance"]
    assert provenance["model"]["format"] == "torchscript"
    assert len(provenance["model"]["sha256"]) == 64 and len(provenance["manifest"]["sha256"]) == 64


def test_model_that_never_saw_the_members_scores_near_chance(
    tiny_cohort: Path, unseen_model: Path, tmp_path: Path
) -> None:
    code, report = _assess(tiny_cohort, unseen_model, tmp_path, "--classifier", "threshold", "--classifier", "logistic")
    # never medium or high; a tiny cohort cannot rule medium out, so inconclusive (exit 1) unless it is low
    level = report["verdict"]["level"]
    assert level in ("low", "inconclusive"), report["_output"]
    assert code == (0 if level == "low" else 1), report["_output"]
    assert report["verdict"]["passed"] is (level == "low")
    ok = [a for a in report["attacks"] if a["status"] == "ok"]
    assert ok
    for attack in ok:
        auc = attack["metrics"]["auc"]
        assert auc["ci_low"] <= 0.5 <= auc["ci_high"], (attack["name"], auc)


def test_predictions_table_runs_black_box_sets_only(tiny_cohort: Path, tmp_path: Path) -> None:
    manifest = load_manifest(tiny_cohort)
    rng = np.random.default_rng(0)
    preds = tmp_path / "predictions.csv"
    with preds.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["scan_id", "prediction"])
        for r in manifest.records:  # members predicted well, non-members poorly: a leaky model
            writer.writerow([r.scan_id, r.age + rng.normal(0, 0.5 if r.member else 6.0)])
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["assess", "--predictions", str(preds), "--manifest", str(tiny_cohort), "--out", str(out), "-q", "--classifier", "logistic"]
    )
    assert result.exit_code == 1, result.output
    report = json.loads((out / "report.json").read_text())
    assert {a["threat_model"] for a in report["attacks"]} == {"black-box"}
    assert report["provenance"]["model"]["format"] == "predictions"


def test_bad_manifest_exits_2_naming_the_line(tmp_path: Path, unseen_model: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("scan_id,path,age,member\na,a.nii.gz,notanumber,1\n")
    result = runner.invoke(app, ["assess", "--model", str(unseen_model), "--manifest", str(manifest), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "line 2" in result.output and "age" in result.output
    assert not (tmp_path / "o" / "report.json").exists()


class _Payload:
    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(tiny_cohort: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker  # type: ignore[attr-defined]
    evil = tmp_path / "model.pt"
    evil.write_bytes(pickle.dumps(payload))
    proc = subprocess.run(
        [sys.executable, "-m", "backend.cli", "assess", "--model", str(evil), "--manifest", str(tiny_cohort),
         "--out", str(tmp_path / "out"), "--arch", "brain_age_3d"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "refused" in proc.stderr
    assert not marker.exists()


def test_real_scans_through_features_with_a_2mm_model(real_t1_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    weights = tmp_path / "brain_age_3d.safetensors"
    save_file(BrainAge3D().state_dict(), str(weights))
    out = tmp_path / "features.csv"
    result = runner.invoke(
        app,
        ["features", "--model", str(weights), "--manifest", str(real_t1_dir / "manifest.csv"), "--out", str(out),
         "--arch", "brain_age_3d", "--input-shape", "91x109x91", "--voxel-size", "2", "--normalize", "zscore",
         "--batch-size", "2", "--no-cache", "-q"],
    )
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert list(table["scan_id"]) == ["subject1", "subject2", "subject3", "subject4"]
    assert np.isfinite(table["prediction"]).all()
    grad_cols = [c for c in table.columns if c.startswith("grad_norm:")]
    assert len(grad_cols) == 7 and np.isfinite(table[grad_cols].to_numpy()).all()
    arrays = np.load(out.with_suffix(".arrays.npz"))
    assert arrays["grad:conv6"].shape == (4, 256 * 64 + 64)
    assert arrays["activation"].shape == (4, 64)


def test_synth_command(tmp_path: Path) -> None:
    result = runner.invoke(app, ["synth", "--out", str(tmp_path), "--subjects", "6", "--shape", "23x27x23", "--voxel-size", "8", "--seed", "3", "-q"])
    assert result.exit_code == 0, result.output
    manifest = load_manifest(tmp_path / "manifest.csv")
    assert len(manifest.records) == 6


def test_demo_command_end_to_end(tmp_path: Path) -> None:
    """A reduced demo: the real command, cohort, training, TorchScript + sidecar, assessment, report."""
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out), "--subjects", "24", "--epochs", "4", "--repeats", "2",
                                 "--references", "0", "-q"])
    assert result.exit_code == 0, result.output
    assert (out / "model" / "demo_brain_age_3d.pt").exists()
    assert json.loads((out / "model" / "demo_brain_age_3d.pt.json").read_text())["recipe"]["epochs"] == 4
    report = json.loads((out / "report" / "report.json").read_text())
    assert not any(a.get("family") == "reference" for a in report["attacks"])  # --references 0: none
    assert report["provenance"]["model"]["format"] == "torchscript"
    assert report["provenance"]["manifest"]["n_scans"] == 24
    assert {a["feature_set"] for a in report["attacks"]} >= {"prediction+label", "grad-norm", "grad:output"}
    assert "Open the report" in result.output
