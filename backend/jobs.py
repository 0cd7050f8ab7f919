"""Job dispatch: assessment ids to Celery, the embedded worker, recovery and the reaper.

The ``assessments`` row is the record of a job and :mod:`backend.services.job_states` holds
its every transition; a Celery message carries ``(id, attempt)`` with ``attempt = attempts + 1``
of the row when sent, and is sent by task name (:data:`worker.celery_app.TASK_NAME`).

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
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from worker.celery_app import TASK_NAME, create_celery

from .db.models import Assessment, utcnow
from .services import job_states
from .services.job_states import fmt_time
from .services.resources import Resources
from .settings import Settings
from .storage import Storage

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger(__name__)

WorkerFactory = Callable[[Any, int], Any]
"""Makes the embedded worker: ``(celery_app, concurrency) -> worker`` with ``start()``,
``stop()`` and ``alive()`` (the app factory passes :class:`worker.embedded.EmbeddedWorker`)."""


class JobDispatcher:
    """Sends assessment ids to Celery and, in embedded mode, runs the worker thread.

    Args:
        settings: the settings (broker, mode, heartbeat timeout, max attempts).
        factory: database session factory.
        storage: uploads and results.
        embedded_worker: makes the embedded worker thread (embedded mode; given by the app factory).
    """

    def __init__(self, settings: Settings, factory: sessionmaker[Session], storage: Storage,
                 embedded_worker: WorkerFactory | None = None):
        self.settings = settings
        self.factory = factory
        self.storage = storage
        self._make_worker = embedded_worker
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
        if self._make_worker is None:
            raise RuntimeError("embedded mode needs the embedded worker (JobDispatcher(embedded_worker=...))")
        self._worker = self._make_worker(self.celery, self.settings.embedded_concurrency)
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
        self.celery.send_task(TASK_NAME, args=[assessment_id, attempt])

    def enqueue(self, assessment_id: str) -> None:
        """Queue an assessment: a message for attempt ``attempts + 1`` of its row.

        Raises:
            KeyError: no such assessment.
        """
        attempt = job_states.next_attempt(self.factory, assessment_id)
        if attempt is None:
            raise KeyError(assessment_id)
        self.send(assessment_id, attempt)

    # -- cancel and delete -------------------------------------------------------------------

    def cancel(self, assessment_id: str) -> str | None:
        """Ask a job to stop (:func:`backend.services.job_states.cancel`)."""
        return job_states.cancel(self.factory, assessment_id)

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
        for row in job_states.running_jobs(self.factory):
            beat = fmt_time(row.heartbeat_at)
            outcome = job_states.worker_lost(
                self.factory, row, max_attempts=self.settings.max_attempts,
                what=f"the server stopped while attempt {row.attempts} ran on {row.worker} (last heartbeat {beat})",
                fail_reason=(f"the server running this job stopped (last heartbeat {beat}); "
                             f"it was tried {row.attempts} time(s)"),
            )
            if outcome:
                counts[outcome] += 1
        for assessment_id in job_states.queued_ids(self.factory):
            self.enqueue(assessment_id)
            counts["sent"] += 1
        if any(counts.values()):
            logger.info("recovered jobs: %s", counts)
        return counts

    def reap(self, now: datetime | None = None) -> dict[str, int]:
        """One reaper pass: running jobs whose heartbeat is older than the timeout are re-queued
        (below ``max_attempts``) and sent again, or failed.

        Returns:
            counts of ``requeued``, ``failed`` and ``cancelled`` (a cancel was pending) jobs.
        """
        now = now or utcnow()
        cutoff = now - timedelta(seconds=self.settings.heartbeat_timeout_s)
        counts = {"requeued": 0, "failed": 0, "cancelled": 0}
        for row in job_states.running_jobs(self.factory, Assessment.heartbeat_at < cutoff):
            beat = fmt_time(row.heartbeat_at)
            outcome = job_states.worker_lost(
                self.factory, row, max_attempts=self.settings.max_attempts, cutoff=cutoff,
                what=f"worker {row.worker} stopped reporting at {beat}",
                fail_reason=(f"the worker running this job ({row.worker}) stopped (last heartbeat {beat}); "
                             f"it was tried {row.attempts} time(s)"),
            )
            if not outcome:
                continue
            counts[outcome] += 1
            logger.warning("assessment %s: worker %s stopped reporting; %s", row.id, row.worker, outcome)
            if outcome == "requeued":
                try:
                    self.send(row.id, row.attempts + 1)
                except Exception:  # noqa: BLE001 - stays queued; the next start's recovery resends it
                    logger.exception("could not re-send assessment %s", row.id)
        return counts

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

