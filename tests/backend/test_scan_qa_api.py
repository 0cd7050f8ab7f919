"""Scan QA through the API: a job on mostly shifted real scans fails with the QA message, and the
``scan_qa`` option is stored with the job."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from tests.backend.job_fixtures import add_model, add_scan_set, submit, wait_for
from tests.engine.conftest_scans import real_t1_paths
from tests.engine.test_scan_qa import shifted


def _shifted_real_scans(folder: Path) -> Path:
    """The four real scans, three of them moved 18 mm forward, and their manifest."""
    folder.mkdir()
    rows = []
    for index, path in enumerate(real_t1_paths()):
        img = nib.load(path)
        data = img.get_fdata(dtype=np.float32)
        nib.save(nib.Nifti1Image(shifted(data, 1, 18) if index < 3 else data, img.affine), folder / path.name)
        rows.append({"scan_id": f"subject{index + 1}", "path": path.name, "age": 50 + index, "member": index % 2})
    with open(folder / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder / "manifest.csv"


def _model_2mm(path: Path) -> Path:
    from worker.engine.models import BrainAge3D, ModelMetadata, write_sidecar

    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(BrainAge3D().eval()), str(path))
    write_sidecar(path, ModelMetadata(input_shape=(91, 109, 91), voxel_size=(2.0, 2.0, 2.0), normalize="zscore",
                                      arch="brain_age_3d"))
    return path


def test_a_job_on_mostly_unregistered_scans_fails_with_what_to_do(app, client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inputs = {"model_id": add_model(app, "acme", _model_2mm(tmp_path / "model.pt")),
              "scan_set_id": add_scan_set(app, "acme", _shifted_real_scans(tmp_path / "scans"))}
    created = submit(client, inputs, repeats=1, batch_size=2)
    assert created["options"]["scan_qa"] == "fail"
    done = wait_for(client, created["id"], ("succeeded", "failed"), timeout=300)
    assert done["state"] == "failed", done
    assert "scan QA: 3 of 4 scans" in done["error"] and "SynthStrip" in done["error"], done["error"]
    assert "subject4" not in done["error"]
