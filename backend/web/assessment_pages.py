"""Overview, new-assessment and assessment (status or report) pages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from .. import audit
from ..api.deps import SessionDep
from ..db.models import ModelRecord, ScanSet
from ..services.job_states import JobState
from ..services.reference_estimates import model_voxels, recipe_epochs, training_rate
from ..services.reference_sets import org_reference_sets
from . import queries
from .options import assessment_form
from .render import PageNotFound, PageUser, render

router = APIRouter()
PAGE_SIZE = 25


@router.get("/", response_class=HTMLResponse)
def overview(
    request: Request,
    session: SessionDep,
    user: PageUser,
    state: str | None = None,
    level: str | None = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    sort: str = "newest",
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> HTMLResponse:
    """Every assessment of the organisation: state, live progress, verdict; filter and sort."""
    text = (q or "").replace("\x00", "").strip() or None
    rows, total = queries.list_assessments(
        session, user, state=state, level=level, text=text, sort=sort, limit=PAGE_SIZE, offset=offset
    )
    filters = {"state": state if state in queries.STATES else "", "level": level if level in queries.LEVELS else "",
               "q": text or "", "sort": sort if sort in queries.SORTS else "newest"}
    return render(
        request, "overview.html.j2", user, active="overview", rows=rows, total=total, offset=offset,
        page_size=PAGE_SIZE, filters=filters, states=queries.STATES, levels=queries.LEVELS,
        sorts={k: v[0] for k, v in queries.SORTS.items()},
        has_models=queries.has_any(session, user, ModelRecord), has_scan_sets=queries.has_any(session, user, ScanSet),
    )


@router.get("/assessments/new", response_class=HTMLResponse)
def new_assessment(
    request: Request, session: SessionDep, user: PageUser, model_id: str | None = None, scan_set_id: str | None = None
) -> HTMLResponse:
    """The new-assessment form: defaults run the paper's full set of attacks and the quantile attacks;
    reference models (trained, or a reference set of the chosen scan set) are offered, with an
    estimate of their training time at this server's measured rate."""
    from worker.engine.power import planned_power

    models, scan_sets = queries.org_models(session, user), queries.org_scan_sets(session, user)
    return render(
        request, "assessment_new.html.j2", user, active="new",
        models=models, scan_sets=scan_sets,
        scan_set_power={s.id: planned_power(s.n_members, s.n_nonmembers, every_scan=True)["message"]
                        for s in scan_sets if s.n_members and s.n_nonmembers},
        model_grids={m.id: (model_voxels(m.model_metadata or {}), recipe_epochs({}, m.model_metadata or {}))
                     for m in models},
        training_rate=training_rate(session, user.org_id),
        reference_sets=org_reference_sets(session, user.org_id),
        form=assessment_form(), selected_model=model_id or "", selected_scan_set=scan_set_id or "",
    )


@router.get("/assessments/{assessment_id}", response_class=HTMLResponse)
def assessment_page(request: Request, assessment_id: str, session: SessionDep, user: PageUser) -> HTMLResponse:
    """A running assessment's progress, a failed one's reason, or a succeeded one's report."""
    from frontend.report_html import plotly_config

    from ..services.results import report_context

    row = queries.get_assessment(session, user, assessment_id)
    if row is None:
        raise PageNotFound(f"There is no assessment '{assessment_id[:64]}' in your organisation.")
    if row.state != JobState.SUCCEEDED or not row.result_dir:
        return render(request, "assessment_status.html.j2", user, active="overview", row=row, options=row.options)
    try:
        context = report_context(row.result_dir)
    except FileNotFoundError:
        raise PageNotFound(f"The results of assessment '{row.id}' are missing from the storage.") from None
    audit.record(session, user, "view", "assessment", row.id, page="report")
    others = [a for a in queries.succeeded_assessments(session, user) if a.id != row.id]
    return render(
        request, "report.html.j2", user, active="overview", row=row, others=others,
        plotly_config=plotly_config(), **context,
    )
