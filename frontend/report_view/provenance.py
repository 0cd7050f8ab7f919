"""The provenance section: the model, the scan list, the run, its settings and the reference models
(when the reference-model attacks ran), as label-value rows."""

from __future__ import annotations

from typing import Any

from ..figures import _data as D
from .calibrated import references_rows
from .formatting import fmt_duration, setting_value

#: The provenance tables, in page order: (key of :func:`provenance_view`, heading).
PROVENANCE_BLOCKS = (
    ("model", "Model"),
    ("manifest", "Scan list (manifest)"),
    ("run", "Run"),
    ("settings", "Settings"),
    ("references", "Reference models"),
)


def _clean(rows: list[tuple[str, Any]]) -> list[tuple[str, str]]:
    """Values as text, "n/a" where empty."""
    return [(k, "n/a" if v is None or v == "" else str(v)) for k, v in rows]


def _source_rows(source: dict) -> list[tuple[str, Any]]:
    """Where a derived manifest came from: a BIDS dataset, its filter and the member lists."""
    if source.get("kind") != "bids":
        return []
    filters = source.get("filter") or {}
    both = source.get("subjects_in_both") or []
    return [
        ("Derived from", f"BIDS dataset {source.get('dataset')}"),
        ("BIDS filter", ",".join(f"{k}={'|'.join(v) if isinstance(v, list) else v}" for k, v in filters.items())),
        ("Member list", f"{source.get('members_file')} (SHA-256 {source.get('members_sha256')})"),
        ("Non-members", f"{source.get('non_members_file')} (SHA-256 {source.get('non_members_sha256')})"
         if source.get("non_members_file") else source.get("non_members_from")),
    ] + ([("Subjects on both sides", ", ".join(both))] if both else [])


def provenance_view(report: dict) -> dict:
    """``model``, ``manifest``, ``run``, ``settings`` and ``references`` (empty without reference
    models): lists of (label, text) rows; ``blocks``: the (key, heading) pairs to show, in order."""
    p = D.part(report, "provenance")
    model, manifest = D.part(p, "model"), D.part(p, "manifest")
    meta = D.part(model, "metadata")
    model_rows = [
        ("File", model.get("path")),
        ("Format", model.get("format")),
        ("Architecture", model.get("architecture") or "(custom / not declared)"),
        ("SHA-256", model.get("sha256")),
    ] + [(f"Metadata: {k}", setting_value(v)) for k, v in meta.items()]
    manifest_rows = [
        ("File", manifest.get("path")),
        ("SHA-256", manifest.get("sha256")),
        ("Scans", manifest.get("n_scans")),
        ("Members (training scans)", manifest.get("n_members")),
        ("Non-members (unseen scans)", manifest.get("n_nonmembers")),
    ] + _source_rows(D.part(manifest, "source"))
    request = D.part(p, "request")
    run_rows = ([
        ("Assessment", request.get("assessment_id")),
        ("Requested by", request.get("requested_by")
         + (f" ({request['organisation']})" if request.get("organisation") else "")),
        ("Requested", request.get("requested_at")),
    ] if request.get("requested_by") else []) + [
        ("BrainMIA version", p.get("package_version")),
        ("Report schema", report.get("schema_version")),
        ("Created", p.get("created_at")),
        ("Duration", fmt_duration(p.get("duration_s"))),
        ("Host", p.get("host")),
    ] + ([("Python", p.get("python"))] if p.get("python") else [])
    settings_rows = [(str(k), setting_value(v)) for k, v in D.settings(report).items()]
    references = references_rows(report)
    return {
        "model": _clean(model_rows),
        "manifest": _clean(manifest_rows),
        "run": _clean(run_rows),
        "settings": _clean(settings_rows),
        "references": references,
        "blocks": [(k, h) for k, h in PROVENANCE_BLOCKS if k != "references" or references],
    }
