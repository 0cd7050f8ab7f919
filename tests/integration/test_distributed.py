"""The distributed mode end to end: a real PostgreSQL, a real Redis broker, ``brainmia serve`` and
``brainmia worker`` as separate processes sharing only the database, the broker and the data folder.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx

from backend.client import BrainMIAClient
from tests.integration.conftest import ServiceDied, Stack, base_env, cli_argv, free_port, wait_for

OPTIONS = {"repeats": 2, "classifiers": ["threshold", "logistic"]}


def test_assessment_through_api_broker_and_worker_then_submit(stack: Stack, tiny_model: Path, small_archive: Path) -> None:
    ready = httpx.get(f"{stack.url}/ready").json()
    assert ready == {"status": "ready", "database": True, "broker": True, "mode": "distributed"}

    with BrainMIAClient(stack.url, stack.token) as client:
        model = client.upload_model(tiny_model, json.loads(Path(f"{tiny_model}.json").read_text()))
        scans = client.upload_scan_set(small_archive)
        assert scans["n_scans"] == 16
        job = client.start_assessment(model["id"], scans["id"], OPTIONS)
        assert job["state"] == "queued"

        seen: list[tuple[str, float, str]] = []
        deadline = time.monotonic() + 240
        while True:
            state = client.assessment(job["id"])
            seen.append((state["state"], state["progress"], state.get("stage", "")))
            if state["state"] in ("succeeded", "failed", "cancelled"):
                break
            assert time.monotonic() < deadline, f"not finished: {seen[-5:]}\n{stack.diagnostics()}"
            time.sleep(0.25)

        assert state["state"] == "succeeded", f"{state}\n{stack.diagnostics()}"
        assert state["progress"] == 1.0
        progress = [p for _, p, _ in seen]
        assert progress == sorted(progress), f"progress went backwards: {seen}"
        assert "running" in {s for s, _, _ in seen}, f"never seen running: {seen}"

        out = stack.root / "results"
        report = json.loads(client.download(job["id"], "report.json", out / "report.json").read_text())
        html = client.download(job["id"], "report.html", out / "report.html").read_text()
        features = client.download(job["id"], "features.csv", out / "features.csv").read_text()

    assert report["schema_version"] == "1.0"
    assert report["provenance"]["manifest"]["n_scans"] == 16
    assert report["provenance"]["model"]["sha256"] == model["sha256"]
    attacks = {a["name"]: a for a in report["attacks"] if a.get("family", "classifier") == "classifier"}
    assert {a["classifier"] for a in attacks.values()} == {"threshold", "logistic"}
    assert {"qmia", "qmia:grad-norm"} <= {a["name"] for a in report["attacks"]}  # on by default
    assert all(a["status"] == "ok" for a in attacks.values()), [a for a in attacks.values() if a["status"] != "ok"]
    assert all(len(a["metrics"]["accuracy"]["values"]) == 2 for a in attacks.values())
    assert report["verdict"]["level"] in ("low", "inconclusive", "medium", "high")
    assert state.get("passed") in (report["verdict"]["passed"], None)
    assert "<html" in html.lower()
    provenance = [line for line in features.splitlines() if line.startswith("# ")]
    table = [line for line in features.splitlines() if not line.startswith("#")]
    assert any(line.startswith("# model_sha256: ") for line in provenance)  # exports carry their provenance
    assert table[0].startswith("scan_id") and len(table) == 17
    # the API process runs no jobs in this mode: the worker wrote the results to the shared folder
    assert (stack.data_dir / "storage" / "results" / job["id"] / "report.json").is_file()

    # the same through `brainmia submit`, as a pipeline runs it (exit 0 or 1: the verdict of an
    # untrained model is not fixed)
    out = stack.root / "submitted"
    done = subprocess.run(
        cli_argv("submit", "--server", stack.url, "--model", str(tiny_model), "--archive", str(small_archive),
                 "--repeats", "2", "--classifier", "threshold", "--out", str(out), "--poll-interval", "0.3", "-q"),
        env=base_env() | {"BRAINMIA_TOKEN": stack.token}, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode in (0, 1), f"{done.stdout}\n{done.stderr}\n{stack.diagnostics()}"
    submitted = json.loads((out / "report.json").read_text())
    assert submitted["verdict"]["passed"] is (done.returncode == 0)
    assert {a["classifier"] for a in submitted["attacks"] if a.get("family", "classifier") == "classifier"} == {"threshold"}


def test_ready_is_503_while_the_broker_is_down(make_stack, redis_server: str) -> None:  # type: ignore[no-untyped-def]
    stack = make_stack(start=False)
    stack.env["BRAINMIA_BROKER_URL"] = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    api = stack.start_api(wait=False)
    started = time.monotonic()

    def answer() -> httpx.Response | None:
        if not api.alive():
            raise ServiceDied(f"the API exited\n{api.tail()}")
        try:
            return httpx.get(f"{stack.url}/ready", timeout=30)
        except httpx.TransportError:
            return None  # not listening yet

    response = wait_for(answer, 90, "the API to answer /ready", diagnostics=api.tail)
    assert response.status_code == 503, response.text
    assert response.json()["broker"] is False and response.json()["database"] is True
    assert time.monotonic() - started < 60, "/ready took too long to notice the broker is down"
