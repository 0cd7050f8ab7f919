"""The dashboard's BIDS form registers a BIDS dataset through ``POST /api/v1/scan-sets/from-path``,
and shows each problem of a refused dataset naming the subject."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx

from tests.bids_dataset import PREPROC, BidsCase, bids_case  # noqa: F401


def test_the_bids_form_registers_a_dataset(signed_in_page: Any, live_server: Any, bids_case: BidsCase,  # noqa: F811
                                           tmp_path: Path) -> None:
    root = tmp_path / "cohorts"
    dataset = root / "ds-synth"
    shutil.copytree(bids_case.root, dataset)
    settings = live_server.app.state.settings
    saved = settings.org_manifest_roots
    settings.org_manifest_roots = {"default": [root]}
    page = signed_in_page
    headers = {"Authorization": f"Bearer {live_server.token}"}
    try:
        page.goto(f"{live_server.url}/scan-sets")
        form = page.locator("#server-bids")
        form.get_by_label("Dataset folder").fill(str(dataset))
        form.get_by_label("or the member IDs, one a line").fill("sub-01\nsub-11\n12")
        form.get_by_label("Name (optional)").fill("bids synth")
        form.get_by_role("button", name="Check and register").click()  # no filter: raw and preprocessed match
        summary = form.locator(".form-summary")
        summary.get_by_text("sub-01_ses-1: 2 scans match the filter", exact=False).wait_for(timeout=60_000)
        assert "desc (none / preproc)" in summary.inner_text()
        form.get_by_label("Scans to take (BIDS entities, optional)").fill(PREPROC)
        form.get_by_role("button", name="Check and register").click()
        page.locator("#scan-sets tbody tr", has_text="bids synth").wait_for(timeout=60_000)
        # the one refused request (the browser logs its 422), nothing else
        assert [e for e in page.console_errors if "status of 422" not in e] == []
        assert len(page.console_errors) == 1
    finally:
        settings.org_manifest_roots = saved
        listed = httpx.get(f"{live_server.url}/api/v1/scan-sets", headers=headers).json()["items"]
        for item in listed:  # the live server is shared: leave no scan set behind
            if item["name"] == "bids synth":
                assert item["source"] == "bids" and item["n_scans"] == 60
                httpx.delete(f"{live_server.url}/api/v1/scan-sets/{item['id']}", headers=headers).raise_for_status()
