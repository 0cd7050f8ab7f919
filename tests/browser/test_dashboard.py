"""The dashboard in headless Chromium, as a governance officer uses it: sign in, upload a model
and a scan set (seeing validation errors where they belong), start an assessment, watch it
finish, read every plot of the report, export it, compare two assessments, read the audit log."""

from __future__ import annotations

import re
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from tests.conftest import TINY_CHANNELS, TINY_SHAPE, TINY_VOXEL, save_tiny_model

DRAWN = """() => {
  const plots = [...document.querySelectorAll("div.plot[data-figure]")];
  return plots.length > 0 && plots.every(p => p.querySelector(".main-svg"));
}"""
#: the report page's figures, by the heading of their section
REPORT_SECTIONS = ("#accuracy", "#error", "#gradients", "#roc", "#subgroups", "#utility")


@pytest.fixture(scope="module")
def cohort_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24-subject synthetic cohort (8 mm grid) zipped with its manifest at the top."""
    from worker.engine.synth import CohortSpec, generate_cohort

    root = tmp_path_factory.mktemp("browser_cohort")
    manifest = generate_cohort(root / "cohort", CohortSpec(n_subjects=24, shape=TINY_SHAPE, voxel_size=TINY_VOXEL, seed=21))
    archive = root / "cohort.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in manifest.parent.rglob("*"):
            if path.is_file():
                z.write(path, path.relative_to(manifest.parent).as_posix())
    return archive


@pytest.fixture(scope="module")
def bad_manifest_zip(cohort_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same archive with two broken manifest rows (line 3: age, line 5: member)."""
    out = tmp_path_factory.mktemp("bad_zip") / "broken.zip"
    with zipfile.ZipFile(cohort_zip) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "manifest.csv":
                lines = data.decode().splitlines()
                cells = lines[2].split(",")
                cells[2] = "sixty"
                lines[2] = ",".join(cells)
                cells = lines[4].split(",")
                cells[3] = "2"
                lines[4] = ",".join(cells)
                data = ("\n".join(lines) + "\n").encode()
            dst.writestr(item, data)
    return out


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained TorchScript 3D-CNN for the 8 mm grid (uploaded without its sidecar)."""
    from worker.engine.models import BrainAge3D

    torch.manual_seed(3)
    folder = tmp_path_factory.mktemp("browser_model")
    path = save_tiny_model(BrainAge3D(channels=TINY_CHANNELS, mean_age=62.0, age_scale=10.0), folder / "tiny-cnn.pt")
    path.with_name(path.name + ".json").unlink()  # the form supplies the metadata
    return path


def _api(live_server: Any) -> httpx.Client:
    return httpx.Client(base_url=live_server.url, headers={"Authorization": f"Bearer {live_server.token}"}, timeout=120)


def _finished(api: httpx.Client, job_id: str, timeout_s: float = 300) -> dict[str, Any]:
    """The assessment once it has left queued / running."""
    deadline = time.monotonic() + timeout_s
    while (job := api.get(f"/api/v1/assessments/{job_id}").json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"assessment {job_id} did not finish"
        time.sleep(0.3)
    return job


@pytest.fixture(scope="module")
def finished_pair(live_server: Any, model_file: Path, cohort_zip: Path) -> tuple[str, str]:
    """Two succeeded assessments of the same model and scans (made through the API)."""
    import json

    metadata = {"input_shape": list(TINY_SHAPE), "voxel_size": [TINY_VOXEL] * 3, "arch": "brain_age_3d",
                "arch_kwargs": {"channels": list(TINY_CHANNELS)}}
    with _api(live_server) as api:
        model = api.post("/api/v1/models", files={"file": ("pair.pt", model_file.read_bytes())},
                         data={"metadata": json.dumps(metadata), "name": "pair model"})
        assert model.status_code == 201, model.text
        scans = api.post("/api/v1/scan-sets", files={"archive": ("pair.zip", cohort_zip.read_bytes())},
                         data={"name": "pair scans"})
        assert scans.status_code == 201, scans.text
        ids = []
        for classifiers in (["threshold", "logistic"], ["threshold", "mlp"]):
            job = api.post("/api/v1/assessments", json={
                "model_id": model.json()["id"], "scan_set_id": scans.json()["id"],
                "options": {"repeats": 2, "classifiers": classifiers}})
            assert job.status_code == 201, job.text
            ids.append(job.json()["id"])
        for job_id in ids:
            job = _finished(api, job_id)
            assert job["state"] == "succeeded", job
    return ids[0], ids[1]


def _sign_in(page: Any, live_server: Any, token: str) -> None:
    page.goto(f"{live_server.url}/")
    assert "/sign-in" in page.url  # signed out: sent to sign in, and back afterwards
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def test_sign_in_refuses_a_bad_token_next_to_the_field(page: Any, live_server: Any) -> None:
    _sign_in(page, live_server, "bmia_not-a-token")
    error = page.locator("#token-error")
    assert error.is_visible() and "unknown" in error.inner_text()
    assert page.get_by_label("API token").get_attribute("aria-invalid") == "true"
    assert page.console_errors == ["console: Failed to load resource: the server responded with a status of 401 (Unauthorized)"]
    page.console_errors.clear()
    page.get_by_label("API token").fill(live_server.token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")
    assert page.get_by_role("heading", name="Assessments").is_visible()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/sign-in$"))
    assert page.goto(f"{live_server.url}/models").url.endswith("/sign-in?next=/models")
    assert page.console_errors == []


def test_upload_run_and_read_the_report(page: Any, live_server: Any, model_file: Path, cohort_zip: Path,
                                        bad_manifest_zip: Path, tmp_path: Path) -> None:
    _sign_in(page, live_server, live_server.token)
    page.wait_for_url(f"{live_server.url}/")

    # model: a grid typo is shown next to the grid field, then the upload succeeds
    page.get_by_role("link", name="Models").first.click()
    page.get_by_label("Model file").set_input_files(str(model_file))
    page.get_by_label("Name (optional)", exact=True).fill("tiny cnn")
    page.get_by_label("Grid (voxels, X×Y×Z)").fill("23,27")
    page.get_by_role("button", name="Upload and check the model").click()
    grid_error = page.locator("[data-error-for='metadata.input_shape']")
    grid_error.wait_for(state="visible")
    assert "three positive whole numbers" in grid_error.inner_text()
    page.get_by_label("Grid (voxels, X×Y×Z)").fill("23,27,23")
    page.get_by_label("Voxel size (mm)").fill("8")
    page.get_by_label("Architecture", exact=True).select_option("brain_age_3d")
    # age bins declared without their centres: the server's reason, next to the output field
    page.get_by_label("Output (optional)").fill("bins")
    page.get_by_role("button", name="Upload and check the model").click()
    output_error = page.locator("[data-error-for='metadata.output']")
    output_error.wait_for(state="visible", timeout=60_000)
    assert "needs 'centers'" in output_error.inner_text()
    page.get_by_label("Output (optional)").fill("age")
    page.get_by_label("Loss of the white-box gradients (optional)").fill('{"name": "mse"}')
    page.get_by_role("button", name="Upload and check the model").click()
    page.locator("#models tbody tr", has_text="tiny cnn").wait_for(timeout=60_000)

    # scan set: broken manifest rows are listed by line, nothing is stored; then the good archive
    page.get_by_role("link", name="Scan sets").first.click()
    page.locator("#archive").set_input_files(str(bad_manifest_zip))
    page.get_by_role("button", name="Upload and check the scans").click()
    rows = page.locator("#upload-archive .row-errors tbody tr")
    rows.first.wait_for(timeout=60_000)
    table = page.locator("#upload-archive .row-errors").inner_text()
    assert re.search(r"\b3\s+age\b", table) and re.search(r"\b5\s+member\b", table), table
    assert page.locator("#scan-sets").count() == 0  # nothing half-stored
    assert [e for e in page.console_errors if "422" not in e] == []  # the refused upload
    page.console_errors.clear()
    page.locator("#archive").set_input_files(str(cohort_zip))
    page.get_by_label("Name (optional)", exact=True).fill("browser cohort")
    page.get_by_role("button", name="Upload and check the scans").click()
    page.locator("#scan-sets tbody tr", has_text="browser cohort").wait_for(timeout=60_000)

    # new assessment: the defaults are the paper's full set; fewer repeats keep the test short
    page.get_by_role("link", name="New assessment").first.click()
    assert page.locator("input[name=feature_sets]:checked").count() == page.locator("input[name=feature_sets]").count()
    page.get_by_label("Model", exact=True).select_option(
        page.locator("#model_id option", has_text="tiny cnn").get_attribute("value"))
    page.get_by_label("Scan set", exact=True).select_option(
        page.locator("#scan_set_id option", has_text="browser cohort").get_attribute("value"))
    page.get_by_label("Repeats").fill("2")
    page.get_by_role("button", name="Start the assessment").click()
    page.wait_for_url(re.compile(r".*/assessments/[0-9a-f]{32}$"))
    assessment_id = page.url.rsplit("/", 1)[-1]

    # the progress bar reaches 100%, then the page turns into the report
    seen = page.evaluate("""() => new Promise(resolve => {
      const values = [];
      const timer = setInterval(() => {
        const bar = document.querySelector("[data-role=progress]");
        if (bar) { values.push(bar.value); if (bar.value >= 1) { clearInterval(timer); resolve(values); } }
      }, 20);
    })""")
    assert seen[-1] == 1 and seen == sorted(seen), seen
    page.locator("#verdict").wait_for(timeout=180_000)
    page.wait_for_function(DRAWN, timeout=60_000)
    for section in REPORT_SECTIONS:
        plots = page.locator(f"{section} div.plot[data-figure]")
        assert plots.count() >= 1, section
        for i in range(plots.count()):
            assert plots.nth(i).locator(".main-svg").count() > 0, (section, i)
    assert page.locator("#roc div.plot").count() == 2  # linear and log-log
    assert page.locator("#provenance").inner_text().count("SHA-256") >= 2

    # the layer selector swaps the gradient-magnitude figure
    select = page.get_by_label("Layer", exact=True)
    options = select.locator("option").all_inner_texts()
    assert len(options) > 1
    before = page.locator("#grad-layer-title").inner_text()
    other = next(o for o in select.locator("option").all() if o.get_attribute("selected") is None)
    select.select_option(other.get_attribute("value"))
    page.wait_for_function("t => document.querySelector('#grad-layer-title').textContent !== t", arg=before)
    assert page.locator("#grad-layer-plot .main-svg").count() > 0

    # exports: HTML (opens offline with the same figures) and PDF (verdict on page one)
    with page.expect_download() as html_download:
        page.get_by_role("link", name="HTML", exact=True).click()
    html_path = tmp_path / "report.html"
    html_download.value.save_as(html_path)
    with page.expect_download() as pdf_download:
        page.get_by_role("link", name="PDF", exact=True).click()
    pdf_path = tmp_path / "report.pdf"
    pdf_download.value.save_as(pdf_path)
    assert pdf_path.read_bytes().startswith(b"%PDF")
    from pypdf import PdfReader

    first_page = PdfReader(str(pdf_path)).pages[0].extract_text()
    assert "Verdict" in first_page and assessment_id not in ("",)

    offline = page.context.browser.new_context(offline=True)
    try:
        exported = offline.new_page()
        exported.goto(html_path.as_uri())
        exported.wait_for_function(DRAWN, timeout=30_000)
        n_exported = exported.locator("div.plot[data-figure]").count()
    finally:
        offline.close()
    assert n_exported == page.locator("div.plot[data-figure]").count()
    assert page.console_errors == []

    # the overview lists it as succeeded with its verdict
    page.get_by_role("link", name="Assessments").first.click()
    row = page.locator(f"tr[data-assessment='{assessment_id}']")
    assert "succeeded" in row.inner_text().lower() and re.search(r"(Low|Medium|High) risk|Inconclusive", row.inner_text())


def test_compare_two_assessments(signed_in_page: Any, live_server: Any, finished_pair: tuple[str, str]) -> None:
    page = signed_in_page
    a, b = finished_pair
    page.goto(f"{live_server.url}/assessments/{a}")
    page.get_by_label("Compare with").select_option(b)
    page.get_by_role("button", name="Compare", exact=True).click()
    page.wait_for_url(re.compile(rf".*/compare\?a={a}&b={b}$"))
    page.wait_for_function(DRAWN, timeout=30_000)
    table = page.locator("#attack-changes").inner_text()
    assert "logistic" in table and "mlp" in table  # attacks of either side, "–" where one lacks it
    assert page.locator("#headline tbody tr").count() >= 4
    assert page.locator(".compare-grid section.verdict").count() == 2
    assert page.locator("div.plot .main-svg").count() >= 4
    assert page.console_errors == []


def test_overview_filters_and_keyboard(signed_in_page: Any, live_server: Any, finished_pair: tuple[str, str]) -> None:
    page = signed_in_page
    page.goto(f"{live_server.url}/?state=succeeded")
    assert page.locator("#assessments tbody tr").count() >= 2
    page.get_by_label("State").select_option("failed")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r".*state=failed.*"))
    assert page.locator("#assessments").count() == 0 and "No assessment matches" in page.inner_text("main")
    # keyboard: the first Tab reaches the skip link, which moves focus to the content
    page.goto(f"{live_server.url}/assessments/{finished_pair[0]}")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to the content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    # every form control of the report page has a label
    unlabelled = page.evaluate("""() => [...document.querySelectorAll("select, input:not([type=hidden]), button")]
        .filter(el => !(el.labels && el.labels.length) && !el.getAttribute("aria-label") && !el.textContent.trim())
        .map(el => el.outerHTML)""")
    assert unlabelled == []


def test_audit_log_is_for_administrators(signed_in_page: Any, page: Any, live_server: Any,
                                         finished_pair: tuple[str, str]) -> None:
    signed_in_page.goto(f"{live_server.url}/admin/audit?action=run")
    text = signed_in_page.locator("#audit").inner_text()
    assert "run" in text and "assessment" in text
    # a member of the organisation without admin rights is refused
    with _api(live_server) as api:
        created = api.post("/api/v1/admin/tokens", json={"name": "officer"})
        assert created.status_code == 201, created.text
    _sign_in(page, live_server, created.json()["token"])
    page.wait_for_url(f"{live_server.url}/")
    assert page.locator("a[href='/admin/audit']").count() == 0
    response = page.goto(f"{live_server.url}/admin/audit")
    assert response is not None and response.status == 403


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """3 non-IID learners x 6 scans, 12 short FedAvg rounds on the 8 mm grid; rounds and cohort zipped."""
    from worker.engine.federated import FederatedDemoOptions, prepare_federated_demo

    root = tmp_path_factory.mktemp("browser_federation")
    options = FederatedDemoOptions(scans_per_learner=6, shape=TINY_SHAPE, voxel_size=TINY_VOXEL, channels=(4, 8, 8), seed=2)
    made = prepare_federated_demo(root / "made", learners=3, rounds=12, options=options)
    rounds = root / "rounds.zip"
    with zipfile.ZipFile(rounds, "w") as z:
        for path in sorted(made.model_paths[0].parent.iterdir()):
            z.write(path, path.name)
    cohort = root / "cohort.zip"
    folder = Path(made.manifest.path).parent
    with zipfile.ZipFile(cohort, "w") as z:
        for path in folder.rglob("*"):
            if path.is_file():
                z.write(path, path.relative_to(folder).as_posix())
    return rounds, cohort


def test_federated_assessment_shows_its_matrix_and_rounds(
    signed_in_page: Any, live_server: Any, federation: tuple[Path, Path]
) -> None:
    page = signed_in_page
    rounds, cohort = federation
    # the rounds through the upload form (their sidecars give the input grid)
    page.goto(f"{live_server.url}/models")
    page.get_by_label("Federated learning: every round's community model").check()
    assert page.locator(".federated-only").is_visible() and page.get_by_label("Voxel size (mm)").is_disabled()
    page.get_by_label("Model file").set_input_files(str(rounds))
    page.get_by_label("Name (optional)", exact=True).fill("federation rounds")
    page.get_by_role("button", name="Upload and check the model").click()
    row = page.locator("#models tbody tr", has_text="federation rounds")
    row.wait_for(timeout=120_000)
    assert "federated, 12 rounds" in row.inner_text()
    # the scans and the assessment through the API, as a pipeline would
    with _api(live_server) as api:
        model_id = next(m["id"] for m in api.get("/api/v1/models").json()["items"] if m["name"] == "federation rounds")
        scans = api.post("/api/v1/scan-sets", files={"archive": ("federation.zip", cohort.read_bytes())})
        assert scans.status_code == 201, scans.text
        job = api.post("/api/v1/assessments", json={"model_id": model_id, "scan_set_id": scans.json()["id"],
                                                    "options": {"repeats": 2, "classifiers": ["threshold", "logistic"]}})
        assert job.status_code == 201, job.text
        job_id = job.json()["id"]
        state = _finished(api, job_id)
        assert state["state"] == "succeeded", state
    page.goto(f"{live_server.url}/assessments/{job_id}")
    page.wait_for_function(DRAWN, timeout=60_000)
    section = page.locator("#federated")
    assert section.is_visible()
    plots = section.locator("div.plot[data-figure]")
    names = [plots.nth(i).get_attribute("id") for i in range(plots.count())]
    assert any("federated-matrix" in n for n in names) and any("federated-rounds" in n for n in names), names
    for i in range(plots.count()):
        assert plots.nth(i).locator(".main-svg").count() > 0
    heatmap = section.locator("div.plot[id*='federated-matrix'] .heatmaplayer, div.plot[id*='federated-matrix'] .hm")
    assert heatmap.count() > 0  # drawn as a heatmap
    assert page.console_errors == []


def test_delete_from_the_pages(signed_in_page: Any, live_server: Any, model_file: Path,
                               finished_pair: tuple[str, str]) -> None:
    import json

    page = signed_in_page
    page.on("dialog", lambda dialog: dialog.accept())
    metadata = {"input_shape": list(TINY_SHAPE), "voxel_size": [TINY_VOXEL] * 3, "arch": "brain_age_3d",
                "arch_kwargs": {"channels": list(TINY_CHANNELS)}}
    with _api(live_server) as api:
        spare = api.post("/api/v1/models", files={"file": ("spare.pt", model_file.read_bytes())},
                         data={"metadata": json.dumps(metadata), "name": "spare model"})
        assert spare.status_code == 201, spare.text
    page.goto(f"{live_server.url}/models")
    # a model an assessment still uses is kept, and the page says why
    in_use = page.locator("#models tbody tr", has_text="pair model")
    in_use.get_by_role("button", name="Delete").click()
    reason = in_use.locator(".delete-error")
    reason.wait_for(state="visible")
    assert "used by" in reason.inner_text()
    page.console_errors.clear()  # the refused DELETE (409) is logged by the browser
    page.locator("#models tbody tr", has_text="spare model").get_by_role("button", name="Delete").click()
    page.wait_for_load_state()
    page.wait_for_function("() => !document.body.innerText.includes('spare model')")
    # an assessment of its own, from its report page: back to the overview, gone from it
    with _api(live_server) as api:
        first = api.get(f"/api/v1/assessments/{finished_pair[0]}").json()
        job = api.post("/api/v1/assessments", json={"model_id": first["model_id"], "scan_set_id": first["scan_set_id"],
                                                    "options": {"repeats": 1, "classifiers": ["threshold"]}})
        assert job.status_code == 201, job.text
        doomed = job.json()["id"]
        assert _finished(api, doomed)["state"] == "succeeded"
    page.goto(f"{live_server.url}/assessments/{doomed}")
    page.locator(".report-head").get_by_role("button", name="Delete").click()
    page.wait_for_url(f"{live_server.url}/")
    assert page.locator(f"tr[data-assessment='{doomed}']").count() == 0
    assert page.locator(f"tr[data-assessment='{finished_pair[0]}']").count() == 1
    assert page.console_errors == []


def test_reference_models_upload_and_choice_on_the_new_assessment_form(
    signed_in_page: Any, live_server: Any, model_file: Path, cohort_zip: Path, tmp_path: Path
) -> None:
    import csv
    import io
    import json

    page = signed_in_page
    metadata = {"input_shape": list(TINY_SHAPE), "voxel_size": [TINY_VOXEL] * 3, "arch": "brain_age_3d",
                "arch_kwargs": {"channels": list(TINY_CHANNELS)}}
    with _api(live_server) as api:
        model = api.post("/api/v1/models", files={"file": ("target.pt", model_file.read_bytes())},
                         data={"metadata": json.dumps(metadata), "name": "reference target"})
        assert model.status_code == 201, model.text
        sets = [api.post("/api/v1/scan-sets", files={"archive": ("c.zip", cohort_zip.read_bytes())},
                         data={"name": name}).json()["id"] for name in ("with references", "without references")]
    with zipfile.ZipFile(cohort_zip) as z:
        ids = [row["scan_id"] for row in csv.DictReader(io.StringIO(z.read("manifest.csv").decode()))]

    def archive(name: str, bad_line: int | None = None) -> Path:
        rows = ["scan_id,ref_a,ref_b"] + [f"{sid},{i % 2},{(i + 1) % 2}" for i, sid in enumerate(ids)]
        if bad_line is not None:
            rows[bad_line - 1] = rows[bad_line - 1].rsplit(",", 1)[0] + ",yes"
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("keep.csv", "\n".join(rows) + "\n")
            for stem in ("ref_a", "ref_b"):
                z.write(model_file, f"{stem}.pt")
        return path

    # the upload form: a bad keep.csv cell is listed by line and column, then the good archive is kept
    page.goto(f"{live_server.url}/scan-sets")
    form = page.locator("#upload-reference-set")
    form.get_by_label("Scan set").select_option(sets[0])
    form.get_by_label("Input of every model").fill(json.dumps(metadata))
    form.locator("input[type=file]").set_input_files(str(archive("bad.zip", bad_line=4)))
    form.get_by_role("button", name="Upload and check the reference models").click()
    form.locator(".row-errors tbody tr").first.wait_for(timeout=60_000)
    assert re.search(r"\b4\s+ref_b\s+'yes' is not 0 or 1", form.locator(".row-errors").inner_text())
    assert page.locator("#reference-sets").count() == 0
    page.console_errors.clear()  # the refused upload (422)
    form.locator("input[type=file]").set_input_files(str(archive("good.zip")))
    form.get_by_label("Reference set name (optional)").fill("my references")
    form.get_by_role("button", name="Upload and check the reference models").click()
    page.locator("#reference-sets tbody tr", has_text="my references").wait_for(timeout=120_000)

    # the new-assessment form: an odd K is refused in the page; the reference set follows the scan set
    page.goto(f"{live_server.url}/assessments/new?scan_set_id={sets[0]}")
    page.get_by_label("Model", exact=True).select_option(model.json()["id"])
    page.get_by_label("BrainMIA trains reference models").check()
    assert page.get_by_label("How many reference models (even)").input_value() == "8"
    assert page.get_by_label("Recipe (JSON)").is_disabled()
    # no model trained here yet: the page says the job will measure; with a measured rate it computes
    estimate = page.locator("#reference-estimate")
    assert "times a few training steps" in estimate.inner_text() and "Estimated" not in estimate.inner_text()
    voxels, half = TINY_SHAPE[0] * TINY_SHAPE[1] * TINY_SHAPE[2], len(ids) // 2
    page.evaluate("rate => { const box = document.getElementById('reference-estimate'); box.dataset.rate = rate;"
                  " box.dataset.rateModels = '5'; }", str(180.0 / (4 * 10 * half * voxels)))
    page.get_by_label("Give the recipe here (JSON)").check()
    page.get_by_label("Recipe (JSON)").fill('{"arch": "brain_age_3d", "epochs": 10}')
    page.get_by_label("How many reference models (even)").fill("4")
    assert estimate.inner_text().startswith(
        f"Estimated training time: about 3 min on one worker (4 models of 10 epochs on about {half} scans each, "
        "at the rate of the 5 reference models trained here last")
    page.get_by_label("Use the model's recipe").check()  # this model's sidecar has none: no number
    assert "Estimated" not in estimate.inner_text()
    page.get_by_label("How many reference models (even)").fill("3")
    page.get_by_role("button", name="Start the assessment").click()
    assert "even number" in page.locator("[data-error-for='options.reference.models']").inner_text()
    page.get_by_label("Use reference models you trained yourself").check()
    assert page.locator(".reference-choice[data-mode=train]").is_hidden()
    assert "my references" in page.get_by_label("Reference set", exact=True).inner_text()
    page.get_by_label("Scan set", exact=True).select_option(sets[1])
    assert page.locator(".no-reference-sets").is_visible()
    page.get_by_label("Scan set", exact=True).select_option(sets[0])
    assert page.locator(".no-reference-sets").is_hidden()
    assert page.get_by_label("Run the quantile-regression attacks").is_checked()
    page.get_by_label("Run the quantile-regression attacks").uncheck()
    assert page.get_by_label("Fail the assessment when most scans look unregistered", exact=False).is_checked()
    page.get_by_label("Only list the flagged scans in the report").check()
    page.get_by_label("Repeats").fill("1")
    page.get_by_role("button", name="Start the assessment").click()
    page.wait_for_url(re.compile(r".*/assessments/[0-9a-f]{32}$"))
    job_id = page.url.rsplit("/", 1)[-1]
    page.goto(f"{live_server.url}/scan-sets")
    with _api(live_server) as api:
        options = api.get(f"/api/v1/assessments/{job_id}").json()["options"]
        reference_set = api.get("/api/v1/reference-sets", params={"scan_set_id": sets[0]}).json()["items"][0]
        assert options["reference"] == {"reference_set_id": reference_set["id"]} and options["quantile"] is False
        assert options["scan_qa"] == "warn"
        assert api.delete(f"/api/v1/assessments/{job_id}").status_code == 204
    assert page.console_errors == []
