"""Render time of a large report: the self-contained report.html of 5,000 scans in headless Chromium.

Builds a synthetic assessment with the engine's own report code (metrics, mean ROC curves,
accuracy per age bin and attribute, exposure, verdict, provenance): 5,000 scans (half members),
7 gradient-magnitude layers, 21 attacks (7 feature sets x logistic, mlp, gbt; 5 repeats of a
balanced 2,500-scan test split). Then it times
  (a) python: rendering report.html (figure builders + template), median of --repeats;
  (b) browser: opening the file in headless Chromium (Debian's, through Playwright) until every
      ``div.plot[data-figure]`` holds a drawn Plotly chart, from navigation start, median of
      --repeats, each in a fresh browser; interleaved with the same for a page holding plotly.js
      alone, the floor no figure builder can lower; and (c) the time at which the figures of the
      first screen were drawn (the report draws those first, then the rest one per task).
The last line is ``ratio_render_to_target=X ratio_first_screen_to_target=Y``: (b) and (c) over
the 2 s target (<= 1 meets it).

Usage: python benchmarks/report_render.py [--scans 5000] [--raw-roc] [--repeats 3] [--out DIR]
``--raw-roc`` stores every attack's full empirical ROC curve (one point per test scan) instead
of the engine's mean curve on its FPR grid, as a report from another tool might.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm
from sklearn.metrics import roc_curve

from worker.engine import metrics as M
from worker.engine.features.table import FeatureTable
from worker.engine.report import build_report, exposure_section, provenance
from worker.engine.verdict import evaluate

TARGET_S = 2.0
LAYERS = ("encoder.0.conv", "encoder.1.conv", "encoder.2.conv", "encoder.3.conv", "encoder.4.conv",
          "head.conv6", "head.output")
#: Paper accuracies (Gupta et al. 2021, 3D-CNN) of the seven multi-feature sets attacked here.
ACCURACY = {
    "error": 0.599, "prediction+label": 0.7645, "grad-norm": 0.726, "grad:first_conv": 0.7101,
    "grad:last_conv": 0.7696, "grad:output": 0.7665, "prediction+label+grad:last_conv+grad:output": 0.7805,
}
CLASSIFIERS = {"logistic": -0.02, "mlp": 0.0, "gbt": -0.01}
BLACK_BOX = ("error", "prediction+label")
DRAWN = """() => {
  const plots = [...document.querySelectorAll("div.plot[data-figure]")];
  if (plots.length === 0 || !plots.every(p => p.querySelector(".main-svg"))) return false;
  window.__drawnAt = window.__drawnAt || performance.now();
  return true;
}"""


def synthetic_table(n_scans: int, rng: np.random.Generator) -> FeatureTable:
    """Per-scan features of an overfitted model: members have small errors and gradients."""
    member = (np.arange(n_scans) < n_scans // 2).astype(int)
    age = rng.uniform(45, 82, n_scans).round(1)
    error = np.where(member == 1, rng.normal(0, 1.5, n_scans), rng.normal(0.4, 6.5, n_scans))
    data: dict[str, object] = {
        "scan_id": [f"sub-{i:05d}" for i in range(n_scans)], "member": member, "age": age,
        "prediction": (age + error).round(3), "error": error.round(3),
    }
    for k, layer in enumerate(LAYERS):
        shift = np.where(member == 1, -0.25 - 0.04 * k, 0.0)
        noise = rng.normal(0, np.where(member == 1, 0.3, 0.4))
        data[f"grad_norm:{layer}"] = 10 ** (-1.2 + 0.35 * k + shift + 0.45 * np.log10(np.abs(error) + 0.2) + noise)
    data["sex"] = rng.choice(["F", "M"], n_scans)
    data["site"] = rng.choice(["site-A", "site-B", "site-C", "site-D"], n_scans, p=[0.4, 0.3, 0.2, 0.1])
    return FeatureTable(table=pd.DataFrame(data), attributes=["sex", "site"])


def _outcomes(ft: FeatureTable, accuracy: float, repeats: int, rng: np.random.Generator) -> list[M.RepeatOutcome]:
    """Repeats of a balanced half/half split, scored by a binormal attack of the given accuracy."""
    y_all = ft.members
    members, nonmembers = np.flatnonzero(y_all == 1), np.flatnonzero(y_all == 0)
    half = min(members.size, nonmembers.size) // 2
    dprime = 2 * norm.ppf(accuracy)
    outcomes = []
    for seed in range(repeats):
        test = np.r_[rng.permutation(members)[:half], rng.permutation(nonmembers)[:half]]
        y = y_all[test]
        score = 1 / (1 + np.exp(-(rng.normal(0, 1, test.size) + dprime * (y - 0.5))))
        outcomes.append(M.RepeatOutcome(test, y, score, (score > 0.5).astype(int), seed))
    return outcomes


def synthetic_report(ft: FeatureTable, *, repeats: int, n_boot: int, raw_roc: bool, seed: int) -> dict:
    """A report.json document built by the engine's own report functions."""
    rng = np.random.default_rng(seed)
    attacks, exposures = [], {}
    for fs, accuracy in ACCURACY.items():
        for clf, offset in CLASSIFIERS.items():
            outcomes = _outcomes(ft, accuracy + offset, repeats, rng)
            rows = np.concatenate([o.test for o in outcomes])
            correct = np.concatenate([o.correct for o in outcomes])
            if raw_roc:
                fpr, tpr, _ = roc_curve(outcomes[0].y, outcomes[0].score, drop_intermediate=False)
                roc = {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
            else:
                roc = M.mean_roc(outcomes)
            name = f"{fs}/{clf}"
            attacks.append({
                "name": name, "feature_set": fs, "threat_model": "black-box" if fs in BLACK_BOX else "white-box",
                "classifier": clf, "status": "ok", "error": None, "n_features": 1,
                "n_train": int(ft.table.shape[0] // 2), "n_test": int(outcomes[0].test.size), "repeats": repeats,
                "metrics": M.attack_metrics(outcomes, n_boot=n_boot), "roc": roc,
                "by_age_bin": M.accuracy_by_age_bin(ft.table["age"].to_numpy()[rows], correct, ft.members[rows]),
                "by_attribute": M.accuracy_by_attribute(ft.table, ft.attributes, rows, correct),
                "duration_s": 1.0,
            })
            exposures[name] = M.exposure(ft.table["scan_id"].tolist(), ft.members, outcomes)
    utility = M.utility(ft)
    verdict = evaluate(attacks, utility=utility)
    prov = provenance(
        model={"path": "brain_age_3d.safetensors", "sha256": "0" * 64, "format": "safetensors",
               "architecture": "brain_age_3d"},
        manifest={"path": "manifest.csv", "sha256": "1" * 64, "n_scans": len(ft.table),
                  "n_members": int(ft.members.sum()), "n_nonmembers": int((ft.members == 0).sum())},
        settings={"repeats": repeats, "feature_sets": list(ACCURACY), "classifiers": list(CLASSIFIERS)},
        started=datetime.now(timezone.utc), duration_s=0.0,
    )
    return build_report(
        provenance=prov, utility=utility, attacks=attacks,
        exposure=exposure_section(ft, exposures, verdict.get("strongest_attack")), verdict=verdict,
    )


def time_python(report: dict, table: pd.DataFrame, repeats: int) -> tuple[float, str]:
    """Median seconds to render report.html, and the HTML."""
    from frontend.report_html import render_report_html

    times, html = [], ""
    for _ in range(repeats):
        started = time.perf_counter()
        html = render_report_html(report, table)
        times.append(time.perf_counter() - started)
    return statistics.median(times), html


def time_browser(path: Path, floor_path: Path, repeats: int) -> tuple[list[float], list[float], list[float], int]:
    """Seconds from navigation start until every figure is drawn, per repeat, each in a fresh
    browser (nothing cached); the same for the plotly.js-only page; the seconds until the first
    screen's figures were drawn (the report draws those first); the number of figures."""
    from playwright.sync_api import sync_playwright

    from backend.settings import Settings
    from frontend.pdf import CHROMIUM_FLAGS, resolve_chromium

    chromium = resolve_chromium(Settings().chromium_path)
    times: dict[Path, list[float]] = {path: [], floor_path: []}
    first_screen: list[float] = []
    n_plots = 0
    with sync_playwright() as playwright:
        for _ in range(repeats):
            for page_path in times:  # interleaved, so both see the same machine load
                browser = playwright.chromium.launch(executable_path=chromium, args=list(CHROMIUM_FLAGS))
                try:
                    page = browser.new_page(viewport={"width": 1280, "height": 900})
                    errors: list[str] = []
                    page.on("pageerror", lambda error: errors.append(str(error)))
                    page.goto(page_path.as_uri(), wait_until="commit")
                    page.wait_for_function(DRAWN, polling="raf", timeout=120_000)
                    times[page_path].append(page.evaluate("window.__drawnAt") / 1000)
                    if page_path == path:
                        n_plots = page.locator("div.plot[data-figure]").count()
                        first_screen.append(float(page.evaluate(
                            "document.documentElement.getAttribute('data-first-screen-ms')")) / 1000)
                    if errors:
                        raise RuntimeError(f"page errors in {page_path.name}: {errors}")
                finally:
                    browser.close()
    return times[path], times[floor_path], first_screen, n_plots


def write_floor_page(path: Path) -> Path:
    """A page with plotly.js alone and one empty figure: what no figure builder can save."""
    from plotly.offline import get_plotlyjs

    path.write_text(
        "<!DOCTYPE html><html><body><div class='plot' data-figure='f'></div><script>" + get_plotlyjs()
        + "</script><script>Plotly.newPlot(document.querySelector('.plot'), [], {});</script></body></html>",
        encoding="utf-8",
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scans", type=int, default=5000)
    parser.add_argument("--attack-repeats", type=int, default=5, help="repeated attack splits in the report")
    parser.add_argument("--n-boot", type=int, default=20, help="bootstrap resamples for the CIs (engine: 200)")
    parser.add_argument("--raw-roc", action="store_true", help="full empirical ROC curves (one point per test scan)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (medians are reported)")
    parser.add_argument("--out", type=Path, default=None, help="folder for report.html (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    started = time.perf_counter()
    ft = synthetic_table(args.scans, np.random.default_rng(args.seed))
    report = synthetic_report(ft, repeats=args.attack_repeats, n_boot=args.n_boot, raw_roc=args.raw_roc,
                              seed=args.seed)
    roc_points = sum(len(a["roc"]["fpr"]) for a in report["attacks"]) // len(report["attacks"])
    print(f"synthetic assessment: {args.scans} scans, {len(LAYERS)} layers, {len(report['attacks'])} attacks, "
          f"{roc_points} ROC points per attack ({time.perf_counter() - started:.1f} s to build)")

    python_s, html = time_python(report, ft.table, args.repeats)
    out = args.out or Path(tempfile.mkdtemp(prefix="brainmia-render-"))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.html"
    path.write_text(html, encoding="utf-8")
    print(f"python: report.html rendered in {python_s:.3f} s (median of {args.repeats}); "
          f"{len(html.encode()) / 1e6:.2f} MB, {path}")

    times, floor, first, n_plots = time_browser(path, write_floor_page(out / "plotly-only.html"), args.repeats)
    render_s, floor_s, first_s = statistics.median(times), statistics.median(floor), statistics.median(first)
    print(f"browser: {n_plots} figures drawn in {render_s:.3f} s from navigation start (median of "
          f"{args.repeats}: {', '.join(f'{t:.3f}' for t in times)}); target {TARGET_S:.1f} s")
    print(f"browser: plotly.js alone (load, parse, one empty plot) {floor_s:.3f} s (median of "
          f"{args.repeats}: {', '.join(f'{t:.3f}' for t in floor)}): the report's own share is "
          f"{render_s - floor_s:.3f} s")
    print(f"browser: the first screen's figures (drawn before the others) in {first_s:.3f} s (median of "
          f"{args.repeats}: {', '.join(f'{t:.3f}' for t in first)})")
    print(f"ratio_render_to_target={render_s / TARGET_S:.3f} ratio_first_screen_to_target={first_s / TARGET_S:.3f}")


if __name__ == "__main__":
    main()
