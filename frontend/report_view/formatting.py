"""Numbers, durations and settings as the report shows them ("n/a" where undefined)."""

from __future__ import annotations

from typing import Any

from ..figures import _data as D
from ..figures._style import finite


def fmt_num(value: Any, fmt: str = ".2f", na: str = "n/a") -> str:
    """``value`` formatted with ``fmt``, or ``na`` when it is not a finite number."""
    f = finite(value)
    return na if f is None else format(f, fmt)


def fmt_pct(value: Any, digits: int = 1, na: str = "n/a") -> str:
    """A rate (0..1) as a percentage (``"71.3%"``), or ``na``."""
    f = finite(value)
    return na if f is None else f"{100 * f:.{digits}f}%"


def fmt_duration(seconds: Any) -> str:
    """``"12.3 s"``, ``"4 min 5 s"`` or ``"1 h 2 min"``; ``"n/a"`` when unknown."""
    s = finite(seconds)
    if s is None:
        return "n/a"
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{int(m)} min {int(s)} s"
    h, m = divmod(m, 60)
    return f"{int(h)} h {int(m)} min"


def setting_value(value: Any) -> str:
    """A setting as text: lists comma-separated, mappings as ``key: value``, None as "(not set)"."""
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else "(none)"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {setting_value(v)}" for k, v in value.items()) or "(none)"
    if value is None:
        return "(not set)"
    return str(value)


def _std(attack: dict, name: str) -> float | None:
    """The std over repeats, None for a single repeat (an attack that tested every scan once)."""
    return None if attack.get("repeats") == 1 else D.metric(attack, name, "std")


def metric_cell(attack: dict, name: str, *, digits: int = 2, ci_digits: int = 1) -> dict:
    """``{"main": "76.45 ± 0.20", "ci": "95% CI 75.9-77.0", "na": bool}`` in % (no ± for one repeat)."""
    mean = D.metric(attack, name)
    if mean is None:
        return {"main": "n/a", "ci": "", "na": True}
    std = _std(attack, name)
    lo, hi = D.metric(attack, name, "ci_low"), D.metric(attack, name, "ci_high")
    main = f"{100 * mean:.{digits}f}" + (f" ± {100 * std:.{digits}f}" if std is not None else "")
    ci = (f"95% CI {100 * lo:.{ci_digits}f}–{100 * hi:.{ci_digits}f}"
          if lo is not None and hi is not None else "")
    return {"main": main, "ci": ci, "na": False}


def auc_cell(attack: dict) -> dict:
    """Like :func:`metric_cell` for the AUC, on its own scale (``"0.781 ± 0.012"``)."""
    mean = D.metric(attack, "auc")
    if mean is None:
        return {"main": "n/a", "ci": "", "na": True}
    std = _std(attack, "auc")
    lo, hi = D.metric(attack, "auc", "ci_low"), D.metric(attack, "auc", "ci_high")
    return {
        "main": f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else ""),
        "ci": f"95% CI {lo:.3f}–{hi:.3f}" if lo is not None and hi is not None else "",
        "na": False,
    }
