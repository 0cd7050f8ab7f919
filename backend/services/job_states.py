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
same way: see "reference-model tasks" below.
"""

from __future__ import annotations

import logging
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..db.models import Assessment, ReferenceTask, as_utc, utcnow

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
    row.state, row.error, row.message = JobState.FAILED, reason, reason
    row.finished_at = utcnow()
    row.log = (row.log or "") + log_line(f"failed: {reason}")


def claim(factory: Factory, assessment_id: str, attempt: int, worker: str) -> bool:
    """Take a queued job for ``attempt``; False: someone else's, stale or duplicate message."""
    now = utcnow()
    with factory() as session, session.begin():
        result = session.execute(
            update(Assessment)
            .where(Assessment.id == assessment_id, Assessment.state == JobState.QUEUED,
                   Assessment.attempts == attempt - 1)
            .values(
                state=JobState.RUNNING, attempts=attempt, worker=worker[:200], started_at=now, heartbeat_at=now,
                progress=0.0, stage="starting", message="loading the model and the manifest", error=None,
                log=Assessment.log + log_line(f"attempt {attempt} started on worker {worker}", now),
            )
        )
    return result.rowcount == 1


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
    with factory() as session:
        return list(session.scalars(
            select(Assessment.id).where(Assessment.state == JobState.QUEUED).order_by(Assessment.created_at)
        ).all())


def next_attempt(factory: Factory, assessment_id: str) -> int | None:
    """The attempt a new message for this job is for (``attempts + 1``); None: no such job."""
    with factory() as session:
        attempts = session.scalar(select(Assessment.attempts).where(Assessment.id == assessment_id))
    return None if attempts is None else attempts + 1


# -- a running attempt --------------------------------------------------------------------------


class Attempt:
    """The writes of one running attempt of one job, each conditional on still owning it.

    Args:
        factory: session factory.
        assessment_id: the job.
        attempt: the attempt number this worker claimed.
    """

    def __init__(self, factory: Factory, assessment_id: str, attempt: int):
        self.factory = factory
        self.id = assessment_id
        self.attempt = attempt
        self.lost = False

    def _owned(self) -> Any:
        return (Assessment.id == self.id) & (Assessment.state == JobState.RUNNING) & (Assessment.attempts == self.attempt)

    def write(self, **values: Any) -> bool:
        """Update the row if this attempt still owns it; False (and ``lost``) otherwise."""
        if self.lost:
            return False
        with self.factory() as session, session.begin():
            result = session.execute(update(Assessment).where(self._owned()).values(**values))
        if result.rowcount == 0:
            self.lost = True
            logger.warning("assessment %s attempt %d: no longer owned by this worker", self.id, self.attempt)
        return not self.lost

    def append_log(self, text: str, **values: Any) -> bool:
        """Append a line to the job's log (and write ``values``) if still owned."""
        return self.write(log=Assessment.log + log_line(text), **values)

    def cancel_flag(self) -> bool | None:
        """The row's ``cancel_requested``; None (and ``lost``) when this attempt no longer owns it."""
        with self.factory() as session:
            value = session.scalar(select(Assessment.cancel_requested).where(self._owned()))
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

    def hand_back(self) -> bool:
        """running -> queued: the worker shuts down; this attempt is not counted."""
        return self.append_log(
            f"the worker shut down during attempt {self.attempt}; re-queued", state=JobState.QUEUED,
            attempts=self.attempt - 1, stage="queued", progress=0.0, message="re-queued: the worker shut down",
            worker=None,
        )

    def exists(self) -> bool:
        """Whether the job's row still exists (it may have been deleted while it ran)."""
        with self.factory() as session:
            return session.get(Assessment, self.id) is not None


# -- reference-model tasks ----------------------------------------------------------------------
#
# One ``reference_tasks`` row per reference model a running job trains (K trained models are K
# tasks: Celery messages ``(assessment_id, attempt, model_index)`` in distributed mode, or trained
# one after another by the job's own worker). The trained model goes to the reference store; the
# row records who trains it and whether that worker is alive:
#
#     (none) / failed / cancelled / succeeded (not in the store) --open--> queued
#     queued  --claim_reference (attempt = attempts + 1)-----------> running
#     running --succeed / fail / cancelled (owned by the attempt)--> succeeded / failed / cancelled
#     running --the worker shuts down: attempt not counted---------> queued
#     running --heartbeat older than the timeout (the job's worker
#               checks)--------------------------------------------> queued (attempts < max) / failed


class ReferenceState(StrEnum):
    """The states of one reference model's training (stored as their values)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


_REOPENED = (ReferenceState.FAILED, ReferenceState.CANCELLED, ReferenceState.SUCCEEDED)


def reference_tasks(factory: Factory, assessment_id: str) -> list[ReferenceTask]:
    """The job's reference-model rows (detached), by model index."""
    with factory() as session:
        rows = list(session.scalars(select(ReferenceTask).where(ReferenceTask.assessment_id == assessment_id)
                                    .order_by(ReferenceTask.model_index)).all())
        session.expunge_all()
    return rows


def open_reference_tasks(factory: Factory, assessment_id: str, indices: list[int]) -> list[ReferenceTask]:
    """Queue the training of models ``indices`` (those missing from the store): new rows, and
    rows that are not running (failed, cancelled, or succeeded but gone from the store) back to
    ``queued``; a running one is left to its worker.

    Returns:
        the job's rows after the change.
    """
    wanted = set(indices)
    for retry in (False, True):
        try:
            with factory() as session, session.begin():
                have = set(session.scalars(select(ReferenceTask.model_index).where(
                    ReferenceTask.assessment_id == assessment_id, ReferenceTask.model_index.in_(wanted))).all())
                session.add_all(ReferenceTask(assessment_id=assessment_id, model_index=k, state=ReferenceState.QUEUED,
                                              attempts=0, epoch=0) for k in sorted(wanted - have))
                session.execute(
                    update(ReferenceTask)
                    .where(ReferenceTask.assessment_id == assessment_id, ReferenceTask.model_index.in_(have),
                           ReferenceTask.state.in_(_REOPENED))
                    .values(state=ReferenceState.QUEUED, worker=None, epoch=0, error=None, finished_at=None)
                )
            break
        except IntegrityError:  # a row inserted meanwhile (a late attempt of the job): read again
            if retry:
                raise
    return reference_tasks(factory, assessment_id)


def claim_reference(factory: Factory, assessment_id: str, model_index: int, attempt: int, worker: str) -> bool:
    """Take a queued model for ``attempt``; False: taken, stale or duplicate message."""
    now = utcnow()
    with factory() as session, session.begin():
        result = session.execute(
            update(ReferenceTask)
            .where(ReferenceTask.assessment_id == assessment_id, ReferenceTask.model_index == model_index,
                   ReferenceTask.state == ReferenceState.QUEUED, ReferenceTask.attempts == attempt - 1)
            .values(state=ReferenceState.RUNNING, attempts=attempt, worker=worker[:200], epoch=0, error=None,
                    heartbeat_at=now, started_at=now, finished_at=None)
        )
    return result.rowcount == 1


def reference_lost(factory: Factory, row: ReferenceTask, *, cutoff: datetime, max_attempts: int,
                   fail_reason: str) -> str | None:
    """A running model whose heartbeat is older than ``cutoff``: re-queued below ``max_attempts``
    attempts (the caller sends it again), else failed with ``fail_reason``.

    Returns:
        ``requeued``, ``failed``, or None when it changed meanwhile (a late heartbeat keeps it).
    """
    if row.attempts < max_attempts:
        outcome, values = "requeued", dict(state=ReferenceState.QUEUED, worker=None, epoch=0)
    else:
        outcome, values = "failed", dict(state=ReferenceState.FAILED, error=fail_reason, finished_at=utcnow())
    with factory() as session, session.begin():
        changed = session.execute(
            update(ReferenceTask)
            .where(ReferenceTask.assessment_id == row.assessment_id, ReferenceTask.model_index == row.model_index,
                   ReferenceTask.state == ReferenceState.RUNNING, ReferenceTask.attempts == row.attempts,
                   ReferenceTask.heartbeat_at < cutoff)
            .values(**values)
        ).rowcount
    return outcome if changed else None


class ReferenceAttempt:
    """The writes of one running attempt of one reference model, each conditional on owning it.

    Args:
        factory: session factory.
        assessment_id: the job.
        model_index: the model.
        attempt: the attempt this worker claimed.
    """

    def __init__(self, factory: Factory, assessment_id: str, model_index: int, attempt: int):
        self.factory = factory
        self.assessment_id = assessment_id
        self.model_index = model_index
        self.attempt = attempt
        self.id = f"{assessment_id}/{model_index}"
        self.lost = False

    def write(self, **values: Any) -> bool:
        """Update the row if this attempt still owns it; False (and ``lost``) otherwise."""
        if self.lost:
            return False
        with self.factory() as session, session.begin():
            result = session.execute(
                update(ReferenceTask)
                .where(ReferenceTask.assessment_id == self.assessment_id, ReferenceTask.model_index == self.model_index,
                       ReferenceTask.state == ReferenceState.RUNNING, ReferenceTask.attempts == self.attempt)
                .values(**values)
            )
        if result.rowcount == 0:
            self.lost = True
            logger.warning("reference model %s attempt %d: no longer owned by this worker", self.id, self.attempt)
        return not self.lost

    def heartbeat(self, epoch: int | None = None) -> bool:
        """Touch ``heartbeat_at`` (and record ``epoch`` epochs done)."""
        return self.write(heartbeat_at=utcnow(), **({} if epoch is None else {"epoch": int(epoch)}))

    def succeed(self) -> bool:
        """running -> succeeded (the model is in the store)."""
        now = utcnow()
        return self.write(state=ReferenceState.SUCCEEDED, finished_at=now, heartbeat_at=now)

    def fail(self, error: str) -> bool:
        """running -> failed with ``error`` (the job fails with it)."""
        return self.write(state=ReferenceState.FAILED, error=error, finished_at=utcnow())

    def cancelled(self) -> bool:
        """running -> cancelled (its job was cancelled, failed or deleted)."""
        return self.write(state=ReferenceState.CANCELLED, finished_at=utcnow())

    def hand_back(self) -> bool:
        """running -> queued: the worker shuts down; this attempt is not counted."""
        return self.write(state=ReferenceState.QUEUED, attempts=self.attempt - 1, worker=None, epoch=0)
