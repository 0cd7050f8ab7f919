"""``POST /api/v1/scan-sets/from-path`` with a BIDS dataset: registered, assessed end to end, refused
with a detail per problem naming the subject; nothing stored from a refused request."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from backend.db.models import ScanSet
from backend.db.session import session_scope
from backend.settings import Settings
from tests.bids_dataset import PREPROC, BidsCase, bids_case  # noqa: F401

from .job_fixtures import add_model, job_model_file, submit, wait_for  # noqa: F401

API = "/api/v1/scan-sets"
FROM_PATH = f"{API}/from-path"


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    """Embedded settings with a server folder of organisation acme."""
    (tmp_path / "allowed").mkdir()
    return Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", session_secret="test-secret",
                    org_manifest_roots={"acme": [tmp_path / "allowed"]}, device="cpu")


@pytest.fixture()
def dataset(bids_case: BidsCase, settings: Settings) -> BidsCase:  # noqa: F811
    """A copy of the BIDS dataset and its member list inside acme's server folder."""
    allowed = settings.org_manifest_roots["acme"][0]
    root = allowed / "ds-synth"
    shutil.copytree(bids_case.root, root)
    members = allowed / "train-subjects.txt"
    shutil.copyfile(bids_case.members, members)
    return BidsCase(root, members, bids_case.member_ids, bids_case.ages)


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code, body
    return body["error"]


def stored_nothing(app: Any) -> bool:
    root = app.state.storage.root
    with session_scope(app.state.sessionmaker) as session:
        rows = session.scalar(select(func.count()).select_from(ScanSet))
    return rows == 0 and not any((root / "scan_sets").iterdir()) and not any((root / "tmp").iterdir())


@pytest.mark.slow  # registers 14 scans and runs an assessment through the embedded worker: ~1 min
def test_bids_scan_set_assessed_end_to_end(app, client: TestClient, dataset: BidsCase, job_model_file: Path) -> None:  # noqa: F811
    members = ["sub-01", "sub-02 ses-1", "13", "sub-15", "sub-17", "sub-19"]
    non_members = ["sub-03", "sub-14", "sub-16", "sub-18", "sub-20", "sub-22"]
    response = client.post(FROM_PATH, json={"bids_path": str(dataset.root), "members": members,
                                            "non_members": non_members, "bids_filter": PREPROC, "name": "bids"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["source"] == "bids" and body["name"] == "bids"
    assert (body["n_scans"], body["n_members"], body["n_nonmembers"]) == (14, 7, 7)
    assert body["attribute_names"] == ["sex", "site", "session"]
    folder = app.state.storage.scan_set_dir(body["id"])
    assert {p.name for p in folder.iterdir()} == {"manifest.csv", "manifest.source.json", "members.txt",
                                                  "non-members.txt"}
    model_id = add_model(app, "acme", job_model_file)
    created = submit(client, {"model_id": model_id, "scan_set_id": body["id"]}, feature_sets=["error", "grad-norm"],
                     quantile=False)
    done = wait_for(client, created["id"], ("succeeded", "failed", "cancelled"), timeout=300)
    assert done["state"] == "succeeded", done
    report = client.get(f"/api/v1/assessments/{created['id']}/report.json").json()
    manifest = report["provenance"]["manifest"]
    assert (manifest["n_scans"], manifest["n_members"]) == (14, 7)
    assert manifest["source"]["kind"] == "bids" and manifest["source"]["dataset"] == "ds-synth"
    assert manifest["source"]["filter"]["space"] == "MNI152NLin2009cAsym"
    assert manifest["source"]["members_file"] == "members.txt"
    features = client.get(f"/api/v1/assessments/{created['id']}/features.csv").text
    assert "sub-02_ses-1" in features and "sub-02_ses-2" not in features


def test_bids_scan_set_from_server_lists_and_delete(app, client: TestClient, dataset: BidsCase) -> None:
    body = {"bids_path": str(dataset.root), "members_path": str(dataset.members), "bids_filter": {"scope": "raw"}}
    response = client.post(FROM_PATH, json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["n_scans"] == 60 and created["n_members"] == len(dataset.member_ids)
    folder = app.state.storage.scan_set_dir(created["id"])
    assert (folder / "manifest.csv").is_file()
    assert client.delete(f"{API}/{created['id']}").status_code == 204
    assert not folder.exists()
    assert (dataset.root / "participants.tsv").is_file()  # the dataset is the administrator's: it stays
    assert stored_nothing(app)


def test_bids_problems_name_the_subject_and_store_nothing(app, client: TestClient, dataset: BidsCase,
                                                          tmp_path: Path) -> None:
    tsv = dataset.root / "participants.tsv"
    tsv.write_text("\n".join(line if not line.startswith("sub-15\t") else "\t".join(["sub-15", "n/a", *line.split("\t")[2:]])
                             for line in tsv.read_text().splitlines()) + "\n")
    body = {"bids_path": str(dataset.root), "members_path": str(dataset.members), "bids_filter": PREPROC}
    err = error_of(client.post(FROM_PATH, json=body), 422, "invalid_bids")
    assert [d["reason"] for d in err["details"]] == [
        "sub-15: no age (participants.tsv line 16; no age in sub-15_sessions.tsv either)"]
    ambiguous = error_of(client.post(FROM_PATH, json=body | {"bids_filter": None}), 422, "invalid_bids")
    reasons = [d["reason"] for d in ambiguous["details"]]
    first = next(r for r in reasons if r.startswith("sub-01_ses-1:"))
    assert "2 scans match the filter" in first and "desc (none / preproc)" in first
    listed = error_of(client.post(FROM_PATH, json=body | {"members_path": None, "members": ["sub-99"]}),
                      422, "invalid_bids")
    assert listed["details"][0]["reason"].startswith("sub-99 (members.txt line 1, members): not in the dataset")
    for e in (err, ambiguous, listed):
        assert str(tmp_path) not in str(e)  # no server path in an answer
    assert stored_nothing(app)


def test_bids_paths_outside_the_folders_and_bad_fields(app, client: TestClient, dataset: BidsCase,
                                                       bids_case: BidsCase) -> None:  # noqa: F811
    outside = {"bids_path": str(bids_case.root), "members_path": str(dataset.members)}
    error_of(client.post(FROM_PATH, json=outside), 404, "not_found")
    refused = error_of(client.post(FROM_PATH, json={"bids_path": str(dataset.root),
                                                    "members_path": str(bids_case.members)}), 404, "not_found")
    assert refused["details"] == [{"field": "members_path", "reason": "not found"}]
    error_of(client.post(FROM_PATH, json={"bids_path": "ds"}), 422, "invalid_input")
    missing = error_of(client.post(FROM_PATH, json={"bids_path": str(dataset.root)}), 422, "validation_error")
    assert missing["details"][0]["field"] == "members"
    both = error_of(client.post(FROM_PATH, json={"bids_path": str(dataset.root), "members": ["01"],
                                                 "members_path": str(dataset.members)}), 422, "validation_error")
    assert both["details"][0]["field"] == "members"
    stray = error_of(client.post(FROM_PATH, json={"manifest_path": str(dataset.members), "members": ["01"]}),
                     422, "validation_error")
    assert stray["details"][0]["field"] == "members"
    assert stored_nothing(app)
