"""Rendering pages and the signed-in user of a page."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment


from ..api.deps import SessionDep
from ..auth import Principal
from ..csrf import csrf_token
from ..http_security import page_policy
from ..sessions import cookie_principal


class SignInRequired(Exception):
    """The page needs a signed-in user; answered with a redirect to the sign-in page."""

    def __init__(self, next_url: str):
        self.next_url = next_url
        super().__init__(next_url)


class PageForbidden(Exception):
    """The signed-in user may not see this page (e.g. the audit log without admin rights)."""


class PageNotFound(Exception):
    """A page's object does not exist or belongs to another organisation."""


def sign_in_url(next_url: str | None = None) -> str:
    """The sign-in page, returning to ``next_url`` afterwards."""
    return "/sign-in" + (f"?next={quote(next_url, safe='/')}" if next_url and next_url != "/" else "")


def page_principal(request: Request, session: SessionDep) -> Principal:
    """The user signed in through the session cookie; redirects to sign-in otherwise."""
    principal = cookie_principal(request, session)
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
    """Render ``pages/<template>`` with the layout's context (user, active page, version, the
    browser's CSRF token) and its Content-Security-Policy, whose nonce the page's inline
    scripts carry."""
    from worker.engine.version import package_version

    context.setdefault("colors", _colors())
    nonce = secrets.token_urlsafe(18)
    html = _env().get_template(f"pages/{template}").render(
        request=request,
        user=user,
        version=package_version(),
        active=context.pop("active", ""),
        csrf_token=csrf_token(request),
        csp_nonce=nonce,
        **context,
    )
    headers = {"Cache-Control": "no-store", "Content-Security-Policy": page_policy(nonce)}
    return HTMLResponse(html, status_code=status_code, headers=headers)
