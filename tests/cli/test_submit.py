"""``brainmia submit`` against a live server (the ``server`` fixture: an embedded-mode app served by
uvicorn in a thread on a free port), driven by the command as a pipeline would run it (a subprocess:
real exit codes, stderr).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch

from tests.cli.live_server import free_port, run_submit
from tests.conftest import TINY_CHANNELS, TINY_SHAPE, TINY_VOXEL, save_tiny_model
from worker.engine.manifest import load_manifest
from worker.engine.models import BrainAge3D


@pytest.fixture(scope="module")
def leaky_model(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained on the cohort's members until it memorises them."""
    from worker.engine.training import TrainingOptions, load_volumes, train_brain_age
    from worker.engine.volumes import ConformSpec

    members = [r for r in load_manifest(tiny_cohort).records if r.member]
    x = load_volumes(members, ConformSpec(shape=TINY_SHAPE, voxel_size=(TINY_VOXEL,) * 3, normalize="zscore"))
    y = torch.tensor([r.age for r in members], dtype=torch.float32)
    torch.manual_seed(0)
    model = BrainAge3D(channels=TINY_CHANNELS, mean_age=float(y.mean()), age_scale=float(y.std()))
    model = train_brain_age(model, x, y, TrainingOptions(epochs=60, batch_size=4, lr=1e-2, weight_decay=0.0, seed=0))
    return save_tiny_model(model, tmp_path_factory.mktemp("leaky") / "model.pt")


def test_leaky_model_fails_the_policy_exit_1(leaky_model: Path, server: tuple[str, str], tiny_cohort: Path,
                                             tmp_path: Path) -> None:
    url, token = server
    out = tmp_path / "report"
    done = run_submit(
        "--server", url, "--model", str(leaky_model), "--manifest", str(tiny_cohort), "--out", str(out),
        "--classifier", "threshold", "--classifier", "logistic", "--repeats", "3", "--poll-interval", "0.2", "-q",
        "--scan-qa", "warn", token=token,  # from BRAINMIA_TOKEN
    )
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["provenance"]["settings"]["scan_qa"]["mode"] == "warn"
    assert report["verdict"]["passed"] is False and report["verdict"]["level"] in ("medium", "high")
    assert report["provenance"]["manifest"]["n_scans"] == len(load_manifest(tiny_cohort).records)
    # packed byte for byte: the server saw the very manifest the user has
    assert report["provenance"]["manifest"]["sha256"] == load_manifest(tiny_cohort).sha256
    assert "fails the policy" in done.stderr
    for name in ("report.json", "report.html", "features.csv"):
        assert (out / name).stat().st_size > 0, name
        assert str(out / name) in done.stdout


def test_bad_manifest_exit_2_with_line_numbers(server: tuple[str, str], plain_model: Path, tiny_cohort: Path,
                                               tmp_path: Path) -> None:
    url, token = server
    with open(tiny_cohort, newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[1]["age"] = "sixty"  # line 3
    rows[3]["path"] = "scans/does-not-exist.nii.gz"  # line 5
    bad = tmp_path / "manifest.csv"
    with open(bad, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:  # the scans beside the manifest, as the user's folder would hold them
        source = tiny_cohort.parent / row["path"]
        if source.exists():
            (tmp_path / row["path"]).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(source, tmp_path / row["path"])

    done = run_submit("--server", url, "--token", token, "--model", str(plain_model), "--manifest", str(bad),
                   "--out", str(tmp_path / "out"), "-q")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "line 3" in done.stderr and "age" in done.stderr, done.stderr
    assert "line 5" in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


def test_bad_token_exit_2(server: tuple[str, str], plain_model: Path, tiny_cohort: Path, tmp_path: Path) -> None:
    url, _ = server
    done = run_submit("--server", url, "--token", "bmia_not-a-token", "--model", str(plain_model), "--manifest", str(tiny_cohort),
                   "--out", str(tmp_path / "out"), "-q")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "401" in done.stderr and "token" in done.stderr.lower(), done.stderr


def test_bad_input_exit_2_before_any_upload(server: tuple[str, str], plain_model: Path, tiny_cohort: Path,
                                            tmp_path: Path) -> None:
    url, token = server
    no_token = run_submit("--server", url, "--model", str(plain_model), "--manifest", str(tiny_cohort))
    assert no_token.returncode == 2 and "token" in no_token.stderr
    both = run_submit("--server", url, "--model", str(plain_model), "--manifest", str(tiny_cohort), "--archive", str(tiny_cohort),
                   token=token)
    assert both.returncode == 2 and "exactly one" in both.stderr
    metadata = run_submit("--server", url, "--model", str(plain_model), "--manifest", str(tiny_cohort), "--metadata", "{oops",
                       token=token)
    assert metadata.returncode == 2 and "metadata" in metadata.stderr
    qa = run_submit("--server", url, "--model", str(plain_model), "--manifest", str(tiny_cohort), "--scan-qa", "maybe",
                    token=token)
    assert qa.returncode == 2 and "--scan-qa" in qa.stderr and "fail" in qa.stderr
    unreachable = run_submit("--server", f"http://127.0.0.1:{free_port()}", "--model", str(plain_model), "--manifest",
                          str(tiny_cohort), token=token)
    assert unreachable.returncode == 2 and "failed" in unreachable.stderr
