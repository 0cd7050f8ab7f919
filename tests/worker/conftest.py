"""Worker test fixtures: the backend's embedded app and job inputs, with tiny feature shards."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.settings import Settings
from tests.backend.conftest import app, client, tokens  # noqa: F401 - fixtures used here
from tests.backend.job_fixtures import job_cohort, job_inputs, job_model_file  # noqa: F401 - fixtures used here

SHARD_SCANS = 4
"""Scans per shard: the 16-scan job cohort is 4 shards."""


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    """Embedded-mode settings under a temporary data folder, sharding above 4 scans."""
    return Settings(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", session_secret="test-secret",
                    shard_scans=SHARD_SCANS)
