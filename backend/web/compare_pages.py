"""Compare two assessments side by side."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from .. import audit
from ..api.deps import SessionDep
from ..services.job_states import JobState
from . import queries
from .render import PageNotFound, PageUser, render

router = APIRouter()


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request, session: SessionDep, user: PageUser, a: str | None = None, b: str | None = None
) -> HTMLResponse:
    """Pick two finished assessments; with both, their verdicts, numbers and figures side by side."""
    from frontend.compare import build_comparison

    from ..services.results import load_results

    choices = queries.succeeded_assessments(session, user)
    context = {"choices": choices, "a_id": a or "", "b_id": b or "", "comparison": None, "rows": {}}
    if a and b:
        rows = {}
        for key, assessment_id in (("a", a), ("b", b)):
            row = queries.get_assessment(session, user, assessment_id)
            if row is None:
                raise PageNotFound(f"There is no assessment '{assessment_id[:64]}' in your organisation.")
            if row.state != JobState.SUCCEEDED or not row.result_dir:
                raise PageNotFound(f"Assessment '{row.id[:8]}' is {row.state}: only finished reports can be compared.")
            rows[key] = (row, *load_results(row.result_dir))
        (row_a, report_a, features_a), (row_b, report_b, features_b) = rows["a"], rows["b"]
        context["rows"] = {"a": row_a, "b": row_b}
        context["comparison"] = build_comparison(
            report_a, report_b, features_a, features_b,
            label_a=f"A: {row_a.model_name}", label_b=f"B: {row_b.model_name}",
        )
        audit.record(session, user, "view", "assessment", row_a.id, page="compare", compared_with=row_b.id)
    from frontend.report_html import plotly_config

    return render(request, "compare.html.j2", user, active="compare", plotly_config=plotly_config(), **context)
