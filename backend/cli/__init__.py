"""The ``brainmia`` command line: the Typer app, one module per command group.

``assess`` (assess, features), ``demo`` (demo, synth), ``submit``, ``serve`` (serve, worker),
``admin`` (admin migrate, admin create-token); ``common`` holds the options and helpers they
share and ``summary`` the terminal summary of a report. The command modules import no engine,
torch or server module at their top, so ``brainmia --help`` stays fast.
"""

from __future__ import annotations

import sys

import typer

from ..progress import stderr
from .admin import admin_app
from .assess import assess, features
from .common import EXIT_ERROR, EXIT_FAIL, EXIT_PASS, errors_exit_2
from .demo import demo, synth
from .serve import ensure_admin_token, serve, worker_command
from .submit import submit

__all__ = ["EXIT_ERROR", "EXIT_FAIL", "EXIT_PASS", "app", "ensure_admin_token", "main"]

app = typer.Typer(
    name="brainmia",
    help="Measure how much a brain-age model leaks about who was in its training set.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _configure() -> None:
    """Apply the settings every command shares (the bounds on scan volumes)."""
    from worker.engine.volume_bounds import set_volume_limits

    from ..settings import get_settings

    with errors_exit_2():
        set_volume_limits(get_settings().volume_limits)


# the order of `brainmia --help`
app.command()(assess)
app.command()(features)
app.command()(synth)
app.command()(demo)
app.command()(submit)
app.command()(serve)
app.command("worker")(worker_command)
app.add_typer(admin_app, name="admin")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        stderr.print("interrupted")
        sys.exit(130)
