"""The exported HTML report: self-contained, complete, escaped, and small enough."""

from __future__ import annotations

import copy
import json
import re
import time
from html.parser import HTMLParser

import pytest
from plotly.offline import get_plotlyjs

from frontend.report_html import render_report_html, template_env, write_report_html
from tests.frontend.sample_report import (
    ERROR_MESSAGE,
    FEATURE_SETS,
    MALICIOUS_ID,
    MALICIOUS_SITE,
    make_sample,
)

SECTIONS = ("verdict", "findings", "accuracy", "auc", "error", "gradients", "roc", "subgroups",
            "utility", "exposure", "provenance")


class _Collector(HTMLParser):
    """Tags with their attributes, the ids, and the text of <script type=application/json>."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.ids: set[str] = set()
        self.json_blocks: list[str] = []
        self.text: list[str] = []
        self._in_json = False
        self._skip = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "script":
            self._in_json = attrs.get("type") == "application/json"
            self._skip = True
        if tag == "style":
            self._skip = True

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._in_json = False
            self._skip = False

    def handle_data(self, data):
        if self._in_json:
            self.json_blocks.append(data)
        elif not self._skip:
            self.text.append(data)


def _parse(html: str) -> _Collector:
    parser = _Collector()
    parser.feed(html)
    return parser


@pytest.fixture(scope="module")
def sample():
    return make_sample(400)


@pytest.fixture(scope="module")
def html(sample):
    return render_report_html(*sample)


@pytest.fixture(scope="module")
def parsed(html):
    return _parse(html)


def _text(parsed: _Collector) -> str:
    return re.sub(r"\s+", " ", " ".join(parsed.text))


def test_self_contained(html, parsed):
    plotly_js = get_plotlyjs()
    assert html.count(plotly_js) == 1
    assert html.count("plotly.js v") == 1  # the bundle's banner: inlined once
    for tag, attrs in parsed.tags:
        assert "src" not in attrs, f"<{tag} src=...> would load a resource"
        href = attrs.get("href")
        if href is not None:
            assert href.startswith("#"), f"<{tag} href={href!r}> points outside the file"
        assert tag not in ("link", "iframe", "img", "object", "embed"), tag
    # No CSS imports or url() fetches either.
    for style in re.findall(r"<style>(.*?)</style>", html, flags=re.S):
        assert "@import" not in style and "url(" not in style


def test_every_figure_is_embedded_and_valid_json(parsed):
    figures = [json.loads(b) for b in parsed.json_blocks]
    plots = [json.loads(b) for b in parsed.json_blocks if b.strip().startswith('{"data"')]
    assert len(plots) >= 9
    assert all(p["data"] for p in plots)
    assert any("displaylogo" in f for f in figures)  # the plotly config block
    plot_divs = [a for t, a in parsed.tags if t == "div" and "data-figure" in a]
    layer_options = [a["value"] + "-data" for t, a in parsed.tags if t == "option" and "data-title" in a]
    # every figure is drawn in a div, or is a layer the selector swaps into the layer plot
    assert {a["data-figure"] for a in plot_divs} | set(layer_options) == {
        i for i in parsed.ids if i.startswith("fig-") and i.endswith("-data")}
    for attrs in plot_divs:
        assert attrs["data-figure"] in parsed.ids
        assert attrs.get("role") == "img" and attrs.get("aria-label")


def test_layer_selector_offers_every_layer(sample, parsed):
    _, features = sample
    layers = [c for c in features.columns if c.startswith("grad_norm:")]
    options = [a for t, a in parsed.tags if t == "option" and "data-title" in a]
    assert len(layers) > 1 and len(options) == len(layers)
    assert sum("selected" in a for a in options) == 1
    select = next(a for t, a in parsed.tags if t == "select")
    assert select["id"] in {a.get("for") for t, a in parsed.tags if t == "label"}  # labelled control
    for attrs in options:
        assert attrs["value"] + "-data" in parsed.ids


def test_contains_verdict_and_sections(sample, html, parsed):
    report, _ = sample
    text = _text(parsed)
    verdict = report["verdict"]
    assert verdict["summary"] in text
    assert "High risk" in text and "FAILED" in text
    assert "Someone who can only query the model (black-box): High risk" in text
    assert "assessment is incomplete" in text
    for finding in verdict["findings"]:
        assert finding["message"] in text
        assert finding["recommendation"] in text
    for section in SECTIONS:
        assert section in parsed.ids, section
        assert f'aria-labelledby="{section}-h"' in html
    assert report["provenance"]["model"]["sha256"] in text
    assert report["provenance"]["manifest"]["sha256"] in text
    assert "0.1.0" in text and "2026-11-22T18:00:00+00:00" in text


def test_accuracy_table_in_paper_order(sample, html):
    table = html[html.index('<table class="acc">'):]
    table = table[: table.index("</table>")]
    positions = [table.index(f"<code>{fs.replace('+', '+<wbr>')}</code>") for fs in FEATURE_SETS]
    assert positions == sorted(positions)
    attack = next(a for a in sample[0]["attacks"] if a["status"] == "ok")
    acc = attack["metrics"]["accuracy"]
    assert f"{100 * acc['mean']:.2f} ± {100 * acc['std']:.2f}" in table
    assert f"95% CI {100 * acc['ci_low']:.1f}–{100 * acc['ci_high']:.1f}" in table
    assert "white-box" in table and "black-box" in table


def test_errored_attack_is_shown(html):
    escaped = ERROR_MESSAGE.replace("'", "&#39;")
    assert html.count(escaped) >= 2  # accuracy table and AUC table
    assert "attack failed" in html
    assert "1 attack failed to run" in html


def test_auc_and_tpr_table(sample, html):
    attack = next(a for a in sample[0]["attacks"] if a["status"] == "ok")
    auc = attack["metrics"]["auc"]
    assert f"{auc['mean']:.3f} ± {auc['std']:.3f}" in html
    tpr = attack["metrics"]["tpr_at_fpr_0.01"]
    assert f"{100 * tpr['mean']:.2f} ± {100 * tpr['std']:.2f}" in html
    assert "TPR at 0.1% FPR" in html and "TPR at 1% FPR" in html


def test_exposure_top_20_members(sample, html):
    report, _ = sample
    table = html[html.index('<table class="exposure">'):]
    table = table[: table.index("</table>")]
    members = [s for s in report["exposure"]["scans"] if s["member"] == 1]
    top = sorted(members, key=lambda s: s["score"], reverse=True)
    for s in top[:20]:
        assert f"<code>{s['scan_id']}</code>" in table
    assert f"<code>{top[20]['scan_id']}</code>" not in table
    nonmembers = [s for s in report["exposure"]["scans"] if s["member"] == 0]
    best_nonmember = max(nonmembers, key=lambda s: s["score"])
    assert f"<code>{best_nonmember['scan_id']}</code>" not in table


def test_escapes_user_strings():
    report, features = make_sample(400, malicious=True)
    html = render_report_html(report, features)
    assert MALICIOUS_ID not in html
    assert MALICIOUS_SITE not in html
    assert "<b>evil</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown, as text
    parsed = _parse(html)
    scripts = [a for t, a in parsed.tags if t == "script"]
    # Only our own scripts: plotly.js, the init script, and JSON data blocks.
    assert all(a.get("type") in (None, "application/json") for a in scripts)
    assert sum(1 for a in scripts if a.get("type") is None) == 2
    for block in parsed.json_blocks:
        json.loads(block)


def test_black_box_only():
    report, features = make_sample(400, white_box=False)
    html = render_report_html(report, features)
    text = _text(_parse(html))
    assert "not available (black-box assessment)" in text.lower()
    assert "Prediction error" in text


def test_without_features_table():
    report, _ = make_sample(400, white_box=False)
    html = render_report_html(report, None)
    text = _text(_parse(html)).lower()
    assert "not available (black-box assessment)" in text
    assert "per-scan feature table was not provided" in text
    white, _ = make_sample(400)
    text = _text(_parse(render_report_html(white, None))).lower()
    assert "not available" in text


def test_sparse_report_still_renders():
    """Missing parts and null metrics give 'n/a' and messages, never an exception."""
    report, _ = make_sample(400)
    sparse = copy.deepcopy(report)
    sparse["attacks"][1]["metrics"]["auc"] = {"mean": None, "std": None, "ci_low": None,
                                              "ci_high": None, "values": []}
    for key in ("utility", "exposure"):
        sparse.pop(key)
    sparse["verdict"] = {"level": "low", "passed": True, "strongest_attack": None,
                         "summary": "Low risk.", "findings": [], "policy": {}}
    html = render_report_html(sparse, None)
    text = _text(_parse(html))
    assert "Low risk" in text and "PASSED" in text
    assert "n/a" in text
    assert "No per-scan exposure scores" in text
    html = render_report_html({"schema_version": "1.0"}, None)
    assert "No attacks in this report" in html


def test_inconclusive_level_renders(sample):
    """DESIGN.md's ``inconclusive`` level has its own text and colour, in the report and the badge."""
    report = copy.deepcopy(sample[0])
    report["verdict"]["level"] = "inconclusive"
    report["verdict"]["levels_by_threat_model"] = {"black-box": "inconclusive", "white-box": "low"}
    html = render_report_html(report, sample[1])
    parsed = _parse(html)
    text = _text(parsed)
    assert "Verdict: Inconclusive" in text and "Risk level unknown" not in text
    assert "Someone who can only query the model (black-box): Inconclusive" in text
    assert "verdict verdict-inconclusive" in html and 'class="pill pill-inconclusive"' in html
    assert ".verdict-inconclusive" in html and ".pill-inconclusive" in html  # styled, not the unknown grey
    badge = str(template_env().get_template("pages/_parts.html.j2").module.verdict_badge("inconclusive", False))
    assert 'class="pill pill-inconclusive">Inconclusive<' in badge and "failed" in badge
    low = str(template_env().get_template("pages/_parts.html.j2").module.verdict_badge("low", True))
    assert 'class="pill pill-low">Low risk<' in low


def test_large_cohort_size_and_time(tmp_path):
    report, features = make_sample(5000)
    start = time.perf_counter()
    path = write_report_html(report, features, tmp_path / "report.html")
    elapsed = time.perf_counter() - start
    size = path.stat().st_size
    small = len(render_report_html(*make_sample(400)).encode())
    plotly_size = len(get_plotlyjs().encode())
    print(f"\n5000 scans: {size / 1e6:.2f} MB in {elapsed:.2f} s "
          f"(400 scans: {small / 1e6:.2f} MB; plotly.js alone {plotly_size / 1e6:.2f} MB)")
    assert elapsed < 20
    # Pre-binned histograms: the report grows little with the number of scans.
    assert size - plotly_size < 1_000_000
    assert size - small < 200_000


def test_renders_a_report_from_the_engine(tmp_path):
    """The report the engine really produces (attacks, verdict, exposure) renders completely."""
    import numpy as np

    attacks_mod = pytest.importorskip("worker.engine.attacks")
    metrics = pytest.importorskip("worker.engine.metrics")
    verdict_mod = pytest.importorskip("worker.engine.verdict")
    report_mod = pytest.importorskip("worker.engine.report")
    from datetime import datetime, timezone

    from tests.frontend.sample_report import make_features
    from worker.engine.features.table import FeatureTable

    table = make_features(200, seed=3, malicious=True)
    rng = np.random.default_rng(0)
    ft = FeatureTable(
        table=table,
        arrays={"activation": rng.normal(size=(200, 8))},
        layer_aliases={"first_conv": "encoder.0.conv", "last_conv": "head.conv6",
                       "output": "head.output"},
        attributes=["sex", "site"],
    )
    specs = attacks_mod.default_attack_specs(ft, ["threshold", "logistic"])
    run = attacks_mod.run_attacks(ft, specs, repeats=2, n_boot=10)
    utility = metrics.utility(ft)
    verdict = verdict_mod.evaluate(run.attacks, utility=utility)
    report = report_mod.build_report(
        provenance=report_mod.provenance(
            model={"path": "model.pt", "sha256": "ab" * 32, "format": "torchscript",
                   "architecture": None, "metadata": {}},
            manifest={"path": "manifest.csv", "sha256": "cd" * 32, "n_scans": 200,
                      "n_members": 100, "n_nonmembers": 100},
            settings={"repeats": 2}, started=datetime.now(timezone.utc), duration_s=1.0),
        utility=utility,
        attacks=run.attacks,
        exposure=report_mod.exposure_section(ft, run.exposure, verdict.get("strongest_attack")),
        verdict=verdict,
    )
    report = json.loads(json.dumps(report))  # as read back from report.json
    html = write_report_html(report, ft.table, tmp_path / "report.html").read_text()
    parsed = _parse(html)
    text = _text(parsed)
    assert verdict["summary"] in text
    assert MALICIOUS_ID not in html
    assert all(s in parsed.ids for s in SECTIONS)
    plots = [b for b in parsed.json_blocks if b.strip().startswith('{"data"')]
    assert len(plots) >= 9
    assert "could not be drawn" not in text
