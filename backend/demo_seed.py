"""``brainmia serve --demo``: the demo model and cohort, registered and queued for assessment.

The demo (a synthetic cohort and a 3D-CNN trained to memorise its members, see
:mod:`worker.engine.demo`) is prepared once under ``<data_dir>/demo`` and registered in the
default organisation as any upload would be; its assessment is queued so that the dashboard
shows it running, then its report.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from . import audit
from .auth import DEFAULT_ORG, get_or_create_org
from .db.models import Assessment, ModelRecord, ScanSet, new_id
from .db.session import session_scope
from .services.job_states import new_job
from .services.options import AssessmentOptionsIn, stored_options
from .settings import Settings
from .storage import Storage

DEMO_MODEL_NAME = "Demo 3D-CNN (synthetic cohort)"
DEMO_SCAN_SET_NAME = "Demo cohort (200 synthetic subjects)"


@dataclass(frozen=True)
class SeededDemo:
    """What ``seed_demo`` registered (or found registered)."""

    model_id: str
    scan_set_id: str
    assessment_id: str
    created: bool


def _prepare(
    folder: Path, settings: Settings, options: Any, progress: Callable[[str, float, str], None] | None
) -> tuple[Path, Path]:
    """The demo model and manifest under ``folder``, made once."""
    from worker.engine.cache import VolumeCache
    from worker.engine.demo import prepare_demo

    model = folder / "model" / "demo_brain_age_3d.pt"
    manifest = folder / "cohort" / "manifest.csv"
    if not (model.is_file() and manifest.is_file()):
        shutil.rmtree(folder, ignore_errors=True)  # a half-made demo from an interrupted start
        made = prepare_demo(folder, options, cache=VolumeCache(settings.cache_dir), progress=progress)
        model, manifest = made.model_path, Path(made.manifest.path)
    return model, manifest


def seed_demo(
    factory: Any,
    storage: Storage,
    settings: Settings,
    *,
    options: Any = None,
    progress: Callable[[str, float, str], None] | None = None,
) -> SeededDemo:
    """Register the demo model and scan set in the default organisation and queue their assessment.

    Idempotent: a second start finds the demo model and leaves everything as it is. The queued
    row is sent to the worker by the dispatcher's start-up recovery.

    Args:
        factory: the app's sessionmaker.
        storage: the app's storage (the model file is copied in as an upload would be).
        settings: the app's settings (data and cache folders).
        options: the demo's size (:class:`worker.engine.demo.DemoOptions`; default the full demo).
        progress: called with (stage, fraction, message) while the demo is prepared.
    """
    from worker.engine.manifest import load_manifest
    from worker.engine.models import file_sha256, sidecar_path
    from worker.engine.sandbox.check import check_model_file

    with session_scope(factory) as session:
        org = get_or_create_org(session, DEFAULT_ORG)
        found = session.scalar(select(ModelRecord).where(ModelRecord.org_id == org.id, ModelRecord.name == DEMO_MODEL_NAME))
        if found is not None:
            job = session.scalar(select(Assessment).where(Assessment.model_id == found.id).order_by(Assessment.created_at))
            if job is not None:
                return SeededDemo(found.id, job.scan_set_id, job.id, created=False)
    model_file, manifest_path = _prepare(Path(settings.data_dir) / "demo", settings, options, progress)
    loaded = check_model_file(model_file)  # as an upload: no model runs in the API process
    manifest = load_manifest(manifest_path, confine=True)

    model_id, scan_set_id, assessment_id = new_id(), new_id(), new_id()
    folder = storage.model_dir(model_id)
    folder.mkdir(parents=True)
    stored = folder / model_file.name
    shutil.copy2(model_file, stored)
    shutil.copy2(sidecar_path(model_file), sidecar_path(stored))
    with session_scope(factory) as session:
        org = get_or_create_org(session, DEFAULT_ORG)
        session.add(ModelRecord(
            id=model_id, org_id=org.id, name=DEMO_MODEL_NAME, path=stored.relative_to(storage.root).as_posix(),
            sha256=file_sha256(stored), format=loaded.format, size_bytes=stored.stat().st_size,
            model_metadata=loaded.metadata.model_dump(mode="json"),
        ))
        session.add(ScanSet(
            id=scan_set_id, org_id=org.id, name=DEMO_SCAN_SET_NAME, source="server", root=str(manifest_path.parent),
            manifest_path=str(manifest_path), manifest_sha256=manifest.sha256, n_scans=len(manifest.records),
            n_members=manifest.n_members, n_nonmembers=manifest.n_nonmembers,
            attribute_names=list(manifest.attribute_names),
        ))
        session.flush()
        session.add(new_job(
            id=assessment_id, org_id=org.id, model_id=model_id, scan_set_id=scan_set_id,
            options=stored_options(AssessmentOptionsIn()),
        ))
        audit.record(session, None, "run", "assessment", assessment_id, model_id=model_id, scan_set_id=scan_set_id,
                     demo=True)
    return SeededDemo(model_id, scan_set_id, assessment_id, created=True)
