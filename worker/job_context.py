"""One running attempt of one job, as its worker sees it: throttled progress, the heartbeat
thread and the stop check (cancelled, lost, shutting down, or the database unreachable).

Every write is a transition of :class:`backend.services.job_states.Attempt`, conditional on this
attempt still owning the job, and retried through transient database errors for
``settings.db_retry_s`` seconds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from backend.db.models import utcnow
from backend.db.retry import DatabaseUnavailable
from backend.services.job_states import Attempt
from backend.settings import Settings

logger = logging.getLogger(__name__)

PROGRESS_MIN_INTERVAL_S = 0.5
CANCEL_POLL_INTERVAL_S = 1.0

def heartbeat_interval(settings: Settings) -> float:
    """Seconds between heartbeats: a quarter of the timeout, between 0.5 and 10 s."""
    return min(10.0, max(0.5, settings.heartbeat_timeout_s / 4))


def worker_name(hostname: str | None = None) -> str:
    """``hostname:pid`` of this worker."""
    return f"{hostname or socket.gethostname()}:{os.getpid()}"


class Stopped(Exception):
    """Internal: the job must stop (lost, cancelled or shutting down)."""


class JobContext(Attempt):
    """One running attempt of one job: throttled progress, the heartbeat and the stop check.

    A write that finds the database unreachable for longer than ``retry_s`` (progress, the
    heartbeat, the cancel check) does not raise into the engine: it records the error in
    ``unavailable`` and the stop check stops the engine; the runner then hands the job back.

    Args:
        factory: session factory.
        assessment_id: the job.
        attempt: the attempt number this worker claimed.
        shutdown: set when the worker is shutting down (the job is handed back).
        retry_s: how long a write retries while the database is unreachable.
    """

    def __init__(self, factory: sessionmaker[Session], assessment_id: str, attempt: int, shutdown: threading.Event,
                 retry_s: float = 0.0):
        super().__init__(factory, assessment_id, attempt, retry_s)
        self.shutdown = shutdown
        self.unavailable: DatabaseUnavailable | None = None
        self._lock = threading.Lock()
        self._last_write = 0.0
        self._last_stage: str | None = None
        self._last_fraction = 0.0
        self._last_cancel_check = 0.0
        self._cancel = False

    def heartbeat(self) -> bool:
        """Touch ``heartbeat_at``.

        Raises:
            DatabaseUnavailable: the database stayed unreachable (also kept in ``unavailable``).
        """
        with self._lock:
            return self._noted(self.write, heartbeat_at=utcnow())

    def _noted(self, write: Callable[..., Any], **values: Any) -> Any:
        try:
            return write(**values)
        except DatabaseUnavailable as exc:
            self.unavailable = self.unavailable or exc
            raise

    def progress(self, stage: str, fraction: float, message: str) -> None:
        """The engine's progress callback: at most ~2 writes/s, always on a stage change."""
        now = time.monotonic()
        with self._lock:
            if stage == self._last_stage and fraction < 1.0 and now - self._last_write < PROGRESS_MIN_INTERVAL_S:
                return
            self._last_stage, self._last_write = stage, now
            # never backwards within an attempt: writing the results (0.99) follows the engine's 1.0
            self._last_fraction = max(self._last_fraction, min(max(fraction, 0.0), 1.0))
            if self.unavailable is not None:
                return
            try:
                self._noted(self.write, progress=float(self._last_fraction), stage=stage[:32], message=message,
                            heartbeat_at=utcnow())
            except DatabaseUnavailable:
                pass  # the engine stops at its next check (should_stop)

    def cancel_requested(self, fresh: bool = False) -> bool:
        """Whether a cancel was asked for (read at most once a second unless ``fresh``)."""
        now = time.monotonic()
        if self.unavailable is None and (fresh or now - self._last_cancel_check >= CANCEL_POLL_INTERVAL_S):
            self._last_cancel_check = now
            try:
                value = self._noted(self.cancel_flag)
            except DatabaseUnavailable:
                return self._cancel
            if value is not None:
                self._cancel = bool(value)
        return self._cancel

    def should_stop(self) -> bool:
        """The engine's stop check: cancelled, lost, shutting down or the database unreachable."""
        return self.lost or self.shutdown.is_set() or self.cancel_requested() or self.unavailable is not None


class Heartbeat:
    """A daemon thread touching ``heartbeat_at`` every ``interval`` seconds while a job runs."""

    def __init__(self, job: JobContext, interval: float):
        self.job = job
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job.id[:8]}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self.job.heartbeat():
                    return
            except DatabaseUnavailable:  # retried for db_retry_s already: the job stops and is handed back
                logger.error("heartbeat of assessment %s: the database stayed unreachable", self.job.id)
                return
            except Exception:  # noqa: BLE001 - a missed beat is retried; the reaper has slack
                logger.exception("heartbeat of assessment %s failed", self.job.id)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
