"""``brainmia assess`` with reference models: trained from a recipe (and reused from the store), or
supplied with keep.csv; the quantile attacks run by default."""

from __future__ import annotations

import csv
import re
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TINY_CHANNELS, save_tiny_model
from worker.engine.manifest import load_manifest
from worker.engine.models import BrainAge3D
from worker.engine.report_model import Report

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_ATTACKS = {"calibrated-loss", "lira-offline", "lira-online", "rmia", "calibrated-loss:grad-norm",
                     "lira-offline:grad-norm", "lira-online:grad-norm"}


def _assess(tmp: Path, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAINMIA_")}
    env["BRAINMIA_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "backend.cli", "assess", "--quiet", "--repeats", "1",
                           "--classifier", "threshold", "--feature-set", "error", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _report(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    Report.from_dict(report)  # the typed report holds the new attacks
    return report


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "recipe.toml"
    path.write_text('[recipe]\narch = "brain_age_3d"\nepochs = 1\nbatch_size = 8\nlr = 0.001\n'
                    f'arch_kwargs = {{ channels = {list(TINY_CHANNELS)} }}\n')
    return path


def test_trained_references_run_every_reference_attack_and_are_reused(
    tiny_cohort: Path, plain_model: Path, recipe_file: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    done = _assess(tmp_path, data, "--model", str(plain_model), "--manifest", str(tiny_cohort), "--out",
                   str(tmp_path / "r1"), "--reference", "2", "--recipe", str(recipe_file))
    assert done.returncode in (0, 1), done.stderr[-3000:]
    report = _report(tmp_path / "r1")
    by_name = {a["name"]: a for a in report["attacks"]}
    assert REFERENCE_ATTACKS <= set(by_name)
    assert {"qmia", "qmia:grad-norm"} <= set(by_name)
    for name in REFERENCE_ATTACKS:
        attack = by_name[name]
        assert attack["family"] == "reference" and attack["n_references"] == 2, attack.get("error")
        assert attack["status"] == "ok", attack.get("error")
        assert attack["n_train"] == 0 and attack["n_test"] == 60  # every audit scan tested
    refs = report["provenance"]["references"]
    assert refs["source"] == "trained" and refs["n_models"] == 2 and len(refs["keep_hash"]) == 64
    assert refs["recipe"]["epochs"] == 1 and refs["reused"] == 0
    # the training time was estimated from a measured run and said before anything ran
    assert re.search(r"reference models: training 2 reference models \(1 epochs on 30 scans each\): about \d+ (s|min)",
                     done.stderr), done.stderr[-2000:]
    assert done.stderr.index("reference models: training") < done.stderr.index("verdict: ")  # before the results
    assert refs["estimated_s"] > 0 and refs["training_s"] > 0
    # the same recipe, scans and seed: the stored references are reused, not retrained
    again = _assess(tmp_path, data, "--model", str(plain_model), "--manifest", str(tiny_cohort), "--out",
                    str(tmp_path / "r2"), "--reference", "2", "--recipe", str(recipe_file), "--no-quantile")
    assert again.returncode in (0, 1), again.stderr[-3000:]
    second = _report(tmp_path / "r2")
    assert second["provenance"]["references"]["reused"] == 2
    assert "reference models: all 2 already trained" in again.stderr
    assert second["provenance"]["references"]["estimated_s"] is None
    assert not any(a["name"].startswith("qmia") for a in second["attacks"])


def _supplied(tmp_path: Path, manifest: Path, cell: str = "") -> tuple[Path, Path]:
    folder = tmp_path / "refs"
    folder.mkdir()
    for k in range(2):
        torch.manual_seed(100 + k)
        save_tiny_model(BrainAge3D(channels=TINY_CHANNELS), folder / f"ref{k}.pt")
    keep = tmp_path / "keep.csv"
    rng = np.random.default_rng(0)
    with keep.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["scan_id", "ref0", "ref1"])
        for i, record in enumerate(load_manifest(manifest).records):
            first = int(rng.integers(0, 2))
            writer.writerow([record.scan_id, cell if (cell and i == 3) else first, 1 - first])
    return folder, keep


def test_supplied_references_with_keep_csv(tiny_cohort: Path, plain_model: Path, tmp_path: Path) -> None:
    folder, keep = _supplied(tmp_path, tiny_cohort)
    done = _assess(tmp_path, tmp_path / "data", "--model", str(plain_model), "--manifest", str(tiny_cohort),
                   "--out", str(tmp_path / "out"), "--reference-models", str(folder), "--keep", str(keep),
                   "--reference-attack", "lira-offline", "--reference-attack", "calibrated-loss:grad-norm")
    assert done.returncode in (0, 1), done.stderr[-3000:]
    report = _report(tmp_path / "out")
    refs = report["provenance"]["references"]
    assert refs["source"] == "supplied" and refs["models"] == ["ref0.pt", "ref1.pt"]
    names = {a["name"]: a for a in report["attacks"] if a.get("family") == "reference"}
    assert set(names) == {"lira-offline", "calibrated-loss:grad-norm"}
    assert all(a["status"] == "ok" for a in names.values()), [a.get("error") for a in names.values()]


def test_a_keep_csv_with_a_bad_cell_is_refused_naming_the_row(tiny_cohort: Path, plain_model: Path,
                                                               tmp_path: Path) -> None:
    folder, keep = _supplied(tmp_path, tiny_cohort, cell="yes")
    done = _assess(tmp_path, tmp_path / "data", "--model", str(plain_model), "--manifest", str(tiny_cohort),
                   "--out", str(tmp_path / "out"), "--reference-models", str(folder), "--keep", str(keep))
    assert done.returncode == 2
    assert "keep.csv" in done.stderr and "line 5" in done.stderr and "yes" in done.stderr
    assert not (tmp_path / "out" / "report.json").exists()


def test_reference_flags_that_do_not_go_together_are_refused(tiny_cohort: Path, plain_model: Path,
                                                              recipe_file: Path, tmp_path: Path) -> None:
    done = _assess(tmp_path, tmp_path / "data", "--model", str(plain_model), "--manifest", str(tiny_cohort),
                   "--out", str(tmp_path / "out"), "--recipe", str(recipe_file), "--reference-models",
                   str(tmp_path), "--keep", str(recipe_file))
    assert done.returncode == 2 and "does not go with" in done.stderr
    odd = _assess(tmp_path, tmp_path / "data", "--model", str(plain_model), "--manifest", str(tiny_cohort),
                  "--out", str(tmp_path / "out"), "--reference", "3")
    assert odd.returncode == 2 and "--reference" in odd.stderr
