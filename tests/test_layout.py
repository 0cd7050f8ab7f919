"""The layout holds: imports run one way (import-linter's contracts in pyproject.toml), the API
process loads no science stack, modules stay readable, routes hold routes."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("backend", "frontend", "worker")
MAX_MODULE_LINES = 450


def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAINMIA_")}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_import_contracts_hold() -> None:
    """``lint-imports`` with the layer contracts of pyproject.toml (README, Layout)."""
    lint = Path(sys.executable).with_name("lint-imports")
    assert lint.is_file(), "import-linter is not installed (pip install -e '.[test]')"
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_a_contract_breach_is_caught(tmp_path: Path) -> None:
    """The contracts bite: an engine module importing the backend breaks them."""
    lint = Path(sys.executable).with_name("lint-imports")
    config = tmp_path / "contracts.toml"
    source = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    config.write_text(source[source.index("[tool.importlinter]"):], encoding="utf-8")
    work = tmp_path / "tree"  # a copy of the packages with one upward import added
    for package in PACKAGES:
        shutil.copytree(ROOT / package, work / package, ignore=shutil.ignore_patterns("__pycache__"))
    (work / "worker" / "engine" / "leak.py").write_text("from backend.settings import get_settings\n")
    env = dict(os.environ, PYTHONPATH=str(work))
    done = subprocess.run([str(lint), "--no-cache", str(config)], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode != 0
    assert "worker.engine.leak -> backend.settings" in done.stdout


def test_the_api_app_loads_no_torch_sklearn_or_plotly() -> None:
    """Building the API app (both modes' factory) imports neither the science nor the plotting stack."""
    code = (
        "import os, sys, tempfile\n"
        "os.environ['BRAINMIA_DATA_DIR'] = tempfile.mkdtemp()\n"
        "from backend.app import create_app\n"
        "from backend.settings import get_settings\n"
        "create_app(get_settings())\n"
        "print(sorted(m for m in ('torch', 'sklearn', 'plotly', 'scipy', 'nibabel') if m in sys.modules))\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py")
                  if "migrations" not in p.parts)


@pytest.mark.parametrize("package", PACKAGES)
def test_modules_stay_readable(package: str) -> None:
    """No module of backend/, frontend/, worker/ is over 450 lines."""
    long = {str(p.relative_to(ROOT)): n for p in _modules() if p.parts[len(ROOT.parts)] == package
            and (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_routes_hold_routes_and_schemas_live_in_api_schemas() -> None:
    """``backend/api/routes/*.py`` define no pydantic schema and no long helper: routes call services."""
    for path in sorted((ROOT / "backend" / "api" / "routes").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                pytest.fail(f"{path.name}: class {node.name} belongs in backend/api/schemas or a service")
            if isinstance(node, ast.FunctionDef) and not node.decorator_list:
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                assert length <= 25, f"{path.name}: helper {node.name}() ({length} lines) belongs in a service"
