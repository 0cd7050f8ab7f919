"""API tokens: created once, shown once, stored as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from .db.models import ApiToken, Organisation, utcnow

TOKEN_PREFIX = "bmia_"
DEFAULT_ORG = "default"


def hash_token(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token of an organisation.

    Attributes:
        token_id: the token's id (recorded as ``created_by`` and in the audit log).
        name: the token's name (the person or pipeline using it).
        org_id: the organisation whose objects it may see.
        is_admin: may create tokens and read the audit log.
    """

    token_id: str
    name: str
    org_id: str
    is_admin: bool


def get_or_create_org(session: Session, name: str) -> Organisation:
    """The organisation called ``name``, created when missing."""
    org = session.scalar(select(Organisation).where(Organisation.name == name))
    if org is None:
        org = Organisation(name=name)
        session.add(org)
        session.flush()
    return org


def create_token(session: Session, name: str, org_name: str = DEFAULT_ORG, *, admin: bool = False) -> str:
    """Create a token and return it in clear (the only time it is visible)."""
    org = get_or_create_org(session, org_name)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiToken(name=name, org_id=org.id, token_hash=hash_token(token), prefix=token[:12], is_admin=admin)
    )
    session.flush()
    return token


def authenticate(session: Session, token: str) -> Principal | None:
    """The principal of a valid, unrevoked token, else None (records its last use)."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or row.revoked_at is not None:
        return None
    row.last_used_at = utcnow()
    return Principal(token_id=row.id, name=row.name, org_id=row.org_id, is_admin=row.is_admin)


def principal_by_token_id(session: Session, token_id: str) -> Principal | None:
    """The principal of a browser session (which stores the token id)."""
    row = session.get(ApiToken, token_id)
    if row is None or row.revoked_at is not None:
        return None
    return Principal(token_id=row.id, name=row.name, org_id=row.org_id, is_admin=row.is_admin)


def has_tokens(session: Session) -> bool:
    """Whether any token exists (an embedded first start creates the admin token)."""
    return session.scalar(select(ApiToken.id).limit(1)) is not None
