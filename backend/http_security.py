"""HTTP-level protections of every response: the session cookie's flags, trusted proxies, and
the security headers (Content-Security-Policy, anti-framing, no MIME sniffing).

Pages rendered by :func:`backend.web.render.render` get :func:`page_policy` with a nonce of
their own; every other response gets :data:`DEFAULT_POLICY` unless it sets a policy itself
(the served ``report.html`` does), and ``frame-ancestors 'none'`` is added to any policy that
lacks it.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .settings import Settings

#: The policy of responses that are not dashboard pages (JSON, files, errors): nothing runs.
DEFAULT_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

#: FastAPI's interactive API docs load Swagger UI / ReDoc from a CDN with an inline start-up
#: script; they show the OpenAPI schema only (no user data).
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com; "
    "worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})

FIXED_HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


def page_policy(nonce: str) -> str:
    """The policy of a dashboard page: scripts from this server or carrying ``nonce``.

    Styles allow ``'unsafe-inline'``: Plotly positions its elements with style attributes (a
    nonce would disable that); styles run no code.
    """
    return (
        f"default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; object-src 'none'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )


class SecurityHeaders:
    """ASGI middleware adding :data:`FIXED_HEADERS` and a Content-Security-Policy to every response."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope.get("path") in DOCS_PATHS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                policy = headers.get("content-security-policy")
                if policy is None:
                    headers["Content-Security-Policy"] = DOCS_POLICY if docs else DEFAULT_POLICY
                elif "frame-ancestors" not in policy:
                    headers["Content-Security-Policy"] = f"{policy}; frame-ancestors 'none'"
                for name, value in FIXED_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def is_https(scope: Scope) -> bool:
    """Whether the browser reached us over https (after trusted proxies' headers were applied)."""
    return scope.get("scheme") in ("https", "wss")


class SessionCookie:
    """The signed session cookie (``SameSite=Strict``, ``HttpOnly``), ``Secure`` whenever the
    request came over https or ``always_secure`` is set."""

    def __init__(self, app: ASGIApp, secret: str, max_age_s: int, always_secure: bool):
        options = {"secret_key": secret, "max_age": max_age_s, "same_site": "strict"}
        self.secure = SessionMiddleware(app, https_only=True, **options)  # type: ignore[arg-type]
        self.plain = self.secure if always_secure else SessionMiddleware(app, https_only=False, **options)  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await (self.secure if is_https(scope) else self.plain)(scope, receive, send)


def install_http_security(app: FastAPI, settings: Settings, secret: str) -> None:
    """Add the session cookie, the security headers and, when configured, trusted proxies.

    Middleware added last runs first: the proxy headers set the scheme before the cookie is made.
    """
    app.add_middleware(SessionCookie, secret=secret, max_age_s=round(settings.session_lifetime_h * 3600),
                       always_secure=settings.session_cookie_secure)
    app.add_middleware(SecurityHeaders)
    if settings.trusted_proxies:
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.trusted_proxies))
