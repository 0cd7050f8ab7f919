"""A worker killed in the middle of a job (SIGKILL: no clean-up, no goodbye) must not leave the job
``running`` for ever: once its heartbeat is older than ``BRAINMIA_HEARTBEAT_TIMEOUT_S`` the job is
re-queued and another worker runs it again, or it is failed with a reason.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from backend.client import BrainMIAClient
from tests.integration.conftest import Stack

HEARTBEAT_TIMEOUT_S = 5
# long enough on 2 cores that the worker can be killed while it runs
OPTIONS = {"repeats": 12, "classifiers": ["mlp", "logistic"]}


def test_a_job_of_a_killed_worker_is_rerun_or_failed_never_stuck(make_stack, tiny_model: Path,  # type: ignore[no-untyped-def]
                                                                  small_archive: Path) -> None:
    stack: Stack = make_stack(heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S)
    first = stack.workers[0]
    with BrainMIAClient(stack.url, stack.token) as client:
        model = client.upload_model(tiny_model, json.loads(Path(f"{tiny_model}.json").read_text()))
        scans = client.upload_scan_set(small_archive)
        job_id = client.start_assessment(model["id"], scans["id"], OPTIONS)["id"]

        # wait until the first worker is well into the job (past claiming it: progress reported)
        deadline = time.monotonic() + 120
        while True:
            job = client.assessment(job_id)
            if job["state"] == "running" and job["progress"] > 0:
                break
            assert job["state"] in ("queued", "running"), f"finished before it could be killed: {job}\n{stack.diagnostics()}"
            assert time.monotonic() < deadline, f"never started: {job}\n{stack.diagnostics()}"
            time.sleep(0.2)

        first.kill()
        killed_at = time.monotonic()
        running_after_kill = client.assessment(job_id)
        assert running_after_kill["state"] == "running"  # nobody said anything: the row still says running

        second = stack.start_worker()
        states: list[tuple[float, str, float]] = []
        deadline = time.monotonic() + 240
        while True:
            job = client.assessment(job_id)
            states.append((round(time.monotonic() - killed_at, 1), job["state"], job["progress"]))
            if job["state"] in ("succeeded", "failed", "cancelled"):
                break
            assert time.monotonic() < deadline, f"still {job['state']} {time.monotonic() - killed_at:.0f} s after the kill: " \
                                                f"{states[-10:]}\n{stack.diagnostics()}"
            time.sleep(0.5)

    transitions = [states[0]] + [b for a, b in zip(states, states[1:]) if a[1] != b[1]]
    print(f"\nkilled at progress {running_after_kill['progress']:.2f}; after the kill (s, state, progress): {transitions}; "
          f"final {job['state']} after {job.get('attempts')} attempt(s), error {job.get('error')!r}")
    assert second.alive(), second.tail()
    if job["state"] == "succeeded":
        # re-run from the start by the second worker: a second attempt
        assert job.get("attempts", 2) >= 2, job
        assert job["progress"] == 1.0
    else:
        assert job["state"] == "failed", job
        assert job.get("error"), f"failed without a reason: {job}"
    # the job was noticed dead within a few heartbeat timeouts, not hours
    requeued_at = next((t for t, s, _ in states if s != "running"), None)
    assert requeued_at is None or requeued_at < 12 * HEARTBEAT_TIMEOUT_S, states
