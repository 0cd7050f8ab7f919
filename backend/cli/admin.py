"""``brainmia admin``: database migrations and API tokens."""

from __future__ import annotations

from typing import Annotated

import typer

from ..progress import stderr
from .common import errors_exit_2

admin_app = typer.Typer(help="Administration: database migrations and API tokens.", no_args_is_help=True)


@admin_app.command("migrate")
def admin_migrate() -> None:
    """Create or upgrade the database tables (the API does it itself in embedded mode)."""
    from ..db.migrate import upgrade_database
    from ..settings import get_settings

    settings = get_settings()
    with errors_exit_2():
        try:
            upgrade_database(settings.sqlalchemy_url)
        except Exception as exc:  # noqa: BLE001 - database errors of any driver: exit 2
            raise RuntimeError(f"cannot migrate the database: {exc}") from None
    typer.echo(f"database up to date: {_masked_url(settings.sqlalchemy_url)}")


@admin_app.command("create-token")
def admin_create_token(
    name: Annotated[str, typer.Option("--name", help="Who or what uses the token (shown in the audit log).")],
    org: Annotated[str, typer.Option("--org", help="Organisation (created when new).")] = "default",
    admin: Annotated[bool, typer.Option("--admin", help="May create tokens and read the audit log.")] = False,
) -> None:
    """Create an API token and print it (the only time it is shown)."""
    from sqlalchemy import select

    from ..auth import create_token, hash_token
    from ..db.migrate import upgrade_database
    from ..db.models import ApiToken, AuditEvent
    from ..db.session import make_engine, make_sessionmaker, session_scope
    from ..settings import get_settings

    settings = get_settings()
    with errors_exit_2():
        try:
            if settings.embedded:
                upgrade_database(settings.sqlalchemy_url)
            engine = make_engine(settings.sqlalchemy_url)
            try:
                with session_scope(make_sessionmaker(engine)) as session:
                    token = create_token(session, name, org, admin=admin)
                    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
                    session.add(AuditEvent(
                        org_id=row.org_id, actor="cli", action="create-token", object_type="token",
                        object_id=row.id, detail={"name": name, "is_admin": admin, "via": "brainmia admin create-token"},
                    ))
            finally:
                engine.dispose()
        except Exception as exc:  # noqa: BLE001 - database errors of any driver: exit 2
            raise RuntimeError(f"cannot create the token: {exc}") from None
    stderr.print(f"token for '{name}' of organisation '{org}'{' (administrator)' if admin else ''}; it is shown once:", highlight=False)
    typer.echo(token)


def _masked_url(url: str) -> str:
    """A database URL without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
