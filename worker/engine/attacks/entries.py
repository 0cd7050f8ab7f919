"""The report entry of an attack that could not run: one shape for every family."""

from __future__ import annotations

from typing import Any


def error_entry(name: str, message: str, *, feature_set: str, threat_model: str | None, classifier: str,
                **known: Any) -> dict[str, Any]:
    """An attack entry with ``status="error"``: no metrics, the error text, and any known fields.

    Args:
        name: the attack's name.
        message: why it failed (shown to the user).
        feature_set, threat_model, classifier: what it would have been.
        **known: further fields already known (``family``, ``n_references``, ``n_train``...).
    """
    entry: dict[str, Any] = {
        "name": name, "feature_set": feature_set, "threat_model": threat_model, "classifier": classifier,
        "status": "error", "error": message, "n_features": None, "n_train": None, "n_test": None,
        "repeats": None, "metrics": {}, "roc": None, "by_age_bin": [], "by_attribute": {}, "duration_s": None,
    }
    entry.update(known)
    return entry
