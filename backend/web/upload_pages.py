"""Model and scan-set pages: what the organisation has, and the upload forms."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from ..api.deps import SessionDep, SettingsDep
from ..db.models import Organisation
from ..server_manifests import manifest_roots_for
from ..services.reference_sets import org_reference_sets
from . import queries
from .render import PageUser, render

router = APIRouter()


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request, session: SessionDep, user: PageUser) -> HTMLResponse:
    """The organisation's models and the upload form (metadata fields with the engine's defaults)."""
    from worker.engine.models import ModelMetadata
    from worker.engine.models.registry import ARCHITECTURES
    from worker.engine.normalize import NORMALIZATIONS

    meta = ModelMetadata()
    defaults = {
        "input_shape": ",".join(str(v) for v in meta.input_shape),
        "voxel_size": ",".join(f"{v:g}" for v in meta.voxel_size),
        "normalize": meta.normalize,
    }
    return render(
        request, "models.html.j2", user, active="models", models=queries.org_models(session, user),
        defaults=defaults, normalizations=sorted(NORMALIZATIONS), architectures=sorted(ARCHITECTURES),
    )


def _org_name(session: Session, org_id: str) -> str:
    org = session.get(Organisation, org_id)
    return org.name if org is not None else ""


@router.get("/scan-sets", response_class=HTMLResponse)
def scan_sets_page(request: Request, session: SessionDep, settings: SettingsDep, user: PageUser) -> HTMLResponse:
    """The organisation's scan sets and reference sets, the archive / server-manifest forms and the
    reference-set upload."""
    scan_sets = queries.org_scan_sets(session, user)
    return render(
        request, "scan_sets.html.j2", user, active="scan-sets", scan_sets=scan_sets,
        manifest_roots=[str(r) for r in manifest_roots_for(settings, _org_name(session, user.org_id))],
        reference_sets=org_reference_sets(session, user.org_id), scan_set_names={s.id: s.name for s in scan_sets},
    )
