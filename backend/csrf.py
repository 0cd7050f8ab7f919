"""Cross-site request forgery defence of cookie-authenticated requests.

A state-changing request (POST, PUT, PATCH, DELETE) that the session cookie authenticates, and
the sign-in and sign-out forms, must

- carry this browser's CSRF token: the ``X-CSRF-Token`` header (the dashboard's scripts) or the
  ``csrf_token`` form field (plain forms); pages hold it in ``<meta name="csrf-token">``;
- come from this server when the browser says where it comes from (``Origin``, else ``Referer``):
  the same host and port, or one of ``Settings.trusted_origins``.

The token is an HMAC, under the session secret, of the session id: bound to the session, it
changes at every sign-in, and an attacker signed in as themselves holds only their own. Before
sign-in it is bound to a random value kept in the signed cookie instead, so a form posted from
another site cannot sign the victim's browser in as the attacker (login CSRF).

Bearer-token calls carry no ambient authority (a browser never adds the header by itself) and
are not checked. Failures answer 403 ``csrf_failed`` in the one error shape.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request

from .api.errors import ApiError
from .sessions import SESSION_ID

CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PRE_SESSION = "pre"


def _binding(request: Request, *, create: bool) -> str | None:
    """What the token is bound to: the session id, else a pre-session value (made when asked)."""
    cookie = request.session if "session" in request.scope else None
    if cookie is None:
        return None
    sid = cookie.get(SESSION_ID)
    if isinstance(sid, str):
        return f"session:{sid}"
    pre = cookie.get(_PRE_SESSION)
    if not isinstance(pre, str):
        if not create:
            return None
        pre = cookie[_PRE_SESSION] = secrets.token_urlsafe(16)
    return f"pre:{pre}"


def _token_for(request: Request, binding: str) -> str:
    key = request.app.state.session_secret.encode("utf-8")
    return hmac.new(key, b"csrf\0" + binding.encode("utf-8"), hashlib.sha256).hexdigest()


def csrf_token(request: Request) -> str:
    """This browser's token, for the page being rendered (starts a pre-session when needed)."""
    binding = _binding(request, create=True)
    assert binding is not None, "the session middleware is not installed"
    return _token_for(request, binding)


def refused(reason: str) -> ApiError:
    """The answer to a request that may have been forged."""
    return ApiError(403, "csrf_failed", reason)


def _own(request: Request, origin: str) -> bool:
    if origin.rstrip("/") in {o.rstrip("/") for o in request.app.state.settings.trusted_origins}:
        return True
    parts = urlsplit(origin)
    host = request.headers.get("host", "")
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc.lower() == host.lower()


def check_origin(request: Request) -> None:
    """Refuse a request whose ``Origin`` (or, without one, ``Referer``) is another site or port."""
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if not referer:
            return  # a client that names no origin (not a browser's cross-site post): the token decides
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    if not _own(request, origin):
        raise refused("cross-site request refused: it does not come from this server's pages")


def check_csrf(request: Request, submitted: str | None) -> None:
    """Refuse a cookie-authenticated request without this browser's token, or from another origin."""
    check_origin(request)
    binding = _binding(request, create=False)
    if binding is None or not submitted or not hmac.compare_digest(submitted, _token_for(request, binding)):
        raise refused(f"missing or wrong CSRF token: send the page's token in {CSRF_HEADER} "
                      f"(or the {CSRF_FIELD} form field), or use a bearer token")


def check_unsafe_cookie_request(request: Request) -> None:
    """:func:`check_csrf` on a state-changing request, with the token from the header."""
    if request.method in UNSAFE_METHODS:
        check_csrf(request, request.headers.get(CSRF_HEADER))
