"""Feature shards: exact round trip through storage, and the embedded mode running the same shards
(the job's one worker, in turn) with the features of an unsharded run, value for value: the job
times the gradient methods once and every shard uses the winner (:mod:`worker.shards`), which the
unsharded run is then asked for."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.backend.job_fixtures import get_row, submit, wait_for
from tests.worker.conftest import SHARD_SCANS
from tests.worker.feature_checks import assert_identical_features
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


def _removed(folder: Path, timeout: float = 30.0) -> bool:
    """Whether ``folder`` is gone within ``timeout`` s: the worker deletes a job's shards just
    after it records the final state (a failed write of that state keeps them for the retry), so
    a client that sees the state can be a moment ahead of the deletion."""
    deadline = time.monotonic() + timeout
    while folder.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _settings(app, job_id: str) -> dict:  # type: ignore[no-untyped-def]
    folder = Path(get_row(app, job_id).result_dir)
    return json.loads((folder / "report.json").read_text())["provenance"]["settings"]


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
    settings = _settings(app, sharded["id"])
    method = settings["gradient_method_used"]  # timed once by the job, then used by every shard
    assert settings["gradient_method"] == "auto" and method in ("vmap", "loop", "hooks"), settings
    assert (f"features: per-sample gradients by {method} in every shard (timed on the first shard's first "
            "batches)") in sharded["log"]
    assert _removed(app.state.storage.shards_dir(sharded["id"]))  # removed once published

    app.state.jobs.celery.brainmia_resources.settings.shard_scans = 100
    whole = wait_for(client, submit(client, job_inputs, **options, gradient_method=method)["id"],
                     ("succeeded", "failed"), timeout=180)
    assert whole["state"] == "succeeded", whole
    assert reference_tasks(app.state.sessionmaker, whole["id"], "shard") == []
    assert _settings(app, whole["id"])["gradient_method_used"] == method
    assert_identical_features(_features(app, sharded["id"]), _features(app, whole["id"]))


def test_a_sharded_job_reports_progress_per_shard_and_a_cancel_stops_its_shards(  # type: ignore[no-untyped-def]
        app, client, job_inputs, monkeypatch) -> None:
    import threading

    from backend.services.job_states import reference_tasks
    from worker.shards import ShardUnits

    started, cancelled = threading.Event(), threading.Event()
    run = ShardUnits.run

    def held_second_shard(self, resources, attempt, **kwargs):  # type: ignore[no-untyped-def]
        if attempt.model_index == 1:  # running (claimed) until the job has seen the test's cancel
            started.set()
            assert cancelled.wait(60)
            deadline = time.monotonic() + 10
            while not kwargs["stop"]():  # the job reads the cancel flag once a second
                assert time.monotonic() < deadline, "the cancel was not seen"
                time.sleep(0.05)
        return run(self, resources, attempt, **kwargs)

    monkeypatch.setattr(ShardUnits, "run", held_second_shard)
    job_id = submit(client, job_inputs, batch_size=1)["id"]
    deadline, seen = time.monotonic() + 120, []
    while not started.is_set():
        seen.append(client.get(f"/api/v1/assessments/{job_id}").json())
        assert seen[-1]["state"] not in ("succeeded", "failed"), seen[-1]
        assert time.monotonic() < deadline, seen[-1]
        time.sleep(0.02)
    rows = reference_tasks(app.state.sessionmaker, job_id, "shard")
    assert [r.state for r in rows] == ["succeeded", "running", "queued", "queued"], [(r.model_index, r.state) for r in rows]
    seen.append(client.get(f"/api/v1/assessments/{job_id}").json())
    assert client.post(f"/api/v1/assessments/{job_id}/cancel").status_code == 202
    cancelled.set()
    body = wait_for(client, job_id, ("cancelled", "failed", "succeeded"), timeout=60, seen=seen)
    assert body["state"] == "cancelled", body
    # the running shard stops before its first batch; the shards not yet started stay queued (never run)
    states = [r.state for r in reference_tasks(app.state.sessionmaker, job_id, "shard")]
    assert states == ["succeeded", "cancelled", "queued", "queued"], states
    assert any(b["stage"] == "features" and "shards of 4 scans" in b["message"] for b in seen), seen[-3:]
    assert _removed(app.state.storage.shards_dir(job_id))  # nothing left behind
