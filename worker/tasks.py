"""Celery tasks: thin (ids in, the runner calls the engine, progress goes to the job row).

The job task is here; the sub-tasks of the job's fan-out (:mod:`worker.fanout`) are in
:mod:`worker.reference_tasks` (one reference model) and :mod:`worker.shard_tasks` (one feature
shard); the app factory's ``include`` names all three, so a worker runs all three.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import shared_task
from celery.exceptions import Reject

from backend.db.retry import DatabaseUnavailable
from backend.services.resources import Resources
from backend.settings import Settings

from .celery_app import REFERENCE_TASK_NAME, SHARD_TASK_NAME, TASK_NAME
from .runner import run_job, worker_name

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_cache: dict[tuple[str, str], Resources] = {}


def resources_for(app: Any) -> Resources:
    """The app's resources: the embedded dispatcher's, else built once per process from settings."""
    given = getattr(app, "brainmia_resources", None)
    if given is not None:
        return given
    settings: Settings = app.brainmia_settings
    key = (settings.sqlalchemy_url, str(settings.storage_dir))
    with _lock:
        if key not in _cache:
            _cache[key] = Resources.from_settings(settings)
        return _cache[key]


@shared_task(name=TASK_NAME, bind=True)
def run_assessment_job(self: Any, assessment_id: str, attempt: int) -> str:
    """Run attempt ``attempt`` of assessment ``assessment_id`` (a stale or duplicate message is a no-op).

    A claim that cannot reach the database (retried for ``settings.db_retry_s``) rejects the
    message back into the queue (late acknowledgement): a database outage loses no job.

    Returns:
        the outcome (``succeeded``, ``failed``, ``cancelled``, ``skipped``, ``requeued``, ``lost``).
    """
    app = self.app
    settings: Settings = app.brainmia_settings

    def requeue(job_id: str, next_attempt: int) -> None:
        if settings.embedded and app.brainmia_shutdown.is_set():
            return  # the in-process queue ends with the process: the next start's recovery sends it
        app.send_task(TASK_NAME, args=[job_id, next_attempt])

    def send_reference(job_id: str, model_index: int, model_attempt: int) -> None:
        app.send_task(REFERENCE_TASK_NAME, args=[job_id, model_attempt, model_index])

    def send_shard(job_id: str, shard_index: int, shard_attempt: int) -> None:
        app.send_task(SHARD_TASK_NAME, args=[job_id, shard_attempt, shard_index])

    with requeued_on_database_outage():
        return run_job(
            resources_for(app),
            assessment_id,
            int(attempt),
            worker=worker_name(self.request.hostname),
            shutdown=app.brainmia_shutdown,
            requeue=requeue,
            send_reference=None if settings.embedded else send_reference,
            send_shard=None if settings.embedded else send_shard,
        )


@contextmanager
def requeued_on_database_outage() -> Iterator[None]:
    """A claim that could not reach the database puts its message back (``Reject(requeue=True)``:
    the worker does not acknowledge it, the broker hands it out again)."""
    try:
        yield
    except DatabaseUnavailable as exc:
        logger.warning("%s: the message goes back to the queue", exc)
        raise Reject(str(exc), requeue=True) from exc


def run_subtask_message(task: Any, task_name: str, run: Any, assessment_id: str, attempt: int, index: int) -> str:
    """The body of a fan-out sub-task's Celery task (a reference model, a feature shard).

    Args:
        task: the bound Celery task.
        task_name: its name, used to send a handed-back unit's message again.
        run: ``run(resources, assessment_id, attempt, index, *, worker, shutdown, requeue)``.
        assessment_id: the job.
        attempt: the unit's attempt.
        index: the unit (reference model or shard) index.
    """
    app = task.app

    def requeue(job_id: str, unit: int, next_attempt: int) -> None:
        app.send_task(task_name, args=[job_id, next_attempt, unit])

    with requeued_on_database_outage():
        return run(resources_for(app), assessment_id, int(attempt), int(index),
                   worker=worker_name(task.request.hostname), shutdown=app.brainmia_shutdown,
                   requeue=None if app.brainmia_settings.embedded else requeue)
