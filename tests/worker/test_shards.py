"""Feature shards: exact round trip through storage, and the embedded mode running the same shards
(the job's one worker, in turn) with the features of an unsharded run (the same rows and columns;
the model's outputs within the gradient methods' exactness: :mod:`tests.worker.feature_checks`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.backend.job_fixtures import get_row, submit, wait_for
from tests.worker.conftest import SHARD_SCANS
from tests.worker.feature_checks import assert_same_features
from worker.engine.features import FeatureTable
from worker.shards import merge_shards, write_shard


def _table(rows: range, rng: np.random.Generator) -> FeatureTable:
    n = len(rows)
    frame = pd.DataFrame({"scan_id": [f"00{i}" for i in rows], "member": rng.integers(0, 2, n), "age": rng.normal(60, 9, n),
                          "prediction": rng.normal(60, 9, n).astype(np.float32), "error": rng.normal(0, 3, n),
                          "grad_norm:conv.0": rng.random(n), "site": [f"=cmd{i}" if i % 3 else "" for i in rows]})
    arrays = {"grad:conv.0": rng.normal(size=(n, 7)).astype(np.float32), "activation": rng.normal(size=(n, 3))}
    return FeatureTable(frame, arrays, {"first_conv": "conv.0"}, ["site"])


def test_shards_written_and_merged_in_order_give_back_the_table_exactly_with_arrays_memory_mapped(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    whole = _table(range(11), rng)
    folders = []
    for k, start in enumerate(range(0, 11, 4)):
        part = FeatureTable(whole.table.iloc[start:start + 4].reset_index(drop=True),
                            {name: a[start:start + 4] for name, a in whole.arrays.items()}, whole.layer_aliases, whole.attributes)
        tmp = tmp_path / f"tmp{k}"
        tmp.mkdir()
        folders.append(write_shard(part, tmp_path / "shards" / f"{k:05d}", tmp))
    merged = merge_shards(folders, tmp_path / "merged")
    pd.testing.assert_frame_equal(merged.table, whole.table, check_exact=True)
    assert list(merged.arrays) == list(whole.arrays)
    for name, array in whole.arrays.items():
        assert isinstance(merged.arrays[name], np.memmap) and merged.arrays[name].dtype == array.dtype
        np.testing.assert_array_equal(merged.arrays[name], array)
    assert merged.layer_aliases == whole.layer_aliases and merged.attributes == ["site"]


def _features(app, job_id: str) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:  # type: ignore[no-untyped-def]
    folder = Path(get_row(app, job_id).result_dir)
    with np.load(folder / "features.arrays.npz") as arrays:
        return pd.read_csv(folder / "features.csv"), {k: arrays[k] for k in arrays.files}


@pytest.mark.slow  # two embedded jobs, ~100 s on the shared 2-core machine
def test_the_embedded_worker_extracts_the_shards_in_turn_and_the_features_equal_an_unsharded_run(  # type: ignore[no-untyped-def]
        app, client, job_inputs) -> None:
    from backend.services.job_states import reference_tasks

    options = {"batch_size": SHARD_SCANS, "repeats": 1}  # the same batches with and without shards
    sharded = wait_for(client, submit(client, job_inputs, **options)["id"], ("succeeded", "failed"), timeout=180)
    assert sharded["state"] == "succeeded", sharded
    rows = reference_tasks(app.state.sessionmaker, sharded["id"], "shard")
    worker = get_row(app, sharded["id"]).worker
    assert [(r.model_index, r.state, r.attempts, r.worker, r.epoch) for r in rows] == [
        (k, "succeeded", 1, worker, SHARD_SCANS) for k in range(4)]  # the job's own worker, each once
    assert "features: 16 scans in 4 shards of 4 in this worker" in sharded["log"]
    assert not (app.state.storage.root / "shards" / sharded["id"]).exists()  # removed once published

    app.state.jobs.celery.brainmia_resources.settings.shard_scans = 100
    whole = wait_for(client, submit(client, job_inputs, **options)["id"], ("succeeded", "failed"), timeout=180)
    assert whole["state"] == "succeeded", whole
    assert reference_tasks(app.state.sessionmaker, whole["id"], "shard") == []
    assert_same_features(_features(app, sharded["id"]), _features(app, whole["id"]))


def test_a_sharded_job_reports_progress_per_shard_and_a_cancel_stops_its_shards(app, client, job_inputs) -> None:  # type: ignore[no-untyped-def]
    import time

    from backend.services.job_states import reference_tasks

    job_id = submit(client, job_inputs, batch_size=1)["id"]
    deadline, seen = time.monotonic() + 120, []
    while True:  # one shard done, the next one running
        rows = reference_tasks(app.state.sessionmaker, job_id, "shard")
        seen.append(client.get(f"/api/v1/assessments/{job_id}").json())
        if any(r.state == "succeeded" for r in rows) and any(r.state == "running" for r in rows):
            break
        assert seen[-1]["state"] not in ("succeeded", "failed"), seen[-1]
        assert time.monotonic() < deadline, [(r.model_index, r.state) for r in rows]
        time.sleep(0.02)
    client.post(f"/api/v1/assessments/{job_id}/cancel")
    body = wait_for(client, job_id, ("cancelled", "failed", "succeeded"), timeout=60, seen=seen)
    assert body["state"] == "cancelled", body
    states = [r.state for r in reference_tasks(app.state.sessionmaker, job_id, "shard")]
    # the shard running at the cancel stops (cancelled), or ends if it was in its last batch; the
    # shards not yet started stay queued (never run). Shards of 4 scans can also all finish between
    # the poll and the cancel: then the job alone is cancelled.
    assert "running" not in states and set(states) <= {"succeeded", "cancelled", "queued"}, states
    assert states.count("succeeded") == 4 or {"cancelled", "queued"} & set(states), states
    assert any(b["stage"] == "features" and "shards of 4 scans" in b["message"] for b in seen), seen[-3:]
    assert not (app.state.storage.root / "shards" / job_id).exists()  # nothing left behind
