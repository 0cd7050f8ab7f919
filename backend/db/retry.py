"""Transient database errors: telling them apart, and retrying through them for a bounded time.

A database restart, a failover or a dropped connection makes SQLAlchemy raise
:class:`~sqlalchemy.exc.OperationalError` / :class:`~sqlalchemy.exc.InterfaceError` (or a pool
timeout, or a disconnect); a bad statement or a constraint does not. The job machinery retries
the first kind with backoff (:func:`retry_transient`) so that a blip of a few seconds costs a job
nothing, and the API answers it with 503 ``database_unavailable``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import exc as sa_exc

logger = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_DELAY_S = 0.1
MAX_DELAY_S = 2.0


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` says the database is unreachable for now (not that the statement is wrong)."""
    if isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError,
                          sa_exc.TimeoutError)):
        return True
    return isinstance(error, sa_exc.DBAPIError) and bool(error.connection_invalidated)


class DatabaseUnavailable(Exception):
    """The database stayed unreachable for longer than a retry budget.

    Attributes:
        what: what was being done (``claiming assessment ab12...``).
        seconds: how long it was tried.
        cause: the last transient error, in one line.
    """

    def __init__(self, what: str, seconds: float, cause: BaseException | None):
        self.what = what
        self.seconds = seconds
        self.cause = "" if cause is None else f"{type(cause).__name__}: {str(cause).splitlines()[0][:200]}"
        super().__init__(f"the database was unreachable for {seconds:.0f} s while {what}"
                         + (f" ({self.cause})" if self.cause else ""))


def retry_transient(
    fn: Callable[[], T],
    *,
    budget_s: float,
    what: str,
    stop: Callable[[], bool] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call ``fn`` until it does not raise a transient database error, for at most ``budget_s``.

    Waits 0.1 s after the first failure, doubling up to 2 s. Other errors pass through at once.

    Args:
        fn: the database work (a whole transaction: it is run again from the start).
        budget_s: seconds after the first failure before giving up (0: one try).
        what: what ``fn`` does, for the log and the error.
        stop: checked between tries; True gives up early (a worker shutting down).
        sleep / clock: injectable for tests.

    Raises:
        DatabaseUnavailable: still failing after ``budget_s`` (or ``stop`` said so).
    """
    started: float | None = None
    delay = FIRST_DELAY_S
    while True:
        try:
            value = fn()
        except Exception as error:  # filtered just below
            if not is_transient(error):
                raise
            now = clock()
            if started is None:
                started = now
                logger.warning("database unreachable while %s; retrying for up to %.0f s: %s", what, budget_s,
                               str(error).splitlines()[0][:200])
            elapsed = now - started
            if elapsed + delay > budget_s or (stop is not None and stop()):
                raise DatabaseUnavailable(what, max(elapsed, 0.0), error) from error
        else:
            if started is not None:
                logger.warning("database reachable again after %.1f s while %s", clock() - started, what)
            return value
        sleep(delay)
        delay = min(delay * 2, MAX_DELAY_S)
