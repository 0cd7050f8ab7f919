"""The terminal summary names the report's strongest attack first (the verdict's rule, not the
highest accuracy)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from tests.conftest import REPO

ATTACK_LINE = re.compile(r"^  (\S+)\s+accuracy\s+\S+%\s+AUC ")


def _attack_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if ATTACK_LINE.match(line)]


def test_first_attack_printed_is_the_verdicts_strongest(tiny_cohort: Path, leaky_predictions: Path,
                                                        tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRAINMIA_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["COLUMNS"] = "200"  # one line per attack
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "backend.cli", "assess", "--predictions", str(leaky_predictions), "--manifest",
         str(tiny_cohort), "--out", str(out), "--classifier", "threshold", "--classifier", "logistic",
         "--repeats", "2", "-q"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode in (0, 1), done.stderr
    report = json.loads((out / "report.json").read_text())
    lines = _attack_lines(done.stderr)
    assert len(lines) == min(3, sum(a["status"] == "ok" for a in report["attacks"])) >= 2, done.stderr
    assert ATTACK_LINE.match(lines[0]).group(1) == report["verdict"]["strongest_attack"], done.stderr
    assert lines[0].endswith("(strongest)") and not any("strongest" in line for line in lines[1:])


def _attack(name: str, accuracy: float, auc_low: float) -> dict:
    def metric(mean: float, low: float) -> dict:
        return {"mean": mean, "std": 0.01, "ci_low": low, "ci_high": min(1.0, mean + 0.05)}

    return {"name": name, "status": "ok", "metrics": {
        "accuracy": metric(accuracy, accuracy - 0.05), "auc": metric(auc_low + 0.05, auc_low),
        "tpr_at_fpr_0.01": metric(0.05, 0.01),
    }}


def test_ranked_by_the_verdicts_rule_not_by_accuracy(monkeypatch: pytest.MonkeyPatch) -> None:
    from backend.cli import summary

    report = {
        "verdict": {"level": "medium", "passed": False, "summary": "", "strongest_attack": "error/threshold"},
        "attacks": [
            _attack("grad-norm/logistic", accuracy=0.80, auc_low=0.60),  # most accurate, weaker AUC bound
            _attack("error/threshold", accuracy=0.70, auc_low=0.72),
            {"name": "grad:output/mlp", "status": "error", "metrics": {}},
            _attack("prediction+label/logistic", accuracy=0.75, auc_low=0.65),
        ],
    }
    captured = io.StringIO()
    monkeypatch.setattr(summary, "stderr", Console(file=captured, width=200))
    summary.print_summary(report, {})
    names = [ATTACK_LINE.match(line).group(1) for line in _attack_lines(captured.getvalue())]
    assert names == ["error/threshold", "prediction+label/logistic", "grad-norm/logistic"]
    assert "attacks that failed: grad:output/mlp" in captured.getvalue()
