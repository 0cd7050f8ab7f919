"""Rendering pages and the signed-in user of a page."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment


from ..auth import Principal, principal_by_token_id
from ..api.deps import SessionDep


class SignInRequired(Exception):
    """The page needs a signed-in user; answered with a redirect to the sign-in page."""

    def __init__(self, next_url: str):
        self.next_url = next_url
        super().__init__(next_url)


class PageForbidden(Exception):
    """The signed-in user may not see this page (e.g. the audit log without admin rights)."""


def sign_in_url(next_url: str | None = None) -> str:
    """The sign-in page, returning to ``next_url`` afterwards."""
    return "/sign-in" + (f"?next={quote(next_url, safe='/')}" if next_url and next_url != "/" else "")


def page_principal(request: Request, session: SessionDep) -> Principal:
    """The user signed in through the session cookie; redirects to sign-in otherwise."""
    token_id = request.session.get("token_id") if "session" in request.scope else None
    principal = principal_by_token_id(session, token_id) if token_id else None
    if principal is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(path)
    return principal


PageUser = Annotated[Principal, Depends(page_principal)]


def page_admin(user: PageUser) -> Principal:
    """The signed-in user, who must be an administrator."""
    if not user.is_admin:
        raise PageForbidden("this page is for administrators")
    return user


PageAdmin = Annotated[Principal, Depends(page_admin)]


def when(value: datetime | None) -> str:
    """A timestamp as the pages show it: ``2026-11-22 14:03 UTC``."""
    if value is None:
        return ""
    value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%d %H:%M UTC")


def _env() -> Environment:
    # imported here: the figure builders (plotly, pandas, the engine) load on the first page, not
    # when the API starts (an API-only process stays small)
    from frontend.report_html import template_env

    env = template_env()
    env.filters.setdefault("when", when)
    return env


def _colors() -> dict[str, str]:
    from frontend.figures import BLACK_BOX_COLOR, MEMBER_COLOR, NONMEMBER_COLOR, WHITE_BOX_COLOR

    return {"member": MEMBER_COLOR, "nonmember": NONMEMBER_COLOR, "black_box": BLACK_BOX_COLOR,
            "white_box": WHITE_BOX_COLOR}


def render(
    request: Request, template: str, user: Principal | None = None, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """Render ``pages/<template>`` with the layout's context (user, active page, version)."""
    from worker.engine.version import package_version

    context.setdefault("colors", _colors())
    html = _env().get_template(f"pages/{template}").render(
        request=request,
        user=user,
        version=package_version(),
        active=context.pop("active", ""),
        **context,
    )
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})
