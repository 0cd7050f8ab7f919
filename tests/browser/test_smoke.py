"""Smoke tests of the browser set-up: a signed-in session against the live server, and an
exported report opened from disk with every figure drawn by Plotly."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from frontend.report_html import write_report_html
from tests.frontend.sample_report import make_sample

DRAWN = """() => {
  const plots = [...document.querySelectorAll("div.plot[data-figure]")];
  return plots.length > 0 && plots.every(p => p.querySelector(".main-svg"));
}"""


def test_signed_in_page_has_the_admin_session(signed_in_page: Any, page: Any, live_server: Any) -> None:
    response = signed_in_page.goto(f"{live_server.url}/api/v1/auth/me")
    assert response is not None and response.status == 200
    me = json.loads(signed_in_page.inner_text("body"))
    assert me["name"] == "admin" and me["is_admin"] is True
    # the cookie is what signs it in: a fresh context is refused
    anonymous = page.goto(f"{live_server.url}/api/v1/auth/me")
    assert anonymous is not None and anonymous.status == 401


def test_exported_report_draws_every_figure_offline(page: Any, tmp_path: Path) -> None:
    report, features = make_sample(300)
    html = write_report_html(report, features, tmp_path / "report.html")
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(html.as_uri())
    page.wait_for_function(DRAWN, timeout=30_000)
    figures = page.eval_on_selector_all(
        "div.plot[data-figure]",
        "plots => plots.map(p => [p.id, p.querySelectorAll('.main-svg').length, p.getBoundingClientRect().height])",
    )
    assert len(figures) >= 8, figures
    assert all(n_svg > 0 and height > 100 for _, n_svg, height in figures), figures
    assert page.locator("div.plot.unavailable").count() == 0
    assert page.console_errors == []
    assert all(url.startswith(("file:", "data:", "blob:")) for url in requests), requests  # nothing fetched


MARGINS = """() => [...document.querySelectorAll("div.plot[data-figure]")].map(div => {
  const margin = div._fullLayout.margin, used = div._fullLayout._size;
  return [div.id, [margin.l, margin.r, margin.t, margin.b], [used.l, used.r, used.t, used.b]];
})"""
#: figure id (without its "fig-N-" prefix) -> the sides whose room its builder reserves
#: (l, r, t, b); the others depend on the page width (e.g. a legend that wraps) and are left
#: to Plotly's automargin.
RESERVED = {
    "roc-curves": "lrtb", "roc-curves-log": "lrtb", "error-distribution": "lrtb", "grad-layer-plot": "lrtb",
    "accuracy-bars": "b",
}


def test_report_figures_are_drawn_in_one_pass(page: Any, tmp_path: Path) -> None:
    """The builders reserve room for axis labels and legends up front: a margin that Plotly has
    to widen itself (automargin) makes it draw the whole figure twice, the largest share of a
    big report's figure time (benchmarks/report_render.py)."""
    report, features = make_sample(300)
    html = write_report_html(report, features, tmp_path / "report.html")
    page.goto(html.as_uri())
    page.wait_for_function(DRAWN, timeout=30_000)
    checked, widened = set(), []
    for dom_id, reserved, used in page.evaluate(MARGINS):
        name = re.sub(r"^fig-\d+-", "", dom_id)
        for side, want, got in zip("lrtb", reserved, used):
            if side in RESERVED.get(name, ""):
                checked.add(name)
                if got != want:
                    widened.append(f"{name}: {side} {want} -> {got}")
    assert checked == set(RESERVED), checked
    assert widened == [], "margins Plotly had to widen (the figure was drawn twice): " + ", ".join(widened)
