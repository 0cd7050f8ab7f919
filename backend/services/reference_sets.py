"""Reference sets: a user's own reference models for one scan set, with their ``keep.csv``.

LiRA, RMIA and the calibrated loss compare the assessed model with *reference models*: models
trained the same way on known parts of the audit scans. BrainMIA can train them
(``options.reference.models`` / ``recipe``), or the user brings models trained in their own
pipeline: a reference set, uploaded here and named by ``options.reference.reference_set_id``.

The upload is one archive (.zip, .tar.gz...) holding, at its top or in its single top folder:

- ``keep.csv``: a ``scan_id`` column and one 0/1 column per model file stem (1 = that model
  trained on that audit scan; a model with no column is OUT for every scan; DESIGN.md);
- the model files, any supported format, each with an optional sidecar ``<file>.json``. Other
  files there (``.csv``, ``.txt``, ``.md``, JSON that is no sidecar, hidden files) and
  subfolders are ignored and not kept. An optional ``metadata`` form field (JSON, as for a
  model upload) sets the input of every model on top of its sidecar.

The archive is only ever read by :func:`backend.archives.extract_archive`. ``keep.csv`` is
checked first against the scan set's scan ids with the engine's reader (every bad cell answered
with its line and column); then every model is loaded safely and run once in the confined model
host, exactly as a model upload is, and all must take the same input grid. Only then are the
models, their sidecars and keep.csv published to ``reference_sets/<id>/`` (one rename) and the
row stored; nothing is kept from a refused upload.

A reference set belongs to its scan set: an assessment may use it only on that scan set, and a
scan set that still has reference sets cannot be deleted (409, as while assessments use it:
the scan-set row is referred to by a foreign key). Deleting a reference set an assessment
names answers 409 too (delete the assessments first), as for models.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .. import audit
from ..archives import ArchiveError, extract_archive
from ..auth import Principal
from ..db.models import Assessment, ReferenceSet, ScanSet, new_id
from ..settings import Settings
from ..storage import Storage
from .errors import ApiError, field_error, not_found
from .model_uploads import parse_metadata
from .uploads import UploadedFile, archive_limits, archive_stem, delete_with_files, owned_row, viewed_row

KEEP_NAME = "keep.csv"
MAX_ID_LENGTH = 64
MAX_MODELS = 256
"""Most model files in one reference set (as many as BrainMIA would train)."""
_NOT_MODELS = {".json", ".csv", ".txt", ".md"}  # as `brainmia assess --reference-models`
_IGNORED_TOP = {"__MACOSX", ".DS_Store"}


def reference_set_dir(storage: Storage, reference_set_id: str) -> Path:
    """Folder of one reference set's files."""
    return storage.root / "reference_sets" / reference_set_id


def owned_reference_set(session: Session, principal: Principal, reference_set_id: str) -> ReferenceSet:
    """The caller's organisation's reference set ``reference_set_id``; 404 otherwise (also for an id
    with a NUL byte or over 64 characters, which no row has)."""
    if "\x00" in reference_set_id or len(reference_set_id) > MAX_ID_LENGTH:
        raise not_found("reference set", reference_set_id.replace("\x00", "\\x00")[:MAX_ID_LENGTH])
    return owned_row(session, principal, ReferenceSet, reference_set_id, "reference set")


def view_reference_set(session: Session, principal: Principal, reference_set_id: str) -> ReferenceSet:
    """The caller's reference set (404 otherwise), its view recorded in the audit log."""
    return viewed_row(session, principal, ReferenceSet, reference_set_id, "reference set", "reference_set")


def org_reference_sets(session: Session, org_id: str) -> list[ReferenceSet]:
    """The organisation's reference sets, newest first (for the pages)."""
    return list(session.scalars(select(ReferenceSet).where(ReferenceSet.org_id == org_id)
                                .order_by(ReferenceSet.created_at.desc(), ReferenceSet.id.desc())))


# --- checking an upload --------------------------------------------------------------------


@dataclass
class _Checked:
    """A checked reference set in a clean folder, ready to publish."""

    folder: Path
    files: list[str]
    formats: list[str]
    metadata: dict[str, Any]
    keep_sha256: str
    keep_hash: str
    size: int


def _root(content: Path) -> Path:
    """The folder holding keep.csv: the archive's top, or its single top folder."""
    if (content / KEEP_NAME).is_file():
        return content
    entries = [p for p in content.iterdir() if p.name not in _IGNORED_TOP]
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / KEEP_NAME).is_file():
        return entries[0]
    raise ApiError(422, "invalid_archive", f"no {KEEP_NAME} at the top of the archive or in its single top folder",
                   [{"field": "archive", "reason": f"{KEEP_NAME} not found"}])


def _model_files(root: Path) -> list[Path]:
    """The model files next to keep.csv; 422 when there is none, too many, or two share a stem."""
    files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.name != KEEP_NAME and p.suffix.lower() not in _NOT_MODELS)
    if not files:
        raise ApiError(422, "invalid_archive", f"no model file next to {KEEP_NAME} in the archive",
                       [{"field": "archive", "reason": "no model files"}])
    if len(files) > MAX_MODELS:
        raise ApiError(422, "invalid_archive", f"{len(files)} model files: at most {MAX_MODELS} per reference set",
                       [{"field": "archive", "reason": f"more than {MAX_MODELS} model files"}])
    stems: dict[str, str] = {}
    for path in files:
        if path.stem in stems:
            reason = f"{stems[path.stem]} and {path.name} have the same stem '{path.stem}' (keep.csv's column names)"
            raise ApiError(422, "invalid_archive", reason, [{"field": path.name, "reason": reason}])
        stems[path.stem] = path.name
    return files


def _read_keep(keep: Path, scan_ids: list[str], stems: list[str]) -> str:
    """Check keep.csv against the scan set's ids and the model stems; returns the keep matrix's hash.

    Raises:
        ApiError: 422 ``invalid_keep`` naming each bad line and column.
    """
    from worker.engine.errors import InputError, ManifestError
    from worker.engine.reference.keep import keep_hash, read_keep_csv

    try:
        return keep_hash(read_keep_csv(keep, scan_ids, stems))
    except ManifestError as exc:
        details = [{"line": e.line, "field": e.column, "reason": e.reason} for e in exc.errors]
        raise ApiError(422, "invalid_keep", f"{len(details)} problem(s) in {KEEP_NAME}", details) from None
    except InputError as exc:
        reason = str(exc).replace(str(keep), KEEP_NAME)
        raise ApiError(422, "invalid_keep", reason, [{"field": KEEP_NAME, "reason": reason}]) from None


def grid_text(spec: Any) -> str:
    """A conform spec in words: ``a 91x109x91 grid of 2 mm voxels, zscore intensities``."""
    voxels = sorted(set(spec.voxel_size))
    size = f"{voxels[0]:g}" if len(voxels) == 1 else "x".join(f"{v:g}" for v in spec.voxel_size)
    return f"a {'x'.join(str(n) for n in spec.shape)} grid of {size} mm voxels, {spec.normalize} intensities"


def _sandbox_limits(settings: Settings) -> dict[str, Any]:
    """The model upload's check limits (:mod:`backend.services.model_uploads`)."""
    return {"timeout_s": settings.model_check_timeout_s, "memory_bytes": settings.model_check_memory_mb << 20,
            "private": settings.private_dirs}


def _place(path: Path, dest: Path, overrides: dict[str, Any], hide: Callable[[str], str]) -> Path:
    """Move one model to ``dest`` with its resolved sidecar; 422 naming it when its metadata is bad."""
    from worker.engine.errors import InputError
    from worker.engine.models import resolve_metadata, sidecar_path, write_sidecar

    try:
        metadata = resolve_metadata(path, overrides)
    except InputError as exc:
        raise ApiError(422, "invalid_metadata", hide(str(exc)), [{"field": path.name, "reason": hide(str(exc))}]) from None
    os.replace(path, dest)
    sidecar_path(path).unlink(missing_ok=True)
    write_sidecar(dest, metadata)
    return dest


def _check_models(paths: list[Path], hide: Callable[[str], str], settings: Settings) -> list[Any]:
    """Load every model safely and run it once in the confined host; all must take one input grid."""
    from worker.engine.errors import InputError, ModelError
    from worker.engine.sandbox.check import check_model_files

    try:
        checked = check_model_files(paths, **_sandbox_limits(settings))
    except ModelError as exc:
        name = Path(str(exc.path)).name
        reason = hide(exc.reason)
        raise ApiError(422, "invalid_model", f"{name}: {reason}", [{"field": name, "reason": reason}]) from None
    except InputError as exc:
        reason = hide(str(exc))
        raise ApiError(422, "invalid_model", reason, [{"field": "archive", "reason": reason}]) from None
    first = checked[0].metadata.conform_spec()
    for model in checked[1:]:
        if model.metadata.conform_spec() != first:
            reason = (f"it takes {grid_text(model.metadata.conform_spec())}, {checked[0].path.name} takes "
                      f"{grid_text(first)}: the reference models of a set take one input (the assessed model's)")
            raise ApiError(422, "invalid_metadata", f"{model.path.name}: {reason}",
                           [{"field": model.path.name, "reason": reason}])
    return checked


def _scan_ids(storage: Storage, scan_set: ScanSet) -> list[str]:
    """The scan set's scan ids, in manifest order (its files are not opened)."""
    from worker.engine.errors import InputError
    from worker.engine.manifest import load_manifest

    def stored(path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else storage.root / p

    try:
        manifest = load_manifest(stored(scan_set.manifest_path), base_dir=stored(scan_set.root), check_files=False,
                                 confine=True)
    except InputError:
        raise ApiError(422, "invalid_input", f"the manifest of scan set '{scan_set.name}' can no longer be read: "
                       "register it again") from None
    return [str(r.scan_id) for r in manifest.records]


def _check_upload(archive: Path, work: Path, scan_ids: list[str], overrides: dict[str, Any],
                  settings: Settings) -> _Checked:
    """Extract safely into ``work``, check keep.csv, then every model; 422 at the first fault."""
    content = work / ".content"  # client file names never start with a dot
    clean = work / ".reference_set"

    def hide(text: str) -> str:
        for folder in (content, clean, work):
            text = text.replace(str(folder) + os.sep, "").replace(str(folder), "the archive")
        return text

    try:
        extract_archive(archive, content, archive_limits(settings))
    except ArchiveError as exc:
        raise ApiError(422, "invalid_archive", f"archive refused: {exc}",
                       [{"field": exc.member or "archive", "reason": exc.reason}]) from None
    archive.unlink()
    root = _root(content)
    files = _model_files(root)
    keep = root / KEEP_NAME
    digest = _read_keep(keep, scan_ids, [p.stem for p in files])
    clean.mkdir()
    placed = [_place(p, clean / p.name, overrides, hide) for p in files]
    checked = _check_models(placed, hide, settings)
    keep_bytes = keep.read_bytes()
    os.replace(keep, clean / KEEP_NAME)
    Storage.remove([content])
    size = sum(p.stat().st_size for p in clean.iterdir() if p.is_file())
    return _Checked(folder=clean, files=[p.name for p in placed], formats=[m.format for m in checked],
                    metadata=json.loads(checked[0].metadata.model_dump_json()),
                    keep_sha256=hashlib.sha256(keep_bytes).hexdigest(), keep_hash=digest, size=size)


async def add_reference_set(session: Session, storage: Storage, settings: Settings, principal: Principal,
                            upload: UploadedFile, work: Path, *, scan_set_id: str | None, name: str | None,
                            metadata: str | None) -> ReferenceSet:
    """Check an uploaded reference set of one of the caller's scan sets and publish it.

    Args:
        session: the request's session (committed here).
        storage: where the files are published (``reference_sets/<id>/``).
        settings: extraction limits, the model check's time and memory limits.
        principal: the uploader.
        upload: the archive, inside ``work``.
        work: the upload's private temporary folder (the caller removes it afterwards).
        scan_set_id: the ``scan_set_id`` form field: the scan set whose scans keep.csv names.
        name: the display name, if sent (default: the archive's name).
        metadata: the ``metadata`` form field (JSON, applied to every model), if sent.

    Raises:
        ApiError: 404 a scan set not the caller's; 422 no scan set, an unsafe archive, a bad
            keep.csv (line and column of each fault), a model refused, unreadable or
            misbehaving, or models with different inputs; nothing is kept.
    """
    from .scan_set_uploads import owned_scan_set  # here: scan_set_uploads may import this module

    if not (scan_set_id or "").strip():
        raise field_error("scan_set_id", "Field required: the scan set whose scans keep.csv names")
    scan_set = owned_scan_set(session, principal, scan_set_id.strip())
    overrides = parse_metadata(metadata).model_dump(exclude_unset=True)
    reference_set_id = new_id()
    final = reference_set_dir(storage, reference_set_id)
    published = False
    try:
        scan_ids = await anyio.to_thread.run_sync(_scan_ids, storage, scan_set)
        checked = await anyio.to_thread.run_sync(_check_upload, upload.path, work, scan_ids, overrides, settings)
        Storage.publish_dir(checked.folder, final)
        published = True
        row = ReferenceSet(
            id=reference_set_id, org_id=principal.org_id, scan_set_id=scan_set.id,
            name=((name or "").strip() or archive_stem(upload.filename) or reference_set_id)[:500],
            root=final.relative_to(storage.root).as_posix(), model_files=checked.files, formats=checked.formats,
            model_metadata=checked.metadata, keep_sha256=checked.keep_sha256, keep_hash=checked.keep_hash,
            archive_sha256=upload.sha256, size_bytes=checked.size, created_by=principal.token_id,
        )
        session.add(row)
        audit.record(session, principal, "upload", "reference_set", reference_set_id, name=row.name,
                     scan_set_id=scan_set.id, n_models=len(checked.files), keep_sha256=checked.keep_sha256,
                     archive_sha256=upload.sha256)
        session.commit()
    except BaseException:
        session.rollback()
        if published:
            Storage.remove([final])
        raise
    return row


# --- using and deleting --------------------------------------------------------------------


def _users(session: Session, row: ReferenceSet) -> int:
    """Assessments whose options name the reference set (they are all on its scan set)."""
    options = session.scalars(select(Assessment.options).where(Assessment.scan_set_id == row.scan_set_id,
                                                               Assessment.org_id == row.org_id))
    return sum(1 for o in options if ((o or {}).get("reference") or {}).get("reference_set_id") == row.id)


def delete_reference_set(session: Session, storage: Storage, principal: Principal, reference_set_id: str) -> None:
    """Delete a reference set's row and files; 409 while an assessment names it (delete those first)."""
    row = owned_reference_set(session, principal, reference_set_id)
    users = _users(session, row)
    if users:
        raise ApiError(409, "in_use", f"reference set '{reference_set_id}' is used by {users} assessment(s): "
                       "delete them first")
    delete_with_files(
        session, storage, row, reference_set_dir(storage, reference_set_id), what="reference set",
        record=lambda: audit.record(session, principal, "delete", "reference_set", reference_set_id, name=row.name,
                                    scan_set_id=row.scan_set_id),
    )


def refuse_if_scan_set_has_reference_sets(session: Session, scan_set_id: str) -> None:
    """409 ``in_use`` while reference sets belong to the scan set (for deleting a scan set)."""
    count = session.scalar(select(func.count()).select_from(ReferenceSet)
                           .where(ReferenceSet.scan_set_id == scan_set_id)) or 0
    if count:
        raise ApiError(409, "in_use", f"scan set '{scan_set_id}' has {count} reference set(s): delete them first")


def check_for_assessment(session: Session, principal: Principal, reference_set_id: str, scan_set_id: str,
                         model_metadata: dict[str, Any] | None) -> ReferenceSet:
    """The reference set an assessment asks for, checked: the caller's, of the assessment's scan
    set, taking the assessed model's input grid.

    Raises:
        ApiError: 404 not the caller's; 422 ``validation_error`` naming
            ``options.reference.reference_set_id`` for another scan set or another grid.
    """
    from pydantic import ValidationError

    from worker.engine.errors import InputError
    from worker.engine.models import ModelMetadata

    where = "options.reference.reference_set_id"
    row = owned_reference_set(session, principal, reference_set_id)
    if row.scan_set_id != scan_set_id:
        raise field_error(where, f"reference set '{row.name}' is for another scan set: its keep.csv names that "
                                 "scan set's scans")
    try:
        theirs = ModelMetadata.model_validate(row.model_metadata or {}).conform_spec()
        ours = ModelMetadata.model_validate(model_metadata or {}).conform_spec()
    except (ValidationError, InputError):
        return row  # the runner's loader reports it
    if theirs != ours:
        raise field_error(where, f"the reference models take {grid_text(theirs)}, the assessed model "
                                 f"{grid_text(ours)}: references must take the assessed model's input")
    return row


def supplied_reference_files(session: Session, reference_set_id: str, storage: Storage, *,
                             org_id: str | None = None) -> tuple[list[Path], Path]:
    """The model files and keep.csv of a reference set, for the job runner.

    Args:
        session: a database session.
        reference_set_id: ``options.reference.reference_set_id`` of the job.
        storage: the storage its files are in.
        org_id: the job's organisation (a reference set of another one is not found).

    Returns:
        the model files (each with its sidecar beside it) in upload order, and keep.csv.

    Raises:
        InputError: the reference set was deleted, or its files are missing.
    """
    from worker.engine.errors import InputError

    row = session.get(ReferenceSet, reference_set_id)
    if row is None or (org_id is not None and row.org_id != org_id):
        raise InputError(f"reference set '{reference_set_id}' of this assessment was deleted")
    root = Path(row.root) if Path(row.root).is_absolute() else storage.root / row.root
    models = [root / name for name in row.model_files or []]
    keep = root / KEEP_NAME
    missing = [p.name for p in [*models, keep] if not p.is_file()]
    if missing:
        raise InputError(f"reference set '{row.name}': files missing from the storage: {', '.join(missing[:5])}")
    return models, keep
