"""``brainmia demo`` with reference models: the demo model's recipe in its sidecar, the reference-model
attacks in its report and summary, ``assess --reference`` on the demo model without ``--recipe``, and
(slow) the reference attacks finding members at 1% FPR on the full demo's overfit model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backend.cli import app
from worker.engine.demo import DEMO_REFERENCES, DemoOptions, demo_recipe
from worker.engine.reference.recipe import recipe_from_metadata
from worker.engine.report_model import Report

runner = CliRunner()
MODEL = Path("model") / "demo_brain_age_3d.pt"
REFERENCE_ATTACKS = {"calibrated-loss", "lira-offline", "lira-online", "rmia"}


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A reduced demo (24 subjects, 3 epochs) with 2 reference models."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    result = runner.invoke(app, ["demo", "--out", str(out), "--subjects", "24", "--epochs", "3", "--repeats", "2",
                                 "--references", "2", "-q"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_the_demo_sidecar_declares_the_recipe_it_was_trained_with(small_demo) -> None:
    out, _ = small_demo
    options = DemoOptions(subjects=24)
    options.training.epochs = 3
    sidecar = json.loads((out / f"{MODEL}.json").read_text())
    assert sidecar["recipe"] == demo_recipe(options).to_dict()
    assert recipe_from_metadata(out / MODEL) == demo_recipe(options)
    assert sidecar["recipe"]["arch_kwargs"] == sidecar["arch_kwargs"] and sidecar["recipe"]["epochs"] == 3


def test_the_demo_runs_the_reference_attacks_and_says_so(small_demo) -> None:
    out, output = small_demo
    data = json.loads((out / "report" / "report.json").read_text())
    report = Report.from_dict(data)
    refs = [a for a in report.attacks if a.family == "reference"]
    assert {a.name.removesuffix(":grad-norm") for a in refs} == REFERENCE_ATTACKS
    assert all(a.n_references == 2 and a.n_train == 0 and a.n_test == 24 and a.repeats == 1 for a in refs)
    assert {a.family for a in report.attacks} >= {"reference", "quantile"}
    provenance = report.provenance.references
    assert provenance.source == "trained" and provenance.n_models == 2 and provenance.reused == 0
    assert provenance.recipe == json.loads((out / f"{MODEL}.json").read_text())["recipe"]
    assert any((out / "references").rglob("*.safetensors"))  # kept in the demo's folder
    flat = " ".join(output.split())
    assert "reference-model attacks (2 reference models, every scan tested)" in flat
    assert "TPR at 1% FPR:" in flat and "lira-offline" in flat
    html = (out / "report" / "report.html").read_text()
    assert 'id="calibrated"' in html and "Reference models" in html


def test_assess_trains_references_from_the_demo_sidecar_without_a_recipe(small_demo, tmp_path: Path) -> None:
    out, _ = small_demo
    result = runner.invoke(app, ["assess", "--model", str(out / MODEL), "--manifest", str(out / "cohort" / "manifest.csv"),
                                 "--out", str(tmp_path / "assess"), "--reference", "2", "--repeats", "1",
                                 "--feature-set", "error", "--no-cache", "-q"])
    assert result.exit_code in (0, 1), result.output
    report = json.loads((tmp_path / "assess" / "report.json").read_text())
    assert report["provenance"]["references"]["n_models"] == 2
    assert report["provenance"]["references"]["recipe"]["epochs"] == 3
    assert {a["name"] for a in report["attacks"] if a.get("family") == "reference"} >= REFERENCE_ATTACKS


@pytest.mark.parametrize("value", ["1", "3"])
def test_references_must_be_none_or_even(value: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--references", value, "-q"])
    assert result.exit_code == 2
    assert "--references must be 0 (none) or an even number" in " ".join(result.output.split())
    assert not (tmp_path / "cohort").exists()  # refused before anything is made


def test_references_are_for_the_centralised_demo(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--federated", "--references", "2", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--references is for the centralised demo" in result.output


@pytest.mark.slow  # the full demo's cohort and model (200 subjects, 80 epochs) and 4 references: ~2 min
def test_reference_attacks_find_members_at_1pct_fpr_on_the_demo_model(tmp_path_factory: pytest.TempPathFactory) -> None:
    """On the demo's overfit model (the default demo, all 200 scans tested, 100 non-members) the
    reference attacks identify members at 1% FPR: TPR above 1% with its 95% lower bound above 1%;
    the verdict states an empirical epsilon with its ceiling, and contradicts a declared epsilon of 1."""
    from worker.engine.assessment import AssessmentOptions, run_assessment
    from worker.engine.cache import VolumeCache
    from worker.engine.demo import prepare_demo
    from worker.engine.metrics import estimable
    from worker.engine.models import load_model
    from worker.engine.models.metadata import DPClaim
    from worker.engine.reference.run import ReferenceOptions

    out = tmp_path_factory.mktemp("full_demo")
    cache = VolumeCache(out / "cache")
    made = prepare_demo(out, DemoOptions(), cache=cache)
    assert made.train_mae < 0.5 * made.test_mae  # it clearly overfits
    assert estimable(made.manifest.n_nonmembers, 0.01)
    options = AssessmentOptions(feature_sets=["error", "grad-norm"], classifiers=["threshold"], repeats=1,
                                reference=ReferenceOptions(n_models=DEMO_REFERENCES, store_dir=out / "refs"))
    model = load_model(made.model_path)
    # declared "DP, epsilon = 1" (with the demo's own delta): the demo model's leak contradicts it
    model.metadata = model.metadata.model_copy(update={"dp": DPClaim(epsilon=1.0, delta=1e-5)})
    report = run_assessment(made.manifest, model=model, options=options, cache=cache).report
    eps = report["verdict"]["epsilon"]
    assert eps is not None and 0 < eps["epsilon"] <= eps["ceiling"], eps  # a lower bound, and the most it could show
    assert "epsilon" in eps["message"] and eps["n_members"] == made.manifest.n_members
    claim = report["verdict"]["dp_claim"]
    assert claim["contradicted"] and claim["empirical_epsilon"] > 1.0, claim
    assert report["verdict"]["level"] == "high" and not report["verdict"]["passed"]
    refs = [a for a in report["attacks"] if a.get("family") == "reference" and a["status"] == "ok"]
    assert {a["name"].removesuffix(":grad-norm") for a in refs} == REFERENCE_ATTACKS
    tpr = {a["name"]: a["metrics"]["tpr_at_fpr_0.01"] for a in refs}
    assert all(t["mean"] is not None for t in tpr.values())  # defined: every scan tested
    best = max(tpr, key=lambda n: tpr[n]["ci_low"])
    assert tpr[best]["mean"] > 0.01 and tpr[best]["ci_low"] > 0.01, tpr
    black_box = [n for n in tpr if not n.endswith(":grad-norm")]
    assert max(tpr[n]["ci_low"] for n in black_box) > 0.01, tpr  # from the predictions alone
