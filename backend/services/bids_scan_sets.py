"""Scan sets from a BIDS dataset already on the server (``POST /scan-sets/from-path`` with ``bids_path``).

The dataset folder and any member / non-member list file must lie under the organisation's server
folders (:func:`backend.server_manifests.allowed_server_path`: one 404 answer otherwise). The engine
derives the manifest (:func:`worker.engine.bids.bids_manifest`, confined to the dataset), every scan
is opened as NIfTI, and the derived ``manifest.csv`` with its ``manifest.source.json`` (and the lists
sent inline) is published to ``scan_sets/<id>/``; the scans stay where they are. The row's ``root`` is
the dataset folder, so the job runner loads the stored manifest confined to it, unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from sqlalchemy.orm import Session

from ..auth import Principal
from ..db.models import Organisation, ScanSet, new_id
from ..server_manifests import allowed_server_path
from ..settings import Settings
from ..storage import Storage
from .errors import ApiError, field_error
from .scan_set_uploads import MANIFEST_NAME, _add, _check_scans, _relative

__all__ = ["add_from_bids"]


def _absolute(value: str, field: str) -> Path:
    if "\x00" in value or not Path(value).is_absolute():
        raise ApiError(422, "invalid_input", f"{field} must be an absolute path", [{"field": field, "reason": "not absolute"}])
    return Path(value)


def _id_list(path_value: str | None, inline: list[str] | None, field: str, settings: Settings, org: str,
             work: Path) -> Path | None:
    """The list file: a server file under the organisation's folders, or the inline IDs written to ``work``."""
    if path_value is not None and inline is not None:
        raise field_error(field, f"give {field}_path or {field}, not both")
    if inline is not None:
        if not inline:
            raise field_error(field, "the list is empty")
        path = work / f"{field.replace('_', '-')}.txt"
        path.write_text("".join(item.strip() + "\n" for item in inline), encoding="utf-8")
        return path
    if path_value is None:
        return None
    return allowed_server_path(settings, org, _absolute(path_value, f"{field}_path"), field=f"{field}_path")


def _derive(body: Any, root: Path, members: Path, non_members: Path | None, work: Path, settings: Settings) -> tuple[Any, int]:
    """The derived manifest (written into ``work``) with every scan opened; 422 with each problem."""
    from worker.engine.bids import BidsError, BidsInput, bids_manifest
    from worker.engine.errors import InputError, ManifestError

    from .errors import from_input_error

    label = root.name

    def hide(text: str) -> str:  # no server path in a message
        for base, name in ((work, "the request"), (root, label), (members.parent, "."),
                           (non_members.parent if non_members else None, ".")):
            if base is not None:
                text = _relative(text, base, name)
        return text

    try:
        manifest = bids_manifest(BidsInput(root, members, non_members, body.bids_filter), work / MANIFEST_NAME,
                                 confine=True)
    except BidsError as exc:
        details = [{"reason": hide(p)} for p in exc.problems]  # each names its subject (and file)
        raise ApiError(422, "invalid_bids", f"{len(exc.problems)} problem(s) in the BIDS dataset {label}",
                       details) from None
    except ManifestError as exc:
        err = from_input_error(exc)
        for detail in err.details:
            detail["reason"] = hide(detail["reason"])
        raise err from None
    except InputError as exc:
        raise ApiError(422, "invalid_input", hide(str(exc))) from None
    _check_scans(manifest.records, root, label, settings)
    size = sum(p.stat().st_size for p in {r.path for r in manifest.records})
    return manifest, size


async def add_from_bids(session: Session, storage: Storage, settings: Settings, principal: Principal, body: Any) -> ScanSet:
    """Register a BIDS dataset under one of the organisation's folders, with its member list.

    Args:
        session: the request's session (committed here).
        storage: where the derived manifest is published.
        settings: the server folders and volume limits.
        principal: the caller.
        body: the request (:class:`~backend.api.schemas.ScanSetFromPath` with ``bids_path``).

    Raises:
        ApiError: 422 a relative path, missing or doubled members, dataset problems (each naming
            the subject) or unreadable scans; 404 (one answer) a path the organisation may not use.
    """
    if body.manifest_path is not None:
        raise field_error("manifest_path", "give manifest_path or bids_path, not both")
    org_row = session.get(Organisation, principal.org_id)
    org = org_row.name if org_row else ""
    root = await anyio.to_thread.run_sync(
        lambda: allowed_server_path(settings, org, _absolute(body.bids_path, "bids_path"), field="bids_path", folder=True)
    )
    if body.members_path is None and body.members is None:
        raise field_error("members", "give members_path (a file of subject IDs on the server) or members (the IDs)")
    scan_set_id = new_id()
    work = storage.temp_dir()
    final = storage.scan_set_dir(scan_set_id)
    published = False
    try:
        members = await anyio.to_thread.run_sync(
            _id_list, body.members_path, body.members, "members", settings, org, work)
        non_members = await anyio.to_thread.run_sync(
            _id_list, body.non_members_path, body.non_members, "non_members", settings, org, work)
        manifest, size = await anyio.to_thread.run_sync(_derive, body, root, members, non_members, work, settings)
        Storage.publish_dir(work, final)
        published = True
        source = manifest.source
        row = _add(
            session, scan_set_id, principal, (body.name or "").strip() or root.name, "bids", str(root),
            str(final / MANIFEST_NAME), manifest, size, bids_path=str(root), bids_filter=source.get("filter"),
            members_sha256=source.get("members_sha256"), non_members_sha256=source.get("non_members_sha256"),
        )
        session.commit()
    except BaseException:
        session.rollback()
        Storage.remove([final] if published else [work])
        raise
    return row
