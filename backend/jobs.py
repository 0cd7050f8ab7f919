"""Job dispatch: assessment ids to Celery, the embedded worker, recovery and the reaper.

The ``assessments`` row is the record of a job; a Celery message carries ``(id, attempt)``
with ``attempt = attempts + 1`` of the row when sent. A worker claims the row for that
attempt (see :mod:`worker.runner`), so a duplicate or stale message is a no-op.

Dead workers. A running job's worker touches ``heartbeat_at`` every few seconds. The reaper
(a thread of the API process, both modes) finds running jobs whose heartbeat is older than
``settings.heartbeat_timeout_s``: below ``settings.max_attempts`` attempts the job is put back
in the queue with a note in its log, otherwise it fails with the reason. A job is never left
"running" forever. In embedded mode, jobs left queued or running by a previous process are
recovered at start the same way.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from .db.models import FINAL_STATES, Assessment, utcnow
from .settings import Settings
from .storage import Storage

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger(__name__)


def as_utc(value: datetime | None) -> datetime | None:
    """A timezone-aware UTC datetime (SQLite returns naive UTC values)."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _fmt(value: datetime | None) -> str:
    value = as_utc(value)
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else "never"


class JobDispatcher:
    """Sends assessment ids to Celery and, in embedded mode, runs the worker thread.

    Args:
        settings: the settings (broker, mode, heartbeat timeout, max attempts).
        factory: database session factory.
        storage: uploads and results.
    """

    def __init__(self, settings: Settings, factory: sessionmaker[Session], storage: Storage):
        self.settings = settings
        self.factory = factory
        self.storage = storage
        self._celery: Celery | None = None
        self._worker: Any = None
        self._stopping = threading.Event()
        self._reaper: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- Celery ------------------------------------------------------------------------------

    @property
    def celery(self) -> Celery:
        """The Celery app (made on first use: no broker connection at construction)."""
        with self._lock:
            if self._celery is None:
                from worker.celery_app import create_celery
                from worker.runner import Resources

                app = create_celery(self.settings)
                if self.settings.embedded:  # the worker thread shares this process's database and storage
                    app.brainmia_resources = Resources(self.settings, self.factory, self.storage)  # type: ignore[attr-defined]
                self._celery = app
            return self._celery

    @property
    def reap_interval(self) -> float:
        """Seconds between two reaper passes (10 s, less for short heartbeat timeouts)."""
        return min(10.0, max(0.2, self.settings.heartbeat_timeout_s / 4))

    def start(self) -> None:
        """Start the job machinery.

        Embedded: the worker thread, then recovery of jobs left queued or running by a previous
        process. Both modes: the reaper thread.
        """
        self._stopping.clear()
        if self.settings.embedded:
            self._start_worker()
            self.recover()
        self._reaper = threading.Thread(target=self._reap_loop, name="brainmia-reaper", daemon=True)
        self._reaper.start()

    def _start_worker(self) -> None:
        from worker.embedded import EmbeddedWorker

        self._worker = EmbeddedWorker(self.celery, self.settings.embedded_concurrency)
        self._worker.start()

    def stop(self) -> None:
        """Stop the reaper and the worker thread (a running job goes back to the queue)."""
        self._stopping.set()
        if self._reaper is not None:
            self._reaper.join(timeout=10)
            self._reaper = None
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def ping(self) -> bool:
        """Whether jobs can be dispatched: the worker thread runs (embedded) or the broker answers."""
        if self.settings.embedded:
            return self._worker is not None and self._worker.alive()
        try:
            with self.celery.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
            return True
        except Exception:  # noqa: BLE001 - any failure means unreachable
            return False

    def send(self, assessment_id: str, attempt: int) -> None:
        """Send one message for ``attempt`` of a job."""
        from worker.celery_app import TASK_NAME

        self.celery.send_task(TASK_NAME, args=[assessment_id, attempt])

    def enqueue(self, assessment_id: str) -> None:
        """Queue an assessment: a message for attempt ``attempts + 1`` of its row.

        Raises:
            KeyError: no such assessment.
        """
        with self.factory() as session:
            attempts = session.scalar(select(Assessment.attempts).where(Assessment.id == assessment_id))
        if attempts is None:
            raise KeyError(assessment_id)
        self.send(assessment_id, attempts + 1)

    # -- cancel and delete -------------------------------------------------------------------

    def cancel(self, assessment_id: str) -> str | None:
        """Ask a job to stop: a queued job is cancelled at once, a running one at its next check.

        Returns:
            the job's state after the request (``cancelled``, ``running`` while it stops, or the
            final state it already had); None when there is no such job.
        """
        from worker.runner import log_line

        now = utcnow()
        with self.factory() as session, session.begin():
            done = session.execute(
                update(Assessment)
                .where(Assessment.id == assessment_id, Assessment.state == "queued")
                .values(
                    state="cancelled",
                    cancel_requested=True,
                    stage="cancelled",
                    message="cancelled before it started",
                    finished_at=now,
                    log=Assessment.log + log_line("cancelled before it started", now),
                )
            ).rowcount
            if done:
                return "cancelled"
            asked = session.execute(
                update(Assessment)
                .where(Assessment.id == assessment_id, Assessment.state == "running")
                .values(cancel_requested=True, log=Assessment.log + log_line("cancel requested", now))
            ).rowcount
            if asked:
                return "running"
            return session.scalar(select(Assessment.state).where(Assessment.id == assessment_id))

    def delete(self, assessment_id: str) -> bool:
        """Delete a job and its results; a running job is asked to stop first (it notices the
        row is gone at its next write and leaves nothing behind).

        Returns:
            whether the job existed.
        """
        self.cancel(assessment_id)
        with self.factory() as session, session.begin():
            row = session.get(Assessment, assessment_id)
            if row is None:
                return False
            result_dir = row.result_dir
            session.delete(row)
        paths = [self.storage.result_dir(assessment_id)]
        if result_dir:
            from pathlib import Path

            paths.append(Path(result_dir))
        self.storage.remove(paths)
        return True

    # -- recovery and reaping ----------------------------------------------------------------

    def recover(self) -> dict[str, int]:
        """Embedded start: jobs a previous process left running are re-queued (or failed past
        ``max_attempts``), then every queued job is sent again.

        Returns:
            counts of ``requeued``, ``failed``, ``cancelled`` (a cancel was pending) and ``sent`` jobs.
        """
        counts = {"requeued": 0, "failed": 0, "cancelled": 0, "sent": 0}
        for row in self._running():
            outcome = self._requeue_or_fail(
                row.id,
                row.attempts,
                cutoff=None,
                requeue_note=(
                    f"the server stopped while attempt {row.attempts} ran on {row.worker} "
                    f"(last heartbeat {_fmt(row.heartbeat_at)}); re-queued"
                ),
                fail_reason=(
                    f"the server running this job stopped (last heartbeat {_fmt(row.heartbeat_at)}); "
                    f"it was tried {row.attempts} time(s)"
                ),
                send=False,
                cancelled=row.cancel_requested,
            )
            if outcome:
                counts[outcome] += 1
        with self.factory() as session:
            queued = session.scalars(
                select(Assessment.id).where(Assessment.state == "queued").order_by(Assessment.created_at)
            ).all()
        for assessment_id in queued:
            self.enqueue(assessment_id)
            counts["sent"] += 1
        if any(counts.values()):
            logger.info("recovered jobs: %s", counts)
        return counts

    def reap(self, now: datetime | None = None) -> dict[str, int]:
        """One reaper pass: running jobs whose heartbeat is older than the timeout are re-queued
        (below ``max_attempts``) or failed.

        Returns:
            counts of ``requeued``, ``failed`` and ``cancelled`` (a cancel was pending) jobs.
        """
        now = now or utcnow()
        cutoff = now - timedelta(seconds=self.settings.heartbeat_timeout_s)
        counts = {"requeued": 0, "failed": 0, "cancelled": 0}
        for row in self._running(Assessment.heartbeat_at < cutoff):
            outcome = self._requeue_or_fail(
                row.id,
                row.attempts,
                cutoff=cutoff,
                requeue_note=f"worker {row.worker} stopped reporting at {_fmt(row.heartbeat_at)}; re-queued",
                fail_reason=(
                    f"the worker running this job ({row.worker}) stopped (last heartbeat "
                    f"{_fmt(row.heartbeat_at)}); it was tried {row.attempts} time(s)"
                ),
                send=True,
                cancelled=row.cancel_requested,
            )
            if outcome:
                counts[outcome] += 1
                logger.warning("assessment %s: worker %s stopped reporting; %s", row.id, row.worker, outcome)
        return counts

    def _running(self, *conditions: Any) -> list[Any]:
        """Running jobs (id, attempts, worker, heartbeat, pending cancel) matching ``conditions``."""
        with self.factory() as session:
            return list(session.execute(
                select(
                    Assessment.id,
                    Assessment.attempts,
                    Assessment.worker,
                    Assessment.heartbeat_at,
                    Assessment.cancel_requested,
                ).where(Assessment.state == "running", *conditions)
            ).all())

    def _requeue_or_fail(
        self,
        assessment_id: str,
        attempts: int,
        *,
        cutoff: datetime | None,
        requeue_note: str,
        fail_reason: str,
        send: bool,
        cancelled: bool = False,
    ) -> str | None:
        from worker.runner import log_line

        now = utcnow()
        condition = [Assessment.id == assessment_id, Assessment.state == "running", Assessment.attempts == attempts]
        if cutoff is not None:  # a beat that arrived meanwhile keeps the job
            condition.append(Assessment.heartbeat_at < cutoff)
        if cancelled:  # the user asked to stop it: do not run it again
            note = requeue_note.replace("; re-queued", "; cancelled as requested")
            values: dict[str, Any] = dict(
                state="cancelled",
                message="cancelled",
                finished_at=now,
                log=Assessment.log + log_line(note, now),
            )
            outcome = "cancelled"
        elif attempts < self.settings.max_attempts:
            values = dict(
                state="queued",
                stage="queued",
                progress=0.0,
                worker=None,
                message="re-queued: " + requeue_note,
                log=Assessment.log + log_line(requeue_note, now),
            )
            outcome = "requeued"
        else:
            values = dict(
                state="failed",
                error=fail_reason,
                message=fail_reason,
                finished_at=now,
                log=Assessment.log + log_line(f"failed: {fail_reason}", now),
            )
            outcome = "failed"
        with self.factory() as session, session.begin():
            changed = session.execute(update(Assessment).where(*condition).values(**values)).rowcount
        if not changed:
            return None
        if outcome == "requeued" and send:
            try:
                self.send(assessment_id, attempts + 1)
            except Exception:  # noqa: BLE001 - stays queued; the next start's recovery resends it
                logger.exception("could not re-send assessment %s", assessment_id)
        return outcome

    def _reap_loop(self) -> None:
        while not self._stopping.wait(self.reap_interval):
            try:
                self.reap()
                if self.settings.embedded and self._worker is not None and not self._worker.alive():
                    logger.error("the embedded worker thread stopped; restarting it")
                    self._worker.stop()
                    self._start_worker()
            except Exception:  # noqa: BLE001 - the reaper must keep running
                logger.exception("reaper pass failed")


def is_final(state: str) -> bool:
    """Whether a job state is final."""
    return state in FINAL_STATES
