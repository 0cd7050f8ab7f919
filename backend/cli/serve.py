"""``brainmia serve`` (the dashboard and API, embedded mode) and ``brainmia worker`` (a Celery
worker of the distributed mode)."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from ..progress import progress_bar, stderr
from .common import errors_exit_2, fail


def serve(
    host: Annotated[Optional[str], typer.Option("--host", help="Address to listen on (default: $BRAINMIA_HOST or 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option("--port", help="Port (default: $BRAINMIA_PORT or 8000).")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
    demo: Annotated[bool, typer.Option("--demo", help="Also load the demo: a synthetic cohort and a model trained to memorise its members (made once, about 2 minutes on 2 CPU cores), with its assessment queued.")] = False,
) -> None:
    """Serve the dashboard and the API (embedded mode: database, storage and a worker in this process)."""
    import uvicorn

    from ..app import create_app
    from ..settings import get_settings

    settings = get_settings()
    with errors_exit_2():
        application = create_app(settings)
        if settings.embedded:
            token = ensure_admin_token(application.state.sessionmaker)
            if token:
                typer.echo(f"Admin token (shown once): {token}")
                stderr.print("Keep it: sign in to the dashboard with it, or create more with `brainmia admin create-token`.")
        if demo:
            from ..demo_seed import seed_demo

            stderr.print("Preparing the demo model and cohort (once; later starts reuse them)...")
            with progress_bar(True) as bar:
                seeded = seed_demo(application.state.sessionmaker, application.state.storage, settings, progress=bar)
            stderr.print(
                f"Demo assessment {seeded.assessment_id[:8]} {'queued' if seeded.created else 'already there'}: "
                "sign in and open it from the Assessments page.", highlight=False,
            )
    mode = "embedded" if settings.embedded else "distributed"
    stderr.print(f"BrainMIA ({mode} mode, data in {settings.data_dir}) on http://{host or settings.host}:{port or settings.port}", highlight=False)
    # proxy headers are the app's to trust (Settings.trusted_proxies), not uvicorn's default of 127.0.0.1
    uvicorn.run(application, host=host or settings.host, port=port or settings.port, log_level=log_level,
                proxy_headers=False)


def ensure_admin_token(factory: Any) -> str | None:
    """On a first start (no token at all), create an administrator token and return it."""
    from ..auth import DEFAULT_ORG, create_token, has_tokens
    from ..db.session import session_scope

    with session_scope(factory) as session:
        if has_tokens(session):
            return None
        return create_token(session, "admin", DEFAULT_ORG, admin=True)


def worker_command(
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Jobs at a time: 1 runs them in this process (solo pool, one per GPU); more forks a pool.")] = 1,
    queues: Annotated[Optional[str], typer.Option("--queues", "-Q", help="Comma-separated queues to consume (default: brainmia).")] = None,
    hostname: Annotated[Optional[str], typer.Option("--hostname", "-n", help="Worker node name (default: brainmia@<host>).")] = None,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help="Celery log level.")] = "INFO",
) -> None:
    """Run a Celery worker for the distributed mode (needs BRAINMIA_DATABASE_URL and BRAINMIA_BROKER_URL)."""
    from ..settings import get_settings

    settings = get_settings()
    if settings.embedded:
        raise fail(
            "`brainmia worker` is for the distributed mode: set BRAINMIA_DATABASE_URL (e.g. "
            "postgresql+psycopg://...) and BRAINMIA_BROKER_URL (e.g. redis://redis:6379/0). "
            "In embedded mode `brainmia serve` runs its own worker."
        )
    from worker.celery_app import run_worker

    from ..storage import Storage, clean_at_start

    clean_at_start(Storage(settings.storage_dir), settings)
    queue_list = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    raise typer.Exit(run_worker(settings, concurrency=concurrency, queues=queue_list, hostname=hostname, loglevel=loglevel))
