"""The reference-training task: one reference model of one assessment (ids in, the model to the store).

A message carries ``(assessment_id, attempt, model_index)`` only, with ``attempt`` the model's
``reference_tasks.attempts + 1`` when sent: a duplicate or stale message (its model taken by
another worker, re-sent after a worker died, already trained) is a no-op. The task rebuilds what
it trains on from the job row (:func:`worker.reference_fanout.reference_plan`; the target model is
not loaded: a reference model is a built-in architecture from the recipe), trains with a heartbeat
and per-epoch progress on its row, and stops within one batch when its job is cancelled, finished
or deleted, or this worker shuts down (then the model goes back to the queue and is sent again).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import shared_task

from backend.services import job_states
from backend.services.resources import Resources

from .celery_app import REFERENCE_TASK_NAME
from .reference_fanout import ParentCheck, SendReference, reference_plan, train_model
from .runner import Heartbeat, Stopped, heartbeat_interval, public_text, worker_name
from .tasks import requeued_on_database_outage, resources_for

logger = logging.getLogger(__name__)


def run_reference_task(
    resources: Resources,
    assessment_id: str,
    attempt: int,
    model_index: int,
    *,
    worker: str | None = None,
    shutdown: threading.Event | None = None,
    requeue: SendReference | None = None,
) -> str:
    """Train attempt ``attempt`` of reference model ``model_index`` of an assessment.

    Args:
        resources: database, storage and settings.
        assessment_id, attempt, model_index: what the message says.
        worker: name recorded in the row (default ``hostname:pid``).
        shutdown: set when the worker shuts down: the model is handed back to the queue.
        requeue: sends the message again for a handed-back model ``(assessment_id, model_index,
            attempt)`` (None: the job's worker trains it).

    Returns:
        ``skipped`` (duplicate or stale message), ``succeeded``, ``failed``, ``cancelled``,
        ``requeued`` (shutdown) or ``lost`` (taken away meanwhile).
    """
    from worker.engine.errors import InputError

    worker = worker or worker_name()
    shutdown = shutdown or threading.Event()
    factory = resources.factory
    if not job_states.claim_reference(factory, assessment_id, model_index, attempt, worker,
                                      retry_s=resources.settings.db_retry_s, stop=shutdown.is_set):
        logger.info("reference model %d of assessment %s attempt %d: not queued for this attempt; message ignored",
                    model_index, assessment_id, attempt)
        return "skipped"
    model = job_states.ReferenceAttempt(factory, assessment_id, model_index, attempt, resources.settings.db_retry_s)
    parent = ParentCheck(resources, assessment_id)
    with Heartbeat(model, heartbeat_interval(resources.settings)):
        try:
            if parent(fresh=True):
                return "cancelled" if model.cancelled() else "lost"
            plan = reference_plan(resources, assessment_id, with_volumes=True)
            if plan is None:
                raise InputError("this assessment trains no reference models")
            if not 0 <= model_index < plan.setup.n_models:
                raise InputError(f"reference model {model_index}: the assessment trains {plan.setup.n_models}")
        except Stopped:
            return "lost"
        except Exception as exc:  # noqa: BLE001 - recorded in the row; the job fails with it
            message = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
            logger.warning("reference model %d of assessment %s: %s", model_index, assessment_id, message)
            return "failed" if model.fail(public_text(resources, message)) else "lost"
        outcome = train_model(resources, plan, model, stop=lambda: shutdown.is_set() or parent())
    if outcome != "stopped":
        return outcome
    if model.lost:
        return "lost"
    if shutdown.is_set() and not parent(fresh=True):
        if not model.hand_back():
            return "lost"
        if requeue is not None:
            try:
                requeue(assessment_id, model_index, attempt)
            except Exception:  # noqa: BLE001 - stays queued: the job's worker trains it itself
                logger.exception("could not re-send reference model %d of assessment %s", model_index, assessment_id)
        return "requeued"
    return "cancelled" if model.cancelled() else "lost"


@shared_task(name=REFERENCE_TASK_NAME, bind=True)
def train_reference_model(self: Any, assessment_id: str, attempt: int, model_index: int) -> str:
    """Train attempt ``attempt`` of reference model ``model_index`` of ``assessment_id``."""
    app = self.app

    def requeue(job_id: str, index: int, next_attempt: int) -> None:
        app.send_task(REFERENCE_TASK_NAME, args=[job_id, next_attempt, index])

    with requeued_on_database_outage():
        return run_reference_task(
            resources_for(app),
            assessment_id,
            int(attempt),
            int(model_index),
            worker=worker_name(self.request.hostname),
            shutdown=app.brainmia_shutdown,
            requeue=None if app.brainmia_settings.embedded else requeue,
        )
