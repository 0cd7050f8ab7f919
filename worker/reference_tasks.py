"""The reference-training task: one reference model of one assessment (ids in, the model to the store).

The message side of the one fan-out (:func:`worker.fanout.run_subtask`, shared with the feature
shards of :mod:`worker.shard_tasks`).

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

from backend.services.reference_task_states import REFERENCE
from backend.services.resources import Resources

from .celery_app import REFERENCE_TASK_NAME
from .fanout import Units, run_subtask
from .reference_fanout import ReferenceUnits, SendReference, reference_plan
from .tasks import run_subtask_message

logger = logging.getLogger(__name__)


def _units(resources: Resources, assessment_id: str) -> Units | None:
    plan = reference_plan(resources, assessment_id, with_volumes=True)
    return None if plan is None else ReferenceUnits(plan)


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
    return run_subtask(resources, _units, REFERENCE, assessment_id, attempt, model_index, worker=worker,
                       shutdown=shutdown, requeue=requeue)


@shared_task(name=REFERENCE_TASK_NAME, bind=True)
def train_reference_model(self: Any, assessment_id: str, attempt: int, model_index: int) -> str:
    """Train attempt ``attempt`` of reference model ``model_index`` of ``assessment_id``."""
    return run_subtask_message(self, REFERENCE_TASK_NAME, run_reference_task, assessment_id, attempt, model_index)
