"""``--loader-workers`` and the ``loader_workers`` setting reach feature extraction."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from backend.cli import app
from backend.cli.common import RunFlags
from backend.settings import get_settings


@pytest.fixture
def fresh_settings():
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_flag_then_setting_then_default(monkeypatch: pytest.MonkeyPatch, fresh_settings) -> None:
    monkeypatch.delenv("BRAINMIA_LOADER_WORKERS", raising=False)
    assert RunFlags().extraction("cpu").num_workers is None  # the engine's default: cores minus one
    assert RunFlags(loader_workers=3).extraction("cpu").num_workers == 3
    monkeypatch.setenv("BRAINMIA_LOADER_WORKERS", "0")
    get_settings.cache_clear()
    assert RunFlags().extraction("cpu").num_workers == 0
    assert RunFlags(loader_workers=2).extraction("cpu").num_workers == 2


def test_assess_and_features_take_the_option() -> None:
    runner = CliRunner()
    for command in ("assess", "features"):
        result = runner.invoke(app, [command, "--help"], terminal_width=200)
        assert result.exit_code == 0 and "--loader-workers" in result.output
    bad = runner.invoke(app, ["features", "--model", "m.pt", "--manifest", "m.csv", "--out", "o.csv",
                              "--loader-workers", "-1"])
    assert bad.exit_code == 2 and "loader-workers" in bad.output
