"""Sign-in bodies and the signed-in identity."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ...csrf import CSRF_HEADER


class SignIn(BaseModel):
    """A sign-in request."""

    token: str = Field(description="An API token", examples=["bmia_3q2...x9"])


class Me(BaseModel):
    """The signed-in identity."""

    name: str
    org_id: str
    is_admin: bool
    csrf_token: str | None = Field(
        None, description=f"With a session cookie: the token its state-changing calls send in `{CSRF_HEADER}`."
    )
