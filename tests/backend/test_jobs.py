"""The job machinery: claims, duplicate and stale messages, progress throttling, the reaper, recovery
at start, hand-back at shutdown, and the Celery configuration of both modes."""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from backend.app import create_app
from backend.db.models import utcnow
from backend.settings import Settings
from tests.backend.job_fixtures import (
    add_assessment,
    add_model,
    add_scan_set,
    get_row,
    job_cohort,
    job_inputs,
    job_model_file,
    submit,
    wait_for,
)
from worker.celery_app import TASK_NAME, create_celery
from worker.runner import JobContext, run_job

__all__ = ["job_cohort", "job_inputs", "job_model_file"]  # fixtures used here

SLOW = {"repeats": 50, "batch_size": 1}  # ~14 s of work, checked for cancel every batch and attack
LONG_AGO = timedelta(hours=1)


def _resources(app):  # type: ignore[no-untyped-def]
    return app.state.jobs.celery.brainmia_resources


def _break_model(app, inputs) -> None:  # type: ignore[no-untyped-def]
    """Delete the model file: a job on it fails at once (fast evidence that it ran)."""
    (app.state.storage.model_dir(inputs["model_id"]) / "model.pt").unlink()


def _running(app, inputs, attempts: int, **values) -> str:  # type: ignore[no-untyped-def]
    now = utcnow()
    fields = dict(state="running", attempts=attempts, worker="ghost:1", started_at=now - LONG_AGO, heartbeat_at=now - LONG_AGO)
    return add_assessment(app, "acme", inputs, **(fields | values))


def _wait_row(app, assessment_id: str, states: tuple[str, ...], timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        row = get_row(app, assessment_id)
        if row.state in states:
            return row
        assert time.monotonic() < deadline, f"still {row.state}: {row.log}"
        time.sleep(0.05)


# -- messages ----------------------------------------------------------------------------------


def test_duplicate_and_stale_messages_are_no_ops(app, job_inputs) -> None:  # type: ignore[no-untyped-def]
    _break_model(app, job_inputs)
    jobs = app.state.jobs
    queued = add_assessment(app, "acme", job_inputs, state="queued")
    jobs.send(queued, 1)
    jobs.send(queued, 1)  # the same message twice
    jobs.send(queued, 7)  # a message for an attempt that is not next
    row = _wait_row(app, queued, ("failed",))
    time.sleep(0.5)  # let the worker take the other messages
    row = get_row(app, queued)
    assert row.attempts == 1 and row.log.count("started") == 1

    # a finished job, a running job of another worker, a re-queued job and an unknown id
    done = add_assessment(app, "acme", job_inputs, state="succeeded", attempts=1, log="kept\n")
    running = _running(app, job_inputs, attempts=1, heartbeat_at=utcnow())
    requeued = add_assessment(app, "acme", job_inputs, state="queued", attempts=1)
    resources = _resources(app)
    assert run_job(resources, done, 1) == "skipped"
    assert run_job(resources, running, 1) == "skipped"
    assert run_job(resources, requeued, 1) == "skipped"  # the dead attempt's message comes back
    assert run_job(resources, "no-such-id", 1) == "skipped"
    assert get_row(app, done).log == "kept\n" and get_row(app, done).state == "succeeded"
    assert get_row(app, running).worker == "ghost:1" and get_row(app, running).state == "running"
    assert get_row(app, requeued).state == "queued"


def test_a_worker_that_lost_its_job_stops_writing(app, job_inputs) -> None:  # type: ignore[no-untyped-def]
    job_id = _running(app, job_inputs, attempts=1, heartbeat_at=utcnow())
    job = JobContext(app.state.sessionmaker, job_id, 1, threading.Event())
    assert job.heartbeat() and not job.should_stop()
    app.state.jobs.reap(now=utcnow() + timedelta(hours=2))  # the reaper gives up on it meanwhile
    assert get_row(app, job_id).state == "queued"
    job.progress("attacks", 0.7, "late")
    assert job.lost and job.should_stop()
    assert get_row(app, job_id).progress == 0.0  # the late write went nowhere


def test_progress_writes_are_throttled(app, job_inputs, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    job_id = _running(app, job_inputs, attempts=1, heartbeat_at=utcnow())
    job = JobContext(app.state.sessionmaker, job_id, 1, threading.Event())
    writes: list[dict] = []
    real_write = job.write
    monkeypatch.setattr(job, "write", lambda **v: writes.append(v) or real_write(**v))
    for i in range(200):
        job.progress("features", i / 400, f"features {i}/400")
    assert 1 <= len(writes) <= 2
    job.progress("attacks", 0.6, "attack 1/13")  # a stage change is always written
    job.progress("done", 1.0, "done")
    assert [w["stage"] for w in writes[-2:]] == ["attacks", "done"]
    row = get_row(app, job_id)
    assert (row.stage, row.progress, row.message) == ("done", 1.0, "done")


# -- dead workers ------------------------------------------------------------------------------


def test_reaper_requeues_then_fails_with_the_reason(app, job_inputs) -> None:  # type: ignore[no-untyped-def]
    _break_model(app, job_inputs)
    jobs = app.state.jobs
    assert app.state.settings.max_attempts == 2
    first = _running(app, job_inputs, attempts=1)
    last = _running(app, job_inputs, attempts=2)
    alive = _running(app, job_inputs, attempts=1, heartbeat_at=utcnow())
    cancelling = _running(app, job_inputs, attempts=1, cancel_requested=True)

    counts = jobs.reap()
    assert counts == {"requeued": 1, "failed": 1, "cancelled": 1}
    assert get_row(app, alive).state == "running"

    row = get_row(app, last)
    assert row.state == "failed" and row.finished_at is not None
    assert "the worker running this job (ghost:1) stopped (last heartbeat" in row.error
    assert "it was tried 2 time(s)" in row.error
    assert get_row(app, cancelling).state == "cancelled"

    # the re-queued one was sent again and a worker ran attempt 2 (which fails: no model file)
    row = _wait_row(app, first, ("failed", "succeeded"))
    assert row.attempts == 2
    assert "worker ghost:1 stopped reporting at" in row.log and "re-queued" in row.log
    assert "attempt 2 started" in row.log and "model file not found" in row.error
    assert jobs.reap() == {"requeued": 0, "failed": 0, "cancelled": 0}


def test_reaper_thread_and_heartbeats(tmp_path: Path, job_cohort: Path, job_model_file: Path) -> None:
    """With a 1.2 s heartbeat timeout the reaper thread fails a silent job by itself, while the
    heartbeat keeps a live job that runs for longer than the timeout."""
    settings = Settings(
        data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", session_secret="s", heartbeat_timeout_s=1.2, max_attempts=1
    )
    app = create_app(settings)
    with TestClient(app):
        from backend.auth import create_token
        from backend.db.session import session_scope

        with session_scope(app.state.sessionmaker) as session:
            token = create_token(session, "alice", "acme")
        client = TestClient(app, headers={"Authorization": f"Bearer {token}"})
        inputs = {"model_id": add_model(app, "acme", job_model_file), "scan_set_id": add_scan_set(app, "acme", job_cohort)}
        silent = _running(app, inputs, attempts=1)
        live = submit(client, inputs, **SLOW)
        wait_for(client, live["id"], ("running",))
        row = _wait_row(app, silent, ("failed",), timeout=10)
        assert "stopped" in row.error and "tried 1 time(s)" in row.error
        time.sleep(2.0)  # longer than the timeout: only heartbeats keep it running
        assert get_row(app, live["id"]).state == "running"
        client.post(f"/api/v1/assessments/{live['id']}/cancel")
        assert wait_for(client, live["id"], ("cancelled", "failed", "succeeded"))["state"] == "cancelled"


def test_recovery_at_start(settings: Settings, job_cohort: Path, job_model_file: Path) -> None:
    """Jobs a previous process left behind: running ones are re-queued (or failed past
    max_attempts, or cancelled when a cancel was pending), then queued ones are run."""
    app = create_app(settings)  # migrates; the job machinery starts with the TestClient below
    inputs = {"model_id": add_model(app, "acme", job_model_file), "scan_set_id": add_scan_set(app, "acme", job_cohort)}
    queued = add_assessment(app, "acme", inputs, state="queued")
    interrupted = _running(app, inputs, attempts=1)
    exhausted = _running(app, inputs, attempts=2)
    cancelling = _running(app, inputs, attempts=1, cancel_requested=True)
    with TestClient(app):
        assert get_row(app, exhausted).state == "failed"
        assert "the server running this job stopped" in get_row(app, exhausted).error
        assert get_row(app, cancelling).state == "cancelled"
        row = _wait_row(app, interrupted, ("succeeded", "failed"), timeout=40)
        assert row.state == "succeeded", row.error
        assert row.attempts == 2 and "the server stopped while attempt 1 ran" in row.log
        row = _wait_row(app, queued, ("succeeded", "failed"), timeout=40)
        assert row.state == "succeeded" and row.attempts == 1


def test_shutdown_hands_a_running_job_back(app, client, job_inputs) -> None:  # type: ignore[no-untyped-def]
    jobs = app.state.jobs
    created = submit(client, job_inputs, **SLOW)
    wait_for(client, created["id"], ("running",))
    assert jobs.ping()
    jobs.stop()
    assert not jobs.ping()
    row = get_row(app, created["id"])
    assert row.state == "queued" and row.attempts == 0
    assert "shut down during attempt 1; re-queued" in row.log
    jobs.start()  # a new start runs it again (as attempt 1: a shutdown does not count)
    body = wait_for(client, created["id"], ("running",))
    assert body["attempts"] == 1
    client.post(f"/api/v1/assessments/{created['id']}/cancel")
    assert wait_for(client, created["id"], ("cancelled", "failed", "succeeded"))["state"] == "cancelled"


# -- configuration -----------------------------------------------------------------------------


def test_celery_configuration_of_both_modes(tmp_path: Path) -> None:
    distributed = Settings(data_dir=tmp_path, database_url="sqlite:///x.db", broker_url="redis://127.0.0.1:1/0")
    app = create_celery(distributed)
    conf = app.conf
    assert conf.broker_url == "redis://127.0.0.1:1/0" and not conf.result_backend
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json" and conf.broker_transport_options["visibility_timeout"] >= 3600
    assert conf.task_default_queue == "brainmia"
    app.finalize()
    assert TASK_NAME in app.tasks
    assert app.brainmia_settings is distributed

    embedded = create_celery(Settings(data_dir=tmp_path))
    assert embedded.conf.broker_url.startswith("memory://")
    assert embedded.conf.task_default_queue.startswith("brainmia.embedded.")


def test_ping_of_an_unreachable_broker_is_false(tmp_path: Path) -> None:
    from backend.jobs import JobDispatcher

    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/x.db", broker_url="redis://127.0.0.1:1/0")
    start = time.monotonic()
    assert JobDispatcher(settings, None, None).ping() is False  # type: ignore[arg-type]
    assert time.monotonic() - start < 10


def test_worker_command_refuses_embedded_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from backend.cli import app as cli
    from backend.settings import get_settings

    for name in ("BRAINMIA_DATABASE_URL", "BRAINMIA_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BRAINMIA_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["worker"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "BRAINMIA_DATABASE_URL" in result.output and "BRAINMIA_BROKER_URL" in result.output


# -- reference models: one task per model ---------------------------------------------------------

TINY_RECIPE = {"arch": "brain_age_3d", "arch_kwargs": {"channels": [4, 8, 8]}, "epochs": 1, "batch_size": 4,
               "lr": 0.001}
REFERENCE_OPTIONS = {"repeats": 1, "classifiers": ["threshold"], "quantile": False,
                     "reference": {"models": 2, "recipe": TINY_RECIPE, "attacks": ["calibrated-loss"]}}


def _reference_rows(app, assessment_id: str):  # type: ignore[no-untyped-def]
    from backend.services.job_states import reference_tasks

    return reference_tasks(app.state.sessionmaker, assessment_id)


def _with_options(app, assessment_id: str, options: dict) -> None:  # type: ignore[no-untyped-def]
    from backend.db.models import Assessment
    from backend.db.session import session_scope

    with session_scope(app.state.sessionmaker) as session:
        session.get(Assessment, assessment_id).options = options


def test_embedded_mode_trains_the_reference_models_in_turn_then_reuses_them(app, client, job_inputs) -> None:  # type: ignore[no-untyped-def]
    first = submit(client, job_inputs, **REFERENCE_OPTIONS)
    seen: list[dict] = []
    body = wait_for(client, first["id"], ("succeeded", "failed", "cancelled"), timeout=120, seen=seen)
    assert body["state"] == "succeeded", body
    rows = _reference_rows(app, first["id"])
    assert [(r.model_index, r.state, r.attempts) for r in rows] == [(0, "succeeded", 1), (1, "succeeded", 1)]
    assert {r.worker for r in rows} == {get_row(app, first["id"]).worker}  # the job's own worker, in turn
    assert "references: 2 of 2 reference models to train in this worker" in body["log"]
    assert re.search(r"references: training 2 reference models \(1 epochs on \d+ scans each\): about \d+ (s|min)",
                     body["log"]), body["log"]  # estimated from a measured run before training
    assert any(b["stage"] == "references" and "trained" in b["message"] for b in seen), seen[-3:]
    report = client.get(f"/api/v1/assessments/{first['id']}/report.json").json()
    assert report["provenance"]["references"]["n_models"] == 2
    assert report["provenance"]["references"]["reused"] == 2  # the engine found both in the store

    again = wait_for(client, submit(client, job_inputs, **REFERENCE_OPTIONS)["id"], ("succeeded", "failed"), timeout=120)
    assert again["state"] == "succeeded", again
    assert "all 2 reference models found in the store" in again["log"]
    assert _reference_rows(app, again["id"]) == []


def test_fan_out_sends_one_task_per_model_and_a_dead_workers_model_is_retrained_alone(app, job_inputs) -> None:  # type: ignore[no-untyped-def]
    """Distributed-mode logic without a broker: the job sends K messages, another "worker" (a
    thread) runs them, the job's worker trains queued ones itself; model 1 was being trained by
    a worker that died (an old heartbeat): it is re-queued, sent again and trained, alone."""
    import queue

    from backend.db.models import ReferenceTask
    from backend.db.session import session_scope
    from worker.reference_tasks import run_reference_task

    resources = _resources(app)
    options = REFERENCE_OPTIONS | {"reference": REFERENCE_OPTIONS["reference"] | {"models": 4}}
    job_id = add_assessment(app, "acme", job_inputs, state="queued")
    _with_options(app, job_id, options)
    with session_scope(app.state.sessionmaker) as session:  # a worker that died while training model 1
        session.add(ReferenceTask(assessment_id=job_id, model_index=1, state="running", worker="ghost:1",
                                  attempts=1, epoch=0, heartbeat_at=utcnow() - LONG_AGO))
    messages: queue.Queue = queue.Queue()
    sent: list[tuple[int, int]] = []
    outcomes: list[tuple[int, int, str]] = []

    def send(assessment_id: str, model_index: int, attempt: int) -> None:
        sent.append((model_index, attempt))
        messages.put((assessment_id, attempt, model_index))

    def other_worker() -> None:
        while (message := messages.get()) is not None:
            outcomes.append((message[2], message[1], run_reference_task(resources, *message, worker="other:2")))

    thread = threading.Thread(target=other_worker, daemon=True)
    thread.start()
    try:
        assert run_job(resources, job_id, 1, worker="job:1", send_reference=send) == "succeeded", get_row(app, job_id).error
    finally:
        messages.put(None)
        thread.join(30)
    rows = {r.model_index: r for r in _reference_rows(app, job_id)}
    assert sorted(sent) == [(0, 1), (1, 2), (2, 1), (3, 1)]  # models 0, 2, 3 sent; 1 when its worker was found dead
    assert all(r.state == "succeeded" for r in rows.values()) and len(rows) == 4
    assert rows[1].attempts == 2 and rows[1].worker in ("job:1", "other:2")
    assert all(rows[k].attempts == 1 for k in (0, 2, 3))  # nothing else was trained twice
    assert {r.worker for r in rows.values()} <= {"job:1", "other:2"}
    assert "reference model 1: worker ghost:1 stopped reporting at" in get_row(app, job_id).log
    # every message was run once: trained, or a no-op because the job's worker took that model
    assert sorted(m for m, _, _ in outcomes) == sorted(m for m, _ in sent)
    assert {o for _, _, o in outcomes} <= {"succeeded", "skipped"}
    # a message delivered again (Redis redelivers a dead worker's) is a no-op
    assert run_reference_task(resources, job_id, 1, 1, worker="late:3") == "skipped"


def test_a_reference_task_hands_back_at_shutdown_and_stops_when_its_job_is_cancelled(app, job_inputs) -> None:  # type: ignore[no-untyped-def]
    from backend.services import job_states
    from worker.reference_tasks import run_reference_task

    resources = _resources(app)
    slow = REFERENCE_OPTIONS | {"reference": REFERENCE_OPTIONS["reference"] | {
        "recipe": TINY_RECIPE | {"epochs": 2000, "batch_size": 1}}}
    job_id = _running(app, job_inputs, attempts=1, heartbeat_at=utcnow())
    _with_options(app, job_id, slow)
    factory = app.state.sessionmaker
    job_states.open_reference_tasks(factory, job_id, [0])

    def run(attempt: int, shutdown: threading.Event, resent: list) -> tuple[threading.Thread, list]:
        out: list[str] = []
        thread = threading.Thread(target=lambda: out.append(run_reference_task(
            resources, job_id, attempt, 0, worker="w:1", shutdown=shutdown,
            requeue=lambda *args: resent.append(args))), daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while not any(r.epoch >= 1 for r in _reference_rows(app, job_id)):  # training: an epoch done
            assert thread.is_alive() and time.monotonic() < deadline, (out, _reference_rows(app, job_id))
            time.sleep(0.05)
        return thread, out

    shutdown, resent = threading.Event(), []
    thread, out = run(1, shutdown, resent)
    shutdown.set()
    thread.join(20)
    assert out == ["requeued"] and resent == [(job_id, 0, 1)]
    row = _reference_rows(app, job_id)[0]
    assert (row.state, row.attempts, row.worker) == ("queued", 0, None)  # the attempt is not counted

    thread, out = run(1, threading.Event(), [])
    started = time.monotonic()
    assert job_states.cancel(factory, job_id) == "running"
    thread.join(20)
    assert out == ["cancelled"] and time.monotonic() - started < 10
    assert _reference_rows(app, job_id)[0].state == "cancelled"


def test_embedded_mode_trains_again_at_once_a_model_a_previous_process_left_running(app, job_inputs) -> None:  # type: ignore[no-untyped-def]
    from backend.db.models import ReferenceTask
    from backend.db.session import session_scope

    job_id = add_assessment(app, "acme", job_inputs, state="queued")
    _with_options(app, job_id, REFERENCE_OPTIONS)
    with session_scope(app.state.sessionmaker) as session:  # its heartbeat is recent: the process just died
        session.add(ReferenceTask(assessment_id=job_id, model_index=0, state="running", worker="gone:1",
                                  attempts=1, epoch=0, heartbeat_at=utcnow()))
    started = time.monotonic()
    assert run_job(_resources(app), job_id, 1, worker="job:1") == "succeeded", get_row(app, job_id).error
    assert time.monotonic() - started < app.state.settings.heartbeat_timeout_s  # not a timeout's wait
    rows = _reference_rows(app, job_id)
    assert [(r.state, r.worker, r.attempts) for r in rows] == [("succeeded", "job:1", 2), ("succeeded", "job:1", 1)]


def test_the_reference_task_is_registered_and_routed_to_the_job_queue(tmp_path: Path) -> None:
    from worker.celery_app import REFERENCE_TASK_NAME, default_queue

    settings = Settings(data_dir=tmp_path, database_url="sqlite:///x.db", broker_url="redis://127.0.0.1:1/0")
    app = create_celery(settings)
    app.loader.import_default_modules()  # what a worker imports (``include``)
    app.finalize()
    assert {TASK_NAME, REFERENCE_TASK_NAME} <= set(app.tasks)
    assert app.conf.task_routes[REFERENCE_TASK_NAME] == {"queue": default_queue(settings)} == app.conf.task_routes[TASK_NAME]


def test_an_assessment_on_a_reference_set_runs_its_supplied_models(app, client, job_inputs, job_cohort,  # type: ignore[no-untyped-def]
                                                                    tmp_path: Path) -> None:
    import torch

    from tests.backend.test_reference_sets_api import reference_archive, upload
    from tests.conftest import TINY_CHANNELS, save_tiny_model
    from worker.engine.models import BrainAge3D

    models = tmp_path / "models"
    models.mkdir()
    for k, stem in enumerate(("ref_a", "ref_b")):
        torch.manual_seed(k + 1)
        save_tiny_model(BrainAge3D(channels=TINY_CHANNELS, mean_age=62.0, age_scale=10.0), models / f"{stem}.pt")
    uploaded = upload(client, reference_archive(tmp_path, models, job_cohort), job_inputs["scan_set_id"], name="K=2")
    assert uploaded.status_code == 201, uploaded.text
    options = REFERENCE_OPTIONS | {"reference": {"reference_set_id": uploaded.json()["id"], "attacks": ["calibrated-loss"]}}
    body = wait_for(client, submit(client, job_inputs, **options)["id"], ("succeeded", "failed"), timeout=120)
    assert body["state"] == "succeeded", body
    references = client.get(f"/api/v1/assessments/{body['id']}/report.json").json()["provenance"]["references"]
    assert (references["source"], references["n_models"], references["models"]) == ("supplied", 2, ["ref_a.pt", "ref_b.pt"])
    assert _reference_rows(app, body["id"]) == []  # nothing trained


def test_cancelling_a_job_stops_the_reference_model_its_worker_trains_within_an_epoch(app, client, job_inputs) -> None:  # type: ignore[no-untyped-def]
    slow = REFERENCE_OPTIONS | {"reference": REFERENCE_OPTIONS["reference"] | {
        "recipe": TINY_RECIPE | {"epochs": 2000, "batch_size": 1}}}
    created = submit(client, job_inputs, **slow)
    deadline = time.monotonic() + 60
    while True:  # training model 1 (of 2), its epochs shown on the job
        body = client.get(f"/api/v1/assessments/{created['id']}").json()
        if body["stage"] == "references" and "references: 0/2 trained (model 1 epoch" in body["message"]:
            break
        assert body["state"] in ("queued", "running") and time.monotonic() < deadline, body
        time.sleep(0.05)
    assert [r.state for r in _reference_rows(app, created["id"])] == ["running", "queued"]
    started = time.monotonic()
    client.post(f"/api/v1/assessments/{created['id']}/cancel")
    assert wait_for(client, created["id"], ("cancelled", "failed", "succeeded"))["state"] == "cancelled"
    assert time.monotonic() - started < 10
    assert [r.state for r in _reference_rows(app, created["id"])] == ["cancelled", "queued"]


def test_models_trained_into_another_store_fail_the_job_instead_of_retraining_for_ever(app, job_inputs) -> None:  # type: ignore[no-untyped-def]
    """A worker whose data folder is not shared: its models "succeed" but never reach this store."""
    from backend.services import job_states

    factory = app.state.sessionmaker
    job_id = add_assessment(app, "acme", job_inputs, state="queued")
    _with_options(app, job_id, REFERENCE_OPTIONS)
    sent: list[tuple[int, int]] = []

    def elsewhere(assessment_id: str, model_index: int, attempt: int) -> None:
        sent.append((model_index, attempt))
        assert job_states.claim_reference(factory, assessment_id, model_index, attempt, "elsewhere:9")
        assert job_states.ReferenceAttempt(factory, assessment_id, model_index, attempt).succeed()

    assert run_job(_resources(app), job_id, 1, worker="job:1", send_reference=elsewhere) == "failed"
    row = get_row(app, job_id)
    assert "was trained by elsewhere:9 but is not in this worker's reference store" in row.error
    assert sorted(sent) == [(0, 1), (0, 2), (1, 1), (1, 2)]  # sent again once, then given up
