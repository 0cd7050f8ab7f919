"""Fixtures of the command-line tests: a live embedded server, a small untrained model, the
predictions of a leaky model for the tiny cohort."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.cli.live_server import serving
from tests.conftest import TINY_CHANNELS, save_tiny_model
from worker.engine.manifest import load_manifest
from worker.engine.models import BrainAge3D


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """``(url, admin token)`` of an embedded BrainMIA (SQLite, worker thread) serving on a free port."""
    from backend.app import create_app
    from backend.auth import create_token
    from backend.db.session import session_scope
    from backend.settings import Settings

    root = tmp_path_factory.mktemp("submit_server")
    app = create_app(Settings(data_dir=root / "data", cache_dir=root / "cache", session_secret="test", device="cpu"))
    with serving(app) as url:
        with session_scope(app.state.sessionmaker) as session:
            token = create_token(session, "pipeline", "acme", admin=True)
        yield url, token


@pytest.fixture(scope="package")
def plain_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny model (TorchScript with a sidecar for the tiny grid)."""
    torch.manual_seed(0)
    return save_tiny_model(BrainAge3D(channels=TINY_CHANNELS), tmp_path_factory.mktemp("plain") / "model.pt")


@pytest.fixture(scope="package")
def leaky_predictions(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Predictions of a leaky model for the tiny cohort: members predicted well, non-members poorly."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("leaky_predictions") / "predictions.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["scan_id", "prediction"])
        for r in load_manifest(tiny_cohort).records:
            writer.writerow([r.scan_id, r.age + rng.normal(0, 0.5 if r.member else 6.0)])
    return path
