"""Feature shards over two real ``brainmia worker`` processes on one Redis and PostgreSQL: a 16-scan
assessment with ``shard_scans=4`` is 4 shard tasks; both workers extract shards, with the gradient
method the job timed once, and the merged feature table equals, value for value, that of the
unsharded run with that method (``brainmia assess --gradient-method`` on the same model and scans).
A second assessment, with the worker that is not running the job killed (SIGKILL) in the middle of
its shard: only that shard is extracted again (2 attempts, by the survivor), and the job finishes
with the same features.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from backend.client import BrainMIAClient
from backend.db.models import Assessment, ReferenceTask
from backend.db.session import make_engine, make_sessionmaker
from tests.integration.conftest import Stack, cli_argv
from tests.worker.feature_checks import assert_identical_features

SHARD_SCANS = 4
OPTIONS = {"repeats": 1, "classifiers": ["threshold"], "quantile": False, "batch_size": SHARD_SCANS, "device": "cpu"}
FINAL = ("succeeded", "failed", "cancelled")


def _wait_final(client: BrainMIAClient, job_id: str, stack: Stack, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (job := client.assessment(job_id))["state"] not in FINAL:
        assert time.monotonic() < deadline, f"still {job['state']}: {job}\n{stack.diagnostics()}"
        time.sleep(0.2)
    return job


def _settings(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "report.json").read_text())["provenance"]["settings"]


def _features(folder: Path) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    with np.load(folder / "features.arrays.npz") as arrays:
        return pd.read_csv(folder / "features.csv"), {k: arrays[k] for k in arrays.files}


@pytest.mark.slow  # ~3 min on the shared 2-core machine: the stack, two sharded jobs and one unsharded CLI run
def test_shards_spread_over_two_workers_match_the_unsharded_features_and_a_killed_worker_loses_only_its_shard(  # type: ignore[no-untyped-def]
        make_stack, tiny_model: Path, small_archive: Path, small_cohort: Path) -> None:
    stack: Stack = make_stack(start=False, heartbeat_timeout_s=4, shard_scans=SHARD_SCANS)
    stack.env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    stack.start_api()
    workers = {f"worker{n}@": stack.start_worker() for n in (1, 2)}
    sessions = make_sessionmaker(make_engine(stack.env["BRAINMIA_DATABASE_URL"]))

    def rows(job_id: str) -> list[ReferenceTask]:
        with sessions() as session:
            return list(session.scalars(select(ReferenceTask).where(ReferenceTask.assessment_id == job_id,
                                                                    ReferenceTask.kind == "shard")
                                        .order_by(ReferenceTask.model_index)).all())

    def result_dir(job_id: str) -> Path:
        with sessions() as session:
            return Path(session.get(Assessment, job_id).result_dir)

    def service(worker: str | None):  # type: ignore[no-untyped-def]
        return next((s for prefix, s in workers.items() if worker and worker.startswith(prefix)), None)

    with BrainMIAClient(stack.url, stack.token) as client:
        model = client.upload_model(tiny_model, json.loads(Path(f"{tiny_model}.json").read_text()))
        scans = client.upload_scan_set(small_archive)

        first = client.start_assessment(model["id"], scans["id"], OPTIONS)["id"]
        job = _wait_final(client, first, stack, 300)
        assert job["state"] == "succeeded", f"{job}\n{stack.diagnostics()}"
        assert "16 scans in 4 shards of 4 as tasks over the workers" in job["log"]
        shards = rows(first)
        assert [(r.model_index, r.state, r.attempts) for r in shards] == [(k, "succeeded", 1) for k in range(4)]
        assert {service(r.worker) for r in shards} == set(workers.values()), [r.worker for r in shards]
        method = _settings(result_dir(first))["gradient_method_used"]  # timed once by the job, used by every shard
        assert method in ("vmap", "loop", "hooks") and f"per-sample gradients by {method} in every shard" in job["log"]

        # the unsharded features: the same engine, model, scans and gradient method, without the service
        unsharded = stack.root / "unsharded"
        done = subprocess.run(cli_argv("assess", "--model", str(tiny_model), "--manifest", str(small_cohort), "--out",
                                       str(unsharded), "--batch-size", str(SHARD_SCANS), "--repeats", "1",
                                       "--classifier", "threshold", "--device", "cpu", "--gradient-method", method),
                              env=stack.env, cwd=stack.root, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode in (0, 1), done.stderr[-3000:]
        expected = _features(unsharded)
        assert _settings(unsharded)["gradient_method_used"] == method
        assert_identical_features(_features(result_dir(first)), expected)

        second = client.start_assessment(model["id"], scans["id"], OPTIONS | {"gradient_method": method})["id"]
        deadline, seen = time.monotonic() + 240, []
        while True:  # the worker not running the job, caught with a shard claimed
            parent = service(client.assessment(second)["worker"])
            current = rows(second)
            seen.append([(r.model_index, r.state, r.worker) for r in current])
            running = [r for r in current if r.state == "running" and parent and service(r.worker) not in (None, parent)]
            if running:
                break
            assert client.assessment(second)["state"] not in FINAL, f"finished before a kill: {seen[-5:]}"
            assert time.monotonic() < deadline, f"no shard on the other worker: {seen[-5:]}\n{stack.diagnostics()}"
            time.sleep(0.05)
        victim_row, victim = running[0], service(running[0].worker)
        victim.kill()
        job = _wait_final(client, second, stack, 300)
        assert job["state"] == "succeeded", f"{job}\n{stack.diagnostics()}"

    final = {r.model_index: r for r in rows(second)}
    lost = victim_row.model_index
    print(f"\nkilled {victim.name} in shard {lost}; rows: "
          + ", ".join(f"{k}: {r.worker} x{r.attempts}" for k, r in sorted(final.items())))
    assert all(r.state == "succeeded" for r in final.values()) and sorted(final) == list(range(4))
    assert final[lost].attempts == 2 and service(final[lost].worker) is parent  # extracted again, by the survivor
    assert all(r.attempts == 1 for k, r in final.items() if k != lost)  # the others once: not re-run
    assert f"shard {lost}: worker {victim_row.worker} stopped reporting" in job["log"]
    assert job["attempts"] == 1
    assert "per-sample gradients by " + method + " in every shard" in job["log"]
    assert_identical_features(_features(result_dir(second)), expected)
