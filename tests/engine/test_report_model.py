"""The typed report model: what the engine writes validates and round-trips; one ranking of attacks."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, TINY_CHANNELS, TINY_SHAPE, TINY_VOXEL, save_tiny_model
from worker.engine.errors import InputError
from worker.engine.policy import LEVELS
from worker.engine.report import ReportSchemaError, write_json
from worker.engine.report_model import (
    Attack,
    Report,
    attack_threat_model,
    feature_set_threat_model,
    ranked_attacks,
    strongest_attack,
)
from worker.engine.report_sections import Level
from worker.engine.verdict import evaluate

# ---------------------------------------------------------------- reports the engine really writes


def _assess_predictions(folder: Path) -> dict:
    """A black-box assessment of 40 scans from a predictions table; one feature set cannot run."""
    from worker.engine.assessment import AssessmentOptions, run_assessment
    from worker.engine.manifest import load_manifest

    rng = np.random.default_rng(0)
    rows, predictions = ["scan_id,path,age,member,sex,site"], {}
    for i in range(40):
        member, age, scan = i % 2, float(rng.uniform(45, 80)), f"sub-{i:03d}"
        rows.append(f"{scan},scans/{scan}.nii.gz,{age:.1f},{member},{'FM'[i % 2]},site-{i % 3}")
        predictions[scan] = age + float(rng.normal(0, 1.0 if member else 5.0))
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    manifest = load_manifest(folder / "manifest.csv", check_files=False)
    options = AssessmentOptions(feature_sets=["error", "prediction+label", "grad:output"],
                                classifiers=["threshold", "logistic"], repeats=2)
    return run_assessment(manifest, predictions=predictions, options=options).report


@pytest.fixture(scope="module")
def predictions_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _assess_predictions(tmp_path_factory.mktemp("predictions"))


@pytest.fixture(scope="module")
def model_report(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A white-box assessment of a tiny 3D-CNN on the 60-scan synthetic cohort (every white-box component)."""
    import torch

    from worker.engine.assessment import AssessmentOptions, run_assessment
    from worker.engine.manifest import load_manifest
    from worker.engine.models import BrainAge3D, load_model

    torch.manual_seed(0)
    path = save_tiny_model(BrainAge3D(channels=TINY_CHANNELS, mean_age=60.0, age_scale=5.0),
                           tmp_path_factory.mktemp("model") / "m.pt")
    sets = ["activation", "grad-norm", "grad:output", "prediction+label+grad:last_conv+grad:output"]
    options = AssessmentOptions(feature_sets=sets, classifiers=["threshold", "logistic"], repeats=2)
    return run_assessment(load_manifest(tiny_cohort), model=load_model(path), options=options).report


@pytest.fixture(scope="module")
def federated_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """2 learners x 4 scans, 2 FedAvg rounds on the 8 mm grid, every default federated attack."""
    from worker.engine.features import ExtractionOptions
    from worker.engine.federated import (
        FederatedAttackOptions,
        FederatedDemoOptions,
        prepare_federated_demo,
        run_federated_assessment,
    )

    opts = FederatedDemoOptions(scans_per_learner=4, unseen_fraction=0.5, shape=TINY_SHAPE, voxel_size=TINY_VOXEL,
                                channels=(4, 8, 8), seed=3)
    fed = prepare_federated_demo(tmp_path_factory.mktemp("fed"), learners=2, rounds=2, sizes="uniform", ages="iid",
                                 options=opts)
    options = FederatedAttackOptions(repeats=2, n_boot=20, extraction=ExtractionOptions(layers=()))
    return run_federated_assessment(fed.model_paths, fed.manifest, options).report


@pytest.fixture(scope="module")
def reference_report(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny 3D-CNN with K = 2 reference models trained from its recipe (2 epochs): every
    reference-model and quantile attack entry and ``provenance.references``."""
    import torch

    from worker.engine.assessment import AssessmentOptions, run_assessment
    from worker.engine.manifest import load_manifest
    from worker.engine.models import BrainAge3D, load_model
    from worker.engine.reference.recipe import Recipe
    from worker.engine.reference.run import ReferenceOptions

    torch.manual_seed(0)
    path = save_tiny_model(BrainAge3D(channels=TINY_CHANNELS, mean_age=60.0, age_scale=5.0),
                           tmp_path_factory.mktemp("ref_model") / "m.pt")
    recipe = Recipe(arch="brain_age_3d", arch_kwargs={"channels": list(TINY_CHANNELS)}, epochs=2, batch_size=8)
    reference = ReferenceOptions(n_models=2, recipe=recipe, store_dir=tmp_path_factory.mktemp("refs"))
    options = AssessmentOptions(feature_sets=["error", "grad-norm"], classifiers=["threshold"], repeats=1,
                                reference=reference)
    return run_assessment(load_manifest(tiny_cohort), model=load_model(path), options=options).report


def _written(report: dict, tmp_path: Path) -> tuple[dict, Report]:
    """The report as the engine writes it, read back as JSON and as a typed report."""
    path = write_json(report, tmp_path / "report.json")
    return json.loads(path.read_text(encoding="utf-8")), Report.read(path)


def _same_json(a: object, b: object) -> bool:
    """Equal as JSON text (so 1 and 1.0, or True and 1, are told apart)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.mark.parametrize("which", ["predictions_report", "model_report", "federated_report", "reference_report"])
def test_what_the_engine_writes_validates_and_round_trips(which: str, request: pytest.FixtureRequest,
                                                          tmp_path: Path) -> None:
    data, report = _written(request.getfixturevalue(which), tmp_path)
    assert report.to_dict() == data and _same_json(report.to_dict(), data)
    assert Report.from_dict(report.to_dict()).to_dict() == data
    assert report.schema_version == data["schema_version"] == "1.0"
    # the verdict's strongest attack is, by construction, the first of the one ranking
    ranked = ranked_attacks(data)
    assert ranked and data["verdict"]["strongest_attack"] == ranked[0]["name"] == strongest_attack(report).name
    assert data["exposure"]["attack"] == ranked[0]["name"]
    assert [a.name for a in ranked_attacks(report)] == [a["name"] for a in ranked]
    for attack in report.attacks:
        assert attack.threat_model in ("black-box", "white-box") and attack_threat_model(attack) == attack.threat_model
    assert report.is_federated is (which == "federated_report")


def test_typed_access_to_an_engine_report(predictions_report: dict, tmp_path: Path) -> None:
    data, report = _written(predictions_report, tmp_path)
    assert report.provenance.model.format == "predictions" and report.provenance.manifest.n_scans == 40
    assert report.utility.n_members == 20 and report.verdict.policy.name == "default"
    failed = [a for a in report.attacks if not a.completed]
    assert {a.name for a in failed} == {"grad:output/threshold", "grad:output/logistic"}
    assert all(a.status == "error" and a.error and a.metric("auc") is None for a in failed)
    best = report.attack(report.verdict.strongest_attack)
    assert isinstance(best, Attack) and best.metric("auc", "ci_low") == data["attacks"][
        [a["name"] for a in data["attacks"]].index(best.name)]["metrics"]["auc"]["ci_low"]
    assert best.metrics.get("tpr_at_fpr_0.01") is not None
    assert set(report.verdict.levels_by_threat_model.to_dict()) == {"black-box", "white-box"}


def test_federated_section_is_typed(federated_report: dict) -> None:
    report = Report.from_dict(federated_report)
    section = report.federated
    assert section is not None and section.learners == ["learner-1", "learner-2"]
    assert section.attack == report.verdict.strongest_attack
    assert len(section.matrix["accuracy"]) == 2 and section.matrix["accuracy"][0][0] is None
    assert [p.round for p in section.per_round] == section.rounds_used
    assert section.learner_summary[-1].learner is None
    assert {a.scope for a in report.attacks} == {"final", "trajectory"}
    assert report.provenance.model.rounds[-1].round == 2 and report.provenance.manifest.n_learners == 2


def test_server_provenance_and_newer_keys_still_load(predictions_report: dict) -> None:
    doc = copy.deepcopy(predictions_report)
    doc["provenance"]["request"] = {"assessment_id": "a1", "requested_by": "ci", "organisation": None,
                                    "requested_at": "2026-01-01T00:00:00+00:00"}
    doc["new_section"] = {"from": "a newer engine"}
    doc["attacks"][0]["a_newer_key"] = [1, 2]
    report = Report.from_dict(doc)
    assert report.provenance.request.requested_by == "ci"
    assert report.to_dict() == doc


def test_reference_and_quantile_entries_are_typed(reference_report: dict, tmp_path: Path) -> None:
    """family, n_references, parameters, calibration and provenance.references, as the engine writes them."""
    data, report = _written(reference_report, tmp_path)
    families = {a.family for a in report.attacks}
    assert {"reference", "quantile"} <= families <= {None, "classifier", "reference", "quantile"}
    references = [a for a in report.attacks if a.family == "reference"]
    assert {a.name for a in references} >= {"calibrated-loss", "lira-offline", "lira-online", "rmia"}
    for attack in references + [a for a in report.attacks if a.family == "quantile"]:
        if attack.completed:
            assert attack.n_train == 0 and attack.n_test == 60 and attack.repeats == 1
    assert all(a.n_references == 2 for a in references)
    rmia = report.attack("rmia")
    assert rmia.completed and set(rmia.parameters) >= {"tau", "a"}
    qmia = report.attack("qmia")
    assert qmia.family == "quantile" and qmia.n_references is None and qmia.calibration
    row = qmia.calibration[0]
    assert isinstance(row.alpha, float) and isinstance(row.calibrated, bool) and isinstance(row.attainable, bool)
    assert row.fpr_ci_low <= row.fpr <= row.fpr_ci_high
    refs = report.provenance.references
    assert refs is not None and refs.source == "trained" and refs.n_models == 2 and refs.reused == 0
    assert refs.recipe["epochs"] == 2 and len(refs.keep_hash) == 64 and len(refs.train_mae) == 2
    assert report.to_dict() == data
    bad = copy.deepcopy(data)
    next(a for a in bad["attacks"] if a["name"] == "qmia")["calibration"][0]["calibrated"] = "maybe"
    with pytest.raises(InputError, match=r"calibration\[0\]\.calibrated"):
        Report.from_dict(bad)
    bad = copy.deepcopy(data)
    bad["attacks"][0]["family"] = "oracle"
    with pytest.raises(InputError, match=r"attacks\[0\]\.family"):
        Report.from_dict(bad)


def test_undefined_metrics_are_null(predictions_report: dict) -> None:
    doc = copy.deepcopy(predictions_report)
    auc = doc["attacks"][0]["metrics"]["auc"]
    auc.update(mean=None, ci_low=float("nan"), ci_high=float("inf"), values=[None, float("nan")])
    out = Report.from_dict(doc).to_dict()["attacks"][0]["metrics"]["auc"]
    assert out == {**auc, "ci_low": None, "ci_high": None, "values": [None, None]}
    json.dumps(out, allow_nan=False)


def test_write_json_refuses_a_report_that_breaks_the_schema(predictions_report: dict, tmp_path: Path) -> None:
    broken = copy.deepcopy(predictions_report)
    broken["verdict"]["level"] = "severe"
    with pytest.raises(ReportSchemaError, match=r"verdict\.level"):
        write_json(broken, tmp_path / "report.json")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- bad reports name their field


@pytest.mark.parametrize("change,field", [
    (lambda d: d.pop("verdict"), "'verdict'"),
    (lambda d: d["attacks"][1]["metrics"]["auc"].update(ci_low="high"), "'attacks[1].metrics.auc.ci_low'"),
    (lambda d: d["attacks"][0]["metrics"].pop("auc"), "'attacks[0]'"),
    (lambda d: d["attacks"][0].update(threat_model="grey-box"), "'attacks[0].threat_model'"),
    (lambda d: d["attacks"][0].update(status="maybe"), "'attacks[0].status'"),
    (lambda d: d["verdict"]["policy"].update(auc_medium=2.0), "'verdict.policy'"),
    (lambda d: d["verdict"]["findings"][0].update(severity="grave"), "'verdict.findings[0].severity'"),
    (lambda d: d["utility"].pop("n_members"), "'utility.n_members'"),
    (lambda d: d["provenance"]["manifest"].update(n_scans="many"), "'provenance.manifest.n_scans'"),
])
def test_bad_report_names_the_first_bad_field(predictions_report: dict, change, field: str) -> None:
    doc = copy.deepcopy(predictions_report)
    change(doc)
    with pytest.raises(InputError, match=f"field {field}".replace("[", r"\[").replace("]", r"\]")):
        Report.from_dict(doc)


def test_bad_report_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        Report.read(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match="not a JSON report"):
        Report.read(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]", encoding="utf-8")
    with pytest.raises(InputError, match="must be a JSON object"):
        Report.read(tmp_path / "list.json")


def test_every_engine_level_is_a_report_level() -> None:
    assert set(LEVELS) <= set(typing.get_args(Level))


# ---------------------------------------------------------------- the one ranking


def _attack(name: str, auc_low: float | None, tpr_low: float | None = 0.0, auc_mean: float | None = None,
            status: str = "ok") -> dict:
    def summary(lo: float | None, mean: float | None) -> dict:
        return {"mean": mean, "std": 0.01, "ci_low": lo, "ci_high": None if mean is None else mean + 0.05,
                "values": [mean]}

    fs, clf = name.split("/")
    mean = auc_mean if auc_mean is not None else (None if auc_low is None else auc_low + 0.05)
    return {
        "name": name, "feature_set": fs, "threat_model": feature_set_threat_model(fs), "classifier": clf,
        "status": status, "error": None if status == "ok" else "boom", "n_features": 1, "n_train": 10,
        "n_test": 10, "repeats": 2,
        "metrics": {} if status != "ok" else {
            "accuracy": summary(0.5, 0.6), "balanced_accuracy": summary(0.5, 0.6), "auc": summary(auc_low, mean),
            "tpr_at_fpr_0.001": summary(None, None), "tpr_at_fpr_0.01": summary(tpr_low, tpr_low),
        },
        "roc": None, "by_age_bin": [], "by_attribute": {}, "duration_s": 0.1,
    }


def _names(items: list) -> list[str]:
    return [a["name"] if isinstance(a, dict) else a.name for a in items]


def test_ranking_by_auc_lower_bound_then_tpr_then_mean_then_name() -> None:
    attacks = [
        _attack("error/threshold", 0.60, tpr_low=0.02, auc_mean=0.70),
        _attack("grad:output/mlp", 0.60, tpr_low=0.05, auc_mean=0.62),  # same AUC bound, better TPR bound
        _attack("grad-norm/logistic", 0.65),
        _attack("activation/mlp", 0.60, tpr_low=0.02, auc_mean=0.70),  # a full tie with error/threshold: by name
        _attack("prediction+label/mlp", 0.60, tpr_low=0.02, auc_mean=0.75),
        _attack("grad:first_conv/mlp", 0.99, status="error"),  # failed: never ranked
        _attack("grad:last_conv/mlp", None, tpr_low=0.5),  # no AUC bound: after every value
        _attack("error/logistic", 0.60, tpr_low=None, auc_mean=0.9),  # no TPR bound: last of its AUC tie
    ]
    expected = ["grad-norm/logistic", "grad:output/mlp", "prediction+label/mlp", "activation/mlp",
                "error/threshold", "error/logistic", "grad:last_conv/mlp"]
    report = {"attacks": attacks}
    ranked = ranked_attacks(report)
    assert _names(ranked) == expected
    assert all(any(r is a for a in attacks) for r in ranked)  # the report's own dicts
    assert strongest_attack(report) is attacks[2]
    assert _names(ranked_attacks(list(reversed(attacks)))) == expected  # order-independent, lists too
    assert strongest_attack({"attacks": [attacks[5]]}) is None and ranked_attacks({}) == []


def test_ranking_of_a_typed_report_gives_typed_attacks(predictions_report: dict) -> None:
    report = Report.from_dict(predictions_report)
    ranked = ranked_attacks(report)
    assert all(isinstance(a, Attack) for a in ranked)
    assert _names(ranked) == _names(ranked_attacks(predictions_report))
    assert strongest_attack(report) is ranked[0]


def test_verdict_names_the_first_of_the_ranking_on_ties() -> None:
    attacks = [_attack("error/threshold", 0.60, tpr_low=0.02, auc_mean=0.80),
               _attack("grad:output/mlp", 0.60, tpr_low=0.05, auc_mean=0.62)]
    verdict = evaluate(attacks)
    assert verdict["strongest_attack"] == ranked_attacks(attacks)[0]["name"] == "grad:output/mlp"
    only_failed = evaluate([_attack("error/mlp", 0.9, status="error")])
    assert only_failed["strongest_attack"] is None


def test_verdict_without_any_auc_bound_names_the_attack_but_quotes_no_auc() -> None:
    verdict = evaluate([_attack("error/threshold", None, tpr_low=0.01)])
    assert verdict["strongest_attack"] == "error/threshold"
    assert not any(f["metric"] == "auc" for f in verdict["findings"])


# ---------------------------------------------------------------- threat models


def test_threat_model_is_the_written_one_else_derived_from_the_feature_set() -> None:
    assert attack_threat_model({"feature_set": "loss-trajectory", "threat_model": "black-box"}) == "black-box"
    assert attack_threat_model({"feature_set": "prediction+label"}) == "black-box"
    assert attack_threat_model({"feature_set": "prediction+label+grad:output"}) == "white-box"
    assert attack_threat_model({"feature_set": "activation", "threat_model": None}) == "white-box"
    assert attack_threat_model({"feature_set": "gradient-ish"}) == "white-box"  # unparsable: not known black-box
    assert attack_threat_model({}) == "white-box"
    assert feature_set_threat_model("error") == "black-box" and feature_set_threat_model(None) == "white-box"


def test_report_readers_load_no_torch_or_sklearn() -> None:
    code = ("import sys, worker.engine.report_model, frontend.figures._data; "
            "print(sorted(m for m in ('torch', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    code = "import sys, worker.engine.report_model; print(sorted(m for m in ('numpy', 'plotly') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
