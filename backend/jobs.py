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

Lost messages. In distributed mode the same thread reconciles the jobs table with the broker
(:mod:`backend.reconcile`): a job queued with no message in the broker (Redis restarted without
persistence, a send that failed while it was down) is sent again, at start at once and then
after ``settings.requeue_after_s``. Database outages: a pass that cannot reach the database is
noted; once it is back, reaping waits a few heartbeats (live workers' retried beats land first)
and a job it does re-queue says the database was unreachable, and when.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from worker.celery_app import TASK_NAME, create_celery, default_queue

from .db.models import Assessment, as_utc, utcnow
from .db.retry import DatabaseUnavailable, is_transient
from .reconcile import Reconciler, broker_messages
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
        self._reconciler = Reconciler(settings.requeue_after_s)
        self._db_down_since: datetime | None = None
        self._outage: tuple[datetime, datetime] | None = None  # the last one this process saw
        self._db_back_at = -float("inf")  # monotonic
        self._broker_down = False

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

    @property
    def reap_grace(self) -> float:
        """Seconds the reaper waits after a database outage: three heartbeats (at most the timeout)."""
        timeout = self.settings.heartbeat_timeout_s
        return min(timeout, 3 * min(10.0, max(0.5, timeout / 4)))

    def start(self) -> None:
        """Start the job machinery.

        Embedded: the worker thread, then recovery of jobs left queued or running by a previous
        process. Both modes: the reaper thread (distributed: its first pass sends every queued job
        that has no message in the broker).
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
        """Delete a job, its results and its feature shards; a running job is asked to stop
        first (it notices the row is gone at its next write and removes what it wrote meanwhile).

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
        paths = [self.storage.result_dir(assessment_id), self.storage.shards_dir(assessment_id)]
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
        rows = job_states.running_jobs(self.factory, Assessment.heartbeat_at < cutoff)
        self._database_reachable()
        if time.monotonic() - self._db_back_at < self.reap_grace:
            return counts  # the database just came back: live workers' beats are on their way
        for row in rows:
            beat = fmt_time(row.heartbeat_at)
            outage = self._outage_note(row.heartbeat_at)
            outcome = job_states.worker_lost(
                self.factory, row, max_attempts=self.settings.max_attempts, cutoff=cutoff,
                what=f"worker {row.worker} stopped reporting at {beat}{outage}",
                fail_reason=(f"the worker running this job ({row.worker}) stopped (last heartbeat {beat})"
                             f"{outage}; it was tried {row.attempts} time(s)"),
            )
            if not outcome:
                continue
            counts[outcome] += 1
            logger.warning("assessment %s: worker %s stopped reporting; %s", row.id, row.worker, outcome)
            if outcome == "requeued":
                try:
                    self.send(row.id, row.attempts + 1)
                except Exception:  # noqa: BLE001 - stays queued; reconciliation resends it
                    logger.exception("could not re-send assessment %s", row.id)
        return counts

    def _outage_note(self, heartbeat_at: datetime | None) -> str:
        """``; the database was unreachable from A to B`` when an outage this process saw may
        explain a missing heartbeat; else empty."""
        if self._outage is None or heartbeat_at is None:
            return ""
        start, end = self._outage
        if as_utc(heartbeat_at) < start - timedelta(seconds=self.settings.heartbeat_timeout_s):
            return ""
        return f"; the database was unreachable from {fmt_time(start)} to {fmt_time(end)}"

    # -- reconciliation with the broker ---------------------------------------------------------

    def reconcile(self, *, at_start: bool = False, now: float | None = None) -> int:
        """One pass: queued jobs without a message in the broker are sent again
        (:class:`backend.reconcile.Reconciler` decides which).

        Args:
            at_start: this process just started: send them at once.
            now: monotonic time (tests).

        Returns:
            how many were sent; 0 where the broker cannot be inspected (embedded mode).

        Raises:
            Exception: the broker or the database is unreachable (the pass is tried again later).
        """
        inspect = broker_messages(self.celery, default_queue(self.settings), TASK_NAME)
        if inspect is None:
            return 0
        messages = inspect()
        if self._broker_down:
            logger.warning("job dispatch: the broker is reachable again")
            self._broker_down = False
        now = time.monotonic() if now is None else now
        queued = job_states.queued_jobs(self.factory)
        self._database_reachable()
        due = self._reconciler.due(queued, messages, now, at_start=at_start)
        for assessment_id, attempt in due:
            why = "this server started" if at_start else f"the broker had no message for it for {self.settings.requeue_after_s:g} s"
            self.send(assessment_id, attempt)
            self._reconciler.sent(assessment_id, now)
            job_states.resent(self.factory, assessment_id, attempt - 1, f"no message in the broker ({why})")
            logger.warning("assessment %s: queued with no message in the broker; sent again (attempt %d)",
                           assessment_id, attempt)
        return len(due)

    # -- the background thread ------------------------------------------------------------------

    def _reap_loop(self) -> None:
        at_start = not self.settings.embedded
        last_reap = last_reconcile = -float("inf")
        tick = min(self.reap_interval, self.settings.reconcile_interval_s)
        while True:
            now = time.monotonic()
            try:
                if now - last_reap >= self.reap_interval:
                    last_reap = now
                    self.reap()
                    self._check_worker()
                if not self.settings.embedded and (at_start or now - last_reconcile >= self.settings.reconcile_interval_s):
                    last_reconcile = now
                    self.reconcile(at_start=at_start)
                    at_start = False
            except Exception as exc:  # noqa: BLE001 - the thread must keep running
                self._pass_failed(exc)
            if self._stopping.wait(tick):
                return

    def _check_worker(self) -> None:
        if self.settings.embedded and self._worker is not None and not self._worker.alive():
            logger.error("the embedded worker thread stopped; restarting it")
            self._worker.stop()
            self._start_worker()

    def _pass_failed(self, exc: Exception) -> None:
        if is_transient(exc) or isinstance(exc, DatabaseUnavailable):
            if self._db_down_since is None:
                self._db_down_since = utcnow()
                logger.error("the database is unreachable: %s", str(exc).splitlines()[0][:300])
        elif isinstance(exc, (OSError, ConnectionError)) or type(exc).__module__.split(".")[0] in ("kombu", "redis"):
            if not self._broker_down:  # said once per outage, not at every pass
                logger.warning("job dispatch: the broker is unreachable: %s: %s", type(exc).__name__, exc)
            self._broker_down = True
        else:
            logger.exception("job dispatch pass failed")

    def _database_reachable(self) -> None:
        if self._db_down_since is not None:
            self._outage = (self._db_down_since, utcnow())
            self._db_back_at = time.monotonic()
            logger.warning("the database is reachable again (unreachable since %s)", fmt_time(self._db_down_since))
            self._db_down_since = None

