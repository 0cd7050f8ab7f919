"""The assessments API with the embedded worker: a real Celery worker thread on the in-memory
transport, a real SQLite database and the real engine on a tiny cohort."""

from __future__ import annotations

import io
import os
import json

import pandas as pd
import pytest

from backend.db.models import AuditEvent
from backend.db.session import session_scope
from tests.backend.job_fixtures import FAST_OPTIONS, job_cohort, job_inputs, job_model_file, submit, wait_for

__all__ = ["job_cohort", "job_inputs", "job_model_file"]  # fixtures

API = "/api/v1/assessments"


def _audit(app, action: str) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    with session_scope(app.state.sessionmaker) as session:
        return list(session.query(AuditEvent).filter(AuditEvent.action == action).all())


def test_assessment_runs_to_success_with_results(app, client, job_inputs) -> None:  # type: ignore[no-untyped-def]
    created = submit(client, job_inputs)
    assert created["state"] in ("queued", "running")
    assert created["options"]["repeats"] == 2

    seen: list[dict] = []
    done = wait_for(client, created["id"], ("succeeded", "failed", "cancelled"), seen=seen)
    assert done["state"] == "succeeded", done["error"]
    assert done["progress"] == 1.0 and done["stage"] == "done"
    assert done["verdict_level"] in ("low", "medium", "high") and isinstance(done["passed"], bool)
    assert done["attempts"] == 1 and done["worker"].endswith(f":{os.getpid()}")
    assert done["started_at"] and done["finished_at"] and done["error"] is None
    assert "attempt 1 succeeded" in done["log"]
    progresses = [b["progress"] for b in seen]
    assert progresses == sorted(progresses)
    stages = {b["stage"] for b in seen}
    assert stages & {"starting", "features", "attacks", "report", "writing"}, stages

    report = client.get(f"{API}/{created['id']}/report.json")
    assert report.status_code == 200 and report.headers["content-type"].startswith("application/json")
    assert report.json()["verdict"]["level"] == done["verdict_level"]
    assert report.json()["provenance"]["settings"]["repeats"] == 2
    html = client.get(f"{API}/{created['id']}/report.html")
    assert html.status_code == 200 and "<html" in html.text.lower()
    assert html.headers["content-disposition"].startswith("inline")
    csv = client.get(f"{API}/{created['id']}/features.csv")
    assert csv.status_code == 200
    table = pd.read_csv(io.StringIO(csv.text))
    assert len(table) == 16 and {"scan_id", "member", "error"} <= set(table.columns)

    fig = client.get(f"{API}/{created['id']}/figures/error_distribution")
    assert fig.status_code == 200 and fig.json()["data"], fig.text
    roc = client.get(f"{API}/{created['id']}/figures/roc_curves", params={"log": "true"})
    assert roc.status_code in (200, 422)
    unknown = client.get(f"{API}/{created['id']}/figures/nope")
    assert unknown.status_code == 404 and "error_distribution" in unknown.json()["error"]["message"]
    listing = client.get(f"{API}/{created['id']}/figures").json()
    assert "error_distribution" in {f["name"] for f in listing}

    actions = {(e.action, e.detail.get("file") or e.detail.get("figure")) for e in _audit(app, "export") + _audit(app, "view")}
    assert {("export", "report.json"), ("export", "features.csv"), ("view", "report.html"), ("view", "error_distribution")} <= actions
    assert len(_audit(app, "run")) == 1


def test_list_filters_and_paginates(client, job_inputs) -> None:  # type: ignore[no-untyped-def]
    first = submit(client, job_inputs)
    second = submit(client, job_inputs)
    wait_for(client, first["id"], ("succeeded", "failed"))
    wait_for(client, second["id"], ("succeeded", "failed"))
    page = client.get(API, params={"limit": 1}).json()
    assert page["total"] == 2 and [i["id"] for i in page["items"]] == [second["id"]]
    assert client.get(API, params={"limit": 1, "offset": 1}).json()["items"][0]["id"] == first["id"]
    assert client.get(API, params={"state": "succeeded", "model_id": job_inputs["model_id"]}).json()["total"] == 2
    assert client.get(API, params={"scan_set_id": "nope"}).json()["total"] == 0
    assert client.get(API, params={"state": "bogus"}).status_code == 422


def test_validation_names_the_field(client, job_inputs) -> None:  # type: ignore[no-untyped-def]
    def post(options: dict) -> dict:
        response = client.post(
            API, json={"model_id": job_inputs["model_id"], "scan_set_id": job_inputs["scan_set_id"], "options": options}
        )
        assert response.status_code == 422, response.text
        return response.json()["error"]["details"][0]

    assert post({"policy": {"auc_high": 2}})["field"] == "options.policy.auc_high"
    assert post({"policy": {"auc_medium": 0.8, "auc_high": 0.6}})["field"] == "options.policy.auc_medium"
    assert post({"policy": {"nope": 1}})["field"] == "options.policy.nope"
    assert post({"repeats": 51})["field"] == "options.repeats"
    assert post({"classifiers": ["magic"]})["field"] == "options.classifiers"
    assert post({"feature_sets": ["error+"]})["field"] == "options.feature_sets"
    assert post({"train_size": 8})["field"] == "options.train_size"
    assert post({"device": "tpu"})["field"] == "options.device"


def test_failing_job_keeps_the_error(app, client, job_inputs) -> None:  # type: ignore[no-untyped-def]
    (app.state.storage.model_dir(job_inputs["model_id"]) / "model.pt").unlink()
    created = submit(client, job_inputs)
    done = wait_for(client, created["id"], ("succeeded", "failed"))
    assert done["state"] == "failed"
    assert "model file not found" in done["error"]
    assert "Traceback" in done["log"] and "ModelError" in done["log"]
    response = client.get(f"{API}/{created['id']}/report.json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_ready"
    assert "model file not found" in response.json()["error"]["details"][0]["reason"]


def test_cancel_a_running_job(app, client, job_inputs) -> None:  # type: ignore[no-untyped-def]
    created = submit(client, job_inputs, repeats=50, classifiers=["threshold", "logistic", "mlp"])
    wait_for(client, created["id"], ("running",))
    response = client.post(f"{API}/{created['id']}/cancel")
    assert response.status_code == 202 and response.json()["cancel_requested"] is True
    done = wait_for(client, created["id"], ("cancelled", "succeeded", "failed"), timeout=20)
    assert done["state"] == "cancelled", done
    assert done["finished_at"] and "cancelled at the user's request" in done["log"]
    assert client.post(f"{API}/{created['id']}/cancel").status_code == 409
    assert client.get(f"{API}/{created['id']}/report.html").status_code == 409
    assert len(_audit(app, "cancel")) == 1


def test_cancel_a_queued_job_at_once(app, client, job_inputs) -> None:  # type: ignore[no-untyped-def]
    app.state.jobs.stop()  # no worker: the job stays queued
    created = submit(client, job_inputs)
    body = client.post(f"{API}/{created['id']}/cancel").json()
    assert body["state"] == "cancelled" and body["finished_at"]


def test_delete_removes_row_and_results(app, client, job_inputs) -> None:  # type: ignore[no-untyped-def]
    created = submit(client, job_inputs)
    wait_for(client, created["id"], ("succeeded",))
    result_dir = app.state.storage.result_dir(created["id"])
    assert (result_dir / "report.json").exists()
    assert client.delete(f"{API}/{created['id']}").status_code == 204
    assert not result_dir.exists()
    assert client.get(f"{API}/{created['id']}").status_code == 404
    assert len(_audit(app, "delete")) == 1


def test_delete_a_running_job_stops_it(app, client, job_inputs) -> None:  # type: ignore[no-untyped-def]
    created = submit(client, job_inputs, repeats=50, classifiers=["threshold", "logistic", "mlp"])
    wait_for(client, created["id"], ("running",))
    assert client.delete(f"{API}/{created['id']}").status_code == 204
    # the worker notices at its next check; it must leave no results behind
    second = submit(client, job_inputs)
    wait_for(client, second["id"], ("succeeded",))
    assert not app.state.storage.result_dir(created["id"]).exists()


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


def test_tokens_and_organisations(app, client, other_org_client, anonymous_client, job_inputs) -> None:  # type: ignore[no-untyped-def]
    created = submit(client, job_inputs)
    wait_for(client, created["id"], ("succeeded",))
    for method, path in ENDPOINTS:
        url = f"{API}/{path.format(id=created['id'])}"
        assert getattr(anonymous_client, method)(url).status_code == 401, url
        response = getattr(other_org_client, method)(url)
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "not_found"
    assert anonymous_client.get(API).status_code == 401
    assert anonymous_client.post(API, json={}).status_code == 401
    assert other_org_client.get(API).json()["total"] == 0
    # another organisation's model or scan set cannot be used
    for model_key, set_key in (("other_model_id", "scan_set_id"), ("model_id", "other_scan_set_id")):
        body = {"model_id": job_inputs[model_key], "scan_set_id": job_inputs[set_key], "options": FAST_OPTIONS}
        assert client.post(API, json=body).status_code == 404
    # the job is still there for its owner
    assert client.get(f"{API}/{created['id']}").status_code == 200


@pytest.mark.parametrize("name", ["roc_curves", "grad_norm_distribution", "accuracy_bars"])
def test_more_figures(client, job_inputs, name: str) -> None:  # type: ignore[no-untyped-def]
    created = submit(client, job_inputs)
    wait_for(client, created["id"], ("succeeded",))
    response = client.get(f"{API}/{created['id']}/figures/{name}")
    assert response.status_code == 200, response.text
    assert "data" in json.loads(response.text)
    assert client.get(f"{API}/{created['id']}/figures/{name}", params={"nope": "1"}).status_code == 422
