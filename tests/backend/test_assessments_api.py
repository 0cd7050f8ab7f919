"""The assessments API with the embedded worker: a real Celery worker thread on the in-memory
transport, a real SQLite database and the real engine on a tiny cohort."""

from __future__ import annotations

import io
import os
from datetime import timedelta

import pandas as pd

from backend.db.models import AuditEvent, utcnow
from backend.db.session import session_scope
from tests.backend.job_fixtures import (
    FAST_OPTIONS,
    add_assessment,
    get_row,
    job_cohort,
    job_inputs,
    job_model_file,
    shared_job,
    submit,
    wait_for,
)

__all__ = ["job_cohort", "job_inputs", "job_model_file", "shared_job"]  # fixtures used here

API = "/api/v1/assessments"
SLOW = {"repeats": 50, "batch_size": 1}  # ~14 s of work, checked for cancel every batch and attack


def _audit(app, action: str) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    with session_scope(app.state.sessionmaker) as session:
        return list(session.query(AuditEvent).filter(AuditEvent.action == action).all())


# -- one succeeded job, read by several tests ---------------------------------------------------


def test_job_runs_to_success_reporting_progress(shared_job) -> None:  # type: ignore[no-untyped-def]
    done = shared_job.job
    assert done["state"] == "succeeded", done["error"]
    assert done["progress"] == 1.0 and done["stage"] == "done"
    assert done["verdict_level"] in ("low", "inconclusive", "medium", "high") and isinstance(done["passed"], bool)
    assert done["attempts"] == 1 and done["worker"].endswith(f":{os.getpid()}")
    assert done["started_at"] and done["finished_at"] and done["heartbeat_at"] and done["error"] is None
    assert done["options"]["repeats"] == 2 and done["options"]["classifiers"] == ["threshold", "logistic"]
    assert "attempt 1 started" in done["log"] and "attempt 1 succeeded" in done["log"]
    assert set(done["results"]) == {"report.json", "report.html", "features.csv", "figures"}
    progresses = [b["progress"] for b in shared_job.seen]
    assert progresses == sorted(progresses) and progresses[0] < 1.0
    stages = [b["stage"] for b in shared_job.seen]
    assert {"features", "attacks"} & set(stages), stages
    assert len(_audit(shared_job.app, "run")) == 1


def test_results_download(shared_job) -> None:  # type: ignore[no-untyped-def]
    client, job_id = shared_job.client, shared_job.job["id"]
    report = client.get(f"{API}/{job_id}/report.json")
    assert report.status_code == 200 and report.headers["content-type"].startswith("application/json")
    assert report.json()["verdict"]["level"] == shared_job.job["verdict_level"]
    assert report.json()["provenance"]["settings"]["repeats"] == 2
    request = report.json()["provenance"]["request"]  # who asked for it, and when, in the filed report
    assert request["assessment_id"] == shared_job.job["id"] and request["requested_by"] == "alice"
    assert request["organisation"] == "acme" and request["requested_at"]
    html = client.get(f"{API}/{job_id}/report.html")
    assert html.status_code == 200 and "<html" in html.text.lower()
    assert "Requested by" in html.text and "alice (acme)" in html.text
    assert html.headers["content-disposition"].startswith("inline")
    assert html.headers["content-security-policy"].startswith("sandbox allow-scripts")
    download = client.get(f"{API}/{job_id}/report.html", params={"download": "true"})
    assert download.headers["content-disposition"].startswith("attachment")
    csv = client.get(f"{API}/{job_id}/features.csv")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    table = pd.read_csv(io.StringIO(csv.text), comment="#")  # provenance lines head the download
    assert len(table) == 16 and {"scan_id", "member", "error", "membership_score"} <= set(table.columns)

    events = {(e.action, e.detail.get("file")) for e in _audit(shared_job.app, "export") + _audit(shared_job.app, "view")}
    assert {("export", "report.json"), ("export", "features.csv"), ("view", "report.html"), ("export", "report.html")} <= events


def test_figures(shared_job) -> None:  # type: ignore[no-untyped-def]
    client, job_id = shared_job.client, shared_job.job["id"]
    listing = client.get(f"{API}/{job_id}/figures").json()
    names = {f["name"] for f in listing}
    assert {"error_distribution", "roc_curves", "grad_norm_distribution", "accuracy_bars"} <= names
    for name in ("error_distribution", "roc_curves", "grad_norm_distribution", "accuracy_bars"):
        response = client.get(f"{API}/{job_id}/figures/{name}")
        assert response.status_code == 200, response.text
        assert response.json()["data"] and "layout" in response.json()
    unknown = client.get(f"{API}/{job_id}/figures/nope")
    assert unknown.status_code == 404 and "error_distribution" in unknown.json()["error"]["message"]
    bad_option = client.get(f"{API}/{job_id}/figures/error_distribution", params={"nope": "1"})
    assert bad_option.status_code == 422 and bad_option.json()["error"]["code"] == "invalid_figure_option"
    figures_viewed = {e.detail.get("figure") for e in _audit(shared_job.app, "view")}
    assert "roc_curves" in figures_viewed


ENDPOINTS = [
    ("get", "{id}"),
    ("post", "{id}/cancel"),
    ("delete", "{id}"),
    ("get", "{id}/report.json"),
    ("get", "{id}/report.html"),
    ("get", "{id}/features.csv"),
    ("get", "{id}/figures"),
    ("get", "{id}/figures/error_distribution"),
]


def test_401_without_token_and_404_for_another_organisation(shared_job) -> None:  # type: ignore[no-untyped-def]
    job_id = shared_job.job["id"]
    for method, path in ENDPOINTS:
        url = f"{API}/{path.format(id=job_id)}"
        assert getattr(shared_job.anonymous, method)(url).status_code == 401, url
        response = getattr(shared_job.other, method)(url)
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "not_found"
    assert shared_job.anonymous.get(API).status_code == 401
    assert shared_job.anonymous.post(API, json={}).status_code == 401
    assert shared_job.other.get(API).json()["total"] == 0
    inputs = shared_job.inputs
    for model_key, set_key in (("other_model_id", "scan_set_id"), ("model_id", "other_scan_set_id")):
        body = {"model_id": inputs[model_key], "scan_set_id": inputs[set_key], "options": FAST_OPTIONS}
        response = shared_job.client.post(API, json=body)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    # still there, untouched, for its owner
    assert shared_job.client.get(f"{API}/{job_id}").json()["state"] == "succeeded"


def test_validation_names_the_field(shared_job) -> None:  # type: ignore[no-untyped-def]
    inputs = shared_job.inputs

    def post(options: dict) -> dict:
        body = {"model_id": inputs["model_id"], "scan_set_id": inputs["scan_set_id"], "options": options}
        response = shared_job.client.post(API, json=body)
        assert response.status_code == 422, response.text
        return response.json()["error"]["details"][0]

    assert post({"policy": {"auc_high": 2}})["field"] == "options.policy.auc_high"
    assert post({"policy": {"auc_medium": 0.8, "auc_high": 0.6}})["field"] == "options.policy.auc_medium"
    assert post({"policy": {"nope": 1}})["field"] == "options.policy.nope"
    assert post({"policy": {"fail_at": "always"}})["field"] == "options.policy.fail_at"
    assert post({"repeats": 51})["field"] == "options.repeats"
    assert post({"repeats": 0})["field"] == "options.repeats"
    assert post({"classifiers": ["magic"]})["field"] == "options.classifiers"
    assert post({"feature_sets": ["error+"]})["field"] == "options.feature_sets"
    assert post({"train_size": 8})["field"] == "options.train_size"
    assert post({"device": "tpu"})["field"] == "options.device"


# -- jobs of their own --------------------------------------------------------------------------


def test_list_filters_and_paginates(app, client, other_org_client, job_inputs) -> None:  # type: ignore[no-untyped-def]
    now = utcnow()
    ids = [
        add_assessment(app, "acme", job_inputs, state=state, created_at=now - timedelta(minutes=10 - i))
        for i, state in enumerate(["succeeded", "failed", "succeeded"])
    ]
    add_assessment(app, "globex", job_inputs, state="succeeded")
    page = client.get(API, params={"limit": 2}).json()
    assert page["total"] == 3 and [i["id"] for i in page["items"]] == [ids[2], ids[1]]
    assert [i["id"] for i in client.get(API, params={"limit": 2, "offset": 2}).json()["items"]] == [ids[0]]
    succeeded = client.get(API, params={"state": "succeeded", "model_id": job_inputs["model_id"]}).json()
    assert [i["id"] for i in succeeded["items"]] == [ids[2], ids[0]]
    assert client.get(API, params={"scan_set_id": job_inputs["scan_set_id"]}).json()["total"] == 3
    assert client.get(API, params={"scan_set_id": "nope"}).json()["total"] == 0
    assert client.get(API, params={"state": "bogus"}).status_code == 422
    assert client.get(API, params={"limit": 0}).status_code == 422
    assert other_org_client.get(API).json()["total"] == 1


def test_failing_job_keeps_the_error(app, client, job_inputs) -> None:  # type: ignore[no-untyped-def]
    (app.state.storage.model_dir(job_inputs["model_id"]) / "model.pt").unlink()
    created = submit(client, job_inputs)
    done = wait_for(client, created["id"], ("succeeded", "failed"))
    assert done["state"] == "failed" and done["finished_at"]
    assert "model file not found" in done["error"]
    # the reason is in the job's log; the traceback and server paths only in the server's log
    assert "model file not found" in done["log"] and "Traceback" not in done["log"]
    assert str(app.state.storage.root) not in done["log"] + done["error"]
    response = client.get(f"{API}/{created['id']}/report.json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_ready"
    assert "model file not found" in response.json()["error"]["details"][0]["reason"]
    assert client.post(f"{API}/{created['id']}/cancel").status_code == 409


def test_cancel_a_running_job(app, client, job_inputs) -> None:  # type: ignore[no-untyped-def]
    created = submit(client, job_inputs, **SLOW)
    wait_for(client, created["id"], ("running",))
    response = client.post(f"{API}/{created['id']}/cancel")
    assert response.status_code == 202 and response.json()["cancel_requested"] is True
    done = wait_for(client, created["id"], ("cancelled", "succeeded", "failed"), timeout=20)
    assert done["state"] == "cancelled", done
    assert done["finished_at"] and "cancelled at the user's request" in done["log"]
    assert client.post(f"{API}/{created['id']}/cancel").status_code == 409
    assert client.get(f"{API}/{created['id']}/report.html").status_code == 409
    assert not app.state.storage.result_dir(created["id"]).exists()
    assert [e.object_id for e in _audit(app, "cancel")] == [created["id"]]


def test_cancel_a_queued_job_at_once(app, client, job_inputs) -> None:  # type: ignore[no-untyped-def]
    app.state.jobs.stop()  # no worker: the job stays queued
    created = submit(client, job_inputs)
    assert created["state"] == "queued"
    body = client.post(f"{API}/{created['id']}/cancel").json()
    assert body["state"] == "cancelled" and body["finished_at"]


def test_delete_removes_row_and_results(app, client, job_inputs) -> None:  # type: ignore[no-untyped-def]
    job_id = add_assessment(app, "acme", job_inputs, state="succeeded")
    result_dir = app.state.storage.result_dir(job_id)
    result_dir.mkdir(parents=True)
    (result_dir / "report.json").write_text("{}")
    with session_scope(app.state.sessionmaker) as session:
        from backend.db.models import Assessment

        session.get(Assessment, job_id).result_dir = str(result_dir)
    assert client.get(f"{API}/{job_id}/report.json").status_code == 200
    assert client.delete(f"{API}/{job_id}").status_code == 204
    assert not result_dir.exists()
    assert client.get(f"{API}/{job_id}").status_code == 404
    assert client.delete(f"{API}/{job_id}").status_code == 404
    assert [e.object_id for e in _audit(app, "delete")] == [job_id]


def test_delete_a_queued_job_removes_the_shards_an_earlier_attempt_wrote(app, client, job_inputs) -> None:  # type: ignore[no-untyped-def]
    """A sharded job handed back to the queue (a worker shut down) keeps its finished shards for
    the next attempt; deleted before that attempt, no worker would ever remove them."""
    job_id = add_assessment(app, "acme", job_inputs, state="queued", attempts=1)
    shard = app.state.storage.shards_dir(job_id) / "00000"
    shard.mkdir(parents=True)
    (shard / "meta.json").write_text("{}")
    assert client.delete(f"{API}/{job_id}").status_code == 204
    assert not app.state.storage.shards_dir(job_id).exists()


def test_delete_a_running_job_stops_it(app, client, job_inputs) -> None:  # type: ignore[no-untyped-def]
    created = submit(client, job_inputs, **SLOW)
    wait_for(client, created["id"], ("running",))
    assert client.delete(f"{API}/{created['id']}").status_code == 204
    assert get_row(app, created["id"]) is None
    # the worker lets go of the deleted job at its next check and takes the next one
    (app.state.storage.model_dir(job_inputs["model_id"]) / "model.pt").unlink()
    nxt = submit(client, job_inputs)
    assert wait_for(client, nxt["id"], ("failed", "succeeded"), timeout=20)["state"] == "failed"
    assert not app.state.storage.result_dir(created["id"]).exists()


def test_a_server_manifest_changed_since_registration_fails_the_job(app, client, job_inputs, job_cohort, tmp_path):  # type: ignore[no-untyped-def]
    import shutil

    from tests.backend.job_fixtures import add_scan_set

    folder = tmp_path / "cohort"
    shutil.copytree(job_cohort.parent, folder)
    scan_set_id = add_scan_set(app, "acme", folder / "manifest.csv")
    manifest = folder / "manifest.csv"
    manifest.write_text(manifest.read_text().replace(",1,", ",0,", 1))  # someone edits the file afterwards
    body = submit(client, {**job_inputs, "scan_set_id": scan_set_id})
    done = wait_for(client, body["id"], ("succeeded", "failed"), timeout=60)
    assert done["state"] == "failed" and "changed since it was registered" in done["error"], done


def test_a_stored_model_that_reads_files_is_refused_when_its_assessment_runs(  # type: ignore[no-untyped-def]
        app, client, job_inputs, tmp_path) -> None:
    """A model registered before its operators were checked (or put in storage some other way)
    is checked again by the host that runs it: the job fails naming the operator, nothing is created."""
    import torch

    marker = tmp_path / "created-during-assessment"

    class _FromFile(torch.nn.Module):
        def __init__(self, target: str) -> None:
            super().__init__()
            self.target = target
            self.output = torch.nn.Linear(1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            leak = torch.from_file(self.target, shared=True, size=8, dtype=torch.uint8)
            return self.output(x.mean().reshape(1, 1)).reshape(-1) + leak.float().sum()

    stored = app.state.storage.model_dir(job_inputs["model_id"]) / "model.pt"
    torch.jit.save(torch.jit.script(_FromFile(str(marker))), str(stored))
    done = wait_for(client, submit(client, job_inputs)["id"], ("succeeded", "failed"))
    assert done["state"] == "failed" and "aten::from_file" in done["error"], done
    assert not marker.exists()
