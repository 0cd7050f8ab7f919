"""The transitions of a running job's sub-tasks (one ``reference_tasks`` row each): the reference
models it trains (``kind='reference'``) and the shards of scans whose features it extracts
(``kind='shard'``), both fanned out by :mod:`worker.fanout`.

Part of the job state machine (:mod:`backend.services.job_states` re-exports every name here):
the same rules, one conditional UPDATE per transition, a claim as the guard against duplicate
messages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..db.models import ReferenceTask, utcnow
from ..db.retry import retry_transient

logger = logging.getLogger(__name__)

Factory = sessionmaker[Session]


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

REFERENCE = "reference"
"""``kind`` of a reference model's row."""
SHARD = "shard"
"""``kind`` of a feature shard's row (``model_index`` is the shard's index)."""
SubtaskState = ReferenceState
"""The states of any sub-task (the same as a reference model's)."""


def reference_tasks(factory: Factory, assessment_id: str, kind: str = REFERENCE) -> list[ReferenceTask]:
    """The job's rows of one ``kind`` (detached), by index."""
    with factory() as session:
        rows = list(session.scalars(select(ReferenceTask).where(ReferenceTask.assessment_id == assessment_id,
                                                                ReferenceTask.kind == kind)
                                    .order_by(ReferenceTask.model_index)).all())
        session.expunge_all()
    return rows


def open_reference_tasks(factory: Factory, assessment_id: str, indices: list[int],
                         kind: str = REFERENCE) -> list[ReferenceTask]:
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
                    ReferenceTask.assessment_id == assessment_id, ReferenceTask.kind == kind,
                    ReferenceTask.model_index.in_(wanted))).all())
                session.add_all(ReferenceTask(assessment_id=assessment_id, kind=kind, model_index=k,
                                              state=ReferenceState.QUEUED, attempts=0, epoch=0)
                                for k in sorted(wanted - have))
                session.execute(
                    update(ReferenceTask)
                    .where(ReferenceTask.assessment_id == assessment_id, ReferenceTask.kind == kind,
                           ReferenceTask.model_index.in_(have),
                           ReferenceTask.state.in_(_REOPENED))
                    .values(state=ReferenceState.QUEUED, worker=None, epoch=0, error=None, finished_at=None)
                )
            break
        except IntegrityError:  # a row inserted meanwhile (a late attempt of the job): read again
            if retry:
                raise
    return reference_tasks(factory, assessment_id, kind)


def claim_reference(factory: Factory, assessment_id: str, model_index: int, attempt: int, worker: str, *,
                    retry_s: float = 0.0, stop: Callable[[], bool] | None = None, kind: str = REFERENCE) -> bool:
    """Take a queued sub-task (by default a reference model) for ``attempt``; False: taken, stale or
    duplicate message.

    Raises:
        DatabaseUnavailable: the database stayed unreachable for ``retry_s`` (the caller puts the
            message back).
    """
    now = utcnow()

    def take() -> bool:
        with factory() as session, session.begin():
            result = session.execute(
                update(ReferenceTask)
                .where(ReferenceTask.assessment_id == assessment_id, ReferenceTask.kind == kind,
                       ReferenceTask.model_index == model_index,
                       ReferenceTask.state == ReferenceState.QUEUED, ReferenceTask.attempts == attempt - 1)
                .values(state=ReferenceState.RUNNING, attempts=attempt, worker=worker[:200], epoch=0, error=None,
                        heartbeat_at=now, started_at=now, finished_at=None)
            )
        return result.rowcount == 1

    return retry_transient(take, budget_s=retry_s, what=f"claiming {kind} {model_index} of {assessment_id}",
                           stop=stop)


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
            .where(ReferenceTask.assessment_id == row.assessment_id, ReferenceTask.kind == row.kind,
                   ReferenceTask.model_index == row.model_index,
                   ReferenceTask.state == ReferenceState.RUNNING, ReferenceTask.attempts == row.attempts,
                   ReferenceTask.heartbeat_at < cutoff)
            .values(**values)
        ).rowcount
    return outcome if changed else None


class ReferenceAttempt:
    """The writes of one running attempt of one sub-task (by default a reference model), each
    conditional on owning it.

    Args:
        factory: session factory.
        assessment_id: the job.
        model_index: the model (or shard).
        attempt: the attempt this worker claimed.
        retry_s: how long a write retries while the database is unreachable (then
            :class:`~backend.db.retry.DatabaseUnavailable`).
        kind: ``reference`` or ``shard``.
    """

    def __init__(self, factory: Factory, assessment_id: str, model_index: int, attempt: int, retry_s: float = 0.0,
                 kind: str = REFERENCE):
        self.factory = factory
        self.kind = kind
        self.retry_s = retry_s
        self.assessment_id = assessment_id
        self.model_index = model_index
        self.attempt = attempt
        self.id = f"{assessment_id}/{model_index}" if kind == REFERENCE else f"{assessment_id}/{kind}{model_index}"
        self.lost = False

    def write(self, **values: Any) -> bool:
        """Update the row if this attempt still owns it; False (and ``lost``) otherwise."""
        if self.lost:
            return False

        def update_row() -> int:
            with self.factory() as session, session.begin():
                return session.execute(
                    update(ReferenceTask)
                    .where(ReferenceTask.assessment_id == self.assessment_id, ReferenceTask.kind == self.kind,
                           ReferenceTask.model_index == self.model_index,
                           ReferenceTask.state == ReferenceState.RUNNING, ReferenceTask.attempts == self.attempt)
                    .values(**values)
                ).rowcount

        if retry_transient(update_row, budget_s=self.retry_s, what=f"writing {self.kind} {self.id}") == 0:
            self.lost = True
            logger.warning("%s %s attempt %d: no longer owned by this worker", self.kind, self.id, self.attempt)
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
