"""Figure builders: every figure builds, is labelled, and colours members consistently."""

from __future__ import annotations

import copy
import json

import numpy as np
import plotly.graph_objects as go
import pytest

from frontend.figures import (
    BLACK_BOX_COLOR,
    FIGURE_INFO,
    FIGURES,
    MEMBER_COLOR,
    MEMBER_GROUP,
    NONMEMBER_COLOR,
    NONMEMBER_GROUP,
    WHITE_BOX_COLOR,
    FigureUnavailable,
    UnknownFigure,
    build_figure,
    figure_options,
    register_figure,
)
from tests.frontend.sample_report import ERRORED, MALICIOUS_ID, MALICIOUS_SITE, make_sample
from worker.engine.report_model import Report, ranked_attacks

EXPECTED = {
    "error_distribution",
    "grad_norm_distribution",
    "grad_norm_layers",
    "roc_curves",
    "roc_curves_log",
    "accuracy_by_age",
    "accuracy_by_attribute",
    "accuracy_bars",
    "utility",
    "exposure",
}
NEEDS_WHITE_BOX = {"grad_norm_distribution", "grad_norm_layers"}
MEMBER_FIGURES = {"error_distribution", "grad_norm_distribution", "grad_norm_layers", "utility",
                  "exposure"}


@pytest.fixture(scope="module")
def sample():
    return make_sample(400)


@pytest.fixture(scope="module")
def black_box():
    return make_sample(400, white_box=False)


def _axis_titles(fig: go.Figure) -> tuple[list[str], list[str]]:
    layout = fig.to_plotly_json()["layout"]
    xs = [v.get("title", {}).get("text") for k, v in layout.items() if k.startswith("xaxis")]
    ys = [v.get("title", {}).get("text") for k, v in layout.items() if k.startswith("yaxis")]
    return [t for t in xs if t], [t for t in ys if t]


def _trace_color(trace) -> str | None:
    for path in ("line.color", "marker.color", "fillcolor"):
        obj = trace
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, str):
            return obj
    return None


def test_registry_has_every_figure_with_caption():
    assert EXPECTED <= set(FIGURES)
    for name in EXPECTED:
        info = FIGURE_INFO[name]
        assert info.title and len(info.caption) > 80, name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builds_from_sample(sample, name):
    report, features = sample
    fig = build_figure(name, report, features)
    assert isinstance(fig, go.Figure)
    assert len(fig.data) > 0
    xs, ys = _axis_titles(fig)
    assert xs and ys, f"{name}: missing axis titles"
    assert fig.layout.title.text
    # Serialisable for the /figures/{name} endpoint.
    json.loads(fig.to_json())


@pytest.mark.parametrize("name", sorted(EXPECTED - NEEDS_WHITE_BOX))
def test_builds_from_black_box_sample(black_box, name):
    report, features = black_box
    fig = build_figure(name, report, features)
    assert len(fig.data) > 0
    xs, ys = _axis_titles(fig)
    assert xs and ys


@pytest.mark.parametrize("name", sorted(NEEDS_WHITE_BOX))
def test_gradient_figures_unavailable_for_black_box(black_box, name):
    report, features = black_box
    with pytest.raises(FigureUnavailable, match="black-box"):
        build_figure(name, report, features)
    placeholder = build_figure(name, report, features, on_unavailable="placeholder")
    assert isinstance(placeholder, go.Figure)
    assert "black-box" in placeholder.layout.annotations[0].text


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_without_features_builds_or_says_unavailable(sample, name):
    report, _ = sample
    if FIGURE_INFO[name].needs_features or name.startswith("federated_"):  # the sample is centralised
        with pytest.raises(FigureUnavailable):
            build_figure(name, report, None)
    else:
        assert len(build_figure(name, report, None).data) > 0


@pytest.mark.parametrize("name", sorted(MEMBER_FIGURES))
def test_member_colours_are_consistent(sample, name):
    report, features = sample
    fig = build_figure(name, report, features)
    groups = {MEMBER_GROUP: MEMBER_COLOR, NONMEMBER_GROUP: NONMEMBER_COLOR}
    seen = set()
    for trace in fig.data:
        if trace.legendgroup in groups:
            seen.add(trace.legendgroup)
            assert _trace_color(trace) == groups[trace.legendgroup], (name, trace.name)
    assert MEMBER_GROUP in seen, name
    if name != "exposure":  # the exposure figure lists members only by default
        assert NONMEMBER_GROUP in seen, name


def test_builders_are_pure(sample):
    report, features = sample
    report_before = copy.deepcopy(report)
    features_before = features.copy()
    for name in FIGURES:
        build_figure(name, report, features, on_unavailable="placeholder")
    assert report == report_before
    assert features.equals(features_before)


def test_unknown_figure_lists_names(sample):
    report, features = sample
    with pytest.raises(KeyError) as info:
        build_figure("no_such_figure", report, features)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, UnknownFigure)
    for name in EXPECTED:
        assert name in str(info.value)


def test_bad_option_lists_options(sample):
    report, features = sample
    with pytest.raises(TypeError, match="log"):
        build_figure("roc_curves", report, features, bogus=True)
    assert figure_options("grad_norm_distribution") == {"layer": None}


def test_string_options_are_coerced(sample):
    report, features = sample
    assert build_figure("roc_curves", report, features, log="true").layout.xaxis.type == "log"
    assert build_figure("roc_curves", report, features, log="false").layout.xaxis.type != "log"
    fig = build_figure("exposure", report, features, top_n="5")
    assert sum(len(t.y) for t in fig.data) == 5


def test_register_figure_adds_to_registry():
    @register_figure("_test_only", title="Test", caption="test")
    def _builder(report, features=None):
        return go.Figure(go.Scatter(x=[0], y=[0]))

    try:
        assert build_figure("_test_only", {}, None).data
    finally:
        FIGURES.pop("_test_only")
        FIGURE_INFO.pop("_test_only")


# ------------------------------------------------------------------ figure-specific checks


def test_error_distribution_is_prebinned_density(sample):
    report, features = sample
    fig = build_figure("error_distribution", report, features)
    densities = [t for t in fig.data if t.type == "scatter" and t.fill == "tozeroy"]
    assert len(densities) == 2
    for trace in densities:
        x, y = np.asarray(trace.x, float), np.asarray(trace.y, float)
        assert len(x) <= 61  # pre-binned: bounded whatever the number of scans
        area = float(np.sum(np.diff(x) * y[:-1]))
        assert area == pytest.approx(1.0, rel=1e-3)
    assert "years" in fig.layout.xaxis2.title.text


def test_error_distribution_size_independent_of_scans():
    small = build_figure("error_distribution", *make_sample(400))
    large = build_figure("error_distribution", *make_sample(5000))
    assert len(large.to_json()) < 2 * len(small.to_json())


def test_grad_norm_distribution_layer_and_log_axis(sample):
    report, features = sample
    fig = build_figure("grad_norm_distribution", report, features, layer="head.output")
    assert fig.layout.xaxis2.type == "log"
    assert "head.output" in fig.layout.title.text
    same = build_figure("grad_norm_distribution", report, features, layer="grad_norm:head.output")
    assert same.layout.title.text == fig.layout.title.text
    with pytest.raises(FigureUnavailable, match="available"):
        build_figure("grad_norm_distribution", report, features, layer="nope")


def test_grad_norm_layers_one_panel_per_layer(sample):
    report, features = sample
    layers = [c for c in features.columns if c.startswith("grad_norm:")]
    fig = build_figure("grad_norm_layers", report, features)
    assert len(fig.data) == 2 * len(layers)
    assert all(fig.layout[k].type == "log" for k in fig.layout if k.startswith("xaxis")
               and fig.layout[k].anchor)
    # One legend entry per group, not one per panel.
    assert sum(1 for t in fig.data if t.showlegend is not False) == 2


def test_roc_strongest_first_skips_errored(sample):
    """Legend in the verdict's ranking (AUC lower bound first), the verdict's strongest on top."""
    report, features = sample
    fig = build_figure("roc_curves", report, features)
    curves = [t for t in fig.data if t.name and "AUC" in t.name and "Chance" not in t.name]
    ok = [a for a in report["attacks"] if a["status"] == "ok"]
    assert len(curves) == len(ok)
    ranked = ranked_attacks(report)
    def label(a: dict) -> str:  # the family and the access beside every attack
        what = f"{a['feature_set']} · {a['classifier']}" if a.get("family", "classifier") == "classifier" else a["name"]
        return f"{what} ({a.get('family', 'classifier')}, {a['threat_model']})"

    assert [t.name.replace("<br>", " ").rsplit(",", 1)[0] for t in curves] == [label(a) for a in ranked]
    assert {a.get("family", "classifier") for a in ranked} == {"classifier", "reference", "quantile"}
    assert ranked[0]["name"] == report["verdict"]["strongest_attack"]
    assert curves[0].line.width == 3  # the strongest stands out
    errored = "/".join(ERRORED).replace("/", " · ")
    assert not any(errored in t.name for t in fig.data)
    chance = [t for t in fig.data if t.name and "Chance" in t.name]
    assert len(chance) == 1 and list(chance[0].x) == list(chance[0].y)
    # One curve per feature set visible by default; the others one click away.
    visible = [t for t in curves if t.visible is not False and t.visible != "legendonly"]
    assert len(visible) == len({(a.get("family", "classifier"), a["feature_set"]) for a in ok})
    assert len(build_figure("roc_curves", report, features, show="all").data) == len(curves) + 1


def test_roc_log_axes_and_low_fpr_markers(sample):
    report, features = sample
    fig = build_figure("roc_curves_log", report, features)
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    assert fig.layout.xaxis.range[0] <= -3 and fig.layout.yaxis.range[0] <= -3
    markers = {t.name.removesuffix(" at 0.1% / 1% FPR"): t for t in fig.data if t.mode == "markers"}
    assert markers
    # a dot where the entry has the TPR; none where it is undefined (too few non-members tested)
    curves = [t for t in fig.data if t.mode == "lines" and "Chance" not in t.name]
    for attack, curve in zip(ranked_attacks(report), curves):
        label = curve.name.replace("<br>", " ").rsplit(",", 1)[0]
        want = [f for f, key in ((0.001, "tpr_at_fpr_0.001"), (0.01, "tpr_at_fpr_0.01"))
                if attack["metrics"][key]["mean"] is not None]
        assert (sorted(markers[label].x) if label in markers else []) == want, label
    assert any(sorted(t.x) == [0.01] for t in markers.values())  # the 200 non-members of the sample
    texts = [a.text for a in fig.layout.annotations]
    assert "0.1% FPR" in texts and "1% FPR" in texts


def test_roc_unavailable_when_every_attack_failed(sample):
    report, features = sample
    broken = copy.deepcopy(report)
    for a in broken["attacks"]:
        a.update(status="error", error="boom", metrics={}, roc=None)
    with pytest.raises(FigureUnavailable):
        build_figure("roc_curves", broken, features)
    # The accuracy chart still shows the failures.
    fig = build_figure("accuracy_bars", broken, features)
    assert any("failed" in (t.name or "") for t in fig.data)


def test_accuracy_by_age_has_n_and_chance_line(sample):
    report, features = sample
    fig = build_figure("accuracy_by_age", report, features)
    line = [t for t in fig.data if t.type == "scatter"][0]
    assert "n = " in line.hovertemplate
    assert any(s.y0 == 50 and s.y1 == 50 for s in fig.layout.shapes)
    several = build_figure("accuracy_by_age", report, features, attacks="all")
    assert len([t for t in several.data if t.type == "scatter"]) > 1


def test_accuracy_by_attribute_one_panel_per_attribute(sample):
    report, features = sample
    fig = build_figure("accuracy_by_attribute", report, features)
    xs, _ = _axis_titles(fig)
    assert {"sex", "site"} <= set(xs)
    only_sex = build_figure("accuracy_by_attribute", report, features, attribute="sex")
    assert len(only_sex.data) == 1


def test_accuracy_bars_threat_models_and_failures(sample):
    report, features = sample
    fig = build_figure("accuracy_bars", report, features)
    bars = [t for t in fig.data if t.type == "bar"]
    colours = {t.legendgroup: t.marker.color for t in bars}
    assert colours == {"black-box": BLACK_BOX_COLOR, "white-box": WHITE_BOX_COLOR}
    assert all(t.error_y.array is not None for t in bars)
    failed = [t for t in fig.data if t.type == "scatter" and "failed" in t.name]
    assert len(failed) == 1 and "NaN" in failed[0].hovertext[0]
    assert any(s.y0 == 50 for s in fig.layout.shapes)
    # Bars are drawn from the chance level.
    assert all(b == 50 for t in bars for b in np.atleast_1d(t.base))


def test_utility_bars(sample):
    report, features = sample
    fig = build_figure("utility", report, features)
    values = {t.legendgroup: t.y[0] for t in fig.data}
    assert values[MEMBER_GROUP] == pytest.approx(report["utility"]["mae_members"])
    assert values[NONMEMBER_GROUP] == pytest.approx(report["utility"]["mae_nonmembers"])
    assert "years" in fig.layout.yaxis.title.text


def test_exposure_top_members_ids_only(sample):
    report, features = sample
    fig = build_figure("exposure", report, features)
    ids = [y for t in fig.data for y in t.y]
    assert len(ids) == 20
    members = {s["scan_id"]: s for s in report["exposure"]["scans"] if s["member"] == 1}
    top = sorted(members.values(), key=lambda s: s["score"], reverse=True)[:20]
    assert ids == [s["scan_id"] for s in top]


def test_user_strings_are_escaped_in_figures():
    report, features = make_sample(400, malicious=True)
    exposure = build_figure("exposure", report, features).to_json()
    attribute = build_figure("accuracy_by_attribute", report, features).to_json()
    assert MALICIOUS_ID not in exposure and "&lt;script&gt;" in exposure
    assert MALICIOUS_SITE not in attribute and "&lt;img" in attribute


def test_engine_shaped_edge_cases(sample):
    """Open age bins, missing attribute values and undefined ROC points (as the engine emits)."""
    report, features = sample
    edge = copy.deepcopy(report)
    strongest = next(a for a in edge["attacks"] if a["name"] == edge["verdict"]["strongest_attack"])
    strongest["by_age_bin"] = [
        {"bin": ">90", "low": 90.0, "high": None, "accuracy": 0.7, "n": 3, "n_members": 1},
        {"bin": "50-60", "low": 50.0, "high": 60.0, "accuracy": 0.8, "n": 40, "n_members": 20},
        {"bin": "<50", "low": None, "high": 50.0, "accuracy": None, "n": 0, "n_members": 0},
    ]
    strongest["by_attribute"] = {"sex": [{"value": None, "accuracy": 0.6, "n": 4, "n_members": 2},
                                         {"value": 1, "accuracy": 0.7, "n": 9, "n_members": 5}]}
    strongest["roc"]["tpr"][5] = None
    age = build_figure("accuracy_by_age", edge, features)
    assert list(age.layout.xaxis.categoryarray) == ["&lt;50", "50-60", "&gt;90"]
    attr = build_figure("accuracy_by_attribute", edge, features)
    assert list(attr.data[0].x) == ["(missing)", "1"]
    assert build_figure("roc_curves", edge, features).data


def _plotly_display(text: str) -> str:
    """What Plotly shows for a text: tags dropped, entities decoded as its svg_text_utils
    ``convertEntities`` does (numeric ones, and only mu amp lt gt nbsp times plusmn deg)."""
    import re

    named = {"mu": "\u03bc", "amp": "&", "lt": "<", "gt": ">", "nbsp": "\xa0", "times": "\xd7", "plusmn": "\xb1",
             "deg": "\xb0"}

    def entity(match: re.Match) -> str:
        code = match.group(1)
        if code.startswith("#"):
            return chr(int(code[2:], 16) if code[1] == "x" else int(code[1:]))
        return named.get(code, match.group(0))

    return re.sub(r"&(#\d+|#x[\da-fA-F]+|[a-z]+);", entity, re.sub(r"<[^>]*>", "", text))


def test_attribute_values_display_as_typed_and_stay_inert(sample):
    """A site called ``site "A"`` is shown so, not ``site &quot;A&quot;``; tags stay text."""
    report, features = sample
    quoted = copy.deepcopy(report)
    strongest = next(a for a in quoted["attacks"] if a["name"] == quoted["verdict"]["strongest_attack"])
    values = ['site "A"', "O'Brien & co", "<img src=x onerror=alert(3)>"]
    strongest["by_attribute"] = {'the "site"': [{"value": v, "accuracy": 0.6, "n": 4, "n_members": 2} for v in values]}
    fig = build_figure("accuracy_by_attribute", quoted, features, attacks=[strongest["name"]])
    shown = list(fig.data[0].x)
    assert [_plotly_display(x) for x in shown] == values
    assert all("<" not in x and '"' not in x for x in shown)  # nothing Plotly could read as a tag or attribute
    assert _plotly_display(fig.layout.xaxis.title.text) == 'the "site"'
    assert 'the "site" = ' in _plotly_display(fig.data[0].hovertemplate)
