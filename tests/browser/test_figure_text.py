"""User strings in figures as real Plotly draws them: shown as typed, never as markup."""

from __future__ import annotations

import copy
import json
from typing import Any

from backend.web.router import _plotly_js_path
from frontend.figures import build_figure
from tests.frontend.sample_report import make_sample

VALUES = ['site "A"', "O'Brien & co", "<img src=x onerror=window.pwned=1>"]


def test_subgroup_values_are_drawn_as_typed(page: Any) -> None:
    report, features = make_sample(200)
    strongest = next(a for a in report["attacks"] if a["name"] == report["verdict"]["strongest_attack"])
    strongest = copy.deepcopy(strongest)
    strongest["by_attribute"] = {"site": [{"value": v, "accuracy": 0.6, "n": 4, "n_members": 2} for v in VALUES]}
    report = dict(report, attacks=[strongest], verdict=dict(report["verdict"], strongest_attack=strongest["name"]))
    fig = json.loads(build_figure("accuracy_by_attribute", report, features).to_json())
    page.set_content('<div id="fig" style="width:900px;height:500px"></div>')
    page.add_script_tag(path=str(_plotly_js_path()))
    page.evaluate("fig => Plotly.newPlot('fig', fig.data, fig.layout)", fig)
    ticks = page.eval_on_selector_all("#fig .xtick text", "els => els.map(e => e.textContent)")
    assert ticks == VALUES
    assert page.locator("#fig img").count() == 0 and page.evaluate("window.pwned") is None
    assert not page.console_errors
