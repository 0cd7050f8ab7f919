"""Deleting a scan set deletes the trained reference models whose training pool held its scans."""

from __future__ import annotations

from pathlib import Path

import torch

from backend.services.scan_set_uploads import purge_reference_models
from worker.engine.models import BrainAge3D, ModelMetadata
from worker.engine.reference.recipe import Recipe
from worker.engine.reference.store import ReferenceStore, reference_set_key, scan_content_ids
from worker.engine.reference.training import reference_metadata

METADATA = ModelMetadata(input_shape=(8, 8, 8), voxel_size=4.0, arch="brain_age_3d", arch_kwargs={"channels": [4, 8]})
RECIPE = Recipe(arch_kwargs={"channels": [4, 8]}, epochs=1, batch_size=4)


def test_purge_deletes_the_references_of_the_scans_only(tmp_path: Path) -> None:
    scans = []
    for name in ("a", "b", "c"):
        scans.append(tmp_path / f"{name}.nii")
        scans[-1].write_bytes(name.encode() * 10)
    store = ReferenceStore(tmp_path / "refs")
    torch.manual_seed(0)
    model = BrainAge3D(channels=(4, 8))
    for pool in (scans[:2], scans[2:]):
        ids = scan_content_ids(pool)
        key = reference_set_key(RECIPE, ids, "k", METADATA.conform_spec())
        store.save(model, key, 0, recipe=RECIPE, metadata=reference_metadata(RECIPE, METADATA), keep_hash="k",
                   scan_ids=ids, train_mask=[True] + [False] * (len(ids) - 1))
    assert purge_reference_models(tmp_path / "refs", [scans[0]]) == 1  # the pool of a and b
    left = list(store.entries())
    assert len(left) == 1 and left[0].scan_ids == scan_content_ids(scans[2:])
    assert purge_reference_models(tmp_path / "missing", scans) == 0
