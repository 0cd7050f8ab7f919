"""Dashboard pages over HTTP (no browser): sign-in, organisation scoping, filters, admin pages,
and the demo that ``brainmia serve --demo`` loads."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from backend.web.auth_pages import safe_next
from tests.backend.job_fixtures import FAST_OPTIONS, job_cohort, job_inputs, job_model_file, submit  # noqa: F401

PAGES = ("/", "/models", "/scan-sets", "/assessments/new", "/compare")


def form_csrf(client: TestClient, path: str = "/sign-in") -> str:
    """The CSRF token of the form on ``path`` (what a browser posts back)."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    assert found, f"no CSRF token in the form of {path}"
    return found.group(1)


def browser(app: Any, token: str | None) -> TestClient:
    """A cookie-carrying client signed in through the sign-in form (None: signed out)."""
    client = TestClient(app)
    if token:
        response = client.post("/sign-in", data={"token": token, "next": "/", "csrf_token": form_csrf(client)},
                               follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/"
    return client


def wait_done(client: TestClient, assessment_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        body = client.get(f"/api/v1/assessments/{assessment_id}").json()
        if body["state"] not in ("queued", "running"):
            return body
        assert time.monotonic() < deadline
        time.sleep(0.2)


@pytest.mark.parametrize("path", PAGES + ("/admin/audit", "/assessments/0123"))
def test_signed_out_pages_send_to_sign_in_and_back(app: Any, path: str) -> None:
    response = browser(app, None).get(path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == ("/sign-in" if path == "/" else f"/sign-in?next={path}")


def test_sign_in_form(app: Any, tokens: dict[str, str]) -> None:
    client = TestClient(app)
    csrf = form_csrf(client)
    refused = client.post("/sign-in", data={"token": "bmia_nope", "csrf_token": csrf})
    assert refused.status_code == 401 and "unknown or has been revoked" in refused.text
    assert client.get("/", follow_redirects=False).status_code == 303
    signed = client.post("/sign-in", data={"token": tokens["alice"], "next": "//evil.example/x", "csrf_token": csrf},
                         follow_redirects=False)
    assert signed.headers["location"] == "/"  # never redirected off-site
    assert "Signed in as" in client.get("/").text
    out = client.post("/sign-out", data={"csrf_token": form_csrf(client, "/")}, follow_redirects=False)
    assert out.headers["location"] == "/sign-in"
    assert client.get("/", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("value, expected", [
    ("/models", "/models"), ("/compare?a=1&b=2", "/compare?a=1&b=2"), ("https://x.example", "/"),
    ("//x.example", "/"), ("/\\x.example", "/"), ("", "/"), (None, "/"),
])
def test_safe_next(value: str | None, expected: str) -> None:
    assert safe_next(value) == expected


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_for_a_member(app: Any, tokens: dict[str, str], path: str) -> None:
    response = browser(app, tokens["alice"]).get(path)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "<h1>" in response.text and 'href="/admin/audit"' not in response.text  # alice is not an admin


def test_audit_page_is_for_administrators(app: Any, tokens: dict[str, str]) -> None:
    assert browser(app, tokens["alice"]).get("/admin/audit").status_code == 403
    page = browser(app, tokens["admin"]).get("/admin/audit?action=sign-in")
    assert page.status_code == 200 and page.text.count("sign-in</span>") >= 1


def test_assessment_pages_are_scoped_to_the_organisation(
    app: Any, tokens: dict[str, str], client: TestClient, job_inputs: dict[str, str]  # noqa: F811
) -> None:
    first = submit(client, job_inputs)
    second = submit(client, job_inputs, classifiers=["threshold", "mlp"])
    assert wait_done(client, first["id"])["state"] == "succeeded"
    assert wait_done(client, second["id"])["state"] == "succeeded"
    alice = browser(app, tokens["alice"])
    report = alice.get(f"/assessments/{first['id']}")
    assert report.status_code == 200
    for section in ("verdict", "accuracy", "error", "gradients", "roc", "subgroups", "utility", "exposure", "provenance"):
        assert f'id="{section}"' in report.text
    assert 'src="/static/vendor/plotly.min.js"' in report.text and "Plotly.newPlot" in report.text
    overview = alice.get("/?state=succeeded&sort=risk").text
    assert first["id"] in overview and second["id"] in overview
    assert first["id"] not in alice.get("/?state=failed").text
    assert first["id"] in alice.get(f"/?q={first['id'][:10]}").text
    compare = alice.get(f"/compare?a={first['id']}&b={second['id']}")
    assert compare.status_code == 200 and 'id="attack-changes"' in compare.text
    # another organisation sees none of it
    mallory = browser(app, tokens["mallory"])
    assert mallory.get(f"/assessments/{first['id']}").status_code == 404
    assert mallory.get(f"/compare?a={first['id']}&b={second['id']}").status_code == 404
    assert first["id"] not in mallory.get("/").text


def test_plotly_js_is_served_locally(app: Any) -> None:
    response = TestClient(app).get("/static/vendor/plotly.min.js")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/javascript")
    assert len(response.content) > 1_000_000 and b"plotly.js" in response.content[:2000]


def test_serve_demo_registers_the_demo_once(app: Any) -> None:
    from backend.auth import create_token
    from backend.db.session import session_scope
    from backend.demo_seed import DEMO_MODEL_NAME, seed_demo
    from worker.engine.demo import DemoOptions
    from worker.engine.training import TrainingOptions
    from tests.conftest import TINY_CHANNELS, TINY_SHAPE, TINY_VOXEL

    options = DemoOptions(subjects=16, shape=TINY_SHAPE, voxel_size=TINY_VOXEL, channels=TINY_CHANNELS,
                          training=TrainingOptions(epochs=2))
    seeded = seed_demo(app.state.sessionmaker, app.state.storage, app.state.settings, options=options)
    assert seeded.created
    again = seed_demo(app.state.sessionmaker, app.state.storage, app.state.settings, options=options)
    assert not again.created and again.assessment_id == seeded.assessment_id
    app.state.jobs.recover()  # what the start-up of `brainmia serve` does with the queued row
    with session_scope(app.state.sessionmaker) as session:
        token = create_token(session, "owner", admin=True)  # the default organisation, as serve's first token
    admin = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    models = admin.get("/api/v1/models").json()["items"]
    assert [m["name"] for m in models] == [DEMO_MODEL_NAME]
    body = wait_done(admin, seeded.assessment_id)
    assert body["state"] == "succeeded", body
    assert browser(app, token).get(f"/assessments/{seeded.assessment_id}").status_code == 200


def test_the_scan_set_page_shows_each_organisation_only_its_own_manifest_folders(
        app: Any, settings: Any, tokens: dict[str, str], tmp_path: Any) -> None:
    acme, globex = tmp_path / "acme-scans", tmp_path / "globex-scans"
    settings.org_manifest_roots = {"acme": [acme], "globex": [globex]}
    alice, mallory = browser(app, tokens["alice"]), browser(app, tokens["mallory"])
    mine, theirs = alice.get("/scan-sets").text, mallory.get("/scan-sets").text
    assert str(acme.resolve()) in mine and str(globex.resolve()) not in mine
    assert str(globex.resolve()) in theirs and str(acme.resolve()) not in theirs


def _add_reference_set(app: Any, org: str, scan_set_id: str, name: str) -> str:
    """A reference-set row of ``org`` (no files: the pages only list it)."""
    from backend.auth import get_or_create_org
    from backend.db.models import ReferenceSet, new_id
    from backend.db.session import session_scope

    rid = new_id()
    with session_scope(app.state.sessionmaker) as session:
        session.add(ReferenceSet(id=rid, org_id=get_or_create_org(session, org).id, scan_set_id=scan_set_id,
                                 name=name, root=f"reference_sets/{rid}", model_files=["ref_a.pt", "ref_b.pt"],
                                 formats=["torchscript"] * 2, model_metadata={"input_shape": [23, 27, 23]},
                                 keep_sha256="0" * 64, keep_hash="1" * 64, archive_sha256="2" * 64))
    return rid


def test_the_new_assessment_form_offers_reference_models_and_the_quantile_attacks(
        app: Any, tokens: dict[str, str], job_inputs: dict[str, str]) -> None:  # noqa: F811
    mine = _add_reference_set(app, "acme", job_inputs["scan_set_id"], "our K=2 references")
    theirs = _add_reference_set(app, "globex", job_inputs["other_scan_set_id"], "globex references")
    page = browser(app, tokens["alice"]).get(f"/assessments/new?scan_set_id={job_inputs['scan_set_id']}").text
    fieldset = page[page.index('<fieldset class="field" id="reference-models">'):]
    fieldset = fieldset[:fieldset.index('id="quantile-attacks"')]
    assert "Reference models" in fieldset and "reference models" in fieldset and "takes time" in fieldset
    for mode in ("none", "train", "supplied"):
        assert f'name="reference_mode" value="{mode}"' in fieldset
    assert 'value="none" checked' in fieldset
    assert re.search(r'name="reference_models" type="number" min="2" max="256" step="2" value="8"', fieldset)
    assert 'name="recipe_source" value="model" checked' in fieldset and 'name="reference_recipe"' in fieldset
    assert f'<option value="{mine}" data-scan-set="{job_inputs["scan_set_id"]}">our K=2 references (2 models' \
        in fieldset
    assert theirs not in page and "globex references" not in page
    assert re.search(r'<input id="quantile" name="quantile" type="checkbox" checked>', page)
    assert re.search(r'<input type="radio" name="scan_qa" value="fail" checked>', page)  # the default
    assert 'name="scan_qa" value="warn"' in page and 'name="scan_qa" value="off"' in page
    assert 'data-error-for="options.reference.reference_set_id"' in fieldset

    scan_sets = browser(app, tokens["alice"]).get("/scan-sets").text
    assert 'id="upload-reference-set"' in scan_sets and 'data-api="/api/v1/reference-sets"' in scan_sets
    assert "our K=2 references" in scan_sets and f'data-delete="/api/v1/reference-sets/{mine}"' in scan_sets
    assert "globex references" not in scan_sets


def _finished_reference_tasks(app: Any, org: str, inputs: dict[str, str], seconds: list[float], epochs: int) -> None:
    """An assessment of ``org`` with one succeeded reference task per duration in ``seconds``."""
    from datetime import timedelta

    from backend.auth import get_or_create_org
    from backend.db.models import Assessment, ReferenceTask, new_id, utcnow
    from backend.db.session import session_scope
    from backend.services.job_states import JobState, ReferenceState

    with session_scope(app.state.sessionmaker) as session:
        job = Assessment(id=new_id(), org_id=get_or_create_org(session, org).id, model_id=inputs["model_id"],
                         scan_set_id=inputs["scan_set_id"], state=JobState.SUCCEEDED.value,
                         options={"reference": {"models": len(seconds), "recipe": {"epochs": epochs}}})
        session.add(job)
        session.flush()
        end = utcnow()
        for k, s in enumerate(seconds):
            session.add(ReferenceTask(assessment_id=job.id, model_index=k, state=ReferenceState.SUCCEEDED.value,
                                      started_at=end - timedelta(seconds=s), finished_at=end))


def test_the_reference_training_estimate_uses_this_servers_measured_rate(
        app: Any, tokens: dict[str, str], job_inputs: dict[str, str]) -> None:  # noqa: F811
    from backend.db.models import ModelRecord, ScanSet
    from backend.db.session import session_scope
    from backend.services.reference_estimates import model_voxels, training_rate

    with session_scope(app.state.sessionmaker) as session:
        model = session.get(ModelRecord, job_inputs["model_id"])
        voxels = model_voxels(model.model_metadata)
        n_scans = session.get(ScanSet, job_inputs["scan_set_id"]).n_scans
        org_id = model.org_id
        assert training_rate(session, org_id) is None  # nothing trained yet: no rate, no number on the page
    page = browser(app, tokens["alice"]).get("/assessments/new").text
    assert 'id="reference-estimate"' in page and "data-rate=" not in page and "times a few training steps" in page
    assert f'data-voxels="{voxels}"' in page and f'data-scans="{n_scans}"' in page

    _finished_reference_tasks(app, "acme", job_inputs, [4.0, 6.0, 60.0], epochs=10)  # one slowed by another job
    with session_scope(app.state.sessionmaker) as session:
        rate = training_rate(session, org_id)
    assert rate is not None and rate.n_models == 3
    # the median model's 6 s over 10 epochs of half the scan set at the model's grid
    assert rate.seconds_per_unit == pytest.approx(6.0 / (10 * (n_scans // 2) * voxels), rel=1e-6)
    assert rate.seconds(n_models=8, epochs=10, n_train=n_scans // 2, voxels=voxels) == pytest.approx(48.0, rel=1e-6)
    page = browser(app, tokens["alice"]).get("/assessments/new").text
    assert re.search(r'id="reference-estimate" aria-live="polite" data-rate="[0-9.e-]+" data-rate-models="3"', page)
    # another organisation's models do not set this one's rate
    assert "data-rate=" not in browser(app, tokens["mallory"]).get("/assessments/new").text
