"""Reference models as Celery tasks over two real ``brainmia worker`` processes on one Redis: both
workers train reference models of one assessment, and a worker killed (SIGKILL) in the middle of
training one loses only that model: the others are not trained again, the lost one is, and the
assessment succeeds with all K.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from backend.client import BrainMIAClient
from backend.db.models import ReferenceTask
from backend.db.session import make_engine, make_sessionmaker
from tests.integration.conftest import Service, Stack
from worker.engine.reference.store import ReferenceStore

HEARTBEAT_TIMEOUT_S = 4
N_MODELS = 4
# Enough epochs (each a pass over 8 scans of the 23x27x23 grid, one scan per step) that one model
# takes a few seconds on one core: a worker can be caught, and killed, in the middle of one.
RECIPE = {"arch": "brain_age_3d", "arch_kwargs": {"channels": [4, 8, 8]}, "epochs": 60, "batch_size": 1,
          "lr": 0.001, "seed": 3}
OPTIONS = {"repeats": 1, "classifiers": ["threshold"], "quantile": False,
           "reference": {"models": N_MODELS, "recipe": RECIPE, "attacks": ["calibrated-loss", "lira-offline"]}}
WARM_UP = {"repeats": 1, "classifiers": ["threshold"], "quantile": False}
FINAL = ("succeeded", "failed", "cancelled")


def _wait_final(client: BrainMIAClient, job_id: str, stack: Stack, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = client.assessment(job_id)
        if job["state"] in FINAL:
            return job
        assert time.monotonic() < deadline, f"still {job['state']}: {job}\n{stack.diagnostics()}"
        time.sleep(0.25)


def _snapshot(store: ReferenceStore) -> dict[int, tuple[float, float]]:
    """model index -> (created, mtime of its weights) of every stored reference model."""
    return {e.model_index: (e.created, (e.path / "model.safetensors").stat().st_mtime) for e in store.entries()}


@pytest.mark.slow  # ~75 s with the stack's start and a warm-up job per worker (run in CI all the same)
def test_reference_models_spread_over_two_workers_and_a_killed_worker_loses_only_its_model(  # type: ignore[no-untyped-def]
        make_stack, tiny_model: Path, small_archive: Path) -> None:
    stack: Stack = make_stack(start=False, heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S)
    stack.env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one core per worker, as one device each
    stack.start_api()
    workers = {f"worker{n}@": stack.start_worker() for n in (1, 2)}
    sessions = make_sessionmaker(make_engine(stack.env["BRAINMIA_DATABASE_URL"]))
    store = ReferenceStore(stack.data_dir / "references")

    def rows() -> list[ReferenceTask]:
        with sessions() as session:
            return list(session.scalars(select(ReferenceTask).order_by(ReferenceTask.model_index)).all())

    def service(worker: str | None) -> Service | None:
        return next((s for prefix, s in workers.items() if worker and worker.startswith(prefix)), None)

    with BrainMIAClient(stack.url, stack.token) as client:
        model = client.upload_model(tiny_model, json.loads(Path(f"{tiny_model}.json").read_text()))
        scans = client.upload_scan_set(small_archive)
        # one plain job per worker first, so that both have torch loaded when the references start
        warm = [client.start_assessment(model["id"], scans["id"], WARM_UP)["id"] for _ in workers]
        for job_id in warm:
            assert _wait_final(client, job_id, stack, 180)["state"] == "succeeded"

        started = time.monotonic()
        job_id = client.start_assessment(model["id"], scans["id"], OPTIONS)["id"]
        # both workers finish a model, then one of them is killed in the middle of its next one
        deadline, seen = time.monotonic() + 240, []
        while True:
            current = rows()
            seen.append([(r.model_index, r.state, r.worker, r.epoch) for r in current])
            finished_by = {service(r.worker) for r in current if r.state == "succeeded"}
            training = [r for r in current if r.state == "running" and r.epoch >= 1 and service(r.worker)]
            if len(finished_by - {None}) == 2 and training:
                break
            job = client.assessment(job_id)
            assert job["state"] not in FINAL, f"finished before a worker could be killed: {job}\n{seen[-5:]}"
            assert time.monotonic() < deadline, f"never both trained: {seen[-5:]}\n{stack.diagnostics()}"
            time.sleep(0.1)
        parent = client.assessment(job_id)["worker"]
        # the worker not running the job if it is training, else the job's own worker
        victim_row = sorted(training, key=lambda r: service(r.worker) is service(parent))[0]
        victim = service(victim_row.worker)
        assert victim is not None
        before = _snapshot(store)
        trained_before = {r.model_index: (r.worker, r.attempts) for r in current if r.state == "succeeded"}
        victim.kill()
        killed_at = time.monotonic()

        job = _wait_final(client, job_id, stack, 300)
        assert job["state"] == "succeeded", f"{job}\n{stack.diagnostics()}"
        report = client.download(job_id, "report.json", stack.root / "report.json")
        report = json.loads(report.read_text())

    final = {r.model_index: r for r in rows()}
    after = _snapshot(store)
    lost = victim_row.model_index
    print(f"\nkilled {victim.name} ({'the job' if victim is service(parent) else 'a training'} worker) in model "
          f"{lost} at {killed_at - started:.1f} s; job done after {time.monotonic() - started:.1f} s; rows: "
          + ", ".join(f"{k}: {r.worker} x{r.attempts}" for k, r in sorted(final.items())))
    assert sorted(final) == list(range(N_MODELS)) and all(r.state == "succeeded" for r in final.values())
    # the lost model was trained again, by the survivor, alone
    assert final[lost].attempts == 2 and service(final[lost].worker) is not victim
    assert after[lost][0] > before.get(lost, (0.0,))[0]
    for k, (worker, attempts) in trained_before.items():  # the finished ones were not trained again
        assert (final[k].worker, final[k].attempts) == (worker, attempts) and after[k] == before[k], k
    assert all(final[k].attempts == 1 for k in final if k != lost)
    # both workers trained reference models (the victim's finished ones stay its own)
    assert {service(r.worker) for r in final.values()} == set(workers.values())
    references = report["provenance"]["references"]
    assert references["n_models"] == N_MODELS and references["reused"] == N_MODELS
    assert references["source"] == "trained"
    assert {a["name"] for a in report["attacks"] if a.get("family") == "reference"} == {"calibrated-loss",
                                                                                        "lira-offline"}
    if victim is service(parent):  # the job itself was re-run by the other worker
        assert job["attempts"] == 2
