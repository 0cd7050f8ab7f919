"""The dashboard's server-manifest form registers through ``POST /api/v1/scan-sets/from-path``
(the JSON operation of its own since the scan-set routes take one content type each)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.backend.upload_fixtures import make_cohort


def test_the_server_manifest_form_registers_through_from_path(signed_in_page: Any, live_server: Any,
                                                              tmp_path: Path) -> None:
    root = tmp_path / "cohorts"
    folder = make_cohort(root / "ukb")
    settings = live_server.app.state.settings
    saved = settings.org_manifest_roots
    settings.org_manifest_roots = {"default": [root]}
    page = signed_in_page
    posts: list[str] = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    headers = {"Authorization": f"Bearer {live_server.token}"}
    try:
        page.goto(f"{live_server.url}/scan-sets")
        form = page.locator("#server-manifest")
        form.get_by_label("Manifest path").fill(str(folder / "manifest.csv"))
        form.get_by_label("Name (optional)").fill("server ukb")
        form.get_by_role("button", name="Check and register").click()
        page.locator("#scan-sets tbody tr", has_text="server ukb").wait_for(timeout=60_000)
        assert f"{live_server.url}/api/v1/scan-sets/from-path" in posts, posts
        assert page.console_errors == []
    finally:
        settings.org_manifest_roots = saved
        listed = httpx.get(f"{live_server.url}/api/v1/scan-sets", headers=headers).json()["items"]
        for item in listed:  # the live server is shared: leave no scan set behind
            if item["name"] == "server ukb":
                httpx.delete(f"{live_server.url}/api/v1/scan-sets/{item['id']}", headers=headers).raise_for_status()
