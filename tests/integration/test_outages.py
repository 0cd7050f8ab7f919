"""The distributed mode survives its broker and its database (issue 13), on real services.

Each scenario leaves no job ``queued`` or ``running`` once the services are back:

- Redis killed and started again without persistence while a job is queued, and a worker sent
  SIGTERM while Redis is down (the job it hands back cannot be re-sent): the API's reconciliation
  sends both again once Redis is back; a submit meanwhile is refused with the id of its failed row;
- PostgreSQL stopped (immediate shutdown) for a few seconds with a job running and one queued,
  a worker starting during the outage: every endpoint answers 503 ``database_unavailable``,
  the running job keeps its attempt, the claim of the queued one is retried (its message is not
  dropped);
- an API restart sends at once the queued jobs Redis holds no message for, and only those.

This module has its own Redis and PostgreSQL (it kills and restarts them); the stacks come from
the suite's ``make_stack`` with short heartbeat and reconciliation intervals.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from backend.client import BrainMIAClient
from tests.conftest import require
from tests.integration.conftest import (
    PostgresServer,
    Service,
    Stack,
    _pg_bindir,
    free_port,
    start_redis,
    wait_for,
)

FAST = {"repeats": 1, "classifiers": ["threshold"], "feature_sets": ["error"], "quantile": False}
# long enough on 2 cores that the job is still running when an outage starts
SLOW = {"repeats": 4, "classifiers": ["mlp", "logistic"], "quantile": False}
SETTINGS = {"heartbeat_timeout_s": 10, "reconcile_interval_s": 0.5, "requeue_after_s": 2}
FINAL = ("succeeded", "failed", "cancelled")


class RestartableRedis:
    """A private ``redis-server`` (no persistence) that a test can kill and start again on its port."""

    def __init__(self, folder: Path):
        exe = shutil.which("redis-server")
        require(exe is not None, "redis-server is not installed (scripts/setup.sh --test installs it when run as root)")
        self.exe = str(exe)
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.service: Service | None = None

    def start(self) -> None:
        self.service = start_redis(self.exe, self.port, self.folder)

    def kill(self) -> None:
        """SIGKILL: the queue, bindings and unacknowledged messages are gone."""
        assert self.service is not None
        self.service.kill()
        self.service.stop()


class RestartablePostgres(PostgresServer):
    """The suite's private PostgreSQL, with an immediate stop and a start again on the same port."""

    def launch(self) -> None:
        self.service = Service(
            "postgres",
            [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.base),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=200"],
            env=None, log=self.base / "postgres.log", cwd=self.base, user=self.user,
        )
        wait_for(self._accepts, 60, "PostgreSQL to accept connections", diagnostics=self.service.tail)

    def stop_immediately(self) -> None:
        """``pg_ctl stop -m immediate``: SIGQUIT to the postmaster; every connection drops."""
        assert self.service is not None
        self.service.signal_group(signal.SIGQUIT)
        self.service.popen.wait(timeout=30)
        self.service.stop()


@pytest.fixture(scope="module")
def outage_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartableRedis]:
    server = RestartableRedis(tmp_path_factory.mktemp("outage-redis"))
    server.start()
    yield server
    if server.service is not None:
        server.service.stop()


@pytest.fixture(scope="module")
def outage_postgres() -> Iterator[RestartablePostgres]:
    bindir = _pg_bindir()
    require(bindir is not None, "PostgreSQL server binaries (initdb, postgres) not found")
    assert bindir is not None
    server = RestartablePostgres(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# make_stack (tests/integration/conftest.py) builds its stacks on these instead of the session's
@pytest.fixture()
def redis_server(outage_redis: RestartableRedis) -> str:
    return outage_redis.url


@pytest.fixture()
def postgres_cluster(outage_postgres: RestartablePostgres) -> PostgresServer:
    return outage_postgres


# -- helpers -------------------------------------------------------------------------------------


def _inputs(client: BrainMIAClient, tiny_model: Path, small_archive: Path) -> tuple[str, str]:
    model = client.upload_model(tiny_model, json.loads(Path(f"{tiny_model}.json").read_text()))
    scans = client.upload_scan_set(small_archive)
    return model["id"], scans["id"]


def _jobs(stack: Stack, ids: list[str]) -> list[dict[str, Any]]:
    with stack.client() as http:
        return [http.get(f"/api/v1/assessments/{i}").raise_for_status().json() for i in ids]


def _all_final(stack: Stack, ids: list[str], timeout: float) -> list[dict[str, Any]]:
    """Wait until every job is final; fail with the states and the logs otherwise."""
    last: list[dict[str, Any]] = []

    def final() -> list[dict[str, Any]] | None:
        last[:] = _jobs(stack, ids)
        return list(last) if all(j["state"] in FINAL for j in last) else None

    def diagnostics() -> str:
        return "\n".join(f"{j['id']} {j['state']} attempts={j.get('attempts')}: {j.get('log', '')}" for j in last) + \
            "\n" + stack.diagnostics()

    return wait_for(final, timeout, "every job to finish", interval=0.5, diagnostics=diagnostics)


def _wait_running(stack: Stack, job_id: str) -> None:
    def running() -> bool:
        job = _jobs(stack, [job_id])[0]
        assert job["state"] in ("queued", "running"), f"finished before the outage: {job}\n{stack.diagnostics()}"
        return job["state"] == "running" and job["progress"] > 0

    wait_for(running, 120, f"job {job_id} to run", diagnostics=stack.diagnostics)


# -- the scenarios ---------------------------------------------------------------------------------


@pytest.mark.slow  # ~70 s on 2 idle cores (a worker started during the outage, two jobs)
def test_a_postgres_outage_costs_no_attempt_and_drops_no_message(make_stack, outage_postgres: RestartablePostgres,  # type: ignore[no-untyped-def]
                                                                 tiny_model: Path, small_archive: Path) -> None:
    stack: Stack = make_stack(workers=1, **SETTINGS)
    with BrainMIAClient(stack.url, stack.token) as client:
        model_id, scans_id = _inputs(client, tiny_model, small_archive)
        running = client.start_assessment(model_id, scans_id, SLOW)["id"]
        _wait_running(stack, running)
        queued = client.start_assessment(model_id, scans_id, FAST)["id"]  # waits: the only worker is busy
    spec = httpx.get(f"{stack.url}/openapi.json").json()

    outage_postgres.stop_immediately()
    down_at = time.monotonic()
    second = stack.start_worker(wait=False)  # takes the queued job's message while the database is down
    with stack.client(timeout=30) as http:
        answers = {path: http.get(re.sub(r"\{[^}]+\}", queued, path))
                   for path, operations in spec["paths"].items() if path.startswith("/api/") and "get" in operations}
        refused = http.post("/api/v1/assessments", json={"model_id": model_id, "scan_set_id": scans_id, "options": FAST})
        ready = httpx.get(f"{stack.url}/ready", timeout=30)
    statuses = {k: (r.status_code, r.json().get("error", {}).get("code")) for k, r in answers.items()}
    assert statuses and all(v == (503, "database_unavailable") for v in statuses.values()), statuses
    assert (refused.status_code, refused.json()["error"]["code"]) == (503, "database_unavailable"), refused.text
    assert ready.status_code == 503 and ready.json()["database"] is False
    # (a busy solo worker answers no ping: its log tells it took the message and retries the claim)
    wait_for(lambda: f"claiming assessment {queued}" in second.tail(100_000), 90,
             "the second worker to try claiming the queued job", interval=0.5, diagnostics=stack.diagnostics)
    time.sleep(max(0.0, 5 - (time.monotonic() - down_at)))  # at least 5 s down
    outage_postgres.launch()
    downtime = time.monotonic() - down_at

    jobs = _all_final(stack, [running, queued], timeout=180)
    print(f"\npostgres down {downtime:.1f} s: {[(j['state'], j['attempts']) for j in jobs]}")
    assert [j["state"] for j in jobs] == ["succeeded", "succeeded"], jobs
    assert [j["attempts"] for j in jobs] == [1, 1], [j["log"] for j in jobs]  # no attempt lost to the outage
    with stack.client() as http:
        listed = http.get("/api/v1/assessments").raise_for_status().json()
    assert listed["total"] == 2, listed  # the submit refused during the outage left no row
    assert second.alive(), second.tail()


@pytest.mark.slow  # ~70 s on 2 idle cores (a worker started after the restart, two jobs)
def test_jobs_whose_messages_redis_lost_are_sent_again(make_stack, outage_redis: RestartableRedis,  # type: ignore[no-untyped-def]
                                                       tiny_model: Path, small_archive: Path) -> None:
    """A job queued when Redis dies (no persistence: its message is gone), and a job its worker
    hands back (SIGTERM) while Redis is down (the re-send fails), both run once Redis is back."""
    stack: Stack = make_stack(workers=1, **SETTINGS)
    with BrainMIAClient(stack.url, stack.token) as client:
        model_id, scans_id = _inputs(client, tiny_model, small_archive)
        running = client.start_assessment(model_id, scans_id, SLOW)["id"]
        _wait_running(stack, running)
        queued = client.start_assessment(model_id, scans_id, FAST)["id"]  # its message waits in Redis
    first = stack.workers[0]

    outage_redis.kill()
    first.stop(signal.SIGTERM, timeout=60)  # hands its job back; the re-send fails: Redis is down
    jobs = _jobs(stack, [running, queued])
    assert [j["state"] for j in jobs] == ["queued", "queued"], jobs
    assert "the worker shut down" in jobs[0]["log"], jobs[0]
    with stack.client() as http:  # a submit now is refused; its row is complete and the answer names it
        refused = http.post("/api/v1/assessments", json={"model_id": model_id, "scan_set_id": scans_id, "options": FAST})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "queue_unavailable", refused.text
        (detail,) = refused.json()["error"]["details"]
        failed = http.get(f"/api/v1/assessments/{detail['reason']}").raise_for_status().json()
    assert detail["field"] == "assessment_id" and detail["reason"] in refused.json()["error"]["message"]
    assert (failed["state"], failed["stage"]) == ("failed", "failed") and failed["finished_at"], failed
    assert "could not reach the job queue" in failed["error"]

    outage_redis.start()  # empty: no message for either job
    back_at = time.monotonic()
    stack.start_worker(wait=False)  # (busy at once with a re-sent job, a solo worker answers no ping)
    jobs = _all_final(stack, [running, queued], timeout=240)
    print(f"\nmessages lost with Redis: {[(j['state'], j['attempts']) for j in jobs]}, final "
          f"{time.monotonic() - back_at:.1f} s after its restart (a worker start included)")
    assert [j["state"] for j in jobs] == ["succeeded", "succeeded"], jobs
    assert [j["attempts"] for j in jobs] == [1, 1], [j["log"] for j in jobs]  # a handed-back attempt is not counted
    assert all("sent again: no message in the broker" in j["log"] for j in jobs), [j["log"] for j in jobs]


def test_an_api_start_sends_again_only_the_queued_jobs_redis_has_no_message_for(make_stack, tiny_model: Path,  # type: ignore[no-untyped-def]
                                                                               small_archive: Path) -> None:
    import redis

    # requeue_after_s is long: only the start's reconciliation may send anything here
    stack: Stack = make_stack(workers=0, **(SETTINGS | {"requeue_after_s": 600}))
    broker = redis.Redis.from_url(stack.env["BRAINMIA_BROKER_URL"])
    with BrainMIAClient(stack.url, stack.token) as client:
        model_id, scans_id = _inputs(client, tiny_model, small_archive)
        job_id = client.start_assessment(model_id, scans_id, FAST)["id"]
    assert broker.llen("brainmia") == 1

    def restart_api() -> None:
        assert stack.api is not None
        stack.api.stop()
        stack.start_api()
        time.sleep(2)  # its first pass runs at once; give it time

    restart_api()  # the message is still there: nothing sent
    assert broker.llen("brainmia") == 1
    assert "sent again" not in _jobs(stack, [job_id])[0]["log"]

    broker.delete("brainmia")  # the message is lost (as in a Redis restart without persistence)
    restart_api()
    wait_for(lambda: broker.llen("brainmia") == 1, 30, "the job's message to be sent again", diagnostics=stack.diagnostics)
    job = _jobs(stack, [job_id])[0]
    assert job["state"] == "queued" and "sent again: no message in the broker (this server started)" in job["log"], job
    broker.close()
