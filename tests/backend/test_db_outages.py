"""Database blips: transient errors are told apart and retried for a bounded time; job writes,
claims and the runner's job context go through a short outage and give up with the true reason
after a long one; the reconciliation's decisions (which queued jobs to send again).

The outage is real: another connection holds SQLite's exclusive lock (``database is locked``,
an :class:`~sqlalchemy.exc.OperationalError`, as a PostgreSQL restart gives), on an engine with
a short busy timeout. The integration tests (tests/integration/test_outages.py) stop a real
PostgreSQL and Redis.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from backend.db.models import Assessment, Base
from backend.db.retry import DatabaseUnavailable, is_transient, retry_transient
from backend.reconcile import Reconciler, _job_message
from backend.services import job_states
from worker.celery_app import TASK_NAME
from worker.job_context import JobContext


@pytest.fixture()
def db(tmp_path: Path) -> Iterator[tuple[Path, sessionmaker[Session]]]:
    path = tmp_path / "jobs.db"
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})  # no WAL: a lock blocks reads too
    Base.metadata.create_all(engine)
    yield path, sessionmaker(bind=engine, expire_on_commit=False)
    engine.dispose()


def _job(factory: sessionmaker[Session], **values: object) -> str:
    row = job_states.new_job(org_id="o", model_id="m", scan_set_id="s", options={}, created_by=None)
    for key, value in values.items():
        setattr(row, key, value)
    with factory() as session, session.begin():
        session.add(row)
    return row.id


class Outage:
    """Holds SQLite's exclusive lock from another connection for ``seconds`` (a database that is down)."""

    def __init__(self, path: Path, seconds: float):
        self.path = path
        self.seconds = seconds
        self.locked = threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        self.locked.set()
        time.sleep(self.seconds)
        conn.execute("COMMIT")
        conn.close()

    def __enter__(self) -> Outage:
        self.thread.start()
        self.locked.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(10)


def _row(factory: sessionmaker[Session], job_id: str) -> Assessment:
    with factory() as session:
        row = session.get(Assessment, job_id)
        assert row is not None
        return row


# -- the retry helper --------------------------------------------------------------------------


def test_transient_errors_are_the_unreachable_database_not_bad_statements(db) -> None:  # type: ignore[no-untyped-def]
    path, factory = db
    job_id = _job(factory)
    with Outage(path, 0.5), pytest.raises(sa_exc.OperationalError) as locked:
        with factory() as session:
            session.get(Assessment, job_id)
    assert is_transient(locked.value)
    with pytest.raises(sa_exc.IntegrityError) as duplicate, factory() as session, session.begin():
        session.add(Assessment(id=job_id, org_id="o", model_id="m", scan_set_id="s", state="queued"))
    assert not is_transient(duplicate.value)
    refused = create_engine("postgresql+psycopg://nobody@127.0.0.1:9/none", connect_args={"connect_timeout": 1})
    with pytest.raises(sa_exc.OperationalError) as down:
        refused.connect()
    assert is_transient(down.value)  # nothing listens: the server is down


def test_retry_backs_off_then_succeeds_and_gives_up_after_its_budget() -> None:
    clock = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds

    failures = iter(range(6))

    def flaky() -> str:
        if next(failures, None) is not None:
            raise sa_exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("server closed the connection"))
        return "done"

    assert retry_transient(flaky, budget_s=30, what="testing", sleep=sleep, clock=lambda: clock[0]) == "done"
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]  # doubling up to 2 s

    def down() -> None:
        raise sa_exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    clock[0], waits[:] = 0.0, []
    with pytest.raises(DatabaseUnavailable) as gave_up:
        retry_transient(down, budget_s=10, what="writing the progress of job x", sleep=sleep, clock=lambda: clock[0])
    assert 8 <= gave_up.value.seconds <= 10 and sum(waits) <= 10
    assert "the database was unreachable for" in str(gave_up.value) and "writing the progress of job x" in str(gave_up.value)
    with pytest.raises(DatabaseUnavailable):  # a worker shutting down stops waiting at once
        retry_transient(down, budget_s=60, what="claiming", stop=lambda: True, sleep=sleep, clock=lambda: clock[0])

    def bug() -> None:
        raise ValueError("not a database error")

    with pytest.raises(ValueError):
        retry_transient(bug, budget_s=60, what="x", sleep=sleep)


# -- job writes through an outage -----------------------------------------------------------------


def test_a_claim_and_a_running_attempt_go_through_a_short_outage(db) -> None:  # type: ignore[no-untyped-def]
    path, factory = db
    job_id = _job(factory)
    with Outage(path, 1.0):
        assert job_states.claim(factory, job_id, 1, "w1:1", retry_s=10)
    job = JobContext(factory, job_id, 1, threading.Event(), retry_s=10)
    with Outage(path, 1.0):
        job.progress("features", 0.5, "half way")
        assert job.heartbeat()
        assert not job.should_stop()
    row = _row(factory, job_id)
    assert (row.state, row.attempts, row.progress, row.stage) == ("running", 1, 0.5, "features")
    assert job.succeed(level="low", summary="ok", passed=True, result_dir="/r")
    assert _row(factory, job_id).state == "succeeded"


def test_a_claim_that_cannot_reach_the_database_raises_and_changes_nothing(db) -> None:  # type: ignore[no-untyped-def]
    path, factory = db
    job_id = _job(factory)
    with Outage(path, 1.5), pytest.raises(DatabaseUnavailable) as gave_up:
        job_states.claim(factory, job_id, 1, "w1:1", retry_s=0.3)
    assert "claiming assessment" in str(gave_up.value)
    row = _row(factory, job_id)
    assert (row.state, row.attempts) == ("queued", 0)  # the message goes back; the job is still there to claim


def test_a_long_outage_stops_the_engine_and_the_attempt_is_handed_back_with_the_reason(db) -> None:  # type: ignore[no-untyped-def]
    from worker.runner import Requeue, _stopped

    path, factory = db
    job_id = _job(factory)
    assert job_states.claim(factory, job_id, 1, "w1:1")
    job = JobContext(factory, job_id, 1, threading.Event(), retry_s=0.3)
    with Outage(path, 1.0):
        job.progress("features", 0.5, "half way")  # does not raise into the engine...
        assert job.unavailable is not None
        assert job.should_stop()  # ...which stops at its next check
    sent: list[tuple[str, int]] = []
    requeue: Requeue = lambda i, a: sent.append((i, a))  # noqa: E731
    assert _stopped(job, requeue) == "requeued"
    row = _row(factory, job_id)
    assert (row.state, row.attempts) == ("queued", 0), row.log  # this attempt is not counted
    assert row.message.startswith("re-queued: the database was unreachable") and "database is locked" in row.message
    assert "the database was unreachable" in row.log
    assert sent == [(job_id, 1)]


def test_a_refused_submit_row_is_complete(db) -> None:  # type: ignore[no-untyped-def]
    _, factory = db
    row = job_states.new_job(org_id="o", model_id="m", scan_set_id="s", options={}, created_by=None)
    job_states.enqueue_failed(row, "could not reach the job queue: OperationalError: refused")
    assert (row.state, row.stage) == ("failed", "failed")
    assert row.finished_at is not None and row.error and "failed: could not reach" in row.log


# -- reconciliation's decisions ---------------------------------------------------------------------


def test_reconciler_sends_a_queued_job_without_message_after_the_limit_once_per_limit() -> None:
    rec = Reconciler(requeue_after_s=30)
    queued = [("a", 0), ("b", 1), ("c", 0)]
    messages = {("a", 1), ("b", 1)}  # b's message is for a stale attempt: it would be skipped
    assert rec.due(queued, messages, now=0) == []
    assert rec.due(queued, messages, now=29) == []
    assert rec.due(queued, messages, now=31) == [("b", 2), ("c", 1)]
    rec.sent("b", 31)
    rec.sent("c", 31)
    assert rec.due(queued, messages | {("c", 1)}, now=40) == []  # c's message arrived
    assert rec.due(queued, messages, now=50) == []  # b: sent 19 s ago
    assert rec.due(queued, messages, now=62) == [("b", 2)]  # still no message 30 s after the send: again
    assert rec.due(queued, messages, now=81) == [("b", 2), ("c", 1)]  # c's lost since 50
    assert rec.due([], set(), now=70) == [] and rec._missing_since == {}  # ran or finished: forgotten


def test_reconciler_at_start_sends_every_queued_job_without_message_at_once() -> None:
    rec = Reconciler(requeue_after_s=30)
    assert rec.due([("a", 0), ("b", 0)], {("a", 1)}, now=0, at_start=True) == [("b", 1)]


def test_job_messages_are_read_from_kombus_redis_envelopes() -> None:
    import base64
    import json

    body = base64.b64encode(json.dumps([["job1", 2], {}, {}]).encode()).decode()
    envelope = {"body": body, "headers": {"task": TASK_NAME, "id": "t"}, "properties": {"body_encoding": "base64"}}
    assert _job_message(json.dumps(envelope), TASK_NAME) == ("job1", 2)
    assert _job_message(json.dumps([envelope, "brainmia", "brainmia"]), TASK_NAME) == ("job1", 2)  # unacked entry
    other = dict(envelope, headers={"task": "brainmia.train_reference"})
    assert _job_message(json.dumps(other), TASK_NAME) is None
    assert _job_message("not json", TASK_NAME) is None


# -- a claim that cannot reach the database puts its message back ----------------------------------


def test_a_worker_puts_back_the_message_of_a_claim_the_database_refused(tmp_path: Path) -> None:
    """A real Celery worker (the embedded one, in-memory broker) on a database that refuses
    connections: the job's message is rejected back into the queue and delivered again, never
    acknowledged and dropped."""
    import socket

    from celery.signals import task_prerun

    from backend.db.session import make_engine, make_sessionmaker
    from backend.services.resources import Resources
    from backend.settings import Settings
    from backend.storage import Storage
    from worker.celery_app import create_celery
    from worker.embedded import EmbeddedWorker

    with socket.socket() as sock:  # a port nothing listens on: the database server is down
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(data_dir=tmp_path, database_url=f"postgresql+psycopg://x@127.0.0.1:{port}/none", db_retry_s=0.3)
    assert settings.embedded  # no broker URL: the in-memory transport
    app = create_celery(settings)
    engine = make_engine(settings.sqlalchemy_url)
    app.brainmia_resources = Resources(settings, make_sessionmaker(engine), Storage(settings.storage_dir))
    deliveries: list[str] = []

    def count(task_id: str | None = None, **_: object) -> None:
        deliveries.append(str(task_id))

    task_prerun.connect(count, weak=False)
    worker = EmbeddedWorker(app, 1)
    worker.start()
    try:
        sent = app.send_task(TASK_NAME, args=["job-1", 1])
        deadline = time.monotonic() + 20
        while deliveries.count(sent.id) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        worker.stop()
        task_prerun.disconnect(count)
        engine.dispose()
    assert deliveries.count(sent.id) >= 3, deliveries  # the same message, delivered again and again


# -- the dispatcher after an outage ---------------------------------------------------------------


def test_after_an_outage_the_reaper_waits_for_live_workers_then_names_the_outage(db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from backend.db.models import utcnow
    from backend.jobs import JobDispatcher
    from backend.settings import Settings
    from backend.storage import Storage

    _, factory = db
    settings = Settings(data_dir=tmp_path, heartbeat_timeout_s=10)
    jobs = JobDispatcher(settings, factory, Storage(settings.storage_dir))
    silent = _job(factory, state="running", attempts=1, worker="w1:1", heartbeat_at=utcnow() - timedelta(seconds=30))
    jobs._pass_failed(sa_exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused")))
    assert jobs._db_down_since is not None
    jobs._db_down_since -= timedelta(seconds=25)  # down for the last 25 s: the job's beat stopped 5 s before
    assert jobs.reap() == {"requeued": 0, "failed": 0, "cancelled": 0}  # back just now: beats are on their way
    assert _row(factory, silent).state == "running"
    assert jobs.reap_grace == 7.5  # three heartbeats of 2.5 s
    jobs._db_back_at -= jobs.reap_grace  # the grace is over and the job still says nothing
    assert jobs.reap()["requeued"] == 1
    row = _row(factory, silent)
    assert row.state == "queued" and "the database was unreachable from" in row.log, row.log
    long_dead = _job(factory, state="running", attempts=1, worker="w2:1", heartbeat_at=utcnow() - timedelta(hours=1))
    assert jobs.reap()["requeued"] == 1
    assert "unreachable" not in _row(factory, long_dead).log  # it stopped long before the outage
    assert jobs.reconcile() == 0  # embedded: the in-process queue loses no message


def test_a_database_error_in_a_request_is_a_503_with_the_error_body_or_page(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from backend.app import create_app
    from backend.settings import Settings

    app = create_app(Settings(data_dir=tmp_path), start_jobs=False)
    refused = sa_exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    def database_down() -> None:
        raise refused

    def bad_statement() -> None:
        raise sa_exc.ProgrammingError("SELEC 1", {}, ValueError("syntax error"))

    app.add_api_route("/api/v1/test-down", database_down)
    app.add_api_route("/test-down", database_down)
    app.add_api_route("/api/v1/test-bug", bad_statement)
    with TestClient(app, raise_server_exceptions=False) as client:
        api = client.get("/api/v1/test-down")
        page = client.get("/test-down", headers={"Accept": "text/html"})
        bug = client.get("/api/v1/test-bug")
    assert api.status_code == 503 and api.headers["retry-after"] == "5"
    assert api.json()["error"]["code"] == "database_unavailable"
    assert page.status_code == 503 and "text/html" in page.headers["content-type"]
    assert "Service unavailable" in page.text and "database is unreachable" in page.text
    assert bug.status_code == 500 and bug.json()["error"]["code"] == "internal_error"  # a bug stays a bug
