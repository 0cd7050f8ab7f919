"""Findings 4, 5, 7 and the partial-upload part of 8, against a real ``brainmia serve``.

An ordinary token of one organisation sends header bombs (an 86-byte ``.nii.gz`` claiming
800^3 float32 voxels, and smaller claims only the file size gives away) through an archive
upload, a server-side manifest and the command line, while the server's memory is measured;
puts formulas in scan IDs and attributes and downloads the resulting features.csv; tries the
other organisation's server manifest; and kills the server in the middle of an upload.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pytest

from tests.integration.conftest import base_env, cli_argv, proc_status_kb, process_tree, wait_for
from tests.security.conftest import Server

API = "/api/v1"
MB = 1 << 20
GROWTH_LIMIT_MB = 100
BOMBS = {  # file name -> claimed shape (float32): 2 GB, and four of 131 MB under the voxel limit
    "bomb-800.nii.gz": (800, 800, 800),
    **{f"bomb-320-{i}.nii.gz": (320, 320, 320) for i in range(4)},
}


def header_bomb(path: Path, shape: tuple[int, ...]) -> Path:
    """A gzipped NIfTI header claiming ``shape`` float32 voxels, and no data."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header["vox_offset"] = 352
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4, 9))
    return path


def bomb_cohort(folder: Path) -> Path:
    """``folder/manifest.csv`` listing only header bombs; returns the manifest."""
    (folder / "scans").mkdir(parents=True)
    rows = ["scan_id,path,age,member"]
    for i, (name, shape) in enumerate(BOMBS.items()):
        header_bomb(folder / "scans" / name, shape)
        rows.append(f"s{i},scans/{name},{60 + i},{i % 2}")
    assert (folder / "scans" / "bomb-800.nii.gz").stat().st_size <= 90
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n")
    return folder / "manifest.csv"


def tar_gz(folder: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        for item in sorted(folder.rglob("*")):
            if item.is_file():
                tar.add(item, arcname=str(item.relative_to(folder)))
    return dest


@contextmanager
def peak_growth_mb(pid: int) -> Iterator[dict[str, float]]:
    """Measure how far the resident memory of ``pid`` (and its children) rises above its level at entry.

    Sampled every 10 ms, and the kernel's high-water mark (``VmHWM``, reset at entry where allowed).
    """
    def rss_kb(field: str = "VmRSS") -> int:
        total = 0
        for p in process_tree(pid):
            try:
                total += proc_status_kb(p, field)
            except (OSError, KeyError):
                pass
        return total

    before = rss_kb()
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        hwm_reset = True
    except OSError:
        hwm_reset = False
    peak = {"kb": before}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak["kb"] = max(peak["kb"], rss_kb())
            stop.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out: dict[str, float] = {}
    try:
        yield out
    finally:
        stop.set()
        sampler.join()
        top = max(peak["kb"], proc_status_kb(pid, "VmHWM") if hwm_reset else 0)
        out["growth_mb"] = (top - before) / 1024


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The server folders of organisations alpha and beta."""
    base = tmp_path_factory.mktemp("server-cohorts")
    return {org: base / org for org in ("alpha", "beta")}


@pytest.fixture(scope="module")
def server(make_server: Callable[..., Server], roots: dict[str, Path]) -> Server:
    """An embedded server whose organisations alpha and beta each have a manifest folder."""
    for folder in roots.values():
        folder.mkdir(parents=True, exist_ok=True)
    return make_server(org_manifest_roots=json.dumps({org: [str(p)] for org, p in roots.items()}))


def _assert_bombs_named(response: httpx.Response) -> None:
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_scan", error
    reasons = " ".join(d["reason"] for d in error["details"])
    for name in BOMBS:
        assert name in reasons, (name, error)
    assert "more than the limit" in reasons and "compressed file can hold" in reasons


# -- finding 4: header bombs --------------------------------------------------------------------


def test_header_bomb_archive_is_refused_and_the_server_does_not_grow(
    server: Server, org_tokens: dict[str, str], tmp_path: Path
) -> None:
    archive = tar_gz(bomb_cohort(tmp_path / "cohort").parent, tmp_path / "bombs.tar.gz")
    with server.client(org_tokens["beta"]) as api:
        with peak_growth_mb(server.pid) as memory:
            response = api.post(f"{API}/scan-sets", files={"archive": ("bombs.tar.gz", archive.read_bytes())})
        assert memory["growth_mb"] < GROWTH_LIMIT_MB, f"the server grew by {memory['growth_mb']:.0f} MB"
        _assert_bombs_named(response)
        assert api.get(f"{API}/scan-sets").json()["total"] == 0
    assert server.service is not None and server.service.alive()


def test_header_bomb_through_a_server_manifest(server: Server, org_tokens: dict[str, str], roots: dict[str, Path]) -> None:
    manifest = bomb_cohort(roots["alpha"] / "bombs")
    with server.client(org_tokens["alpha"]) as api:
        with peak_growth_mb(server.pid) as memory:
            response = api.post(f"{API}/scan-sets", json={"manifest_path": str(manifest)})
        assert memory["growth_mb"] < GROWTH_LIMIT_MB, f"the server grew by {memory['growth_mb']:.0f} MB"
        _assert_bombs_named(response)


def _run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, float]:
    """Run ``brainmia <args>``; its exit code, stderr and peak resident memory (MB, from wait4)."""
    proc = subprocess.Popen(cli_argv(*args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, err, usage.ru_maxrss / 1024


@pytest.mark.parametrize("command", ["features", "assess"])
def test_header_bomb_through_the_command_line_exits_2_naming_the_file(
    command: str, tmp_path: Path, tiny_model: Path
) -> None:
    env = base_env() | {"BRAINMIA_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "400"}

    def run(manifest: Path) -> tuple[int, str, float]:
        return _run_cli(command, "--model", str(tiny_model), "--manifest", str(manifest),
                        "--out", str(tmp_path / "out"), "--no-cache", "--quiet", env=env)

    # the process's usual size: the same command on a small scan refused at the same step (its
    # header claims 8x8x8 voxels, no data follows), after the model host and the power analysis
    small = tmp_path / "small"
    (small / "scans").mkdir(parents=True)
    rows = ["scan_id,path,age,member"]
    for i in range(4):  # two members, two non-members: enough to be assessed
        header_bomb(small / "scans" / f"small-{i}.nii.gz", (8, 8, 8))
        rows.append(f"s{i},scans/small-{i}.nii.gz,{60 + i},{i % 2}")
    (small / "manifest.csv").write_text("\n".join(rows) + "\n")
    code, err, usual_mb = run(small / "manifest.csv")
    assert code == 2 and "small-0.nii.gz" in err and "truncated" in err, err

    code, err, peak_mb = run(bomb_cohort(tmp_path / "cohort"))
    assert peak_mb - usual_mb < GROWTH_LIMIT_MB, f"the CLI peaked at {peak_mb:.0f} MB, {usual_mb:.0f} MB usually"
    assert code == 2, err
    assert "bomb-800.nii.gz" in err and "more than the limit" in err, err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny BrainAge3D as TorchScript with its sidecar."""
    import torch

    from tests.conftest import TINY_CHANNELS, save_tiny_model
    from worker.engine.models import BrainAge3D

    torch.manual_seed(0)
    return save_tiny_model(BrainAge3D(channels=TINY_CHANNELS, mean_age=60.0, age_scale=10.0),
                           tmp_path_factory.mktemp("tiny_model") / "model.pt")


# -- finding 5: formula cells ---------------------------------------------------------------


FORMULA_ID = '=HYPERLINK("http://x","y")'


def _formula_cohort(folder: Path) -> Path:
    """A 16-scan synthetic cohort whose first scan ID is a formula and whose site of member scans is '+cmd'."""
    from tests.conftest import TINY_SHAPE, TINY_VOXEL
    from worker.engine.synth import CohortSpec, generate_cohort

    manifest = generate_cohort(folder, CohortSpec(n_subjects=16, shape=TINY_SHAPE, voxel_size=TINY_VOXEL, seed=5))
    rows = list(csv.DictReader(manifest.open(newline="")))
    rows[0]["scan_id"] = FORMULA_ID
    for row in rows:
        row["site"] = "+cmd" if row["member"] in ("1", "True", "true") else "-@"
    with manifest.open("w", newline="") as fh:  # written by hand, as an attacker would
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def test_formula_cells_in_a_real_assessments_features_csv_are_inert(
    server: Server, org_tokens: dict[str, str], tiny_model: Path, tmp_path: Path
) -> None:
    archive = tar_gz(_formula_cohort(tmp_path / "cohort").parent, tmp_path / "cohort.tar.gz")
    with server.client(org_tokens["alpha"]) as api:
        metadata = Path(f"{tiny_model}.json").read_text()
        model = api.post(f"{API}/models", files={"file": ("model.pt", tiny_model.read_bytes())},
                         data={"metadata": metadata})
        assert model.status_code == 201, model.text
        scans = api.post(f"{API}/scan-sets", files={"archive": ("cohort.tar.gz", archive.read_bytes())})
        assert scans.status_code == 201, scans.text
        job = api.post(f"{API}/assessments", json={
            "model_id": model.json()["id"], "scan_set_id": scans.json()["id"],
            "options": {"repeats": 2, "classifiers": ["threshold"]},
        })
        assert job.status_code in (201, 202), job.text
        job_id = job.json()["id"]

        def finished() -> dict | None:
            state = api.get(f"{API}/assessments/{job_id}").json()
            return state if state["state"] in ("succeeded", "failed", "cancelled") else None

        state = wait_for(finished, 300, "the assessment to finish", interval=0.5)
        assert state["state"] == "succeeded", f"{state}\n{server.log()[-4000:]}"
        download = api.get(f"{API}/assessments/{job_id}/features.csv")
        assert download.status_code == 200
        figure = api.get(f"{API}/assessments/{job_id}/figures/error_distribution")  # a page reading it back
        assert figure.status_code == 200, figure.text

    lines = [line for line in download.text.splitlines() if not line.startswith("# ")]
    table = list(csv.DictReader(io.StringIO("\n".join(lines))))
    assert len(table) == 16
    by_id = {row["scan_id"]: row for row in table}
    assert "'" + FORMULA_ID in by_id and FORMULA_ID not in by_id
    sites = {row["site"] for row in table}
    assert sites == {"'+cmd", "'-@"}, sites
    for row in table:  # no cell starts a formula: only numbers begin with one of its characters
        for value in row.values():
            if value[:1] in ("=", "+", "-", "@", "\t", "\r"):
                float(value)
    errors = [float(row["error"]) for row in table]  # numbers stay numbers, negative ones included
    assert any(e < 0 for e in errors) and all(not row["error"].startswith("'") for row in table)


# -- finding 7: server-side manifests of another organisation -----------------------------


def test_another_organisations_manifest_cannot_be_registered_nor_probed(
    server: Server, org_tokens: dict[str, str], roots: dict[str, Path]
) -> None:
    from tests.conftest import TINY_SHAPE, TINY_VOXEL
    from worker.engine.synth import CohortSpec, generate_cohort

    secret = generate_cohort(roots["alpha"] / "private", CohortSpec(n_subjects=8, shape=TINY_SHAPE, voxel_size=TINY_VOXEL))
    with server.client(org_tokens["beta"]) as attacker:
        stolen = attacker.post(f"{API}/scan-sets", json={"manifest_path": str(secret)})
        missing = attacker.post(f"{API}/scan-sets", json={"manifest_path": str(secret.with_name("nothing.csv"))})
        own_missing = attacker.post(f"{API}/scan-sets", json={"manifest_path": str(roots["beta"] / "manifest.csv")})
        secret_file = attacker.post(f"{API}/scan-sets", json={"manifest_path": str(server.data_dir / "session_secret")})
        answers = [stolen, missing, own_missing, secret_file]
        assert {r.status_code for r in answers} == {404}, [r.text for r in answers]
        assert len({r.content for r in answers}) == 1, [r.text for r in answers]
        assert attacker.get(f"{API}/scan-sets").json()["total"] == 0
    with server.client(org_tokens["alpha"]) as owner:
        assert owner.post(f"{API}/scan-sets", json={"manifest_path": str(secret)}).status_code == 201


# -- finding 8: partial uploads ---------------------------------------------------------------


def test_a_partial_upload_left_by_a_crash_is_removed_at_the_next_start(make_server: Callable[..., Server]) -> None:
    server = make_server()
    token = server.token("alpha")
    tmp = server.data_dir / "storage" / "tmp"
    sent = threading.Event()

    def body() -> Iterator[bytes]:
        yield b"--b\r\nContent-Disposition: form-data; name=\"archive\"; filename=\"a.tar.gz\"\r\n\r\n"
        for _ in range(64):
            yield os.urandom(64 * 1024)  # 4 MiB in all
        sent.set()
        time.sleep(60)  # the upload never ends: the server is killed meanwhile

    def upload() -> None:
        try:
            httpx.post(f"{server.url}{API}/scan-sets", content=body(), timeout=90, headers={
                "Authorization": f"Bearer {token}", "Content-Type": "multipart/form-data; boundary=b"})
        except httpx.HTTPError:
            pass

    threading.Thread(target=upload, daemon=True).start()
    assert sent.wait(60)
    wait_for(lambda: sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file()) >= MB, 30,
             "the partial upload on disk")
    assert server.service is not None
    server.service.kill()  # a crash in the middle of the upload
    assert any(tmp.iterdir()), "the crash should have left the partial upload"
    server.start()
    assert list(tmp.iterdir()) == [], list(tmp.rglob("*"))


def test_a_model_declaring_a_huge_input_grid_is_refused_at_upload(
    server: Server, org_tokens: dict[str, str], tiny_model: Path
) -> None:
    metadata = json.loads(Path(f"{tiny_model}.json").read_text()) | {"input_shape": [800, 800, 800]}
    with server.client(org_tokens["beta"]) as api:
        response = api.post(f"{API}/models", files={"file": ("model.pt", tiny_model.read_bytes())},
                            data={"metadata": json.dumps(metadata)})
        assert response.status_code == 422, response.text
        assert "input_shape" in response.text and "more than the limit" in response.text, response.text
        assert api.get(f"{API}/models").json()["total"] == 0
