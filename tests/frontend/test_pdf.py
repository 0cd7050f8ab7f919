"""The PDF export: the real report.html printed by the real headless Chromium, read back with pypdf."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from backend.settings import Settings
from frontend.pdf import ChromiumNotFound, PdfExportError, html_to_pdf
from frontend.report_html import write_report_html
from tests.conftest import require
from tests.frontend.sample_report import make_sample

A4_POINTS = (595.3, 841.9)


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium the product prints with (``BRAINMIA_CHROMIUM``, else chromium on PATH)."""
    path = Settings().chromium_path
    require(path is not None, "no chromium (Debian: apt-get install chromium; scripts/setup.sh installs it)")
    return str(path)


def _pages(pdf: Path) -> list[str]:
    from pypdf import PdfReader

    return [page.extract_text() for page in PdfReader(pdf).pages]


@pytest.fixture(scope="module")
def printed(tmp_path_factory: pytest.TempPathFactory, chromium: str) -> tuple[dict, Path]:
    """A 400-scan white-box report, written as report.html and printed to report.pdf."""
    report, features = make_sample(400)
    folder = tmp_path_factory.mktemp("pdf")
    html = write_report_html(report, features, folder / "report.html")
    return report, html_to_pdf(html, folder / "report.pdf", chromium=chromium)


def test_first_page_holds_the_verdict(printed: tuple[dict, Path]) -> None:
    report, pdf = printed
    first = " ".join(_pages(pdf)[0].split())
    assert "Verdict: High risk" in first and "Failed the policy" in first, first[:400]
    summary = " ".join(report["verdict"]["summary"].split())
    assert summary[:60] in first
    assert "Strongest attack AUC" in first  # the at-a-glance cards belong to the verdict


def test_a4_pages_with_figures_drawn_and_provenance(printed: tuple[dict, Path]) -> None:
    from pypdf import PdfReader

    report, pdf = printed
    reader = PdfReader(pdf)
    assert len(reader.pages) > 3
    box = reader.pages[0].mediabox
    assert abs(float(box.width) - A4_POINTS[0]) < 2 and abs(float(box.height) - A4_POINTS[1]) < 2
    text = "\n".join(_pages(pdf))
    flat = re.sub(r"\s+", "", text)
    # drawn by Plotly (the strings exist only in the figures' JSON, not in the page's HTML)
    assert "Chance (random guessing)" in text
    assert "False positive rate: share of non-members" in text
    # provenance: the fingerprints, version and time
    assert "Provenance" in text
    prov = report["provenance"]
    assert prov["model"]["sha256"] in flat and prov["manifest"]["sha256"] in flat
    assert prov["created_at"] in text
    # closed <details> (the policy) print open; navigation does not print
    assert "Policy used for the verdict" in text and "tpr_at_1pct_fpr_high" in text
    assert "Skip to the report" not in text


def test_black_box_report_also_starts_with_its_verdict(tmp_path: Path, chromium: str) -> None:
    report, features = make_sample(120, white_box=False, errored=False, malicious=True)
    html = write_report_html(report, features, tmp_path / "report.html")
    pdf = html_to_pdf(html, tmp_path / "out" / "report.pdf", chromium=chromium)
    first = " ".join(_pages(pdf)[0].split())
    assert "Verdict:" in first and report["verdict"]["strongest_attack"] in first
    assert [p.name for p in pdf.parent.iterdir()] == ["report.pdf"]  # no temporary file left


def test_missing_chromium_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report, features = make_sample(60)
    html = write_report_html(report, features, tmp_path / "report.html")
    with pytest.raises(ChromiumNotFound, match="no-such-chromium"):
        html_to_pdf(html, tmp_path / "a.pdf", chromium=str(tmp_path / "no-such-chromium"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(ChromiumNotFound, match="chromium, chromium-browser, google-chrome"):
        html_to_pdf(html, tmp_path / "b.pdf")
    assert not list(tmp_path.glob("*.pdf"))


def test_a_failing_or_slow_chromium_leaves_no_pdf(tmp_path: Path, chromium: str) -> None:
    report, features = make_sample(60)
    html = write_report_html(report, features, tmp_path / "report.html")
    with pytest.raises(PdfExportError, match="exit 1"):
        html_to_pdf(html, tmp_path / "a.pdf", chromium="/bin/false")
    with pytest.raises(PdfExportError, match="within 0.2 s"):
        html_to_pdf(html, tmp_path / "b.pdf", chromium=chromium, timeout_s=0.2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_missing_report_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no report to print"):
        html_to_pdf(tmp_path / "nope.html", tmp_path / "x.pdf", chromium=os.devnull)
