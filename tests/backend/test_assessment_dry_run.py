"""POST /assessments?dry_run=true: the request checked and the scan set's power stated, no job created."""

from __future__ import annotations

from backend.db.models import Assessment
from backend.db.session import session_scope
from tests.backend.job_fixtures import (
    FAST_OPTIONS,
    job_cohort,
    job_inputs,
    job_model_file,
)

__all__ = ["job_cohort", "job_inputs", "job_model_file"]  # fixtures used here

API = "/api/v1/assessments"


def _count(app) -> int:  # type: ignore[no-untyped-def]
    with session_scope(app.state.sessionmaker) as session:
        return session.query(Assessment).count()


def test_dry_run_states_power_and_creates_nothing(app, client, job_inputs) -> None:  # type: ignore[no-untyped-def]
    body = {"model_id": job_inputs["model_id"], "scan_set_id": job_inputs["scan_set_id"], "options": FAST_OPTIONS}
    before = _count(app)
    response = client.post(API, params={"dry_run": "true"}, json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["dry_run"] is True and out["model_id"] == job_inputs["model_id"]
    power = out["power"]
    # a tiny scan set: the medium thresholds are out of reach, and the statement says so
    assert power["adequate"] is False and power["warnings"]
    assert power["min_detectable_auc"] > 0.55 and "80% power" in power["message"]
    assert power["scans_needed"] >= 500
    assert _count(app) == before  # no job row
    # the same checks as a real submission: a bad option names its field, another org's model is 404
    bad = client.post(API, params={"dry_run": "true"}, json=body | {"options": {"policy": {"auc_high": 2}}})
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "options.policy.auc_high"
    other = client.post(API, params={"dry_run": "true"}, json=body | {"model_id": job_inputs["other_model_id"]})
    assert other.status_code == 404
    lenient = client.post(API, params={"dry_run": "true"},
                          json=body | {"options": FAST_OPTIONS | {"policy": {"auc_medium": 0.9, "auc_high": 0.95,
                                                                             "tpr_at_1pct_fpr_medium": 0.9,
                                                                             "tpr_at_1pct_fpr_high": 0.95}}})
    assert lenient.status_code == 200 and lenient.json()["power"]["scans_needed"] < power["scans_needed"]
