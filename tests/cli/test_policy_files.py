"""One policy file, three ways in: ``brainmia assess --policy``, ``brainmia submit --policy`` and
the API's ``options.policy`` accept the same policy (as TOML with a ``[policy]`` table, as TOML
at the top level, as JSON) and refuse the same bad field, naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backend.cli import app
from tests.cli.live_server import run_submit

runner = CliRunner()

POLICY = {
    "name": "release-review",
    "auc_medium": 0.6,
    "auc_high": 0.8,
    "tpr_at_1pct_fpr_medium": 0.05,
    "tpr_at_1pct_fpr_high": 0.2,
    "fail_at": "high",
    "fail_on_error": True,
    "fail_on_inconclusive": True,
    "delta": 1e-5,
}
#: a fast assessment: one feature set, one classifier, two splits
FAST = {"feature_sets": ["error"], "classifiers": ["threshold"], "repeats": 2}
FAST_FLAGS = ["--feature-set", "error", "--classifier", "threshold", "--repeats", "2", "-q"]
#: bad policies and the field each names
BAD = [({"auc_high": 2.0}, "auc_high"), ({"auc_hihg": 0.7}, "auc_hihg")]


def _toml_value(value: object) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def write_policy(folder: Path, policy: dict, form: str) -> Path:
    """``policy`` as a file: ``table`` (TOML ``[policy]``), ``top`` (TOML top level) or ``json``."""
    folder.mkdir(parents=True, exist_ok=True)
    if form == "json":
        path = folder / "policy.json"
        path.write_text(json.dumps(policy))
        return path
    lines = [f"{key} = {_toml_value(value)}" for key, value in policy.items()]
    path = folder / f"policy-{form}.toml"
    path.write_text("\n".join((["[policy]"] if form == "table" else []) + lines) + "\n")
    return path


@pytest.fixture(scope="module")
def uploaded(server: tuple[str, str], plain_model: Path, tiny_cohort: Path,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """``(model id, scan set id)`` of the plain model and the tiny cohort, uploaded to the server."""
    from backend.client import BrainMIAClient, pack_manifest, sidecar_metadata

    url, token = server
    with BrainMIAClient(url, token) as client:
        model = client.upload_model(plain_model, sidecar_metadata(plain_model))
        scans = client.upload_scan_set(pack_manifest(tiny_cohort, tmp_path_factory.mktemp("packed") / "scans.tar.gz"))
    return model["id"], scans["id"]


def _assess(tiny_cohort: Path, predictions: Path, out: Path, policy: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["assess", "--predictions", str(predictions), "--manifest", str(tiny_cohort),
                                 "--out", str(out), "--policy", str(policy), *FAST_FLAGS])
    return result.exit_code, result.output


@pytest.mark.parametrize("form", ["table", "top", "json"])
def test_assess_accepts_every_form(form: str, tiny_cohort: Path, leaky_predictions: Path, tmp_path: Path) -> None:
    code, output = _assess(tiny_cohort, leaky_predictions, tmp_path / "out", write_policy(tmp_path, POLICY, form))
    assert code in (0, 1), output
    assert json.loads((tmp_path / "out" / "report.json").read_text())["verdict"]["policy"] == POLICY


def test_submit_and_the_api_accept_every_form(server: tuple[str, str], uploaded: tuple[str, str], plain_model: Path,
                                              tiny_cohort: Path, tmp_path: Path) -> None:
    from backend.client import BrainMIAClient

    from backend.services.options import policy_from_file

    url, token = server
    for form in ("top", "json"):  # submit reads the file with the one loader, then sends it as options.policy
        assert policy_from_file(write_policy(tmp_path / form, POLICY, form)).model_dump(exclude_none=True) == POLICY
    out = tmp_path / "table"  # one form end to end (each job costs ~10 s)
    done = run_submit("--server", url, "--token", token, "--model", str(plain_model), "--manifest",
                      str(tiny_cohort), "--out", str(out), "--policy", str(write_policy(tmp_path, POLICY, "table")),
                      "--poll-interval", "0.2", *FAST_FLAGS)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    assert json.loads((out / "report.json").read_text())["verdict"]["policy"] == POLICY
    with BrainMIAClient(url, token) as client:
        job = client.start_assessment(*uploaded, {**FAST, "policy": POLICY})
        client.wait(job["id"], poll_interval=0.2, timeout=300)
        report = json.loads(client.download(job["id"], "report.json", tmp_path / "api.json").read_text())
    assert report["verdict"]["policy"] == POLICY


@pytest.mark.parametrize(("bad", "field"), BAD, ids=[field for _, field in BAD])
def test_a_bad_field_is_refused_naming_it(bad: dict, field: str, server: tuple[str, str], uploaded: tuple[str, str],
                                          plain_model: Path, tiny_cohort: Path, leaky_predictions: Path,
                                          tmp_path: Path) -> None:
    from backend.client import ApiError, BrainMIAClient

    url, token = server
    policy = write_policy(tmp_path, {**POLICY, **bad}, "table")
    code, output = _assess(tiny_cohort, leaky_predictions, tmp_path / "assessed", policy)
    assert code == 2, output
    assert str(policy) in output.replace("\n", "") and field in output, output
    assert not (tmp_path / "assessed" / "report.json").exists()

    done = run_submit("--server", url, "--token", token, "--model", str(plain_model), "--manifest", str(tiny_cohort),
                      "--out", str(tmp_path / "submitted"), "--policy", str(policy), "-q")
    assert done.returncode == 2, done.stdout + done.stderr
    assert str(policy) in done.stderr.replace("\n", "") and field in done.stderr, done.stderr
    assert "uploading" not in done.stderr and not (tmp_path / "submitted").exists()

    with BrainMIAClient(url, token) as client, pytest.raises(ApiError) as refused:
        client.start_assessment(*uploaded, {**FAST, "policy": {**POLICY, **bad}})
    assert refused.value.status == 422
    assert [d["field"] for d in refused.value.details] == [f"options.policy.{field}"]
