"""Browser sessions, kept server-side so that they can be ended.

The signed session cookie carries only a random session id (``sid``); the database keeps its
SHA-256 with the token it belongs to and when it expires. A cookie is honoured only while its
row exists: signing out, revoking the token and the end of the lifetime
(``Settings.session_lifetime_h``) delete it, so a copied cookie stops working.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session
from starlette.requests import Request

from .auth import Principal, hash_token, principal_by_token_id
from .db.models import BrowserSession, utcnow

#: The key of the session id in the signed cookie.
SESSION_ID = "sid"


def start_session(db: Session, principal: Principal, lifetime_h: float) -> str:
    """Record a new session of ``principal`` and return its id (for the cookie only)."""
    now = utcnow()
    db.execute(delete(BrowserSession).where(BrowserSession.expires_at <= now))  # sweep the expired ones
    sid = secrets.token_urlsafe(32)
    db.add(BrowserSession(id_hash=hash_token(sid), token_id=principal.token_id, created_at=now,
                          expires_at=now + timedelta(hours=lifetime_h)))
    db.flush()
    return sid


def session_principal(db: Session, sid: str) -> Principal | None:
    """The principal of a live session (not ended, not expired, its token not revoked), else None."""
    row = db.get(BrowserSession, hash_token(sid))
    if row is None:
        return None
    expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=utcnow().tzinfo)
    if expires <= utcnow():
        return None
    return principal_by_token_id(db, row.token_id)


def end_session(db: Session, sid: str) -> None:
    """End one session (sign-out)."""
    db.execute(delete(BrowserSession).where(BrowserSession.id_hash == hash_token(sid)))


def end_token_sessions(db: Session, token_id: str) -> int:
    """End every session of a token (when it is revoked); returns how many there were."""
    return db.execute(delete(BrowserSession).where(BrowserSession.token_id == token_id)).rowcount


def _cookie(request: Request) -> dict | None:
    return request.session if "session" in request.scope else None


def cookie_principal(request: Request, db: Session) -> Principal | None:
    """The principal of the request's session cookie, or None (no cookie, or an ended session)."""
    cookie = _cookie(request)
    sid = cookie.get(SESSION_ID) if cookie is not None else None
    return session_principal(db, sid) if isinstance(sid, str) else None


def sign_in(request: Request, db: Session, principal: Principal) -> None:
    """Give the browser a new session of ``principal`` (a new id: never one chosen before sign-in)."""
    sign_out(request, db)
    request.session[SESSION_ID] = start_session(db, principal, request.app.state.settings.session_lifetime_h)
    db.commit()  # usable by the browser's next request, which may come before the request's own commit


def sign_out(request: Request, db: Session) -> None:
    """End the browser's session server-side and empty its cookie."""
    cookie = _cookie(request)
    if cookie is None:
        return
    sid = cookie.get(SESSION_ID)
    if isinstance(sid, str):
        end_session(db, sid)
        db.commit()  # ended before the answer is sent: the request's own commit comes after it
    cookie.clear()
