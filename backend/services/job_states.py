"""The job state machine: the one list of job states and every transition of an assessment job.

The ``assessments`` row is the record of a job; a Celery message only carries ``(id, attempt)``.
Every transition is one conditional UPDATE, so two processes racing for a job (a duplicate
message, the reaper and a late worker, a cancel and a claim) never both win::

    queued  --claim (attempt = attempts + 1)------------------> running
    queued  --cancel------------------------------------------> cancelled
    running --succeed / fail (still owned by the attempt)-----> succeeded / failed
    running --cancel: cancel_requested, the worker stops------> cancelled
    running --the worker shuts down: attempt not counted------> queued
    running --the worker is lost (reaper, restart)------------> queued (attempts < max) / failed /
                                                                cancelled (a cancel was pending)

A running attempt's writes (:class:`Attempt`) are conditional on still owning the job
(``state='running' AND attempts=attempt``): a worker whose job was re-queued, cancelled and
deleted, or claimed by another attempt notices at its next write.

The reference models a job trains (one task each) have their own rows and transitions, in the
same way: :mod:`backend.services.reference_task_states` (its names are re-exported here).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from ..db.models import Assessment, as_utc, utcnow
from ..db.retry import DatabaseUnavailable, retry_transient

logger = logging.getLogger(__name__)


class JobState(StrEnum):
    """The states of an assessment job (stored as their values)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES: frozenset[JobState] = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
"""States a job never leaves."""

Factory = sessionmaker[Session]


def is_final(state: str) -> bool:
    """Whether a job state is final."""
    return state in FINAL_STATES


def log_line(text: str, at: datetime | None = None) -> str:
    """One line for the job's log: ``<UTC time> <text>``."""
    return f"{(at or utcnow()).strftime('%Y-%m-%d %H:%M:%SZ')} {text.rstrip()}\n"


def fmt_time(value: datetime | None) -> str:
    """A time for a log sentence (``never`` for None)."""
    value = as_utc(value)
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else "never"


# -- creating and queueing ----------------------------------------------------------------------


def new_job(**fields: Any) -> Assessment:
    """A new queued job row (``org_id``, ``model_id``, ``scan_set_id``, ``options``, ``created_by``)."""
    return Assessment(**fields, state=JobState.QUEUED, stage="queued", message="waiting for a worker", attempts=0)


def enqueue_failed(row: Assessment, reason: str) -> None:
    """The job's message could not be sent: the row fails with ``reason`` (the caller commits)."""
    row.state, row.error, row.message, row.stage = JobState.FAILED, reason, reason, "failed"
    row.finished_at = row.finished_at or utcnow()
    row.log = (row.log or "") + log_line(f"failed: {reason}")


def claim(factory: Factory, assessment_id: str, attempt: int, worker: str, *, retry_s: float = 0.0,
          stop: Callable[[], bool] | None = None) -> bool:
    """Take a queued job for ``attempt``; False: someone else's, stale or duplicate message.

    A transient database error is retried for ``retry_s`` seconds (``stop`` ends that early);
    a try that committed before its connection dropped counts as taken.

    Raises:
        DatabaseUnavailable: the database stayed unreachable (the caller puts the message back).
    """
    now = utcnow()
    worker = worker[:200]
    tries = 0

    def take() -> bool:
        nonlocal tries
        tries += 1
        with factory() as session, session.begin():
            result = session.execute(
                update(Assessment)
                .where(Assessment.id == assessment_id, Assessment.state == JobState.QUEUED,
                       Assessment.attempts == attempt - 1)
                .values(
                    state=JobState.RUNNING, attempts=attempt, worker=worker, started_at=now, heartbeat_at=now,
                    progress=0.0, stage="starting", message="loading the model and the manifest", error=None,
                    log=Assessment.log + log_line(f"attempt {attempt} started on worker {worker}", now),
                )
            )
            if result.rowcount == 1 or tries == 1:
                return result.rowcount == 1
            mine = session.execute(select(Assessment.id).where(
                Assessment.id == assessment_id, Assessment.state == JobState.RUNNING,
                Assessment.attempts == attempt, Assessment.worker == worker)).first()
            return mine is not None

    return retry_transient(take, budget_s=retry_s, what=f"claiming assessment {assessment_id}", stop=stop)


# -- cancelling ---------------------------------------------------------------------------------


def cancel(factory: Factory, assessment_id: str) -> str | None:
    """Ask a job to stop: a queued job is cancelled at once, a running one at its worker's next check.

    Returns:
        the job's state after the request (``cancelled``, ``running`` while it stops, or the
        final state it already had); None when there is no such job.
    """
    now = utcnow()
    with factory() as session, session.begin():
        done = session.execute(
            update(Assessment)
            .where(Assessment.id == assessment_id, Assessment.state == JobState.QUEUED)
            .values(state=JobState.CANCELLED, cancel_requested=True, stage="cancelled",
                    message="cancelled before it started", finished_at=now,
                    log=Assessment.log + log_line("cancelled before it started", now))
        ).rowcount
        if done:
            return JobState.CANCELLED
        asked = session.execute(
            update(Assessment)
            .where(Assessment.id == assessment_id, Assessment.state == JobState.RUNNING)
            .values(cancel_requested=True, log=Assessment.log + log_line("cancel requested", now))
        ).rowcount
        if asked:
            return JobState.RUNNING
        return session.scalar(select(Assessment.state).where(Assessment.id == assessment_id))


# -- lost workers -------------------------------------------------------------------------------


def running_jobs(factory: Factory, *conditions: Any) -> list[Any]:
    """Running jobs (id, attempts, worker, heartbeat_at, cancel_requested) matching ``conditions``."""
    with factory() as session:
        return list(session.execute(
            select(Assessment.id, Assessment.attempts, Assessment.worker, Assessment.heartbeat_at,
                   Assessment.cancel_requested)
            .where(Assessment.state == JobState.RUNNING, *conditions)
        ).all())


def worker_lost(
    factory: Factory,
    job: Any,
    *,
    what: str,
    fail_reason: str,
    max_attempts: int,
    cutoff: datetime | None = None,
) -> str | None:
    """A running job whose worker is gone: re-queued below ``max_attempts`` attempts, else
    failed; cancelled instead when a cancel was pending.

    Args:
        factory: session factory.
        job: a row of :func:`running_jobs`.
        what: what happened, for the log (``worker w1 stopped reporting at ...``).
        fail_reason: the error when the job fails.
        max_attempts: attempts after which the job fails.
        cutoff: only if its heartbeat is still older than this (a beat that arrived meanwhile
            keeps the job); None: unconditionally (the server restarted).

    Returns:
        ``requeued``, ``failed``, ``cancelled``, or None when the job changed meanwhile.
    """
    now = utcnow()
    condition = [Assessment.id == job.id, Assessment.state == JobState.RUNNING, Assessment.attempts == job.attempts]
    if cutoff is not None:
        condition.append(Assessment.heartbeat_at < cutoff)
    if job.cancel_requested:  # the user asked to stop it: do not run it again
        outcome, note = "cancelled", f"{what}; cancelled as requested"
        values: dict[str, Any] = dict(state=JobState.CANCELLED, message="cancelled", finished_at=now)
    elif job.attempts < max_attempts:
        outcome, note = "requeued", f"{what}; re-queued"
        values = dict(state=JobState.QUEUED, stage="queued", progress=0.0, worker=None, message="re-queued: " + note)
    else:
        outcome, note = "failed", f"failed: {fail_reason}"
        values = dict(state=JobState.FAILED, error=fail_reason, message=fail_reason, finished_at=now)
    with factory() as session, session.begin():
        changed = session.execute(
            update(Assessment).where(*condition).values(**values, log=Assessment.log + log_line(note, now))
        ).rowcount
    return outcome if changed else None


def queued_ids(factory: Factory) -> list[str]:
    """Ids of the queued jobs, oldest first."""
    return [job_id for job_id, _ in queued_jobs(factory)]


def queued_jobs(factory: Factory) -> list[tuple[str, int]]:
    """``(id, attempts)`` of the queued jobs, oldest first (their next message is for ``attempts + 1``)."""
    with factory() as session:
        return [(row.id, row.attempts) for row in session.execute(
            select(Assessment.id, Assessment.attempts).where(Assessment.state == JobState.QUEUED)
            .order_by(Assessment.created_at)
        ).all()]


def resent(factory: Factory, assessment_id: str, attempts: int, why: str) -> bool:
    """Note in a still-queued job's log that its message was sent again, and ``why``."""
    with factory() as session, session.begin():
        return session.execute(
            update(Assessment)
            .where(Assessment.id == assessment_id, Assessment.state == JobState.QUEUED, Assessment.attempts == attempts)
            .values(message=f"waiting for a worker (sent again: {why})"[:500],
                    log=Assessment.log + log_line(f"sent again: {why}"))
        ).rowcount == 1


def next_attempt(factory: Factory, assessment_id: str) -> int | None:
    """The attempt a new message for this job is for (``attempts + 1``); None: no such job."""
    with factory() as session:
        attempts = session.scalar(select(Assessment.attempts).where(Assessment.id == assessment_id))
    return None if attempts is None else attempts + 1


# -- a running attempt --------------------------------------------------------------------------


class Attempt:
    """The writes of one running attempt of one job, each conditional on still owning it.

    Each write retries transient database errors for ``retry_s`` seconds, then raises
    :class:`~backend.db.retry.DatabaseUnavailable` (the attempt is given up: :meth:`hand_back`).

    Args:
        factory: session factory.
        assessment_id: the job.
        attempt: the attempt number this worker claimed.
        retry_s: how long a write retries while the database is unreachable.
    """

    def __init__(self, factory: Factory, assessment_id: str, attempt: int, retry_s: float = 0.0):
        self.factory = factory
        self.id = assessment_id
        self.attempt = attempt
        self.retry_s = retry_s
        self.lost = False

    def _retry(self, fn: Callable[[], Any], what: str) -> Any:
        return retry_transient(fn, budget_s=self.retry_s, what=f"{what} assessment {self.id} (attempt {self.attempt})")

    def _owned(self) -> Any:
        return (Assessment.id == self.id) & (Assessment.state == JobState.RUNNING) & (Assessment.attempts == self.attempt)

    def write(self, **values: Any) -> bool:
        """Update the row if this attempt still owns it; False (and ``lost``) otherwise."""
        if self.lost:
            return False

        def update_row() -> int:
            with self.factory() as session, session.begin():
                return session.execute(update(Assessment).where(self._owned()).values(**values)).rowcount

        if self._retry(update_row, "writing") == 0:
            self.lost = True
            logger.warning("assessment %s attempt %d: no longer owned by this worker", self.id, self.attempt)
        return not self.lost

    def append_log(self, text: str, **values: Any) -> bool:
        """Append a line to the job's log (and write ``values``) if still owned."""
        return self.write(log=Assessment.log + log_line(text), **values)

    def cancel_flag(self) -> bool | None:
        """The row's ``cancel_requested``; None (and ``lost``) when this attempt no longer owns it."""
        def read() -> bool | None:
            with self.factory() as session:
                return session.scalar(select(Assessment.cancel_requested).where(self._owned()))

        value = self._retry(read, "reading")
        if value is None:
            self.lost = True
        return value

    def succeed(self, *, level: str | None, summary: str, passed: bool, result_dir: str) -> bool:
        """running -> succeeded, with the verdict and where the results are."""
        now = utcnow()
        return self.append_log(
            f"attempt {self.attempt} succeeded: verdict {level}",
            state=JobState.SUCCEEDED, progress=1.0, stage="done", message=summary[:2000], verdict_level=level,
            passed=passed, result_dir=result_dir, finished_at=now, heartbeat_at=now,
        )

    def fail(self, error: str) -> bool:
        """running -> failed with ``error`` (as users may see it)."""
        return self.append_log(
            f"attempt {self.attempt} failed: {error}", state=JobState.FAILED, error=error,
            message=error.splitlines()[0][:500] if error else "failed", finished_at=utcnow(),
        )

    def cancelled(self) -> bool:
        """running -> cancelled (the worker stopped at the user's request)."""
        return self.append_log("cancelled at the user's request", state=JobState.CANCELLED, message="cancelled",
                               finished_at=utcnow())

    def hand_back(self, reason: str = "the worker shut down") -> bool:
        """running -> queued: the worker shuts down (or gave the attempt up for ``reason``, not
        the job's fault); this attempt is not counted."""
        return self.append_log(
            f"{reason} during attempt {self.attempt}; re-queued", state=JobState.QUEUED,
            attempts=self.attempt - 1, stage="queued", progress=0.0, message=f"re-queued: {reason}"[:500],
            worker=None,
        )

    def exists(self) -> bool:
        """Whether the job's row still exists (it may have been deleted while it ran)."""
        def read() -> bool:
            with self.factory() as session:
                return session.get(Assessment, self.id) is not None

        return bool(self._retry(read, "reading"))


# -- reference-model tasks (their own module, part of this state machine) -----------------------

from .reference_task_states import (  # re-exported: one state machine to import
    ReferenceAttempt,
    ReferenceState,
    claim_reference,
    open_reference_tasks,
    reference_lost,
    reference_tasks,
)

__all__ = [
    "FINAL_STATES", "Attempt", "DatabaseUnavailable", "Factory", "JobState", "ReferenceAttempt", "ReferenceState", "cancel", "claim",
    "claim_reference", "enqueue_failed", "fmt_time", "is_final", "log_line", "new_job", "next_attempt",
    "open_reference_tasks", "queued_ids", "queued_jobs", "reference_lost", "resent", "reference_tasks", "running_jobs", "worker_lost",
]
